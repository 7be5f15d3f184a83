"""Deletes free space (issue 13): compaction gives the disk space of deleted pages back, keeps
the versions readers may still read for a grace period, and runs by itself after large deletes.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
from datetime import datetime, timedelta

import numpy as np
import pytest
from page_documents import page_document
from pdfs import write_numbered_pdf
from PIL import Image

from llama_index_vlm.cli import main
from llama_index_vlm.images import encode_image
from llama_index_vlm.ingestion import ingest
from llama_index_vlm.reader import PDFPageReader
from llama_index_vlm.retriever import ColPaliRetriever
from llama_index_vlm.store import LanceDBPageStore
from llama_index_vlm.store.compaction import _cleanup_age

_DIM = 16


def _noise_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (150, 150, 3), dtype=np.uint8)
    return encode_image(Image.fromarray(pixels), "PNG")


def _fill(store: LanceDBPageStore, n_docs: int = 12) -> None:
    """``n_docs`` documents of 4 noisy 150 x 150 pages, one commit each (about 3 MB in all)."""
    for n in range(n_docs):
        pages = [page_document(f"doc{n}", p, 4, image=_noise_png(10 * n + p)) for p in (1, 2, 3, 4)]
        store.add(pages, [np.eye(4, _DIM, dtype=np.float32)] * len(pages))


@pytest.fixture
def store(tmp_path):
    store = LanceDBPageStore(uri=str(tmp_path / "index"), auto_compact=False)
    _fill(store)
    return store


def test_compacting_after_deleting_every_page_gives_the_space_back(store):
    store.clear()
    report = store.compact(grace=timedelta(0))
    assert report.bytes_before > 500_000
    assert report.bytes_after < report.bytes_before / 20
    assert report.bytes_reclaimed == report.bytes_before - report.bytes_after
    assert report.versions_after == 1


def test_compaction_keeps_the_pages(store):
    before = set(store.page_ids())
    store.delete("doc0")
    store.compact(grace=timedelta(0))
    assert set(store.page_ids()) == before - {f"doc0-p{n}" for n in range(1, 5)}


def test_versions_replaced_within_the_grace_stay_readable(store):
    pinned = store.version  # a reader's version, as a retriever's cache holds it
    expected = set(store.page_ids(version=pinned))
    store.clear()
    report = store.compact()  # the default grace: ten minutes
    assert report.versions_after > 1
    assert set(store.page_ids(version=pinned)) == expected


def test_an_old_version_replaced_a_moment_ago_is_kept():
    now = datetime.now()
    versions = [
        {"version": 1, "timestamp": now - timedelta(days=30)},
        {"version": 2, "timestamp": now - timedelta(days=7)},  # the latest for a week...
        {"version": 3, "timestamp": now - timedelta(seconds=30)},  # ...until 30 s ago
    ]
    older_than = _cleanup_age(versions, grace=timedelta(minutes=10))
    cutoff = now - older_than  # Lance removes versions created before this
    assert versions[0]["timestamp"] < cutoff <= versions[1]["timestamp"]


def test_the_summary_says_what_was_reclaimed_and_kept(store):
    store.clear()
    summary = store.compact().summary()
    assert summary.startswith("reclaimed ")
    assert "kept for queries in flight" in summary


def test_queries_in_flight_survive_deletes_and_compactions(tmp_path, colpali_encoder):
    docs = tmp_path / "docs"
    for n in range(6):
        write_numbered_pdf(docs / f"f{n}.pdf", 2)
    store = LanceDBPageStore(uri=str(tmp_path / "index"), auto_compact=False)
    ingest(docs, colpali_encoder, store, reader=PDFPageReader(dpi=36), show_progress=False)
    retriever = ColPaliRetriever(colpali_encoder, store, similarity_top_k=3, search_mode="fast")
    errors: list[BaseException] = []
    stop = threading.Event()

    def query() -> None:
        while not stop.is_set():
            try:
                retriever.retrieve("page")
            except BaseException as error:  # noqa: BLE001 - collected for the assertion
                errors.append(error)

    thread = threading.Thread(target=query)
    thread.start()
    try:
        for document in store.documents()[:4]:
            store.delete(document.doc_id)
            store.compact(grace=timedelta(minutes=10))
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert store.count() == 4


def test_a_large_delete_compacts_by_itself(tmp_path):
    store = LanceDBPageStore(uri=str(tmp_path / "index"))  # auto_compact by default
    _fill(store)
    table = store.client.open_table(store.table_name)
    assert table.stats()["fragment_stats"]["num_fragments"] == 12
    for n in range(4):  # a third of the pages
        store.delete(f"doc{n}")
    table.checkout_latest()
    assert table.stats()["fragment_stats"]["num_fragments"] < 8  # 8 stay apart uncompacted


def test_small_deletes_do_not_compact(tmp_path):
    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    _fill(store)
    store.delete("doc0")  # a twelfth of the pages: its fragment goes, the others stay apart
    table = store.client.open_table(store.table_name)
    assert table.stats()["fragment_stats"]["num_fragments"] == 11


def _run_cli(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(arg) for arg in argv])
    return status, out.getvalue(), err.getvalue()


def test_the_compact_command_prints_the_space_reclaimed(store):
    store.clear()
    status, out, err = _run_cli("compact", "--store", store.uri, "--grace", 0)
    assert (status, err) == (0, "")
    assert out.startswith(f"index {store.uri}: reclaimed ")
    assert "old versions removed" in out


def test_the_compact_command_reports_as_json(store):
    store.clear()
    status, out, _ = _run_cli("compact", "--store", store.uri, "--grace", 0, "--json")
    report = json.loads(out)
    assert status == 0
    assert report["bytes_reclaimed"] == report["bytes_before"] - report["bytes_after"] > 0
    assert report["grace"] == 0


def test_the_compact_command_refuses_a_missing_index(tmp_path):
    status, _, err = _run_cli("compact", "--store", tmp_path / "nothing")
    assert status == 2 and err.startswith("error: ")
