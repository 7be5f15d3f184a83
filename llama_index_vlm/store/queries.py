"""Reading a LanceDB page table: columns of selected pages, page vectors, and LanceDB's own
multi-vector search. Page-id lookups go :data:`LOOKUP_CHUNK` ids at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from llama_index.core.vector_stores.types import MetadataFilters

from llama_index_vlm.store.filters import page_where
from llama_index_vlm.store.rows import vectors_from_arrow
from llama_index_vlm.store.schema import NODE_COLUMNS, VECTOR_COLUMN

# Page ids per `page_id IN (...)` clause: keeps the SQL text small for big lookups.
LOOKUP_CHUNK = 512


def select(table: Any, columns: list[str], where: str | None) -> pa.Table:
    """``columns`` of every row of ``table`` matching the SQL ``where`` (all rows if None)."""
    query = table.search().select(columns).limit(None)
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
            yield page_ids, vectors_from_arrow(batch.column(VECTOR_COLUMN), dtype)


def vectors_by_id(table: Any, page_ids: Sequence[str], dtype: Any) -> dict[str, np.ndarray]:
    """``page_id -> vectors`` of those of ``page_ids`` that are stored."""
    rows = select_pages(table, ["page_id", VECTOR_COLUMN], page_ids=page_ids)
    vectors = vectors_from_arrow(rows.column(VECTOR_COLUMN), dtype)
    return dict(zip(rows.column("page_id").to_pylist(), vectors, strict=True))


def nearest_pages(
    table: Any, query_vectors: np.ndarray, where: str | None, limit: int
) -> list[tuple[dict[str, Any], float]]:
    """``(row, MaxSim score)`` of the ``limit`` best pages among those matching ``where``, by
    LanceDB's own exhaustive multi-vector search; rows hold the :data:`NODE_COLUMNS`.
    """
    search = (
        table.search(query_vectors, vector_column_name=VECTOR_COLUMN)
        # LanceDB's multi-vector search supports cosine only; its distance is
        # n_query_vectors - MaxSim.
        .distance_type("cosine")
        .select([*NODE_COLUMNS, "_distance"])
        .limit(limit)
    )
    if where is not None:
        search = search.where(where, prefilter=True)
    rows = search.to_arrow().to_pylist()
    return [(row, len(query_vectors) - float(row.pop("_distance"))) for row in rows]
