"""The retriever's page caches (llama_index_vlm.retriever.page_caches): shared by the
retrievers over one store, freed with the last of them, refreshed to each query's version.
"""

from __future__ import annotations

import base64
import gc
import io
import threading
import weakref

import numpy as np
import pytest
import torch
from llama_index.core.schema import ImageDocument
from page_documents import document_pages
from PIL import Image
from retriever_corpus import N_FILES, PAGES_PER_FILE, report_documents

from llama_index_vlm.errors import UnsupportedDeviceError
from llama_index_vlm.ingestion import ingest_documents
from llama_index_vlm.retriever import ColPaliRetriever, page_caches, search_slots
from llama_index_vlm.retriever.page_caches import (
    ExactPageCache,
    FastPageCache,
    PageCacheHolder,
    store_cache_holder,
)
from llama_index_vlm.search import FastPageIndex, maxsim_scores, top_k
from llama_index_vlm.store import LanceDBPageStore


def _count_loaded_pages(monkeypatch) -> list[str]:
    """Page ids whose vectors the store reads from now on (every store, every caller)."""
    loaded: list[str] = []
    read = LanceDBPageStore.get_page_vectors

    def counting(store, page_ids, *args, **kwargs):
        loaded.extend(page_ids)
        return read(store, page_ids, *args, **kwargs)

    monkeypatch.setattr(LanceDBPageStore, "get_page_vectors", counting)
    return loaded


@pytest.mark.parametrize("search_mode", ["exact", "fast"])
def test_retrievers_over_one_store_share_its_pages_in_memory(
    store, colpali_encoder, monkeypatch, search_mode
):
    loaded = _count_loaded_pages(monkeypatch)
    settings = {"search_mode": search_mode, "similarity_top_k": 1, "candidate_depth": 1}
    first = ColPaliRetriever(encoder=colpali_encoder, store=store, **settings)
    copy = first.as_retriever(similarity_top_k=1)  # a copy, made before any query
    other = ColPaliRetriever(encoder=colpali_encoder, store=store, **settings)
    first.retrieve("revenue")
    assert sorted(loaded[: N_FILES * PAGES_PER_FILE]) == sorted(store.page_ids())
    n_after_first = len(loaded)
    copy.retrieve("revenue")
    other.retrieve("revenue")
    # Nothing is loaded again: exact mode holds every page; fast mode reads its reranked
    # candidates' vectors from the index saved beside the store, not from the table.
    assert len(loaded) == n_after_first
    assert first._cache is copy._cache is other._cache


def test_a_shared_cache_is_freed_with_its_holder_and_last_retriever(store, colpali_encoder):
    holder = PageCacheHolder()
    retriever = ColPaliRetriever(colpali_encoder, store, search_mode="exact", cache_holder=holder)
    retriever.retrieve("revenue")
    cache = weakref.ref(retriever._cache)
    copy = retriever.as_retriever(similarity_top_k=1)
    copy.retrieve("revenue")
    assert copy._cache is cache()  # one cache for both
    del retriever, copy
    gc.collect()
    assert cache() is holder.cache  # the holder still holds it
    del holder
    gc.collect()
    assert cache() is None
    fresh = ColPaliRetriever(encoder=colpali_encoder, store=store, search_mode="exact")
    assert len(fresh.retrieve("revenue")) == 5  # a new cache, loaded again


def test_retrievers_over_different_stores_do_not_share(store, colpali_encoder, tmp_path):
    other_store = LanceDBPageStore(uri=str(tmp_path / "other"))
    ingest_documents(
        report_documents(1, first=5), colpali_encoder, other_store, show_progress=False
    )
    ours = ColPaliRetriever(encoder=colpali_encoder, store=store, similarity_top_k=100)
    theirs = ColPaliRetriever(encoder=colpali_encoder, store=other_store, similarity_top_k=100)
    assert {hit.node.metadata["doc_id"] for hit in theirs.retrieve("revenue")} == {"doc5"}
    assert len(ours.retrieve("revenue")) == N_FILES * PAGES_PER_FILE
    assert ours._cache is not theirs._cache


