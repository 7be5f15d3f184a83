"""ImageSearchRetriever: text -> images, image -> images, and the ITM rerank."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.schema import QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters

from llama_index_vlm import ImageSearchRetriever
from llama_index_vlm.errors import EmptyInputError, ModelMismatchError, UsageError
from llama_index_vlm.image_search.indexing import index_images
from llama_index_vlm.image_search.store import LanceDBImageStore
from llama_index_vlm.images import decode_image


@pytest.fixture
def indexed(photos, blip2_encoder, tmp_path):
    store = LanceDBImageStore(uri=str(tmp_path / "index"))
    index_images(photos, blip2_encoder, store, show_progress=False)
    return store


def test_a_text_query_returns_the_top_k_best_first(blip2_encoder, indexed):
    hits = ImageSearchRetriever(blip2_encoder, indexed, similarity_top_k=3).retrieve("a photo")
    scores = [hit.score for hit in hits]
    assert len(hits) == 3 and scores == sorted(scores, reverse=True)


def test_the_scores_are_the_cosines_of_the_vectors(blip2_encoder, indexed):
    (hit,) = ImageSearchRetriever(blip2_encoder, indexed, similarity_top_k=1).retrieve("a photo")
    text = blip2_encoder.embed_texts(["a photo"])[0]
    image = blip2_encoder.embed_images([decode_image(hit.node.image)])[0]
    assert hit.score == pytest.approx(float(text @ image), abs=1e-4)


def test_an_image_query_finds_that_image_first(blip2_encoder, indexed, photos):
    retriever = ImageSearchRetriever(blip2_encoder, indexed, similarity_top_k=2)
    hits = retriever.retrieve(QueryBundle(query_str="", image_path=str(photos / "photo3.jpg")))
    assert hits[0].node.metadata["file_name"] == "photo3.jpg"


def test_the_itm_rerank_scores_are_the_matching_heads(blip2_encoder, indexed):
    retriever = ImageSearchRetriever(blip2_encoder, indexed, similarity_top_k=6, itm_rerank=True)
    hits = retriever.retrieve("a photo")
    expected = blip2_encoder.match_scores("a photo", [decode_image(hit.node.image) for hit in hits])
    assert [hit.score for hit in hits] == pytest.approx(expected.tolist(), abs=1e-6)
    assert [hit.score for hit in hits] == sorted(hit.score for hit in hits)[::-1]


def test_the_itm_rerank_needs_a_matching_head(siglip_encoder, tmp_path):
    with pytest.raises(UsageError, match="has no image-text matching head"):
        ImageSearchRetriever(siglip_encoder, LanceDBImageStore(uri=str(tmp_path)), itm_rerank=True)


def test_filters_narrow_the_search(blip2_encoder, indexed):
    filters = MetadataFilters.from_dicts([{"key": "file_name", "value": "wide.png"}])
    hits = ImageSearchRetriever(
        blip2_encoder, indexed, similarity_top_k=5, filters=filters
    ).retrieve("x")
    assert [hit.node.metadata["file_name"] for hit in hits] == ["wide.png"]


def test_async_retrieval_gives_the_same_images(blip2_encoder, indexed):
    retriever = ImageSearchRetriever(blip2_encoder, indexed, similarity_top_k=3)
    hits = asyncio.run(retriever.aretrieve("a photo"))
    assert [hit.node.node_id for hit in hits] == [
        hit.node.node_id for hit in retriever.retrieve("a photo")
    ]


def test_a_store_of_another_encoder_is_refused(siglip_encoder, indexed):
    with pytest.raises(ModelMismatchError):
        ImageSearchRetriever(siglip_encoder, indexed)


def test_a_query_without_text_or_image_is_refused(blip2_encoder, indexed):
    with pytest.raises(EmptyInputError, match="neither text nor an image_path"):
        ImageSearchRetriever(blip2_encoder, indexed).retrieve(QueryBundle(query_str=" "))
