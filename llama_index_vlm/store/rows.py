"""Page nodes <-> Arrow rows of the page table: validation and conversion, without LanceDB.

Writing, a page node and its vectors are checked and taken apart once (:func:`prepare_pages`),
then the pages of one call are checked against each other (:func:`deduplicate`), sorted by what
the store already holds (:func:`classify`) and turned into one Arrow table (:func:`to_arrow`).
Reading, rows become ``ImageNode``s (:func:`row_to_node`) and the vectors column one array per
page (:func:`vectors_from_arrow`).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from llama_index.core.schema import BaseNode, ImageNode, NodeRelationship, RelatedNodeInfo

from llama_index_vlm.errors import InvalidPageError, ModelMismatchError
from llama_index_vlm.pages import HIDDEN_METADATA_KEYS, PAGE_FIELDS, page_content
from llama_index_vlm.store.filters import quote_literal
from llama_index_vlm.store.results import AddResult
from llama_index_vlm.store.schema import VECTOR_COLUMN


@dataclass
class PreparedPage:
    """A validated page; ``vectors`` is the caller's array, cast only when written."""

    page_id: str
    fields: dict[str, Any]
    image: bytes
    image_mimetype: str
    text: str
    metadata_json: str
    content_hash: str
    vectors: np.ndarray


# ---------------------------------------------------------------------- validation


def prepare_pages(
    nodes: Sequence[BaseNode],
    page_vectors: Sequence[np.ndarray] | np.ndarray | None,
    dtype: Any,
) -> list[PreparedPage]:
    """Check each node and its vectors (to be stored as ``dtype``) and take them apart.

    Raises:
        InvalidPageError: no vectors, a count that does not match the nodes, or a bad page
            (see :func:`prepare_page`).
        ModelMismatchError: the vectors of one call have different dimensions.
    """
    if page_vectors is None:
        raise InvalidPageError(
            "LanceDBPageStore.add needs page_vectors=[one (n_vectors, dim) array per node]"
        )
    if len(page_vectors) != len(nodes):
        raise InvalidPageError(f"got {len(nodes)} nodes but {len(page_vectors)} page vector arrays")
    pages = [
        prepare_page(node, vectors, dtype)
        for node, vectors in zip(nodes, page_vectors, strict=True)
    ]
    dims = {page.vectors.shape[1] for page in pages}
    if len(dims) > 1:
        raise ModelMismatchError(
            f"one add call mixes vectors of dimensions {sorted(dims)}: they cannot come "
            "from one encoder"
        )
    return pages


def prepare_page(node: BaseNode, vectors: Any, dtype: Any) -> PreparedPage:
    """One page node and its ``(n_vectors, dim)`` vectors, checked and taken apart.

    Raises:
        InvalidPageError: no readable image, bad page fields, text that is not valid Unicode,
            or vectors that are empty, not numbers, not finite or too large for ``dtype``.
    """
    content = page_content(node)
    return PreparedPage(
        page_id=node.node_id,
        fields=content.fields,
        image=content.image,
        image_mimetype=content.mimetype,
        text=content.text,
        metadata_json=content.metadata_json,
        content_hash=content.content_hash,
        vectors=check_vectors(node.node_id, vectors, dtype),
    )


