"""Reliability under load (issue 7): a query soak while a writer ingests and deletes.

Two processes ingesting into one store at once: ``test_concurrent_ingest.py``. Write failures
(disk full, permission denied, a file-size limit hit inside LanceDB):
``tests/store/test_store_write_failures.py``. A SIGKILL during ingest and an encoder raising
mid-batch: ``tests/test_ingest_faults.py``.

:func:`run_soak` is also what ``benchmarks/soak.py`` runs, for longer, to measure queries/s:
the tests assert correctness (no error, no unknown, stale, torn or missing page, exact final
state), never speed.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
import traceback
from dataclasses import dataclass, field

import numpy as np
import pytest
from llama_index.core.schema import ImageDocument
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters
from page_documents import document_pages, noise_pixels

from llama_index_vlm.encoder import ColPaliEncoder
from llama_index_vlm.images import decode_image
from llama_index_vlm.ingestion import ingest_documents
from llama_index_vlm.retriever import ColPaliRetriever
from llama_index_vlm.store import LanceDBPageStore

# Seconds each soak runs in the test suite (both search modes: twice this). benchmarks/soak.py
# runs longer; VLM_SOAK_SECONDS overrides it here.
SOAK_SECONDS = float(os.environ.get("VLM_SOAK_SECONDS", "12"))
QUERIES = [
    "What was the revenue in 2023?",
    "safety instructions",
    "table of quarterly costs",
    "chart",
    "Where is the warranty?",
]


# ------------------------------------------------------------------------------ page checks


def whole_node_problem(node) -> str | None:
    """Why a retrieved node is not a whole page as it was written, or None if it is."""
    metadata = node.metadata
    for key in ("doc_id", "file_path", "file_name", "page_number", "page_count"):
        if metadata.get(key) is None:
            return f"{node.node_id}: metadata {key} missing"
    if node.node_id != f"{metadata['doc_id']}-p{metadata['page_number']}":
        return f"{node.node_id}: metadata of another page {metadata}"
    if node.ref_doc_id != metadata["doc_id"]:
        return f"{node.node_id}: ref_doc_id {node.ref_doc_id!r}"
    if not np.array_equal(np.asarray(decode_image(node.image)), noise_pixels(node.node_id)):
        return f"{node.node_id}: the image is not the page's own"
    return None


# ----------------------------------------------------------------------------------- the soak


@dataclass
class SoakResult:
    """What a soak did and saw; ``errors`` lists every failure (tracebacks or broken checks)."""

    search_mode: str
    threads: int
    seconds: float = 0.0
    queries: int = 0
    filtered_queries: int = 0
    commits: int = 0
    documents_added: int = 0
    documents_replaced: int = 0
    documents_deleted: int = 0
    pages_ever: int = 0
    pages_expected: int = 0
    pages_stored: int = 0
    pages_lost: int = 0
    pages_unexpected: int = 0
    errors: list[str] = field(default_factory=list)
    optimize_every: int = 0
    optimizations: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)  # seconds per query
    finished_at: list[float] = field(default_factory=list, repr=False)  # seconds since start
    queries_by_thread: list[int] = field(default_factory=list)

    @property
    def queries_per_second(self) -> float:
        return self.queries / self.seconds if self.seconds else 0.0


class _Ledger:
    """The writer's record of what may be, must be and must no longer be visible.

    - ``ever``: every page id that any commit may have written (recorded *before* the
      commit), plus the initial ones. A query may only return these.
    - ``committed_at``: when the ingest that wrote a page returned (it is visible after).
    - ``deleting_at`` / ``deleted_at``: when the delete of a page started / returned.

    A query that starts at ``t0`` and ends at ``t1`` must not return a page deleted before
    ``t0``, and, when it asks for every page, must return each page committed before ``t0``
    whose delete did not start before ``t1``.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ever: set[str] = set()
        self.committed_at: dict[str, float] = {}
        self.deleting_at: dict[str, float] = {}
        self.deleted_at: dict[str, float] = {}
        self.live: dict[str, list[str]] = {}  # doc_id -> page ids, as committed

    def will_write(self, page_ids: list[str]) -> None:
        with self.lock:
            self.ever.update(page_ids)

    def committed(self, doc_id: str, page_ids: list[str]) -> None:
        now = time.monotonic()
        with self.lock:
            self.live[doc_id] = list(page_ids)
            self.committed_at.update(dict.fromkeys(page_ids, now))

    def deleting(self, doc_id: str) -> list[str]:
        now = time.monotonic()
        with self.lock:
            page_ids = self.live[doc_id]
            self.deleting_at.update(dict.fromkeys(page_ids, now))
            return page_ids

    def deleted(self, doc_id: str) -> None:
        now = time.monotonic()
        with self.lock:
            page_ids = self.live.pop(doc_id)
            self.deleted_at.update(dict.fromkeys(page_ids, now))

    def deleting_during(self, t0: float, t1: float) -> bool:
        """Whether a delete started while a query ran (it may remove the query's pages)."""
        with self.lock:
            return any(t0 <= at <= t1 for at in self.deleting_at.values())

    def check(self, page_ids: list[str], t0: float, t1: float, everything: bool) -> str | None:
        with self.lock:
            unknown = [i for i in page_ids if i not in self.ever]
            if unknown:
                return f"pages never written: {unknown}"
            stale = [i for i in page_ids if self.deleted_at.get(i, math.inf) < t0]
            if stale:
                return f"pages deleted before the query started: {stale}"
            if everything:
                required = {
                    i
                    for i, at in self.committed_at.items()
                    if at < t0 and self.deleting_at.get(i, math.inf) > t1
                }
                missing = required - set(page_ids)
                if missing:
                    return f"pages committed before the query started are missing: {missing}"
        return None


