"""A rendered page as a LlamaIndex ``ImageDocument``: its id, its metadata and its image bytes.

The image (JPEG or PNG, base64) lives in the document itself, so it resolves without the
original file; the document's ``id_`` is the page's stable id (:func:`page_id_for`), and the
metadata a model has no use for is hidden from LLM prompts and embedding text
(:data:`~llama_index_vlm.pages.HIDDEN_METADATA_KEYS`).
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

from llama_index.core.schema import ImageDocument
from PIL import Image

from llama_index_vlm.images import encode_image, mimetype_of
from llama_index_vlm.pages import HIDDEN_METADATA_KEYS, page_id_for
from llama_index_vlm.reader.rendered import RenderedPage


def page_document(
    page: RenderedPage,
    path: Path,
    doc_id: str,
    extra_info: dict[str, Any] | None,
    *,
    image_format: str,
    image_quality: int,
) -> ImageDocument:
    """The document of one page of ``path``; ``extra_info`` is metadata the page fields win over.

    The page fields are ``doc_id``, ``page_id``, ``file_path``, ``file_name``,
    ``page_number``, ``page_count``, ``width``, ``height`` (of the stored image) and ``dpi``.
    """
    page_id = page_id_for(doc_id, page.page_number)
    width, height = page.image.size
    metadata = dict(extra_info or {})
    metadata.update(
        doc_id=doc_id,
        page_id=page_id,
        file_path=unicode_path(path),
        file_name=unicode_path(path.name),
        page_number=page.page_number,
        page_count=page.page_count,
        width=width,
        height=height,
        dpi=page.dpi,
    )
    image_bytes = encode_page(page.image, image_format, image_quality)
    return ImageDocument(
        id_=page_id,
        text=page.text or "",
        image=base64.b64encode(image_bytes).decode("ascii"),
        image_mimetype=mimetype_of(image_format),
        metadata=metadata,
        excluded_embed_metadata_keys=list(HIDDEN_METADATA_KEYS),
        excluded_llm_metadata_keys=list(HIDDEN_METADATA_KEYS),
    )


def encode_page(image: Image.Image, image_format: str, quality: int) -> bytes:
    """A page image's bytes, as :func:`~llama_index_vlm.images.encode_image` writes them."""
    if image.mode == "RGBX" and image_format == "JPEG":
        # Pillow's JPEG encoder reads pypdfium2's RGBX pages as they are; to_rgb() inside
        # encode_image() would first copy the page to RGB (about 2 ms, for identical bytes).
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        return buffer.getvalue()
    return encode_image(image, image_format, quality)


def unicode_path(path: str | os.PathLike[str]) -> str:
    """``path`` as valid Unicode text, for metadata.

    A file name that is not valid UTF-8 reaches Python with lone surrogates in it (PEP 383),
    which Arrow, LanceDB, JSON and tokenizers all refuse; its undecodable bytes are written as
    ``\\xNN`` escapes instead (``caf\\xe9.pdf``), the same way on every run.

    >>> unicode_path(os.fsdecode(b"caf\\xe9.pdf"))
    'caf\\\\xe9.pdf'
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")
