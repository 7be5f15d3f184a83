"""The page vocabulary: what a page is, how it is named, and how its content is recognised.

Every step that handles pages (reader, store, ingestion, retriever, VLM, index, CLI) imports
these rules from here, so a page id, a document id, a page label or the set of metadata keys
hidden from models is defined exactly once.

A page is a LlamaIndex node (an ``ImageDocument`` from the reader, an ``ImageNode`` from the
store) whose ``node_id`` is its page id and whose metadata holds the :data:`PAGE_FIELDS`.

This module imports neither torch nor LanceDB: reading or naming a page costs no model.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from llama_index_vlm.errors import InvalidPageError, UnreadableDocumentError

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from llama_index.core.schema import BaseNode
    from PIL import Image

#: The type of a page field's column, and how a filter on it is written.
ColumnType = Literal["string", "integer", "float"]

#: Page fields: node metadata keys every page carries, each kept in its own typed column by the
#: store (and filterable as such). Any other metadata key is the user's own.
PAGE_FIELDS: dict[str, ColumnType] = {
    "page_id": "string",
    "doc_id": "string",
    "file_path": "string",
    "file_name": "string",
    "page_number": "integer",
    "page_count": "integer",
    "width": "integer",
    "height": "integer",
    "dpi": "float",
}

#: LlamaIndex's names for page fields, accepted wherever a page field is (filters, lookups).
PAGE_FIELD_ALIASES: dict[str, str] = {"ref_doc_id": "doc_id", "node_id": "page_id"}

#: Metadata a model has no use for (ids, paths, pixel sizes): kept on every page for the store
#: and for citations, but out of LLM prompts and embedding text, as LlamaIndex's own file readers
#: do. ``file_name`` and ``page_number`` stay visible, so a model can cite pages.
HIDDEN_METADATA_KEYS: tuple[str, ...] = (
    "doc_id",
    "page_id",
    "file_path",
    "page_count",
    "width",
    "height",
    "dpi",
)

# A content hash ignores where a file lies: the same bytes at two paths are one document (same
# doc_id), and including the path would make the two copies overwrite each other on every run.
_UNHASHED_FIELDS = ("file_path", "file_name")
_HASH_CHUNK = 1 << 20


# ---------------------------------------------------------------------------- ids and labels


def page_id_for(doc_id: str, page_number: int) -> str:
    """The stable id of page ``page_number`` (1-based) of document ``doc_id``.

    >>> page_id_for("3f2a", 7)
    '3f2a-p7'
    """
    return f"{doc_id}-p{page_number}"


def doc_id_for_file(path: str | os.PathLike[str]) -> str:
    """The default ``doc_id`` of a file: the sha256 hex digest of its bytes.

    Reads the file in 1 MiB chunks, so hashing a large PDF needs no more memory than a small
    one. Raises :class:`UnreadableDocumentError` if the file cannot be read.
    """
    digest = hashlib.sha256()
    buffer = bytearray(_HASH_CHUNK)
    view = memoryview(buffer)
    try:
        with open(path, "rb", buffering=0) as handle:
            while size := handle.readinto(buffer):
                digest.update(view[:size])
    except OSError as error:
        raise UnreadableDocumentError(str(path), os_reason(error)) from error
    return digest.hexdigest()


def os_reason(error: OSError) -> str:
    """A short reason for an ``OSError`` while reading a file, for a user's message."""
    if isinstance(error, FileNotFoundError):
        return "no such file or directory"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, IsADirectoryError):
        return "is a directory"
    return error.strerror or str(error)


def doc_id_of(node: BaseNode) -> str:
    """The document a page belongs to: its ``doc_id`` metadata, else its ``ref_doc_id``, else
    the page itself (a page given without a document is its own document).
    """
    return str(node.metadata.get("doc_id") or node.ref_doc_id or node.node_id)


def source_of(node: BaseNode) -> str:
    """The file a page came from (its ``file_path``), else its document: what a failure names."""
    return str(node.metadata.get("file_path") or node.ref_doc_id or node.node_id)