def test_fast_mode_reranks_without_holding_the_cache(store, colpali_encoder, monkeypatch):
    retriever = ColPaliRetriever(encoder=colpali_encoder, store=store, search_mode="fast")
    retriever.retrieve("revenue")  # builds the cache
    rerank_vectors = FastPageCache._rerank_vectors
    refresh_could_run: list[bool] = []

    def reading(cache, page_ids, version):
        # A refresh (the write side of the cache's lock) must be able to run meanwhile.
        lock = cache._readers_writer
        probe = threading.Thread(
            target=lambda: (lock.acquire_write(), lock.release_write()), daemon=True
        )
        probe.start()
        probe.join(timeout=30)
        refresh_could_run.append(not probe.is_alive())
        return rerank_vectors(cache, page_ids, version)

    monkeypatch.setattr(FastPageCache, "_rerank_vectors", reading)
    hits = retriever.retrieve("revenue")
    assert hits and refresh_could_run == [True]


def test_fast_queries_search_the_index_together(store, colpali_encoder, monkeypatch):
    # Two search slots whatever this machine's core count (one slot would serialise them).
    monkeypatch.setattr(search_slots, "_SLOTS", threading.BoundedSemaphore(2))
    retriever = ColPaliRetriever(encoder=colpali_encoder, store=store, search_mode="fast")
    retriever.retrieve("revenue")  # builds the cache
    candidates = FastPageIndex.candidates
    inside = threading.Barrier(2, timeout=30)

    def candidates_of_two_queries_at_once(index, *args, **kwargs):
        inside.wait()  # passes only when both queries are inside the index at once
        return candidates(index, *args, **kwargs)

    monkeypatch.setattr(FastPageIndex, "candidates", candidates_of_two_queries_at_once)
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(len(retriever.retrieve("revenue"))))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [5, 5]


@pytest.mark.parametrize("search_mode", ["exact", "fast"])
def test_a_query_sees_every_page_committed_before_it_began(
    tmp_path, colpali_encoder, monkeypatch, search_mode
):
    """Regression: a slower concurrent query, holding an older table version, used to move the
    shared page cache back to that version between this query's refresh and its search, so
    pages committed before this query began were missing from its results.
    """
    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    ingest_documents(document_pages("a", 2), colpali_encoder, store, show_progress=False)
    older = store.version
    retriever = ColPaliRetriever(
        encoder=colpali_encoder,
        store=store,
        similarity_top_k=100,
        search_mode=search_mode,
        fast_min_pages=1,
    )
    retriever.retrieve("revenue")
    ingest_documents(document_pages("b", 2), colpali_encoder, store, show_progress=False)
    cache_class = type(retriever._cache)
    search = cache_class.search

    def search_after_a_slower_query_refreshed(cache, *args, **kwargs):
        cache.refresh(older)  # what the other query, started before "b" was added, does now
        return search(cache, *args, **kwargs)

    monkeypatch.setattr(cache_class, "search", search_after_a_slower_query_refreshed)
    hits = retriever.retrieve("revenue")
    assert sorted(hit.node.node_id for hit in hits) == ["a-p1", "a-p2", "b-p1", "b-p2"]


def _store_of_pages(path, norms: dict[str, float]) -> LanceDBPageStore:
    """A store of one-document pages whose vectors all have the given norm."""
    store = LanceDBPageStore(uri=str(path))
    _add_pages(store, norms)
    return store


def _add_pages(store: LanceDBPageStore, norms: dict[str, float]) -> None:
    rng = np.random.default_rng(len(norms))
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), "white").save(buffer, format="PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    documents = [
        ImageDocument(id_=page_id, image=image, metadata={"doc_id": page_id, "page_number": 1})
        for page_id in norms
    ]
    vectors = []
    for norm in norms.values():
        page = rng.standard_normal((6, 16))
        vectors.append(
            (norm * page / np.linalg.norm(page, axis=1, keepdims=True)).astype(np.float32)
        )
    store.add(documents, vectors)


