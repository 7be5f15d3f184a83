"""Page documents built in memory, as the reader gives them, with vectors to store them with.

One builder for every test that needs pages without rendering a PDF: a page's image is noise
seeded by its page id (so pages differ and a page is the same on every call), its metadata the
reader's page fields, and its vectors unit rows seeded the same way.
"""

from __future__ import annotations

import base64
import io
import zlib
from pathlib import Path

import numpy as np
from llama_index.core.schema import ImageDocument
from PIL import Image

#: The dimension of :func:`unit_vectors` unless told otherwise.
DIM = 16
#: The pixel size (width, height) of :func:`noise_image` unless told otherwise.
IMAGE_SIZE = (16, 24)


def seed_of(text: str) -> int:
    """A stable seed for ``text`` (a page id): the same on every run and machine."""
    return zlib.crc32(text.encode())


def noise_image(seed: int, size: tuple[int, int] = IMAGE_SIZE, image_format: str = "PNG") -> bytes:
    """Encoded RGB noise of ``size`` pixels, the same for the same seed."""
    width, height = size
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def unit_vectors(seed: int, n_vectors: int | None = None, dim: int = DIM) -> np.ndarray:
    """``(n_vectors, dim)`` float32 rows of norm 1 (3 to 8 rows unless ``n_vectors`` is given)."""
    rng = np.random.default_rng(seed)
    count = n_vectors or int(rng.integers(3, 9))
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def page_document(
    doc_id: str,
    page_number: int,
    page_count: int = 3,
    *,
    file_path: str | None = None,
    image: bytes | None = None,
    image_format: str = "PNG",
    seed: int | None = None,
    text: str | None = None,
    **metadata,
) -> ImageDocument:
    """Page ``page_number`` of ``page_count`` of document ``doc_id``, as the reader gives it.

    Args:
        file_path: the file it comes from (default ``/docs/{doc_id}.pdf``).
        image: the encoded page image (default: :func:`noise_image` of ``seed``, itself
            seeded by the page id).
        image_format: ``"PNG"`` or ``"JPEG"``, of the default image.
        text: the page's text (default ``"page N of DOC"``).
        metadata: more metadata, or page fields to override (``width``, ``dpi``...).
    """
    page_id = f"{doc_id}-p{page_number}"
    file_path = file_path or f"/docs/{doc_id}.pdf"
    if image is None:
        seed = seed if seed is not None else seed_of(page_id)
        image = noise_image(seed, image_format=image_format)
    width, height = IMAGE_SIZE
    return ImageDocument(
        id_=page_id,
        image=base64.b64encode(image).decode(),
        image_mimetype="image/jpeg" if image_format == "JPEG" else "image/png",
        text=text if text is not None else f"page {page_number} of {doc_id}",
        metadata={
            "doc_id": doc_id,
            "page_id": page_id,
            "file_path": file_path,
            "file_name": Path(file_path).name,
            "page_number": page_number,
            "page_count": page_count,
            "width": width,
            "height": height,
            "dpi": 144,
            **metadata,
        },
    )


def document_pages(doc_id: str, page_count: int = 3, **kwargs) -> list[ImageDocument]:
    """Every page of document ``doc_id`` (see :func:`page_document` for ``kwargs``)."""
    return [page_document(doc_id, n, page_count, **kwargs) for n in range(1, page_count + 1)]


def vectors_for(pages, dim: int = DIM) -> list[np.ndarray]:
    """:func:`unit_vectors` for each page, seeded by its page id."""
    return [unit_vectors(seed_of(page.node_id), dim=dim) for page in pages]
