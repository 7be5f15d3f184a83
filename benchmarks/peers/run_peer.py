"""One peer engine on a corpus saved by peers.py; runs inside that peer's own venv.

Prints one JSON object: build seconds, per-query latencies and the top 10 of each query.
Peers:

- ``muvera``: MUVERA fixed-dimensional encodings (muvera-python, the paper's default
  20 repetitions x 2^5 partitions) scored by one dot product per page, then the best
  ``--rerank`` pages by exact MaxSim (numpy), as the MUVERA paper's pipeline.
- ``fast-plaid``: LightOn's PLAID engine (``fast_plaid.search.FastPlaid``), CPU.
- ``pylate-plaid`` / ``pylate-voyager``: PyLate's PLAID and Voyager (HNSW) indexes with its
  ColBERT retriever (exact rerank of the candidates' vectors).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import numpy as np


def exact_top(query: np.ndarray, pages: list[np.ndarray], candidates, k: int) -> list[int]:
    scores = [float((query @ pages[i].T).max(1).sum()) for i in candidates]
    order = np.argsort(scores)[::-1][:k]
    return [int(candidates[i]) for i in order]


def run_muvera(pages, queries, k, rerank):
    from muvera import Muvera

    started = time.perf_counter()
    encoder = Muvera(num_repetitions=20, num_simhash_projections=5, dimension=pages[0].shape[1])
    fdes = encoder.encode_documents(pages).astype(np.float32)
    build = time.perf_counter() - started
    latencies, found = [], []
    for query in queries:
        began = time.perf_counter()
        scores = fdes @ encoder.encode_queries([query])[0]
        candidates = np.argpartition(-scores, rerank)[:rerank]
        found.append(exact_top(query, pages, candidates, k))
        latencies.append(time.perf_counter() - began)
    return build, latencies, found


def run_fast_plaid(pages, queries, k, rerank, create_args=None):
    import torch
    from fast_plaid import search

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        index = search.FastPlaid(index=folder, device="cpu")
        index.create(
            documents_embeddings=[torch.from_numpy(p) for p in pages], **(create_args or {})
        )
        build = time.perf_counter() - started
        latencies, found = [], []
        for query in queries:
            began = time.perf_counter()
            result = index.search(queries_embeddings=torch.from_numpy(query[None]), top_k=k)
            latencies.append(time.perf_counter() - began)
            found.append([int(page) for page, _ in result[0]])
    return build, latencies, found


def run_pylate(pages, queries, k, rerank, kind, index_args=None):
    from pylate import indexes, retrieve

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        make = indexes.PLAID if kind == "plaid" else indexes.Voyager
        index = make(index_folder=folder, index_name="bench", override=True, **(index_args or {}))
        index.add_documents(
            documents_ids=[str(i) for i in range(len(pages))], documents_embeddings=pages
        )
        retriever = retrieve.ColBERT(index=index)
        build = time.perf_counter() - started
        latencies, found = [], []
        for query in queries:
            began = time.perf_counter()
            result = retriever.retrieve(queries_embeddings=[query], k=k)
            latencies.append(time.perf_counter() - began)
            found.append([int(hit["id"]) for hit in result[0]])
    return build, latencies, found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("peer")
    parser.add_argument("corpus")
    parser.add_argument("--rerank", type=int, default=100)
    parser.add_argument(
        "--peer-args",
        type=json.loads,
        default=None,
        help="as JSON: fast-plaid's create() arguments, or PyLate's index constructor's",
    )
    args = parser.parse_args()
    data = np.load(args.corpus)
    offsets = data["offsets"]
    vectors = data["vectors"].astype(np.float32, copy=False)
    pages = [vectors[offsets[i] : offsets[i + 1]] for i in range(offsets.size - 1)]
    queries = list(data["queries"])
    k = int(data["k"])
    if args.peer == "muvera":
        build, latencies, found = run_muvera(pages, queries, k, args.rerank)
    elif args.peer == "fast-plaid":
        build, latencies, found = run_fast_plaid(pages, queries, k, args.rerank, args.peer_args)
    elif args.peer.startswith("pylate-"):
        build, latencies, found = run_pylate(
            pages, queries, k, args.rerank, args.peer[7:], args.peer_args
        )
    else:
        sys.exit(f"unknown peer {args.peer}")
    print(json.dumps({"build_s": build, "latencies_s": latencies, "found": found}))


if __name__ == "__main__":
    main()
