"""ColPaliEncoder: parity with transformers, unit rows without padding, determinism, bad
input, the fingerprint and the patch grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, ColPaliForRetrieval, ColQwen2ForRetrieval

from llama_index_vlm.encoder import ColPaliEncoder
from llama_index_vlm.errors import EmptyInputError, VLMError
from llama_index_vlm.fingerprint import FINGERPRINT_IDENTITY_KEYS

MODEL_CLASSES = {"colpali": ColPaliForRetrieval, "colqwen2": ColQwen2ForRetrieval}
QUERIES = [
    "What was the 2023 revenue?",
    "warranty",
    "How many units were sold in the third quarter?",
]
WHITE = Image.new("RGB", (48, 64), "white")
BLACK = Image.new("RGB", (48, 64), "black")


def _pages():
    rng = np.random.default_rng(0)
    sizes = [(60, 80), (200, 100), (90, 90), (130, 50), (64, 256)]
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def _page(width=100, height=60):
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


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


@pytest.fixture
def encoders(request):
    """``encoders(kind)`` -> the session's encoder of that tiny checkpoint."""
    return lambda kind: request.getfixturevalue(f"{kind}_encoder")


@pytest.fixture(scope="module")
def second_load(tiny_checkpoint):
    """The tiny ColPali loaded a second time (the session's colpali_encoder is the first)."""
    return ColPaliEncoder.from_pretrained(tiny_checkpoint("colpali"), show_progress=False)


@pytest.fixture(scope="module")
def bfloat16_encoder(tiny_checkpoint):
    return ColPaliEncoder.from_pretrained(
        tiny_checkpoint("colpali"), device="cpu", dtype="bfloat16", show_progress=False
    )


# -- embeddings ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["colpali", "colqwen2"])
def test_batched_scores_match_transformers_score_retrieval(kind, tiny_checkpoint, encoders):
    path = tiny_checkpoint(kind)
    encoder = encoders(kind)
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
def test_a_page_has_one_vector_per_token_of_its_own_unpadded_prompt(kind, encoders):
    encoder = encoders(kind)
    page_vectors = encoder.embed_images(_pages(), batch_size=5)
    for item, vectors in zip(_pages(), page_vectors, strict=True):
        alone = encoder.processor.process_images(images=[item])["attention_mask"].sum().item()
        assert vectors.shape == (alone, encoder.embedding_dim)


@pytest.mark.parametrize("kind", ["colpali", "colqwen2"])
def test_a_longer_query_has_more_vectors_in_the_same_batch(kind, encoders):
    short, long = encoders(kind).embed_queries(
        ["a", "a much longer query with many more tokens in it"]
    )
    assert short.shape[0] < long.shape[0]


@pytest.mark.parametrize("kind", ["colpali", "colqwen2"])
def test_outputs_are_float32_unit_rows(kind, encoders):
    encoder = encoders(kind)
    page_vectors = encoder.embed_images(_pages(), batch_size=5)
    query_vectors = encoder.embed_queries(["a", "a much longer query with many more tokens in it"])
    for vectors in page_vectors + query_vectors:
        assert vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_two_loads_give_bit_identical_page_vectors(colpali_encoder, second_load):
    first_vectors = colpali_encoder.embed_images(_pages())
    for first, second in zip(first_vectors, second_load.embed_images(_pages()), strict=True):
        assert np.array_equal(first, second)


def test_two_loads_give_bit_identical_query_vectors(colpali_encoder, second_load):
    first, second = colpali_encoder.embed_queries(QUERIES)[0], second_load.embed_queries(QUERIES)[0]
    assert np.array_equal(first, second)


def test_two_loads_give_the_same_fingerprint(colpali_encoder, second_load):
    assert colpali_encoder.fingerprint == second_load.fingerprint


@pytest.mark.parametrize(
    "image, rgb",
    [
        (Image.new("RGBA", (48, 64), (0, 0, 0, 0)), WHITE),
        (Image.new("I;16", (48, 64), 65535), WHITE),
        (Image.new("CMYK", (48, 64), (0, 0, 0, 0)), WHITE),
        (Image.new("RGB", (48, 64), "black").convert("P"), BLACK),
        (Image.new("L", (48, 64), 0), BLACK),
    ],
    ids=[
        "transparent RGBA is white paper",
        "16-bit maximum is white",
        "CMYK zero ink is white",
        "palette black is black",
        "greyscale black is black",
    ],
)
def test_any_pillow_mode_is_embedded_as_its_rgb_rendering(colpali_encoder, image, rgb):
    got, expected = colpali_encoder.embed_images([image, rgb])
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_white_and_black_pages_embed_differently(colpali_encoder):
    white_vectors, black_vectors = colpali_encoder.embed_images([WHITE, BLACK])
    assert not np.allclose(white_vectors, black_vectors)


def test_a_bfloat16_encoder_runs_in_bfloat16(bfloat16_encoder):
    assert next(bfloat16_encoder.model.parameters()).dtype == torch.bfloat16


