"""Token pooling (llama_index_vlm.search.pooling): Ward hierarchical and batched k-means."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llama_index_vlm.search import (
    hierarchical_pool,
    kmeans_pool,
    maxsim_scores,
    ward_cluster_labels,
)


def clustered_points(rng, n_clusters, per_cluster, dim):
    centres = rng.standard_normal((n_clusters, dim)) * 10
    points = np.repeat(centres, per_cluster, axis=0) + rng.standard_normal(
        (n_clusters * per_cluster, dim)
    )
    order = rng.permutation(len(points))
    return points[order].astype(np.float32), np.repeat(np.arange(n_clusters), per_cluster)[order]


# ------------------------------------------------------------------------------ Ward


def test_ward_labels_recover_well_separated_clusters():
    rng = np.random.default_rng(6)
    points, truth = clustered_points(rng, n_clusters=6, per_cluster=15, dim=8)
    labels = ward_cluster_labels(points, 6)
    assert sorted(set(labels.tolist())) == list(range(6))
    # Same partition up to renaming: each true cluster maps to exactly one label.
    pairs = set(zip(truth.tolist(), labels.tolist(), strict=True))
    assert len(pairs) == 6
    assert labels[0] == 0  # numbered by first appearance


def test_ward_labels_are_numbered_by_first_appearance():
    rng = np.random.default_rng(11)
    points, _ = clustered_points(rng, n_clusters=5, per_cluster=8, dim=4)
    labels = ward_cluster_labels(points, 5)
    first_seen = [labels.tolist().index(label) for label in range(5)]
    assert first_seen == sorted(first_seen)


def test_ward_labels_keep_every_vector_apart_when_asked_for_as_many_clusters():
    points = np.random.default_rng(12).standard_normal((7, 4))
    assert ward_cluster_labels(points, 7).tolist() == list(range(7))
    assert ward_cluster_labels(points, 50).tolist() == list(range(7))


def test_ward_labels_refuse_fewer_than_one_cluster():
    with pytest.raises(ValueError, match="n_clusters must be >= 1"):
        ward_cluster_labels(np.ones((5, 3)), 0)


def test_ward_labels_refuse_vectors_that_are_not_a_matrix():
    with pytest.raises(ValueError, match="must be 2-D"):
        ward_cluster_labels(np.ones((2, 5, 3)), 2)


# ------------------------------------------------------------------------------ hierarchical


def test_hierarchical_pool_shrinks_by_pool_factor_and_keeps_the_dtype():
    page = np.random.default_rng(7).standard_normal((103, 16)).astype(np.float16)
    pooled = hierarchical_pool(page, pool_factor=3)
    assert pooled.shape == (35, 16) and pooled.dtype == np.float16  # ceil(103 / 3)


def test_hierarchical_pool_returns_unit_vectors():
    page = np.random.default_rng(7).standard_normal((103, 16)).astype(np.float16)
    pooled = hierarchical_pool(page, pool_factor=3)
    np.testing.assert_allclose(np.linalg.norm(pooled.astype(np.float32), axis=1), 1, atol=2e-3)


def test_hierarchical_pool_of_a_tensor_is_a_unit_norm_tensor():
    page = np.random.default_rng(7).standard_normal((103, 16)).astype(np.float32)
    tensor = hierarchical_pool(torch.from_numpy(page), pool_factor=4)
    assert isinstance(tensor, torch.Tensor) and tuple(tensor.shape) == (26, 16)
    np.testing.assert_allclose(tensor.norm(dim=1).numpy(), 1, atol=1e-5)


def test_hierarchical_pool_factor_1_keeps_every_vector():
    page = np.random.default_rng(7).standard_normal((103, 16)).astype(np.float16)
    assert hierarchical_pool(page, pool_factor=1).shape == page.shape


def test_hierarchical_pool_merges_duplicates_before_distinct_vectors():
    rng = np.random.default_rng(8)
    distinct = rng.standard_normal((10, 16)).astype(np.float32)
    distinct /= np.linalg.norm(distinct, axis=1, keepdims=True)
    page = np.repeat(distinct, 3, axis=0)  # every vector three times
    pooled = hierarchical_pool(page, pool_factor=3)
    # Pooling 30 -> 10 must undo the duplication exactly, keeping every distinct vector.
    np.testing.assert_allclose(np.sort(pooled, axis=0), np.sort(distinct, axis=0), atol=1e-5)


def test_hierarchical_pool_of_identical_vectors_is_that_one_vector():
    # Every merge ties at height 0, so SciPy's cut keeps one cluster, not ceil(12 / 3)
    # identical copies of it; MaxSim scores the same either way.
    vector = np.random.default_rng(13).standard_normal(8).astype(np.float32)
    vector /= np.linalg.norm(vector)
    pooled = hierarchical_pool(np.tile(vector, (12, 1)), pool_factor=3)
    np.testing.assert_allclose(pooled, vector[None], atol=1e-6)


# ------------------------------------------------------------------------------ k-means


def test_kmeans_pool_pools_each_page_of_a_batch_to_unit_vectors():
    pages = np.random.default_rng(9).standard_normal((5, 100, 16)).astype(np.float32)
    pooled = kmeans_pool(pages, pool_factor=10)
    assert pooled.shape == (5, 10, 16)
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=2), 1, atol=1e-5)


def test_kmeans_pool_of_a_page_does_not_depend_on_its_batch():
    pages = np.random.default_rng(9).standard_normal((5, 100, 16)).astype(np.float32)
    pooled = kmeans_pool(pages, pool_factor=10)
    np.testing.assert_allclose(kmeans_pool(pages[2], pool_factor=10), pooled[2], atol=1e-6)


def test_kmeans_pool_keeps_float16():
    pages = np.random.default_rng(9).standard_normal((5, 100, 16)).astype(np.float32)
    assert kmeans_pool(pages.astype(np.float16), pool_factor=10).dtype == np.float16


# ------------------------------------------------------------------------------ both


@pytest.mark.parametrize("pool", [hierarchical_pool, kmeans_pool])
def test_pooled_maxsim_stays_close_to_exact_maxsim(pool):
    rng = np.random.default_rng(10)
    points, _ = clustered_points(rng, n_clusters=12, per_cluster=20, dim=32)
    page = points / np.linalg.norm(points, axis=1, keepdims=True)
    query = page[rng.choice(len(page), 8, replace=False)]
    exact = maxsim_scores(query, [page])[0, 0]
    pooled = pool(page, 20)
    assert len(pooled) == 12
    approximate = maxsim_scores(query, [pooled])[0, 0]
    assert approximate == pytest.approx(exact, rel=0.05)