def run_soak(
    encoder: ColPaliEncoder,
    uri: str,
    *,
    search_mode: str = "exact",
    seconds: float = SOAK_SECONDS,
    threads: int = 8,
    seed: int = 0,
    optimize_every: int = 0,
) -> SoakResult:
    """``threads`` threads query one shared :class:`ColPaliRetriever` for ``seconds`` while one
    writer ingests new documents, replaces files (same path, new content) and deletes
    documents, and with ``optimize_every=n`` also compacts the table (``store.optimize()``,
    old versions kept) after every n-th change. Every result is checked (see :class:`_Ledger`
    and :func:`whole_node_problem`); at the end the store must hold exactly the pages the
    writer left, and so must a query.
    """
    rng = random.Random(seed)
    store = LanceDBPageStore(uri=uri)
    ledger = _Ledger()
    result = SoakResult(
        search_mode=search_mode,
        threads=threads,
        optimize_every=optimize_every,
        queries_by_thread=[0] * threads,
    )
    errors_lock = threading.Lock()

    def error(message: str) -> None:
        with errors_lock:
            if len(result.errors) < 50:
                result.errors.append(message)

    def write(documents: list[ImageDocument]) -> None:
        report = ingest_documents(documents, encoder, store, batch_size=2, show_progress=False)
        if not report.ok:
            raise AssertionError(f"ingest failed: {report.failed}")
        result.commits += math.ceil(len(documents) / 2)

    initial = [document_pages(f"init{n}", 3) for n in range(6)]
    for documents in initial:
        ledger.will_write([d.node_id for d in documents])
    write([d for documents in initial for d in documents])
    for documents in initial:
        ledger.committed(documents[0].metadata["doc_id"], [d.node_id for d in documents])

    retriever = ColPaliRetriever(
        encoder=encoder,
        store=store,
        similarity_top_k=4,
        search_mode=search_mode,
        fast_min_pages=1,
        candidate_depth=8,
    )
    # Copies made after a first query share its page cache: all threads refresh one cache.
    retriever.retrieve(QUERIES[0])
    everything = retriever.as_retriever(similarity_top_k=10_000)
    late_pages = retriever.as_retriever(
        filters=MetadataFilters(
            filters=[MetadataFilter(key="page_number", value=2, operator=FilterOperator.GTE)]
        )
    )
    stop = threading.Event()
    counts_lock = threading.Lock()

    def writer() -> None:
        serial = 0
        paths: dict[str, str] = {}  # doc_id -> file_path, for replaced files
        try:
            while not stop.is_set():
                serial += 1
                action = rng.random()
                with ledger.lock:
                    live = sorted(ledger.live)
                if action < 0.5 or len(live) < 4:
                    doc_id = f"new{serial}"
                    documents = document_pages(doc_id, rng.randint(1, 4))
                    ledger.will_write([d.node_id for d in documents])
                    write(documents)
                    ledger.committed(doc_id, [d.node_id for d in documents])
                    result.documents_added += 1
                elif action < 0.75:
                    # A changed file: same path, new content (doc_id); its old pages go in
                    # the same commit as the new ones.
                    old = rng.choice(live)
                    doc_id = f"{old.split('~')[0]}~{serial}"
                    paths[doc_id] = paths.pop(old, f"/docs/{old}.pdf")
                    documents = document_pages(
                        doc_id, rng.randint(1, 3), file_path=paths[doc_id], text="", dpi=None
                    )
                    ledger.will_write([d.node_id for d in documents])
                    ledger.deleting(old)
                    write(documents)
                    ledger.committed(doc_id, [d.node_id for d in documents])
                    ledger.deleted(old)
                    result.documents_replaced += 1
                else:
                    doc_id = rng.choice(live)
                    ledger.deleting(doc_id)
                    store.delete(doc_id)
                    ledger.deleted(doc_id)
                    result.commits += 1
                    result.documents_deleted += 1
                if optimize_every and serial % optimize_every == 0:
                    store.optimize()
                    result.optimizations += 1
        except Exception:  # noqa: BLE001 - every failure is reported by the soak
            error("writer: " + traceback.format_exc())

    def reader(thread_index: int) -> None:
        local = random.Random(seed * 1000 + thread_index)
        while not stop.is_set():
            kind = local.random()
            query = local.choice(QUERIES)
            t0 = time.monotonic()
            try:
                if kind < 0.2:
                    hits = everything.retrieve(query)
                elif kind < 0.4:
                    hits = late_pages.retrieve(query)
                else:
                    hits = retriever.retrieve(query)
            except Exception:  # noqa: BLE001 - every failure is reported by the soak
                error(f"query {query!r}: " + traceback.format_exc())
                continue
            t1 = time.monotonic()
            page_ids = [hit.node.node_id for hit in hits]
            problems = []
            if len(page_ids) != len(set(page_ids)):
                problems.append(f"a page is returned twice: {page_ids}")
            scores = [hit.score for hit in hits]
            if not all(math.isfinite(s) for s in scores) or scores != sorted(scores, reverse=True):
                problems.append(f"scores not finite and best first: {scores}")
            if kind >= 0.4 and not hits and not ledger.deleting_during(t0, t1):
                problems.append("no page returned, though the store always holds some")
            if 0.2 <= kind < 0.4 and any(hit.node.metadata["page_number"] < 2 for hit in hits):
                problems.append("the filter page_number >= 2 was not applied")
            problems.append(ledger.check(page_ids, t0, t1, everything=kind < 0.2))
            problems += [whole_node_problem(hit.node) for hit in hits]
            for problem in filter(None, problems):
                error(f"query {query!r} ({'all' if kind < 0.2 else 'top 4'}): {problem}")
            with counts_lock:
                result.queries += 1
                result.queries_by_thread[thread_index] += 1
                result.latencies.append(t1 - t0)
                result.finished_at.append(t1 - started)
                result.filtered_queries += 0.2 <= kind < 0.4

    workers = [threading.Thread(target=reader, args=(n,)) for n in range(threads)]
    writer_thread = threading.Thread(target=writer)
    started = time.monotonic()
    for thread in [writer_thread, *workers]:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in [writer_thread, *workers]:
        thread.join(timeout=120)
        if thread.is_alive():
            error(f"{thread.name} still running 120 s after the soak ended: a hang")
    result.seconds = time.monotonic() - started

    # After the writer stopped: exactly the pages it left, in the store and in a query.
    expected = {page_id for page_ids in ledger.live.values() for page_id in page_ids}
    stored = store.page_ids()
    final = {hit.node.node_id for hit in everything.retrieve("final check")}
    fresh = ColPaliRetriever(encoder=encoder, store=LanceDBPageStore(uri=uri), search_mode="exact")
    fresh_final = {
        hit.node.node_id for hit in fresh.as_retriever(similarity_top_k=10_000).retrieve("final")
    }
    result.pages_ever = len(ledger.ever)
    result.pages_expected = len(expected)
    result.pages_stored = len(stored)
    result.pages_lost = len(expected - set(stored))
    result.pages_unexpected = len(set(stored) - expected)
    if len(stored) != len(set(stored)):
        error("a page_id is stored twice")
    if final != expected or fresh_final != expected:
        error(
            f"final query: {len(final)} / {len(fresh_final)} pages (cached / fresh retriever), "
            f"{len(expected)} expected"
        )
    return result


@pytest.mark.slow
@pytest.mark.timeout(SOAK_SECONDS * 2 + 240)
@pytest.mark.parametrize(
    ("search_mode", "optimize_every"),
    [("exact", 0), ("fast", 10)],  # compaction runs during the fast-mode soak
)
def test_soak_queries_while_a_writer_ingests_and_deletes(
    tmp_path, colpali_encoder, check_whole_pages, search_mode, optimize_every
):
    result = run_soak(
        colpali_encoder,
        str(tmp_path / "index"),
        search_mode=search_mode,
        optimize_every=optimize_every,
    )

    assert result.errors == [], "\n".join(result.errors[:5])
    assert min(result.queries_by_thread) > 0, result  # every thread answered: none hung
    assert result.filtered_queries > 0 and result.commits > 3, result
    assert result.optimizations > 0 or not optimize_every, result
    assert result.pages_lost == result.pages_unexpected == 0, result
    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    assert len(check_whole_pages(store)) == result.pages_expected
