"""A page as pixels, what every page source yields, and the pixel budget they all obey.

The PDF renderers (:mod:`~llama_index_vlm.reader.pdf_renderers`) and the image files
(:mod:`~llama_index_vlm.reader.image_files`) both yield :class:`RenderedPage` objects;
:class:`~llama_index_vlm.reader.PDFPageReader` turns each into an ``ImageDocument``.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image


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
