"""Render-time bombs (issue 13): each file is read in a render worker with a memory cap and a
time limit per page, killed and reported on breach; the run and the next file go on.
"""

from __future__ import annotations

import logging
import time

import pytest
from bombs import huge_media_box_pdf, nested_forms_pdf
from pdfs import page_ids_of, write_numbered_pdf
from PIL import Image

from llama_index_vlm.errors import UnreadableDocumentError
from llama_index_vlm.ingestion import ingest
from llama_index_vlm.reader import PDFPageReader, render_workers
from llama_index_vlm.reader.render_workers import RenderLimits

# 10 levels of 4 nested drawings: a million paths, many seconds of PDFium's time (12 levels
# took 49 s and 8 GB in this process before files were rendered in workers).
_LEVELS = 10


@pytest.fixture
def render_bomb(tmp_path):
    path = tmp_path / "docs" / "nested.pdf"
    path.parent.mkdir()
    path.write_bytes(nested_forms_pdf(_LEVELS))
    return path


def test_a_page_over_the_time_limit_fails_its_file_naming_page_and_limit(render_bomb):
    reader = PDFPageReader(render_timeout=2)
    started = time.monotonic()
    with pytest.raises(UnreadableDocumentError) as raised:
        reader.load_data(render_bomb)
    assert "rendering page 1 took longer than the render time limit of 2 s" in str(raised.value)
    assert raised.value.path == str(render_bomb)
    assert time.monotonic() - started < 10  # the limit, not the bomb, sets the time


def test_the_run_goes_on_after_a_file_over_the_time_limit(tmp_path, render_bomb, colpali_encoder):
    good = write_numbered_pdf(tmp_path / "docs" / "good.pdf", 2)
    store_path = tmp_path / "index"
    from llama_index_vlm.store import LanceDBPageStore

    store = LanceDBPageStore(uri=str(store_path))
    report = ingest(
        tmp_path / "docs",
        colpali_encoder,
        store,
        reader=PDFPageReader(dpi=36, render_timeout=2),
        show_progress=False,
    )
    assert [failed.path for failed in report.failed] == [str(render_bomb)]
    assert set(store.page_ids()) == page_ids_of(good, 2)


def test_a_page_over_the_memory_limit_fails_its_file_naming_the_limit(tmp_path, monkeypatch):
    # With the pixel budget lifted, a 200 x 200 inch page at 144 dpi is a 3.3 GB bitmap.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    path = tmp_path / "vast.pdf"
    path.write_bytes(huge_media_box_pdf(1))
    with pytest.raises(UnreadableDocumentError, match="memory"):
        PDFPageReader(render_timeout=None, render_memory_limit=512).load_data(path)


def test_a_file_within_the_limits_reads_the_same_in_a_worker_and_in_this_process(tmp_path):
    path = write_numbered_pdf(tmp_path / "good.pdf", 3)
    in_worker = PDFPageReader(dpi=36).load_data(path)
    in_process = PDFPageReader(dpi=36, render_timeout=None, render_memory_limit=None).load_data(
        path
    )
    assert [doc.image for doc in in_worker] == [doc.image for doc in in_process]
    assert [doc.metadata for doc in in_worker] == [doc.metadata for doc in in_process]


def test_one_worker_reads_file_after_file(tmp_path, monkeypatch):
    started = []

    class CountedWorker(render_workers.RenderWorker):
        def __init__(self, limits):
            started.append(limits)
            super().__init__(limits)

    monkeypatch.setattr(render_workers, "RenderWorker", CountedWorker)
    reader = PDFPageReader(dpi=36, render_timeout=29.5, render_memory_limit=1024)  # a new pool
    for name in ("a", "b", "c"):
        reader.count_pages(write_numbered_pdf(tmp_path / f"{name}.pdf", 1))
        reader.load_data(tmp_path / f"{name}.pdf")
    assert started == [RenderLimits(timeout=29.5, memory_mib=1024)]


def test_a_worker_stopped_by_the_time_limit_is_replaced_for_the_next_file(tmp_path, render_bomb):
    reader = PDFPageReader(dpi=36, render_timeout=2)
    with pytest.raises(UnreadableDocumentError):
        reader.load_data(render_bomb)
    good = write_numbered_pdf(tmp_path / "good.pdf", 2)
    assert len(reader.load_data(good)) == 2


def test_a_worker_forwards_the_readers_warnings(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # the page is planned at less dpi
    path = tmp_path / "big.pdf"
    path.write_bytes(huge_media_box_pdf(1, side_pt=1440))
    with caplog.at_level(logging.WARNING, logger="llama_index_vlm"):
        (doc,) = PDFPageReader(dpi=144).load_data(path)
    assert doc.metadata["dpi"] < 144
    assert "rendering it at" in caplog.text


def test_stopping_early_leaves_the_worker_ready_for_the_next_file(tmp_path):
    reader = PDFPageReader(dpi=36)
    pages = reader.lazy_load_data(write_numbered_pdf(tmp_path / "long.pdf", 5))
    assert next(pages).metadata["page_number"] == 1
    pages.close()
    assert len(reader.load_data(write_numbered_pdf(tmp_path / "next.pdf", 2))) == 2
