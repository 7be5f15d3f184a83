"""exact_top_k: float16 screening, then float32 MaxSim of the pages that could rank; the
result must be float32 MaxSim's top k over every page, near-ties and masks included."""

from __future__ import annotations

import numpy as np
import pytest
from vectors import unit

from llama_index_vlm.search import (
    PageVectorMatrix,
    code_scores,
    exact_search,
    exact_top_k,
    max_vector_norm,
    maxsim_scores,
    top_k,
)
from llama_index_vlm.search.code_scores import half_maxsim_error_bound, half_maxsim_scores

DIM = 48


@pytest.fixture
def half_products(monkeypatch):
    """Screen with float16 products whatever this CPU's timing chose."""
    monkeypatch.setattr(code_scores, "half_products_are_fast", lambda: True)


@pytest.fixture
def rescored(monkeypatch) -> list[int]:
    """How many pages each call rescored with float32 MaxSim."""
    counts: list[int] = []
    original = exact_search.maxsim_scores

    def counting(query, pages, **kwargs):
        counts.append(pages.n_pages if isinstance(pages, PageVectorMatrix) else len(pages))
        return original(query, pages, **kwargs)

    monkeypatch.setattr(exact_search, "maxsim_scores", counting)
    return counts


def random_pages(lengths, seed: int, norm: float = 1.0) -> PageVectorMatrix:
    rng = np.random.default_rng(seed)
    return PageVectorMatrix.from_pages(
        [(norm * unit(rng.standard_normal((n, DIM)))).astype(np.float16) for n in lengths]
    )


