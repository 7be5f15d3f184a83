"""Reading a LanceDB page table: columns of selected pages, page vectors, and LanceDB's own
multi-vector search. Page-id lookups go :data:`LOOKUP_CHUNK` ids at a time.

The functions take an open LanceDB table (or a snapshot of one); the page store picks it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from llama_index.core.vector_stores.types import (
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)

from llama_index_vlm.errors import (
    DamagedStoreError,
    InvalidRequestError,
    ModelMismatchError,
    PageNotFoundError,
)
from llama_index_vlm.store.filters import page_where
from llama_index_vlm.store.rows import nonfinite_rows, row_to_node, vectors_from_arrow
from llama_index_vlm.store.schema import NODE_COLUMNS, VECTOR_COLUMN, schema_dim, schema_fingerprint

# Page ids per `page_id IN (...)` clause: keeps the SQL text small for big lookups.
LOOKUP_CHUNK = 512


def select(
    table: Any, columns: list[str], where: str | None, *, with_row_ids: bool = False
) -> pa.Table:
    """``columns`` of every row of ``table`` matching the SQL ``where`` (all rows if None),
    and each row's address in a ``_rowid`` column if ``with_row_ids``."""
    query = table.search().select(columns).with_row_id(with_row_ids).limit(None)
    if where is not None:
        query = query.where(where)
    return query.to_arrow()


def select_pages(
    table: Any,
    columns: list[str],
    filters: MetadataFilters | None = None,
    *,
    page_ids: Sequence[str] | None = None,
) -> pa.Table:
    """``columns`` of the pages matching ``filters`` and, if given, among ``page_ids``.

    Page ids are looked up :data:`LOOKUP_CHUNK` at a time; rows come in no particular order.
    """
    if page_ids is None:
        return select(table, columns, page_where(filters))
    page_ids = list(page_ids)
    starts = range(0, max(len(page_ids), 1), LOOKUP_CHUNK)
    return pa.concat_tables(
        select(table, columns, page_where(filters, node_ids=page_ids[start : start + LOOKUP_CHUNK]))
        for start in starts
    )


def metadata_keys(table: Any) -> list[str]:
    """The keys of the users' own metadata (the ``metadata`` column) on any row, sorted."""
    keys: set[str] = set()
    # Pages of one document usually share their metadata: parse each distinct value once.
    for raw in set(select(table, ["metadata"], None).column("metadata").to_pylist()):
        keys.update(json.loads(raw) if raw else ())
    return sorted(keys)


def column_map(rows: pa.Table, key: str, value: str) -> dict[Any, Any]:
    """``{row[key]: row[value]}`` over the rows of an Arrow table."""
    return dict(zip(rows.column(key).to_pylist(), rows.column(value).to_pylist(), strict=True))


def iter_vectors(
    table: Any, where: str | None, batch_size: int, dtype: Any
) -> Iterator[tuple[list[str], list[np.ndarray]]]:
    """``(page_ids, vectors)`` of the rows matching ``where``, ``batch_size`` rows at a time."""
    query = table.search().select(["page_id", VECTOR_COLUMN]).limit(None)
    if where is not None:
        query = query.where(where)
    for batch in query.to_batches(batch_size):
        if batch.num_rows:
            page_ids = batch.column("page_id").to_pylist()
            yield page_ids, checked_vectors(table, page_ids, batch.column(VECTOR_COLUMN), dtype)


def page_vectors(
    table: Any | None, page_ids: list[str], dtype: Any, rows: pa.Table | None = None
) -> list[np.ndarray]:
    """The vectors of ``page_ids``, in that order (``table`` None: no page is stored).

    ``rows``: the pages' ``page_id`` and vector columns, already read from ``table`` (e.g.
    by row address); by default they are looked up by page id.

    Raises:
        PageNotFoundError: some page ids are not stored (a ``KeyError`` that lists them).
    """
    found: dict[str, np.ndarray] = {}
    if table is not None and page_ids:
        if rows is None:
            rows = select_pages(table, ["page_id", VECTOR_COLUMN], page_ids=page_ids)
        row_ids = rows.column("page_id").to_pylist()
        vectors = checked_vectors(table, row_ids, rows.column(VECTOR_COLUMN), dtype)
        found = dict(zip(row_ids, vectors, strict=True))
    missing = [page_id for page_id in page_ids if page_id not in found]
    if missing:
        raise PageNotFoundError(
            f"pages not in the store: {missing[:10]}{'...' if len(missing) > 10 else ''}",
            missing,
        )
    return [found[page_id] for page_id in page_ids]


