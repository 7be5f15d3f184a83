"""DevicePageMatrix: exact float32 MaxSim with the pages kept on a torch device.

These run on the CPU device, through the same code a GPU runs (torch ops only); no test
needs a GPU. What is checked: the scores are float32 MaxSim for every page layout (equal and
unequal lengths, pages longer than a block), masks and ties as exact mode has them, and clear
errors for devices this machine cannot use.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vectors import unit

from llama_index_vlm.errors import UnsupportedDeviceError
from llama_index_vlm.search import (
    DevicePageMatrix,
    PageVectorMatrix,
    device_maxsim,
    maxsim_scores,
    resolve_search_device,
    top_k,
)

DIM = 24


def pages_of(lengths, seed: int, dtype=np.float16) -> PageVectorMatrix:
    rng = np.random.default_rng(seed)
    return PageVectorMatrix.from_pages(
        [unit(rng.standard_normal((n, DIM))).astype(dtype) for n in lengths]
    )


def query_of(seed: int, n_tokens: int = 7) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n_tokens, DIM))).astype(np.float32)


@pytest.mark.parametrize(
    ("lengths", "block_rows"),
    [
        ([16] * 12, 1 << 21),  # equal lengths, one block (ColPali's fixed grid)
        ([16] * 12, 40),  # equal lengths, blocks of 2 pages
        ([9, 30, 1, 17, 17, 4, 25], 1 << 21),  # unequal lengths (ColQwen2, pooled pages)
        ([9, 30, 1, 17, 17, 4, 25], 20),  # unequal, and pages longer than a block
        ([5, 5, 5, 8, 8, 8, 3], 15),  # blocks of equal pages next to unequal ones
    ],
)
def test_scores_are_float32_maxsim_of_every_page(lengths, block_rows):
    pages = pages_of(lengths, seed=len(lengths) + block_rows)
    on_device = DevicePageMatrix(pages, "cpu", block_rows=block_rows)
    query = query_of(3)
    np.testing.assert_allclose(
        on_device.scores(query), maxsim_scores(query, pages)[0], rtol=1e-6, atol=1e-6
    )


def test_float32_pages_stay_float32_and_score_the_same():
    pages = pages_of([6, 11, 6], seed=4, dtype=np.float32)
    on_device = DevicePageMatrix(pages, "cpu")
    assert on_device.vectors.dtype == torch.float32
    assert on_device.nbytes == pages.vectors.nbytes
    query = query_of(5)
    np.testing.assert_allclose(on_device.scores(query), maxsim_scores(query, pages)[0], rtol=1e-6)


def test_top_k_is_exact_modes_top_k_with_masks():
    pages = pages_of([10, 4, 22, 10, 7, 13, 10, 3], seed=6)
    on_device = DevicePageMatrix(pages, "cpu", block_rows=30)
    query = query_of(7)
    keep = np.array([True, False, True, True, False, True, True, True])
    positions, scores = on_device.top_k(query, 3, keep=keep)
    expected = np.where(keep, maxsim_scores(query, pages)[0], -np.inf)
    want_positions, want_scores = top_k(expected, 3)
    assert positions.tolist() == want_positions.tolist()
    assert not set(positions.tolist()) & {1, 4}
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)


def test_masked_pages_score_minus_infinity_when_k_exceeds_the_kept_pages():
    pages = pages_of([4, 4, 4], seed=8)
    positions, scores = DevicePageMatrix(pages, "cpu").top_k(
        query_of(9), 5, keep=np.array([False, True, False])
    )
    assert positions[0] == 1 and np.isfinite(scores[0])
    assert np.isneginf(scores[1:]).all()


def test_ties_go_to_the_lower_position():
    page = unit(np.random.default_rng(10).standard_normal((5, DIM))).astype(np.float16)
    pages = PageVectorMatrix.from_pages([page] * 4)
    positions, scores = DevicePageMatrix(pages, "cpu").top_k(query_of(11), 3)
    assert positions.tolist() == [0, 1, 2]
    assert scores[0] == scores[1] == scores[2]


def test_bad_arguments_are_refused():
    pages = pages_of([4, 4], seed=12)
    on_device = DevicePageMatrix(pages, "cpu")
    with pytest.raises(ValueError, match=r"query must be \(n_tokens, 24\)"):
        on_device.scores(np.zeros((3, DIM + 1), dtype=np.float32))
    with pytest.raises(ValueError, match="k must be >= 1"):
        on_device.top_k(query_of(13), 0)
    with pytest.raises(ValueError, match="block_rows"):
        DevicePageMatrix(pages, "cpu", block_rows=0)


def test_cuda_without_a_gpu_is_refused_clearly(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UnsupportedDeviceError, match="torch sees no CUDA GPU"):
        resolve_search_device("cuda")


def test_a_cuda_device_index_beyond_the_machine_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UnsupportedDeviceError, match=r"has 1 CUDA device\(s\)"):
        resolve_search_device("cuda:3")


def test_unknown_device_names_are_refused():
    with pytest.raises(UnsupportedDeviceError, match="unknown search device"):
        resolve_search_device("gpu0")
    assert resolve_search_device("cpu") == torch.device("cpu")


def test_pages_that_do_not_fit_the_device_say_so(monkeypatch):
    class FullDevice:
        def to(self, device):
            raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(device_maxsim, "tensor_view", lambda array: FullDevice())
    with pytest.raises(UnsupportedDeviceError, match=r"3 pages .* do not fit in the memory"):
        DevicePageMatrix(pages_of([4, 4, 4], seed=14), "cpu")
