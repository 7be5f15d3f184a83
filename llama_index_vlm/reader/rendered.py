"""A page as pixels, what every page source yields, and the pixel and page limits they all obey.

The PDF renderers (:mod:`~llama_index_vlm.reader.pdf_renderers`) and the image files
(:mod:`~llama_index_vlm.reader.image_files`) both yield :class:`RenderedPage` objects;
:class:`~llama_index_vlm.reader.PDFPageReader` turns each into an ``ImageDocument``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from llama_index_vlm.errors import UnreadableDocumentError

#: Pages read from one file at most, by default: a PDF listing one page a million times, or a
#: TIFF of 20,000 frames, is refused instead of costing hours.
DEFAULT_MAX_PAGES = 10_000


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
            too large for the pixel budget); for an image file, the resolution the file
            records, or ``None``.
        text: the page's text layer when text extraction was asked for, else ``None``.
    """

    page_number: int
    page_count: int
    image: Image.Image
    dpi: int | None
    text: str | None = None


def pixel_budget() -> int | None:
    """The largest bitmap, in pixels, that may be rendered or opened (Pillow's bomb limit).

    ``None`` when a caller lifted the limit (``PIL.Image.MAX_IMAGE_PIXELS = None``).
    """
    budget = Image.MAX_IMAGE_PIXELS
    return None if budget is None else int(budget)


def check_page_limit(
    path: Path, max_pages: int | None, n_pages: int | None = None, *, more: bool = False
) -> None:
    """Refuse a file with ``n_pages`` pages to read (``more``: more than ``max_pages``, known
    without counting them all) when that is over ``max_pages`` (``None``: no limit).

    Raises:
        UnreadableDocumentError: the file has too many pages to read.
    """
    if max_pages is None or (not more and (n_pages is None or n_pages <= max_pages)):
        return
    how_many = f"more than {max_pages:,}" if more else f"{n_pages:,}"
    raise UnreadableDocumentError(
        str(path),
        f"{how_many} pages to read, over the limit of {max_pages:,} pages per file; raise it "
        "(PDFPageReader(max_pages=...), `index --max-pages N`) or read a page range "
        "(first_page/last_page)",
    )
