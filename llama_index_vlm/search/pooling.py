"""Token pooling: shrink a page's multi-vector by clustering similar vectors and averaging them.

Most of a ColPali page's ~1030 patch vectors are near-duplicates (margins, white space, repeated
texture), so a page can keep its retrieval quality with far fewer vectors. Two poolers:

- :func:`hierarchical_pool`: Ward agglomerative clustering of one page's vectors with SciPy,
  as colpali-engine's ``HierarchicalTokenPooler``; cut at ``ceil(n / pool_factor)`` clusters
  (see :func:`ward_cluster_labels` for how ours differs). Deterministic; the fit
  for shrinking stored vectors at ingest time (the ColPali authors report pool factor 3 keeps
  ~98% of retrieval quality). Costs tens of milliseconds per 1030-vector page on a CPU core,
  small next to encoding the page.
- :func:`kmeans_pool`: spherical k-means over a batch of pages at once, one to two orders of
  magnitude cheaper per page. Builds the compact candidate codes of the fast index (pool
  factor 16), where pooled vectors only pick candidates and an exact rerank sets the order.

Both return unit-norm cluster means, so pooled vectors score with MaxSim like the originals.

Example:
    >>> import numpy as np
    >>> page = np.random.default_rng(0).standard_normal((1030, 128)).astype(np.float32)
    >>> hierarchical_pool(page, pool_factor=3).shape
    (344, 128)
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.cluster.hierarchy import fcluster, linkage

from llama_index_vlm.search.maxsim import ArrayLike, tensor_view

#: k-means seeds are picked by farthest-point sampling among this many vectors per cluster,
#: evenly strided over the page: enough to find the rare content vectors, and it keeps the
#: seeding's pairwise similarity matrix small.
_SEED_SAMPLE_PER_CLUSTER = 4


def _unit_rows(vectors: torch.Tensor) -> torch.Tensor:
    return vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _n_clusters(n_vectors: int, pool_factor: float) -> int:
    if pool_factor < 1:
        raise ValueError(f"pool_factor must be >= 1, got {pool_factor}")
    return max(1, math.ceil(n_vectors / pool_factor))


def _to_tensor(vectors: ArrayLike) -> tuple[torch.Tensor, np.dtype | torch.dtype, bool]:
    """float32 tensor view/copy of ``vectors``, the input dtype, and whether it was numpy."""
    if isinstance(vectors, torch.Tensor):
        return vectors.detach().to("cpu", torch.float32), vectors.dtype, False
    array = np.asarray(vectors)
    if array.dtype == np.float16:
        # torch widens float16 with SIMD; numpy's conversion is scalar and ~10x slower.
        return tensor_view(np.ascontiguousarray(array)).float(), array.dtype, True
    dtype = array.dtype if array.dtype == np.float32 else np.dtype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)), dtype, True


def _from_tensor(pooled: torch.Tensor, dtype: np.dtype | torch.dtype, was_numpy: bool):
    if was_numpy:
        torch_dtype = torch.float16 if dtype == np.float16 else torch.float32
        return pooled.to(torch_dtype).numpy()
    return pooled.to(dtype)


def ward_cluster_labels(vectors: ArrayLike, n_clusters: int) -> np.ndarray:
    """Cluster labels ``(n_vectors,)`` from Ward agglomerative clustering cut at ``n_clusters``.

    SciPy builds the Ward tree (``linkage(method="ward")``) and cuts it into at most
    ``n_clusters`` clusters (``fcluster(criterion="maxclust")``), as colpali-engine's
    ``HierarchicalTokenPooler`` and PyLate do. Fewer clusters come back only when merges tie
    exactly at the cut, e.g. duplicate vectors, whose clusters would be identical anyway.
    Labels are numbered by first appearance, so they are deterministic.

    Ward runs on the vectors themselves. colpali-engine and PyLate hand ``linkage`` the square
    matrix ``1 - cosine similarity``, which SciPy reads as ``n`` observations of ``n`` features
    (each vector described by its distances to all others); on unit vectors, Euclidean Ward on
    the vectors already is cosine geometry (``|a - b|^2 = 2 - 2 cos(a, b)``). Measured by
    ``benchmarks/pooling.py`` on 1030-vector pages: that variant is about 6x slower per page
    and keeps MaxSim no closer to exact than Ward on the vectors.

    Example:
        >>> import numpy as np
        >>> points = np.array([[0.0, 0.0], [10.0, 10.0], [0.1, 0.0], [10.0, 10.1]])
        >>> ward_cluster_labels(points, 2)
        array([0, 1, 0, 1])
    """
    points = np.asarray(_to_tensor(vectors)[0], dtype=np.float64)
    if points.ndim != 2:
        raise ValueError(f"vectors must be 2-D (n_vectors, dim), got shape {points.shape}")
    n_vectors = points.shape[0]
    if n_clusters >= n_vectors:
        return np.arange(n_vectors)
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
    tree = linkage(points, method="ward")
    clusters = fcluster(tree, t=n_clusters, criterion="maxclust")
    # Number clusters by their first vector so labels do not depend on SciPy's numbering.
    _, first_seen, labels = np.unique(clusters, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first_seen))[labels]


def hierarchical_pool(vectors: ArrayLike, pool_factor: float = 3) -> ArrayLike:
    """Pool one page's ``(n_vectors, dim)`` vectors to ``ceil(n_vectors / pool_factor)``.

    Ward-clusters the vectors (:func:`ward_cluster_labels`; fewer clusters only when merges tie
    exactly at the cut, as duplicate vectors do), averages each cluster and re-normalises the
    means to unit length. Returns the same type (numpy or torch) and dtype as
    the input; clusters are ordered by their first vector.

    Example:
        >>> import numpy as np
        >>> page = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float16)
        >>> pooled = hierarchical_pool(page, pool_factor=2)
        >>> pooled.shape, pooled.dtype
        ((5, 4), dtype('float16'))
    """
    points, dtype, was_numpy = _to_tensor(vectors)
    n_clusters = _n_clusters(points.shape[0], pool_factor)
    labels = torch.from_numpy(ward_cluster_labels(points, n_clusters))
    sums = torch.zeros(int(labels.max()) + 1, points.shape[1]).index_add_(0, labels, points)
    return _from_tensor(_unit_rows(sums), dtype, was_numpy)


def kmeans_pool(
    page_vectors: ArrayLike, pool_factor: float = 16, n_iterations: int = 3
) -> ArrayLike:
    """Pool a batch of equal-length pages ``(n_pages, n_vectors, dim)`` with spherical k-means.

    Each page gets ``ceil(n_vectors / pool_factor)`` unit-norm cluster means. Centroids start
    from farthest-point sampling (deterministic, and it seeds the rare content vectors rather
    than only the dominant blank ones), then ``n_iterations`` rounds of assign-to-most-similar
    and re-average. All pages of the batch are processed by the same batched matrix products.
    A 2-D input is treated as one page.

    Returns the same type (numpy or torch) and dtype as the input,
    ``(n_pages, n_clusters, dim)`` (or ``(n_clusters, dim)`` for one page).
    """
    points, dtype, was_numpy = _to_tensor(page_vectors)
    single = points.ndim == 2
    if single:
        points = points[None]
    if points.ndim != 3:
        raise ValueError(f"expected (n_pages, n_vectors, dim), got {tuple(points.shape)}")
    n_pages, n_vectors, dim = points.shape
    n_clusters = _n_clusters(n_vectors, pool_factor)
    if n_clusters >= n_vectors:
        pooled = _unit_rows(points)
    else:
        pooled = _kmeans_centroids(_unit_rows(points), n_clusters, n_iterations)
    return _from_tensor(pooled[0] if single else pooled, dtype, was_numpy)


def _kmeans_centroids(points: torch.Tensor, n_clusters: int, n_iterations: int) -> torch.Tensor:
    n_pages, n_vectors, dim = points.shape
    # Farthest-point seeding on an evenly strided sample of the page: repeatedly add the sample
    # vector least similar to every seed so far, which seeds the rare content vectors and not
    # only the dominant blank ones. The sample's similarities come from one batched product;
    # seeding on every vector would cost one pass over the page per seed.
    n_sample = min(n_vectors, _SEED_SAMPLE_PER_CLUSTER * n_clusters)
    sample = points[:, torch.linspace(0, n_vectors - 1, n_sample).round().long()]
    sample_similarity = torch.bmm(sample, sample.transpose(1, 2))
    page_rows = torch.arange(n_pages)
    seeds = torch.zeros(n_pages, n_clusters, dtype=torch.long)
    best_similarity = sample_similarity[:, 0].clone()
    for cluster in range(1, n_clusters):
        seeds[:, cluster] = best_similarity.argmin(1)
        torch.maximum(
            best_similarity, sample_similarity[page_rows, seeds[:, cluster]], out=best_similarity
        )
    centroids = sample[page_rows[:, None], seeds]
    for _ in range(n_iterations):
        assignment = torch.bmm(points, centroids.transpose(1, 2)).argmax(2)
        # Scatter-add every vector into its page's cluster: one pass over the points.
        flat_clusters = (assignment + page_rows[:, None] * n_clusters).reshape(-1)
        sums = torch.zeros(n_pages * n_clusters, dim).index_add_(
            0, flat_clusters, points.reshape(-1, dim)
        )
        sums = sums.view(n_pages, n_clusters, dim)
        norms = sums.norm(dim=2, keepdim=True)
        # A cluster that lost all its vectors keeps its previous centroid.
        centroids = torch.where(norms > 0, sums / norms.clamp_min(1e-12), centroids)
    return centroids