def checked_vectors(
    table: Any, page_ids: list[str], column: pa.ChunkedArray | pa.Array, dtype: Any
) -> list[np.ndarray]:
    """The vectors of a column read for ``page_ids`` (:func:`vectors_from_arrow`), once they
    are known to be finite: a NaN in a page's vectors made a search crash or silently drop it.

    Raises:
        DamagedStoreError: some pages' vectors hold NaN or infinity; names their documents.
    """
    damaged = nonfinite_rows(column)
    if damaged:
        raise damaged_vectors_error(table, [page_ids[row] for row in damaged])
    return vectors_from_arrow(column, dtype)


def damaged_vectors_error(table: Any, page_ids: list[str]) -> DamagedStoreError:
    """The error for pages whose stored vectors are not finite: which documents, and how to
    repair them (delete them and index their files again).
    """
    rows = select_pages(table, ["page_id", "doc_id", "file_path"], page_ids=page_ids).to_pylist()
    files = {row["doc_id"]: row["file_path"] or row["doc_id"] for row in rows}
    listing = "; ".join(f"{file} (doc id {doc_id})" for doc_id, file in sorted(files.items()))
    return DamagedStoreError(
        f"the page store is damaged: the stored vectors of {len(page_ids)} page(s) are not "
        f"finite numbers (NaN or infinity), so they cannot be ranked. Damaged documents: "
        f"{listing}. Repair: delete them (`llama-index-vlm delete DOC_ID`, or "
        "store.delete(doc_id)) and index their files again",
        page_ids,
        sorted(files),
    )


def query_vectors(query: VectorStoreQuery) -> np.ndarray:
    """The query's multi-vector as a ``(n, dim)`` float32 array.

    Raises:
        InvalidRequestError: no query vectors, a single (1-D) vector, or a mode other than the
            default.
    """
    if query.mode != VectorStoreQueryMode.DEFAULT:
        raise InvalidRequestError(
            f"LanceDBPageStore supports only the default query mode, not {query.mode}"
        )
    if query.query_embedding is None:
        raise InvalidRequestError(
            "LanceDBPageStore.query needs query_embedding: the query's multi-vectors"
        )
    vectors = np.asarray(query.query_embedding, dtype=np.float32)
    if vectors.ndim != 2:
        raise InvalidRequestError(SINGLE_VECTOR_QUERY)
    return vectors


#: Why a page store cannot answer a single-vector query, and what to use instead.
SINGLE_VECTOR_QUERY = (
    "LanceDBPageStore holds ColPali multi-vectors and is searched with a query's multi-vector "
    "((n_tokens, dim), from ColPaliEncoder.embed_queries); a single vector comes from a "
    "single-vector embedding model, as VectorStoreIndex uses one. Open the store with "
    "VisualDocumentIndex.from_vector_store(store, encoder=ColPaliEncoder.from_pretrained(...)) "
    "and query it through index.as_retriever() or index.as_query_engine(llm=vlm)"
)


def multivector_search(
    table: Any, vectors: np.ndarray, query: VectorStoreQuery
) -> VectorStoreQueryResult:
    """LanceDB's own exhaustive MaxSim search for ``vectors``, honouring the query's filters,
    ``doc_ids``, ``node_ids`` (an empty list restricts nothing, as for LlamaIndex's stores that
    keep their nodes) and ``similarity_top_k``.

    Raises:
        ModelMismatchError: the vectors' dimension is not the table's.
    """
    schema = table.schema
    if vectors.ndim != 2 or vectors.shape[1] != schema_dim(schema):
        raise ModelMismatchError(
            f"query vectors have shape {vectors.shape}, the store holds "
            f"{schema_dim(schema)}-dimensional vectors from {schema_fingerprint(schema)}"
        )
    search = (
        table.search(vectors, vector_column_name=VECTOR_COLUMN)
        # LanceDB's multi-vector search supports cosine only; its distance is
        # n_query_vectors - MaxSim.
        .distance_type("cosine")
        .select([*NODE_COLUMNS, "_distance"])
        .limit(query.similarity_top_k)
    )
    # An empty node_ids means no restriction: LlamaIndex's VectorIndexRetriever sends the ids
    # of its index struct, which is empty for stores that keep their nodes (stores_text).
    where = page_where(query.filters, node_ids=query.node_ids or None, doc_ids=query.doc_ids)
    if where is not None:
        search = search.where(where, prefilter=True)
    rows = search.to_arrow().to_pylist()
    damaged = [row["page_id"] for row in rows if not np.isfinite(row["_distance"])]
    if damaged:
        raise damaged_vectors_error(table, damaged)
    if len(rows) < min(query.similarity_top_k, table.count_rows(where)):
        # LanceDB leaves out pages whose vectors are NaN: find them, and say so.
        for _ in iter_vectors(table, where, 256, None):
            pass
    nodes = [row_to_node(row) for row in rows]
    return VectorStoreQueryResult(
        nodes=nodes,
        similarities=[len(vectors) - float(row["_distance"]) for row in rows],
        ids=[node.node_id for node in nodes],
    )