def near_duplicate_pages(n_pages: int, seed: int) -> PageVectorMatrix:
    """One page with a little noise, n times: exact scores ~1e-4 apart, closer than float16
    products tell apart (a form filled in many times, a slide template)."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((30, DIM))
    return PageVectorMatrix.from_pages(
        [
            unit(base + 1e-3 * rng.standard_normal((30, DIM))).astype(np.float16)
            for _ in range(n_pages)
        ]
    )


def reference(query, pages, k, keep=None):
    scores = maxsim_scores(query, pages)[0]
    if keep is not None:
        scores = np.where(keep, scores, -np.inf).astype(np.float32)
    return top_k(scores, min(k, pages.n_pages))


def assert_same(result, expected):
    np.testing.assert_array_equal(result[0], expected[0])
    np.testing.assert_array_equal(result[1], expected[1])


@pytest.mark.parametrize("seed", range(3))
def test_clear_cut_pages_match_float32_and_rescore_few(half_products, rescored, seed):
    rng = np.random.default_rng(seed)
    pages = random_pages(rng.integers(20, 60, 300), seed)
    query = unit(rng.standard_normal((10, DIM))).astype(np.float32)
    assert_same(exact_top_k(query, pages, 5), reference(query, pages, 5))
    assert rescored and sum(rescored) < 60  # of 300 pages


@pytest.mark.parametrize("seed", range(4))
def test_near_duplicates_match_float32_where_the_screen_alone_does_not(
    half_products, rescored, seed
):
    pages = near_duplicate_pages(80, seed)
    query = unit(np.random.default_rng(50 + seed).standard_normal((12, DIM))).astype(np.float32)
    screened_order = top_k(half_maxsim_scores(query, pages), 10)[0]
    expected = reference(query, pages, 10)
    assert list(screened_order) != list(expected[0])  # float16 alone ranks them otherwise
    assert_same(exact_top_k(query, pages, 10), expected)
    assert sum(rescored) > 10  # the bound sent more pages to float32 than the 10 returned


def test_a_mask_keeps_pages_out(half_products):
    rng = np.random.default_rng(3)
    pages = random_pages(rng.integers(10, 40, 120), 3)
    query = unit(rng.standard_normal((8, DIM))).astype(np.float32)
    keep = rng.random(120) < 0.3
    result = exact_top_k(query, pages, 7, keep=keep)
    assert_same(result, reference(query, pages, 7, keep))
    assert keep[result[0]].all()


def test_fewer_kept_pages_than_k_gives_them_all_then_minus_infinity(half_products):
    pages = random_pages([12] * 20, 4)
    query = unit(np.random.default_rng(4).standard_normal((5, DIM))).astype(np.float32)
    keep = np.zeros(20, dtype=bool)
    keep[[2, 9, 15]] = True
    positions, scores = exact_top_k(query, pages, 10, keep=keep)
    assert sorted(positions[:3].tolist()) == [2, 9, 15]
    assert np.isfinite(scores[:3]).all() and np.isneginf(scores[3:]).all()
    assert_same((positions, scores), reference(query, pages, 10, keep))


def test_k_above_the_page_count_returns_every_page(half_products):
    pages = random_pages([7, 3, 9], 5)
    query = unit(np.random.default_rng(5).standard_normal((4, DIM))).astype(np.float32)
    positions, scores = exact_top_k(query, pages, 10)
    assert sorted(positions.tolist()) == [0, 1, 2] and np.isfinite(scores).all()


def test_blocks_do_not_change_the_result(half_products, monkeypatch):
    rng = np.random.default_rng(6)
    pages = random_pages(rng.integers(5, 50, 90), 6)
    query = unit(rng.standard_normal((9, DIM))).astype(np.float32)
    whole = exact_top_k(query, pages, 8)
    monkeypatch.setattr(code_scores, "_BLOCK_ROWS", 100)
    assert_same(exact_top_k(query, pages, 8), whole)
    assert_same(whole, reference(query, pages, 8))


@pytest.mark.parametrize("norm", [0.05, 1.0, 7.0])
@pytest.mark.parametrize("query_scale", [0.3, 1.0, 20.0])
def test_float16_scores_stay_within_the_error_bound(half_products, norm, query_scale):
    rng = np.random.default_rng(int(norm * 100 + query_scale))
    pages = random_pages(rng.integers(10, 80, 200), 7, norm=norm)
    query = (query_scale * rng.standard_normal((16, DIM))).astype(np.float32)
    gap = np.abs(half_maxsim_scores(query, pages) - maxsim_scores(query, pages)[0]).max()
    bound = half_maxsim_error_bound(query, max_vector_norm(pages))
    assert 0 < gap <= bound
    assert bound < 30 * gap  # and not so loose that every page gets rescored


def test_max_vector_norm_is_the_largest_norm_rounded_up():
    rng = np.random.default_rng(8)
    vectors = rng.standard_normal((500, DIM)).astype(np.float16)
    pages = PageVectorMatrix(vectors=vectors, offsets=np.array([0, 200, 500]))
    largest = np.linalg.norm(vectors.astype(np.float64), axis=1).max()
    assert largest <= max_vector_norm(pages) <= largest * (1 + 1e-5)


@pytest.mark.parametrize("case", ["float32 pages", "float16 products slow here", "a huge vector"])
def test_cases_float16_cannot_screen_are_scored_in_float32(monkeypatch, rescored, case):
    rng = np.random.default_rng(9)
    pages = random_pages([20] * 30, 9)
    query = unit(rng.standard_normal((6, DIM))).astype(np.float32)
    monkeypatch.setattr(code_scores, "half_products_are_fast", lambda: True)
    vector_norm = None
    if case == "float32 pages":
        pages = PageVectorMatrix(vectors=pages.vectors.astype(np.float32), offsets=pages.offsets)
    elif case == "float16 products slow here":
        monkeypatch.setattr(code_scores, "half_products_are_fast", lambda: False)
    else:
        vector_norm = 5_000.0
    exact_top_k(query, pages, 3, vector_norm=vector_norm)
    assert rescored == [30]  # every page, in float32


def test_k_below_one_is_refused():
    with pytest.raises(ValueError, match="k must be >= 1"):
        exact_top_k(np.ones((2, DIM), dtype=np.float32), random_pages([4], 10), 0)
