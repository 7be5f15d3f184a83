"""The store under failing and racing writes (issue 7): a write failure mid-ingest is a
``StoreError`` that loses nothing, a real OS write error inside LanceDB is one too, and two
writers racing to create the table both succeed.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from dataclasses import dataclass

import lancedb
import numpy as np
import pytest
from page_documents import document_pages

from llama_index_vlm.errors import StoreError
from llama_index_vlm.ingestion import ingest_documents
from llama_index_vlm.store import LanceDBPageStore


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
            document_pages(doc_id, 2),
            colpali_encoder,
            store,
            show_progress=False,
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


@dataclass
class FailedIngest:
    """An ingest of x, y, z (2 pages each, batches of 2) into a store holding init's 3 pages,
    whose second commit failed with ``error``: x was committed, y failed, z never tried.
    """

    store: LanceDBPageStore
    error: Exception
    raised: StoreError
    write_calls: list[int]
    before_version: int
    before_pages: set[str]
    documents: list


@pytest.fixture(params=list(WRITE_FAILURES))
def failed_ingest(request, tmp_path, monkeypatch, colpali_encoder) -> FailedIngest:
    error = WRITE_FAILURES[request.param]
    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    ingest_documents(document_pages("init", 3), colpali_encoder, store, show_progress=False)
    before_version, before_pages = store.version, set(store.page_ids())
    documents = [d for doc_id in ("x", "y", "z") for d in document_pages(doc_id, 2)]
    calls = _fail_writes(monkeypatch, "merge", error, on_call=2)
    with pytest.raises(StoreError, match="nothing of this call was committed") as raised:
        ingest_documents(documents, colpali_encoder, store, batch_size=2, show_progress=False)
    return FailedIngest(store, error, raised.value, calls, before_version, before_pages, documents)


def test_a_write_failure_mid_ingest_is_a_store_error_that_says_to_run_it_again(failed_ingest):
    assert failed_ingest.raised.__cause__ is failed_ingest.error
    assert "run it again" in str(failed_ingest.raised)


def test_an_ingest_stops_at_its_first_failed_write(failed_ingest):
    # No more encoding and failing batch after batch.
    assert len(failed_ingest.write_calls) == 2


def test_a_write_failure_mid_ingest_keeps_the_committed_batches_whole(
    failed_ingest, check_whole_pages, tmp_path
):
    store, before_pages = failed_ingest.store, failed_ingest.before_pages
    assert store.version == failed_ingest.before_version + 1
    assert check_whole_pages(store) == before_pages | {"x-p1", "x-p2"}
    reopened = LanceDBPageStore(uri=str(tmp_path / "index"))
    assert set(reopened.page_ids()) == before_pages | {"x-p1", "x-p2"}


def test_after_a_write_failure_the_version_before_stays_readable(failed_ingest):
    store = failed_ingest.store
    assert set(store.page_ids(version=failed_ingest.before_version)) == failed_ingest.before_pages


def test_a_failing_delete_changes_nothing(failed_ingest, monkeypatch):
    _fail_writes(monkeypatch, "delete", failed_ingest.error, on_call=1)
    with pytest.raises(StoreError):
        failed_ingest.store.delete("init")
    assert failed_ingest.store.version == failed_ingest.before_version + 1


def test_once_the_cause_is_gone_the_same_ingest_finishes_the_job(
    failed_ingest, monkeypatch, colpali_encoder, check_whole_pages
):
    monkeypatch.undo()
    documents, store = failed_ingest.documents, failed_ingest.store
    rerun = ingest_documents(documents, colpali_encoder, store, batch_size=2, show_progress=False)
    assert (rerun.pages_unchanged, rerun.pages_added, rerun.failed) == (2, 4, [])
    assert check_whole_pages(store) == failed_ingest.before_pages | {d.node_id for d in documents}


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
    seed = document_pages("seed", 1)
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
