"""Exact MaxSim, top-k and token pooling (llama_index_vlm.search), against plain references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llama_index_vlm.search import (
    PageVectorMatrix,
    hierarchical_pool,
    kmeans_pool,
    maxsim_scores,
    top_k,
    ward_cluster_labels,
)


def reference_maxsim(query: np.ndarray, page: np.ndarray) -> float:
    """ColPali's MaxSim, written out: sum over query vectors of the best dot product."""
    query = query.astype(np.float64)
    page = page.astype(np.float64)
    return float(sum(max(float(q @ p) for p in page) for q in query))


def random_pages(rng, n_pages, dim, min_len=1, max_len=40, dtype=np.float32):
    return [
        rng.standard_normal((int(rng.integers(min_len, max_len + 1)), dim)).astype(dtype)
        for _ in range(n_pages)
    ]


@pytest.mark.parametrize("storage", [np.float32, np.float16])
def test_exact_equals_reference_loop_on_variable_length_pages(storage):
    rng = np.random.default_rng(0)
    pages = random_pages(rng, n_pages=37, dim=16, dtype=storage)
    queries = [rng.standard_normal((n, 16)).astype(np.float32) for n in (1, 5, 12)]
    packed = PageVectorMatrix.from_pages(pages)
    assert packed.vectors.dtype == storage
    scores = maxsim_scores(queries, packed)
    assert scores.shape == (3, 37) and scores.dtype == np.float32
    expected = np.array([[reference_maxsim(q, p) for p in pages] for q in queries])
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-4)


def test_exact_accepts_sequences_3d_arrays_and_tensors():
    rng = np.random.default_rng(1)
    pages = rng.standard_normal((6, 9, 8)).astype(np.float32)
    queries = rng.standard_normal((2, 4, 8)).astype(np.float32)
    expected = np.array([[reference_maxsim(q, p) for p in pages] for q in queries])
    np.testing.assert_allclose(maxsim_scores(queries, pages), expected, rtol=1e-5)
    np.testing.assert_allclose(maxsim_scores(queries, list(pages)), expected, rtol=1e-5)
    single = maxsim_scores(torch.from_numpy(queries[1]), [torch.from_numpy(p) for p in pages])
    assert single.shape == (1, 6)
    np.testing.assert_allclose(single[0], expected[1], rtol=1e-5)


def test_exact_matches_transformers_score_retrieval():
    transformers = pytest.importorskip("transformers")
    rng = np.random.default_rng(2)
    queries = [torch.from_numpy(rng.standard_normal((n, 32)).astype(np.float32)) for n in (3, 7)]
    # Equal-length pages: score_retrieval pads nothing, so the two definitions coincide exactly.
    pages = [torch.from_numpy(rng.standard_normal((20, 32)).astype(np.float32)) for _ in range(9)]
    # score_retrieval never reads ``self``; calling it unbound avoids loading a tokenizer.
    expected = transformers.ColPaliProcessor.score_retrieval(None, queries, pages, batch_size=4)
    np.testing.assert_allclose(maxsim_scores(queries, pages), expected.numpy(), rtol=1e-5)
    # Variable lengths with non-negative vectors: padding zeros can never win a max either.
    positive = [
        torch.from_numpy(np.abs(rng.standard_normal((n, 32))).astype(np.float32))
        for n in (3, 30, 11)
    ]
    expected = transformers.ColPaliProcessor.score_retrieval(
        None, [q.abs() for q in queries], positive
    )
    np.testing.assert_allclose(
        maxsim_scores([q.abs() for q in queries], positive), expected.numpy(), rtol=1e-5
    )


def test_block_size_does_not_change_results():
    rng = np.random.default_rng(3)
    pages = PageVectorMatrix.from_pages(random_pages(rng, 50, 24, dtype=np.float16))
    queries = [rng.standard_normal((n, 24)).astype(np.float32) for n in (2, 9)]
    reference = maxsim_scores(queries, pages)
    for block_size in (1, 7, 64, 500, 10**6):
        np.testing.assert_allclose(
            maxsim_scores(queries, pages, block_size=block_size), reference, rtol=1e-6
        )


def test_page_vector_matrix_packs_and_validates():
    rng = np.random.default_rng(4)
    pages = random_pages(rng, 5, 8)
    packed = PageVectorMatrix.from_pages(pages)
    assert packed.n_pages == len(packed) == 5 and packed.dim == 8
    assert packed.lengths.tolist() == [len(p) for p in pages]
    np.testing.assert_array_equal(packed.page(3), pages[3])
    subset = packed.select([4, 1])
    np.testing.assert_array_equal(subset.page(0), pages[4])
    np.testing.assert_array_equal(subset.page(1), pages[1])
    with pytest.raises(ValueError, match="at least one vector"):
        PageVectorMatrix.from_pages([np.ones((2, 8)), np.ones((0, 8))])
    with pytest.raises(ValueError, match="same vector dim"):
        PageVectorMatrix.from_pages([np.ones((2, 8)), np.ones((2, 4))])
    with pytest.raises(ValueError, match="dim"):
        maxsim_scores(np.ones((2, 4)), packed)


