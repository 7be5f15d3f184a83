"""Fast search keeps its recall on structurally different corpora, and is exact when asked.

The corpora come from ``benchmarks/corpora.py`` at test size (64-dim vectors, ~240 per page,
pooled x4 to ~60 codes as 1030 ColPali vectors pooled x8 give ~129):
each family differs in structure (blank share, a small shared codebook with near-tie ranks,
ColQwen2-like variable lengths with image-like regions, every page stored twice), not only in
seed. Recall counts a page tied with the exact 10th as found (twins tie).
"""

from __future__ import annotations

import numpy as np
import pytest
from corpora import family
from recall import recall_at_k, same_score

from llama_index_vlm.search import FastPageIndex, PageVectorMatrix, maxsim_scores, top_k

N_PAGES, DIM, N_PATCHES, N_QUERIES = 500, 64, 240, 20
PREFILTER_DEPTH = 100  # of 500 pages: the centroid stage does the narrowing


def fetch_from(pages):
    return lambda ids: [pages[i] for i in ids]


@pytest.fixture(
    scope="module",
    params=[
        (name, code_dtype)
        for name in ("blank-heavy", "codebook", "colqwen2", "duplicated")
        for code_dtype in ("float16", "bfloat16")
    ],
    ids=lambda param: f"{param[0]}, {param[1]} codes",
)
def corpus(request):
    """``(pages, queries, targets, exact top 10, index, exact scores)`` of one family, the
    index keeping its codes in one type (each CPU prefers one; both must keep the recall)."""
    name, code_dtype = request.param
    generator = family(name, dim=DIM, n_patches=N_PATCHES)
    pages = generator.pages(0, N_PAGES)
    targets = np.random.default_rng(7).choice(N_PAGES, size=N_QUERIES, replace=False)
    queries = [generator.query(int(target)) for target in targets]
    exact = maxsim_scores(queries, PageVectorMatrix.from_pages(pages))
    truth, _ = top_k(exact, 10)
    index = FastPageIndex(pool_factor=4, code_dtype=code_dtype)
    index.add(range(N_PAGES), pages)
    return pages, queries, targets, truth, index, exact


def test_recall_floor_on_each_family(corpus):
    pages, queries, targets, truth, index, exact = corpus
    recalls, firsts, planted = [], [], []
    for query, expected, target, scores in zip(queries, truth, targets, exact, strict=True):
        found, _ = index.search(
            query, 10, rerank_fn=fetch_from(pages), prefilter_depth=PREFILTER_DEPTH
        )
        recalls.append(recall_at_k(found, scores, 10))
        firsts.append(same_score(found[0], expected[0], scores))
        planted.append(same_score(found[0], target, scores))
    assert np.mean(recalls) >= 0.95
    assert np.mean(firsts) >= 0.95
    # The planted page (or its copy) comes first as often as exact search puts it first.
    exact_planted = [same_score(t[0], g, e) for t, g, e in zip(truth, targets, exact, strict=True)]
    assert np.mean(planted) >= np.mean(exact_planted) - 0.05


def test_fast_equals_exact_when_the_candidate_depth_covers_the_store(corpus):
    pages, queries, _, truth, index, _ = corpus
    # Ties (twins) go to the lower page index in both.
    for query, expected in zip(queries[:5], truth[:5], strict=True):
        found, scores = index.search(
            query, 10, candidate_depth=N_PAGES, rerank_fn=fetch_from(pages)
        )
        assert found == expected.tolist()
        np.testing.assert_allclose(scores, maxsim_scores(query, pages)[0][found], rtol=1e-6)


def test_filters_hold_in_fast_mode_with_the_prefilter(corpus):
    pages, queries, _, _, index, _ = corpus
    allowed = set(range(0, N_PAGES, 7))
    exact = maxsim_scores(queries[0], pages)[0]
    best_allowed = sorted(allowed, key=lambda i: -exact[i])[:5]
    found, _ = index.search(
        queries[0], 5, rerank_fn=fetch_from(pages), prefilter_depth=30, allowed=allowed
    )
    assert set(found) <= allowed
    assert found == best_allowed


@pytest.mark.parametrize(("code_dtype", "rtol"), [("float16", 1e-3), ("bfloat16", 8e-3)])
def test_short_pages_keep_every_vector_as_codes(code_dtype, rtol):
    # 23 vectors per page, as the tiny ColPali encoder gives: pooling them to 3 codes lost
    # most of the exact top 10; pages keep at least MIN_CODES_PER_PAGE codes.
    rng = np.random.default_rng(3)
    pages = [rng.standard_normal((23, DIM)).astype(np.float16) for _ in range(50)]
    index = FastPageIndex(code_dtype=code_dtype)
    index.add(range(50), pages)
    codes, _ = index.page_codes(7)
    assert codes.shape == (23, DIM)
    query = pages[7][:5].astype(np.float32)
    _, approximate = index.candidates(query, 50)
    # the same scores up to the code type's roundings (bfloat16: of the codes too)
    np.testing.assert_allclose(
        np.sort(approximate)[::-1], np.sort(maxsim_scores(query, pages)[0])[::-1], rtol=rtol
    )


def test_recall_counts_a_page_tied_with_the_exact_kth_as_found():
    scores = np.array([3.0, 2.0, 2.0, 1.0], dtype=np.float32)
    assert recall_at_k([0, 2], scores, 2) == 1.0  # page 2 ties page 1
    assert recall_at_k([0, 3], scores, 2) == 0.5
    assert same_score(2, 1, scores) and not same_score(3, 1, scores)
