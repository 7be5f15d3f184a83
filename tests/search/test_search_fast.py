"""Fast multi-stage search (FastPageIndex, rerank_exactly) and the search-mode choice."""

from __future__ import annotations

import numpy as np
import pytest
from vectors import unit

from llama_index_vlm.errors import EmptyInputError
from llama_index_vlm.search import (
    FAST_MODE_MIN_PAGES,
    FastPageIndex,
    choose_search_mode,
    default_prefilter_depth,
    maxsim_scores,
    rerank_exactly,
    top_k,
)

DIM = 32


def synthetic_corpus(n_pages: int, seed: int = 0) -> list[np.ndarray]:
    """Small ColPali-like pages: mostly shared 'blank' directions, some topic-word content."""
    rng = np.random.default_rng(seed)
    blanks = unit(rng.standard_normal((3, DIM)))
    vocabulary = unit(rng.standard_normal((400, DIM)))
    topics = rng.integers(0, 400, size=(20, 25))
    pages = []
    for _ in range(n_pages):
        n_patches = int(rng.integers(60, 100))
        n_content = int(rng.integers(15, 30))
        page_words = rng.choice(topics[rng.integers(0, 20, size=2)].ravel(), size=6)
        words = rng.choice(page_words, size=n_content)  # words repeat on a page, as text does
        content = vocabulary[words] + 0.3 * unit(rng.standard_normal(DIM))
        content += 0.4 * rng.standard_normal((n_content, DIM)) / DIM**0.5
        blank = blanks[rng.integers(0, 3, size=n_patches - n_content)]
        blank = blank + 0.3 * rng.standard_normal(blank.shape) / DIM**0.5
        pages.append(unit(np.concatenate([content, blank])).astype(np.float16))
    return pages


def query_for(page: np.ndarray, n_content: int, rng: np.random.Generator) -> np.ndarray:
    """A query made of a page's first (content) patches plus noise."""
    chosen = rng.choice(n_content, size=8, replace=False)
    tokens = page[chosen].astype(np.float32) + 0.5 * rng.standard_normal((8, DIM)) / DIM**0.5
    return unit(tokens)


@pytest.fixture(scope="module")
def corpus() -> list[np.ndarray]:
    return synthetic_corpus(600)


def fetch_from(pages):
    return lambda page_ids: [pages[i] for i in page_ids]


def test_fast_finds_the_planted_needle_with_exact_scores():
    rng = np.random.default_rng(1)
    pages = [unit(rng.standard_normal((80, DIM))).astype(np.float16) for _ in range(400)]
    needle = 271
    query = unit(pages[needle][:10].astype(np.float32) + 0.1 * rng.standard_normal((10, DIM)))
    index = FastPageIndex(pool_factor=8)
    index.add(range(400), pages)
    page_ids, scores = index.search(
        query, k=5, candidate_depth=20, rerank_fn=fetch_from(pages), prefilter_depth=50
    )
    exact = maxsim_scores(query, pages)[0]
    assert page_ids[0] == needle == int(np.argmax(exact))
    np.testing.assert_allclose(scores, exact[page_ids], rtol=1e-6)  # reranked scores are exact
    assert list(scores) == sorted(scores, reverse=True)


@pytest.mark.parametrize("prefilter", ["centroids", "binary", None])
def test_fast_recall_at_10_against_exact(corpus, prefilter):
    rng = np.random.default_rng(2)
    targets = rng.choice(len(corpus), size=20, replace=False)
    # Content patches come first in each synthetic page; at least 15 of them.
    queries = [query_for(corpus[t], 15, rng) for t in targets]
    truth, _ = top_k(maxsim_scores(queries, corpus), 10)
    index = FastPageIndex(pool_factor=8, prefilter=prefilter)
    index.add(range(len(corpus)), corpus)
    recalls, firsts = [], []
    for query, expected, target in zip(queries, truth, targets, strict=True):
        found, _ = index.search(
            query, k=10, candidate_depth=40, rerank_fn=fetch_from(corpus), prefilter_depth=150
        )
        recalls.append(len(set(found) & set(expected.tolist())) / 10)
        firsts.append(found[0] == target)
    # Floor: 40 of 600 pages reranked (the binary prefilter keeps 150); measured 0.945 with
    # the prefilter and 0.975 without.
    assert np.mean(recalls) >= 0.9
    assert all(firsts)


def test_add_in_chunks_matches_bulk_build(corpus):
    query = query_for(corpus[10], 15, np.random.default_rng(3))
    bulk = FastPageIndex()
    bulk.add(range(200), corpus[:200])
    chunked = FastPageIndex()
    for start in range(0, 200, 37):
        stop = min(200, start + 37)
        chunked.add(range(start, stop), corpus[start:stop])
    assert len(chunked) == len(bulk) == 200
    for index in (bulk, chunked):
        assert index.candidates(query, depth=20)[0] == bulk.candidates(query, depth=20)[0]


