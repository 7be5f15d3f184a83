"""reindex: a store's pages embedded again by another encoder into another store."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from llama_index.core.schema import ImageNode
from PIL import Image

from llama_index_vlm.errors import InvalidRequestError
from llama_index_vlm.finetune.reindex import reindex
from llama_index_vlm.store import LanceDBPageStore


@pytest.fixture
def source(tmp_path, colpali_encoder):
    """Three pages of two documents, stored with pooled placeholder vectors and user metadata."""
    store = LanceDBPageStore(uri=str(tmp_path / "old"))
    nodes = []
    for doc, number in (("a", 1), ("a", 2), ("b", 1)):
        buffer = io.BytesIO()
        Image.new("RGB", (30, 40), (40 * number, 90, 0)).save(buffer, format="PNG")
        nodes.append(
            ImageNode(
                id_=f"{doc}-p{number}",
                image=base64.b64encode(buffer.getvalue()).decode(),
                metadata={"doc_id": doc, "page_number": number, "page_count": 2, "team": doc},
            )
        )
    fingerprint = {**colpali_encoder.fingerprint, "weights_digest": "old", "pool_factor": 2}
    store.add(nodes, page_vectors=[np.ones((3, 128), np.float32)] * 3, fingerprint=fingerprint)
    return store


def test_every_page_is_embedded_again_with_its_metadata(source, colpali_encoder, tmp_path):
    target = LanceDBPageStore(uri=str(tmp_path / "new"))
    report = reindex(source, colpali_encoder, target, show_progress=False)
    assert report.pages_added == 3 and report.files == 2
    assert {node.node_id: node.metadata["team"] for node in target.get_nodes()} == {
        "a-p1": "a",
        "a-p2": "a",
        "b-p1": "b",
    }


def test_the_new_index_keeps_the_pool_factor_and_records_the_new_encoder(
    source, colpali_encoder, tmp_path
):
    target = LanceDBPageStore(uri=str(tmp_path / "new"))
    reindex(source, colpali_encoder, target, show_progress=False)
    assert target.pool_factor == 2
    assert target.fingerprint["weights_digest"] == colpali_encoder.fingerprint["weights_digest"]


def test_reindexing_into_the_same_table_is_refused(source, colpali_encoder):
    with pytest.raises(InvalidRequestError, match="another store"):
        reindex(source, colpali_encoder, LanceDBPageStore(uri=source.uri), show_progress=False)
