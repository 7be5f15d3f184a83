"""Opening and planning a PDF: the dpi that fits the pixel budget, and the checks made before
any page is rendered (reader/pdf.py), through both renderers.
"""

from __future__ import annotations

import logging
import math

import pypdfium2 as pdfium
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pdfs import write_damaged_page_pdf, write_encrypted_pdf, write_sized_pdf
from PIL import Image

from llama_index_vlm.errors import UnreadableDocumentError
from llama_index_vlm.reader import PDFPageReader, fit_dpi

from .page_pixels import pixels

# ------------------------------------------------------------------------------------ fit_dpi


def test_fit_dpi_keeps_the_dpi_of_a_page_that_fits():
    assert fit_dpi(612, 792, 144, 89_478_485) == 144


def test_fit_dpi_keeps_the_dpi_without_a_budget():
    assert fit_dpi(612, 792, 144, None) == 144


def test_fit_dpi_of_a_200_inch_square_page_is_the_highest_that_fits():
    fitted = fit_dpi(14_400, 14_400, 144, 89_478_485)
    assert fitted == 47
    assert (14_400 * fitted / 72) ** 2 <= 89_478_485 < (14_400 * (fitted + 1) / 72) ** 2


def test_fit_dpi_takes_a_dpi_whose_bitmap_fills_the_budget_exactly():
    # 60 pt at 150 dpi is exactly 125 x 125 px: found by the property test below.
    assert fit_dpi(60, 60, 150, 15_625) == 150
    assert fit_dpi(60, 60, 200, 15_625) == 150  # the area's square root computes as 149.999...


def test_fit_dpi_is_0_when_not_even_1_dpi_fits():
    assert fit_dpi(720, 720, 144, 1) == 0


@settings(max_examples=300, deadline=None)
@given(
    width=st.floats(1, 20_000),
    height=st.floats(1, 20_000),
    dpi=st.integers(1, 600),
    budget=st.integers(1, 200_000_000),
)
def test_fit_dpi_is_the_highest_dpi_that_fits(width, height, dpi, budget):
    def bitmap(at_dpi):
        return math.ceil(width * at_dpi / 72) * math.ceil(height * at_dpi / 72)

    fitted = fit_dpi(width, height, dpi, budget)
    assert 0 <= fitted <= dpi
    if fitted:
        assert bitmap(fitted) <= budget
    if fitted < dpi:
        assert bitmap(fitted + 1) > budget


# ----------------------------------------------------------------------- oversized PDF pages


@pytest.fixture
def poster_pdf(tmp_path, monkeypatch):
    """A PDF whose page 2 (720 pt square, 2.07 MP at 144 dpi) is over a 1 MP pixel budget."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    return write_sized_pdf(tmp_path / "poster.pdf", [(72, 72), (720, 720), (72, 72)])


def test_an_oversized_pdf_page_records_the_lower_dpi_it_was_rendered_at(poster_pdf, renderer):
    docs = PDFPageReader(renderer=renderer, dpi=144).load_data(poster_pdf)
    assert [doc.metadata["dpi"] for doc in docs] == [144, 100, 144]


def test_an_oversized_pdf_page_is_rendered_within_the_pixel_budget(poster_pdf, renderer):
    docs = PDFPageReader(renderer=renderer, dpi=144).load_data(poster_pdf)
    assert [pixels(doc).size for doc in docs] == [(144, 144), (1000, 1000), (144, 144)]


def test_an_oversized_pdf_page_is_rendered_with_a_warning(poster_pdf, caplog, renderer):
    with caplog.at_level(logging.WARNING, logger="llama_index_vlm.reader.pdf"):
        PDFPageReader(renderer=renderer, dpi=144).load_data(poster_pdf)
    assert "page 2" in caplog.text and "100 dpi" in caplog.text


def test_a_pdf_page_too_large_even_at_1_dpi_is_refused(tmp_path, monkeypatch):
    path = write_sized_pdf(tmp_path / "huge.pdf", [(720, 720)])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    with pytest.raises(UnreadableDocumentError, match="huge.pdf.*even at 1 dpi"):
        PDFPageReader().load_data(path)


# ------------------------------------------------------------------------- checks up front


def test_a_damaged_page_fails_before_any_page_is_yielded(tmp_path, renderer):
    path = write_damaged_page_pdf(tmp_path / "damaged.pdf", n_pages=4, damaged_page=3)
    pages = PDFPageReader(renderer=renderer, dpi=10).lazy_load_data(path)
    with pytest.raises(UnreadableDocumentError, match="page 3 of 4"):
        next(pages)


def test_a_damaged_page_outside_the_page_range_is_not_looked_at(tmp_path, renderer):
    path = write_damaged_page_pdf(tmp_path / "damaged.pdf", n_pages=4, damaged_page=3)
    docs = PDFPageReader(renderer=renderer, dpi=10, last_page=2).load_data(path)
    assert [doc.metadata["page_number"] for doc in docs] == [1, 2]


def test_the_encrypted_pdf_fixture_opens_with_its_password(tmp_path):
    path = write_encrypted_pdf(tmp_path / "locked.pdf", user_password="user")
    with pdfium.PdfDocument(str(path), password="user") as pdf:
        assert len(pdf) == 1