def test_a_bfloat16_encoder_still_gives_float32_unit_rows(bfloat16_encoder):
    (vectors,) = bfloat16_encoder.embed_images(_pages()[:1])
    assert vectors.dtype == np.float32  # always float32 out, unit rows to float32 precision
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# -- bad input -------------------------------------------------------------------------------


def test_no_images_is_an_empty_input_error(colpali_encoder):
    with pytest.raises(EmptyInputError, match="no images"):
        colpali_encoder.embed_images([])


def test_no_queries_is_an_empty_input_error(colpali_encoder):
    with pytest.raises(EmptyInputError, match="no queries"):
        colpali_encoder.embed_queries([])


def test_a_blank_query_is_an_empty_input_error_naming_it(colpali_encoder):
    with pytest.raises(EmptyInputError, match="query 1 is empty"):
        colpali_encoder.embed_queries(["fine", "  \n\t"])


def test_an_item_that_is_not_an_image_is_a_type_error_naming_it(colpali_encoder):
    with pytest.raises(TypeError, match=r"images\[0\] is a str"):
        colpali_encoder.embed_images(["page.png"])


def test_an_empty_input_error_is_a_vlm_error():
    assert issubclass(EmptyInputError, VLMError)


# -- progress --------------------------------------------------------------------------------


def test_no_progress_bar_for_one_batch(colpali_encoder, capsys):
    pages = _pages()
    colpali_encoder.embed_images(pages, batch_size=len(pages), show_progress=True)
    assert "Embedding pages" not in capsys.readouterr().err


def test_a_progress_bar_for_several_batches(colpali_encoder, capsys):
    colpali_encoder.embed_images(_pages(), batch_size=2, show_progress=True)
    assert "Embedding pages" in capsys.readouterr().err


def test_no_progress_bar_when_it_is_turned_off(colpali_encoder, capsys):
    colpali_encoder.embed_images(_pages(), batch_size=2, show_progress=False)
    assert "Embedding pages" not in capsys.readouterr().err


# -- fingerprint -----------------------------------------------------------------------------


def test_the_fingerprint_holds_every_identity_field(colpali_encoder):
    assert set(FINGERPRINT_IDENTITY_KEYS) <= set(colpali_encoder.fingerprint)


def test_the_fingerprint_records_the_model_and_its_settings(colpali_encoder, tiny_checkpoint):
    fingerprint = colpali_encoder.fingerprint
    assert fingerprint["model_class"] == "ColPaliForRetrieval"
    assert fingerprint["embedding_dim"] == 128
    assert fingerprint["processor"]["image_seq_length"] == 16
    assert fingerprint["model"] == str(tiny_checkpoint("colpali"))


def test_the_weights_digest_differs_between_checkpoints(colpali_encoder, colqwen2_encoder):
    assert (
        colpali_encoder.fingerprint["weights_digest"]
        != (colqwen2_encoder.fingerprint["weights_digest"])
    )


def test_the_fingerprint_is_json(colpali_encoder):
    fingerprint = colpali_encoder.fingerprint
    assert json.loads(json.dumps(fingerprint)) == fingerprint  # stored as JSON with the index


# -- patch grid and query tokens (for similarity maps) ---------------------------------------


def test_the_colpali_patch_grid_is_the_square_of_its_image_tokens(colpali_encoder):
    grid = colpali_encoder.embed_image_patches(_page())
    assert grid.shape == (4, 4, 128)  # tiny ColPali: 32px image, 8px patches


def test_the_colpali_patch_grid_holds_the_pages_first_vectors(colpali_encoder):
    grid = colpali_encoder.embed_image_patches(_page())
    (page_vectors,) = colpali_encoder.embed_images([_page()])
    # ColPali puts the image tokens first, in row-major order.
    np.testing.assert_allclose(grid.reshape(16, 128), page_vectors[:16], atol=1e-6)


def test_the_colqwen2_patch_grid_follows_the_page_aspect(colqwen2_encoder):
    wide = colqwen2_encoder.embed_image_patches(_page(100, 60))
    tall = colqwen2_encoder.embed_image_patches(_page(60, 100))
    assert wide.shape[:2] == (3, 5)  # image_grid_thw (1, 6, 10) merged 2x2
    assert tall.shape[:2] == (5, 3)


def test_the_colqwen2_patch_grid_holds_the_pages_image_token_vectors(colqwen2_encoder):
    wide = colqwen2_encoder.embed_image_patches(_page(100, 60))
    (page_vectors,) = colqwen2_encoder.embed_images([_page(100, 60)])
    inputs = colqwen2_encoder.processor.process_images(images=[_page(100, 60)])
    is_patch = (inputs["input_ids"][0] == colqwen2_encoder.processor.image_token_id).numpy()
    np.testing.assert_allclose(wide.reshape(15, 128), page_vectors[is_patch], atol=1e-6)


def test_query_token_labels_name_each_query_vector(colpali_encoder):
    labels = colpali_encoder.query_token_labels("revenue")
    (vectors,) = colpali_encoder.embed_queries(["revenue"])
    assert len(labels) == vectors.shape[0]


def test_query_token_labels_spell_the_query(colpali_encoder):
    labels = colpali_encoder.query_token_labels("revenue")
    assert "".join(labels).replace("Ġ", " ").find("revenue") >= 0
