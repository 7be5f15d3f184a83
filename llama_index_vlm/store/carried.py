"""Page vectors carried on nodes, as LlamaIndex's ``IngestionPipeline`` hands them to a store.

A LlamaIndex vector store receives nodes whose ``embedding`` an earlier transformation set.
A page's ColPali vectors are a matrix, and ``BaseNode.embedding`` is a flat list of floats, so
:class:`~llama_index_vlm.transform.PageVectorTransform` stores the matrix row after row in
``node.embedding`` and the encoder's fingerprint (which gives the row length,
``embedding_dim``) in the node's metadata under :data:`PAGE_VECTORS_FINGERPRINT_KEY`, hidden
from models. :func:`vectors_on_nodes` takes them back off: the store keeps neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from llama_index.core.schema import BaseNode

from llama_index_vlm.errors import InvalidPageError, InvalidRequestError, ModelMismatchError
from llama_index_vlm.pages import canonical_json

#: The node metadata key under which page vectors' fingerprint travels with ``node.embedding``.
PAGE_VECTORS_FINGERPRINT_KEY = "page_vectors_fingerprint"


def carries_vectors(node: BaseNode) -> bool:
    """Whether ``node`` carries page vectors put there by ``PageVectorTransform``."""
    return node.embedding is not None and PAGE_VECTORS_FINGERPRINT_KEY in (node.metadata or {})


def given_or_carried(
    nodes: Sequence[BaseNode],
    page_vectors: Any,
    fingerprint: dict[str, Any] | None,
) -> tuple[Sequence[BaseNode], Any, dict[str, Any] | None]:
    """What ``LanceDBPageStore.add`` stores: the vectors it was given, else those the nodes
    carry (:func:`vectors_on_nodes`).
    """
    if page_vectors is not None or fingerprint is not None or not nodes:
        return nodes, page_vectors, fingerprint
    return vectors_on_nodes(nodes)


def vectors_on_nodes(
    nodes: Sequence[BaseNode],
) -> tuple[list[BaseNode], list[np.ndarray], dict[str, Any] | None]:
    """``(nodes, page vectors, fingerprint)`` from nodes that carry their vectors; the nodes
    returned are copies without the vectors and the fingerprint key.

    Raises:
        InvalidPageError: a node has no embedding, or one whose length is not a whole number
            of vectors.
        InvalidRequestError: a node has a single-vector embedding (from a text embedding
            model, as ``VectorStoreIndex`` computes).
        ModelMismatchError: the nodes carry vectors of different encoders.
    """
    pages: list[BaseNode] = []
    vectors: list[np.ndarray] = []
    fingerprints: dict[str, dict[str, Any]] = {}
    for node in nodes:
        if node.embedding is None:
            raise InvalidPageError(
                f"LanceDBPageStore.add needs page_vectors=[one (n_vectors, dim) array per "
                f"node], or nodes that carry them (node {node.node_id!r} has none): put "
                "PageVectorTransform(encoder) last in the IngestionPipeline's transformations"
            )
        if not carries_vectors(node):
            raise InvalidRequestError(_single_vector(node))
        fingerprint = node.metadata[PAGE_VECTORS_FINGERPRINT_KEY]
        fingerprints[canonical_json(fingerprint)] = fingerprint
        vectors.append(_matrix(node, int(fingerprint["embedding_dim"])))
        pages.append(_without_vectors(node))
    if len(fingerprints) > 1:
        raise ModelMismatchError(
            f"these nodes carry page vectors of {len(fingerprints)} different encoders; one add "
            "stores one encoder's vectors"
        )
    return pages, vectors, next(iter(fingerprints.values()), None)


def _matrix(node: BaseNode, dim: int) -> np.ndarray:
    flat = np.asarray(node.embedding, dtype=np.float32)
    if flat.ndim != 1 or flat.size == 0 or flat.size % dim:
        raise InvalidPageError(
            f"page {node.node_id!r}: its embedding holds {flat.size} numbers, not a whole "
            f"number of {dim}-dimensional vectors"
        )
    return flat.reshape(-1, dim)


def _without_vectors(node: BaseNode) -> BaseNode:
    metadata = {k: v for k, v in node.metadata.items() if k != PAGE_VECTORS_FINGERPRINT_KEY}
    return node.model_copy(
        update={
            "embedding": None,
            "metadata": metadata,
            "excluded_llm_metadata_keys": _without_key(node.excluded_llm_metadata_keys),
            "excluded_embed_metadata_keys": _without_key(node.excluded_embed_metadata_keys),
        }
    )


def _without_key(keys: list[str]) -> list[str]:
    return [key for key in keys if key != PAGE_VECTORS_FINGERPRINT_KEY]


def _single_vector(node: BaseNode) -> str:
    return (
        f"node {node.node_id!r} has a single-vector embedding ({len(node.embedding)} numbers, "
        "from a text embedding model, as VectorStoreIndex computes), and a LanceDBPageStore "
        "holds ColPali page multi-vectors: build the index with "
        "VisualDocumentIndex.from_documents(docs, encoder=...) or "
        "VisualDocumentIndex.from_vector_store(store, encoder=...), or put "
        "PageVectorTransform(encoder) in the IngestionPipeline"
    )
