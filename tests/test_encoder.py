"""ColPaliEncoder: parity with transformers, determinism, refusal of broken checkpoints."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoProcessor, ColPaliForRetrieval, ColQwen2ForRetrieval

from llama_index_vlm.devices import resolve_device, resolve_dtype
from llama_index_vlm.encoder import ColPaliEncoder
from llama_index_vlm.errors import (
    EmptyInputError,
    InvalidCheckpointError,
    MissingWeightsError,
    VLMError,
)
from llama_index_vlm.fingerprint import FINGERPRINT_IDENTITY_KEYS

MODEL_CLASSES = {"colpali": ColPaliForRetrieval, "colqwen2": ColQwen2ForRetrieval}
QUERIES = [
    "What was the 2023 revenue?",
    "warranty",
    "How many units were sold in the third quarter?",
]


def _pages():
    rng = np.random.default_rng(0)
    sizes = [(60, 80), (200, 100), (90, 90), (130, 50), (64, 256)]
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def _one_at_a_time(model, processor, pages, queries):
    """Reference embeddings straight from transformers, one item per forward pass."""
    with torch.no_grad():
        page_embeddings = [
            model(**processor.process_images(images=[p])).embeddings[0] for p in pages
        ]
        query_embeddings = [
            model(**processor.process_queries(text=[q])).embeddings[0] for q in queries
        ]
    return page_embeddings, query_embeddings


@pytest.mark.parametrize("kind", ["colpali", "colqwen2"])
def test_batched_scores_match_transformers_score_retrieval(kind, tiny_checkpoint):
    path = tiny_checkpoint(kind)
    encoder = ColPaliEncoder.from_pretrained(path, show_progress=False)
    pages = _pages()
    page_vectors = encoder.embed_images(pages, batch_size=3)
    query_vectors = encoder.embed_queries(QUERIES, batch_size=2)

    processor = AutoProcessor.from_pretrained(path)
    model = MODEL_CLASSES[kind].from_pretrained(path).eval()
    reference_pages, reference_queries = _one_at_a_time(model, processor, pages, QUERIES)
    expected = processor.score_retrieval(reference_queries, reference_pages)
    actual = processor.score_retrieval(
        [torch.from_numpy(q) for q in query_vectors], [torch.from_numpy(p) for p in page_vectors]
    )
    assert actual.shape == (len(QUERIES), len(pages))
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["colpali", "colqwen2"])
def test_outputs_are_float32_unit_rows_without_padding(kind, tiny_checkpoint):
    encoder = ColPaliEncoder.from_pretrained(tiny_checkpoint(kind), show_progress=False)
    page_vectors = encoder.embed_images(_pages(), batch_size=5)
    query_vectors = encoder.embed_queries(["a", "a much longer query with many more tokens in it"])
    processor = encoder.processor
    for item, vectors in zip(_pages(), page_vectors, strict=True):
        alone = processor.process_images(images=[item])["attention_mask"].sum().item()
        assert vectors.shape == (alone, encoder.embedding_dim)
    assert query_vectors[0].shape[0] < query_vectors[1].shape[0]
    for vectors in page_vectors + query_vectors:
        assert vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_two_loads_give_bit_identical_embeddings(tiny_checkpoint):
    path = tiny_checkpoint("colpali")
    first = ColPaliEncoder.from_pretrained(path, show_progress=False)
    second = ColPaliEncoder.from_pretrained(path, show_progress=False)
    for a, b in zip(first.embed_images(_pages()), second.embed_images(_pages()), strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(first.embed_queries(QUERIES)[0], second.embed_queries(QUERIES)[0])
    assert first.fingerprint == second.fingerprint


def test_checkpoint_missing_projection_head_is_refused(tiny_checkpoint, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint("colpali"), broken)
    weights = load_file(broken / "model.safetensors")
    kept = {name: t for name, t in weights.items() if not name.startswith("embedding_proj_layer")}
    assert len(kept) == len(weights) - 2
    save_file(kept, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(MissingWeightsError, match="embedding_proj_layer.weight") as caught:
        ColPaliEncoder.from_pretrained(broken)
    assert set(caught.value.missing) == {"embedding_proj_layer.weight", "embedding_proj_layer.bias"}


def test_fingerprint_identifies_the_vector_space(
    tiny_checkpoint, colpali_encoder, colqwen2_encoder
):
    fingerprint = colpali_encoder.fingerprint
    assert set(FINGERPRINT_IDENTITY_KEYS) <= set(fingerprint)
    assert fingerprint["model_class"] == "ColPaliForRetrieval"
    assert fingerprint["embedding_dim"] == 128
    assert fingerprint["processor"]["image_seq_length"] == 16
    assert fingerprint["model"] == str(tiny_checkpoint("colpali"))
    other = colqwen2_encoder.fingerprint
    assert fingerprint["weights_digest"] != other["weights_digest"]
    import json

    assert json.loads(json.dumps(fingerprint)) == fingerprint  # stored as JSON with the index


def test_model_class_comes_from_config_not_name(tiny_checkpoint, tmp_path):
    misleading = tmp_path / "colpali-v1.3-hf"  # a ColQwen2 checkpoint under a ColPali-like name
    shutil.copytree(tiny_checkpoint("colqwen2"), misleading)
    encoder = ColPaliEncoder.from_pretrained(misleading, show_progress=False)
    assert type(encoder.model).__name__ == "ColQwen2ForRetrieval"


def test_path_that_is_not_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(InvalidCheckpointError, match="holds no config.json"):
        ColPaliEncoder.from_pretrained(tmp_path)


def test_offline_hub_name_says_how_to_use_a_local_checkpoint():
    with pytest.raises(InvalidCheckpointError, match="pass a local directory"):
        ColPaliEncoder.from_pretrained("vidore/colpali-v1.3-hf")


def test_a_file_is_not_a_checkpoint(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"not a model")
    with pytest.raises(InvalidCheckpointError, match="it is a file"):
        ColPaliEncoder.from_pretrained(tmp_path / "model.bin")


def test_checkpoint_of_another_family_is_refused(tiny_checkpoint):
    with pytest.raises(InvalidCheckpointError, match="'llava' checkpoint, not a ColPali-family"):
        ColPaliEncoder.from_pretrained(tiny_checkpoint("llava"))


def test_bad_inputs_get_clear_errors(colpali_encoder):
    with pytest.raises(EmptyInputError, match="no images"):
        colpali_encoder.embed_images([])
    with pytest.raises(EmptyInputError, match="no queries"):
        colpali_encoder.embed_queries([])
    with pytest.raises(EmptyInputError, match="query 1 is empty"):
        colpali_encoder.embed_queries(["fine", "  \n\t"])
    with pytest.raises(TypeError, match=r"images\[0\] is a str"):
        colpali_encoder.embed_images(["page.png"])
    assert issubclass(EmptyInputError, VLMError)


def test_any_pillow_mode_is_embedded_as_its_rgb_rendering(colpali_encoder):
    white = Image.new("RGB", (48, 64), "white")
    black = Image.new("RGB", (48, 64), "black")
    equivalents = {
        "transparent RGBA is white paper": (Image.new("RGBA", (48, 64), (0, 0, 0, 0)), white),
        "16-bit maximum is white": (Image.new("I;16", (48, 64), 65535), white),
        "CMYK zero ink is white": (Image.new("CMYK", (48, 64), (0, 0, 0, 0)), white),
        "palette black is black": (Image.new("RGB", (48, 64), "black").convert("P"), black),
        "greyscale black is black": (Image.new("L", (48, 64), 0), black),
    }
    for reason, (image, rgb) in equivalents.items():
        got, expected = colpali_encoder.embed_images([image, rgb])
        np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=reason)
    white_vectors, black_vectors = colpali_encoder.embed_images([white, black])
    assert not np.allclose(white_vectors, black_vectors)


def test_progress_bar_only_for_several_batches(colpali_encoder, capsys):
    pages = _pages()
    colpali_encoder.embed_images(pages, batch_size=len(pages), show_progress=True)
    assert "Embedding pages" not in capsys.readouterr().err
    colpali_encoder.embed_images(pages, batch_size=2, show_progress=True)
    assert "Embedding pages" in capsys.readouterr().err
    colpali_encoder.embed_images(pages, batch_size=2, show_progress=False)
    assert "Embedding pages" not in capsys.readouterr().err


def test_device_and_dtype_resolution():
    cpu = torch.device("cpu")
    assert resolve_device("cpu") == cpu
    assert resolve_dtype("auto", cpu) is torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) is torch.bfloat16
    assert resolve_dtype("float16", cpu) is torch.float16
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("float7", cpu)


def test_encoder_runs_in_the_requested_dtype(tiny_checkpoint):
    encoder = ColPaliEncoder.from_pretrained(
        tiny_checkpoint("colpali"), device="cpu", dtype="bfloat16", show_progress=False
    )
    assert next(encoder.model.parameters()).dtype == torch.bfloat16
    (vectors,) = encoder.embed_images(_pages()[:1])
    assert vectors.dtype == np.float32  # always float32 out, unit rows to float32 precision
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
