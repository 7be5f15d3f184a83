"""ImageTextEncoder: the models' own embeddings, one normalised vector per image and text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llama_index_vlm.errors import (
    ContextWindowExceededError,
    EmptyInputError,
    InvalidCheckpointError,
    MissingWeightsError,
)
from llama_index_vlm.image_search.encoder import ImageTextEncoder

TEXTS = ["a photo of a red bicycle", "a dog", "two people walking on a beach at sunset"]


def blip2_forward(encoder, images, texts):
    inputs = encoder.processor(images=images, text=texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return encoder.model(**inputs)


def test_blip2_text_vectors_are_the_models_own(blip2_encoder, make_photo):
    images = [make_photo(seed) for seed in range(3)]
    expected = blip2_forward(blip2_encoder, images, TEXTS).text_embeds.numpy()
    np.testing.assert_allclose(blip2_encoder.embed_texts(TEXTS), expected, atol=1e-6)


def test_blip2_query_embeddings_are_the_models_own(blip2_encoder, make_photo):
    images = [make_photo(seed) for seed in range(3)]
    expected = blip2_forward(blip2_encoder, images, TEXTS).image_embeds
    pixels = blip2_encoder.processor.image_processor(images=images, return_tensors="pt")
    with torch.no_grad():
        actual = blip2_encoder.architecture.query_embeddings(
            blip2_encoder.model, pixels["pixel_values"]
        )
    torch.testing.assert_close(actual, expected)


def test_a_blip2_image_vector_is_its_normalised_mean_query_embedding(blip2_encoder, make_photo):
    images = [make_photo(seed) for seed in range(3)]
    queries = blip2_forward(blip2_encoder, images, TEXTS).image_embeds
    expected = torch.nn.functional.normalize(queries.mean(dim=1), dim=-1).numpy()
    np.testing.assert_allclose(blip2_encoder.embed_images(images), expected, atol=1e-6)


def test_siglip_vectors_are_the_models_own(siglip_encoder, make_photo):
    images = [make_photo(seed) for seed in range(3)]
    inputs = siglip_encoder.processor(
        images=images, text=TEXTS, padding="max_length", return_tensors="pt"
    )
    with torch.no_grad():
        output = siglip_encoder.model(**inputs)
    np.testing.assert_allclose(siglip_encoder.embed_images(images), output.image_embeds, atol=1e-6)
    np.testing.assert_allclose(siglip_encoder.embed_texts(TEXTS), output.text_embeds, atol=1e-6)


@pytest.mark.parametrize("name", ["blip2_encoder", "siglip_encoder"])
def test_vectors_are_unit_length_and_of_the_declared_dimension(name, request, make_photo):
    encoder = request.getfixturevalue(name)
    vectors = np.concatenate([encoder.embed_images([make_photo(0)]), encoder.embed_texts(["x"])])
    assert vectors.shape == (2, encoder.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_batching_does_not_change_a_vector(blip2_encoder, make_photo):
    images = [make_photo(seed) for seed in range(5)]
    np.testing.assert_allclose(
        blip2_encoder.embed_images(images, batch_size=2),
        blip2_encoder.embed_images(images, batch_size=5),
        atol=1e-6,
    )


def test_match_scores_are_the_itm_heads_probabilities(blip2_encoder, make_photo):
    images = [make_photo(seed) for seed in range(3)]
    inputs = blip2_encoder.processor(
        images=images, text=["a dog"] * 3, padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = blip2_encoder.model(**inputs, use_image_text_matching_head=True).logits_per_image
    expected = logits.softmax(dim=-1)[:, 1].numpy()
    np.testing.assert_allclose(blip2_encoder.match_scores("a dog", images), expected, atol=1e-6)


def test_siglip_has_no_matching_head(siglip_encoder, make_photo):
    assert not siglip_encoder.can_match
    with pytest.raises(NotImplementedError, match="no image-text matching head"):
        siglip_encoder.match_scores("a dog", [make_photo(0)])


def test_a_text_longer_than_the_model_reads_is_refused(siglip_encoder):
    with pytest.raises(ContextWindowExceededError, match="at most 64"):
        siglip_encoder.embed_texts(["revenue " * 100])


def test_an_empty_text_is_refused(blip2_encoder):
    with pytest.raises(EmptyInputError, match="text 1 is empty"):
        blip2_encoder.embed_texts(["a dog", "  "])


def test_a_page_retriever_is_not_an_image_text_encoder(tiny_checkpoint):
    with pytest.raises(InvalidCheckpointError, match="not an image-text retrieval model"):
        ImageTextEncoder.from_pretrained(tiny_checkpoint("colpali"))


def test_a_blip2_captioning_checkpoint_lacks_the_retrieval_heads(tiny_checkpoint):
    with pytest.raises(MissingWeightsError, match="image-text retrieval checkpoint"):
        ImageTextEncoder.from_pretrained(tiny_checkpoint("blip2"))


def test_the_fingerprint_is_the_same_on_every_load(blip2_encoder, tiny_checkpoint):
    again = ImageTextEncoder.from_pretrained(tiny_checkpoint("blip2_itm"))
    assert again.fingerprint == blip2_encoder.fingerprint


def test_blip2_and_siglip_fingerprints_differ(blip2_encoder, siglip_encoder):
    assert (
        blip2_encoder.fingerprint["weights_digest"] != siglip_encoder.fingerprint["weights_digest"]
    )
