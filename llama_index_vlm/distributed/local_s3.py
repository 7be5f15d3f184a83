"""A local S3-compatible server for tests and benchmarks of a store on object storage.

:class:`LocalS3Server` runs moto's S3 server (``pip install 'moto[server]'``, in the ``dev``
extra) on a free loopback port, with one bucket and real credentials: requests signed with any
other key are refused, as on AWS. It supports the conditional writes (``If-None-Match``) Lance
commits with, so concurrent writers behave as on S3.

Example::

    with LocalS3Server() as s3:
        store = LanceDBPageStore(uri=s3.uri("index"), storage_options=s3.storage_options)
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

_ACCESS_POLICY = {
    "Version": "2012-10-17",
    # DynamoDB too, for Lance's alternative commit store (s3+ddb://).
    "Statement": [{"Effect": "Allow", "Action": ["s3:*", "dynamodb:*"], "Resource": "*"}],
}
_REGION = "us-east-1"


class LocalS3Server:
    """moto's S3 server on ``127.0.0.1`` (a free port), with a bucket and one access key.

    Attributes (once started):
        endpoint: ``http://127.0.0.1:PORT``.
        bucket: the bucket created.
        access_key_id, secret_access_key: the only credentials the server accepts.
    """

    #: Servers started and not stopped in this process.
    _running = 0

    def __init__(self, bucket: str = "vlm-index"):
        self.bucket = bucket
        self.endpoint = ""
        self.access_key_id = ""
        self.secret_access_key = ""
        self._server: Any = None

    def start(self) -> LocalS3Server:
        """Start the server, create the bucket and the credentials, then require them."""
        from moto import settings
        from moto.server import ThreadedMotoServer

        # Werkzeug logs every request at INFO; keep test and benchmark output readable.
        request_log = logging.getLogger("werkzeug")
        if request_log.level == logging.NOTSET:
            request_log.setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        # moto keeps its accounts and its credential check per process, shared by every server
        # in it: the setup runs unchecked, then the check is on until the last server stops.
        settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
        try:
            self._create_credentials_and_bucket()
        finally:
            settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        LocalS3Server._running += 1
        return self

    def _create_credentials_and_bucket(self) -> None:
        import boto3

        client = {"endpoint_url": self.endpoint, "region_name": _REGION}
        iam = boto3.client(
            "iam", aws_access_key_id="setup", aws_secret_access_key="setup", **client
        )
        user = f"llama-index-vlm-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=user)
        iam.put_user_policy(
            UserName=user, PolicyName="s3-all", PolicyDocument=json.dumps(_ACCESS_POLICY)
        )
        key = iam.create_access_key(UserName=user)["AccessKey"]
        self.access_key_id, self.secret_access_key = key["AccessKeyId"], key["SecretAccessKey"]
        s3 = boto3.client(
            "s3",
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            **client,
        )
        if self.bucket not in {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}:
            s3.create_bucket(Bucket=self.bucket)

    def stop(self) -> None:
        """Stop the server. Its buckets live in moto's memory, shared by the process's servers
        and gone when the process ends."""
        if self._server is not None:
            from moto import settings

            self._server.stop()
            self._server = None
            LocalS3Server._running -= 1
            if LocalS3Server._running == 0:
                settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")

    def __enter__(self) -> LocalS3Server:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def dynamodb_commit_table(self, name: str = "lance-commits") -> str:
        """Create (once) the DynamoDB table Lance's ``s3+ddb://`` commit store needs, on this
        server, and return its name: ``s3+ddb://BUCKET/path?ddbTableName=NAME``.

        The table is keyed by ``base_uri`` (string) and ``version`` (number).
        """
        import boto3

        dynamodb = boto3.client(
            "dynamodb",
            endpoint_url=self.endpoint,
            region_name=_REGION,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )
        if name not in dynamodb.list_tables()["TableNames"]:
            dynamodb.create_table(
                TableName=name,
                KeySchema=[
                    {"AttributeName": "base_uri", "KeyType": "HASH"},
                    {"AttributeName": "version", "KeyType": "RANGE"},
                ],
                AttributeDefinitions=[
                    {"AttributeName": "base_uri", "AttributeType": "S"},
                    {"AttributeName": "version", "AttributeType": "N"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        return name

    def uri(self, path: str) -> str:
        """``s3://BUCKET/path``."""
        return f"s3://{self.bucket}/{path.strip('/')}"

    @property
    def storage_options(self) -> dict[str, str]:
        """LanceDB ``storage_options`` for this server (endpoint, region, credentials, http)."""
        return {
            "aws_endpoint": self.endpoint,
            "aws_region": _REGION,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
            "allow_http": "true",
            # Read only with an s3+ddb:// URI (see dynamodb_commit_table).
            "dynamodb_endpoint": self.endpoint,
        }
