"""Full-text (BM25) search over the pages' stored text, with LanceDB's native FTS index.

A page's ``text`` column holds its text layer (``PDFPageReader(extract_text=True)``). The page
table gets an FTS index on it on its first text search (:func:`ensure_text_index`, one commit).
Not in the write path: an index commit racing another process's first pages made that
writer's commit fail on object storage. LanceDB searches rows added since the index was built
by a flat scan and leaves out deleted rows, so results follow every ingest and delete at once;
``LanceDBPageStore.optimize()`` folds new rows into the index.

Queries are matched term by term (``MatchQuery``): no query syntax, so any user text is safe.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lancedb.index import FTS
from lancedb.query import MatchQuery

from llama_index_vlm.errors import StoreError
from llama_index_vlm.store.filters import page_where

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from llama_index.core.vector_stores.types import MetadataFilters

    from llama_index_vlm.store.page_store import LanceDBPageStore

#: The name of the page table's full-text index.
TEXT_INDEX_NAME = "page_text_fts"
#: The column it indexes.
TEXT_COLUMN = "text"


def has_text_index(table: Any) -> bool:
    """Whether ``table`` (at its checked-out version) has the page text index."""
    return any(index.name == TEXT_INDEX_NAME for index in table.list_indices())


def ensure_text_index(table: Any) -> bool:
    """Create the text index on ``table`` unless it has one (a commit); True if created.

    Call it while holding the store's write lock.
    """
    if has_text_index(table):
        return False
    table.create_index(TEXT_COLUMN, config=FTS(), name=TEXT_INDEX_NAME)
    return True


def search_text(table: Any, query: str, k: int, where: str | None) -> list[tuple[str, float]]:
    """The best ``k`` ``(page_id, BM25 score)`` pairs for ``query`` among the pages matching
    the SQL ``where`` (all pages if None), best first; pages sharing no term are left out.
    """
    if not query.strip() or k < 1:
        return []
    search = table.search(MatchQuery(query, TEXT_COLUMN)).select(["page_id", "_score"]).limit(k)
    if where is not None:
        search = search.where(where, prefilter=True)
    return [(row["page_id"], float(row["_score"])) for row in search.to_list()]


def search_pages(
    store: LanceDBPageStore,
    query: str,
    k: int = 10,
    filters: MetadataFilters | None = None,
    *,
    version: int | None = None,
) -> list[tuple[str, float]]:
    """The best ``k`` ``(page_id, BM25 score)`` pairs for ``query`` in ``store``'s page text
    (pages matching ``filters``, at table ``version`` if given), best first.

    The first text search of a table creates its index (one commit; if a concurrent writer
    makes that fail, this search finds nothing by text and the next one tries again); a version
    older than the index is searched at the latest version, which holds every page it held.

    Example::

        search_pages(store, "XK-4471-B", k=5)  # [("3f2a...-p2", 2.68), ...]
    """
    pages = store._pages  # the store's table handle: this module is part of the store
    table = pages.open()
    if table is not None and not has_text_index(table):
        try:
            with pages.writing():
                ensure_text_index(table)
        except StoreError as error:
            logger.warning("no text index yet (%s); searching by image only this time", error)
            return []
    snapshot = pages.snapshot(version)
    if snapshot is not None and not has_text_index(snapshot):
        snapshot = table
    return [] if snapshot is None else search_text(snapshot, query, k, page_where(filters))
