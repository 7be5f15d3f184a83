"""Fixtures of the distributed tests: one local Ray and one local S3 server per session.

Ray starts once (``ray.init(num_cpus=2)``, about 10 s) for every test that asks for it and
shuts down at the end of the session; the S3 server (moto, on a free loopback port, requiring
its own credentials) likewise. Each test gets its own prefix in the bucket.
"""

from __future__ import annotations

import uuid

import pytest

# 200 x 200 pt pages at 36 dpi are 100 x 100 pixels: the tiny model sees 32 x 32 anyway.
DPI = 36


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray instance with 2 CPUs, shared by the session's tests."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A local S3-compatible server (moto) with one bucket; stopped after the session."""
    from llama_index_vlm.distributed.local_s3 import LocalS3Server

    with LocalS3Server() as server:
        yield server


@pytest.fixture
def s3_uri(s3_server):
    """An ``s3://`` URI no other test uses."""
    return s3_server.uri(f"index-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def s3_store(s3_server, s3_uri):
    """A page store at :func:`s3_uri` on the local S3 server."""
    from llama_index_vlm.store import LanceDBPageStore

    return LanceDBPageStore(uri=s3_uri, storage_options=s3_server.storage_options)


@pytest.fixture(scope="session")
def reader():
    from llama_index_vlm.reader import PDFPageReader

    return PDFPageReader(dpi=DPI)
