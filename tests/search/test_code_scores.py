"""Pooled-code MaxSim multiplied as float16 (code_scores), against float32 MaxSim."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vectors import unit

from llama_index_vlm.search import FastPageIndex, PageVectorMatrix, code_scores, maxsim_scores
from llama_index_vlm.search.code_scores import code_maxsim_scores, half_products_are_fast

DIM = 64


def codes_and_offsets(lengths: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    codes = unit(rng.standard_normal((sum(lengths), DIM))).astype(np.float16)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return codes, offsets


def float32_reference(query, codes, offsets, slots) -> np.ndarray:
    pages = [codes[offsets[s] : offsets[s + 1]].astype(np.float32) for s in slots]
    return maxsim_scores(query, PageVectorMatrix.from_pages(pages))[0]


@pytest.fixture(params=[True, False], ids=["float16 products", "widened to float32"])
def products(request, monkeypatch) -> bool:
    monkeypatch.setattr(code_scores, "half_products_are_fast", lambda: request.param)
    return request.param


@pytest.mark.parametrize(
    "lengths",
    [[32] * 40, [23, 40, 32, 97, 5, 64] * 7],
    ids=["equal-length pages", "pages of different lengths"],
)
def test_scores_match_float32_maxsim_of_the_chosen_pages(products, lengths):
    codes, offsets = codes_and_offsets(lengths)
    rng = np.random.default_rng(1)
    query = unit(rng.standard_normal((12, DIM))).astype(np.float32)
    slots = np.array([3, 0, 17, 5, len(lengths) - 1, 8])
    scores = code_maxsim_scores(query, codes, offsets, slots)
    reference = float32_reference(query, codes, offsets, slots)
    assert scores.dtype == np.float32 and scores.shape == (6,)
    if products:
        # float16 products round each similarity to ~1e-3 of its value.
        np.testing.assert_allclose(scores, reference, rtol=0, atol=2e-3 * 12)
    else:
        np.testing.assert_array_equal(scores, reference)


def test_no_pages_chosen_gives_no_scores(products):
    codes, offsets = codes_and_offsets([32] * 3)
    query = np.ones((2, DIM), dtype=np.float32)
    scores = code_maxsim_scores(query, codes, offsets, np.array([], dtype=np.int64))
    assert scores.shape == (0,) and scores.dtype == np.float32


def test_blocks_do_not_change_the_scores(products, monkeypatch):
    codes, offsets = codes_and_offsets([23, 40, 32, 97, 5, 64] * 7)
    query = unit(np.random.default_rng(2).standard_normal((9, DIM))).astype(np.float32)
    slots = np.arange(42)
    whole = code_maxsim_scores(query, codes, offsets, slots)
    monkeypatch.setattr(code_scores, "_BLOCK_ROWS", 100)  # several pages a block, some alone
    np.testing.assert_array_equal(code_maxsim_scores(query, codes, offsets, slots), whole)


def test_a_long_query_vector_does_not_overflow_float16():
    codes, offsets = codes_and_offsets([32] * 10)
    query = 1e5 * unit(np.random.default_rng(3).standard_normal((4, DIM))).astype(np.float32)
    slots = np.arange(10)
    scores = code_maxsim_scores(query, codes, offsets, slots)
    reference = float32_reference(query, codes, offsets, slots)
    assert np.isfinite(scores).all()
    np.testing.assert_allclose(scores, reference, rtol=2e-3)


def test_float16_product_speed_is_measured_once():
    first = half_products_are_fast()
    assert isinstance(first, bool)
    assert half_products_are_fast.cache_info().currsize == 1
    assert half_products_are_fast() is first


def _float16_accumulating_mm(original):
    """torch.mm, except that float16 products are summed in float16, term by term."""

    def mm(left, right, *args, **kwargs):
        if left.dtype != torch.float16:
            return original(left, right, *args, **kwargs)
        total = torch.zeros(left.shape[0], right.shape[1], dtype=torch.float16)
        for j in range(left.shape[1]):
            total += left[:, j : j + 1] * right[j : j + 1, :]
        return total

    return mm


def test_float16_products_summed_in_float16_are_refused(monkeypatch):
    generator = torch.Generator().manual_seed(3)
    query = torch.randn(8, 128, generator=generator)
    rows = torch.randn(256, 128, generator=generator).half()
    float16_mm = _float16_accumulating_mm(torch.mm)
    # the real kernel here (float32 accumulation on x86 CPUs) passes the check
    assert code_scores.half_products_accumulate_in_float32(query, rows)
    monkeypatch.setattr(torch, "mm", float16_mm)
    assert not code_scores.half_products_accumulate_in_float32(query, rows)
    assert half_products_are_fast.__wrapped__() is False  # the process's answer is kept


def test_fast_index_returns_the_same_pages_either_way(monkeypatch):
    rng = np.random.default_rng(4)
    pages = [
        unit(rng.standard_normal((int(n), DIM))).astype(np.float16)
        for n in rng.integers(40, 90, 300)
    ]
    queries = [
        unit(pages[i][:6].astype(np.float32) + 0.2 * rng.standard_normal((6, DIM)))
        for i in (5, 77, 250)
    ]
    index = FastPageIndex(pool_factor=4)
    index.add(list(range(len(pages))), pages)

    def search(half: bool):
        monkeypatch.setattr(code_scores, "half_products_are_fast", lambda: half)
        return [
            index.search(q.astype(np.float32), k=5, rerank_fn=lambda ids: [pages[i] for i in ids])
            for q in queries
        ]

    for (ids_half, scores_half), (ids_wide, scores_wide) in zip(
        search(True), search(False), strict=True
    ):
        assert ids_half == ids_wide
        np.testing.assert_array_equal(scores_half, scores_wide)  # the rerank is exact
