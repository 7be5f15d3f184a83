"""The pages of one file, whatever its kind: counting them, and rendering and encoding them.

What the reader does with one checked file, in whichever process does it (the reader's own, or
a render worker's, :mod:`~llama_index_vlm.reader.render_worker`): a PDF goes to its renderer,
an image file to :mod:`~llama_index_vlm.reader.image_files`, each page is encoded as it will be
stored (:mod:`~llama_index_vlm.reader.encoded`), and *any* exception on the way (Pillow raises
``TypeError``, ``KeyError`` or ``ValueError`` on malformed TIFFs and PNGs, not only
``OSError``) becomes that file's :class:`~llama_index_vlm.errors.UnreadableDocumentError`, so
one bad file never stops the others. Only a renderer that is not installed, a problem of the
setup rather than of the file, stays an error of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llama_index_vlm.errors import UnreadableDocumentError
from llama_index_vlm.pages import os_reason
from llama_index_vlm.reader.encoded import EncodedPage, encode_rendered
from llama_index_vlm.reader.image_files import count_image_pages, image_pages
from llama_index_vlm.reader.pdf import PDF_EXTENSIONS, count_pdf_pages
from llama_index_vlm.reader.pdf_renderers import (
    RendererNotInstalledError,
    render_pdfium,
    render_poppler,
)
from llama_index_vlm.reader.rendered import RenderedPage, pixel_budget


@dataclass(frozen=True)
class ReadSettings:
    """How the pages of a file are read: the reader's settings, as plain values a render
    worker receives, with the pixel budget (``PIL.Image.MAX_IMAGE_PIXELS``) of the process that
    made them, which a worker adopts.
    """

    dpi: int = 144
    renderer: str = "pypdfium2"
    image_format: str = "JPEG"
    image_quality: int = 90
    first_page: int = 1
    last_page: int | None = None
    extract_text: bool = False
    pdf2image_window: int = 8
    max_pages: int | None = None
    max_image_pixels: int | None = field(default_factory=pixel_budget)

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-able dict (what a render worker is sent)."""
        return asdict(self)


@contextmanager
def reading_errors(path: Path) -> Iterator[None]:
    """Turn any exception raised while reading ``path`` into its UnreadableDocumentError."""
    try:
        yield
    except (UnreadableDocumentError, RendererNotInstalledError):
        raise
    except OSError as error:  # the file vanished or became unreadable mid-way
        raise UnreadableDocumentError(str(path), os_reason(error)) from error
    except MemoryError as error:
        raise UnreadableDocumentError(
            str(path), "ran out of memory while reading it (the render memory limit)"
        ) from error
    except Exception as error:  # noqa: BLE001 - a malformed file may make a decoder raise anything
        raise UnreadableDocumentError(
            str(path), f"cannot be decoded ({type(error).__name__}: {error})"
        ) from error


def count_file_pages(path: Path, settings: ReadSettings) -> int:
    """How many pages of ``path`` lie in the settings' range, without rendering any."""
    page_range = dict(
        first_page=settings.first_page,
        last_page=settings.last_page,
        max_pages=settings.max_pages,
    )
    with reading_errors(path):
        if path.suffix.lower() in PDF_EXTENSIONS:
            return count_pdf_pages(path, dpi=settings.dpi, **page_range)
        return count_image_pages(path, **page_range)


def encoded_pages(path: Path, settings: ReadSettings) -> Iterator[EncodedPage]:
    """The pages of ``path`` in the settings' range, rendered and encoded one at a time."""
    with reading_errors(path):
        pages = rendered_pages(path, settings)
        try:
            for page in pages:
                yield encode_rendered(page, settings.image_format, settings.image_quality)
        finally:
            pages.close()


def rendered_pages(path: Path, settings: ReadSettings) -> Iterator[RenderedPage]:
    """The pages of ``path`` in the settings' range as pixels, one at a time."""
    page_range = dict(
        first_page=settings.first_page,
        last_page=settings.last_page,
        max_pages=settings.max_pages,
    )
    if path.suffix.lower() not in PDF_EXTENSIONS:
        return image_pages(path, **page_range)
    options = dict(dpi=settings.dpi, extract_text=settings.extract_text, **page_range)
    if settings.renderer == "pdf2image":
        return render_poppler(path, window=settings.pdf2image_window, **options)
    return render_pdfium(path, **options)
