"""PageVectorTransform: the page encoder as a LlamaIndex ``TransformComponent``.

LlamaIndex's ``IngestionPipeline`` runs transformations over documents and adds the nodes that
come out with an ``embedding`` to its ``vector_store``. This transformation embeds each page
image with a :class:`~llama_index_vlm.encoder.ColPaliEncoder` and leaves the page's
multi-vector on the node (row after row in ``node.embedding``, the encoder's fingerprint in
hidden metadata; see :mod:`~llama_index_vlm.store.carried`), so a
:class:`~llama_index_vlm.store.LanceDBPageStore` stores the pages::

    from llama_index.core.ingestion import IngestionPipeline

    pipeline = IngestionPipeline(transformations=[PageVectorTransform(encoder)],
                                 vector_store=store)
    pipeline.run(documents=PDFPageReader().load_data("reports/"))

A page's vectors as Python floats take about 4 MB in memory (1030 vectors of 128 numbers), for
as long as the pipeline holds the nodes; for large collections :func:`~llama_index_vlm.ingest`
streams pages in batches instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.schema import BaseNode, TransformComponent

from llama_index_vlm.encoder import ColPaliEncoder
from llama_index_vlm.fingerprint import POOL_FACTOR_KEY
from llama_index_vlm.pages import page_image
from llama_index_vlm.search.pooling import hierarchical_pool
from llama_index_vlm.store.carried import PAGE_VECTORS_FINGERPRINT_KEY


class PageVectorTransform(TransformComponent):
    """Embed page nodes' images and leave their ColPali multi-vectors on the nodes.

    Args:
        encoder: the page encoder (or give ``encoder_name_or_path`` to load one).
        batch_size: pages per encoder call.
        pool_factor: shrink each page's vectors to ``1 / pool_factor`` of their number by Ward
            token pooling; 1 (the default) keeps them all. A store keeps one pool factor.
        encoder_name_or_path, encoder_revision: the checkpoint to load when no ``encoder`` is
            given (this is what ``to_dict`` records).
    """

    encoder_name_or_path: str = Field(description="Hub id or directory of the page encoder.")
    encoder_revision: str | None = Field(default=None, description="Hub revision of it.")
    batch_size: int = Field(default=8, gt=0, description="Pages per encoder call.")
    pool_factor: float = Field(default=1, ge=1, description="Token pooling factor (1: none).")

    _encoder: ColPaliEncoder = PrivateAttr()

    def __init__(
        self,
        encoder: ColPaliEncoder | None = None,
        batch_size: int = 8,
        pool_factor: float = 1,
        encoder_name_or_path: str | None = None,
        encoder_revision: str | None = None,
        **kwargs: Any,
    ) -> None:
        if encoder is None:
            if encoder_name_or_path is None:
                raise TypeError("PageVectorTransform needs encoder=ColPaliEncoder(...)")
            encoder = ColPaliEncoder.from_pretrained(
                encoder_name_or_path, revision=encoder_revision
            )
        super().__init__(
            encoder_name_or_path=str(encoder.name_or_path),
            encoder_revision=encoder.revision,
            batch_size=batch_size,
            pool_factor=pool_factor,
            **kwargs,
        )
        self._encoder = encoder

    @classmethod
    def class_name(cls) -> str:
        """Stable name used by ``to_dict``/``from_dict``."""
        return "PageVectorTransform"

    @property
    def encoder(self) -> ColPaliEncoder:
        """The page encoder."""
        return self._encoder

    @property
    def fingerprint(self) -> dict[str, Any]:
        """The fingerprint of the vectors it makes: the encoder's and the pool factor."""
        factor = self.pool_factor
        return {
            **self._encoder.fingerprint,
            POOL_FACTOR_KEY: int(factor) if float(factor).is_integer() else float(factor),
        }

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[BaseNode]:
        """Set each page node's ``embedding`` to its flattened multi-vector; return the nodes.

        Raises:
            InvalidPageError: a node holds no readable page image.
        """
        nodes = list(nodes)
        fingerprint = self.fingerprint
        for start in range(0, len(nodes), self.batch_size):
            batch = nodes[start : start + self.batch_size]
            images = [page_image(node) for node in batch]
            vectors = self._encoder.embed_images(images, show_progress=False)
            for node, page_vectors in zip(batch, vectors, strict=True):
                if self.pool_factor > 1:
                    page_vectors = hierarchical_pool(page_vectors, self.pool_factor)
                _carry(node, np.asarray(page_vectors, dtype=np.float32), fingerprint)
        return nodes


def _carry(node: BaseNode, vectors: np.ndarray, fingerprint: dict[str, Any]) -> None:
    """Leave ``vectors`` and their ``fingerprint`` on ``node``, hidden from models."""
    node.embedding = vectors.ravel().tolist()
    node.metadata[PAGE_VECTORS_FINGERPRINT_KEY] = fingerprint
    for keys in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
        if PAGE_VECTORS_FINGERPRINT_KEY not in keys:
            keys.append(PAGE_VECTORS_FINGERPRINT_KEY)
