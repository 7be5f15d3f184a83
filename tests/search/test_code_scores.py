"""Pooled-code MaxSim multiplied as float16 or bfloat16 (code_scores), against float32 MaxSim."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vectors import unit

from llama_index_vlm.search import (
    FastPageIndex,
    PageVectorMatrix,
    adaptive_rerank,
    code_scores,
    maxsim_scores,
    top_k,
)
from llama_index_vlm.search.code_scores import (
    code_matrix,
    code_maxsim_scores,
    float16_codes,
    half_products_are_fast,
)

DIM = 64
CODE_DTYPES = ("float16", "bfloat16")


def codes_and_offsets(lengths: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    codes = unit(rng.standard_normal((sum(lengths), DIM))).astype(np.float16)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return codes, offsets


def float32_reference(query, codes, offsets, slots) -> np.ndarray:
    pages = [codes[offsets[s] : offsets[s + 1]].astype(np.float32) for s in slots]
    return maxsim_scores(query, PageVectorMatrix.from_pages(pages))[0]


#: How far one similarity of unit vectors may move: the query's and the result's roundings
#: (unit roundoff 2**-11 for float16, 2**-8 for bfloat16), plus float32 sums.
SIMILARITY_ERROR = {"float16 products": 2.1 * 2.0**-11, "bfloat16 products": 2.1 * 2.0**-8}


@pytest.fixture(
    params=["float16 products", "bfloat16 products", "widened to float32"],
)
def products(request, monkeypatch) -> str:
    half = request.param == "float16 products"
    monkeypatch.setattr(code_scores, "half_products_are_fast", lambda: half)
    return request.param


def stored(codes: np.ndarray, products: str) -> np.ndarray:
    """The codes as an index keeps them for ``products``."""
    return code_matrix(codes, "bfloat16" if products == "bfloat16 products" else "float16")


@pytest.mark.parametrize(
    "lengths",
    [[32] * 40, [23, 40, 32, 97, 5, 64] * 7],
    ids=["equal-length pages", "pages of different lengths"],
)
def test_scores_match_float32_maxsim_of_the_chosen_pages(products, lengths):
    codes, offsets = codes_and_offsets(lengths)
    codes = stored(codes, products)
    rng = np.random.default_rng(1)
    query = unit(rng.standard_normal((12, DIM))).astype(np.float32)
    slots = np.array([3, 0, 17, 5, len(lengths) - 1, 8])
    scores = code_maxsim_scores(query, codes, offsets, slots)
    # the float32 MaxSim of the codes as stored (bfloat16 codes: their exact float16 values)
    reference = float32_reference(query, float16_codes(codes), offsets, slots)
    assert scores.dtype == np.float32 and scores.shape == (6,)
    if products == "widened to float32":
        np.testing.assert_array_equal(scores, reference)
    else:
        # each of the 12 tokens' best similarity moves by at most one similarity's error
        np.testing.assert_allclose(scores, reference, rtol=0, atol=SIMILARITY_ERROR[products] * 12)
        assert not np.array_equal(scores, reference)  # the 16-bit products did run


def test_no_pages_chosen_gives_no_scores(products):
    codes, offsets = codes_and_offsets([32] * 3)
    query = np.ones((2, DIM), dtype=np.float32)
    empty = np.array([], dtype=np.int64)
    scores = code_maxsim_scores(query, stored(codes, products), offsets, empty)
    assert scores.shape == (0,) and scores.dtype == np.float32


def test_blocks_do_not_change_the_scores(products, monkeypatch):
    codes, offsets = codes_and_offsets([23, 40, 32, 97, 5, 64] * 7)
    codes = stored(codes, products)
    query = unit(np.random.default_rng(2).standard_normal((9, DIM))).astype(np.float32)
    slots = np.arange(42)
    monkeypatch.setattr(code_scores, "_BLOCK_ROWS", 1 << 20)  # one block, whatever the threads
    monkeypatch.setattr(code_scores, "_ONE_THREAD_BLOCK_ROWS", 1 << 20)
    whole = code_maxsim_scores(query, codes, offsets, slots)
    monkeypatch.setattr(code_scores, "_BLOCK_ROWS", 100)  # several pages a block, some alone
    monkeypatch.setattr(code_scores, "_ONE_THREAD_BLOCK_ROWS", 100)
    np.testing.assert_array_equal(code_maxsim_scores(query, codes, offsets, slots), whole)


@pytest.mark.parametrize("threads, rows", [(1, 300), (2, 1000)])
def test_products_on_one_thread_take_smaller_blocks(monkeypatch, threads, rows):
    monkeypatch.setattr(code_scores, "_BLOCK_ROWS", 1000)
    monkeypatch.setattr(code_scores, "_ONE_THREAD_BLOCK_ROWS", 300)
    monkeypatch.setattr(code_scores.torch, "get_num_threads", lambda: threads)
    offsets = np.arange(0, 2001, 100)  # 20 pages of 100 rows
    rows_t = torch.zeros((2000, DIM), dtype=torch.bfloat16)
    products = code_scores._HalfProducts(
        np.ones((3, DIM), np.float32), offsets, rows_t, gathered=True
    )
    sizes = {int(offsets[last] - offsets[first]) for first, last in products.blocks}
    assert max(sizes) == rows and products.blocks[-1][1] == 20


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_long_query_vector_does_not_overflow(dtype):
    codes, offsets = codes_and_offsets([32] * 10)
    codes = code_matrix(codes, dtype)
    query = 1e5 * unit(np.random.default_rng(3).standard_normal((4, DIM))).astype(np.float32)
    slots = np.arange(10)
    scores = code_maxsim_scores(query, codes, offsets, slots)
    reference = float32_reference(query, float16_codes(codes), offsets, slots)
    assert np.isfinite(scores).all()
    np.testing.assert_allclose(scores, reference, rtol=2e-3 if dtype == "float16" else 1.6e-2)


def test_bfloat16_codes_round_to_nearest_and_come_back_as_float16(monkeypatch):
    codes, _ = codes_and_offsets([40] * 5)
    bits = code_matrix(codes, "bfloat16")
    assert bits.dtype == np.uint16 and bits.shape == codes.shape
    nearest = torch.from_numpy(codes).to(torch.bfloat16)  # torch rounds to nearest even
    assert torch.equal(code_scores.code_tensor(bits), nearest)
    back = float16_codes(bits)
    assert back.dtype == np.float16
    np.testing.assert_array_equal(back, nearest.to(torch.float16).numpy())
    # within bfloat16's rounding of each value, and not all equal (rounding happened)
    np.testing.assert_allclose(back, codes, rtol=2.0**-8, atol=0)
    assert not np.array_equal(back, codes)
    monkeypatch.setattr(code_scores, "_BLOCK_ROWS", 7)  # converted block by block
    np.testing.assert_array_equal(code_matrix(codes, "bfloat16"), bits)
    assert code_matrix(codes, "float16") is codes
    with pytest.raises(ValueError, match="code dtype"):
        code_matrix(codes, "int8")


@pytest.mark.parametrize(
    "probe",
    [
        code_scores.half_products_are_fast,
        code_scores.bfloat16_products_are_fast,
        code_scores.preferred_code_dtype,
    ],
)
def test_product_speeds_are_measured_once(probe):
    first = probe()
    assert first in (True, False, "float16", "bfloat16")
    assert probe.cache_info().currsize == 1
    assert probe() is first


@pytest.mark.parametrize(
    ("half_fast", "bfloat16_fast", "expected"),
    [
        (True, True, "float16"),
        (True, False, "float16"),
        (False, True, "bfloat16"),
        (False, False, "float16"),  # widened to float32 at search time
    ],
)
def test_the_preferred_code_type_is_the_fast_one(monkeypatch, half_fast, bfloat16_fast, expected):
    monkeypatch.setattr(code_scores, "half_products_are_fast", lambda: half_fast)
    monkeypatch.setattr(code_scores, "bfloat16_products_are_fast", lambda: bfloat16_fast)
    assert code_scores.preferred_code_dtype.__wrapped__() == expected


def _float16_accumulating_mm(original):
    """torch.mm, except that 16-bit products are summed in their type, term by term."""

    def mm(left, right, *args, **kwargs):
        if left.dtype not in (torch.float16, torch.bfloat16):
            return original(left, right, *args, **kwargs)
        total = torch.zeros(left.shape[0], right.shape[1], dtype=left.dtype)
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
    assert code_scores.products_accumulate_in_float32(query, rows)
    monkeypatch.setattr(torch, "mm", float16_mm)
    assert not code_scores.products_accumulate_in_float32(query, rows)
    assert half_products_are_fast.__wrapped__() is False  # the process's answer is kept


def test_bfloat16_products_summed_in_bfloat16_are_refused(monkeypatch):
    generator = torch.Generator().manual_seed(4)
    query = torch.randn(8, 128, generator=generator)
    rows = torch.randn(256, 128, generator=generator).to(torch.bfloat16)
    assert code_scores.products_accumulate_in_float32(query, rows)  # torch's own kernel
    monkeypatch.setattr(torch, "mm", _float16_accumulating_mm(torch.mm))
    assert not code_scores.products_accumulate_in_float32(query, rows)
    assert code_scores.bfloat16_products_are_fast.__wrapped__() is False


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
    indexes = {dtype: FastPageIndex(pool_factor=4, code_dtype=dtype) for dtype in CODE_DTYPES}
    codes = indexes["float16"].encode(pages)
    for index in indexes.values():
        index.add_codes(list(range(len(pages))), codes)

    def search(half: bool, dtype: str):
        monkeypatch.setattr(code_scores, "half_products_are_fast", lambda: half)
        return [
            indexes[dtype].search(
                q.astype(np.float32), k=5, rerank_fn=lambda ids: [pages[i] for i in ids]
            )
            for q in queries
        ]

    widened = search(False, "float16")
    for half, dtype in [(True, "float16"), (False, "bfloat16"), (True, "bfloat16")]:
        for (ids, scores), (ids_wide, scores_wide) in zip(
            search(half, dtype), widened, strict=True
        ):
            assert ids == ids_wide
            np.testing.assert_array_equal(scores, scores_wide)  # the rerank is exact


@pytest.mark.parametrize("dtype", CODE_DTYPES)
def test_an_index_keeps_its_codes_in_its_type_and_gives_them_back_as_float16(dtype):
    rng = np.random.default_rng(5)
    pages = [unit(rng.standard_normal((48, DIM))).astype(np.float16) for _ in range(20)]
    index = FastPageIndex(pool_factor=1.5, code_dtype=dtype)
    index.add(range(20), pages)
    assert index.code_dtype == dtype
    codes, ids = index.page_codes(3)
    assert codes.dtype == np.float16 and codes.shape == (32, DIM) and ids is None
    expected = index.encode([pages[3]])[0]
    if dtype == "float16":
        np.testing.assert_array_equal(codes, expected)
    else:
        np.testing.assert_array_equal(codes, float16_codes(code_matrix(expected, dtype)))
    index.train_codebook()  # trains on the stored codes, either type
    _, ids = index.page_codes(3)
    assert ids.shape == (32,) and (ids >= 0).all() and (ids < index.centroids.shape[0]).all()
    assert index.nbytes >= 20 * 32 * DIM * 2


def test_the_default_code_type_is_this_cpus_preferred_one():
    assert FastPageIndex().code_dtype == code_scores.preferred_code_dtype()
    with pytest.raises(ValueError, match="code_dtype"):
        FastPageIndex(code_dtype="float32")


@pytest.mark.parametrize("dtype", CODE_DTYPES)
def test_near_identical_short_pages_need_no_deeper_rerank(dtype):
    # 23-vector pages (kept whole as codes) that differ by little, as a tiny encoder's pages
    # do: their code scores must be close enough to exact that the rerank stops at its first
    # round. bfloat16 products are centred on each token's best similarity before rounding;
    # rounded whole, their error (5.5e-3 here) sent the rerank to 66 pages.
    rng = np.random.default_rng(0)
    base = unit(rng.standard_normal((23, DIM)))
    pages = [
        unit(base + 0.02 * rng.standard_normal((23, DIM))).astype(np.float16) for _ in range(300)
    ]
    query = unit(base[:8] + 0.3 * rng.standard_normal((8, DIM))).astype(np.float32)
    index = FastPageIndex(code_dtype=dtype)
    index.add(range(300), pages)
    ids, approximate = index.candidates(query, 300)
    exact = maxsim_scores(query, pages)[0]
    assert np.abs(approximate - exact[ids]).max() < 4e-3
    result = adaptive_rerank(query, ids, approximate, 10, lambda i: [pages[j] for j in i])
    assert result.n_reranked <= 40
    assert result.page_ids == top_k(exact, 10)[0].tolist()