def check_vectors(page_id: str, vectors: Any, dtype: Any) -> np.ndarray:
    """``vectors`` as an array, refused unless a non-empty 2-D array of finite numbers that
    ``dtype`` can hold. The array is not copied or cast.
    """
    array = np.asarray(vectors)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidPageError(
            f"page {page_id!r}: vectors must be a non-empty (n_vectors, dim) array, "
            f"got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.integer):
        raise InvalidPageError(
            f"page {page_id!r}: vectors must be numbers, got dtype {array.dtype}"
        )
    # max/min propagate NaN and are far cheaper than isfinite over a cast copy; the cast
    # itself happens once, for the pages actually written (to_arrow).
    high, low = float(array.max()), float(array.min())
    limit = float(np.finfo(dtype).max)
    if not (math.isfinite(high) and math.isfinite(low) and -limit <= low and high <= limit):
        raise InvalidPageError(
            f"page {page_id!r}: vectors contain NaN or infinity (or values too large for "
            f"{np.dtype(dtype).name})"
        )
    return array


def deduplicate(pages: list[PreparedPage]) -> list[PreparedPage]:
    """Drop repeated pages of one call, checking that the call holds one version of each file.

    Raises:
        InvalidPageError: one page id with two contents, one document with two page counts,
            or one file with two doc ids.
    """
    unique: dict[str, PreparedPage] = {}
    for page in pages:
        first = unique.setdefault(page.page_id, page)
        if first.content_hash != page.content_hash:
            raise InvalidPageError(f"page {page.page_id!r} is given twice with different content")
    _check_one_version(list(unique.values()))
    return list(unique.values())


def _check_one_version(pages: list[PreparedPage]) -> None:
    by_file: dict[str, str] = {}
    page_counts: dict[str, int] = {}
    for page in pages:
        doc_id, page_count = page.fields["doc_id"], page.fields["page_count"]
        if page_count is not None and page_counts.setdefault(doc_id, page_count) != page_count:
            raise InvalidPageError(
                f"document {doc_id!r} comes with two page_counts ({page_counts[doc_id]}, "
                f"{page_count}) in one add call"
            )
        file_path = page.fields["file_path"]
        if file_path is None:
            continue
        first_doc_id = by_file.setdefault(file_path, doc_id)
        if first_doc_id != doc_id:
            raise InvalidPageError(
                f"file {file_path!r} comes with two doc_ids ({first_doc_id!r}, {doc_id!r}) in "
                "one add call; add one version of a file at a time"
            )


# ---------------------------------------------------------------------- writing


def classify(
    pages: list[PreparedPage], stored_hashes: Mapping[str, str], page_ids: list[str]
) -> tuple[AddResult, list[PreparedPage]]:
    """Sort ``pages`` by the content hashes already stored: ``(result, pages to write)``.

    A page not stored is added, one stored with another hash replaced, one with the same hash
    unchanged (nothing to write). ``page_ids`` are the ids the caller gave, in order.
    """
    result = AddResult(page_ids=page_ids)
    to_write = []
    for page in pages:
        stored = stored_hashes.get(page.page_id)
        if stored == page.content_hash:
            result.unchanged.append(page.page_id)
            continue
        (result.added if stored is None else result.replaced).append(page.page_id)
        to_write.append(page)
    return result, to_write


def stale_condition(pages: list[PreparedPage]) -> str | None:
    """SQL for stored pages that the pages being added make obsolete.

    - An older version of a file: same ``file_path``, another ``doc_id``.
    - Pages of a document beyond its ``page_count`` (a document that lost pages).
    Neither can match a page of this call, so the merge never deletes what it writes.
    """
    clauses = []
    files = {page.fields["file_path"]: page.fields["doc_id"] for page in pages}
    for file_path, doc_id in files.items():
        if file_path is not None:
            clauses.append(
                f"(file_path = {quote_literal(file_path)} AND doc_id <> {quote_literal(doc_id)})"
            )
    counts = {
        page.fields["doc_id"]: page.fields["page_count"]
        for page in pages
        if page.fields["page_count"] is not None
    }
    for doc_id, page_count in counts.items():
        clauses.append(f"(doc_id = {quote_literal(doc_id)} AND page_number > {int(page_count)})")
    return " OR ".join(clauses) if clauses else None


def to_arrow(pages: list[PreparedPage], schema: pa.Schema) -> pa.Table:
    """The rows of ``pages`` as an Arrow table of ``schema`` (vectors cast to its dtype)."""
    columns: dict[str, Any] = {name: [page.fields[name] for page in pages] for name in PAGE_FIELDS}
    columns["image"] = [page.image for page in pages]
    columns["image_mimetype"] = [page.image_mimetype for page in pages]
    columns["text"] = [page.text for page in pages]
    columns["metadata"] = pa.array([page.metadata_json for page in pages], type=pa.json_(pa.utf8()))
    columns["content_hash"] = [page.content_hash for page in pages]
    counts = np.array([page.vectors.shape[0] for page in pages], dtype=np.int64)
    columns["n_vectors"] = pa.array(counts, type=pa.int32())
    columns[VECTOR_COLUMN] = _vectors_to_arrow(pages, counts, schema.field(VECTOR_COLUMN).type)
    arrays = [
        value if isinstance(value, pa.Array) else pa.array(value, type=schema.field(name).type)
        for name, value in columns.items()
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _vectors_to_arrow(
    pages: list[PreparedPage], counts: np.ndarray, vector_type: pa.DataType
) -> pa.ListArray:
    # Build the nested list from one flat buffer: no per-vector Python objects.
    value_type = vector_type.value_type.value_type
    flat = np.concatenate(
        [page.vectors for page in pages],
        axis=0,
        dtype=value_type.to_pandas_dtype(),
        casting="unsafe",  # values were range-checked in check_vectors
    ).reshape(-1)
    rows = pa.FixedSizeListArray.from_arrays(
        pa.array(flat, type=value_type), vector_type.value_type.list_size
    )
    offsets = np.zeros(len(pages) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), rows, type=vector_type)


# ---------------------------------------------------------------------- reading


def vectors_from_arrow(column: pa.ChunkedArray | pa.Array, dtype: Any) -> list[np.ndarray]:
    """Split a ``list<fixed_size_list<float>>`` column into one ``(n, dim)`` array per row.

    The arrays are views into one buffer, converted to ``dtype`` when given.
    """
    if isinstance(column, pa.ChunkedArray):
        column = pa.concat_arrays(column.chunks) if column.num_chunks != 1 else column.chunk(0)
    dim = column.type.value_type.list_size
    offsets = column.offsets.to_numpy()
    # `flatten()` honours the array's slice offset, so the values line up with offsets[0].
    values = column.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    if dtype is not None and values.dtype != np.dtype(dtype):
        values = values.astype(dtype)
    start = offsets[0]
    return [values[offsets[i] - start : offsets[i + 1] - start] for i in range(len(column))]


#: Per float dtype: the unsigned integer of its width, the mask of its magnitude bits, and
#: infinity's bits. A float is finite when its magnitude bits are below infinity's (NaN's and
#: infinity's exponents are all ones).
_FINITE_BELOW = {
    np.dtype(np.float16): (np.uint16, 0x7FFF, 0x7C00),
    np.dtype(np.float32): (np.uint32, 0x7FFF_FFFF, 0x7F80_0000),
}


def nonfinite_rows(column: pa.ChunkedArray | pa.Array) -> list[int]:
    """The rows of a vectors column holding a NaN or an infinity (empty for a sound column).

    One pass over the values, as fast as a copy, so every read of vectors can afford it.
    """
    if isinstance(column, pa.ChunkedArray):
        column = pa.concat_arrays(column.chunks) if column.num_chunks != 1 else column.chunk(0)
    dim = column.type.value_type.list_size
    values = column.flatten().flatten().to_numpy(zero_copy_only=False)
    if _all_finite(values):
        return []
    bad_vectors = np.flatnonzero(~np.isfinite(values.reshape(-1, dim)).all(axis=1))
    offsets = column.offsets.to_numpy()
    rows = np.searchsorted(offsets - offsets[0], bad_vectors, side="right") - 1
    return sorted({int(row) for row in rows})


def _all_finite(values: np.ndarray) -> bool:
    """Whether no value is NaN or infinite. For float16 and float32, by the largest magnitude
    of their bits as integers: 1,000 ColPali pages' float16 values in 0.08 s instead of
    ``np.isfinite``'s 0.18 s (float16 arithmetic in NumPy goes through float32)."""
    bits = _FINITE_BELOW.get(values.dtype)
    if bits is None or values.size == 0:
        return bool(np.isfinite(values).all())
    unsigned, magnitude, infinity = bits
    return int(np.bitwise_and(values.view(unsigned), magnitude).max()) < infinity


def row_to_node(row: dict[str, Any]) -> ImageNode:
    """A stored row (its node columns) as the ``ImageNode`` it was made from."""
    metadata: dict[str, Any] = {}
    for name, kind in PAGE_FIELDS.items():
        value = row.get(name)
        if value is None:
            continue
        if kind == "float" and float(value).is_integer():
            # dpi is stored as a float; a reader's 144 comes back as 144, not 144.0.
            value = int(value)
        metadata[name] = value
    if row.get("metadata"):
        metadata.update(json.loads(row["metadata"]))
    image = row.get("image")
    return ImageNode(
        id_=row["page_id"],
        text=row.get("text") or "",
        image=base64.b64encode(image).decode("ascii") if image else None,
        image_mimetype=row.get("image_mimetype"),
        metadata=metadata,
        excluded_llm_metadata_keys=list(HIDDEN_METADATA_KEYS),
        excluded_embed_metadata_keys=list(HIDDEN_METADATA_KEYS),
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=row["doc_id"])},
    )
