"""Recall of fast search on structurally different corpus families (issue 15), side by side.

For each family of :mod:`corpora` (same pages, same queries, one process), compares:

- ``exact``: :func:`maxsim_scores` over every page (the ground truth, all queries batched);
- ``fast (issue 4)``: the previous fast mode: pool factor 16, binary sign-code prefilter,
  a fixed exact rerank of 100 candidates;
- ``fast``: today's default :class:`FastPageIndex` (pool factor 8, centroid-interaction
  prefilter, adaptive exact rerank from 32 candidates up to 512), once per code type of
  ``--code-dtypes`` (float16 and bfloat16 codes: the same pooled codes, kept and multiplied
  in each type);
- ``fast, fixed depth 100``: today's first stages with the old fixed-depth rerank, to
  separate what the first stage and what the adaptive depth each bring;
- with ``--compare-codebook``: also today's index with the codebook size of before issue 15's
  tenth session (near ``2 sqrt(codes)`` centroids always, where today's rule takes ``4 sqrt``
  wherever that leaves 64 codes to each), float16 codes.

Full vectors for the rerank are read from memory, so latencies are the search's own.
Recall@10 is against exact MaxSim, a page tied with the exact 10th counting as found
(:mod:`recall`); "target 1st" counts the planted page (or its copy) first (and, for reference,
how often exact itself ranks it first).

Usage::

    python benchmarks/search_families.py --pages 2000 --out results.md
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpora import FAMILIES, family  # noqa: E402
from recall import recall_at_k, same_score  # noqa: E402

from llama_index_vlm.search import (  # noqa: E402
    FastPageIndex,
    PageVectorMatrix,
    adaptive_rerank,
    maxsim_scores,
    rerank_exactly,
    top_k,
)
from llama_index_vlm.search import fast as fast_module  # noqa: E402

K = 10


def codebook_size_before(n_codes: int) -> int:
    """``codebook_size`` before issue 15's tenth session: a power of two near 2 sqrt(codes)."""
    return int(min(8192, max(64, 2 ** round(math.log2(2 * math.sqrt(n_codes))))))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def bench_family(
    name: str,
    n_pages: int,
    n_queries: int,
    workdir: Path,
    code_dtypes: list[str],
    compare_codebook: bool = False,
) -> list[list[str]]:
    corpus = family(name, checkpoint_dir=workdir / "tiny-colpali")
    started = time.perf_counter()
    pages = corpus.pages(0, n_pages)
    log(f"{name}: {n_pages} pages in {time.perf_counter() - started:.0f}s")
    rng = np.random.default_rng(n_pages)
    targets = rng.choice(n_pages, size=n_queries, replace=False)
    queries = [corpus.query(int(target)) for target in targets]
    exact = maxsim_scores(queries, PageVectorMatrix.from_pages(pages))
    truth, _ = top_k(exact, K)
    exact_first = float(
        np.mean(
            [
                same_score(t[0], target, e)
                for t, target, e in zip(truth, targets, exact, strict=True)
            ]
        )
    )

    def fetch(ids):
        return [pages[i] for i in ids]

    builds = {}
    started = time.perf_counter()
    old = FastPageIndex(pool_factor=16, prefilter="binary")
    old.add(range(n_pages), pages)
    builds["old"] = time.perf_counter() - started
    started = time.perf_counter()
    codes = FastPageIndex().encode(pages)  # pooled once, kept in each type
    pooling = time.perf_counter() - started
    indexes = {}
    for dtype in code_dtypes:
        started = time.perf_counter()
        indexes[dtype] = FastPageIndex(code_dtype=dtype)
        indexes[dtype].add_codes(range(n_pages), codes)
        indexes[dtype].prepare()
        builds[dtype] = pooling + time.perf_counter() - started
    new = indexes[code_dtypes[0]]
    if compare_codebook:
        started = time.perf_counter()
        before = FastPageIndex(code_dtype="float16")
        before.add_codes(range(n_pages), codes)
        today_size = fast_module.codebook_size
        fast_module.codebook_size = codebook_size_before
        try:
            before.prepare()
        finally:
            fast_module.codebook_size = today_size
        builds["codebook before"] = pooling + time.perf_counter() - started
    log(f"{name}: indexes built (issue 4 {builds['old']:.0f}s, now {builds[code_dtypes[0]]:.0f}s)")

    def old_search(query):
        ids, _ = old.candidates(query, 100)
        return rerank_exactly(query, ids, K, fetch)[0], 100

    def new_search(index):
        def search(query):
            ids, approximate = index.candidates(query, 512)
            result = adaptive_rerank(query, ids, approximate, K, fetch)
            return result.page_ids, result.n_reranked

        return search

    def new_fixed(query):
        ids, _ = new.candidates(query, 100)
        return rerank_exactly(query, ids, K, fetch)[0], 100

    methods = {"fast (issue 4: binary, x16, depth 100)": (old_search, old, builds["old"])}
    for dtype, index in indexes.items():
        method = f"fast (centroids, x8, adaptive depth, {dtype} codes)"
        methods[method] = (new_search(index), index, builds[dtype])
    methods[f"fast (centroids, x8, fixed depth 100, {code_dtypes[0]} codes)"] = (
        new_fixed,
        new,
        builds[code_dtypes[0]],
    )
    if compare_codebook:
        method = (
            f"fast (adaptive depth, float16 codes, {before.centroids.shape[0]} centroids as before)"
        )
        methods[method] = (new_search(before), before, builds["codebook before"])
    latencies = {method: [] for method in methods}
    found = {method: [] for method in methods}
    depths = {method: [] for method in methods}
    for query in queries:
        for method, (search, _, _) in methods.items():
            began = time.perf_counter()
            ids, depth = search(query)
            latencies[method].append(time.perf_counter() - began)
            found[method].append(ids)
            depths[method].append(depth)
    rows = []
    vectors = np.mean([page.shape[0] for page in pages])
    for method, (_, index, build_s) in methods.items():
        recalls = [recall_at_k(ids, e, K) for ids, e in zip(found[method], exact, strict=True)]
        recall, worst = np.mean(recalls), min(recalls)
        first = np.mean(
            [
                same_score(ids[0], t, e)
                for ids, t, e in zip(found[method], targets, exact, strict=True)
            ]
        )
        rows.append(
            [
                name,
                f"{n_pages:,}",
                f"{vectors:.0f}",
                method,
                f"{np.median(latencies[method]) * 1000:.1f}",
                f"{recall:.3f}",
                f"{worst:.1f}",
                f"{first:.0%} ({exact_first:.0%})",
                f"{np.mean(depths[method]):.0f} / {np.max(depths[method])}",
                f"{index.nbytes / 2**20:.0f}",
                f"{build_s:.0f}",
            ]
        )
        log(f"{name} {method}: recall {recall:.3f} first {first:.0%} p50 {rows[-1][4]} ms")
    return rows