class _NamedPages:
    """300 corpus pages indexed by id ``page-N``, and a query cut from page-42."""

    def __init__(self, corpus):
        self.ids = [f"page-{i}" for i in range(300)]
        self.by_id = dict(zip(self.ids, corpus[:300], strict=True))
        self.index = FastPageIndex(pool_factor=8)
        self.index.add(self.ids, corpus[:300])
        self.query = query_for(self.by_id["page-42"], 15, np.random.default_rng(4))

    def search(self) -> list[str]:
        fetch = fetch_from(self.by_id)
        return self.index.search(self.query, k=10, candidate_depth=30, rerank_fn=fetch)[0]


@pytest.fixture
def named_pages(corpus) -> _NamedPages:
    return _NamedPages(corpus)


def test_a_removed_page_is_no_longer_found(named_pages):
    assert named_pages.search()[0] == "page-42"
    assert named_pages.index.remove(["page-42", "not-there"]) == 1
    assert "page-42" not in named_pages.index and len(named_pages.index) == 299
    assert "page-42" not in named_pages.search()


def test_removing_more_than_a_quarter_compacts_and_keeps_results_correct(named_pages):
    ids = named_pages.ids
    named_pages.index.remove(["page-42"])
    removed = ids[100:200]
    named_pages.index.remove(removed)
    assert len(named_pages.index) == 199
    assert named_pages.index.page_ids == ids[:42] + ids[43:100] + ids[200:]
    assert not set(named_pages.search()) & set(removed)


def test_adding_a_stored_id_again_replaces_its_codes(named_pages):
    index, by_id = named_pages.index, named_pages.by_id
    index.remove(["page-42"])
    # page-7's id now holds page-42's vectors.
    index.add(["page-7", "page-42"], [by_id["page-42"], by_id["page-42"]])
    by_id["page-7"] = by_id["page-42"]
    assert len(index) == 300 and len(index.page_ids) == 300
    assert index.page_ids[-2:] == ["page-7", "page-42"]
    assert set(named_pages.search()[:2]) == {"page-7", "page-42"}


def test_allowed_restricts_results(corpus):
    index = FastPageIndex(pool_factor=8)
    index.add(range(100), corpus[:100])
    query = query_for(corpus[5], 15, np.random.default_rng(5))
    allowed = {1, 2, 3, 50}
    found, _ = index.search(query, k=10, rerank_fn=fetch_from(corpus), allowed=allowed)
    assert set(found) == allowed
    assert index.search(query, k=3, allowed=set())[0] == []


@pytest.fixture
def small_index(corpus) -> FastPageIndex:
    index = FastPageIndex()
    index.add(range(20), corpus[:20])
    return index


def test_an_empty_index_finds_nothing():
    assert FastPageIndex().search(np.ones((3, DIM)), k=5) == ([], pytest.approx(np.zeros(0)))


def test_an_empty_query_is_refused(small_index):
    with pytest.raises(EmptyInputError):
        small_index.search(np.zeros((0, DIM)), k=5)


def test_a_query_of_another_dimension_is_refused(small_index):
    with pytest.raises(ValueError, match="dim"):
        small_index.search(np.ones((3, DIM + 1)), k=5)


def test_a_rerank_function_returning_too_few_pages_is_refused(small_index, corpus):
    with pytest.raises(ValueError, match="returned 1 pages"):
        small_index.search(np.ones((3, DIM)), k=5, rerank_fn=lambda ids: [corpus[0]])


def test_adding_fewer_page_ids_than_pages_is_refused(small_index, corpus):
    with pytest.raises(ValueError, match="page ids"):
        small_index.add([1, 2], corpus[:3])


def test_without_a_rerank_function_approximate_scores_come_back_best_first(small_index, corpus):
    page_ids, scores = small_index.search(corpus[3][:4], k=20)
    assert len(page_ids) == 20 and list(scores) == sorted(scores, reverse=True)
    assert small_index.nbytes > 0


@pytest.fixture(scope="module")
def full_index(corpus) -> FastPageIndex:
    index = FastPageIndex()
    index.add(range(len(corpus)), corpus)
    return index


def _query_for_page_42(corpus) -> np.ndarray:
    return query_for(corpus[42], 15, np.random.default_rng(9))


def test_rerank_exactly_is_the_last_stage_of_search(corpus, full_index):
    query = _query_for_page_42(corpus)
    candidate_ids, _ = full_index.candidates(query, depth=30)
    page_ids, scores = rerank_exactly(query, candidate_ids, 5, fetch_from(corpus))
    expected = full_index.search(query, k=5, candidate_depth=30, rerank_fn=fetch_from(corpus))
    assert page_ids == expected[0]
    np.testing.assert_array_equal(scores, expected[1])


