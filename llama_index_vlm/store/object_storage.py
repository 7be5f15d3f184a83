"""A store on object storage (S3, S3-compatible services): what to configure, and failures
as one clear StoreError.

LanceDB reports an unreachable endpoint or refused credentials as a ``ValueError``,
``OSError`` or ``RuntimeError`` whose message is the object store's debug output (retries,
URLs, the service's XML error body), many lines long. :func:`storage_error` recognises these
and says, in one line, what failed and what to check.

Configuring a store on object storage:

- Credentials and endpoint come from the store's ``storage_options`` (``aws_access_key_id``,
  ``aws_secret_access_key``, ``aws_session_token``, ``aws_region``, ``aws_endpoint`` for an
  S3-compatible service, ``allow_http`` for a plain-HTTP one) or, for any option not given,
  from the environment variables LanceDB reads (``AWS_ACCESS_KEY_ID``, ``AWS_REGION``,
  ``AWS_ENDPOINT``, ``AWS_ALLOW_HTTP``...); the command line uses the environment.
- Several writers at once (processes, machines, a Ray ingest's driver beside another ingest)
  need nothing more on AWS S3 or on a service with conditional writes (``If-None-Match``, as
  MinIO, Cloudflare R2 and moto have): Lance publishes each version with a conditional PUT
  and retries on conflict, and the page table's primary key (``page_id``) keeps two writers
  of the same new page from storing it twice. A service without conditional writes needs
  Lance's DynamoDB commit store: a URI ``s3+ddb://bucket/path?ddbTableName=TABLE`` with a
  DynamoDB table keyed by ``base_uri`` (string) and ``version`` (number).
- Compaction (``store.optimize()``) rewrites files other writers may be reading; run it when
  no ingest is running.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from llama_index_vlm.errors import StoreError, VLMError

Method = TypeVar("Method", bound=Callable[..., Any])

#: Error codes object stores answer when they refuse the credentials, and what to check.
_REFUSED = {
    "InvalidAccessKeyId": "the access key id is unknown to the service",
    "SignatureDoesNotMatch": "the secret access key does not match the access key id",
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token is not valid",
    "AccessDenied": "these credentials may not access it",
}
#: What unreachable endpoints look like in LanceDB's object-store errors, and what it means.
_UNREACHABLE = (
    (re.compile(r"ConnectionRefused|Connection refused"), "connection refused"),
    (re.compile(r"dns error|failed to lookup address|Name or service not known"), "unknown host"),
    (re.compile(r"kind: Timeout|timed out|TimedOut"), "timed out"),
    (re.compile(r"kind: Connect|tcp connect|trying to connect|sending request"), "cannot connect"),
)
#: The endpoint a failed request went to, as the two shapes of object-store errors name it.
_ENDPOINT = re.compile(r"(?:uri: Some\(|(?:GET|PUT|POST|HEAD|DELETE) )(https?://[^/\s)]+)")


def storage_error(error: BaseException, uri: str) -> StoreError | None:
    """The :class:`StoreError` for ``error`` if object storage was unreachable or refused the
    credentials while opening or using the store at ``uri``; None for any other error.
    """
    if isinstance(error, VLMError) or "://" not in uri or uri.startswith("file://"):
        return None  # our own errors say what they mean; local paths fail with OSErrors
    message = str(error)
    endpoint = _ENDPOINT.search(message)
    where = f" at {endpoint.group(1)}" if endpoint else ""
    for code, meaning in _REFUSED.items():
        if code in message:
            return StoreError(
                f"the object store{where} refused the credentials for {uri!r} ({code}: "
                f"{meaning}); check aws_access_key_id and aws_secret_access_key in "
                "storage_options, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
    if "NoSuchBucket" in message:
        return StoreError(
            f"the object store{where} has no bucket for {uri!r} (NoSuchBucket); create it, or "
            "check the bucket name and the endpoint"
        )
    for pattern, meaning in _UNREACHABLE:
        if pattern.search(message):
            return StoreError(
                f"cannot reach the object store{where} for {uri!r} ({meaning}); check "
                "aws_endpoint in storage_options (or AWS_ENDPOINT), the network, and that the "
                "service is running"
            )
    return None


@contextmanager
def storage_errors(uri: str) -> Iterator[None]:
    """Raise :func:`storage_error`'s :class:`StoreError` for an object-storage failure inside."""
    try:
        yield
    except (OSError, RuntimeError, ValueError) as error:
        failure = storage_error(error, uri)
        if failure is None:
            raise
        raise failure from error


def reports_storage_errors(method: Method) -> Method:
    """Decorate a method of an object with a ``uri`` (the page store) so that an
    object-storage failure inside it (or inside the iteration, for a generator) raises
    :func:`storage_error`'s :class:`StoreError`.
    """
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def generator(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            with storage_errors(self.uri):
                yield from method(self, *args, **kwargs)

        return generator  # type: ignore[return-value]

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with storage_errors(self.uri):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
