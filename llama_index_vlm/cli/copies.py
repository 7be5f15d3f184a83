"""Copies: files with the same bytes as a stored document, under another name.

A document's id is the sha256 of its file, so a byte-identical copy (``R-FAQ (1).pdf`` beside
``R-FAQ.pdf``) is the same document: its pages are stored once, under the first file's name,
and neither encoded nor stored again. The command line records the copy's path here, so that
``info`` lists it, and ``delete``, ``maps --page`` and ``--filter file_name=...`` find the
document by either name.

The record is a small LanceDB table beside the page table (``<table>_copies``: ``doc_id``,
``file_path``, ``file_name``), in the same database, so it travels with the index wherever
LanceDB opens it (a directory or ``s3://``). It is created by the first copy.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from llama_index_vlm.store import LanceDBPageStore

_SUFFIX = "_copies"


class FileCopies:
    """The copies recorded for the documents of one page store."""

    def __init__(self, store: LanceDBPageStore):
        self._connection = store.client
        self._name = f"{store.table_name}{_SUFFIX}"
        self._table: Any | None = None

    def _open(self) -> Any | None:
        if self._table is None:
            try:
                self._table = self._connection.open_table(self._name)
            except (ValueError, FileNotFoundError):  # no copy recorded yet
                return None
        return self._table

    def _rows(self, where: str | None = None) -> list[dict[str, str]]:
        table = self._open()
        if table is None:
            return []
        query = table.search().select(["doc_id", "file_path", "file_name"]).limit(None)
        return (query.where(where) if where else query).to_arrow().to_pylist()

    def add(self, doc_id: str, file_path: str) -> None:
        """Record ``file_path`` as a copy of document ``doc_id`` (once per path)."""
        import pyarrow as pa

        row = pa.table(
            {
                "doc_id": [doc_id],
                "file_path": [file_path],
                "file_name": [os.path.basename(file_path)],
            }
        )
        table = self._open()
        if table is None:
            self._table = self._connection.create_table(self._name, row)
            return
        (
            table.merge_insert("file_path")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(row)
        )

    def by_document(self) -> dict[str, list[str]]:
        """The copies' paths by doc id, sorted."""
        copies: dict[str, list[str]] = defaultdict(list)
        for row in self._rows():
            copies[row["doc_id"]].append(row["file_path"])
        return {doc_id: sorted(paths) for doc_id, paths in copies.items()}

    def documents_named(self, name: str) -> list[str]:
        """The doc ids that have a copy at path ``name`` or with file name ``name``."""
        from llama_index_vlm.store.filters import quote_literal

        path = os.path.abspath(name)
        where = f"file_path = {quote_literal(path)} OR file_name = {quote_literal(name)}"
        return sorted({row["doc_id"] for row in self._rows(where)})

    def forget(self, doc_ids: list[str] | None = None, paths: list[str] | None = None) -> None:
        """Drop the copies of ``doc_ids`` (deleted documents) and at ``paths`` (pruned files)."""
        from llama_index_vlm.store.filters import quote_literal

        table = self._open()
        conditions = [
            f"{column} IN ({', '.join(quote_literal(value) for value in values)})"
            for column, values in (("doc_id", doc_ids), ("file_path", paths))
            if values
        ]
        if table is not None and conditions:
            table.delete(" OR ".join(conditions))