def test_the_exact_cache_measures_vector_norms_of_the_pages_it_loads(tmp_path, monkeypatch):
    store = _store_of_pages(tmp_path / "norms", {"a": 1.0, "b": 2.0, "c": 0.5})
    measured: list[int] = []
    original = page_caches.page_vector_norms

    def counting(pages):
        measured.append(len(pages))
        return original(pages)

    monkeypatch.setattr(page_caches, "page_vector_norms", counting)
    cache = ExactPageCache(store)
    cache.refresh(store.version)
    assert cache._snapshot.vector_norm == pytest.approx(2.0, rel=1e-3)
    store.delete_nodes(["b"])
    cache.refresh(store.version)
    assert cache._snapshot.vector_norm == pytest.approx(1.0, rel=1e-3)
    _add_pages(store, {"d": 3.0})
    cache.refresh(store.version)
    assert cache._snapshot.vector_norm == pytest.approx(3.0, rel=1e-3)
    assert measured == [3, 1]  # the kept pages' norms are carried, not measured again


def test_exact_cache_search_is_the_float32_maxsim_ranking(tmp_path):
    norms = {f"p{i}": 1.0 for i in range(40)}
    store = _store_of_pages(tmp_path / "ranking", norms)
    cache = ExactPageCache(store)
    query = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    hits = cache.search(query, 6, version=store.version)
    page_ids = sorted(norms)
    scores = maxsim_scores(query, store.get_page_vectors(page_ids))[0]
    positions, values = top_k(scores, 6)
    assert [page_id for page_id, _ in hits] == [page_ids[p] for p in positions]
    np.testing.assert_array_equal([score for _, score in hits], values)


def test_an_exact_cache_on_a_device_ranks_as_the_cpu_cache(tmp_path):
    store = _store_of_pages(tmp_path / "device", {f"p{i}": 1.0 for i in range(30)})
    on_cpu, on_device = ExactPageCache(store), ExactPageCache(store, device=torch.device("cpu"))
    query = np.random.default_rng(2).standard_normal((5, 16)).astype(np.float32)
    allowed = {f"p{i}" for i in range(0, 30, 3)}
    for kwargs in ({}, {"allowed": allowed}):
        want = on_cpu.search(query, 4, version=store.version, **kwargs)
        got = on_device.search(query, 4, version=store.version, **kwargs)
        assert [page_id for page_id, _ in got] == [page_id for page_id, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-6)
    assert on_device._snapshot.on_device.n_pages == 30
    # Pages deleted and added: the device holds exactly the store's pages again.
    store.delete_nodes(["p0", "p1"])
    _add_pages(store, {"q0": 1.0, "q1": 1.0})
    hits = on_device.search(query, 40, version=store.version)
    assert sorted(page_id for page_id, _ in hits) == sorted(store.page_ids())
    assert on_device._snapshot.on_device.n_pages == 30


def test_a_failed_upload_to_the_device_reloads_every_page_next_time(tmp_path, monkeypatch):
    store = _store_of_pages(tmp_path / "upload", {f"p{i}": 1.0 for i in range(8)})
    cache = ExactPageCache(store, device=torch.device("cpu"))
    cache.refresh(store.version)
    _add_pages(store, {"new": 1.0})
    real = page_caches.DevicePageMatrix

    def full_device(*args, **kwargs):
        raise UnsupportedDeviceError("pages do not fit in the memory of cuda:0")

    monkeypatch.setattr(page_caches, "DevicePageMatrix", full_device)
    with pytest.raises(UnsupportedDeviceError):
        cache.refresh(store.version)
    monkeypatch.setattr(page_caches, "DevicePageMatrix", real)
    query = np.ones((2, 16), dtype=np.float32)
    hits = cache.search(query, 20, version=store.version)
    assert sorted(page_id for page_id, _ in hits) == sorted(store.page_ids())
    assert len(hits) == 9


