"""A rendered page encoded as it will be stored: image bytes, their format, size and page fields.

Both ways of reading a file end here: in the reader's own process, or in a render worker
(:mod:`~llama_index_vlm.reader.render_worker`), which sends back these bytes instead of the
decoded pixels. An image too large for the requested format (JPEG holds at most 65,500 pixels a
side) is stored as lossless PNG instead of failing the file.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

from PIL import Image

from llama_index_vlm.images import encode_image
from llama_index_vlm.reader.rendered import RenderedPage

logger = logging.getLogger(__name__)

#: The longest side, in pixels, each format's encoder accepts; a page over it is stored as PNG.
MAX_SIDE = {"JPEG": 65_500, "WEBP": 16_383}


@dataclass
class EncodedPage:
    """One page, encoded.

    Attributes:
        page_number: 1-based page number within the file.
        page_count: number of pages in the whole file.
        image_bytes: the encoded image.
        image_format: ``"JPEG"`` or ``"PNG"``: the format of ``image_bytes`` (PNG also when JPEG
            was asked for but the page is too large for it).
        width: width of the image in pixels.
        height: height of the image in pixels.
        dpi: see :attr:`RenderedPage.dpi`.
        text: the page's text layer when text extraction was asked for, else ``None``.
    """

    page_number: int
    page_count: int
    image_bytes: bytes
    image_format: str
    width: int
    height: int
    dpi: int | None
    text: str | None = None


def encode_rendered(page: RenderedPage, image_format: str, quality: int) -> EncodedPage:
    """``page`` encoded as ``image_format`` (see :func:`encode_page`)."""
    width, height = page.image.size
    image_bytes, used_format = encode_page(page.image, image_format, quality)
    return EncodedPage(
        page.page_number,
        page.page_count,
        image_bytes,
        used_format,
        width,
        height,
        page.dpi,
        page.text,
    )


def encode_page(image: Image.Image, image_format: str, quality: int) -> tuple[bytes, str]:
    """A page image's bytes and their format: ``image_format``, or PNG for a page too large
    for it, as :func:`~llama_index_vlm.images.encode_image` writes them.
    """
    image_format = "JPEG" if image_format.upper() == "JPG" else image_format.upper()
    if max(image.size) > MAX_SIDE.get(image_format, max(image.size)):
        logger.info(
            "a %d x %d page is too large for %s; storing it as PNG", *image.size, image_format
        )
        image_format = "PNG"
    if image.mode == "RGBX" and image_format == "JPEG":
        # Pillow's JPEG encoder reads pypdfium2's RGBX pages as they are; to_rgb() inside
        # encode_image() would first copy the page to RGB (about 2 ms, for identical bytes).
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        return buffer.getvalue(), image_format
    return encode_image(image, image_format, quality), image_format
