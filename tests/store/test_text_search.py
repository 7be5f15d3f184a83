"""The page table's full-text index and BM25 search (llama_index_vlm.store.text_search)."""

from __future__ import annotations

import pytest
from llama_index.core.vector_stores.types import MetadataFilters
from page_documents import page_document, vectors_for

from llama_index_vlm.store import LanceDBPageStore
from llama_index_vlm.store.text_search import (
    TEXT_INDEX_NAME,
    ensure_text_index,
    has_text_index,
    search_pages,
)


@pytest.fixture
def store(tmp_path):
    store = LanceDBPageStore(uri=str(tmp_path / "pages"))
    pages = [
        page_document("a", 1, 2, text="Pump XK-4471-B, spare part"),
        page_document("a", 2, 2, text="Revenue grew in 2023"),
        page_document("b", 1, 1, text="Another XK-4471-B mention"),
    ]
    store.add(pages, page_vectors=vectors_for(pages))
    return store


def test_the_first_text_search_gives_the_page_table_its_index(store):
    table = store.client.open_table("pages")
    assert not has_text_index(table)
    search_pages(store, "revenue")
    assert [index.name for index in table.list_indices()] == [TEXT_INDEX_NAME]


def test_search_pages_ranks_the_pages_holding_the_terms(store):
    hits = search_pages(store, "XK-4471-B pump", k=5)
    assert [page_id for page_id, _ in hits] == ["a-p1", "b-p1"]
    assert hits[0][1] > hits[1][1] > 0


def test_search_pages_honours_filters(store):
    filters = MetadataFilters.from_dicts([{"key": "doc_id", "value": "b"}])
    assert [page_id for page_id, _ in search_pages(store, "XK-4471-B", filters=filters)] == ["b-p1"]


def test_search_pages_sees_pages_added_and_deleted_since_the_index(store):
    search_pages(store, "XK-4471-B")  # builds the index over the first three pages
    extra = [page_document("c", 1, 1, text="XK-4471-B again")]
    store.add(extra, page_vectors=vectors_for(extra))
    store.delete("a")
    assert sorted(page_id for page_id, _ in search_pages(store, "XK-4471-B")) == ["b-p1", "c-p1"]


def test_search_pages_at_an_older_version(store):
    search_pages(store, "XK-4471-B")
    version = store.version
    store.delete("b")
    hits = search_pages(store, "XK-4471-B", version=version)
    assert sorted(page_id for page_id, _ in hits) == ["a-p1", "b-p1"]


@pytest.mark.parametrize("query", ["", "   ", 'AND OR "(*', "the"])
def test_queries_without_searchable_terms_find_nothing_and_never_fail(store, query):
    assert search_pages(store, query) == []


def test_a_store_opened_again_searches_with_the_index_made_before(store):
    search_pages(store, "revenue")
    reopened = LanceDBPageStore(uri=store.uri)
    assert [page_id for page_id, _ in search_pages(reopened, "revenue")] == ["a-p2"]


def test_ensure_text_index_is_idempotent(store):
    table = store.client.open_table("pages")
    assert ensure_text_index(table) is True and ensure_text_index(table) is False