def test_rerank_exactly_orders_candidates_by_exact_maxsim(corpus, full_index):
    query = _query_for_page_42(corpus)
    candidate_ids, _ = full_index.candidates(query, depth=30)
    page_ids, _ = rerank_exactly(query, candidate_ids, 5, fetch_from(corpus))
    exact = maxsim_scores(query, [corpus[i] for i in candidate_ids])[0]
    assert page_ids == [candidate_ids[i] for i in np.argsort(-exact, kind="stable")[:5]]


def test_rerank_exactly_of_no_candidates_is_nothing(corpus):
    assert rerank_exactly(_query_for_page_42(corpus), [], 5, fetch_from(corpus))[0] == []


def test_rerank_exactly_refuses_a_fetch_returning_too_few_pages(corpus):
    with pytest.raises(ValueError, match="returned 1 pages"):
        rerank_exactly(_query_for_page_42(corpus), [1, 2], 5, lambda ids: [corpus[0]])


def test_rerank_exactly_refuses_k_below_1(corpus):
    with pytest.raises(ValueError, match="k must be"):
        rerank_exactly(_query_for_page_42(corpus), [1, 2], 0, fetch_from(corpus))


def test_encode_then_add_codes_equals_add(corpus):
    direct = FastPageIndex()
    direct.add(range(50), corpus[:50])
    from_codes = FastPageIndex()
    from_codes.add_codes(range(50), FastPageIndex().encode(corpus[:50]))
    query = corpus[9][:5]
    direct_ids, direct_scores = direct.candidates(query, 10)
    code_ids, code_scores = from_codes.candidates(query, 10)
    assert direct_ids == code_ids and direct_ids[0] == 9
    np.testing.assert_allclose(direct_scores, code_scores)


def test_auto_search_mode_is_exact_below_fast_min_pages_and_fast_from_it():
    assert choose_search_mode(FAST_MODE_MIN_PAGES - 1) == "exact"
    assert choose_search_mode(FAST_MODE_MIN_PAGES) == "fast"


def test_a_named_search_mode_wins_over_the_store_size():
    assert choose_search_mode(10, "fast") == "fast"
    assert choose_search_mode(10**6, "exact") == "exact"


def test_an_unknown_search_mode_is_refused():
    with pytest.raises(ValueError, match="search_mode"):
        choose_search_mode(10, "quick")


@pytest.mark.parametrize(
    ("n_pages", "depth"),
    [(100, 512), (2_000, 512), (20_000, 1_000), (40_960, 2_048), (10**6, 2_048)],
)
def test_the_default_prefilter_keeps_5_percent_between_512_and_2048_pages(n_pages, depth):
    assert default_prefilter_depth(n_pages) == depth


def test_twin_pages_tie_by_page_id_whatever_order_they_were_added_in():
    rng = np.random.default_rng(11)
    page = rng.standard_normal((30, DIM)).astype(np.float16)
    others = [rng.standard_normal((30, DIM)).astype(np.float16) for _ in range(3)]
    pages = {"z-copy": page, "b": others[0], "a-copy": page, "c": others[1]}
    index = FastPageIndex()
    index.add(list(pages), list(pages.values()))
    query = page[:4].astype(np.float32)

    ids, _ = index.candidates(query, 4)
    assert ids[:2] == ["a-copy", "z-copy"]
    found, scores = index.search(query, 2, rerank_fn=lambda ids: [pages[i] for i in ids])
    assert found == ["a-copy", "z-copy"] and scores[0] == scores[1]


def test_twins_with_ids_that_do_not_compare_keep_the_order_they_were_added_in():
    rng = np.random.default_rng(12)
    page = rng.standard_normal((30, DIM)).astype(np.float16)
    index = FastPageIndex()
    index.add(["x", 7], [page, page])

    ids, scores = index.candidates(page[:4].astype(np.float32), 2)
    assert ids == ["x", 7] and scores[0] == scores[1]


@pytest.mark.parametrize(
    ("n_codes", "expected"),
    [
        (10, 64),  # the floor for a handful of codes
        (30_000, 256),  # 500 pages of 60 codes, as in the tests: 2 sqrt(n), 117 codes each
        (46_000, 512),  # 2,000 pages of 23 vectors (a tiny encoder): 2 sqrt(n) still
        (86_000, 1024),  # 2,000 pages pooled to 43 codes: 4 sqrt(n), 84 codes each
        (184_000, 2048),  # 2,000 ColQwen2-like pages: 2 sqrt(n) gave 1,024
        (923_000, 4096),  # 10k ColQwen2-like pages: 2 sqrt(n) gave 2,048
        (12_900_000, 8192),  # 100k ColPali pages: the ceiling, as before
    ],
)
def test_codebook_size_is_near_four_square_roots_where_64_codes_fill_each(n_codes, expected):
    from llama_index_vlm.search.centroids import codebook_size

    assert codebook_size(n_codes) == expected
