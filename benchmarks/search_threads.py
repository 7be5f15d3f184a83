"""Exact MaxSim under OpenMP wait policies and CPU load (issue 15): torch blocks vs numpy.

Each configuration runs in a fresh process (``OMP_WAIT_POLICY`` and thread counts are read at
start-up), on the same pages and queries: 1030 x 128 float16 unit vectors per page, held in
memory as the retriever's exact mode holds them, 20-token queries, one query per call. The
"loaded" runs start ``--load`` busy processes (pure Python loops, one per core by default)
next to the measurement. Methods:

- ``numpy float32``: the plain reference: pages pre-widened to float32, ``q @ block.T`` and a
  per-page max with numpy, 12 pages per product (numpy's own BLAS and threads);
- ``torch, block B``: :func:`maxsim_scores` with ``block_size=B`` page vectors per product
  (12,288 was the default before issue 15); ``torch, default blocks``: today's default
  (about 8 blocks per call, 12,288 to 131,072 vectors each);
- ``exact mode top 10``: what the retriever's exact mode runs, :func:`exact_top_k` (float16
  screening, then float32 MaxSim of the pages that could rank), checked to return numpy's
  top 10 and scores.

Usage::

    python benchmarks/search_threads.py --pages 2000 --out results.md
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = (12_288, None, 196_608)  # the issue-4 default, today's default (auto), large


def _busy(stop_at: float) -> None:
    x = 0
    while time.monotonic() < stop_at:
        x += 1


def measure(n_pages: int, n_queries: int, threads: int | None) -> dict[str, float]:
    """Run in the child: median seconds per query of each method."""
    import torch

    sys.path.insert(0, str(ROOT))
    from llama_index_vlm.search import PageVectorMatrix, exact_top_k, max_vector_norm, maxsim_scores

    if threads:
        torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n_pages * 1030, 128), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    half = PageVectorMatrix(
        vectors=vectors.astype(np.float16), offsets=np.arange(n_pages + 1) * 1030
    )
    full = half.vectors.astype(np.float32)
    del vectors
    queries = [rng.standard_normal((20, 128), dtype=np.float32) for _ in range(n_queries)]

    def numpy_reference(query):
        out = np.empty(n_pages, dtype=np.float32)
        for start in range(0, n_pages, 12):
            stop = min(n_pages, start + 12)
            similarity = query @ full[start * 1030 : stop * 1030].T
            out[start:stop] = similarity.reshape(20, stop - start, 1030).max(2).sum(0)
        return out

    methods = {"numpy float32": numpy_reference}
    for block in BLOCKS:
        name = f"torch, block {block}" if block else "torch, default blocks"
        methods[name] = lambda q, b=block: maxsim_scores(q, half, block_size=b)
    vector_norm = max_vector_norm(half)  # the exact cache computes it once per refresh
    methods["exact mode top 10"] = lambda q: exact_top_k(q, half, 10, vector_norm=vector_norm)
    reference = numpy_reference(queries[0])
    times: dict[str, list[float]] = {name: [] for name in methods}
    for query in queries:
        for name, method in methods.items():  # take turns, query by query
            started = time.perf_counter()
            scores = method(query)
            times[name].append(time.perf_counter() - started)
            if query is not queries[0]:
                continue
            if name == "exact mode top 10":  # the top 10 pages, not every page's score
                positions, values = scores
                np.testing.assert_array_equal(
                    np.sort(positions), np.sort(np.argsort(-reference)[:10])
                )
                np.testing.assert_allclose(values, reference[positions], rtol=2e-3, atol=2e-3)
            else:
                np.testing.assert_allclose(np.ravel(scores), reference, rtol=2e-3, atol=2e-3)
    return {name: float(np.median(values)) for name, values in times.items()}


def run_child(policy: str | None, threads: int | None, args) -> dict[str, float]:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    command = [
        sys.executable,
        __file__,
        "--child",
        "--pages",
        str(args.pages),
        "--queries",
        str(args.queries),
    ]
    if threads:
        command += ["--threads", str(threads)]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--threads", type=int, help="(child) torch threads")
    parser.add_argument(
        "--thread-counts", default="default,1", help="torch thread counts to run, comma-separated"
    )
    parser.add_argument("--load", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    args.thread_counts = [
        None if count == "default" else int(count) for count in args.thread_counts.split(",")
    ]
    if args.child:
        print(json.dumps(measure(args.pages, args.queries, args.threads)))
        return
    load_start = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    rows = []
    for loaded in (False, True):
        for policy in (None, "PASSIVE"):
            for threads in args.thread_counts:
                workers = []
                if loaded:
                    stop_at = time.monotonic() + 3600
                    workers = [
                        multiprocessing.Process(target=_busy, args=(stop_at,), daemon=True)
                        for _ in range(args.load)
                    ]
                    for worker in workers:
                        worker.start()
                try:
                    result = run_child(policy, threads, args)
                finally:
                    for worker in workers:
                        worker.terminate()
                        worker.join()
                rows.append(
                    (loaded, policy or "default (ACTIVE spin)", threads or "default", result)
                )
                print(rows[-1], file=sys.stderr, flush=True)
    names = list(rows[0][3])
    header = ["competing load", "OMP_WAIT_POLICY", "torch threads", *[f"{n} ms" for n in names]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for loaded, policy, threads, result in rows:
        cells = [f"{args.load} busy processes" if loaded else "none", policy, str(threads)]
        cells += [f"{result[name] * 1000:,.0f}" for name in names]
        lines.append("| " + " | ".join(cells) + " |")
    load_end = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    lines.append(
        f"\n{args.pages:,} pages x 1030 x 128 float16, 20-token queries, median of "
        f"{args.queries} per cell; load average {load_start} at start, {load_end} at end."
    )
    table = "\n".join(lines)
    if args.out:
        args.out.write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
