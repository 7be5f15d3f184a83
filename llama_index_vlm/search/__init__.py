"""Search math for late-interaction page retrieval: pure functions over numpy arrays and tensors.

- :mod:`~llama_index_vlm.search.maxsim`: exact MaxSim of queries against packed pages, top-k.
- :mod:`~llama_index_vlm.search.exact_search`: the exact top k, screened with float16 products.
- :mod:`~llama_index_vlm.search.device_maxsim`: exact MaxSim with the pages on a GPU.
- :mod:`~llama_index_vlm.search.code_scores`: MaxSim multiplied as float16, and its error bound.
- :mod:`~llama_index_vlm.search.pooling`: token pooling (Ward hierarchical, batched k-means).
- :mod:`~llama_index_vlm.search.binary`: sign codes and Hamming MaxSim.
- :mod:`~llama_index_vlm.search.centroids`: a corpus-wide codebook and centroid interaction.
- :mod:`~llama_index_vlm.search.rerank`: exact rerank as deep as the scores call for.
- :mod:`~llama_index_vlm.search.fast`: the fast multi-stage index and the search-mode choice.

Nothing here knows about LanceDB or LlamaIndex: callers hand in vectors (and, for the fast
index's rerank, a function that fetches full vectors by page id).

Example:
    >>> import numpy as np
    >>> from llama_index_vlm.search import PageVectorMatrix, maxsim_scores, top_k
    >>> rng = np.random.default_rng(0)
    >>> pages = PageVectorMatrix.from_pages([rng.standard_normal((30, 8)) for _ in range(5)])
    >>> query = pages.page(3)[:4]
    >>> top_k(maxsim_scores(query, pages)[0], k=1)[0]
    array([3])
"""

from llama_index_vlm.search.binary import binary_codes, hamming_maxsim_scores, hamming_similarity
from llama_index_vlm.search.centroids import CentroidPostings, assign_centroids, train_centroids
from llama_index_vlm.search.device_maxsim import DevicePageMatrix, resolve_search_device
from llama_index_vlm.search.exact_search import exact_top_k, max_vector_norm, page_vector_norms
from llama_index_vlm.search.fast import (
    DEFAULT_CANDIDATE_DEPTH,
    DEFAULT_MAX_CANDIDATE_DEPTH,
    DEFAULT_PREFILTER_DEPTH,
    FAST_MODE_MIN_PAGES,
    FastPageIndex,
    choose_search_mode,
    default_prefilter_depth,
)
from llama_index_vlm.search.maxsim import PageVectorMatrix, maxsim_scores, top_k
from llama_index_vlm.search.pooling import hierarchical_pool, kmeans_pool, ward_cluster_labels
from llama_index_vlm.search.rerank import (
    RerankResult,
    adaptive_rerank,
    required_depth,
    rerank_exactly,
)

__all__ = [
    "DEFAULT_CANDIDATE_DEPTH",
    "DEFAULT_MAX_CANDIDATE_DEPTH",
    "DEFAULT_PREFILTER_DEPTH",
    "CentroidPostings",
    "DevicePageMatrix",
    "RerankResult",
    "adaptive_rerank",
    "assign_centroids",
    "default_prefilter_depth",
    "exact_top_k",
    "max_vector_norm",
    "page_vector_norms",
    "required_depth",
    "resolve_search_device",
    "train_centroids",
    "FAST_MODE_MIN_PAGES",
    "FastPageIndex",
    "PageVectorMatrix",
    "binary_codes",
    "choose_search_mode",
    "hamming_maxsim_scores",
    "hamming_similarity",
    "hierarchical_pool",
    "kmeans_pool",
    "maxsim_scores",
    "rerank_exactly",
    "top_k",
    "ward_cluster_labels",
]
