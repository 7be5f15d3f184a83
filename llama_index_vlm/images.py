"""Page images: normalising any Pillow mode to RGB, and encoding pages to bytes and back.

Every step that touches pixels (reader, encoder, store, VLM) goes through these functions, so a
16-bit scan or a transparent PNG looks the same to the retriever and to the answering model.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

# Transparent pixels become white paper, not black: a page scan's background is white.
_PAPER = (255, 255, 255)


def to_rgb(image: Image.Image) -> Image.Image:
    """Return ``image`` as an 8-bit RGB image, whatever its mode.

    - Transparency (RGBA, LA, PA, P or L with a transparency key) is composited onto white.
    - CMYK and YCbCr go through Pillow's colour conversion.
    - 16-bit and 32-bit greyscale (``I;16``, ``I;16B``, ``I``, ``F``) are rescaled from their
      own value range to 0..255 instead of being clipped, so a 16-bit scan does not turn white.
    - ``1`` and ``L`` become grey RGB.

    >>> to_rgb(Image.new("I;16", (4, 4), 65535)).getpixel((0, 0))
    (255, 255, 255)
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _wide_grey_to_rgb(image)
    if image.mode == "La":
        image = image.convert("LA")  # Pillow converts premultiplied La to LA only
    if image.mode == "P" or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        paper = Image.new("RGB", rgba.size, _PAPER)
        paper.paste(rgba, mask=rgba.getchannel("A"))
        return paper
    return image.convert("RGB")


def _wide_grey_to_rgb(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        low, high = 0.0, 65535.0
    else:
        finite = values[np.isfinite(values)]
        low = float(finite.min()) if finite.size else 0.0
        high = float(finite.max()) if finite.size else 0.0
    span = high - low if high > low else 1.0
    grey = np.clip((np.nan_to_num(values, nan=low) - low) / span * 255.0, 0, 255)
    return Image.fromarray(grey.round().astype(np.uint8), mode="L").convert("RGB")


def encode_image(image: Image.Image, image_format: str = "JPEG", quality: int = 90) -> bytes:
    """Encode ``image`` (any mode) as PNG or JPEG bytes, after :func:`to_rgb`."""
    image_format = image_format.upper()
    if image_format == "JPG":
        image_format = "JPEG"
    if image_format not in ("PNG", "JPEG", "WEBP"):
        raise ValueError(f"image_format must be 'PNG', 'JPEG' or 'WEBP', not {image_format!r}")
    buffer = io.BytesIO()
    options = {"quality": quality} if image_format in ("JPEG", "WEBP") else {"compress_level": 1}
    to_rgb(image).save(buffer, format=image_format, **options)
    return buffer.getvalue()


def decode_image(data: bytes | str) -> Image.Image:
    """Open encoded image bytes (or their base64 text) as a fully loaded RGB image."""
    if isinstance(data, str):
        data = base64.b64decode(data)
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        return to_rgb(opened)


def mimetype_of(image_format: str) -> str:
    """The MIME type of an image format name (``"PNG"`` -> ``"image/png"``)."""
    image_format = image_format.upper()
    return {"JPG": "image/jpeg", "JPEG": "image/jpeg"}.get(
        image_format, f"image/{image_format.lower()}"
    )
