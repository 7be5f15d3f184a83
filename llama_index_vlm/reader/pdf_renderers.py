"""The two PDF renderers: pypdfium2 (the default, pip-only) and pdf2image (poppler's pdftoppm).

Both take a path and a page range and yield :class:`RenderedPage` objects, one page at a time,
after :func:`~llama_index_vlm.reader.pdf.planned_pdf` checked the whole range: they accept and
refuse the same files, and render each page at the dpi its plan chose. Poppler is used only for
pixels; page text always comes from pdfium's text layer.

Memory stays bounded whatever the PDF's length: pypdfium2 renders and closes one page at a time;
pdf2image renders small windows of pages (``window`` pages per ``pdftoppm`` call).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pypdfium2 as pdfium
from PIL import Image

from llama_index_vlm.errors import UnreadableDocumentError
from llama_index_vlm.reader.pdf import (
    PDFIUM_LOCK,
    POINTS_PER_INCH,
    PdfLayout,
    page_text,
    planned_pdf,
)
from llama_index_vlm.reader.rendered import RenderedPage


class RendererNotInstalledError(RuntimeError):
    """The renderer asked for is not installed: a problem of the setup, not of any file."""


def render_pdfium(
    path: Path,
    *,
    dpi: int = 144,
    first_page: int = 1,
    last_page: int | None = None,
    extract_text: bool = False,
    max_pages: int | None = None,
) -> Iterator[RenderedPage]:
    """Render a PDF's pages with pypdfium2, one page at a time.

    The file is validated (:func:`~llama_index_vlm.reader.pdf.planned_pdf`) before the first
    page is yielded; a page that still fails to render raises :class:`UnreadableDocumentError`
    naming that page, after the earlier pages were yielded. Each page's bitmap and page handle
    are closed before the next page is rendered, and the document when the generator finishes
    or is closed. More than ``max_pages`` pages in the range fail the file before any is
    rendered.
    """
    page_range = dict(first_page=first_page, last_page=last_page, max_pages=max_pages)
    with planned_pdf(path, dpi=dpi, **page_range) as plan:
        pdf, layout = plan
        for page_number, page_dpi in zip(layout.page_numbers(), layout.page_dpis, strict=True):
            image = _render_pdfium_page(pdf, path, page_number, layout.page_count, page_dpi)
            text = page_text(pdf, page_number) if extract_text else None
            yield RenderedPage(page_number, layout.page_count, image, page_dpi, text)


def _render_pdfium_page(
    pdf: pdfium.PdfDocument, path: Path, page_number: int, page_count: int, dpi: int
) -> Image.Image:
    try:
        with PDFIUM_LOCK:
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
    max_pages: int | None = None,
) -> Iterator[RenderedPage]:
    """Render a PDF's pages with pdf2image (poppler's ``pdftoppm``), ``window`` pages per call.

    Validation and page text are the same as :func:`render_pdfium`'s; poppler draws the crop
    box, as PDF viewers and PDFium do. At most ``window`` rendered pages are held at once.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, not {window}")
    page_range = dict(first_page=first_page, last_page=last_page, max_pages=max_pages)
    with planned_pdf(path, dpi=dpi, **page_range) as plan:
        pdf, layout = plan
        for start, stop, window_dpi in _windows(layout, window):
            images = _render_poppler_window(path, start, stop, window_dpi)
            for offset, image in enumerate(images):
                page_number = start + offset
                images[offset] = None  # drop our reference so each page is freed once consumed
                text = page_text(pdf, page_number) if extract_text else None
                rgb = image if image.mode == "RGB" else image.convert("RGB")
                yield RenderedPage(page_number, layout.page_count, rgb, window_dpi, text)


def _render_poppler_window(path: Path, start: int, stop: int, dpi: int) -> list[Image.Image]:
    """Pages ``start`` to ``stop`` (inclusive) rendered by one ``pdftoppm`` call."""
    import pdf2image
    from pdf2image.exceptions import PDFInfoNotInstalledError, PDFPageCountError

    try:
        images = pdf2image.convert_from_path(
            str(path), dpi=dpi, first_page=start, last_page=stop, use_cropbox=True
        )
    except (PDFInfoNotInstalledError, FileNotFoundError) as error:
        raise RendererNotInstalledError(
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
            f"poppler rendered {len(images)} of pages {start}-{stop}; the PDF is probably damaged",
        )
    return images


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
