"""Centroid interaction's prefilter scores (llama_index_vlm.search.centroids) against a plain
reference, through both of its ways of taking each page's best list."""

from __future__ import annotations

import numpy as np
import pytest

from llama_index_vlm.search import centroids as centroids_module
from llama_index_vlm.search.centroids import CentroidPostings


def _reference_scores(bags: list[set[int]], similarity: np.ndarray, n_probe: int) -> np.ndarray:
    """Per token: the best similarity among the page's centroids that the token probes (its
    ``n_probe`` most similar), else the ``n_probe + 1``-th similarity; summed over tokens."""
    scores = np.zeros(len(bags))
    for token in similarity:
        order = np.argsort(-token, kind="stable")
        probed, floor = set(order[:n_probe].tolist()), token[order[n_probe]]
        for page, bag in enumerate(bags):
            held = [token[c] for c in bag & probed]
            scores[page] += max([floor, *held])
    return scores


def _postings(n_pages: int, n_centroids: int, bag_size: int, seed: int):
    rng = np.random.default_rng(seed)
    bags = [set(rng.choice(n_centroids, bag_size, replace=False).tolist()) for _ in range(n_pages)]
    # Code rows as a fast index keeps them: each page's codes (a centroid may repeat) in order.
    rows = [np.array([*bag, *sorted(bag)[:2]], dtype=np.int32) for bag in bags]
    offsets = np.concatenate([[0], np.cumsum([row.size for row in rows])])
    return bags, CentroidPostings.build(np.concatenate(rows), offsets, n_centroids)


@pytest.mark.parametrize("list_by_list_from", [0, 10**9], ids=["list-by-list", "scattered"])
@pytest.mark.parametrize("n_probe", [1, 6, 64], ids=["probe-1", "probe-6", "probe-all"])
def test_scores_are_each_tokens_best_probed_centroid_or_the_floor(
    monkeypatch, list_by_list_from, n_probe
):
    monkeypatch.setattr(centroids_module, "LIST_BY_LIST_MIN_LENGTH", list_by_list_from)
    bags, postings = _postings(n_pages=40, n_centroids=24, bag_size=5, seed=1)
    similarity = np.random.default_rng(2).uniform(-1, 1, (7, 24)).astype(np.float32)
    scores = postings.scores(similarity, n_probe=n_probe)
    np.testing.assert_allclose(
        scores, _reference_scores(bags, similarity, min(n_probe, 23)), rtol=1e-5, atol=1e-5
    )


def test_both_ways_give_the_same_scores_on_long_lists(monkeypatch):
    _, postings = _postings(n_pages=3000, n_centroids=64, bag_size=20, seed=3)
    similarity = np.random.default_rng(4).uniform(-1, 1, (20, 64)).astype(np.float32)
    assert postings.slots.size / 64 >= centroids_module.LIST_BY_LIST_MIN_LENGTH  # the default
    list_by_list = postings.scores(similarity, n_probe=8)
    monkeypatch.setattr(centroids_module, "LIST_BY_LIST_MIN_LENGTH", 10**9)
    scattered = postings.scores(similarity, n_probe=8)
    # Same sums in the same order: the same bits, so the same pages go on.
    np.testing.assert_array_equal(list_by_list, scattered)


def test_a_token_whose_probed_lists_are_empty_scores_its_floor_everywhere(monkeypatch):
    monkeypatch.setattr(centroids_module, "LIST_BY_LIST_MIN_LENGTH", 0)
    # Centroid 3 is in no page's bag; the one token probes only it.
    postings = CentroidPostings.build(
        np.array([0, 1, 2, 0], dtype=np.int32), np.array([0, 2, 4]), 4
    )
    similarity = np.array([[0.1, 0.2, -0.5, 0.9]], dtype=np.float32)
    np.testing.assert_allclose(postings.scores(similarity, n_probe=1), [0.2, 0.2])
