"""Opening and planning a PDF with pypdfium2: its pages, their sizes and dpis, and its text layer.

Both renderers (:mod:`~llama_index_vlm.reader.pdf_renderers`) start here, so they accept and
refuse exactly the same files. :func:`planned_pdf` opens the file (it must be a PDF that needs
no password) and checks every page in the requested range (a readable page object and a
non-empty size) before the first page is rendered, so a corrupted or truncated file fails up
front instead of yielding half its pages.

A page whose bitmap at the requested dpi would exceed Pillow's decompression-bomb budget
(``PIL.Image.MAX_IMAGE_PIXELS``, about 89 megapixels by default) is planned at the highest
whole dpi that fits, with a logged warning. Setting ``Image.MAX_IMAGE_PIXELS = None`` lifts the
budget, as it does for Pillow itself.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from llama_index_vlm.errors import UnreadableDocumentError
from llama_index_vlm.reader.rendered import check_page_limit, pixel_budget

logger = logging.getLogger(__name__)

PDF_EXTENSIONS = frozenset({".pdf"})
POINTS_PER_INCH = 72

#: PDFium is not thread-safe. Every call into it holds this lock (per call, never across a
#: ``yield``), so readers used from several threads (``aload_data``) cannot corrupt its state.
PDFIUM_LOCK = threading.RLock()

# PDFium's error codes for FPDF_LoadDocument, turned into reasons a user can act on.
_LOAD_ERRORS = {
    pdfium_c.FPDF_ERR_FILE: "the file cannot be opened (missing or no read permission)",
    pdfium_c.FPDF_ERR_FORMAT: "corrupted or truncated PDF (PDFium cannot parse it)",
    pdfium_c.FPDF_ERR_PASSWORD: (
        "encrypted PDF that needs a password; PDFPageReader reads only unencrypted PDFs, so "
        "decrypt it first (e.g. `qpdf --decrypt --password=... in.pdf out.pdf`)"
    ),
    pdfium_c.FPDF_ERR_SECURITY: "PDF uses an unsupported security handler",
    pdfium_c.FPDF_ERR_PAGE: "the PDF's page tree is damaged",
}


@dataclass
class PdfLayout:
    """The plan for rendering a PDF, made by :func:`plan_pdf` before any page is rendered.

    Attributes:
        page_count: number of pages in the file.
        first_page: first page to render (1-based, inclusive).
        last_page: last page to render (1-based, inclusive); ``first_page - 1`` when the
            requested range lies past the end of the file.
        page_dpis: the dpi each page in the range will be rendered at, in page order.
    """

    page_count: int
    first_page: int
    last_page: int
    page_dpis: list[int]

    def page_numbers(self) -> range:
        """The 1-based page numbers to render."""
        return range(self.first_page, self.last_page + 1)


def fit_dpi(width_pt: float, height_pt: float, dpi: int, max_pixels: int | None) -> int:
    """The dpi to render a ``width_pt`` x ``height_pt`` page at: ``dpi``, or less if needed.

    Returns ``dpi`` when the bitmap fits in ``max_pixels`` (or there is no budget), else the
    highest whole dpi whose bitmap fits, or ``0`` when not even 1 dpi fits.

    >>> fit_dpi(612, 792, 144, 89_478_485)
    144
    >>> fit_dpi(14400, 14400, 144, 89_478_485)
    47
    """

    def pixels(at_dpi: int) -> int:
        # Multiply before dividing: 60 pt at 150 dpi is 125 px, but 60 * (150 / 72) rounds to
        # 125.00000000000001, which ceil() would make a row more.
        return math.ceil(width_pt * at_dpi / POINTS_PER_INCH) * math.ceil(
            height_pt * at_dpi / POINTS_PER_INCH
        )

    if max_pixels is None or pixels(dpi) <= max_pixels:
        return dpi
    # A first guess from the area; the square root can land a dpi low (an exact fit computes
    # as 149.99999...) and ceil() rounding a dpi high, so step to the highest dpi that fits.
    fitted = min(dpi, int(POINTS_PER_INCH * math.sqrt(max_pixels / (width_pt * height_pt))))
    while fitted < dpi and pixels(fitted + 1) <= max_pixels:
        fitted += 1
    while fitted > 0 and pixels(fitted) > max_pixels:
        fitted -= 1
    return fitted


def open_pdf(path: Path) -> pdfium.PdfDocument:
    """Open ``path`` with pypdfium2, raising :class:`UnreadableDocumentError` with a reason.

    The caller owns the returned document and must ``close()`` it.
    """
    _check_pdf_header(path)
    try:
        with PDFIUM_LOCK:
            pdf = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as error:
        reason = _LOAD_ERRORS.get(getattr(error, "err_code", None), f"PDFium: {error}")
        raise UnreadableDocumentError(str(path), reason) from error
    try:
        with PDFIUM_LOCK:
            # Filled-in form fields are drawn only with a form environment, which PDFium wants
            # set up before any page is loaded.
            pdf.init_forms()
    except pdfium.PdfiumError:
        logger.warning("%s: cannot set up its form fields; rendering the pages without them", path)
    return pdf


def _check_pdf_header(path: Path) -> None:
    with open(path, "rb") as handle:
        head = handle.read(1024)
    if not head:
        raise UnreadableDocumentError(str(path), "empty file (0 bytes)")
    if b"%PDF-" not in head:  # PDFium too accepts the header anywhere in the first 1 KiB
        raise UnreadableDocumentError(
            str(path), "not a PDF file (no %PDF- header); is it another kind of file named .pdf?"
        )


def plan_pdf(
    pdf: pdfium.PdfDocument,
    path: Path,
    *,
    dpi: int,
    first_page: int = 1,
    last_page: int | None = None,
    max_pages: int | None = None,
) -> PdfLayout:
    """Check every page in the range without rendering it, and choose each page's dpi.

    Raises :class:`UnreadableDocumentError` for a PDF with no pages, more than ``max_pages``
    pages in the range (checked before any page is looked at), a page whose object is missing
    or damaged, an empty page box, or a page too large even at 1 dpi.
    """
    with PDFIUM_LOCK:
        page_count = len(pdf)
    if page_count < 1:
        raise UnreadableDocumentError(str(path), "the PDF has no pages")
    first = max(1, first_page)
    last = page_count if last_page is None else min(last_page, page_count)
    check_page_limit(path, max_pages, last - first + 1)
    budget = pixel_budget()
    page_dpis = [
        _page_dpi(pdf, path, page_number, page_count, dpi=dpi, budget=budget)
        for page_number in range(first, last + 1)
    ]
    return PdfLayout(page_count, first, max(last, first - 1), page_dpis)


def _page_dpi(
    pdf: pdfium.PdfDocument,
    path: Path,
    page_number: int,
    page_count: int,
    *,
    dpi: int,
    budget: int | None,
) -> int:
    """The dpi one page will be rendered at, after checking its page object and size."""
    try:
        with PDFIUM_LOCK:
            width_pt, height_pt = pdf.get_page_size(page_number - 1)
    except pdfium.PdfiumError as error:
        raise UnreadableDocumentError(
            str(path), f"page {page_number} of {page_count} is missing or damaged ({error})"
        ) from error
    if not (width_pt > 0 and height_pt > 0):
        raise UnreadableDocumentError(
            str(path), f"page {page_number} of {page_count} has an empty page box"
        )
    page_dpi = fit_dpi(width_pt, height_pt, dpi, budget)
    if page_dpi < 1:
        raise UnreadableDocumentError(
            str(path),
            f"page {page_number} ({width_pt:.0f} x {height_pt:.0f} pt) exceeds the pixel "
            f"budget of {budget} pixels (PIL.Image.MAX_IMAGE_PIXELS) even at 1 dpi",
        )
    if page_dpi != dpi:
        logger.warning(
            "%s: page %d (%.0f x %.0f pt) would exceed %d pixels at %d dpi; rendering it at "
            "%d dpi instead (raise PIL.Image.MAX_IMAGE_PIXELS to allow more)",
            path,
            page_number,
            width_pt,
            height_pt,
            budget,
            dpi,
            page_dpi,
        )
    return page_dpi


@contextmanager
def planned_pdf(
    path: Path,
    *,
    dpi: int,
    first_page: int = 1,
    last_page: int | None = None,
    max_pages: int | None = None,
) -> Iterator[tuple[pdfium.PdfDocument, PdfLayout]]:
    """``with planned_pdf(path, dpi=...) as (pdf, layout):`` an open, checked PDF and its plan.

    Opens the file (:func:`open_pdf`), plans the page range (:func:`plan_pdf`), and closes the
    document on leaving the block, also when a generator rendering inside it is closed early.
    """
    pdf = open_pdf(path)
    try:
        yield (
            pdf,
            plan_pdf(
                pdf, path, dpi=dpi, first_page=first_page, last_page=last_page, max_pages=max_pages
            ),
        )
    finally:
        with PDFIUM_LOCK:
            pdf.close()


def count_pdf_pages(
    path: Path,
    *,
    dpi: int,
    first_page: int = 1,
    last_page: int | None = None,
    max_pages: int | None = None,
) -> int:
    """How many pages of ``path`` lie in the range, after the checks rendering would make."""
    page_range = dict(first_page=first_page, last_page=last_page, max_pages=max_pages)
    with planned_pdf(path, dpi=dpi, **page_range) as (_, layout):
        return len(layout.page_numbers())


def page_text(pdf: pdfium.PdfDocument, page_number: int) -> str:
    """The text layer of a 1-based page, with ``\\n`` line ends (empty for scanned pages)."""
    with PDFIUM_LOCK:
        page = pdf[page_number - 1]
        try:
            textpage = page.get_textpage()
            try:
                text = textpage.get_text_range()
            finally:
                textpage.close()
        finally:
            page.close()
    return text.replace("\r\n", "\n").replace("\r", "\n")
