"""Tests of the Ray ingest's stages as plain Python (no cluster): rendering files into rows,
encoding rows on an actor's encoder, and committing whole files from the driver, with rows
arriving in any order and some twice, as retried Ray tasks deliver them.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from pdfs import page_ids_of, write_numbered_pdf

from llama_index_vlm.distributed.commit import FileCommitter
from llama_index_vlm.distributed.encoding import EncoderSpec, PageEncoder
from llama_index_vlm.distributed.rows import render_file, store_config
from llama_index_vlm.errors import ModelMismatchError
from llama_index_vlm.ingestion import IngestReport, ingest
from llama_index_vlm.store import LanceDBPageStore


@pytest.fixture
def store(tmp_path) -> LanceDBPageStore:
    return LanceDBPageStore(uri=str(tmp_path / "index"))


@pytest.fixture(scope="module")
def page_encoder(colpali_encoder) -> PageEncoder:
    """An actor's encoder, loaded from the tiny checkpoint as a Ray actor loads it."""
    return PageEncoder(EncoderSpec.of(colpali_encoder, colpali_encoder.fingerprint, 1.0, None))


def rendered_rows(paths, reader, store=None) -> list[dict]:
    config = None if store is None else store_config(store)
    return [row for path in paths for row in render_file({"path": str(path)}, reader, config)]


def encoded_rows(rows, page_encoder) -> list[dict]:
    import pyarrow as pa

    return page_encoder(pa.Table.from_pylist(rows)).to_pylist()


def commit_all(rows, store, colpali_encoder, batch_size=16) -> IngestReport:
    report = IngestReport()
    committer = FileCommitter(store, colpali_encoder.fingerprint, report, batch_size)
    for row in rows:
        committer.take(row)
    committer.finish()
    return report


def test_rows_in_any_order_and_repeated_store_each_page_once_as_a_local_ingest_does(
    tmp_path, reader, colpali_encoder, page_encoder, store, check_whole_pages
):
    files = [write_numbered_pdf(tmp_path / "docs" / f"{name}.pdf", 3) for name in "abc"]
    rows = encoded_rows(rendered_rows(files, reader), page_encoder)
    delivered = rows + random.Random(0).sample(rows, 4)  # retried tasks send rows again
    random.Random(1).shuffle(delivered)

    report = commit_all(delivered, store, colpali_encoder)

    local = LanceDBPageStore(uri=str(tmp_path / "local"))
    ingest(tmp_path / "docs", colpali_encoder, local, reader=reader, show_progress=False)
    assert check_whole_pages(store) == set().union(*(page_ids_of(f, 3) for f in files))
    assert store.page_hashes() == local.page_hashes()
    assert report.pages_added == 9 and report.pages_unchanged == 0 and report.ok


def test_every_commit_holds_whole_files(tmp_path, reader, colpali_encoder, page_encoder, store):
    files = [write_numbered_pdf(tmp_path / "docs" / f"{name}.pdf", 3) for name in "ab"]
    rows = encoded_rows(rendered_rows(files, reader), page_encoder)
    random.Random(2).shuffle(rows)

    commit_all(rows, store, colpali_encoder, batch_size=1)

    whole_files = {frozenset(page_ids_of(f, 3)) for f in files}
    for version in range(1, store.version + 1):
        stored = set(store.page_ids(version=version))
        covered = set().union(*(f for f in whole_files if f <= stored))
        assert covered == stored, f"version {version} holds part of a file"


def test_a_failed_file_removes_the_pages_an_earlier_run_stored(
    tmp_path, reader, colpali_encoder, page_encoder, store, check_whole_pages
):
    a = write_numbered_pdf(tmp_path / "docs" / "a.pdf", 2)
    b = write_numbered_pdf(tmp_path / "docs" / "b.pdf", 2)
    ingest(tmp_path / "docs", colpali_encoder, store, reader=reader, show_progress=False)
    rows = encoded_rows(rendered_rows([a, b], reader), page_encoder)
    # b.pdf's second page fails to embed this time.
    failed = next(r for r in rows if r["source"] == str(b) and r["page_id"].endswith("-p2"))
    failed["error"] = "embedding or storing failed: RuntimeError: out of memory"

    report = commit_all(rows, store, colpali_encoder)

    assert check_whole_pages(store) == page_ids_of(a, 2)
    assert [(f.path, f.reason) for f in report.failed] == [(str(b), failed["error"])]
    assert report.pages_removed == 2


def test_pages_stored_unchanged_are_rendered_without_their_image(
    tmp_path, reader, colpali_encoder, store
):
    a = write_numbered_pdf(tmp_path / "docs" / "a.pdf", 2)
    ingest(a, colpali_encoder, store, reader=reader, show_progress=False)
    b = write_numbered_pdf(tmp_path / "docs" / "b.pdf", 1)

    rows = rendered_rows([a, b], reader, store)

    seen = [(r["page_id"] in page_ids_of(a, 2), r["unchanged"], r["image"] == b"") for r in rows]
    assert seen == [(True, True, True), (True, True, True), (False, False, False)]


def test_an_unreadable_file_renders_into_one_failure_row(tmp_path, reader):
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"not a pdf")

    rows = rendered_rows([bad], reader)

    assert [(r["source"], r["page_id"]) for r in rows] == [(str(bad), "")]
    assert "not a PDF file" in rows[0]["error"]


def test_an_undecodable_page_fails_its_file_in_the_encoder(tmp_path, reader, page_encoder):
    a = write_numbered_pdf(tmp_path / "a.pdf", 2)
    rows = rendered_rows([a], reader)
    rows[1]["image"] = b"\xff\xd8 not a jpeg"

    encoded = encoded_rows(rows, page_encoder)

    assert encoded[0]["n_vectors"] > 0 and not encoded[0]["error"]
    vectors = np.frombuffer(encoded[0]["vectors"], dtype=np.float32)
    assert vectors.size == encoded[0]["n_vectors"] * page_encoder.encoder.embedding_dim
    assert "image cannot be decoded" in encoded[1]["error"]
    assert encoded[1]["source"] == str(a)


def test_an_actor_refuses_a_checkpoint_that_is_not_the_drivers_model(
    tiny_checkpoint, colpali_encoder, colqwen2_encoder
):
    spec = EncoderSpec.of(colpali_encoder, colqwen2_encoder.fingerprint, 1.0, None)

    with pytest.raises(ModelMismatchError, match="not the driver's"):
        PageEncoder(spec)