def test_top_k_orders_best_first_and_breaks_ties_by_index():
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.9])
    indices, values = top_k(scores, 3)
    assert indices.tolist() == [1, 4, 0]
    assert values.tolist() == [0.9, 0.9, 0.5]
    indices, _ = top_k(scores, 10)  # more than there are: all of them
    assert indices.tolist() == [1, 4, 0, 2, 3]
    batch_indices, batch_values = top_k(np.stack([scores, -scores]), 2)
    assert batch_indices.tolist() == [[1, 4], [3, 0]]
    np.testing.assert_array_equal(batch_values[1], [-0.1, -0.5])
    assert top_k(scores, 0)[0].size == 0


def test_top_k_of_exact_scores_finds_the_page_a_query_was_cut_from():
    rng = np.random.default_rng(5)
    pages = PageVectorMatrix.from_pages(random_pages(rng, 200, 32, min_len=20, max_len=60))
    query = pages.page(123)[:6] + 0.05 * rng.standard_normal((6, 32)).astype(np.float32)
    best, _ = top_k(maxsim_scores(query, pages)[0], 1)
    assert best.tolist() == [123]


def clustered_points(rng, n_clusters, per_cluster, dim):
    centres = rng.standard_normal((n_clusters, dim)) * 10
    points = np.repeat(centres, per_cluster, axis=0) + rng.standard_normal(
        (n_clusters * per_cluster, dim)
    )
    order = rng.permutation(len(points))
    return points[order].astype(np.float32), np.repeat(np.arange(n_clusters), per_cluster)[order]


def test_ward_labels_recover_well_separated_clusters():
    rng = np.random.default_rng(6)
    points, truth = clustered_points(rng, n_clusters=6, per_cluster=15, dim=8)
    labels = ward_cluster_labels(points, 6)
    assert sorted(set(labels.tolist())) == list(range(6))
    # Same partition up to renaming: each true cluster maps to exactly one label.
    pairs = set(zip(truth.tolist(), labels.tolist(), strict=True))
    assert len(pairs) == 6
    assert labels[0] == 0  # numbered by first appearance


def test_hierarchical_pool_shrinks_by_pool_factor_and_keeps_unit_norm():
    rng = np.random.default_rng(7)
    page = rng.standard_normal((103, 16)).astype(np.float16)
    pooled = hierarchical_pool(page, pool_factor=3)
    assert pooled.shape == (35, 16) and pooled.dtype == np.float16  # ceil(103 / 3)
    np.testing.assert_allclose(np.linalg.norm(pooled.astype(np.float32), axis=1), 1, atol=2e-3)
    tensor = hierarchical_pool(torch.from_numpy(page.astype(np.float32)), pool_factor=4)
    assert isinstance(tensor, torch.Tensor) and tuple(tensor.shape) == (26, 16)
    np.testing.assert_allclose(tensor.norm(dim=1).numpy(), 1, atol=1e-5)
    assert hierarchical_pool(page, pool_factor=1).shape == page.shape


def test_hierarchical_pool_merges_duplicates_before_distinct_vectors():
    rng = np.random.default_rng(8)
    distinct = rng.standard_normal((10, 16)).astype(np.float32)
    distinct /= np.linalg.norm(distinct, axis=1, keepdims=True)
    page = np.repeat(distinct, 3, axis=0)  # every vector three times
    pooled = hierarchical_pool(page, pool_factor=3)
    # Pooling 30 -> 10 must undo the duplication exactly, keeping every distinct vector.
    np.testing.assert_allclose(np.sort(pooled, axis=0), np.sort(distinct, axis=0), atol=1e-5)


def test_kmeans_pool_batches_pages_and_keeps_unit_norm():
    rng = np.random.default_rng(9)
    pages = rng.standard_normal((5, 100, 16)).astype(np.float32)
    pooled = kmeans_pool(pages, pool_factor=10)
    assert pooled.shape == (5, 10, 16)
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=2), 1, atol=1e-5)
    # A page's result does not depend on the other pages of its batch.
    np.testing.assert_allclose(kmeans_pool(pages[2], pool_factor=10), pooled[2], atol=1e-6)
    assert kmeans_pool(pages.astype(np.float16), pool_factor=10).dtype == np.float16


def test_pooled_maxsim_stays_close_to_exact_maxsim():
    rng = np.random.default_rng(10)
    points, _ = clustered_points(rng, n_clusters=12, per_cluster=20, dim=32)
    page = points / np.linalg.norm(points, axis=1, keepdims=True)
    query = page[rng.choice(len(page), 8, replace=False)]
    exact = maxsim_scores(query, [page])[0, 0]
    for pooled in (hierarchical_pool(page, 20), kmeans_pool(page, 20)):
        assert len(pooled) == 12
        approximate = maxsim_scores(query, [pooled])[0, 0]
        assert approximate == pytest.approx(exact, rel=0.05)
