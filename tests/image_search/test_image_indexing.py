"""index_images: a folder of photos into the image store, once, with failures reported."""

from __future__ import annotations

import pytest
from llama_index.core.vector_stores.types import VectorStoreQuery

from llama_index_vlm.errors import ModelMismatchError
from llama_index_vlm.image_search.indexing import index_images
from llama_index_vlm.image_search.store import LanceDBImageStore
from llama_index_vlm.images import decode_image


@pytest.fixture
def store(tmp_path):
    return LanceDBImageStore(uri=str(tmp_path / "index"))


def test_every_readable_image_is_indexed_and_the_broken_one_reported(photos, blip2_encoder, store):
    report = index_images(photos, blip2_encoder, store, show_progress=False)
    assert len(report.added) == store.count() == 6
    assert [path for path, _ in report.failed] == [str(photos / "trip" / "broken.jpg")]


def test_indexing_again_skips_the_indexed_files(photos, blip2_encoder, store):
    index_images(photos, blip2_encoder, store, show_progress=False)
    again = index_images(photos, blip2_encoder, store, show_progress=False)
    assert again.added == [] and len(again.unchanged) == 6


def test_the_stored_copy_is_shrunk_and_the_original_size_kept(photos, blip2_encoder, store):
    index_images(photos, blip2_encoder, store, thumbnail_size=100, show_progress=False)
    (wide,) = [node for node in store.get_nodes() if node.metadata["file_name"] == "wide.png"]
    assert decode_image(wide.image).size == (100, 33)
    assert (wide.metadata["width"], wide.metadata["height"]) == (900, 300)


def test_the_stored_vector_is_the_stored_copys(photos, blip2_encoder, store):
    index_images(photos, blip2_encoder, store, show_progress=False)
    (node,) = [node for node in store.get_nodes() if node.metadata["file_name"] == "photo2.jpg"]
    vector = blip2_encoder.embed_images([decode_image(node.image)])[0]
    found = store.query(VectorStoreQuery(query_embedding=vector.tolist(), similarity_top_k=1))
    assert found.ids == [node.node_id] and found.similarities[0] == pytest.approx(1.0, abs=1e-5)


def test_another_encoders_store_is_refused_before_embedding(
    photos, blip2_encoder, siglip_encoder, store
):
    index_images(photos / "trip", blip2_encoder, store, show_progress=False)
    with pytest.raises(ModelMismatchError):
        index_images(photos, siglip_encoder, store, show_progress=False)
    assert store.count() == 1
