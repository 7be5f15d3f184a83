"""Storage idioms: storage contexts, ``from_vector_store``, ``load_index_from_storage``,
``IngestionPipeline``; LlamaIndex's single-vector paths raise naming ``VisualDocumentIndex``.
"""

from __future__ import annotations

import pytest
from llama_index.core import (
    MockEmbedding,
    StorageContext,
    VectorStoreIndex,
    load_index_from_storage,
)
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.vector_stores.types import VectorStoreQuery
from page_documents import document_pages

from llama_index_vlm import LanceDBPageStore, PageVectorTransform, VisualDocumentIndex
from llama_index_vlm.errors import InvalidRequestError
from llama_index_vlm.store.carried import PAGE_VECTORS_FINGERPRINT_KEY


@pytest.fixture
def pages():
    """Three in-memory page documents (noise images)."""
    return document_pages("doc", 3)


@pytest.fixture
def store(tmp_path):
    return LanceDBPageStore(uri=str(tmp_path / "pages"))


def test_from_documents_writes_to_the_storage_context_s_store(
    pages, store, colpali_encoder, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    index = VisualDocumentIndex.from_documents(
        pages,
        encoder=colpali_encoder,
        storage_context=StorageContext.from_defaults(vector_store=store),
        show_progress=False,
    )
    assert index.store is store and store.count() == 3
    assert not (tmp_path / "vlm_index").exists()  # the default store was never opened


def test_a_storage_context_without_a_page_store_is_refused(pages, colpali_encoder):
    with pytest.raises(InvalidRequestError, match="LanceDBPageStore"):
        VisualDocumentIndex.from_documents(
            pages, encoder=colpali_encoder, storage_context=StorageContext.from_defaults()
        )


def test_from_vector_store_opens_the_stored_pages(idiom_index, colpali_encoder):
    reopened = VisualDocumentIndex.from_vector_store(
        LanceDBPageStore(uri=idiom_index.store.uri), encoder=colpali_encoder
    )
    assert len(reopened.as_retriever(similarity_top_k=3).retrieve("revenue")) == 3


def test_a_persisted_index_loads_back_with_load_index_from_storage(
    idiom_index, colpali_encoder, tmp_path
):
    idiom_index.storage_context.persist(persist_dir=str(tmp_path / "storage"))
    context = StorageContext.from_defaults(persist_dir=str(tmp_path / "storage"))
    loaded = load_index_from_storage(context, encoder=colpali_encoder)
    assert isinstance(loaded, VisualDocumentIndex)
    assert loaded.store.uri == idiom_index.store.uri and loaded.store.count() == 3
    assert len(loaded.as_retriever(similarity_top_k=2).retrieve("revenue")) == 2


def test_load_index_from_storage_takes_the_store_given_in_the_context(
    idiom_index, colpali_encoder, tmp_path
):
    idiom_index.storage_context.persist(persist_dir=str(tmp_path / "storage"))
    store = LanceDBPageStore(uri=idiom_index.store.uri)
    context = StorageContext.from_defaults(
        persist_dir=str(tmp_path / "storage"), vector_store=store
    )
    assert load_index_from_storage(context, encoder=colpali_encoder).store is store


def test_vector_store_index_over_the_page_store_raises_naming_the_page_index(idiom_index):
    index = VectorStoreIndex.from_vector_store(idiom_index.store, embed_model=MockEmbedding(8))
    with pytest.raises(InvalidRequestError, match="VisualDocumentIndex.from_vector_store"):
        index.as_retriever().retrieve("revenue")


def test_vector_store_index_inserting_into_the_page_store_raises(pages, store):
    context = StorageContext.from_defaults(vector_store=store)
    with pytest.raises(InvalidRequestError, match="single-vector embedding"):
        VectorStoreIndex(pages, storage_context=context, embed_model=MockEmbedding(8))
    assert store.count() == 0


def test_a_single_vector_store_query_raises_naming_the_page_index(idiom_index):
    with pytest.raises(InvalidRequestError, match="VisualDocumentIndex"):
        idiom_index.store.query(VectorStoreQuery(query_embedding=[0.1] * 128))


def test_an_empty_node_ids_list_restricts_nothing(idiom_index, colpali_encoder):
    (query_vectors,) = colpali_encoder.embed_queries(["revenue"], show_progress=False)
    query = VectorStoreQuery(
        query_embedding=query_vectors.tolist(), node_ids=[], similarity_top_k=3
    )
    assert len(idiom_index.store.query(query).ids) == 3


def test_ingestion_pipeline_with_the_page_transform_stores_the_pages(pages, store, colpali_encoder):
    pipeline = IngestionPipeline(
        transformations=[PageVectorTransform(colpali_encoder)], vector_store=store
    )
    pipeline.run(documents=pages)
    assert sorted(store.page_ids()) == sorted(page.node_id for page in pages)
    assert store.fingerprint["model_class"] == colpali_encoder.fingerprint["model_class"]
    stored = store.get_nodes()
    assert all(PAGE_VECTORS_FINGERPRINT_KEY not in node.metadata for node in stored)


def test_the_page_transform_leaves_the_page_s_vectors_on_the_node(pages, colpali_encoder):
    (node,) = PageVectorTransform(colpali_encoder)(pages[:1])
    (expected,) = colpali_encoder.embed_images([_image(pages[0])], show_progress=False)
    assert len(node.embedding) == expected.size
    assert PAGE_VECTORS_FINGERPRINT_KEY in node.excluded_llm_metadata_keys


def test_running_the_pipeline_again_writes_nothing(pages, store, colpali_encoder):
    transform = PageVectorTransform(colpali_encoder)
    IngestionPipeline(transformations=[transform], vector_store=store).run(documents=pages)
    version = store.version
    IngestionPipeline(transformations=[transform], vector_store=store).run(documents=pages)
    assert store.version == version


def _image(node):
    from llama_index_vlm.pages import page_image

    return page_image(node)
