"""The rows a Ray ingest passes between its stages: a file's pages, rendered and then encoded.

Every row names its source file and how many rows that file has, so the driver knows when it
holds a whole file. A row is one of:

- a page to encode: its id, image bytes, mimetype, text and metadata (JSON);
- a page already stored unchanged (``unchanged``): only its id travels on;
- a failure of its file (``error``): the file is not indexed, for that reason.

After the encoder stage a page row also carries its vectors (``vectors``: float32 bytes,
``n_vectors`` rows of the encoder's dimension).

This module imports neither Ray nor torch: the stages' functions are plain Python, so they can
be tested and reused without a cluster.
"""

from __future__ import annotations

import base64
import functools
import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from llama_index_vlm.errors import InvalidPageError, UnreadableDocumentError, VLMError
from llama_index_vlm.pages import (
    HIDDEN_METADATA_KEYS,
    canonical_json,
    doc_id_of,
    node_image,
    page_content_hash,
)

#: Pages looked up in the store at once when a render task checks which are unchanged.
_LOOKUP_PAGES = 32


def failure_row(source: str, reason: str, doc_id: str = "", file_path: str = "") -> dict[str, Any]:
    """A row saying the file ``source`` is not indexed, and why.

    ``doc_id`` and ``file_path`` name the file's pages that an earlier run may have stored, so
    the driver can remove them: a file is indexed whole or not at all.
    """
    return _row(source, 1, page_id="", error=reason, doc_id=doc_id, file_path=file_path)


def page_row(source: str, file_rows: int, document: Any, unchanged: bool) -> dict[str, Any]:
    """The row of one page ``document`` of ``source`` (which has ``file_rows`` rows in all)."""
    file_path = str(document.metadata.get("file_path") or "")
    if unchanged:
        return _row(
            source, file_rows, document.node_id, doc_id=doc_id_of(document), file_path=file_path
        )
    image, mimetype = node_image(document)
    return _row(
        source,
        file_rows,
        document.node_id,
        doc_id=doc_id_of(document),
        file_path=file_path,
        image=image,
        image_mimetype=mimetype,
        text=document.text or "",
        metadata=json.dumps(document.metadata),
        unchanged=False,
    )


def _row(
    source: str,
    file_rows: int,
    page_id: str,
    *,
    error: str = "",
    doc_id: str = "",
    file_path: str = "",
    image: bytes = b"",
    image_mimetype: str = "",
    text: str = "",
    metadata: str = "",
    unchanged: bool = True,
) -> dict[str, Any]:
    # Every row has every column, so the blocks of one stage share one Arrow schema.
    return {
        "source": source,
        "file_rows": file_rows,
        "page_id": page_id,
        "error": error,
        "doc_id": doc_id,
        "file_path": file_path,
        "image": image,
        "image_mimetype": image_mimetype,
        "text": text,
        "metadata": metadata,
        "unchanged": unchanged,
        "vectors": b"",
        "n_vectors": 0,
    }


def row_document(row: dict[str, Any]) -> Any:
    """The page document a page row was made from, as the reader made it."""
    from llama_index.core.schema import ImageDocument

    return ImageDocument(
        id_=row["page_id"],
        text=row["text"],
        image=base64.b64encode(row["image"]).decode("ascii"),
        image_mimetype=row["image_mimetype"],
        metadata=json.loads(row["metadata"]),
        excluded_embed_metadata_keys=list(HIDDEN_METADATA_KEYS),
        excluded_llm_metadata_keys=list(HIDDEN_METADATA_KEYS),
    )


def vectors_to_bytes(vectors: np.ndarray) -> bytes:
    """A page's ``(n_vectors, dim)`` vectors as float32 bytes, for a row's ``vectors``."""
    return np.ascontiguousarray(vectors, dtype=np.float32).tobytes()


def row_vectors(row: dict[str, Any]) -> np.ndarray:
    """The ``(n_vectors, dim)`` float32 vectors an encoded page row carries."""
    flat = np.frombuffer(row["vectors"], dtype=np.float32)
    return flat.reshape(int(row["n_vectors"]), -1)


# ---------------------------------------------------------------------------- render stage


def render_file(row: dict[str, Any], reader: Any, store_config: dict[str, Any] | None):
    """Render the file ``row["path"]`` into page rows (the CPU stage; a Ray ``flat_map``).

    Pages already stored with the same content hash (looked up in the store described by
    ``store_config``, when given) become ``unchanged`` rows without their image, so they are
    neither encoded nor sent further. A file that cannot be read, or fails mid-way, ends with a
    failure row.
    """
    source = str(row["path"])
    try:
        file_rows = reader.count_pages(source)
    except UnreadableDocumentError as error:
        yield failure_row(source, error.reason)
        return
    doc_id = file_path = ""
    pending: list[Any] = []
    try:
        for document in reader.read_file(source):
            doc_id, file_path = doc_id_of(document), str(document.metadata.get("file_path", ""))
            pending.append(document)
            if len(pending) >= _LOOKUP_PAGES:
                yield from _page_rows(source, file_rows, pending, store_config)
                pending = []
        yield from _page_rows(source, file_rows, pending, store_config)
    except (UnreadableDocumentError, InvalidPageError) as error:
        reason = error.reason if isinstance(error, UnreadableDocumentError) else str(error)
        yield failure_row(source, reason, doc_id, file_path)


def _page_rows(
    source: str, file_rows: int, documents: list[Any], store_config: dict[str, Any] | None
) -> Iterator[dict[str, Any]]:
    if not documents:
        return
    # Validates every page as the store would (image, fields, text): a bad page fails its file.
    hashes = {document.node_id: page_content_hash(document) for document in documents}
    stored = open_store(store_config).page_hashes(page_ids=list(hashes)) if store_config else {}
    for document in documents:
        unchanged = stored.get(document.node_id) == hashes[document.node_id]
        yield page_row(source, file_rows, document, unchanged)


def store_config(store: Any) -> dict[str, Any]:
    """What a worker needs to open ``store`` itself (a local path made absolute)."""
    uri = store.uri if "://" in store.uri else os.path.abspath(store.uri)
    return {
        "uri": uri,
        "table_name": store.table_name,
        "vector_dtype": store.vector_dtype,
        "storage_options": store.storage_options,
    }


def open_store(config: dict[str, Any]) -> Any:
    """The store described by ``config``, opened once per worker process."""
    return _open_store(canonical_json(config))


@functools.lru_cache(maxsize=4)
def _open_store(config_json: str) -> Any:
    from llama_index_vlm.store import LanceDBPageStore

    return LanceDBPageStore(**json.loads(config_json))


def find_vlm_error(error: BaseException) -> VLMError | None:
    """The :class:`VLMError` a Ray exception carries (Ray wraps a task's exception), if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, VLMError):
            return current
        seen.add(id(current))
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else current.__cause__
    return None
