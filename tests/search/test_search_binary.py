"""Sign codes and Hamming MaxSim (llama_index_vlm.search.binary), against plain references."""

from __future__ import annotations

import numpy as np

from llama_index_vlm.search import PageVectorMatrix, binary_codes, hamming_maxsim_scores
from llama_index_vlm.search.binary import hamming_similarity

DIM = 32


def _vectors_of_70_dims() -> np.ndarray:
    # 70 dims: two 64-bit words, the second partly unused.
    return np.random.default_rng(6).standard_normal((5, 70))


def test_binary_codes_pack_signs_into_64_bit_words():
    codes = binary_codes(_vectors_of_70_dims())
    assert codes.shape == (2, 5) and codes.dtype == np.uint64


def test_hamming_similarity_of_opposite_signs_is_minus_one():
    vectors = _vectors_of_70_dims()
    similarity = hamming_similarity(binary_codes(vectors), binary_codes(-vectors), dim=70)
    np.testing.assert_allclose(np.diag(similarity), -1.0)  # all signs flipped


def test_hamming_similarity_of_a_code_with_itself_is_one():
    codes = binary_codes(_vectors_of_70_dims())
    np.testing.assert_allclose(np.diag(hamming_similarity(codes, codes, dim=70)), 1.0)


def test_hamming_similarity_is_the_share_of_agreeing_signs():
    vectors = _vectors_of_70_dims()
    codes = binary_codes(vectors)
    agree = (np.sign(vectors)[:, None, :] == np.sign(vectors)[None, :, :]).mean(axis=2)
    np.testing.assert_allclose(hamming_similarity(codes, codes, dim=70), 2 * agree - 1, atol=1e-6)


def test_hamming_maxsim_matches_reference_and_ignores_threading():
    rng = np.random.default_rng(7)
    pages = [rng.standard_normal((int(rng.integers(1, 30)), DIM)) for _ in range(60)]
    query = rng.standard_normal((6, DIM))
    packed = PageVectorMatrix.from_pages(pages)
    codes = binary_codes(packed.vectors)
    query_codes = binary_codes(query)
    expected = [
        hamming_similarity(query_codes, binary_codes(page), DIM).max(axis=1).sum() for page in pages
    ]
    for block_size, n_threads in [(10**6, 1), (16, 1), (16, 3), (1, 2)]:
        scores = hamming_maxsim_scores(
            query_codes, codes, packed.offsets, DIM, block_size=block_size, n_threads=n_threads
        )
        np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_hamming_popcount_fallback_for_numpy_1(monkeypatch):
    rng = np.random.default_rng(8)
    codes = binary_codes(rng.standard_normal((50, DIM)))
    query_codes = binary_codes(rng.standard_normal((4, DIM)))
    offsets = np.arange(0, 51, 5)
    expected = hamming_maxsim_scores(query_codes, codes, offsets, DIM)
    monkeypatch.delattr(np, "bitwise_count")  # numpy < 2 has no bitwise_count
    np.testing.assert_allclose(hamming_maxsim_scores(query_codes, codes, offsets, DIM), expected)
