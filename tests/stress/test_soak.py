"""Reliability under load and faults (issue 7): a query soak while a writer ingests and deletes,
two processes ingesting into one store at once, and write failures (disk full, permission
denied, a file-size limit hit inside LanceDB) in the middle of an ingest.

A SIGKILL during ingest and an encoder raising mid-batch are tested in
``tests/test_ingest_faults.py``; the store's own thread race, in ``tests/test_store.py``.

:func:`run_soak` is also what ``benchmarks/soak.py`` runs, for longer, to measure queries/s:
the tests assert correctness (no error, no unknown, stale, torn or missing page, exact final
state), never speed.
"""

from __future__ import annotations

import base64
import errno
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import lancedb
import numpy as np
import pytest
from llama_index.core.schema import ImageDocument
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters
from pdfs import page_ids_of, write_numbered_pdf
from PIL import Image

from llama_index_vlm.encoder import ColPaliEncoder
from llama_index_vlm.errors import StoreError
from llama_index_vlm.images import decode_image, encode_image
from llama_index_vlm.ingestion import ingest, ingest_documents
from llama_index_vlm.reader import PDFPageReader
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


# ------------------------------------------------------------------------------ page documents


def page_pixels(page_id: str) -> np.ndarray:
    """The page image of ``page_id``: noise at the tiny model's 32 x 32, so pages differ."""
    rng = np.random.default_rng(zlib.crc32(page_id.encode()))
    pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(pixels).resize((48, 64), Image.Resampling.NEAREST))


def page_documents(doc_id: str, n_pages: int, file_path: str | None = None) -> list[ImageDocument]:
    """The pages of one document as the reader would give them, images fixed by page id."""
    file_path = file_path or f"/corpus/{doc_id}.pdf"
    documents = []
    for page_number in range(1, n_pages + 1):
        page_id = f"{doc_id}-p{page_number}"
        image = encode_image(Image.fromarray(page_pixels(page_id)), "PNG")
        documents.append(
            ImageDocument(
                id_=page_id,
                image=base64.b64encode(image).decode(),
                image_mimetype="image/png",
                metadata={
                    "doc_id": doc_id,
                    "page_id": page_id,
                    "file_path": file_path,
                    "file_name": Path(file_path).name,
                    "page_number": page_number,
                    "page_count": n_pages,
                    "width": 48,
                    "height": 64,
                    "dpi": 144,
                },
            )
        )
    return documents


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
    if not np.array_equal(np.asarray(decode_image(node.image)), page_pixels(node.node_id)):
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

    initial = [page_documents(f"init{n}", 3) for n in range(6)]
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
                    documents = page_documents(doc_id, rng.randint(1, 4))
                    ledger.will_write([d.node_id for d in documents])
                    write(documents)
                    ledger.committed(doc_id, [d.node_id for d in documents])
                    result.documents_added += 1
                elif action < 0.75:
                    # A changed file: same path, new content (doc_id); its old pages go in
                    # the same commit as the new ones.
                    old = rng.choice(live)
                    doc_id = f"{old.split('~')[0]}~{serial}"
                    paths[doc_id] = paths.pop(old, f"/corpus/{old}.pdf")
                    documents = page_documents(doc_id, rng.randint(1, 3), paths[doc_id])
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


@pytest.mark.parametrize("search_mode", ["exact", "fast"])
def test_a_query_sees_every_page_committed_before_it_began(
    tmp_path, monkeypatch, colpali_encoder, search_mode
):
    """Regression: a slower concurrent query, holding an older table version, used to move the
    shared page cache back to that version between this query's refresh and its search, so
    pages committed before this query began were missing from its results.
    """
    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    ingest_documents(page_documents("a", 2), colpali_encoder, store, show_progress=False)
    older = store.version
    retriever = ColPaliRetriever(
        encoder=colpali_encoder,
        store=store,
        similarity_top_k=100,
        search_mode=search_mode,
        fast_min_pages=1,
    )
    retriever.retrieve("revenue")
    ingest_documents(page_documents("b", 2), colpali_encoder, store, show_progress=False)
    cache_class = type(retriever._cache)
    search = cache_class.search

    def search_after_a_slower_query_refreshed(cache, *args, **kwargs):
        cache.refresh(older)  # what the other query, started before "b" was added, does now
        return search(cache, *args, **kwargs)

    monkeypatch.setattr(cache_class, "search", search_after_a_slower_query_refreshed)
    hits = retriever.retrieve("revenue")
    assert sorted(hit.node.node_id for hit in hits) == ["a-p1", "a-p2", "b-p1", "b-p2"]