def test_retrievers_share_a_cache_only_on_the_same_search_device(store, colpali_encoder):
    on_cpu = ColPaliRetriever(colpali_encoder, store, search_mode="exact")
    on_device = ColPaliRetriever(colpali_encoder, store, search_mode="exact", search_device="cpu")
    also_on_device = ColPaliRetriever(colpali_encoder, store, search_device="cpu")
    for retriever in (on_cpu, on_device, also_on_device):
        retriever.retrieve("revenue")
    assert on_cpu._cache is not on_device._cache
    assert on_device._cache is also_on_device._cache
    assert on_cpu._cache.device is None and on_device._cache.device == torch.device("cpu")


def test_an_exact_cache_on_a_device_does_not_measure_vector_norms(tmp_path, monkeypatch):
    store = _store_of_pages(tmp_path / "no-norms", {"a": 1.0, "b": 2.0})
    measured: list[int] = []
    monkeypatch.setattr(page_caches, "page_vector_norms", lambda pages: measured.append(1))
    ExactPageCache(store, device=torch.device("cpu")).refresh(store.version)
    assert measured == []  # only the CPU's float16 screening needs them


@pytest.mark.parametrize("search_mode", ["exact", "fast"])
@pytest.mark.parametrize("made_by", ["index", "constructor"])
def test_a_store_keeps_its_pages_loaded_for_retrievers_made_per_request(
    store, colpali_encoder, monkeypatch, search_mode, made_by
):
    from llama_index_vlm.index import VisualDocumentIndex

    index = VisualDocumentIndex.from_store(store, colpali_encoder)

    def new_retriever(k: int) -> ColPaliRetriever:
        if made_by == "index":
            return index.as_retriever(search_mode=search_mode, similarity_top_k=k)
        return ColPaliRetriever(colpali_encoder, store, similarity_top_k=k, search_mode=search_mode)

    loaded = _count_loaded_pages(monkeypatch)
    for k in (1, 3, 2):  # a web handler's pattern: a new retriever for each request
        assert len(new_retriever(k).retrieve("revenue")) == k
        gc.collect()
    # Loaded once, at the first request (fast mode then reads from its saved index).
    assert sorted(loaded) == sorted(store.page_ids())
    kind = {"exact": ExactPageCache, "fast": FastPageCache}[search_mode]
    assert isinstance(store_cache_holder(store).cache, kind)


def test_a_store_and_its_page_cache_are_freed_together(tmp_path, colpali_encoder):
    store = LanceDBPageStore(uri=str(tmp_path / "freed"))
    ingest_documents(report_documents(1), colpali_encoder, store, show_progress=False)
    ColPaliRetriever(colpali_encoder, store, search_mode="exact").retrieve("revenue")
    cache = weakref.ref(store_cache_holder(store).cache)
    del store
    gc.collect()
    assert cache() is None


def test_a_retrievers_own_holder_keeps_its_cache_only_while_the_holder_lives(
    store, colpali_encoder
):
    holder = PageCacheHolder()
    ColPaliRetriever(colpali_encoder, store, search_mode="exact", cache_holder=holder).retrieve(
        "revenue"
    )
    cache = weakref.ref(holder.cache)
    assert store_cache_holder(store).cache is None  # the store's own holder was not used
    del holder
    gc.collect()
    assert cache() is None


def test_a_store_holds_only_the_cache_its_retrievers_used_last(store, colpali_encoder):
    from llama_index_vlm.index import VisualDocumentIndex

    index = VisualDocumentIndex.from_store(store, colpali_encoder)
    holder = store_cache_holder(store)
    index.as_retriever(search_mode="exact").retrieve("revenue")
    exact_cache = weakref.ref(holder.cache)
    assert isinstance(exact_cache(), ExactPageCache)
    index.as_retriever(search_mode="fast").retrieve("revenue")  # the store outgrew exact mode
    gc.collect()
    assert isinstance(holder.cache, FastPageCache)
    assert exact_cache() is None  # every page's vectors are freed
