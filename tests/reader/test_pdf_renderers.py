"""The PDF renderers (reader/pdf_renderers.py): pages, dpi, page ranges, the same pixels from
both, streaming one page or one window at a time, and the text layer.
"""

from __future__ import annotations

import numpy as np
import pdf2image
import pypdfium2 as pdfium
import pytest
from pdfs import PdfPageSpec, build_pdf, text_content, write_report_pdf, write_text_pdf

from llama_index_vlm.errors import UnreadableDocumentError
from llama_index_vlm.reader import PDFPageReader, render_pdfium

from .page_pixels import BLUE, GREEN, RED, centre, close_to, pixels

# ------------------------------------------------------------------------------ pages, sizes


@pytest.fixture
def solid_pages(solid_pdf, renderer):
    """The pages of the solid red, green and blue PDF, rendered at 144 dpi."""
    return PDFPageReader(renderer=renderer, dpi=144).load_data(solid_pdf)


def test_every_page_is_rendered_in_order(solid_pages):
    assert [doc.metadata["page_number"] for doc in solid_pages] == [1, 2, 3]


def test_pages_are_rendered_at_the_requested_dpi(solid_pages):
    # A 72 x 144 pt page is 1 x 2 inches: 144 x 288 pixels at 144 dpi.
    assert {pixels(doc).size for doc in solid_pages} == {(144, 288)}


def test_each_page_is_rendered_with_its_own_colour(solid_pages):
    for doc, colour in zip(solid_pages, [RED, GREEN, BLUE], strict=True):
        assert close_to(centre(doc), colour), (centre(doc), colour)


def test_a_lower_dpi_renders_smaller_pages(solid_pdf, renderer):
    docs = PDFPageReader(renderer=renderer, dpi=36).load_data(solid_pdf)
    assert {pixels(doc).size for doc in docs} == {(36, 72)}


def test_the_dpi_metadata_is_the_dpi_rendered_at(solid_pdf, renderer):
    docs = PDFPageReader(renderer=renderer, dpi=36).load_data(solid_pdf)
    assert {doc.metadata["dpi"] for doc in docs} == {36}


def test_renderers_draw_the_same_page(tmp_path):
    path = write_report_pdf(tmp_path / "report.pdf", 1)
    options = dict(dpi=72, image_format="PNG")
    by_pdfium = pixels(PDFPageReader(renderer="pypdfium2", **options).load_data(path)[0])
    by_poppler = pixels(PDFPageReader(renderer="pdf2image", **options).load_data(path)[0])

    assert by_pdfium.size == by_poppler.size == (612, 792)
    difference = np.abs(np.asarray(by_pdfium, int) - np.asarray(by_poppler, int))
    assert difference.mean() < 6  # anti-aliasing differs; a blank or shifted page would not
    assert np.asarray(by_pdfium).min() < 50  # and the page is not blank


def test_pypdfium2_pages_come_as_rgbx_without_a_copy(tmp_path):
    path = write_report_pdf(tmp_path / "report.pdf", 1)
    assert next(render_pdfium(path, dpi=50)).image.mode == "RGBX"


# ------------------------------------------------------------------------------ page ranges


@pytest.fixture
def five_pages(tmp_path):
    return write_text_pdf(tmp_path / "five.pdf", [f"page {n}" for n in range(1, 6)])


def test_the_page_range_is_one_based_and_inclusive(five_pages, renderer):
    reader = PDFPageReader(renderer=renderer, first_page=2, last_page=4, dpi=20)
    docs = reader.load_data(five_pages)
    assert [doc.metadata["page_number"] for doc in docs] == [2, 3, 4]


def test_the_page_count_of_a_range_is_the_whole_files(five_pages, renderer):
    reader = PDFPageReader(renderer=renderer, first_page=2, last_page=4, dpi=20)
    docs = reader.load_data(five_pages)
    assert {doc.metadata["page_count"] for doc in docs} == {5}


def test_a_page_range_past_the_last_page_ends_at_it(five_pages, renderer):
    reader = PDFPageReader(renderer=renderer, first_page=4, last_page=99, dpi=20)
    tail = reader.load_data(five_pages)
    assert [doc.metadata["page_number"] for doc in tail] == [4, 5]


def test_a_page_range_starting_past_the_last_page_reads_nothing(five_pages, renderer):
    assert PDFPageReader(renderer=renderer, first_page=9, dpi=20).load_data(five_pages) == []


# -------------------------------------------------------------------------------- streaming


# The spies below patch this process's pypdfium2 and pdf2image: read in this process.
IN_PROCESS = dict(render_timeout=None, render_memory_limit=None)


@pytest.fixture
def long_pdf(tmp_path):
    return write_text_pdf(tmp_path / "long.pdf", [f"page {n}" for n in range(1, 21)])


