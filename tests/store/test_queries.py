"""Tests of ``llama_index_vlm.store.queries``: reads from a page table, on a real LanceDB table."""

from __future__ import annotations

import lancedb
import numpy as np
import pytest
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode
from page_documents import DIM, document_pages, vectors_for

from llama_index_vlm.errors import InvalidRequestError, PageNotFoundError
from llama_index_vlm.store import LanceDBPageStore, queries

PAGES = document_pages("d1", 5)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("queries") / "index")
    LanceDBPageStore(uri=uri).add(PAGES, page_vectors=vectors_for(PAGES))
    return lancedb.connect(uri).open_table("pages")


def test_page_lookups_span_several_chunks(table, monkeypatch):
    monkeypatch.setattr(queries, "LOOKUP_CHUNK", 2)
    page_ids = [page.node_id for page in PAGES] + ["missing"]
    rows = queries.select_pages(table, ["page_id"], page_ids=page_ids)
    assert sorted(rows.column("page_id").to_pylist()) == sorted(page_ids[:-1])


def test_a_lookup_of_no_page_ids_finds_no_rows(table):
    assert queries.select_pages(table, ["page_id"], page_ids=[]).num_rows == 0


def test_page_vectors_come_in_the_order_asked(table):
    page_ids = ["d1-p3", "d1-p1"]
    expected = vectors_for([PAGES[2], PAGES[0]])
    for vectors, original in zip(
        queries.page_vectors(table, page_ids, np.float32), expected, strict=True
    ):
        np.testing.assert_allclose(vectors, original, atol=1e-3)


def test_page_vectors_of_missing_pages_name_them(table):
    with pytest.raises(PageNotFoundError, match="d1-p9") as raised:
        queries.page_vectors(table, ["d1-p1", "d1-p9"], None)
    assert raised.value.page_ids == ["d1-p9"]


def test_no_table_holds_no_page(table):
    with pytest.raises(PageNotFoundError):
        queries.page_vectors(None, ["d1-p1"], None)


def test_a_query_multi_vector_is_read_as_float32_rows():
    vectors = queries.query_vectors(VectorStoreQuery(query_embedding=[[0.5] * DIM] * 2))
    assert vectors.shape == (2, DIM) and vectors.dtype == np.float32


def test_a_single_vector_query_is_refused_naming_the_visual_document_index():
    with pytest.raises(InvalidRequestError, match="VisualDocumentIndex.from_vector_store"):
        queries.query_vectors(VectorStoreQuery(query_embedding=[0.5] * DIM))


def test_a_query_mode_other_than_the_default_is_refused():
    query = VectorStoreQuery(query_embedding=[0.5] * DIM, mode=VectorStoreQueryMode.HYBRID)
    with pytest.raises(InvalidRequestError, match="default query mode"):
        queries.query_vectors(query)