HEADER = [
    "family",
    "pages",
    "vectors/page",
    "method",
    "p50 ms",
    "recall@10",
    "worst query",
    "target 1st (exact)",
    "reranked mean / max",
    "index MiB",
    "build s",
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--code-dtypes",
        default="float16,bfloat16",
        help="the fast index's code types, one row each (the first also for fixed depth 100)",
    )
    parser.add_argument(
        "--compare-codebook",
        action="store_true",
        help="also a row with the codebook size of before the tenth session (2 sqrt(codes))",
    )
    args = parser.parse_args(argv)
    load_start = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    started = time.perf_counter()
    rows: list[list[str]] = []

    def table() -> str:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        load_end = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        lines.append(
            f"\nLoad average at start {load_start}, at end {load_end}; "
            f"{time.perf_counter() - started:.0f}s in all."
        )
        return "\n".join(lines)

    with tempfile.TemporaryDirectory(prefix="vlm-families-") as workdir:
        for name in args.families.split(","):
            rows.extend(
                bench_family(
                    name,
                    args.pages,
                    args.queries,
                    Path(workdir),
                    args.code_dtypes.split(","),
                    args.compare_codebook,
                )
            )
            if args.out:
                args.out.write_text(table() + "\n")
    print(table())


if __name__ == "__main__":
    main()