# -------------------------------------------------------------- two processes, one store

INGEST_PROCESSES = r"""
# Loads the model once, then forks one ingest process per side; they start writing together.
# The model never runs before the fork (no OpenMP threads to lose), and no LanceDB operation
# is in flight (LanceDB resets its async runtime in forked children).
import json, os, sys, time, traceback, warnings
from pathlib import Path

import torch

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="lancedb fork support is experimental")
from llama_index_vlm.encoder import ColPaliEncoder
from llama_index_vlm.errors import StoreError
from llama_index_vlm.ingestion import ingest
from llama_index_vlm.reader import PDFPageReader
from llama_index_vlm.store import LanceDBPageStore

checkpoint, uri, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
jobs = json.loads(sys.argv[4])
encoder = ColPaliEncoder.from_pretrained(checkpoint, show_progress=False)
children = {}
for side, paths in jobs.items():
    pid = os.fork()
    if pid == 0:
        try:
            store = LanceDBPageStore(uri=uri)
            while not (out / "start").exists():
                time.sleep(0.002)
            try:
                report = ingest(paths, encoder, store, reader=PDFPageReader(dpi=36),
                                batch_size=1, show_progress=False)
                outcome = {"failed": [[f.path, f.reason] for f in report.failed],
                           "added": report.pages_added, "unchanged": report.pages_unchanged}
            except StoreError as error:
                outcome = {"store_error": str(error)}
            (out / f"{side}.json").write_text(json.dumps(outcome))
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    children[side] = pid
(out / "start").touch()
codes = {side: os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for side, pid in children.items()}
print(json.dumps(codes))
"""


