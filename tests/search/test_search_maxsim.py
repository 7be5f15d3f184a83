"""Exact MaxSim and top-k (llama_index_vlm.search.maxsim), against plain references."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from llama_index_vlm.search import PageVectorMatrix, maxsim_scores, top_k


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


def _random_queries(rng) -> list[torch.Tensor]:
    return [torch.from_numpy(rng.standard_normal((n, 32)).astype(np.float32)) for n in (3, 7)]


def test_exact_matches_transformers_score_retrieval_on_equal_length_pages():
    transformers = pytest.importorskip("transformers")
    rng = np.random.default_rng(2)
    queries = _random_queries(rng)
    # Equal-length pages: score_retrieval pads nothing, so the two definitions coincide exactly.
    pages = [torch.from_numpy(rng.standard_normal((20, 32)).astype(np.float32)) for _ in range(9)]
    # score_retrieval never reads ``self``; calling it unbound avoids loading a tokenizer.
    expected = transformers.ColPaliProcessor.score_retrieval(None, queries, pages, batch_size=4)
    np.testing.assert_allclose(maxsim_scores(queries, pages), expected.numpy(), rtol=1e-5)


def test_exact_matches_transformers_score_retrieval_on_pages_of_any_length():
    transformers = pytest.importorskip("transformers")
    rng = np.random.default_rng(2)
    queries = _random_queries(rng)
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


def test_a_list_of_long_float16_pages_scores_as_the_packed_matrix(tmp_path):
    """Pages of a list long enough to be widened one by one (a rerank's ColPali pages), read
    from a read-only memory map as the fast index's files give them: the packed scores."""
    rng = np.random.default_rng(8)
    pages = random_pages(rng, 9, 16, min_len=300, max_len=700, dtype=np.float16)
    path = tmp_path / "pages.npy"
    np.save(path, np.concatenate(pages))
    mapped = np.load(path, mmap_mode="r")
    starts = np.cumsum([0] + [len(page) for page in pages])
    views = [mapped[start:stop] for start, stop in zip(starts, starts[1:], strict=False)]
    assert not views[0].flags.writeable
    query = rng.standard_normal((6, 16)).astype(np.float32)
    expected = np.array([[reference_maxsim(query, page) for page in pages]])
    for block_size in (None, 800, 10**6):
        scores = maxsim_scores(query, views, block_size=block_size)
        np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(
            scores, maxsim_scores(query, PageVectorMatrix.from_pages(pages), block_size=block_size)
        )


def test_page_vector_matrix_packs_pages_and_gives_each_back():
    rng = np.random.default_rng(4)
    pages = random_pages(rng, 5, 8)
    packed = PageVectorMatrix.from_pages(pages)
    assert packed.n_pages == len(packed) == 5 and packed.dim == 8
    assert packed.lengths.tolist() == [len(p) for p in pages]
    np.testing.assert_array_equal(packed.page(3), pages[3])


def test_page_vector_matrix_selects_pages_in_the_order_asked():
    rng = np.random.default_rng(4)
    pages = random_pages(rng, 5, 8)
    subset = PageVectorMatrix.from_pages(pages).select([4, 1])
    np.testing.assert_array_equal(subset.page(0), pages[4])
    np.testing.assert_array_equal(subset.page(1), pages[1])


def test_page_vector_matrix_refuses_a_page_without_vectors():
    with pytest.raises(ValueError, match="at least one vector"):
        PageVectorMatrix.from_pages([np.ones((2, 8)), np.ones((0, 8))])


def test_page_vector_matrix_refuses_pages_of_two_dimensions():
    with pytest.raises(ValueError, match="same vector dim"):
        PageVectorMatrix.from_pages([np.ones((2, 8)), np.ones((2, 4))])


def test_exact_refuses_a_query_of_another_dimension():
    packed = PageVectorMatrix.from_pages(random_pages(np.random.default_rng(4), 5, 8))
    with pytest.raises(ValueError, match="dim"):
        maxsim_scores(np.ones((2, 4)), packed)


TIED_SCORES = np.array([0.5, 0.9, 0.5, 0.1, 0.9])


def test_top_k_orders_best_first_and_breaks_ties_by_index():
    indices, values = top_k(TIED_SCORES, 3)
    assert indices.tolist() == [1, 4, 0]
    assert values.tolist() == [0.9, 0.9, 0.5]


def test_top_k_beyond_the_number_of_scores_returns_them_all():
    indices, _ = top_k(TIED_SCORES, 10)
    assert indices.tolist() == [1, 4, 0, 2, 3]


def test_top_k_ranks_each_row_of_a_batch():
    batch_indices, batch_values = top_k(np.stack([TIED_SCORES, -TIED_SCORES]), 2)
    assert batch_indices.tolist() == [[1, 4], [3, 0]]
    np.testing.assert_array_equal(batch_values[1], [-0.1, -0.5])


def test_top_k_of_zero_is_empty():
    assert top_k(TIED_SCORES, 0)[0].size == 0


def test_top_k_of_exact_scores_finds_the_page_a_query_was_cut_from():
    rng = np.random.default_rng(5)
    pages = PageVectorMatrix.from_pages(random_pages(rng, 200, 32, min_len=20, max_len=60))
    query = pages.page(123)[:6] + 0.05 * rng.standard_normal((6, 32)).astype(np.float32)
    best, _ = top_k(maxsim_scores(query, pages)[0], 1)
    assert best.tolist() == [123]


_READ_ONLY_VIEWS = """
import warnings
import numpy as np
from llama_index_vlm.search.maxsim import tensor_view

shown = []
warnings.showwarning = lambda message, *args, **kwargs: shown.append(str(message))
warnings.filterwarnings("default", message="once from here")  # once per place it comes from
page = np.arange(6, dtype=np.float32).reshape(2, 3)
page.setflags(write=False)
for _ in range(3):
    warnings.warn("once from here", UserWarning)
    assert tensor_view(page).sum().item() == 15.0
assert shown == ["once from here"], shown
"""


def test_views_of_read_only_arrays_warn_nothing_and_keep_other_warnings_once():
    """Views of read-only arrays (memory-mapped index files) neither show torch's warning nor
    reset the registry that shows a "default" warning once: a catch_warnings per view did, so
    a server's log repeated such warnings after every search. torch warns once per process, so
    each case runs in a process of its own."""
    subprocess.run([sys.executable, "-c", _READ_ONLY_VIEWS], check=True, timeout=120)
    # Only this package's views are covered: a user's own view still warns.
    users_view = (
        "import numpy as np, torch, llama_index_vlm.search.maxsim\n"
        "page = np.zeros(3); page.setflags(write=False); torch.from_numpy(page)"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", users_view],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "not writable" in result.stderr
