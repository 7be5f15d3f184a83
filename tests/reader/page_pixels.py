"""Looking at the pages the reader made: their decoded pixels and colours."""

from __future__ import annotations

from pathlib import Path

from llama_index.core.schema import ImageDocument
from PIL import Image

RED, GREEN, BLUE = (200, 30, 30), (30, 200, 30), (30, 30, 200)


def pixels(doc: ImageDocument) -> Image.Image:
    """The document's own image, decoded from the base64 it carries."""
    return Image.open(doc.resolve_image()).convert("RGB")


def centre(doc: ImageDocument) -> tuple[int, int, int]:
    """The colour at the centre of the document's image."""
    image = pixels(doc)
    return image.getpixel((image.width // 2, image.height // 2))


def close_to(colour, expected, tolerance=12) -> bool:
    """Whether two RGB colours differ by at most ``tolerance`` in every channel."""
    return all(abs(a - b) <= tolerance for a, b in zip(colour, expected, strict=True))


def save(image: Image.Image, path: Path, **options) -> Path:
    """Save ``image`` at ``path`` (Pillow's options) and return the path."""
    image.save(path, **options)
    return path
