"""Our fast search against peer engines on the same corpus, in one run (issue 15).

The corpus (a :mod:`corpora` family) is generated once and saved; our
:class:`~llama_index_vlm.search.FastPageIndex` runs here, each peer in its own venv made by
``benchmarks/peers/setup.sh`` (``run_peer.py``), on the same pages and queries. Recall@10 is
against exact MaxSim computed here, a page tied with the exact 10th counting as found
(:mod:`recall`: the ``duplicated`` family's twins tie). A peer whose venv is missing gets a
row saying so.

Usage::

    bash benchmarks/peers/setup.sh muvera
    python benchmarks/peers/peers.py --family codebook --pages 2000 --out peers.md
    python benchmarks/peers/peers.py --pages 10000 --peers muvera,fast-plaid \\
        --muvera-rerank 100,400,1600
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))

from corpora import family  # noqa: E402
from recall import recall_at_k  # noqa: E402

from llama_index_vlm.search import FastPageIndex, PageVectorMatrix, maxsim_scores  # noqa: E402

K = 10
PEERS = {  # peer -> its venv
    "muvera": "muvera",
    "fast-plaid": "fast-plaid",
    "pylate-plaid": "pylate",
    "pylate-voyager": "pylate",
}


def ours(pages, queries):
    started = time.perf_counter()
    index = FastPageIndex()
    index.add(range(len(pages)), pages)
    index.prepare()
    build = time.perf_counter() - started
    latencies, found = [], []
    for query in queries:
        began = time.perf_counter()
        ids, _ = index.search(query, K, rerank_fn=lambda ids: [pages[i] for i in ids])
        latencies.append(time.perf_counter() - began)
        found.append(ids)
    return {"build_s": build, "latencies_s": latencies, "found": found}


def _rss_gib() -> float:
    """This process's resident memory, GiB (Linux; 0 elsewhere)."""
    status = Path("/proc/self/status")
    if not status.exists():
        return 0.0
    line = next(x for x in status.read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 2**20


def _peer_args(values: list[str], parser: argparse.ArgumentParser) -> dict[str, dict]:
    """``PEER=JSON`` options as {peer: arguments}, with an error naming a bad one."""
    found = {}
    for value in values:
        peer, _, text = value.partition("=")
        if peer not in PEERS:
            parser.error(f"--peer-args: unknown peer {peer!r} (one of {', '.join(PEERS)})")
        try:
            found[peer] = json.loads(text)
        except json.JSONDecodeError as error:
            parser.error(f"--peer-args {peer}: not JSON ({error})")
        if not isinstance(found[peer], dict):
            parser.error(f"--peer-args {peer}: expected a JSON object of arguments")
    return found


def row(name, result, exact, n_pages):
    recall = np.mean(
        [recall_at_k(f, scores, K) for f, scores in zip(result["found"], exact, strict=True)]
    )
    p50 = np.median(result["latencies_s"]) * 1000
    return [name, f"{n_pages:,}", f"{p50:,.1f}", f"{recall:.3f}", f"{result['build_s']:,.1f}", ""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="codebook")
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument(
        "--muvera-rerank",
        default="100",
        help="MUVERA's exact-rerank depths, comma-separated: one row each (recall grows with it)",
    )
    parser.add_argument(
        "--peer-args",
        action="append",
        default=[],
        metavar="PEER=JSON",
        help="a peer's build arguments as JSON: fast-plaid's create(), or the PyLate index's "
        "constructor, e.g. fast-plaid='{\"n_samples_kmeans\": 1000}' (its k-means over every "
        "page's vectors takes hours at 10k pages on 2 cores); repeat for several peers",
    )
    parser.add_argument(
        "--fast-plaid-create",
        type=json.loads,
        help="the same as --peer-args fast-plaid=JSON (the name earlier runs used)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    peer_args = _peer_args(args.peer_args, parser)
    if args.fast_plaid_create:
        peer_args["fast-plaid"] = args.fast_plaid_create
    load_start = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    corpus = family(args.family)
    pages = corpus.pages(0, args.pages)
    targets = np.random.default_rng(args.pages).choice(args.pages, args.queries, replace=False)
    queries = [corpus.query(int(t)) for t in targets]
    matrix = PageVectorMatrix.from_pages(pages)
    exact = maxsim_scores(queries, matrix)
    rows = [row("ours (FastPageIndex)", ours(pages, queries), exact, args.pages)]
    print(rows[-1], file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as folder:
        saved = Path(folder) / "corpus.npz"
        np.savez(
            saved, vectors=matrix.vectors, offsets=matrix.offsets, queries=np.stack(queries), k=K
        )
        # The peers read the saved file: free this process's copies (10k float16 pages are 2.6 GB
        # twice) so that a peer's build has the memory. Thousands of page arrays leave glibc's
        # heap fragmented; malloc_trim hands the freed pages back to the system.
        del pages, matrix
        gc.collect()
        if sys.platform == "linux":
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        print(f"this process now holds {_rss_gib():.1f} GiB", file=sys.stderr, flush=True)
        peers = args.peers.split(",")
        runs = [(peer, None) for peer in peers if peer != "muvera"]
        if "muvera" in peers:
            runs = [("muvera", depth) for depth in args.muvera_rerank.split(",")] + runs
        for peer, depth in runs:
            name = peer if depth is None else f"{peer} (rerank {depth})"
            if peer in peer_args:
                name += " " + json.dumps(peer_args[peer])
            python = HERE / f".venv-{PEERS[peer]}" / "bin" / "python"
            if not python.exists():
                rows.append([name, f"{args.pages:,}", "-", "-", "-", "not installed (setup.sh)"])
                continue
            command = [str(python), str(HERE / "run_peer.py"), peer, str(saved)]
            if depth is not None:
                command += ["--rerank", depth]
            if peer in peer_args:
                command += ["--peer-args", json.dumps(peer_args[peer])]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                reason = done.stderr.strip().splitlines()[-1][:200] if done.stderr else "failed"
                rows.append([name, f"{args.pages:,}", "-", "-", "-", reason])
            else:
                result = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append(row(name, result, exact, args.pages))
            print(rows[-1], file=sys.stderr, flush=True)
    header = ["engine", "pages", "p50 ms", "recall@10", "build s", "notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    load_end = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    lines.append(
        f"\nFamily {args.family}, {args.queries} queries; load average {load_start} at start, "
        f"{load_end} at end."
    )
    table = "\n".join(lines)
    if args.out:
        args.out.write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
