"""ColQwen2.5 and ColModernVBERT through ColPaliEncoder: parity with transformers' native
classes, unit rows without padding, the patch grid, and refusing a missing projection head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, ColModernVBertForRetrieval, ColQwen2ForRetrieval

from llama_index_vlm.encoder import ColPaliEncoder
from llama_index_vlm.errors import MissingWeightsError

KINDS = ["colqwen2_5", "colmodernvbert"]
MODEL_CLASSES = {"colqwen2_5": ColQwen2ForRetrieval, "colmodernvbert": ColModernVBertForRetrieval}
QUERIES = ["What was the 2023 revenue?", "warranty", "How many units were sold in 2023?"]


def _pages() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    sizes = [(60, 80), (200, 100), (90, 90), (130, 50)]
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


@pytest.fixture(scope="module")
def encoders(tiny_checkpoint):
    """``encoders(kind)`` -> an encoder of that tiny checkpoint, loaded once per module."""
    loaded: dict[str, ColPaliEncoder] = {}

    def get(kind: str) -> ColPaliEncoder:
        if kind not in loaded:
            path = tiny_checkpoint(kind)
            loaded[kind] = ColPaliEncoder.from_pretrained(path, show_progress=False)
        return loaded[kind]

    return get


@pytest.mark.parametrize("kind", KINDS)
def test_batched_scores_match_transformers_one_item_at_a_time(kind, tiny_checkpoint, encoders):
    path = tiny_checkpoint(kind)
    page_vectors = encoders(kind).embed_images(_pages(), batch_size=3)
    query_vectors = encoders(kind).embed_queries(QUERIES, batch_size=2)
    processor = AutoProcessor.from_pretrained(path)
    model = MODEL_CLASSES[kind].from_pretrained(path).eval()
    with torch.no_grad():
        pages = [model(**processor.process_images(images=[p])).embeddings[0] for p in _pages()]
        queries = [model(**processor.process_queries(text=[q])).embeddings[0] for q in QUERIES]
    expected = processor.score_retrieval(queries, pages)
    actual = processor.score_retrieval(
        [torch.from_numpy(q) for q in query_vectors], [torch.from_numpy(p) for p in page_vectors]
    )
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_a_page_has_one_unit_vector_per_token_of_its_unpadded_prompt(kind, encoders):
    encoder = encoders(kind)
    for page, vectors in zip(_pages(), encoder.embed_images(_pages(), batch_size=4), strict=True):
        alone = encoder.processor.process_images(images=[page])["attention_mask"].sum().item()
        assert vectors.shape == (alone, encoder.embedding_dim)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_colqwen2_5_runs_a_qwen2_5_vl_backbone(encoders):
    encoder = encoders("colqwen2_5")
    assert encoder.fingerprint["model_class"] == "ColQwen2ForRetrieval"
    assert encoder.model.config.vlm_config.model_type == "qwen2_5_vl"


def test_colmodernvberts_fingerprint_records_its_tiling(encoders):
    settings = encoders("colmodernvbert").fingerprint["processor"]
    assert settings["class"] == "ColModernVBertProcessor"
    assert {"image_seq_len", "max_image_size", "do_image_splitting"} <= set(settings)


def test_colmodernvberts_patch_grid_is_its_global_image(encoders):
    encoder = encoders("colmodernvbert")
    page = _pages()[1]
    grid = encoder.embed_image_patches(page)
    side = int(encoder.processor.image_seq_len**0.5)
    assert grid.shape == (side, side, encoder.embedding_dim)
    inputs = encoder.processor.process_images(images=[page])
    is_image = inputs["input_ids"][0] == encoder.processor.image_token_id
    (vectors,) = encoder.embed_images([page])
    global_image = vectors[is_image.numpy()][-side * side :]
    np.testing.assert_allclose(grid.reshape(-1, encoder.embedding_dim), global_image, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_a_checkpoint_missing_its_projection_head_is_refused(kind, checkpoint_without):
    broken, dropped = checkpoint_without(kind, lambda name: name.startswith("embedding_proj_layer"))
    assert dropped
    with pytest.raises(MissingWeightsError, match="embedding_proj_layer"):
        ColPaliEncoder.from_pretrained(broken, show_progress=False)
