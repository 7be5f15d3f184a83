"""The fast index's first stages at a million pages, from generated codes (issue 15).

The full vectors of 1M ColPali pages (264 GB of float16) and even their pooled codes (33 GB)
do not fit this machine's disk budget, so this measures the parts that must be in memory:

- the centroid-interaction prefilter over inverted lists of ``--pages`` pages, each page's
  bag of ``--bag`` centroid ids (of ``--centroids``) drawn at random (a uniform spread, the
  worst case for list lengths), 20-token queries probing 32 centroids per token;
- the pooled-code MaxSim of the ``--prefilter`` pages it keeps (129 codes of 128 dims each,
  as pool factor 8 gives a 1030-vector page), read from memory as a page-cached memmap would,
  scored as the index scores them (:func:`~llama_index_vlm.search.code_scores.code_maxsim_scores`).

The exact rerank (32-512 pages, read from the memory-mapped vectors) is measured at 10k pages
by ``search.py``; its cost does not grow with the corpus.

Usage::

    python benchmarks/search_scale.py --pages 1000000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llama_index_vlm.search import CentroidPostings, top_k  # noqa: E402
from llama_index_vlm.search.code_scores import code_maxsim_scores  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=1_000_000)
    parser.add_argument("--bag", type=int, default=90, help="distinct centroids per page")
    parser.add_argument("--centroids", type=int, default=8192)
    parser.add_argument("--prefilter", type=int, default=2048)
    parser.add_argument("--queries", type=int, default=10)
    args = parser.parse_args(argv)
    load_start = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    # Inverted lists straight from random bags: list c holds the pages whose bag has c.
    n_pairs = args.pages * args.bag
    counts = rng.multinomial(n_pairs, np.full(args.centroids, 1 / args.centroids))
    offsets = np.zeros(args.centroids + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    slots = rng.integers(0, args.pages, size=n_pairs, dtype=np.int32)
    postings = CentroidPostings(list_offsets=offsets, slots=slots, n_pages=args.pages)
    centroids = rng.standard_normal((args.centroids, 128), dtype=np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    codes = rng.standard_normal((args.prefilter * 129, 128), dtype=np.float32).astype(np.float16)
    code_offsets = np.arange(args.prefilter + 1, dtype=np.int64) * 129
    build_s = time.perf_counter() - started
    stage1, stage2 = [], []
    for _ in range(args.queries):
        query = rng.standard_normal((20, 128), dtype=np.float32)
        query /= np.linalg.norm(query, axis=1, keepdims=True)
        began = time.perf_counter()
        similarity = torch.mm(torch.from_numpy(query), torch.from_numpy(centroids).T).numpy()
        kept = top_k(postings.scores(similarity, 32), args.prefilter)[0]
        stage1.append(time.perf_counter() - began)
        began = time.perf_counter()
        top_k(code_maxsim_scores(query, codes, code_offsets, np.arange(args.prefilter)), 512)
        stage2.append(time.perf_counter() - began)
    assert kept.size == args.prefilter
    load_end = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"{args.pages:,} pages, {n_pairs:,} (centroid, page) pairs: postings "
        f"{postings.nbytes / 2**20:,.0f} MiB in RAM (generated in {build_s:.0f}s); "
        f"prefilter p50 {np.median(stage1) * 1000:,.1f} ms, pooled-code stage over "
        f"{args.prefilter:,} pages p50 {np.median(stage2) * 1000:,.1f} ms; "
        f"{args.queries} queries; load average {load_start} at start, {load_end} at end."
    )


if __name__ == "__main__":
    main()
