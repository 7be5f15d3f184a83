"""Page documents built in memory, as the reader gives them, for tests that need stored pages.

Each page's image is noise seeded by its page id (drawn at the tiny models' 32 x 32 and scaled
up), so every page embeds differently and a retrieved page's image can be checked against the
one it was written with.

Example:
    >>> (page,) = page_documents("report", 1, file_path="/corpus/report.pdf", dpi=144)
    >>> page.node_id, page.metadata["file_name"], page.metadata["dpi"]
    ('report-p1', 'report.pdf', 144)
    >>> (page.metadata["width"], page.metadata["height"]) == PAGE_SIZE
    True
"""

from __future__ import annotations

import base64
import zlib
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from llama_index.core.schema import ImageDocument
from PIL import Image

from llama_index_vlm.images import encode_image
from llama_index_vlm.pages import page_id_for

#: Default page size in pixels (width, height).
PAGE_SIZE = (48, 64)


def noise_pixels(page_id: str, size: tuple[int, int] = PAGE_SIZE) -> np.ndarray:
    """The pixels ``(height, width, 3)`` of ``page_id``'s page image, the same on every call."""
    rng = np.random.default_rng(zlib.crc32(page_id.encode()))
    pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.NEAREST))


def noise_image(page_id: str, size: tuple[int, int] = PAGE_SIZE) -> Image.Image:
    """``page_id``'s page image (see :func:`noise_pixels`)."""
    return Image.fromarray(noise_pixels(page_id, size))


def page_documents(
    doc_id: str,
    n_pages: int,
    *,
    file_path: str | None = None,
    size: tuple[int, int] = PAGE_SIZE,
    **metadata: Any,
) -> list[ImageDocument]:
    """The ``n_pages`` pages of one document, its image embedded as base64 PNG.

    Every page carries the reader's page fields (``file_path`` defaults to
    ``/corpus/{doc_id}.pdf``) and ``metadata``'s extra keys (e.g. ``dpi=144``, ``year=2023``).
    """
    file_path = file_path or f"/corpus/{doc_id}.pdf"
    documents = []
    for page_number in range(1, n_pages + 1):
        page_id = page_id_for(doc_id, page_number)
        png = encode_image(noise_image(page_id, size), "PNG")
        documents.append(
            ImageDocument(
                id_=page_id,
                image=base64.b64encode(png).decode(),
                image_mimetype="image/png",
                metadata={
                    "doc_id": doc_id,
                    "page_id": page_id,
                    "file_path": file_path,
                    "file_name": PurePosixPath(file_path).name,
                    "page_number": page_number,
                    "page_count": n_pages,
                    "width": size[0],
                    "height": size[1],
                    **metadata,
                },
            )
        )
    return documents
