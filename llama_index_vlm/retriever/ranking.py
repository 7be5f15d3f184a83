"""What a page search becomes: ranked pages with the score a retriever reports.

- Scores: a raw MaxSim score sums one best cosine per query token, so it grows with the
  query's length and a fixed cutoff means nothing across queries. ``score="normalized"``
  divides it by the number of query tokens: the mean best cosine, in [-1, 1], which LlamaIndex's
  ``SimilarityPostprocessor(similarity_cutoff=...)`` can use. The raw score is always kept in
  the node's metadata (:data:`MAXSIM_SCORE_KEY`, hidden from models).
- Hybrid search: the visual ranking (MaxSim) and the pages' text ranking (BM25 over their text
  layer, LanceDB's full-text search) fused by reciprocal rank on page id, so each page appears
  once (:func:`hybrid_ranking`). Its score is the fused one; the BM25 score is kept under
  :data:`TEXT_SCORE_KEY`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from llama_index.core.schema import BaseNode, NodeWithScore

from llama_index_vlm.search.fusion import reciprocal_rank_fusion

#: How a retriever scores pages: raw MaxSim, or MaxSim per query token.
ScoreKind = Literal["maxsim", "normalized"]
SCORE_KINDS: tuple[str, ...] = ("maxsim", "normalized")

#: Node metadata key of a page's raw MaxSim score (hidden from models).
MAXSIM_SCORE_KEY = "maxsim_score"
#: Node metadata key of a page's BM25 text score in hybrid search (hidden from models).
TEXT_SCORE_KEY = "text_score"


@dataclass
class RankedPage:
    """One page of a ranking: its score and the raw scores behind it."""

    page_id: str
    score: float
    raw_scores: dict[str, float] = field(default_factory=dict)


def visual_ranking(
    hits: list[tuple[str, float]], n_query_tokens: int, score: ScoreKind
) -> list[RankedPage]:
    """MaxSim hits as ranked pages, scored raw or per query token.

    >>> [p.score for p in visual_ranking([("a", 6.0)], 12, "normalized")]
    [0.5]
    """
    divisor = max(n_query_tokens, 1) if score == "normalized" else 1
    return [
        RankedPage(page_id, value / divisor, {MAXSIM_SCORE_KEY: value}) for page_id, value in hits
    ]


def hybrid_ranking(
    visual_hits: list[tuple[str, float]],
    text_hits: list[tuple[str, float]],
    k: int,
    maxsim_of: Callable[[list[str]], list[float]] | None = None,
) -> list[RankedPage]:
    """The best ``k`` pages of the two rankings fused by reciprocal rank, each page once.

    ``visual_hits`` are the best pages by MaxSim (a retriever's candidate depth of them).
    A page the text ranking found further down gets its visual rank too, after those, by its
    own MaxSim (``maxsim_of(page_ids)``): a page first by text and not among the visual best
    then outranks the visual best when that page has no text match at all, instead of tying.

    >>> [(p.page_id, sorted(p.raw_scores)) for p in hybrid_ranking(
    ...     [("a", 9.0), ("b", 8.0)], [("b", 3.1), ("c", 1.0)], k=2)]
    [('b', ['maxsim_score', 'text_score']), ('a', ['maxsim_score'])]
    """
    seen = {page_id for page_id, _ in visual_hits}
    extra = [page_id for page_id, _ in text_hits if page_id not in seen]
    if extra and maxsim_of is not None:
        scores = maxsim_of(extra)
        visual_hits = visual_hits + sorted(zip(extra, scores, strict=True), key=lambda h: -h[1])
    raw: dict[str, dict[str, float]] = {}
    for key, hits in ((MAXSIM_SCORE_KEY, visual_hits), (TEXT_SCORE_KEY, text_hits)):
        for page_id, value in hits:
            raw.setdefault(page_id, {})[key] = value
    fused = reciprocal_rank_fusion([[i for i, _ in visual_hits], [i for i, _ in text_hits]])
    return [RankedPage(page_id, value, raw[page_id]) for page_id, value in fused[:k]]


def scored_nodes(
    ranking: list[RankedPage], get_nodes: Callable[[list[str]], list[BaseNode]]
) -> list[NodeWithScore]:
    """The ranked pages as LlamaIndex results, raw scores in hidden metadata; a page
    ``get_nodes`` does not return (deleted before the version it reads) is left out.
    """
    nodes = {node.node_id: node for node in get_nodes([page.page_id for page in ranking])}
    results = []
    for page in ranking:
        node = nodes.get(page.page_id)
        if node is None:
            continue
        for key, value in page.raw_scores.items():
            node.metadata[key] = value
            for hidden in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
                if key not in hidden:
                    hidden.append(key)
        results.append(NodeWithScore(node=node, score=page.score))
    return results
