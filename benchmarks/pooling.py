"""Ward token pooling: Ward on the page vectors (ours) against colpali-engine's formulation.

colpali-engine's ``HierarchicalTokenPooler`` and PyLate hand SciPy's ``linkage`` the square
matrix ``1 - cosine similarity``, which SciPy reads as observations: every vector described by
its distances to all the others, then Ward in that n-dimensional space. Ours runs Ward on the
vectors themselves (:func:`llama_index_vlm.search.ward_cluster_labels`). Both cut the tree with
``fcluster(maxclust)`` at ``ceil(n / pool_factor)`` clusters. Printed side by side, on the
same synthetic ColPali-like pages (1030 unit vectors, half of them near one "blank" vector):
seconds per page, and how far pooled MaxSim lands from exact MaxSim for queries near the page.

    python benchmarks/pooling.py --pages 5 --pool-factor 3
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from scipy.cluster.hierarchy import fcluster, linkage

from llama_index_vlm.search import maxsim_scores, ward_cluster_labels


def synthetic_page(rng: np.random.Generator, n_vectors: int, dim: int) -> np.ndarray:
    """Unit vectors around 60 centres, one of which (the blank margin) takes half of them."""
    n_centres = 60
    centres = rng.standard_normal((n_centres, dim))
    weights = np.r_[0.5, np.full(n_centres - 1, 0.5 / (n_centres - 1))]
    vectors = centres[rng.choice(n_centres, n_vectors, p=weights)]
    vectors += 0.4 * rng.standard_normal((n_vectors, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def cosine_rows_labels(vectors: np.ndarray, n_clusters: int) -> np.ndarray:
    """colpali-engine's clustering: Ward over the rows of the cosine-distance matrix."""
    distances = 1 - vectors.astype(np.float64) @ vectors.T.astype(np.float64)
    return fcluster(linkage(distances, method="ward"), t=n_clusters, criterion="maxclust") - 1


def pooled(vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    sums = np.zeros((int(labels.max()) + 1, vectors.shape[1]))
    np.add.at(sums, labels, vectors)
    return (sums / np.linalg.norm(sums, axis=1, keepdims=True)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=5)
    parser.add_argument("--vectors", type=int, default=1030)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--pool-factor", type=float, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    methods = {
        "ward on vectors (ours)": ward_cluster_labels,
        "ward on 1-cos rows": cosine_rows_labels,
    }
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    errors: dict[str, list[float]] = {name: [] for name in methods}
    n_clusters = int(np.ceil(args.vectors / args.pool_factor))
    for _ in range(args.pages):
        page = synthetic_page(rng, args.vectors, args.dim)
        near = page[rng.choice(args.vectors, 20, replace=False)]
        query = near + 0.3 * rng.standard_normal(near.shape).astype(np.float32)
        exact = maxsim_scores(query, [page])[0, 0]
        for name, cluster in methods.items():
            start = time.perf_counter()
            labels = cluster(page, n_clusters)
            seconds[name].append(time.perf_counter() - start)
            approximate = maxsim_scores(query, [pooled(page, labels)])[0, 0]
            errors[name].append(abs(approximate - exact) / exact)
    print(f"load average: {os.getloadavg()}; one torch thread")
    print(
        f"{args.pages} pages of {args.vectors} x {args.dim}, pool factor {args.pool_factor:g} "
        f"({n_clusters} clusters)"
    )
    print(f"{'method':<24} {'s/page (median)':>16} {'MaxSim rel. error (mean)':>26}")
    for name in methods:
        print(f"{name:<24} {np.median(seconds[name]):>16.3f} {np.mean(errors[name]):>26.4f}")


if __name__ == "__main__":
    main()
