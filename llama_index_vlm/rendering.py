"""Rendering PDF pages to images, one page at a time, with pypdfium2 or with pdf2image (poppler).

Both renderers share one validation step, :func:`open_pdf` (pypdfium2): the file must open, must
not need a password, and every page in the requested range must have a readable page object and
a non-empty size. It runs before the first page is rendered, so a corrupted or truncated file
fails up front instead of yielding half its pages, and both renderers accept and refuse exactly
the same files. Poppler is used only for pixels; page text always comes from pdfium's text layer.

Memory stays bounded whatever the PDF's length: pypdfium2 renders and closes one page at a time;
pdf2image renders small windows of pages (``window`` pages per ``pdftoppm`` call).

A page whose bitmap at the requested dpi would exceed Pillow's decompression-bomb budget
(``PIL.Image.MAX_IMAGE_PIXELS``, about 89 megapixels by default) is rendered at the highest
whole dpi that fits, with a logged warning; its :attr:`RenderedPage.dpi` says the dpi actually
used. Setting ``Image.MAX_IMAGE_PIXELS = None`` lifts the budget, as it does for Pillow itself.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image

from llama_index_vlm.errors import UnreadableDocumentError

logger = logging.getLogger(__name__)

# PDFium is not thread-safe. Every call into it holds this lock (per call, never across a
# ``yield``), so readers used from several threads (``aload_data``) cannot corrupt its state.
_PDFIUM_LOCK = threading.RLock()

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

POINTS_PER_INCH = 72


@dataclass
class RenderedPage:
    """One rendered page.

    Attributes:
        page_number: 1-based page number within the file.
        page_count: number of pages in the whole file (not only the rendered range).
        image: the page as an 8-bit Pillow image, owned by the caller: ``RGB``, or ``RGBX``
            (RGB padded to 4 bytes, no alpha) from pypdfium2, which Pillow encodes as JPEG
            without a conversion; :func:`llama_index_vlm.images.to_rgb` handles both.
        dpi: the dpi the page was actually rendered at (lower than requested only for pages
            too large for the pixel budget).
        text: the page's text layer when text extraction was asked for, else ``None``.
    """

    page_number: int
    page_count: int
    image: Image.Image
    dpi: int
    text: str | None = None


@dataclass
class PdfLayout:
    """What :func:`open_pdf` learned about a PDF before rendering anything.

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


def pixel_budget() -> int | None:
    """The largest bitmap, in pixels, that may be rendered or opened (Pillow's bomb limit)."""
    budget = Image.MAX_IMAGE_PIXELS
    return None if budget is None else int(budget)


def fit_dpi(width_pt: float, height_pt: float, dpi: int, max_pixels: int | None) -> int:
    """The dpi to render a ``width_pt`` x ``height_pt`` page at: ``dpi``, or less if needed.

    Returns ``dpi`` when the bitmap fits in ``max_pixels`` (or there is no budget), else the
    highest whole dpi whose bitmap fits, or ``0`` when not even 1 dpi fits.

    >>> fit_dpi(612, 792, 144, 89_478_485)
    144
    >>> fit_dpi(14400, 14400, 144, 89_478_485)
    47
    """

    def pixels(at_dpi: float) -> int:
        scale = at_dpi / POINTS_PER_INCH
        return math.ceil(width_pt * scale) * math.ceil(height_pt * scale)

    if max_pixels is None or pixels(dpi) <= max_pixels:
        return dpi
    fitted = min(dpi, int(POINTS_PER_INCH * math.sqrt(max_pixels / (width_pt * height_pt))))
    while fitted > 0 and pixels(fitted) > max_pixels:  # ceil() rounding can overshoot by a row
        fitted -= 1
    return fitted


def open_pdf(path: Path) -> pdfium.PdfDocument:
    """Open ``path`` with pypdfium2, raising :class:`UnreadableDocumentError` with a reason.

    The caller owns the returned document and must ``close()`` it.
    """
    with open(path, "rb") as handle:
        head = handle.read(1024)
    if not head:
        raise UnreadableDocumentError(str(path), "empty file (0 bytes)")
    if b"%PDF-" not in head:  # PDFium too accepts the header anywhere in the first 1 KiB
        raise UnreadableDocumentError(
            str(path), "not a PDF file (no %PDF- header); is it another kind of file named .pdf?"
        )
    try:
        with _PDFIUM_LOCK:
            pdf = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as error:
        reason = _LOAD_ERRORS.get(getattr(error, "err_code", None), f"PDFium: {error}")
        raise UnreadableDocumentError(str(path), reason) from error
    try:
        with _PDFIUM_LOCK:
            # Filled-in form fields are drawn only with a form environment, which PDFium wants
            # set up before any page is loaded.
            pdf.init_forms()
    except pdfium.PdfiumError:
        logger.warning("%s: cannot set up its form fields; rendering the pages without them", path)
    return pdf


def plan_pdf(
    pdf: pdfium.PdfDocument,
    path: Path,
    *,
    dpi: int,
    first_page: int = 1,
    last_page: int | None = None,
) -> PdfLayout:
    """Check every page in the range without rendering it, and choose each page's dpi.

    Raises :class:`UnreadableDocumentError` for a PDF with no pages, a page whose object is
    missing or damaged, an empty page box, or a page too large even at 1 dpi.
    """
    with _PDFIUM_LOCK:
        page_count = len(pdf)
    if page_count < 1:
        raise UnreadableDocumentError(str(path), "the PDF has no pages")
    first = max(1, first_page)
    last = page_count if last_page is None else min(last_page, page_count)
    budget = pixel_budget()
    page_dpis = []
    for page_number in range(first, last + 1):
        try:
            with _PDFIUM_LOCK:
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
        page_dpis.append(page_dpi)
    return PdfLayout(page_count, first, max(last, first - 1), page_dpis)


