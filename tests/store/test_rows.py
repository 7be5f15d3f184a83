"""Tests of ``llama_index_vlm.store.rows``: page nodes and vectors checked and turned into Arrow
rows, and rows back into nodes, without LanceDB.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from page_documents import DIM, document_pages, page_document, unit_vectors, vectors_for

from llama_index_vlm.errors import InvalidPageError
from llama_index_vlm.pages import HIDDEN_METADATA_KEYS, page_content_hash
from llama_index_vlm.store import page_schema
from llama_index_vlm.store.rows import (
    check_vectors,
    classify,
    deduplicate,
    nonfinite_rows,
    prepare_page,
    prepare_pages,
    row_to_node,
    stale_condition,
    to_arrow,
    vectors_from_arrow,
)
from llama_index_vlm.store.schema import VECTOR_COLUMN


def _prepared(pages, dtype=np.float16):
    return prepare_pages(pages, vectors_for(pages), np.dtype(dtype))


def test_a_prepared_page_holds_its_typed_fields_text_and_user_metadata():
    page = page_document("d1", 2, 3, dpi=144.0, author="O'Neil")
    prepared = prepare_page(page, unit_vectors(1), np.float16)
    assert prepared.page_id == "d1-p2"
    assert prepared.fields["page_number"] == 2 and prepared.fields["dpi"] == 144.0
    assert prepared.text == "page 2 of d1"
    assert json.loads(prepared.metadata_json) == {"author": "O'Neil"}


def test_a_prepared_page_carries_the_content_hash_of_its_node():
    page = page_document("d1", 1)
    assert prepare_page(page, unit_vectors(1), np.float16).content_hash == page_content_hash(page)


def test_checked_vectors_are_neither_copied_nor_cast():
    vectors = unit_vectors(1)
    assert check_vectors("d1-p1", vectors, np.float16) is vectors


def test_values_that_fit_float32_but_not_float16_are_refused_for_float16_only():
    vectors = np.full((2, DIM), 1e6, dtype=np.float32)
    assert check_vectors("d1-p1", vectors, np.float32) is vectors
    with pytest.raises(InvalidPageError, match="too large for float16"):
        check_vectors("d1-p1", vectors, np.float16)


def test_deduplicate_keeps_one_of_identical_pages():
    page = page_document("d1", 1)
    unique = deduplicate(_prepared([page, page]))
    assert [prepared.page_id for prepared in unique] == ["d1-p1"]


def test_deduplicate_refuses_one_document_with_two_page_counts():
    pages = [page_document("d1", 1, 3), page_document("d1", 2, 4)]
    with pytest.raises(InvalidPageError, match="two page_counts \\(3, 4\\)"):
        deduplicate(_prepared(pages))


def test_classify_sorts_pages_by_the_stored_hashes():
    pages = _prepared(document_pages("d1", 3))
    stored = {pages[0].page_id: pages[0].content_hash, pages[1].page_id: "another hash"}
    result, to_write = classify(pages, stored, ["d1-p1", "d1-p2", "d1-p3", "d1-p1"])
    assert (result.unchanged, result.replaced, result.added) == (["d1-p1"], ["d1-p2"], ["d1-p3"])
    assert [page.page_id for page in to_write] == ["d1-p2", "d1-p3"]
    assert result.page_ids == ["d1-p1", "d1-p2", "d1-p3", "d1-p1"]


def test_stale_condition_selects_other_versions_of_the_file_and_pages_beyond_the_count():
    pages = _prepared([page_document("d'1", 1, 2, file_path="/docs/o'brien.pdf")])
    assert stale_condition(pages) == (
        "(file_path = '/docs/o''brien.pdf' AND doc_id <> 'd''1') OR "
        "(doc_id = 'd''1' AND page_number > 2)"
    )


def test_a_page_without_file_or_page_count_makes_nothing_stale():
    pages = _prepared([page_document("d1", 1, file_path="/x.pdf")])
    pages[0].fields.update(file_path=None, page_count=None)
    assert stale_condition(pages) is None


def test_float32_vectors_survive_arrow_exactly():
    pages = _prepared(document_pages("d1", 3), np.float32)
    table = to_arrow(pages, page_schema(DIM, "float32"))
    assert table.column("n_vectors").to_pylist() == [len(page.vectors) for page in pages]
    for page, vectors in zip(pages, vectors_from_arrow(table[VECTOR_COLUMN], None), strict=True):
        np.testing.assert_array_equal(vectors, page.vectors)


def test_vectors_are_cast_to_the_schemas_dtype():
    pages = _prepared(document_pages("d1", 2))
    column = to_arrow(pages, page_schema(DIM, "float16"))[VECTOR_COLUMN]
    (first, _) = vectors_from_arrow(column, None)
    assert first.dtype == np.float16
    np.testing.assert_allclose(first.astype(np.float32), pages[0].vectors, atol=1e-3)


def test_vectors_from_a_slice_of_a_column_line_up_with_its_rows():
    pages = _prepared(document_pages("d1", 3), np.float32)
    column = to_arrow(pages, page_schema(DIM, "float32"))[VECTOR_COLUMN].combine_chunks()
    (middle,) = vectors_from_arrow(column.slice(1, 1), np.float64)
    assert middle.dtype == np.float64
    np.testing.assert_array_equal(middle, pages[1].vectors.astype(np.float64))


def test_a_row_becomes_the_node_it_was_made_from():
    page = page_document("d1", 1, tags=["a"])
    table = to_arrow(_prepared([page]), page_schema(DIM))
    node = row_to_node(table.to_pylist()[0])
    assert node.node_id == "d1-p1" and node.ref_doc_id == "d1"
    assert node.metadata == page.metadata
    assert isinstance(node.metadata["dpi"], int)  # a reader's 144 stays 144, not 144.0
    assert node.image == page.image and node.text == page.text


def test_a_stored_node_hides_ids_and_sizes_from_models():
    table = to_arrow(_prepared([page_document("d1", 1)]), page_schema(DIM))
    node = row_to_node(table.to_pylist()[0])
    assert node.excluded_llm_metadata_keys == list(HIDDEN_METADATA_KEYS)
    assert node.excluded_embed_metadata_keys == list(HIDDEN_METADATA_KEYS)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, None], ids=str)
def test_nonfinite_rows_are_the_rows_with_a_nan_or_an_infinity(dtype, bad):
    import pyarrow as pa

    info = np.finfo(dtype)
    # The extremes of finite values, which must not count: the largest and smallest normal
    # numbers, the smallest subnormal one, zeros of both signs.
    pages = [
        np.array([[info.max, -info.max], [info.tiny, -info.smallest_subnormal]], dtype=dtype),
        np.array([[0.0, -0.0]], dtype=dtype),
        np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=dtype),
    ]
    if bad is not None:
        pages[2][1, 0] = bad
    value_type = pa.from_numpy_dtype(np.dtype(dtype))
    column = pa.array([page.tolist() for page in pages], pa.list_(pa.list_(value_type, 2)))
    assert nonfinite_rows(column) == ([] if bad is None else [2])
    assert nonfinite_rows(column.slice(1)) == ([] if bad is None else [1])
