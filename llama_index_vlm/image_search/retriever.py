"""ImageSearchRetriever: photos and figures found by a text or by an example image, as a native
LlamaIndex retriever.

A text query is embedded by the image-text encoder's text tower, an image query (a
``QueryBundle`` with ``image_path``) by its image tower; both are searched in the image store's
vector index. With ``itm_rerank`` (BLIP-2 only), the best ``rerank_candidates`` of a text query
are re-scored by BLIP-2's image-text matching head, as BLIP-2's own retrieval does, and the
scores returned are its match probabilities.
"""

from __future__ import annotations

import asyncio

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters, VectorStoreQuery

from llama_index_vlm.errors import EmptyInputError, UsageError
from llama_index_vlm.image_search.encoder import ImageTextEncoder
from llama_index_vlm.image_search.store import LanceDBImageStore


class ImageSearchRetriever(BaseRetriever):
    """Retrieve images by text (text -> images) or by example (image -> images).

    Args:
        encoder: the image-text encoder the images were indexed with (checked).
        store: the image store.
        similarity_top_k: how many images to return.
        filters: metadata filters applied before the search (as for pages).
        itm_rerank: re-score the best candidates of a text query with BLIP-2's image-text
            matching head (``use_image_text_matching_head=True``); scores are then match
            probabilities instead of cosine similarities.
        rerank_candidates: candidates re-scored with ``itm_rerank`` (at least
            ``similarity_top_k``).
        exact: compare every vector instead of using the ANN index.

    Example::

        retriever = ImageSearchRetriever(encoder, store, similarity_top_k=5, itm_rerank=True)
        hits = retriever.retrieve("a red bicycle against a wall")
        similar = retriever.retrieve(QueryBundle(query_str="", image_path="bike.jpg"))

    Raises:
        ModelMismatchError: the store holds another encoder's vectors.
        UsageError: ``itm_rerank`` with an encoder that has no matching head (SigLIP).
    """

    def __init__(
        self,
        encoder: ImageTextEncoder,
        store: LanceDBImageStore,
        similarity_top_k: int = 5,
        filters: MetadataFilters | None = None,
        itm_rerank: bool = False,
        rerank_candidates: int = 20,
        exact: bool = False,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if similarity_top_k < 1:
            raise ValueError(f"similarity_top_k must be at least 1, not {similarity_top_k}")
        if itm_rerank and not encoder.can_match:
            raise UsageError(
                f"{encoder.fingerprint['model_class']} has no image-text matching head; "
                "itm_rerank needs a BLIP-2 image-text retrieval checkpoint"
            )
        store.check_fingerprint(encoder.fingerprint)
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        self.encoder = encoder
        self.store = store
        self.similarity_top_k = similarity_top_k
        self.filters = filters
        self.itm_rerank = itm_rerank
        self.rerank_candidates = max(rerank_candidates, similarity_top_k)
        self.exact = exact

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        image_path = getattr(query_bundle, "image_path", None)
        text = (query_bundle.query_str or "").strip()
        if image_path:
            from llama_index_vlm.image_search.indexing import load_image_file

            vector = self.encoder.embed_images([load_image_file(image_path)], show_progress=False)
        elif text:
            vector = self.encoder.embed_texts([text], show_progress=False)
        else:
            raise EmptyInputError("the query has neither text nor an image_path; give one")
        rerank = self.itm_rerank and not image_path
        depth = self.rerank_candidates if rerank else self.similarity_top_k
        result = self.store.query(
            VectorStoreQuery(
                query_embedding=vector[0].tolist(), similarity_top_k=depth, filters=self.filters
            ),
            exact=self.exact,
        )
        hits = [
            NodeWithScore(node=node, score=score)
            for node, score in zip(result.nodes, result.similarities, strict=True)
        ]
        if rerank:
            hits = self._rerank(text, hits)
        return hits[: self.similarity_top_k]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)

    def _rerank(self, text: str, hits: list[NodeWithScore]) -> list[NodeWithScore]:
        from llama_index_vlm.images import decode_image

        if not hits:
            return hits
        images = [decode_image(hit.node.image) for hit in hits]
        scores = self.encoder.match_scores(text, images)
        reranked = [
            NodeWithScore(node=hit.node, score=float(score))
            for hit, score in zip(hits, scores, strict=True)
        ]
        # A stable sort: equal match scores keep the vector search's order.
        return sorted(reranked, key=lambda hit: -hit.score)
