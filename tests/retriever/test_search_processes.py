"""Fast searches in worker processes (``ColPaliRetriever(search_processes=N)``): the same
answers as in the calling process, at the version it asks for, and a search that survives
workers that die or never start."""

from __future__ import annotations

import gc
import logging
import os
import signal
import time

import psutil
import pytest
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters
from retriever_corpus import N_FILES, PAGES_PER_FILE, report_documents

from llama_index_vlm.ingestion import ingest_documents
from llama_index_vlm.retriever import ColPaliRetriever
from llama_index_vlm.retriever.search_processes import (
    SearchProcesses,
    shared_search_processes,
)
from llama_index_vlm.store import LanceDBPageStore

QUERIES = ["What was the revenue in 2023?", "staff costs by region", "the 2021 outlook"]


def _ranking(retriever: ColPaliRetriever, query: str) -> list[tuple[str, float]]:
    return [(hit.node.node_id, round(hit.score, 4)) for hit in retriever.retrieve(query)]


def _in_process(retriever: ColPaliRetriever) -> ColPaliRetriever:
    return retriever.as_retriever(search_processes=None)


def _wait_until_gone(pids: list[int], timeout: float = 30.0) -> list[int]:
    """The pids among ``pids`` still running after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if psutil.pid_exists(pid) and not _is_zombie(pid)]
        time.sleep(0.2)
    return alive


def _is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def workers_retriever(store, colpali_encoder):
    retriever = ColPaliRetriever(
        colpali_encoder, store, similarity_top_k=5, search_mode="fast", search_processes=1
    )
    yield retriever
    shared_search_processes(store, 1).close()


def test_workers_answer_as_the_calling_process_does_with_and_without_filters(workers_retriever):
    in_process = _in_process(workers_retriever)
    pool = shared_search_processes(workers_retriever.store, 1)
    for query in QUERIES:
        assert _ranking(workers_retriever, query) == _ranking(in_process, query)
    assert len(pool.worker_pids) == 1 and os.getpid() not in pool.worker_pids
    assert pool.unavailable is None
    year = MetadataFilters(filters=[MetadataFilter(key="year", value=2021)])
    filtered = workers_retriever.as_retriever(filters=year)
    hits = filtered.retrieve(QUERIES[0])
    assert hits and {hit.node.metadata["year"] for hit in hits} == {2021}
    assert _ranking(filtered, QUERIES[0]) == _ranking(_in_process(filtered), QUERIES[0])


def test_workers_search_the_version_the_caller_reads(workers_retriever, colpali_encoder):
    store = workers_retriever.store
    before = {hit.node.node_id for hit in workers_retriever.retrieve(QUERIES[0])}
    assert len(before) == 5
    # New pages (another commit): the worker searches them at once, as the caller would.
    ingest_documents(
        report_documents(1, first=N_FILES), colpali_encoder, store, show_progress=False
    )
    everything = workers_retriever.as_retriever(similarity_top_k=(N_FILES + 1) * PAGES_PER_FILE)
    found = {hit.node.ref_doc_id for hit in everything.retrieve(QUERIES[0])}
    assert found == {f"doc{n}" for n in range(N_FILES + 1)}
    assert _ranking(everything, QUERIES[1]) == _ranking(_in_process(everything), QUERIES[1])
    store.delete("doc0")
    found = {hit.node.ref_doc_id for hit in everything.retrieve(QUERIES[0])}
    assert found == {f"doc{n}" for n in range(1, N_FILES + 1)}


def test_a_search_survives_its_workers_dying_and_new_ones_take_over(workers_retriever, caplog):
    expected = _ranking(_in_process(workers_retriever), QUERIES[0])
    assert _ranking(workers_retriever, QUERIES[0]) == expected
    pool = shared_search_processes(workers_retriever.store, 1)
    (first_worker,) = pool.worker_pids
    os.kill(first_worker, signal.SIGKILL)
    assert not _wait_until_gone([first_worker])
    with caplog.at_level(logging.WARNING, logger="llama_index_vlm.retriever.search_processes"):
        assert _ranking(workers_retriever, QUERIES[0]) == expected  # searched in this process
    assert "searching in the calling process instead" in caplog.text
    assert pool.unavailable is None  # they had answered: the next search starts new ones
    assert _ranking(workers_retriever, QUERIES[0]) == expected
    (second_worker,) = pool.worker_pids
    assert second_worker != first_worker


def test_workers_that_cannot_start_leave_searches_in_the_calling_process(
    workers_retriever, monkeypatch, caplog
):
    pool = shared_search_processes(workers_retriever.store, 1)
    # A configuration the worker cannot open a store from: its initialiser fails.
    monkeypatch.setitem(pool.store_config, "vector_dtype", "no-such-dtype")
    expected = _ranking(_in_process(workers_retriever), QUERIES[0])
    with caplog.at_level(logging.WARNING, logger="llama_index_vlm.retriever.search_processes"):
        assert _ranking(workers_retriever, QUERIES[0]) == expected
    assert "could not start" in caplog.text
    assert pool.unavailable is not None and "could not start" in pool.unavailable
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="llama_index_vlm.retriever.search_processes"):
        assert _ranking(workers_retriever, QUERIES[1]) == _ranking(
            _in_process(workers_retriever), QUERIES[1]
        )
    assert pool.worker_pids == [] and caplog.text == ""  # not tried again, nor warned again


def test_errors_of_the_search_itself_reach_the_caller_as_they_are(workers_retriever):
    pool = shared_search_processes(workers_retriever.store, 1)
    version = workers_retriever.store.version
    import numpy as np

    with pytest.raises(ValueError, match="query vectors have dim 7"):
        pool.search(np.ones((3, 7), dtype=np.float32), 5, version=version)
    assert pool.unavailable is None and len(pool.worker_pids) == 1


def test_two_workers_answer_concurrent_queries_alike(store, colpali_encoder):
    from concurrent.futures import ThreadPoolExecutor

    retriever = ColPaliRetriever(
        colpali_encoder, store, similarity_top_k=5, search_mode="fast", search_processes=2
    )
    in_process = _in_process(retriever)
    expected = {query: _ranking(in_process, query) for query in QUERIES}
    try:
        with ThreadPoolExecutor(6) as threads:
            answers = list(threads.map(lambda q: (q, _ranking(retriever, q)), QUERIES * 4))
        assert all(ranking == expected[query] for query, ranking in answers)
        assert len(shared_search_processes(store, 2).worker_pids) == 2
    finally:
        shared_search_processes(store, 2).close()


def test_copies_and_saved_retrievers_share_the_store_objects_workers(
    workers_retriever, colpali_encoder
):
    copy = workers_retriever.as_retriever(similarity_top_k=2)
    assert copy.search_processes == 1
    data = workers_retriever.to_dict()
    assert data["search_processes"] == 1
    assert ColPaliRetriever.from_dict(data, encoder=colpali_encoder).search_processes == 1
    assert shared_search_processes(copy.store, 1) is shared_search_processes(
        workers_retriever.store, 1
    )
    assert shared_search_processes(copy.store, 2) is not shared_search_processes(copy.store, 1)


def test_the_workers_stop_when_their_store_object_goes(tmp_path, colpali_encoder):
    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    ingest_documents(report_documents(1), colpali_encoder, store, show_progress=False)
    retriever = ColPaliRetriever(colpali_encoder, store, search_mode="fast", search_processes=1)
    assert retriever.retrieve(QUERIES[0])
    pids = shared_search_processes(store, 1).worker_pids
    assert len(pids) == 1
    del retriever, store
    gc.collect()
    assert not _wait_until_gone(pids)


@pytest.mark.parametrize("processes", [0, -1, 1.5, True, "2"])
def test_search_processes_must_be_a_whole_number_of_at_least_one(store, colpali_encoder, processes):
    with pytest.raises(ValueError, match="search_processes must be"):
        ColPaliRetriever(colpali_encoder, store, search_processes=processes)


def test_a_pool_needs_at_least_one_process(store):
    with pytest.raises(ValueError, match="at least 1"):
        SearchProcesses(store, 0)


def test_exact_searches_stay_in_the_calling_process(store, colpali_encoder):
    retriever = ColPaliRetriever(colpali_encoder, store, search_mode="exact", search_processes=1)
    assert _ranking(retriever, QUERIES[0]) == _ranking(_in_process(retriever), QUERIES[0])
    assert shared_search_processes(store, 1).worker_pids == []