def check_every_version(store: LanceDBPageStore) -> None:
    """Every committed version opens and holds each page once, with all its vectors."""
    table = lancedb.connect(store.uri).open_table(store.table_name)
    for version in [v["version"] for v in table.list_versions()]:
        table.checkout(version)
        rows = table.search().select(["page_id", "n_vectors", "vectors"]).limit(None).to_arrow()
        page_ids = rows["page_id"].to_pylist()
        assert len(page_ids) == len(set(page_ids)), f"version {version} duplicates a page"
        lengths = [len(vectors) for vectors in rows["vectors"].to_pylist()]
        assert lengths == rows["n_vectors"].to_pylist(), f"version {version} has torn vectors"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_processes_ingesting_into_one_store_end_with_the_union(
    tmp_path, tiny_checkpoint, colpali_encoder, check_whole_pages
):
    common = write_numbered_pdf(tmp_path / "shared" / "common.pdf", 3)
    own = {
        side: [write_numbered_pdf(tmp_path / side / f"{side}{n}.pdf", 2) for n in range(3)]
        for side in ("left", "right")
    }
    uri, out = str(tmp_path / "index"), tmp_path / "outcomes"
    out.mkdir()
    script = tmp_path / "ingest_processes.py"
    script.write_text(INGEST_PROCESSES)
    # Both add the common file first, so they race on the same new pages, then their own.
    jobs = {side: [str(common), str(tmp_path / side)] for side in own}
    finished = subprocess.run(
        [sys.executable, str(script), str(tiny_checkpoint("colpali")), uri, str(out)]
        + [json.dumps(jobs)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert json.loads(finished.stdout.strip().splitlines()[-1]) == dict.fromkeys(own, 0), (
        finished.stderr[-3000:]
    )
    outcomes = {side: json.loads((out / f"{side}.json").read_text()) for side in own}

    store = LanceDBPageStore(uri=uri)
    for side, outcome in outcomes.items():
        # Both succeed, or one is told clearly to retry; a retry then completes the job.
        if "store_error" in outcome:
            assert "run it again" in outcome["store_error"], outcome
            check_every_version(store)
            rerun = ingest(
                [common, tmp_path / side],
                colpali_encoder,
                store,
                reader=PDFPageReader(dpi=36),
                show_progress=False,
            )
            assert rerun.ok, rerun.failed
        else:
            assert outcome["failed"] == [], outcome
    expected = page_ids_of(common, 3).union(
        *(page_ids_of(path, 2) for paths in own.values() for path in paths)
    )
    assert check_whole_pages(store) == expected  # the union; no page twice, none torn
    check_every_version(store)
    # Each side accounts for each of its 9 pages once: added, or found stored by the other.
    for outcome in outcomes.values():
        if "store_error" not in outcome:
            assert outcome["added"] + outcome["unchanged"] == 9, outcomes


class _LateConnection:
    """A LanceDB connection that has not seen the table yet, as in a process that looked just
    before another process created it.
    """

    def __init__(self, real) -> None:
        self.real = real
        self.tried_to_create = False

    def open_table(self, name, **kwargs):
        if not self.tried_to_create:
            raise ValueError(f"Table '{name}' was not found")
        return self.real.open_table(name, **kwargs)

    def create_table(self, *args, **kwargs):
        self.tried_to_create = True
        return self.real.create_table(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_two_writers_creating_the_table_at_once_both_succeed(tmp_path, colpali_encoder):
    """Regression: the loser of the race to create the table failed its first batch with
    LanceDB's "Provided schema does not match existing table schema".
    """
    uri = str(tmp_path / "index")
    first = LanceDBPageStore(uri=uri)
    late = LanceDBPageStore(uri=uri, connection=_LateConnection(lancedb.connect(uri)))
    assert first.version == late.version == 0
    for store, doc_id in [(first, "a"), (late, "b")]:
        report = ingest_documents(
            page_documents(doc_id, 2), colpali_encoder, store, show_progress=False
        )
        assert report.ok, report.failed
    assert sorted(LanceDBPageStore(uri=uri).page_ids()) == ["a-p1", "a-p2", "b-p1", "b-p2"]


# ----------------------------------------------------------------------- failing writes

WRITE_FAILURES = {
    "disk full": OSError(errno.ENOSPC, "No space left on device"),
    "permission denied": PermissionError(errno.EACCES, "Permission denied"),
    # What LanceDB itself raises for an I/O error in its Rust writer.
    "lance io error": RuntimeError("lance error: LanceError(IO): No space left on device (28)"),
}


def _fail_writes(monkeypatch, method: str, error: Exception, on_call: int) -> list[int]:
    """Make LanceDB's ``method`` (``merge_insert`` execute or ``delete``) raise ``error`` from
    its ``on_call``-th call on, before writing anything.
    """
    owner = {"merge": lancedb.merge.LanceMergeInsertBuilder, "delete": lancedb.table.LanceTable}
    cls, name = owner[method], "execute" if method == "merge" else "delete"
    real = getattr(cls, name)
    calls: list[int] = []

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) >= on_call:
            raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, failing)
    return calls


@pytest.mark.parametrize("failure", list(WRITE_FAILURES))
def test_a_write_failure_mid_ingest_raises_store_error_and_loses_nothing(
    tmp_path, monkeypatch, colpali_encoder, check_whole_pages, failure
):
    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    ingest_documents(page_documents("init", 3), colpali_encoder, store, show_progress=False)
    before_version, before_pages = store.version, set(store.page_ids())
    documents = [d for doc_id in ("x", "y", "z") for d in page_documents(doc_id, 2)]
    calls = _fail_writes(monkeypatch, "merge", WRITE_FAILURES[failure], on_call=2)

    # Batches of 2 pages: x is committed, y's commit fails, z is never tried.
    with pytest.raises(StoreError, match="nothing of this call was committed") as raised:
        ingest_documents(documents, colpali_encoder, store, batch_size=2, show_progress=False)
    assert raised.value.__cause__ is WRITE_FAILURES[failure]
    assert "run it again" in str(raised.value)
    assert len(calls) == 2  # it stopped: no more encoding and failing batch after batch

    # The last committed version holds whole pages: the earlier ones and the committed batch;
    # the version before it is still readable too.
    assert store.version == before_version + 1
    assert check_whole_pages(store) == before_pages | {"x-p1", "x-p2"}
    assert set(store.page_ids(version=before_version)) == before_pages
    reopened = LanceDBPageStore(uri=str(tmp_path / "index"))
    assert set(reopened.page_ids()) == before_pages | {"x-p1", "x-p2"}

    # A delete failing the same way changes nothing either.
    _fail_writes(monkeypatch, "delete", WRITE_FAILURES[failure], on_call=1)
    with pytest.raises(StoreError):
        store.delete("init")
    assert store.version == before_version + 1

    # Once the cause is gone, the same ingest finishes the job.
    monkeypatch.undo()
    rerun = ingest_documents(documents, colpali_encoder, store, batch_size=2, show_progress=False)
    assert (rerun.pages_unchanged, rerun.pages_added, rerun.failed) == (2, 4, [])
    assert check_whole_pages(store) == before_pages | {d.node_id for d in documents}


FILE_SIZE_LIMITED_WRITER = r"""
# Adds pages to a store under a file-size limit (RLIMIT_FSIZE): LanceDB's own writer then
# fails with a real OS error (EFBIG) when a data file outgrows it, as on a full disk.
import base64, json, resource, signal, sys
import numpy as np
from llama_index.core.schema import ImageDocument
from llama_index_vlm.errors import StoreError
from llama_index_vlm.store import LanceDBPageStore

uri, limit = sys.argv[1], int(sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write(2) with EFBIG, don't die
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
store = LanceDBPageStore(uri=uri)
rng = np.random.default_rng(0)
outcomes = []
for name, image_size in [("small", 1_000), ("large", 4 * limit)]:
    page = ImageDocument(id_=f"{name}-p1", image=base64.b64encode(rng.bytes(image_size)).decode(),
                         image_mimetype="image/png", metadata={"doc_id": name, "page_number": 1})
    vectors = rng.standard_normal((4, 16)).astype(np.float32)
    try:
        store.upsert_pages([page], [vectors / np.linalg.norm(vectors, axis=1, keepdims=True)])
        outcomes.append("ok")
    except StoreError as error:
        outcomes.append(f"StoreError: {error}")
print(json.dumps({"outcomes": outcomes, "version": store.version}))
"""


@pytest.mark.timeout(120)
def test_a_real_os_write_error_inside_lancedb_is_a_store_error(tmp_path):
    uri = str(tmp_path / "index")
    seed = page_documents("seed", 1)
    store = LanceDBPageStore(uri=uri)
    vectors = np.eye(4, 16, dtype=np.float32)
    store.upsert_pages(seed, [vectors])
    before_version = store.version
    script = tmp_path / "limited_writer.py"
    script.write_text(FILE_SIZE_LIMITED_WRITER)

    finished = subprocess.run(
        [sys.executable, str(script), uri, str(256 * 1024)],
        capture_output=True,
        text=True,
        timeout=110,
    )

    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    small, large = result["outcomes"]
    assert small == "ok"
    assert large.startswith("StoreError") and "File too large" in large, large
    assert "nothing of this call was committed" in large
    assert result["version"] == before_version + 1
    reopened = LanceDBPageStore(uri=uri)
    assert reopened.version == before_version + 1
    assert sorted(reopened.page_ids()) == ["seed-p1", "small-p1"]
    assert len(reopened.get_nodes()) == 2  # every page reads back whole
