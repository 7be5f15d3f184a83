"""A rendered page as a LlamaIndex ``ImageDocument``: its id, its metadata and its image bytes.

The image (JPEG or PNG, base64) lives in the document itself, so it resolves without the
original file; the document's ``id_`` is the page's stable id (:func:`page_id_for`), and the
metadata a model has no use for is hidden from LLM prompts and embedding text
(:data:`~llama_index_vlm.pages.HIDDEN_METADATA_KEYS`).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from llama_index.core.schema import ImageDocument

from llama_index_vlm.images import mimetype_of
from llama_index_vlm.pages import HIDDEN_METADATA_KEYS, page_id_for
from llama_index_vlm.reader.encoded import EncodedPage


def page_document(
    page: EncodedPage, path: Path, doc_id: str, extra_info: dict[str, Any] | None
) -> ImageDocument:
    """The document of one page of ``path``; ``extra_info`` is metadata the page fields win over.

    The page fields are ``doc_id``, ``page_id``, ``file_path``, ``file_name``,
    ``page_number``, ``page_count``, ``width``, ``height`` (of the stored image) and ``dpi``.
    """
    page_id = page_id_for(doc_id, page.page_number)
    metadata = dict(extra_info or {})
    metadata.update(
        doc_id=doc_id,
        page_id=page_id,
        file_path=unicode_path(path),
        file_name=unicode_path(path.name),
        page_number=page.page_number,
        page_count=page.page_count,
        width=page.width,
        height=page.height,
        dpi=page.dpi,
    )
    return ImageDocument(
        id_=page_id,
        text=page.text or "",
        image=base64.b64encode(page.image_bytes).decode("ascii"),
        image_mimetype=mimetype_of(page.image_format),
        metadata=metadata,
        excluded_embed_metadata_keys=list(HIDDEN_METADATA_KEYS),
        excluded_llm_metadata_keys=list(HIDDEN_METADATA_KEYS),
    )


def unicode_path(path: str | os.PathLike[str]) -> str:
    """``path`` as valid Unicode text, for metadata.

    A file name that is not valid UTF-8 reaches Python with lone surrogates in it (PEP 383),
    which Arrow, LanceDB, JSON and tokenizers all refuse; its undecodable bytes are written as
    ``\\xNN`` escapes instead (``caf\\xe9.pdf``), the same way on every run.

    >>> unicode_path(os.fsdecode(b"caf\\xe9.pdf"))
    'caf\\\\xe9.pdf'
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")
