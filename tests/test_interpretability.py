"""Similarity maps: the maths and the drawings (the patch grid is the encoder's, see
test_encoder.py)."""

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


def _query_and_grid():
    rng = np.random.default_rng(0)
    query = rng.normal(size=(3, 8)).astype(np.float32)
    grid = rng.normal(size=(2, 5, 8)).astype(np.float32)
    return query, grid


def test_there_is_one_map_per_query_token_over_the_grid():
    query, grid = _query_and_grid()
    assert similarity_maps(query, grid).shape == (3, 2, 5)


def test_a_map_holds_the_dot_products_of_its_token_with_each_patch():
    query, grid = _query_and_grid()
    maps = similarity_maps(query, grid)
    assert maps[1, 1, 4] == pytest.approx(float(query[1] @ grid[1, 4]), rel=1e-5)


def test_the_maps_maxima_sum_to_the_maxsim_score():
    query, grid = _query_and_grid()
    maps = similarity_maps(query, grid)
    maxsim = (query @ grid.reshape(-1, 8).T).max(axis=1).sum()
    assert maps.max(axis=(1, 2)).sum() == pytest.approx(maxsim, rel=1e-5)


def test_similarity_maps_refuse_vectors_of_another_dimension():
    with pytest.raises(ValueError, match="query dim 8 differs from patch dim 4"):
        similarity_maps(np.zeros((2, 8)), np.zeros((2, 2, 4)))


def test_similarity_maps_refuse_arrays_of_the_wrong_rank():
    with pytest.raises(ValueError, match="must be"):
        similarity_maps(np.zeros(8), np.zeros((2, 2, 8)))


def test_normalise_map_rescales_min_to_0_and_max_to_1():
    assert normalise_map(np.array([[2.0, 4.0], [3.0, 2.0]])).tolist() == [[0, 1], [0.5, 0]]


def test_normalise_map_makes_a_constant_map_zeros():
    assert normalise_map(np.ones((2, 2))).tolist() == [[0, 0], [0, 0]]


def test_colorize_runs_from_dark_violet_to_yellow():
    colours = colorize(np.array([[0.0, 1.0]]))
    assert colours[0, 0].tolist() == [68, 1, 84] and colours[0, 1].tolist() == [253, 231, 37]


def test_hottest_region_maps_patches_to_page_pixels():
    heat = np.zeros((4, 5))
    heat[1, 3] = 1.0  # row 1, column 3 of a 4x5 grid
    assert hottest_region(heat, (500, 400), quantile=0.99) == (300, 100, 400, 200)
    heat[2, 4] = 0.9
    assert hottest_region(heat, (500, 400), quantile=0.9) == (300, 100, 500, 300)


PAGE = Image.new("RGB", (200, 100), "white")


def _corner_heat():
    heat = np.zeros((2, 4))
    heat[0, 0] = 1.0
    return heat


def test_the_overlay_has_the_pages_size():
    assert overlay_heatmap(PAGE, _corner_heat(), opacity=1.0).size == (200, 100)


def test_the_overlay_is_yellow_where_hot_and_blue_violet_where_cold():
    overlay = overlay_heatmap(PAGE, _corner_heat(), opacity=1.0)
    assert overlay.getpixel((5, 5))[0] > 200  # hottest corner is yellow
    assert overlay.getpixel((195, 95))[2] > 60  # coldest is dark blue-violet


def test_panels_are_laid_out_in_a_grid_of_captioned_thumbnails():
    heat = _corner_heat()
    panels = similarity_map_panels(PAGE, np.stack([heat, heat, heat]), ["a", "b", "c"], columns=2)
    assert panels.size == (640, 2 * (160 + 18))


def test_panels_need_one_label_per_map():
    with pytest.raises(ValueError, match="2 labels for 3 maps"):
        similarity_map_panels(PAGE, np.stack([_corner_heat()] * 3), ["a", "b"])


def test_draw_region_outlines_a_copy_of_the_page():
    boxed = draw_region(PAGE, (10, 10, 50, 50))
    assert boxed.getpixel((10, 30)) == (255, 0, 0) and PAGE.getpixel((10, 30)) == (255, 255, 255)
