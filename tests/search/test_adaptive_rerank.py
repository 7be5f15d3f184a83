"""adaptive_rerank's stopping rule: how deep it reads, and what it counts as evidence."""

from __future__ import annotations

import numpy as np
import pytest

import llama_index_vlm.search.rerank as rerank
from llama_index_vlm.search import adaptive_rerank
from llama_index_vlm.search.rerank import first_round_depth, rerank_block_size

DIM = 8


def _pages(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    pages = rng.standard_normal((n, 6, DIM)).astype(np.float32)
    return list(pages / np.linalg.norm(pages, axis=-1, keepdims=True))


class _Fetch:
    """Serves pages by id and records each round's ids."""

    def __init__(self, pages):
        self.pages, self.rounds = pages, []

    def __call__(self, ids):
        self.rounds.append(list(ids))
        return [self.pages[i] for i in ids]


def _exact(query, page):
    return float((query @ page.T).max(axis=1).sum())


def test_a_clear_cut_ranking_stops_after_the_first_round():
    pages = _pages(100)
    query = pages[3][:2]
    exact = np.array([_exact(query, p) for p in pages])
    order = np.argsort(-exact)
    fetch = _Fetch(pages)

    result = adaptive_rerank(query, order.tolist(), exact[order], 5, fetch, min_depth=10)

    # The approximate scores are the exact ones: nothing unseen can gain, one round.
    assert fetch.rounds == [order[:10].tolist()]
    assert result.page_ids == order[:5].tolist() and result.n_reranked == 10
    assert not result.exhausted


def test_twins_do_not_count_twice_in_the_first_round():
    # Each page stored twice: equal codes, equal approximate scores. The first round must see
    # min_depth different pages, not min_depth / 2 pages twice each.
    distinct = _pages(40)
    pages = [page for page in distinct for _ in range(2)]
    query = distinct[0][:3]
    approximate = np.array([_exact(query, p) for p in pages])
    order = np.argsort(-approximate, kind="stable")
    fetch = _Fetch(pages)

    adaptive_rerank(query, order.tolist(), approximate[order], 4, fetch, min_depth=8)

    first = fetch.rounds[0]
    assert len(first) == 16
    assert len({int(i) // 2 for i in first}) == 8


def test_the_first_round_stops_at_max_depth_however_many_twins():
    pages = [_pages(1)[0]] * 50  # one page stored 50 times
    fetch = _Fetch(pages)
    approximate = np.full(50, 3.0, dtype=np.float32)

    result = adaptive_rerank(
        pages[0][:2], list(range(50)), approximate, 3, fetch, min_depth=4, max_depth=20
    )

    assert sum(map(len, fetch.rounds)) == 20 == result.n_reranked
    assert result.page_ids == [0, 1, 2]  # equal scores: the earlier candidates


@pytest.mark.parametrize(
    "approximate, n_distinct, depth",
    [
        ([5.0, 4.0, 3.0], 2, 2),
        ([5.0, 5.0, 4.0, 3.0, 3.0, 2.0], 3, 5),
        ([5.0, 5.0, 5.0], 1, 3),
        ([5.0, 5.0, 4.0], 4, 3),  # fewer scores than asked: all candidates
        ([], 3, 0),
    ],
)
def test_first_round_depth_counts_different_scores(approximate, n_distinct, depth):
    assert first_round_depth(np.array(approximate, dtype=np.float32), n_distinct) == depth


@pytest.mark.parametrize("threads, expected", [(1, rerank.ONE_THREAD_BLOCK_ROWS), (2, None)])
def test_a_rerank_on_one_thread_takes_small_blocks(monkeypatch, threads, expected):
    monkeypatch.setattr(rerank.torch, "get_num_threads", lambda: threads)
    assert rerank_block_size() == expected


def test_the_rerank_block_size_does_not_change_the_result(monkeypatch):
    rng = np.random.default_rng(4)
    pages = [rng.standard_normal((int(n), 8)).astype(np.float16) for n in rng.integers(3, 40, 60)]
    query = rng.standard_normal((5, 8)).astype(np.float32)
    approximate = np.sort(rng.standard_normal(60).astype(np.float32))[::-1]

    def ranked(block_rows):
        monkeypatch.setattr(rerank, "ONE_THREAD_BLOCK_ROWS", block_rows)
        monkeypatch.setattr(rerank.torch, "get_num_threads", lambda: 1)
        result = adaptive_rerank(
            query,
            list(range(60)),
            approximate,
            10,
            lambda ids: [pages[i] for i in ids],
            min_depth=60,
        )
        return result.page_ids, result.scores

    calls = []
    real = rerank.maxsim_scores
    monkeypatch.setattr(
        rerank, "maxsim_scores", lambda *a, **kw: calls.append(kw["block_size"]) or real(*a, **kw)
    )
    one_page_each, default = ranked(1), ranked(None)
    assert calls == [1, None]
    assert one_page_each[0] == default[0]
    np.testing.assert_array_equal(one_page_each[1], default[1])
