"""Page documents built in memory, as the reader gives them: the one builder every test uses
when it needs pages without rendering a PDF.

A page's image is noise seeded by its page id (drawn at 32 x 32, the tiny models' resolution,
and scaled up), so pages differ, every page embeds differently, and a page is the same on every
call: a retrieved page's image can be checked against :func:`noise_pixels` of its id. Its
metadata holds the reader's page fields; :func:`unit_vectors` gives vectors to store it with,
seeded the same way.

Example:
    >>> (page,) = document_pages("report", 1, file_path="/corpus/report.pdf")
    >>> page.node_id, page.metadata["file_name"], page.metadata["dpi"]
    ('report-p1', 'report.pdf', 144)
    >>> (page.metadata["width"], page.metadata["height"]) == IMAGE_SIZE
    True
"""

from __future__ import annotations

import base64
import zlib
from pathlib import PurePosixPath

import numpy as np
from llama_index.core.schema import ImageDocument
from PIL import Image

from llama_index_vlm.images import encode_image, mimetype_of
from llama_index_vlm.pages import page_id_for

#: The dimension of :func:`unit_vectors` unless told otherwise.
DIM = 16
#: The pixel size (width, height) of a page image unless told otherwise.
IMAGE_SIZE = (48, 64)


def seed_of(text: str) -> int:
    """A stable seed for ``text`` (a page id): the same on every run and machine."""
    return zlib.crc32(text.encode())


def noise_pixels(seed: int | str, size: tuple[int, int] = IMAGE_SIZE) -> np.ndarray:
    """The ``(height, width, 3)`` pixels of noise seeded by ``seed`` (a page id or a number)."""
    rng = np.random.default_rng(seed_of(seed) if isinstance(seed, str) else seed)
    pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.NEAREST))


def noise_image(seed: int | str, size: tuple[int, int] = IMAGE_SIZE) -> Image.Image:
    """The image of :func:`noise_pixels`."""
    return Image.fromarray(noise_pixels(seed, size))


def encoded_noise(
    seed: int | str, size: tuple[int, int] = IMAGE_SIZE, image_format: str = "PNG"
) -> bytes:
    """:func:`noise_image` encoded as ``image_format`` (PNG or JPEG) bytes."""
    return encode_image(noise_image(seed, size), image_format)


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
    size: tuple[int, int] = IMAGE_SIZE,
    text: str | None = None,
    **metadata,
) -> ImageDocument:
    """Page ``page_number`` of ``page_count`` of document ``doc_id``, as the reader gives it.

    Args:
        file_path: the file it comes from (default ``/docs/{doc_id}.pdf``).
        image: the encoded page image (default: :func:`encoded_noise` of the page id).
        image_format: ``"PNG"`` or ``"JPEG"``, of the default image.
        size: the default image's size, and the ``width`` and ``height`` fields.
        text: the page's text (default ``"page N of DOC"``).
        metadata: more metadata, or page fields to override (``width``, ``dpi=None``...).
    """
    page_id = page_id_for(doc_id, page_number)
    file_path = file_path or f"/docs/{doc_id}.pdf"
    if image is None:
        image = encoded_noise(page_id, size, image_format)
    return ImageDocument(
        id_=page_id,
        image=base64.b64encode(image).decode(),
        image_mimetype=mimetype_of(image_format),
        text=text if text is not None else f"page {page_number} of {doc_id}",
        metadata={
            "doc_id": doc_id,
            "page_id": page_id,
            "file_path": file_path,
            "file_name": PurePosixPath(file_path).name,
            "page_number": page_number,
            "page_count": page_count,
            "width": size[0],
            "height": size[1],
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
