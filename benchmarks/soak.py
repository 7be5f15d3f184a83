"""Soak benchmark: queries/s and errors while a writer ingests and deletes (issue 7).

Runs :func:`run_soak` from ``tests/stress/test_soak.py``, the same soak the test suite runs for
a few seconds: 8 threads query one shared ``ColPaliRetriever`` while one writer thread ingests
new documents, replaces files (same path, new content) and deletes documents. Every query's
pages are checked (never written, deleted before the query began, missing although committed
before it began, torn metadata or image); at the end the store and a query must hold exactly
the pages the writer left. It runs once per search mode (exact, fast), without compaction and
with ``store.optimize()`` run by the writer after every ``--optimize-every`` changes (each
change is a commit, and LanceDB scans get slower as small fragments pile up).

The encoder is the tiny ColPali checkpoint (``make_tiny_checkpoint``), so queries/s measure the
concurrency machinery (query encoding of a tiny model, LanceDB reads and commits, cache
refreshes, MaxSim), not a real model's speed.

Usage::

    python benchmarks/soak.py --seconds 60 --write benchmarks/RESULTS.md

``--write`` replaces the text between ``<!-- soak:begin -->`` and ``<!-- soak:end -->`` in that
file with the measured table (or appends it).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
# run_soak lives with the test it backs; it builds its pages with tests/pages_builder.py.
sys.path[:0] = [str(REPO / "tests" / "stress"), str(REPO / "tests")]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="per search mode")
    parser.add_argument("--threads", type=int, default=8, help="query threads")
    parser.add_argument("--modes", nargs="+", default=["exact", "fast"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--optimize-every", type=int, nargs="+", default=[0, 10], help="0: never compact"
    )
    parser.add_argument("--write", type=Path, help="results file to update")
    args = parser.parse_args()

    from test_soak import run_soak

    from llama_index_vlm.encoder import ColPaliEncoder
    from llama_index_vlm.testing import make_tiny_checkpoint

    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = make_tiny_checkpoint("colpali", Path(scratch) / "colpali")
        encoder = ColPaliEncoder.from_pretrained(checkpoint, show_progress=False)
        results = []
        for mode in args.modes:
            for every in args.optimize_every:
                result = run_soak(
                    encoder,
                    str(Path(scratch) / f"index-{mode}-{every}"),
                    search_mode=mode,
                    seconds=args.seconds,
                    threads=args.threads,
                    seed=args.seed,
                    optimize_every=every,
                )
                results.append(result)
                print(f"{mode}, optimize every {every}: {result.queries_per_second:.1f} q/s")
            for error in result.errors[:5]:
                print(error, file=sys.stderr)

    table = render(results, args)
    print(table)
    if args.write:
        update(args.write, table)
    if any(result.errors or result.pages_lost for result in results):
        sys.exit(1)


def render(results, args) -> str:
    cpu = platform.processor() or platform.machine()
    lines = [
        f"Machine: {cpu}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, shared with other jobs during "
        f"the run. Tiny ColPali checkpoint; `python benchmarks/soak.py --seconds {args.seconds:g}"
        f" --threads {args.threads}`.",
        "",
        "| search mode | compaction | threads | duration | queries | queries/s (first / last "
        "10 s) | latency p50 / p95 | writer commits (docs added / replaced / deleted) | "
        "errors | pages lost |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        latencies = sorted(result.latencies) or [0.0]
        p50 = statistics.median(latencies)
        p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
        first = sum(at < 10 for at in result.finished_at) / 10
        last = sum(at >= result.seconds - 10 for at in result.finished_at) / 10
        compaction = (
            f"every {result.optimize_every} changes ({result.optimizations} runs)"
            if result.optimize_every
            else "none"
        )
        lines.append(
            f"| {result.search_mode} | {compaction} | {result.threads} | "
            f"{result.seconds:.0f} s | {result.queries} ({result.filtered_queries} filtered) | "
            f"{result.queries_per_second:.1f} ({first:.1f} / {last:.1f}) | "
            f"{p50 * 1000:.0f} / {p95 * 1000:.0f} ms | "
            f"{result.commits} ({result.documents_added} / {result.documents_replaced} / "
            f"{result.documents_deleted}) | {len(result.errors)} | "
            f"{result.pages_lost} of {result.pages_expected} |"
        )
    return "\n".join(lines)


def update(path: Path, table: str) -> None:
    block = f"<!-- soak:begin -->\n{table}\n<!-- soak:end -->"
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(r"<!-- soak:begin -->.*?<!-- soak:end -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