def page_label(node: BaseNode) -> str:
    """How people read a page's name: ``"report.pdf, page 3"``.

    Falls back to the document id, then the page id, when the page has no file name.

    >>> from llama_index.core.schema import TextNode
    >>> page_label(TextNode(id_="d-p3", metadata={"file_name": "report.pdf", "page_number": 3}))
    'report.pdf, page 3'
    """
    metadata = node.metadata
    name = metadata.get("file_name") or metadata.get("doc_id") or node.node_id
    return f"{name}, page {metadata.get('page_number', '?')}"


# ---------------------------------------------------------------------------- page images


def node_image(node: BaseNode) -> tuple[bytes, str]:
    """The encoded image bytes of a page node and their mimetype; the bytes are kept as given.

    Reads wherever LlamaIndex keeps a node's image: ``ImageNode.image`` (base64), an
    ``ImageDocument``'s ``image_resource`` (base64 data or a path), or ``image_path``.

    Raises:
        InvalidPageError: the node holds no image, or its bytes are not a readable image.
    """
    from llama_index.core.schema import ImageNode

    encoded: str | bytes | None = None
    path: str | None = None
    mimetype: str | None = None
    if isinstance(node, ImageNode):
        encoded, path, mimetype = node.image, node.image_path, node.image_mimetype
    else:
        resource = getattr(node, "image_resource", None)
        if resource is not None:
            encoded = resource.data
            path = str(resource.path) if resource.path else None
            mimetype = resource.mimetype
    data = _read_image_bytes(node.node_id, encoded, path)
    if not data:
        raise InvalidPageError(
            f"page {node.node_id!r} has no image: give the page image as base64 (ImageDocument("
            "image=...)) or an image_path"
        )
    if not mimetype:
        mimetype = _sniff_mimetype(data, node.node_id)
    return data, mimetype


def _read_image_bytes(page_id: str, encoded: str | bytes | None, path: str | None) -> bytes | None:
    try:
        if encoded:
            return base64.b64decode(encoded)
        return Path(path).read_bytes() if path else None
    except (ValueError, OSError) as error:  # binascii.Error is a ValueError
        raise InvalidPageError(f"page {page_id!r}: its image cannot be read ({error})") from error


def page_image(node: BaseNode) -> Image.Image:
    """The image of a page node, decoded to RGB (see :func:`node_image`)."""
    from llama_index_vlm.images import decode_image

    return decode_image(node_image(node)[0])


def _sniff_mimetype(data: bytes, page_id: str) -> str:
    from PIL import Image

    from llama_index_vlm.images import mimetype_of

    try:
        with Image.open(io.BytesIO(data)) as opened:
            image_format = opened.format
    except Exception as error:
        raise InvalidPageError(
            f"page {page_id!r}: the image bytes are not a readable image"
        ) from error
    return mimetype_of(image_format or "PNG")


# ---------------------------------------------------------------------------- fields and content


def split_metadata(node: BaseNode) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(page fields, user metadata)`` of a page node, the page fields typed and checked.

    Raises:
        InvalidPageError: a page field has the wrong type, ``page_id`` metadata differs from
            the node id, or ``page_number`` is outside ``1..page_count``.
    """
    metadata = dict(node.metadata or {})
    page_id = node.node_id
    given_page_id = metadata.pop("page_id", None)
    if given_page_id is not None and given_page_id != page_id:
        raise InvalidPageError(
            f"node {page_id!r} has metadata page_id={given_page_id!r}; the page id must be the "
            "node id"
        )
    fields: dict[str, Any] = {"page_id": page_id}
    doc_id = metadata.pop("doc_id", None) or node.ref_doc_id or page_id
    fields["doc_id"] = str(doc_id)
    for name, kind in PAGE_FIELDS.items():
        if name in ("page_id", "doc_id"):
            continue
        fields[name] = _typed(metadata.pop(name, None), kind, name, page_id)
    number, count = fields["page_number"], fields["page_count"]
    if number is not None and count is not None and not 1 <= number <= count:
        raise InvalidPageError(f"page {page_id!r}: page_number={number} is not in 1..{count}")
    return fields, metadata


def _typed(value: Any, kind: ColumnType, name: str, page_id: str) -> Any:
    import numpy as np

    if value is None:
        return None
    if kind == "string":
        return str(value)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidPageError(f"page {page_id!r}: metadata {name}={value!r} must be a number")
    if kind == "float":
        as_float = float(value)
        if not math.isfinite(as_float):
            raise InvalidPageError(f"page {page_id!r}: metadata {name}={value!r} must be finite")
        return as_float
    if float(value) != int(value):
        raise InvalidPageError(
            f"page {page_id!r}: metadata {name}={value!r} must be a whole number"
        )
    return int(value)


def page_text(node: BaseNode) -> str:
    """A page's own text (its text layer), without metadata."""
    from llama_index.core.schema import MetadataMode

    return node.get_content(metadata_mode=MetadataMode.NONE) or ""


