"""LanceDBImageStore: one vector per image in a LanceDB table next to the pages."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from llama_index.core.schema import ImageNode
from llama_index.core.vector_stores.types import MetadataFilters, VectorStoreQuery

from llama_index_vlm.errors import InvalidPageError, ModelMismatchError
from llama_index_vlm.image_search.store import LanceDBImageStore
from llama_index_vlm.store import LanceDBPageStore

FINGERPRINT = {"model": "m", "model_class": "X", "embedding_dim": 8, "weights_digest": "a"}


def unit_rows(n, dim=8, seed=0):
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def image_nodes(vectors, make_photo, prefix="img", **metadata):
    nodes = []
    for number, vector in enumerate(vectors):
        buffer = io.BytesIO()
        make_photo(number, size=(16, 12)).save(buffer, format="JPEG")
        nodes.append(
            ImageNode(
                id_=f"{prefix}{number}",
                image=base64.b64encode(buffer.getvalue()).decode(),
                image_mimetype="image/jpeg",
                metadata={
                    "file_name": f"photo{number}.jpg",
                    "width": 16,
                    "height": 12,
                    "album": "a" if number % 2 else "b",
                    **metadata,
                },
                embedding=vector.tolist(),
            )
        )
    return nodes


@pytest.fixture
def store(tmp_path):
    return LanceDBImageStore(uri=str(tmp_path / "index"))


def query(store, vector, k=3, **kwargs):
    return store.query(
        VectorStoreQuery(query_embedding=vector.tolist(), similarity_top_k=k, **kwargs)
    )


def test_the_nearest_image_comes_first_with_its_cosine(store, make_photo):
    vectors = unit_rows(6)
    store.add(image_nodes(vectors, make_photo), fingerprint=FINGERPRINT)
    result = query(store, vectors[4])
    assert result.ids[0] == "img4" and result.similarities[0] == pytest.approx(1.0, abs=1e-5)
    assert result.similarities == sorted(result.similarities, reverse=True)


def test_nodes_come_back_with_their_image_and_metadata(store, make_photo):
    store.add(image_nodes(unit_rows(2), make_photo), fingerprint=FINGERPRINT)
    (node,) = store.get_nodes(["img1"])
    assert node.metadata == {"file_name": "photo1.jpg", "width": 16, "height": 12, "album": "a"}
    assert node.image_mimetype == "image/jpeg" and base64.b64decode(node.image)[:2] == b"\xff\xd8"


def test_filters_apply_to_image_fields_and_user_metadata(store, make_photo):
    vectors = unit_rows(6)
    store.add(image_nodes(vectors, make_photo), fingerprint=FINGERPRINT)
    filters = MetadataFilters.from_dicts([{"key": "album", "value": "a"}])
    result = query(store, vectors[0], k=6, filters=filters)
    assert sorted(result.ids) == ["img1", "img3", "img5"]


def test_adding_an_image_again_replaces_it(store, make_photo):
    vectors = unit_rows(3)
    store.add(image_nodes(vectors, make_photo), fingerprint=FINGERPRINT)
    store.add(image_nodes(vectors[:1], make_photo, album="c"), fingerprint=FINGERPRINT)
    assert store.count() == 3 and store.get_nodes(["img0"])[0].metadata["album"] == "c"


def test_another_encoders_vectors_are_refused(store, make_photo):
    store.add(image_nodes(unit_rows(2), make_photo), fingerprint=FINGERPRINT)
    with pytest.raises(ModelMismatchError, match="holds vectors from encoder"):
        store.add(
            image_nodes(unit_rows(1), make_photo),
            fingerprint={**FINGERPRINT, "weights_digest": "b"},
        )


def test_a_query_of_another_dimension_is_refused(store, make_photo):
    store.add(image_nodes(unit_rows(2), make_photo), fingerprint=FINGERPRINT)
    with pytest.raises(ModelMismatchError, match="4 dimensions, the images 8"):
        query(store, unit_rows(1, dim=4)[0])


def test_an_image_without_an_embedding_is_refused(store, make_photo):
    node = image_nodes(unit_rows(1), make_photo)[0]
    node.embedding = None
    with pytest.raises(InvalidPageError, match="has no embedding"):
        store.add([node])


def test_deleting_by_id_and_by_filter(store, make_photo):
    store.add(image_nodes(unit_rows(4), make_photo), fingerprint=FINGERPRINT)
    store.delete("img0")
    store.delete_nodes(filters=MetadataFilters.from_dicts([{"key": "album", "value": "a"}]))
    assert [node.node_id for node in store.get_nodes()] == ["img2"]


def test_the_image_table_lives_beside_the_page_table(tmp_path, make_photo):
    uri = str(tmp_path / "index")
    images = LanceDBImageStore(uri=uri)
    images.add(image_nodes(unit_rows(2), make_photo), fingerprint=FINGERPRINT)
    pages = LanceDBPageStore(uri=uri)
    assert pages.count() == 0 and pages.schema is None and images.count() == 2


def test_an_ann_index_is_built_once_the_table_is_large_enough(tmp_path, make_photo):
    store = LanceDBImageStore(uri=str(tmp_path / "index"), ann_min_rows=600)
    vectors = unit_rows(600, dim=16)
    store.add(image_nodes(vectors[:300], make_photo), fingerprint=FINGERPRINT)
    assert not store.has_ann_index
    store.add(image_nodes(vectors[300:], make_photo, prefix="more"), fingerprint=FINGERPRINT)
    assert store.has_ann_index


def test_the_ann_search_finds_what_the_exact_search_finds(tmp_path, make_photo):
    store = LanceDBImageStore(uri=str(tmp_path / "index"), ann_min_rows=500)
    vectors = unit_rows(500, dim=16)
    store.add(image_nodes(vectors, make_photo), fingerprint=FINGERPRINT)
    probes = range(0, 500, 50)
    approximate = [query(store, vectors[i], k=1).ids[0] for i in probes]
    exact = [
        store.query(VectorStoreQuery(query_embedding=vectors[i].tolist()), exact=True).ids[0]
        for i in probes
    ]
    assert store.has_ann_index and approximate == exact == [f"img{i}" for i in probes]
