"""Page-count bombs (issue 13): a file with more pages to read than the reader's limit is
refused, said so, and costs no more than reading up to the limit.
"""

from __future__ import annotations

import pytest
from bombs import many_frames_tiff, repeated_page_pdf
from pdfs import write_numbered_pdf
from PIL import TiffImagePlugin

from llama_index_vlm.errors import UnreadableDocumentError
from llama_index_vlm.ingestion import ingest
from llama_index_vlm.reader import DEFAULT_MAX_PAGES, PDFPageReader
from llama_index_vlm.store import LanceDBPageStore


@pytest.fixture(scope="module")
def listed_pdf(tmp_path_factory):
    """A 1.2 MB PDF listing one page 200,000 times."""
    path = tmp_path_factory.mktemp("counts") / "listed.pdf"
    path.write_bytes(repeated_page_pdf(200_000))
    return path


@pytest.fixture(scope="module")
def frames_tiff(tmp_path_factory):
    """A TIFF of 3,000 frames."""
    path = tmp_path_factory.mktemp("counts") / "frames.tif"
    path.write_bytes(many_frames_tiff(3_000))
    return path


def test_the_default_limit_is_ten_thousand_pages():
    assert PDFPageReader().max_pages == DEFAULT_MAX_PAGES == 10_000


def test_a_pdf_listing_a_page_200000_times_is_refused_with_its_count(listed_pdf):
    with pytest.raises(UnreadableDocumentError) as raised:
        PDFPageReader().count_pages(listed_pdf)
    assert raised.value.reason.startswith(
        "200,000 pages to read, over the limit of 10,000 pages per file"
    )


def test_a_tiff_over_the_limit_is_refused_without_counting_every_frame(frames_tiff, monkeypatch):
    frames_seen = set()
    real_seek = TiffImagePlugin.TiffImageFile.seek

    def seek(image, frame):
        frames_seen.add(frame)
        return real_seek(image, frame)

    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "seek", seek)
    reader = PDFPageReader(max_pages=100, render_timeout=None, render_memory_limit=None)
    with pytest.raises(UnreadableDocumentError, match="more than 100 pages to read"):
        reader.count_pages(frames_tiff)
    assert max(frames_seen) == 100  # the first frame over the limit, not the 3,000th


def test_reading_a_tiff_over_the_limit_is_refused_before_its_first_page(frames_tiff):
    pages = PDFPageReader(max_pages=100).lazy_load_data(frames_tiff)
    with pytest.raises(UnreadableDocumentError, match="over the limit of 100 pages"):
        next(pages)


def test_a_page_range_within_the_limit_is_read_from_a_file_over_it(listed_pdf, frames_tiff):
    for path in (listed_pdf, frames_tiff):
        reader = PDFPageReader(dpi=10, max_pages=100, first_page=5, last_page=7)
        assert [doc.metadata["page_number"] for doc in reader.load_data(path)] == [5, 6, 7]


def test_no_limit_reads_every_page(tmp_path):
    path = tmp_path / "frames.tif"
    path.write_bytes(many_frames_tiff(150))
    assert len(PDFPageReader(max_pages=None).load_data(path)) == 150


def test_the_run_reports_a_file_over_the_limit_and_indexes_the_others(
    tmp_path, frames_tiff, colpali_encoder
):
    docs = tmp_path / "docs"
    good = write_numbered_pdf(docs / "good.pdf", 2)
    (docs / "frames.tif").write_bytes(frames_tiff.read_bytes())
    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    report = ingest(
        docs,
        colpali_encoder,
        store,
        reader=PDFPageReader(dpi=36, max_pages=100),
        show_progress=False,
    )
    assert [(failed.path, "over the limit" in failed.reason) for failed in report.failed] == [
        (str(docs / "frames.tif"), True)
    ]
    assert {node.metadata["file_path"] for node in store.get_nodes()} == {str(good)}
