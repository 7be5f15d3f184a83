"""Centroid interaction: a cheap first stage that scores every page through a shared codebook.

As in PLAID (Santhanam et al., 2022), every code vector of every page is replaced by the id of
its nearest centroid in one corpus-wide codebook (spherical k-means). A query token's
similarity to all centroids is one small matrix product; a page's approximate MaxSim is then
``sum_t max_{c in page} sim(token_t, c)``, over the page's *bag* of centroid ids.

Only a token's ``n_probe`` most similar centroids are looked up, through inverted lists
(centroid -> pages holding it); a page holding none of them gets the ``n_probe + 1``-th
similarity for that token, the most any of its other centroids can score. The cost is the
length of the probed lists, not the size of the corpus, and no floating-point work is done
per page. Its scores only pick candidates for the next stage (pooled codes, then the exact
rerank), so they may be coarse; what matters is that the exact top pages are among them.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> codes = rng.standard_normal((400, 16)).astype(np.float32)
    >>> centroids = train_centroids(codes, 32)
    >>> page_offsets = np.arange(0, 401, 8)            # 50 pages of 8 codes
    >>> postings = CentroidPostings.build(assign_centroids(codes, centroids), page_offsets)
    >>> scores = postings.scores(codes[80:84] @ centroids.T, n_probe=8)   # page 10's codes
    >>> int(np.argmax(scores))
    10
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from llama_index_vlm.search._growable import ranges
from llama_index_vlm.search.maxsim import tensor_view

#: Centroids looked up per query token.
DEFAULT_N_PROBE = 32

#: Codes used to train the codebook at most (a uniform sample of the corpus's codes).
_TRAINING_SAMPLE = 65_536

#: Mean length of the probed lists from which :meth:`CentroidPostings.scores` writes the lists
#: one by one instead of scattering every entry at once (lists grow with the corpus: about 220
#: pages at 10k ColPali pages, 1,100 at 100k, 11,000 at 1M).
LIST_BY_LIST_MIN_LENGTH = 384


def codebook_size(n_codes: int) -> int:
    """Centroids for ``n_codes`` code vectors: a power of two near ``4 * sqrt(n_codes)`` where
    that leaves at least 64 codes to each, else near ``2 * sqrt(n_codes)``; between 64 and
    8192 (PLAID uses ``16 * sqrt``; our codes are already pooled).

    ``2 * sqrt`` alone (until issue 15's tenth session) was too coarse for pages of
    ColQwen2-like image regions: the prefilter's 512 pages missed the exact top 10's pages,
    recall@10 0.952 at 2,000 pages (1,024 centroids) and 0.959 at 10,000 (2,048), against
    0.992 and 0.986 with twice the centroids. Where fewer codes would share each centroid
    (2,000 pages of 23 vectors: 0.996 against 0.990) it stays. From 100k ColPali pages on
    (8,192) nothing changes (``benchmarks/RESULTS.md``).
    """
    if n_codes < 1:
        raise ValueError("n_codes must be >= 1")
    coarse = 2 ** round(math.log2(2 * math.sqrt(n_codes)))
    fine = 2 ** round(math.log2(4 * math.sqrt(n_codes)))
    filled = 2 ** math.floor(math.log2(max(n_codes // 64, 1)))  # 64 codes to each at least
    return int(min(8192, max(64, coarse, min(fine, filled))))


def _unit(matrix: torch.Tensor) -> torch.Tensor:
    return matrix / matrix.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _as_float32_tensor(vectors: np.ndarray | torch.Tensor) -> torch.Tensor:
    tensor = (
        vectors if isinstance(vectors, torch.Tensor) else tensor_view(np.ascontiguousarray(vectors))
    )
    return tensor.float() if tensor.dtype != torch.float32 else tensor


def assign_centroids(
    vectors: np.ndarray | torch.Tensor, centroids: np.ndarray, batch_size: int = 32_768
) -> np.ndarray:
    """Index ``(n,)`` int32 of the most similar centroid of each ``(n, dim)`` vector (an
    array, or a tensor such as a fast index's bfloat16 codes)."""
    centroid_t = _as_float32_tensor(centroids)
    out = np.empty(vectors.shape[0], dtype=np.int32)
    for start in range(0, vectors.shape[0], batch_size):
        block = _as_float32_tensor(vectors[start : start + batch_size])
        out[start : start + block.shape[0]] = torch.mm(block, centroid_t.T).argmax(1).numpy()
    return out


def train_centroids(
    vectors: np.ndarray | torch.Tensor, n_centroids: int, n_iterations: int = 6, seed: int = 0
) -> np.ndarray:
    """A ``(n_centroids, dim)`` float32 codebook of unit vectors by spherical k-means.

    Trains on a uniform sample of at most 65,536 of ``vectors`` (an array, or a tensor such as
    a fast index's bfloat16 codes); seeds are a random sample of them (deterministic for
    ``seed``). Fewer distinct vectors than ``n_centroids`` gives fewer centroids.
    """
    if not isinstance(vectors, torch.Tensor):
        vectors = np.asarray(vectors)
    rng = np.random.default_rng(seed)
    n = vectors.shape[0]
    if n == 0:
        raise ValueError("train_centroids needs at least one vector")
    sample = (
        rng.choice(n, size=min(n, _TRAINING_SAMPLE), replace=False)
        if n > _TRAINING_SAMPLE
        else np.arange(n)
    )
    points = _unit(_as_float32_tensor(vectors[np.sort(sample)]))
    n_centroids = min(n_centroids, points.shape[0])
    centroids = points[torch.from_numpy(rng.choice(points.shape[0], n_centroids, replace=False))]
    for _ in range(n_iterations):
        labels = torch.mm(points, centroids.T).argmax(1)
        sums = torch.zeros_like(centroids).index_add_(0, labels, points)
        norms = sums.norm(dim=1, keepdim=True)
        # A centroid that lost all its points keeps its place.
        centroids = torch.where(norms > 0, sums / norms.clamp_min(1e-12), centroids)
    return centroids.numpy().copy()


@dataclass(frozen=True)
class CentroidPostings:
    """Inverted lists from centroid id to the pages (slots) whose bag holds it.

    Attributes:
        list_offsets: ``(n_centroids + 1,)`` int64; centroid ``c``'s pages are
            ``slots[list_offsets[c]:list_offsets[c + 1]]``, ascending.
        slots: ``(n_pairs,)`` int32 page slots.
        n_pages: slots are ``0 .. n_pages - 1``.
    """

    list_offsets: np.ndarray
    slots: np.ndarray
    n_pages: int

    @classmethod
    def build(
        cls, code_centroids: np.ndarray, page_offsets: np.ndarray, n_centroids: int | None = None
    ) -> CentroidPostings:
        """Lists from each code row's centroid id and the pages' code-row offsets."""
        page_offsets = np.asarray(page_offsets, dtype=np.int64)
        n_pages = page_offsets.size - 1
        n_centroids = (
            int(code_centroids.max(initial=-1)) + 1 if n_centroids is None else n_centroids
        )
        page_of_row = np.repeat(np.arange(n_pages, dtype=np.int64), np.diff(page_offsets))
        # Sort, then drop repeats: np.unique does the same far slower on numpy 2.
        pairs = np.sort(code_centroids.astype(np.int64) * max(n_pages, 1) + page_of_row)
        if pairs.size:
            pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])]
        centroid_of_pair = pairs // max(n_pages, 1)
        counts = np.bincount(centroid_of_pair, minlength=n_centroids)
        list_offsets = np.zeros(n_centroids + 1, dtype=np.int64)
        np.cumsum(counts, out=list_offsets[1:])
        slots = (pairs - centroid_of_pair * max(n_pages, 1)).astype(np.int32)
        return cls(list_offsets=list_offsets, slots=slots, n_pages=n_pages)

    @property
    def nbytes(self) -> int:
        return self.list_offsets.nbytes + self.slots.nbytes

    def scores(
        self, token_centroid_similarity: np.ndarray, n_probe: int = DEFAULT_N_PROBE
    ) -> np.ndarray:
        """Approximate MaxSim ``(n_pages,)`` float32 from ``(n_tokens, n_centroids)`` similarities.

        For each token, pages holding one of its ``n_probe`` best centroids score that
        centroid's similarity (the best one they hold); the others score the next-best
        similarity, an upper bound of what they hold.
        """
        similarity = np.asarray(token_centroid_similarity, dtype=np.float32)
        n_tokens, n_centroids = similarity.shape
        n_probe = min(n_probe, n_centroids)
        if n_probe < n_centroids:
            probed = np.argpartition(-similarity, n_probe, axis=1)[:, : n_probe + 1]
            order = np.argsort(-np.take_along_axis(similarity, probed, 1), axis=1)
            probed = np.take_along_axis(probed, order, 1)
            floor = similarity[np.arange(n_tokens), probed[:, -1]]
            probed = probed[:, :-1]
        else:
            probed = np.argsort(-similarity, axis=1)
            floor = np.full(n_tokens, similarity.min() if similarity.size else 0.0, np.float32)
        # Each token's probed centroids, best first, and what holding them adds to the floor.
        gains = similarity[np.arange(n_tokens)[:, None], probed] - floor[:, None]
        starts = self.list_offsets[probed]  # (n_tokens, n_probe)
        ends = self.list_offsets[probed + 1]
        if n_tokens and (ends - starts).mean() >= LIST_BY_LIST_MIN_LENGTH:
            best_gains = self._best_gains_list_by_list(starts, ends, gains)
        else:
            best_gains = self._best_gains_scattered(starts, ends, gains)
        return best_gains + np.float32(floor.sum())

    def _best_gains_scattered(
        self, starts: np.ndarray, ends: np.ndarray, gains: np.ndarray
    ) -> np.ndarray:
        """Sum over tokens of each page's best gain, every list entry in one ``maximum.at``,
        with no Python per list (the faster for short lists: 2.3-2.8 against 2.6-3.0 ms at
        10k pages, ``benchmarks/RESULTS.md``)."""
        n_tokens, n_probe = starts.shape
        lengths = (ends - starts).ravel()
        rows = np.repeat(starts.ravel(), lengths) + ranges(lengths)
        best = np.zeros(n_tokens * self.n_pages, dtype=np.float32)
        token_of_entry = np.repeat(np.repeat(np.arange(n_tokens), n_probe), lengths)
        np.maximum.at(
            best,
            token_of_entry * self.n_pages + self.slots[rows],
            np.repeat(gains.ravel(), lengths),
        )
        return best.reshape(n_tokens, self.n_pages).sum(0)

    def _best_gains_list_by_list(
        self, starts: np.ndarray, ends: np.ndarray, gains: np.ndarray
    ) -> np.ndarray:
        """The same sum, one plain assignment per list, the token's weakest list first so
        that its best list is written last. An entry costs less than in ``maximum.at`` but each
        list costs a Python-level call (640 a query at 20 tokens x 32 probes), so this is the
        faster for long lists: at 1M pages 34-49 against 134-199 ms, at 100k 6.0-7.6 against
        10.9-13.7 ms (``benchmarks/RESULTS.md``). A list holds each page once, so no
        assignment writes a page twice."""
        total = np.zeros(self.n_pages, dtype=np.float32)
        best = np.empty(self.n_pages, dtype=np.float32)
        slots = self.slots
        weakest_first = zip(
            starts[:, ::-1].tolist(), ends[:, ::-1].tolist(), gains[:, ::-1].tolist(), strict=True
        )
        for token_starts, token_ends, token_gains in weakest_first:
            best.fill(0)
            for start, end, gain in zip(token_starts, token_ends, token_gains, strict=True):
                best[slots[start:end]] = gain
            total += best
        return total
