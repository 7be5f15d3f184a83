"""What the page store's calls report: the outcome of a write, and the documents it holds."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class AddResult:
    """What one :meth:`LanceDBPageStore.upsert_pages` call did.

    Attributes:
        page_ids: the ids of the pages given, in order.
        added: pages that were not in the store.
        replaced: pages whose content (image, text or metadata) changed.
        unchanged: pages already stored with the same content: nothing written for them.
        removed: stale pages deleted in the same commit: pages of an older version of the same
            file (same ``file_path``, another ``doc_id``) or beyond the document's new
            ``page_count``.
        version: the table version after the call (unchanged when nothing was written).
    """

    page_ids: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    version: int = 0

    @property
    def written(self) -> bool:
        """Whether the call committed a new table version."""
        return bool(self.added or self.replaced or self.removed)


@dataclass(frozen=True)
class StoredDocument:
    """One document in the store, as :meth:`LanceDBPageStore.documents` lists it.

    Attributes:
        doc_id: the document's id (the sha256 of its file, unless the user chose one).
        file_name: the file's name (None if its pages carry none).
        file_path: where the file was read from (None if its pages carry none).
        page_count: how many pages the document has (None if its pages do not say).
        pages: how many of its pages are stored.
    """

    doc_id: str
    file_name: str | None
    file_path: str | None
    page_count: int | None
    pages: int


def stored_documents(rows: Iterable[dict[str, Any]]) -> list[StoredDocument]:
    """One :class:`StoredDocument` per ``doc_id`` of page ``rows``, sorted by file path.

    Each row holds a page's ``doc_id``, ``file_name``, ``file_path`` and ``page_count``; a
    document's file is the one of its first row.

    >>> stored_documents([
    ...     {"doc_id": "b", "file_name": "b.pdf", "file_path": "/b.pdf", "page_count": 2},
    ...     {"doc_id": "a", "file_name": "a.pdf", "file_path": "/a.pdf", "page_count": 1},
    ...     {"doc_id": "b", "file_name": "b.pdf", "file_path": "/b.pdf", "page_count": 2},
    ... ])[1]
    StoredDocument(doc_id='b', file_name='b.pdf', file_path='/b.pdf', page_count=2, pages=2)
    """
    pages: dict[str, int] = {}
    first_row: dict[str, dict[str, Any]] = {}
    for row in rows:
        pages[row["doc_id"]] = pages.get(row["doc_id"], 0) + 1
        first_row.setdefault(row["doc_id"], row)
    documents = [
        StoredDocument(doc_id, row["file_name"], row["file_path"], row["page_count"], pages[doc_id])
        for doc_id, row in first_row.items()
    ]
    return sorted(documents, key=lambda document: (document.file_path or "", document.doc_id))