def metadata_json(user_metadata: dict[str, Any]) -> str:
    """A page's user metadata as canonical JSON (sorted keys), as the store keeps it.

    Values JSON cannot hold (dates, paths...) are kept as their ``str()``; NaN is refused,
    because Lance's JSON parser (rightly) rejects it.
    """
    try:
        return json.dumps(
            user_metadata, sort_keys=True, ensure_ascii=False, allow_nan=False, default=str
        )
    except ValueError as error:
        raise InvalidPageError(f"metadata cannot be stored as JSON: {error}") from error


def check_unicode(fields: dict[str, Any], text: str, metadata: str) -> None:
    """Refuse text Arrow cannot store: lone surrogates (PEP 383's stand-ins for the bytes of a
    file name that is not UTF-8), which would otherwise fail a whole write late.
    """
    parts = {name: value for name, value in fields.items() if isinstance(value, str)}
    parts.update(text=text, metadata=metadata)
    for name, value in parts.items():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidPageError(
                f"page {fields['page_id']!r}: its {name} is not valid Unicode (it holds lone "
                "surrogates, as a file name that is not UTF-8 gives); store valid text, e.g. "
                "os.fsencode(name).decode('utf-8', 'backslashreplace')"
            ) from None


def content_hash(
    image: bytes, mimetype: str, text: str, fields: dict[str, Any], metadata: str
) -> str:
    """The sha256 that recognises an unchanged page: image bytes, mimetype, text, page fields
    (without the file's path and name) and user metadata JSON (:func:`metadata_json`).
    """
    digest = hashlib.sha256()
    hashed_fields = {key: value for key, value in fields.items() if key not in _UNHASHED_FIELDS}
    for part in (
        image,
        mimetype.encode(),
        text.encode("utf-8", "surrogatepass"),
        canonical_json(hashed_fields).encode(),
        metadata.encode("utf-8", "surrogatepass"),
    ):
        # Length prefixes keep the parts apart ("ab"+"c" differs from "a"+"bc").
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


class PageContent(NamedTuple):
    """A page node taken apart and checked: what the store keeps of it, and its content hash."""

    image: bytes
    mimetype: str
    fields: dict[str, Any]
    text: str
    metadata_json: str
    content_hash: str


def page_content(node: BaseNode) -> PageContent:
    """Take a page node apart into what the store keeps of it, checked, with its content hash.

    Raises:
        InvalidPageError: no readable image, bad page fields, metadata JSON cannot hold, or
            text that is not valid Unicode.
    """
    image, mimetype = node_image(node)
    fields, user_metadata = split_metadata(node)
    text, user_json = page_text(node), metadata_json(user_metadata)
    check_unicode(fields, text, user_json)
    digest = content_hash(image, mimetype, text, fields, user_json)
    return PageContent(image, mimetype, fields, text, user_json, digest)


def page_content_hash(node: BaseNode) -> str:
    """The content hash the store records for ``node`` (see :func:`content_hash`)."""
    return page_content(node).content_hash


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values give equal text.

    >>> canonical_json({"b": 1, "a": [1, 2]})
    '{"a":[1,2],"b":1}'
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