@pytest.fixture
def pdfium_calls(monkeypatch):
    """Counts of pypdfium2's page renders, page closes and document closes from now on."""
    calls = {"render": 0, "close page": 0, "close document": 0}

    def counted(name, real):
        def call(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(pdfium.PdfPage, "render", counted("render", pdfium.PdfPage.render))
    monkeypatch.setattr(pdfium.PdfPage, "close", counted("close page", pdfium.PdfPage.close))
    monkeypatch.setattr(
        pdfium.PdfDocument, "close", counted("close document", pdfium.PdfDocument.close)
    )
    return calls


# The first page comes out before the other 19 are rendered, its page handle already closed.
@pytest.mark.parametrize("call", ["render", "close page"])
def test_pypdfium2_renders_and_closes_one_page_per_page_yielded(long_pdf, pdfium_calls, call):
    pages = PDFPageReader(**IN_PROCESS, dpi=10).lazy_load_data(long_pdf)
    assert next(pages).metadata["page_number"] == 1
    assert pdfium_calls[call] == 1
    next(pages)
    assert pdfium_calls[call] == 2


def test_stopping_early_closes_the_pdf_at_once(long_pdf, pdfium_calls):
    pages = PDFPageReader(**IN_PROCESS, dpi=10).lazy_load_data(long_pdf)
    next(pages)
    assert pdfium_calls["close document"] == 0
    pages.close()  # the caller stops early: the document is closed now, not at collection
    assert pdfium_calls["close document"] == 1


def test_a_page_failing_mid_render_names_the_page(five_pages, monkeypatch):
    real_render = pdfium.PdfPage.render
    calls = []

    def render_until_page_4(page, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise pdfium.PdfiumError("simulated failure")
        return real_render(page, *args, **kwargs)

    monkeypatch.setattr(pdfium.PdfPage, "render", render_until_page_4)
    pages = PDFPageReader(**IN_PROCESS, dpi=10).lazy_load_data(five_pages)
    assert [next(pages).metadata["page_number"] for _ in range(3)] == [1, 2, 3]
    with pytest.raises(UnreadableDocumentError, match="page 4 of 5 could not be rendered"):
        next(pages)


@pytest.fixture
def poppler_windows(monkeypatch):
    """The (first_page, last_page) of every pdf2image call from now on."""
    windows = []
    real_convert = pdf2image.convert_from_path

    def convert(pdf_path, *args, **kwargs):
        windows.append((kwargs["first_page"], kwargs["last_page"]))
        return real_convert(pdf_path, *args, **kwargs)

    monkeypatch.setattr(pdf2image, "convert_from_path", convert)
    return windows


def test_pdf2image_renders_only_the_first_window_for_the_first_page(long_pdf, poppler_windows):
    pages = PDFPageReader(**IN_PROCESS, renderer="pdf2image", dpi=10).lazy_load_data(long_pdf)
    assert next(pages).metadata["page_number"] == 1
    assert poppler_windows == [(1, 8)]


def test_pdf2image_renders_a_long_pdf_in_windows_of_8_pages(long_pdf, poppler_windows):
    docs = PDFPageReader(**IN_PROCESS, renderer="pdf2image", dpi=10).load_data(long_pdf)
    assert [doc.metadata["page_number"] for doc in docs] == list(range(1, 21))
    assert poppler_windows == [(1, 8), (9, 16), (17, 20)]


def test_pdf2image_windows_follow_the_window_size_and_page_range(long_pdf, poppler_windows):
    reader = PDFPageReader(
        **IN_PROCESS, renderer="pdf2image", dpi=10, pdf2image_window=3, first_page=5
    )
    reader.load_data(long_pdf)
    assert poppler_windows == [(5, 7), (8, 10), (11, 13), (14, 16), (17, 19), (20, 20)]


# ------------------------------------------------------------------------------------ text


def test_extract_text_puts_the_text_layer_in_the_document(text_pdf, renderer):
    docs = PDFPageReader(renderer=renderer, extract_text=True, dpi=20).load_data(text_pdf)
    assert [doc.text for doc in docs] == ["Revenue 2023", "Net income 42\nCosts 7"]


def test_without_extract_text_the_text_is_empty(text_pdf, renderer):
    plain = PDFPageReader(renderer=renderer, dpi=20).load_data(text_pdf)
    assert [doc.text for doc in plain] == ["", ""]


def test_text_with_pdf_string_escapes_is_extracted_as_written(tmp_path):
    data = build_pdf([PdfPageSpec(100, 100, text_content(["(tricky) \\ text"], size=10))])
    path = tmp_path / "escaped.pdf"
    path.write_bytes(data)
    (doc,) = PDFPageReader(extract_text=True, dpi=10).load_data(path)
    assert doc.text == "(tricky) \\ text"
