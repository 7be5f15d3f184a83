"""Which errors are object storage failing (llama_index_vlm.store.object_storage); the real
failures, against the local S3 server, are in tests/distributed/test_s3_store.py."""

from __future__ import annotations

import pytest

from llama_index_vlm.errors import InvalidPageError
from llama_index_vlm.store.object_storage import storage_error, storage_errors

REFUSED = ValueError(
    'Invalid input, Failed to connect to namespace: IO { source: Generic { store: "S3", source: '
    "ListRequest { source: RetryError(RetryErrorImpl { method: GET, uri: Some(http://10.0.0.9:9000"
    '/bucket?list-type=2), inner: Status { status: 403, body: Some("<Error><Code>AccessDenied'
    '</Code>\\n</Error>") } }) } } }'
)


def test_refused_credentials_name_the_endpoint_and_what_to_check():
    error = storage_error(REFUSED, "s3://bucket/index")

    assert str(error) == (
        "the object store at http://10.0.0.9:9000 refused the credentials for "
        "'s3://bucket/index' (AccessDenied: these credentials may not access it); check "
        "aws_access_key_id and aws_secret_access_key in storage_options, or AWS_ACCESS_KEY_ID "
        "and AWS_SECRET_ACCESS_KEY"
    )


@pytest.mark.parametrize(
    "error, uri",
    [
        (REFUSED, "/data/index"),  # a local store fails with OSErrors of its own
        (ValueError("Table 'pages' was not found"), "s3://bucket/index"),  # not created yet
        (InvalidPageError("page 'p1': AccessDenied"), "s3://bucket/index"),  # our own error
    ],
    ids=["local-path", "missing-table", "own-error"],
)
def test_other_errors_are_not_storage_errors(error, uri):
    assert storage_error(error, uri) is None


def test_other_errors_pass_through_unchanged():
    missing = ValueError("Table 'pages' was not found")

    with pytest.raises(ValueError) as raised, storage_errors("s3://bucket/index"):
        raise missing

    assert raised.value is missing
