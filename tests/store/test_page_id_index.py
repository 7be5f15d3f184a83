"""Compaction keeps a B-tree index on ``page_id``, and lookups by id stay right around it."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from page_documents import document_pages, seed_of, unit_vectors

from llama_index_vlm.store import LanceDBPageStore
from llama_index_vlm.store.compaction import PAGE_ID_INDEX, ensure_page_id_index


def add_documents(store: LanceDBPageStore, names: list[str], **page_fields) -> None:
    for name in names:
        pages = document_pages(name, 3, **page_fields)
        store.add(pages, [unit_vectors(seed_of(page.node_id), 5) for page in pages])


def page_id_indexes(store: LanceDBPageStore) -> list:
    return [
        index for index in store._pages.open().list_indices() if index.columns == [PAGE_ID_INDEX]
    ]


@pytest.fixture
def store(tmp_path) -> LanceDBPageStore:
    store = LanceDBPageStore(uri=str(tmp_path / "index"), auto_compact=False)
    add_documents(store, ["alpha", "beta", "gamma"])
    return store


def test_compaction_creates_one_btree_index_on_page_id(store):
    assert page_id_indexes(store) == []
    store.compact()
    (index,) = page_id_indexes(store)
    assert index.index_type == "BTree"
    store.compact()
    assert len(page_id_indexes(store)) == 1
    assert ensure_page_id_index(store._pages.open()) is False


def test_optimize_creates_it_too(store):
    store.optimize()
    assert len(page_id_indexes(store)) == 1


def test_lookups_by_id_see_pages_added_and_deleted_after_the_index(store):
    store.compact()
    add_documents(store, ["delta"])  # rows the index has not seen
    add_documents(store, ["alpha"], text="a new text layer")  # replaced rows
    store.delete("beta")
    wanted = ["delta-p2", "alpha-p1", "beta-p1", "gamma-p3", "delta-p1"]
    nodes = store.get_nodes(wanted)
    assert [node.node_id for node in nodes] == ["delta-p2", "alpha-p1", "gamma-p3", "delta-p1"]
    assert nodes[1].text == "a new text layer"
    assert sorted(store.page_ids()) == sorted(
        f"{name}-p{n}" for name in ("alpha", "gamma", "delta") for n in (1, 2, 3)
    )
    vectors = store.get_page_vectors(["delta-p2", "gamma-p3"])
    np.testing.assert_allclose(vectors[0], unit_vectors(seed_of("delta-p2"), 5), atol=1e-3)
    np.testing.assert_allclose(vectors[1], unit_vectors(seed_of("gamma-p3"), 5), atol=1e-3)
    store.compact()  # folds the new rows into the index; the answers stay the same
    assert [node.node_id for node in store.get_nodes(wanted)] == [
        "delta-p2",
        "alpha-p1",
        "gamma-p3",
        "delta-p1",
    ]


def test_an_empty_table_gets_no_index(tmp_path):
    store = LanceDBPageStore(uri=str(tmp_path / "index"), auto_compact=False)
    add_documents(store, ["alpha"])
    store.clear()
    assert ensure_page_id_index(store._pages.open()) is False
    store.compact()
    assert page_id_indexes(store) == []


def test_a_failure_to_index_is_logged_and_compaction_goes_on(store, monkeypatch, caplog):
    table = store._pages.open()

    def refuse(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(type(table), "create_index", refuse)
    with caplog.at_level(logging.WARNING, logger="llama_index_vlm.store.compaction"):
        report = store.compact()
    assert "no space left on device" in caplog.text
    assert report.fragments_after <= report.fragments_before
    assert len(store.page_ids()) == 9