def page_text(pdf: pdfium.PdfDocument, page_number: int) -> str:
    """The text layer of a 1-based page, with ``\\n`` line ends (empty for scanned pages)."""
    with _PDFIUM_LOCK:
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


def render_pdfium(
    path: Path,
    *,
    dpi: int = 144,
    first_page: int = 1,
    last_page: int | None = None,
    extract_text: bool = False,
) -> Iterator[RenderedPage]:
    """Render a PDF's pages with pypdfium2, one page at a time.

    The file is validated (:func:`open_pdf`, :func:`plan_pdf`) before the first page is
    yielded; a page that still fails to render raises :class:`UnreadableDocumentError` naming
    that page, after the earlier pages were yielded. Each page's bitmap and page handle are
    closed before the next page is rendered, and the document when the generator finishes or
    is closed.
    """
    pdf = open_pdf(path)
    try:
        layout = plan_pdf(pdf, path, dpi=dpi, first_page=first_page, last_page=last_page)
        for page_number, page_dpi in zip(layout.page_numbers(), layout.page_dpis, strict=True):
            image = _render_pdfium_page(pdf, path, page_number, layout.page_count, page_dpi)
            text = page_text(pdf, page_number) if extract_text else None
            yield RenderedPage(page_number, layout.page_count, image, page_dpi, text)
    finally:
        with _PDFIUM_LOCK:
            pdf.close()


def _render_pdfium_page(
    pdf: pdfium.PdfDocument, path: Path, page_number: int, page_count: int, dpi: int
) -> Image.Image:
    try:
        with _PDFIUM_LOCK:
            page = pdf[page_number - 1]
            try:
                # A Python-owned RGBX buffer ("foreign" bitmap) becomes the Pillow image without a
                # copy, and Pillow's JPEG encoder reads RGBX directly: about 2.5 ms a page saved
                # over PDFium's 3-byte BGR, which to_pil() must unpack into a new image. The image
                # keeps the buffer alive, so nothing dangles once the bitmap handle is gone.
                bitmap = page.render(
                    scale=dpi / POINTS_PER_INCH,
                    rev_byteorder=True,
                    prefer_bgrx=True,
                    bitmap_maker=pdfium.PdfBitmap.new_foreign,
                )
                image = bitmap.to_pil()
                # Dropping the last reference destroys the FPDF_BITMAP handle now (CPython
                # refcounting); close() would warn because the pixel buffer is not PDFium's.
                del bitmap
            finally:
                page.close()
    except (pdfium.PdfiumError, MemoryError) as error:
        raise UnreadableDocumentError(
            str(path), f"page {page_number} of {page_count} could not be rendered ({error})"
        ) from error
    return image


def render_poppler(
    path: Path,
    *,
    dpi: int = 144,
    first_page: int = 1,
    last_page: int | None = None,
    extract_text: bool = False,
    window: int = 8,
) -> Iterator[RenderedPage]:
    """Render a PDF's pages with pdf2image (poppler's ``pdftoppm``), ``window`` pages per call.

    Validation and page text are the same as :func:`render_pdfium`'s; poppler draws the crop
    box, as PDF viewers and PDFium do. At most ``window`` rendered pages are held at once.
    """
    import pdf2image
    from pdf2image.exceptions import PDFInfoNotInstalledError, PDFPageCountError

    if window < 1:
        raise ValueError(f"window must be at least 1, not {window}")
    pdf = open_pdf(path)
    try:
        layout = plan_pdf(pdf, path, dpi=dpi, first_page=first_page, last_page=last_page)
        for start, stop, window_dpi in _windows(layout, window):
            try:
                images = pdf2image.convert_from_path(
                    str(path), dpi=window_dpi, first_page=start, last_page=stop, use_cropbox=True
                )
            except (PDFInfoNotInstalledError, FileNotFoundError) as error:
                raise RuntimeError(
                    "renderer='pdf2image' needs poppler's pdftoppm and pdfinfo on PATH "
                    "(apt-get install poppler-utils, brew install poppler), or use the default "
                    "renderer='pypdfium2'"
                ) from error
            except (PDFPageCountError, OSError) as error:
                raise UnreadableDocumentError(
                    str(path), f"poppler could not render pages {start}-{stop} ({error})"
                ) from error
            if len(images) != stop - start + 1:
                raise UnreadableDocumentError(
                    str(path),
                    f"poppler rendered {len(images)} of pages {start}-{stop}; "
                    "the PDF is probably damaged",
                )
            for offset, image in enumerate(images):
                page_number = start + offset
                images[offset] = None  # drop our reference so each page is freed once consumed
                text = page_text(pdf, page_number) if extract_text else None
                rgb = image if image.mode == "RGB" else image.convert("RGB")
                yield RenderedPage(page_number, layout.page_count, rgb, window_dpi, text)
    finally:
        with _PDFIUM_LOCK:
            pdf.close()


def _windows(layout: PdfLayout, window: int) -> Iterator[tuple[int, int, int]]:
    """Split the page range into runs of at most ``window`` pages sharing one dpi."""
    start = None
    for page_number, page_dpi in zip(layout.page_numbers(), layout.page_dpis, strict=True):
        if start is None:
            start, run_dpi = page_number, page_dpi
        elif page_dpi != run_dpi or page_number - start == window:
            yield start, page_number - 1, run_dpi
            start, run_dpi = page_number, page_dpi
    if start is not None:
        yield start, layout.last_page, run_dpi
