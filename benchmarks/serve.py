"""`/search` through `llama-index-vlm serve`: requests/s and latency with 1, 8 and 32 clients.

Builds a store of ``--pages`` synthetic pages (small JPEG images; random unit vectors shaped
like the tiny ColPali checkpoint's, written through ``LanceDBPageStore.upsert_pages`` with that
checkpoint's fingerprint, so the server's retriever accepts them), starts the real command
(``python -m llama_index_vlm.cli serve --no-vlm --port 0``) in a subprocess, and sends
``POST /search`` from ``--clients`` concurrent asyncio clients (httpx) for ``--seconds`` each.

Side by side, the alternative the server replaces: one ``llama-index-vlm search`` process per
query, which loads the model every time.

Clients and server share the machine, so the numbers are the server's under its own clients'
load; queries are encoded by the tiny model, so they measure the server (HTTP, JSON, the
encoder turn, MaxSim, LanceDB reads), not a real model's speed.

Usage::

    python benchmarks/serve.py --pages 2000 --clients 1 8 32 --seconds 15 --out serve.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

QUERIES = [
    f"{subject} {detail}"
    for subject in ("revenue", "warranty", "installation", "survey", "signature")
    for detail in ("2023", "by region", "table 2", "figure 1", "summary", "total", "terms")
]


def build_store(folder: Path, n_pages: int, checkpoint: Path, seed: int) -> int:
    """``n_pages`` synthetic pages in a new store at ``folder``; returns vectors per page."""
    import numpy as np
    from llama_index.core.schema import ImageDocument
    from PIL import Image

    from llama_index_vlm.encoder import ColPaliEncoder
    from llama_index_vlm.fingerprint import POOL_FACTOR_KEY
    from llama_index_vlm.images import encode_image
    from llama_index_vlm.pages import page_id_for
    from llama_index_vlm.store import LanceDBPageStore

    encoder = ColPaliEncoder.from_pretrained(checkpoint, show_progress=False)
    page = Image.new("RGB", (64, 80), "white")
    n_vectors = encoder.embed_images([page])[0].shape[0]
    fingerprint = {**encoder.fingerprint, POOL_FACTOR_KEY: 1}
    store = LanceDBPageStore(uri=str(folder))
    rng = np.random.default_rng(seed)
    for start in range(0, n_pages, 250):
        documents, vectors = [], []
        for number in range(start, min(start + 250, n_pages)):
            doc_id = f"synthetic-{number // 10:04d}"
            shade = tuple(int(value) for value in rng.integers(0, 255, 3))
            image = encode_image(Image.new("RGB", (64, 80), shade), "JPEG")
            metadata = {
                "doc_id": doc_id,
                "file_path": f"/synthetic/{doc_id}.pdf",
                "file_name": f"{doc_id}.pdf",
                "page_number": number % 10 + 1,
                "page_count": 10,
                "width": 64,
                "height": 80,
            }
            page_id = page_id_for(doc_id, metadata["page_number"])
            documents.append(
                ImageDocument(
                    id_=page_id, image=image, image_mimetype="image/jpeg", metadata=metadata
                )
            )
            page_vectors = rng.standard_normal((n_vectors, encoder.embedding_dim))
            vectors.append(page_vectors / np.linalg.norm(page_vectors, axis=1, keepdims=True))
        store.upsert_pages(documents, vectors, fingerprint=fingerprint)
    return n_vectors


def start_server(store: Path, checkpoint: Path) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "llama_index_vlm.cli", "serve", "--store", str(store)]
    command += ["--model", str(checkpoint), "--no-vlm", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    url = re.search(r"at (http://\S+/)", process.stdout.readline()).group(1)
    import httpx

    deadline = time.monotonic() + 300
    while httpx.get(f"{url}health").status_code != 200:
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError("the server did not become ready")
        time.sleep(0.2)
    return process, url


async def load(url: str, clients: int, seconds: float, k: int) -> dict:
    """``clients`` concurrent clients sending /search for ``seconds``; latencies and errors."""
    import httpx

    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        await client.post("search", json={"query": "warm up", "k": k})
        stop = time.perf_counter() + seconds

        async def one_client(number: int) -> None:
            nonlocal errors
            sent = number
            while time.perf_counter() < stop:
                query = QUERIES[sent % len(QUERIES)]
                sent += clients
                began = time.perf_counter()
                response = await client.post("search", json={"query": query, "k": k})
                latencies.append(time.perf_counter() - began)
                if response.status_code != 200 or len(response.json()["results"]) != k:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(one_client(number) for number in range(clients)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "clients": clients,
        "requests": len(latencies),
        "per_second": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
        "errors": errors,
    }


def cli_search_seconds(store: Path, checkpoint: Path, runs: int) -> list[float]:
    """Wall seconds of one ``llama-index-vlm search`` process per query."""
    timings = []
    for run in range(runs):
        command = [sys.executable, "-m", "llama_index_vlm.cli", "search", QUERIES[run]]
        command += ["--store", str(store), "--model", str(checkpoint), "-k", "5"]
        began = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        timings.append(time.perf_counter() - began)
    return timings


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=15.0, help="per client count")
    parser.add_argument("-k", type=int, default=5, help="pages per search")
    parser.add_argument("--cli-runs", type=int, default=3, help="CLI searches, side by side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the Markdown section here")
    args = parser.parse_args()

    from llama_index_vlm.search import choose_search_mode
    from llama_index_vlm.testing import make_tiny_checkpoint

    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = make_tiny_checkpoint("colpali", Path(scratch) / "colpali")
        store = Path(scratch) / "vlm_index"
        began = time.perf_counter()
        n_vectors = build_store(store, args.pages, checkpoint, args.seed)
        seconds = time.perf_counter() - began
        print(f"store: {args.pages} pages x {n_vectors} vectors in {seconds:.1f} s")
        load_before = uptime()
        process, url = start_server(store, checkpoint)
        try:
            rows = []
            for clients in args.clients:
                row = asyncio.run(load(url, clients, args.seconds, args.k))
                print(row, flush=True)
                rows.append(row)
        finally:
            process.terminate()
            process.wait(timeout=60)
        cli = cli_search_seconds(store, checkpoint, args.cli_runs)
        load_after = uptime()

    mode = choose_search_mode(args.pages)
    lines = [
        "## Serving `/search` (`benchmarks/serve.py`)",
        "",
        f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, no "
        "GPU; the machine was shared with other sessions' jobs.",
        f"- Load (`uptime`) before: `{load_before}`; after: `{load_after}`.",
        f"- Store: {args.pages} synthetic pages x {n_vectors} vectors (the tiny ColPali's shape), "
        f"search mode {mode}; k = {args.k}; the tiny ColPali encodes the queries.",
        f"- Server: `llama-index-vlm serve --no-vlm` (uvicorn, one process); clients: asyncio "
        f"httpx on the same machine, {args.seconds:g} s per row.",
        "",
        "| clients | requests | requests/s | p50 ms | p95 ms | errors |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['clients']} | {row['requests']} | {row['per_second']:.1f} | "
            f"{row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['errors']} |"
        )
    lines += [
        "",
        f"Side by side, one `llama-index-vlm search` process per query (what `serve` replaces): "
        f"median {statistics.median(cli):.1f} s over {len(cli)} runs "
        f"({', '.join(f'{seconds:.1f}' for seconds in cli)} s), mostly imports and model loading.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
