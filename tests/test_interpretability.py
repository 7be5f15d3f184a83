"""Similarity maps: the patch grid from the processor, the maths, and the drawings."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from llama_index_vlm.interpretability import (
    colorize,
    draw_region,
    hottest_region,
    normalise_map,
    overlay_heatmap,
    similarity_map_panels,
    similarity_maps,
)


def _page(width=100, height=60):
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def test_colpali_patch_grid_is_the_square_of_image_tokens(colpali_encoder):
    grid = colpali_encoder.embed_image_patches(_page())
    assert grid.shape == (4, 4, 128)  # tiny ColPali: 32px image, 8px patches
    (page_vectors,) = colpali_encoder.embed_images([_page()])
    # ColPali puts the image tokens first, in row-major order.
    np.testing.assert_allclose(grid.reshape(16, 128), page_vectors[:16], atol=1e-6)


def test_colqwen2_patch_grid_follows_the_page_aspect(colqwen2_encoder):
    wide = colqwen2_encoder.embed_image_patches(_page(100, 60))
    tall = colqwen2_encoder.embed_image_patches(_page(60, 100))
    assert wide.shape[:2] == (3, 5)  # image_grid_thw (1, 6, 10) merged 2x2
    assert tall.shape[:2] == (5, 3)
    (page_vectors,) = colqwen2_encoder.embed_images([_page(100, 60)])
    inputs = colqwen2_encoder.processor.process_images(images=[_page(100, 60)])
    is_patch = (inputs["input_ids"][0] == colqwen2_encoder.processor.image_token_id).numpy()
    np.testing.assert_allclose(wide.reshape(15, 128), page_vectors[is_patch], atol=1e-6)


def test_query_token_labels_name_each_query_vector(colpali_encoder):
    labels = colpali_encoder.query_token_labels("revenue")
    (vectors,) = colpali_encoder.embed_queries(["revenue"])
    assert len(labels) == vectors.shape[0]
    assert "".join(labels).replace("Ġ", " ").find("revenue") >= 0


def test_similarity_maps_are_dot_products_and_bound_maxsim():
    rng = np.random.default_rng(0)
    query = rng.normal(size=(3, 8)).astype(np.float32)
    grid = rng.normal(size=(2, 5, 8)).astype(np.float32)
    maps = similarity_maps(query, grid)
    assert maps.shape == (3, 2, 5)
    assert maps[1, 1, 4] == pytest.approx(float(query[1] @ grid[1, 4]), rel=1e-5)
    maxsim = (query @ grid.reshape(-1, 8).T).max(axis=1).sum()
    assert maps.max(axis=(1, 2)).sum() == pytest.approx(maxsim, rel=1e-5)


def test_similarity_maps_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="query dim 8 differs from patch dim 4"):
        similarity_maps(np.zeros((2, 8)), np.zeros((2, 2, 4)))
    with pytest.raises(ValueError, match="must be"):
        similarity_maps(np.zeros(8), np.zeros((2, 2, 8)))


def test_normalise_and_colorize():
    assert normalise_map(np.array([[2.0, 4.0], [3.0, 2.0]])).tolist() == [[0, 1], [0.5, 0]]
    assert normalise_map(np.ones((2, 2))).tolist() == [[0, 0], [0, 0]]
    colours = colorize(np.array([[0.0, 1.0]]))
    assert colours[0, 0].tolist() == [68, 1, 84] and colours[0, 1].tolist() == [253, 231, 37]


def test_hottest_region_maps_patches_to_page_pixels():
    heat = np.zeros((4, 5))
    heat[1, 3] = 1.0  # row 1, column 3 of a 4x5 grid
    assert hottest_region(heat, (500, 400), quantile=0.99) == (300, 100, 400, 200)
    heat[2, 4] = 0.9
    assert hottest_region(heat, (500, 400), quantile=0.9) == (300, 100, 500, 300)


def test_overlay_and_panels_have_the_right_size_and_colour():
    page = Image.new("RGB", (200, 100), "white")
    heat = np.zeros((2, 4))
    heat[0, 0] = 1.0
    overlay = overlay_heatmap(page, heat, opacity=1.0)
    assert overlay.size == (200, 100)
    assert overlay.getpixel((5, 5))[0] > 200  # hottest corner is yellow
    assert overlay.getpixel((195, 95))[2] > 60  # coldest is dark blue-violet
    panels = similarity_map_panels(page, np.stack([heat, heat, heat]), ["a", "b", "c"], columns=2)
    assert panels.size == (640, 2 * (160 + 18))
    with pytest.raises(ValueError, match="2 labels for 3 maps"):
        similarity_map_panels(page, np.stack([heat] * 3), ["a", "b"])
    boxed = draw_region(page, (10, 10, 50, 50))
    assert boxed.getpixel((10, 30)) == (255, 0, 0) and page.getpixel((10, 30)) == (255, 255, 255)
