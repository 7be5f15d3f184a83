"""A page as an ImageDocument (reader/documents.py): its id, its metadata (and what a model
sees of it), and its image bytes, stored in the document itself.
"""

from __future__ import annotations

import base64
import hashlib
import shutil

import numpy as np
import pytest
from llama_index.core.schema import MetadataMode
from pdfs import write_report_pdf

from llama_index_vlm.images import encode_image, to_rgb
from llama_index_vlm.pages import page_id_for
from llama_index_vlm.reader import PDFPageReader, render_pdfium

from .page_pixels import RED, centre, close_to, pixels

# ----------------------------------------------------------------------------------- metadata


def test_a_page_carries_the_page_fields(solid_pdf):
    second = PDFPageReader().load_data(solid_pdf)[1]
    digest = hashlib.sha256(solid_pdf.read_bytes()).hexdigest()
    assert second.metadata == {
        "doc_id": digest,
        "page_id": f"{digest}-p2",
        "file_path": str(solid_pdf.resolve()),
        "file_name": "solid.pdf",
        "page_number": 2,
        "page_count": 3,
        "width": 144,
        "height": 288,
        "dpi": 144,
    }


def test_the_document_id_is_the_page_id(solid_pdf):
    second = PDFPageReader().load_data(solid_pdf)[1]
    digest = hashlib.sha256(solid_pdf.read_bytes()).hexdigest()
    assert second.id_ == second.doc_id == page_id_for(digest, 2) == f"{digest}-p2"


def test_every_page_has_its_own_id(solid_pdf):
    docs = PDFPageReader().load_data(solid_pdf)
    assert len({doc.id_ for doc in docs}) == 3


def test_width_and_height_are_the_stored_images(solid_pdf, renderer):
    docs = PDFPageReader(renderer=renderer, dpi=144).load_data(solid_pdf)
    assert [(d.metadata["width"], d.metadata["height"]) for d in docs] == [(144, 288)] * 3


def test_extra_info_is_kept_in_the_metadata(solid_pdf):
    doc = PDFPageReader().load_data(solid_pdf, extra_info={"source": "annual report"})[0]
    assert doc.metadata["source"] == "annual report"


@pytest.fixture
def shown_to_models(solid_pdf):
    """The metadata text an LLM and an embedding model see of a page with extra_info."""
    doc = PDFPageReader().load_data(solid_pdf, extra_info={"source": "annual report"})[0]
    return [doc.get_metadata_str(mode) for mode in (MetadataMode.LLM, MetadataMode.EMBED)]


def test_models_see_the_file_name_and_page_number(shown_to_models):
    for shown in shown_to_models:
        assert "file_name: solid.pdf" in shown and "page_number: 1" in shown


def test_models_see_the_extra_info(shown_to_models):
    for shown in shown_to_models:
        assert "source: annual report" in shown


def test_models_see_no_ids_paths_or_sizes(shown_to_models):
    for shown in shown_to_models:
        for hidden in ("doc_id", "page_id", "file_path", "page_count", "width", "dpi"):
            assert hidden not in shown


# ------------------------------------------------------------------------------ image bytes


def test_the_image_resolves_without_the_original_file(tmp_path, solid_pdf):
    moved = tmp_path / "gone.pdf"
    shutil.copy(solid_pdf, moved)
    docs = PDFPageReader().load_data(moved)
    moved.unlink()
    assert close_to(centre(docs[0]), RED)


def test_jpeg_is_the_default_image_format(solid_pdf):
    doc = PDFPageReader().load_data(solid_pdf)[0]
    assert doc.image_mimetype == "image/jpeg"
    assert base64.b64decode(doc.image)[:3] == b"\xff\xd8\xff"  # JPEG bytes, inline


def test_png_format_stores_png_bytes(solid_pdf):
    doc = PDFPageReader(image_format="png").load_data(solid_pdf)[0]
    assert doc.image_mimetype == "image/png"
    assert base64.b64decode(doc.image)[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_format_is_lossless(solid_pdf):
    doc = PDFPageReader(image_format="png").load_data(solid_pdf)[0]
    rendered = to_rgb(next(render_pdfium(solid_pdf, dpi=144)).image)
    assert np.array_equal(np.asarray(pixels(doc)), np.asarray(rendered))


def test_jpeg_fast_path_writes_what_encode_image_writes_at_the_readers_quality(tmp_path):
    path = write_report_pdf(tmp_path / "report.pdf", 1)
    doc = PDFPageReader(dpi=50, image_quality=80).load_data(path)[0]
    page = next(render_pdfium(path, dpi=50))  # RGBX: the fast path's input
    assert base64.b64decode(doc.image) == encode_image(to_rgb(page.image), "JPEG", 80)
