"""Image search at scale: LanceDB's ANN index vs exact search in LanceDBImageStore.

100k synthetic image vectors (256 dimensions, BLIP-2's size) drawn around 2,000 cluster centres
(photo collections are clumpy: many shots of the same scene), unit length. Queries are of two
kinds: near-duplicates of stored images (search by example) and noisier points near a centre
(a text query lands near, not on, its images). For each search the store's own query path
(``LanceDBImageStore.query``) is timed and its top 10 compared with the true top 10 (numpy,
exact cosine), for the exact search (``exact=True``), IVF-HNSW-SQ and IVF-PQ (with a refine
step), side by side in one run.

    python benchmarks/image_search.py                    # 100k vectors
    python benchmarks/image_search.py --rows 20000       # quicker
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import platform
import statistics
import subprocess
import tempfile
import time

import numpy as np
from llama_index.core.schema import ImageNode
from llama_index.core.vector_stores.types import VectorStoreQuery
from PIL import Image

from llama_index_vlm.image_search.store import LanceDBImageStore

DIM = 256
K = 10
FINGERPRINT = {"model": "synthetic", "model_class": "none", "embedding_dim": DIM}


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def noise(rng: np.random.Generator, n: int, norm: float) -> np.ndarray:
    """``n`` random offsets of about ``norm`` in length."""
    return norm * rng.standard_normal((n, DIM)) / np.sqrt(DIM)


def corpus(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((2000, DIM)))
    members = rng.integers(0, len(centres), rows)
    vectors = unit(centres[members] + noise(rng, rows, 0.6))
    return vectors, centres


def queries(vectors: np.ndarray, centres: np.ndarray, n: int, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    near_duplicates = unit(vectors[rng.integers(0, len(vectors), n)] + noise(rng, n, 0.1))
    near_centres = unit(centres[rng.integers(0, len(centres), n)] + noise(rng, n, 0.8))
    return {"by example": near_duplicates, "text-like": near_centres}


def fill(store: LanceDBImageStore, vectors: np.ndarray, batch: int = 20_000) -> float:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "white").save(buffer, format="JPEG")
    image = base64.b64encode(buffer.getvalue()).decode()
    started = time.perf_counter()
    for start in range(0, len(vectors), batch):
        nodes = [
            ImageNode(
                id_=f"img{start + offset}",
                image=image,
                image_mimetype="image/jpeg",
                metadata={"file_name": f"img{start + offset}.jpg"},
                embedding=vector.tolist(),
            )
            for offset, vector in enumerate(vectors[start : start + batch])
        ]
        store.add(nodes, fingerprint=FINGERPRINT)
    return time.perf_counter() - started


def measure(store: LanceDBImageStore, points: np.ndarray, truth: np.ndarray, exact: bool):
    latencies, recalls = [], []
    for point, wanted in zip(points, truth, strict=True):
        started = time.perf_counter()
        result = store.query(
            VectorStoreQuery(query_embedding=point.tolist(), similarity_top_k=K), exact=exact
        )
        latencies.append((time.perf_counter() - started) * 1000)
        found = {int(node_id[3:]) for node_id in result.ids}
        recalls.append(len(found & set(wanted.tolist())) / K)
    latencies.sort()
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    return statistics.mean(recalls), statistics.median(latencies), p95


def true_top_k(vectors: np.ndarray, points: np.ndarray) -> np.ndarray:
    scores = points @ vectors.T
    top = np.argpartition(-scores, K, axis=1)[:, :K]
    return top


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            line.split(":", 1)[1].strip()
            for line in lscpu.splitlines()
            if line.startswith("Model name")
        )
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores; load average at end: {load}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="stored image vectors")
    parser.add_argument("--queries", type=int, default=200, help="queries of each kind")
    args = parser.parse_args(argv)
    vectors, centres = corpus(args.rows)
    query_sets = queries(vectors, centres, args.queries)
    truths = {name: true_top_k(vectors, points) for name, points in query_sets.items()}
    root = tempfile.mkdtemp(prefix="image-search-bench-")
    print(f"{args.rows} vectors of {DIM} dims, {args.queries} queries of each kind, top {K}\n")
    print("| search | build s | queries | recall@10 | p50 ms | p95 ms |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for index_type in ("IVF_HNSW_SQ", "IVF_PQ"):
        store = LanceDBImageStore(
            uri=os.path.join(root, index_type),
            ann_min_rows=args.rows + 1,  # filled first, indexed once, below
            index_type=index_type,
            refine_factor=10 if index_type == "IVF_PQ" else None,
        )
        fill(store, vectors)
        started = time.perf_counter()
        store.create_ann_index()
        build = time.perf_counter() - started
        rows = [("exact (no index)", True, "")] if index_type == "IVF_HNSW_SQ" else []
        rows.append(
            (index_type + (" + refine 10" if index_type == "IVF_PQ" else ""), False, f"{build:.1f}")
        )
        for label, exact, build_text in rows:
            for name, points in query_sets.items():
                recall, p50, p95 = measure(store, points, truths[name], exact)
                print(
                    f"| {label} | {build_text} | {name} | {recall:.3f} | {p50:.1f} | {p95:.1f} |",
                    flush=True,
                )
    print(f"\nMachine: {machine()}")


if __name__ == "__main__":
    main()
