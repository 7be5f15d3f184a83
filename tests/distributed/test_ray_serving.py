"""Tests of the query path on Ray Serve: two replicas over one store on the local S3 server,
a write between two rounds of queries, and the HTTP JSON endpoint.
"""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest
from pdfs import page_ids_of, write_numbered_pdf

from llama_index_vlm.distributed.serving import QueryServiceConfig, build_app
from llama_index_vlm.ingestion import ingest
from llama_index_vlm.retriever.page_caches import store_cache_holder

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def service(ray_cluster, s3_server, tmp_path_factory, colpali_encoder, reader):
    """Two replicas serving a store on S3 that holds a.pdf; yields (handle, store, port, docs)."""
    from ray import serve

    from llama_index_vlm.store import LanceDBPageStore

    docs = tmp_path_factory.mktemp("served")
    store = LanceDBPageStore(uri=s3_server.uri("served"), storage_options=s3_server.storage_options)
    ingest(
        write_numbered_pdf(docs / "a" / "a.pdf", 2),
        colpali_encoder,
        store,
        reader=reader,
        show_progress=False,
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = QueryServiceConfig(
        store_uri=store.uri, storage_options=s3_server.storage_options, similarity_top_k=10
    )
    # One request at a time per replica: concurrent requests must use both.
    app = build_app(
        config, num_replicas=2, ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=1
    )
    handle = serve.run(app, name="pages", route_prefix="/")
    yield handle, store, port, docs
    serve.shutdown()


def search_everywhere(handle, query: str, rounds: int = 6) -> dict[str, set[str]]:
    """Concurrent searches; ``replica id -> page ids`` it returned."""
    replies = [reply.result() for reply in [handle.search.remote(query) for _ in range(rounds)]]
    pages: dict[str, set[str]] = {}
    for reply in replies:
        pages.setdefault(reply["replica"], set()).update(p["page_id"] for p in reply["pages"])
    return pages


def test_both_replicas_see_a_write_made_between_two_queries(service, colpali_encoder, reader):
    handle, store, _, docs = service
    a_pages = set(store.page_ids())
    before = search_everywhere(handle, "a page 1")
    b = write_numbered_pdf(docs / "b" / "b.pdf", 2)

    ingest(b, colpali_encoder, store, reader=reader, show_progress=False)
    after = search_everywhere(handle, "b page 1")

    assert len(before) == 2 and all(pages == a_pages for pages in before.values())
    assert set(after) == set(before)
    assert all(pages == a_pages | page_ids_of(b, 2) for pages in after.values())


def test_the_http_endpoint_answers_a_json_query(service):
    handle, store, port, _ = service
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/",
        data=json.dumps({"query": "a page 2", "k": 1}).encode(),
        headers={"Content-Type": "application/json"},
    )

    with urllib.request.urlopen(request, timeout=60) as response:
        reply = json.load(response)

    [page] = reply["pages"]
    assert page["page_id"] in store.page_ids()
    assert page["file_name"].endswith(".pdf") and page["page_number"] in (1, 2)
    assert reply["version"] == store.version


def test_a_replica_with_a_vlm_answers_from_the_pages_it_retrieved(
    tmp_path, tiny_checkpoint, colpali_encoder, reader
):
    from llama_index_vlm.distributed.serving import PageQueryService
    from llama_index_vlm.store import LanceDBPageStore

    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    a = write_numbered_pdf(tmp_path / "a.pdf", 2)
    ingest(a, colpali_encoder, store, reader=reader, show_progress=False)
    config = QueryServiceConfig(
        store_uri=store.uri,
        encoder=str(tiny_checkpoint("colpali")),
        vlm=str(tiny_checkpoint("llava")),
        vlm_options={"max_new_tokens": 4},
    )

    reply = PageQueryService(config).ask("what is on page 2?", k=1)

    assert isinstance(reply["answer"], str) and reply["answer"]
    [page] = reply["pages"]
    assert page["page_id"] in page_ids_of(a, 2) and page["label"].startswith("a.pdf, page ")
    assert reply["replica"] is None and reply["version"] == store.version


def test_serve_run_arguments_become_the_config_and_the_deployment_options():
    from llama_index_vlm.distributed.serving import app_options

    config, options = app_options(
        {"store_uri": "s3://b/i", "vlm": "llava", "similarity_top_k": "3", "num_replicas": "2",
         "num_gpus": "1", "read_consistency_interval": "5"}
    )  # fmt: skip

    assert config == QueryServiceConfig(
        store_uri="s3://b/i", vlm="llava", similarity_top_k=3, read_consistency_interval=5.0
    )
    assert options == {"ray_actor_options": {"num_cpus": 1, "num_gpus": 1.0}, "num_replicas": 2}


@pytest.mark.parametrize(
    "args, message",
    [({"num_replicas": "2"}, "needs store_uri"), ({"store_uri": "x", "replicas": "2"}, "replicas")],
)
def test_serve_run_refuses_missing_or_unknown_arguments(args, message):
    from llama_index_vlm.distributed.serving import app_options

    with pytest.raises(ValueError, match=message):
        app_options(args)


def test_a_replica_loads_the_pages_once_for_all_its_requests(
    tmp_path, tiny_checkpoint, colpali_encoder, reader, monkeypatch
):
    import torch

    from llama_index_vlm.distributed.serving import PageQueryService
    from llama_index_vlm.store import LanceDBPageStore

    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    ingest(write_numbered_pdf(tmp_path / "a.pdf", 3), colpali_encoder, store, reader=reader)
    config = QueryServiceConfig(
        store_uri=store.uri, encoder=str(tiny_checkpoint("colpali")), search_device="cpu"
    )
    service = PageQueryService(config)
    reads: list[int] = []
    original = LanceDBPageStore.get_page_vectors

    def counting(self, page_ids, *args, **kwargs):
        reads.append(len(page_ids))
        return original(self, page_ids, *args, **kwargs)

    monkeypatch.setattr(LanceDBPageStore, "get_page_vectors", counting)
    replies = [service.search("a page 1", k=k) for k in (1, 3, 2, None)]

    assert [len(reply["pages"]) for reply in replies] == [1, 3, 2, 3]
    assert reads == [3]  # every page once, at the first request: the cache stays loaded
    assert store_cache_holder(service.index.store).cache.device == torch.device("cpu")
