"""Before/after evaluation of fine-tuning: retrieval and answer metrics on a held-out split.

Retrieval (:func:`evaluate_retriever`): every held-out query is ranked against a corpus of pages
(by default every page the pairs name) with the encoder's own embeddings and exact MaxSim, and
scored by nDCG@5, recall@1, recall@5 and MRR. Answers (:func:`evaluate_answerer`): the model's
answer to each held-out question is compared with the reference by exact match and ANLS (the
DocVQA metric).

The metric functions are pure; :class:`Comparison` prints the before/after table and writes
it as JSON.

>>> ranking_metrics([["b", "a", "c"]], [{"a"}])["recall@1"]
0.0
>>> round(ranking_metrics([["b", "a", "c"]], [{"a"}])["mrr"], 3)
0.5
"""

from __future__ import annotations

import json
import math
import os
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from llama_index_vlm.encoder import ColPaliEncoder
    from llama_index_vlm.finetune.pairs import PageImages, TrainingPair

#: The retrieval metrics, in the order tables show them.
RETRIEVAL_METRICS: tuple[str, ...] = ("ndcg@5", "recall@1", "recall@5", "mrr")
#: The answer metrics, in the order tables show them.
ANSWER_METRICS: tuple[str, ...] = ("exact_match", "anls")

# ANLS counts a prediction as wrong beyond this normalised edit distance (DocVQA's threshold).
_ANLS_THRESHOLD = 0.5
_PUNCTUATION = string.punctuation + "\u2019\u201c\u201d"


# ---------------------------------------------------------------------------- pure metrics


def ranking_metrics(
    rankings: Sequence[Sequence[str]], relevant: Sequence[set[str]]
) -> dict[str, float]:
    """nDCG@5, recall@1, recall@5 and MRR, averaged over queries (binary relevance).

    Args:
        rankings: per query, the page keys from best to worst (the whole corpus, or its top).
        relevant: per query, the keys of its relevant pages.

    >>> metrics = ranking_metrics([["a", "b"], ["a", "b"]], [{"a"}, {"b"}])
    >>> metrics["recall@1"], metrics["recall@5"], metrics["mrr"]
    (0.5, 1.0, 0.75)
    """
    if len(rankings) != len(relevant):
        raise ValueError(f"{len(rankings)} rankings but {len(relevant)} sets of relevant pages")
    if not rankings:
        raise ValueError("no queries to evaluate")
    totals = dict.fromkeys(RETRIEVAL_METRICS, 0.0)
    for ranking, wanted in zip(rankings, relevant, strict=True):
        totals["ndcg@5"] += _ndcg(ranking, wanted, 5)
        totals["recall@1"] += _recall(ranking, wanted, 1)
        totals["recall@5"] += _recall(ranking, wanted, 5)
        totals["mrr"] += _reciprocal_rank(ranking, wanted)
    return {name: total / len(rankings) for name, total in totals.items()}


def normalize_answer(text: str) -> str:
    """An answer as exact match compares it: lower case, outer punctuation and spaces trimmed.

    >>> normalize_answer("  The Revenue.  ")
    'the revenue'
    """
    return " ".join(text.lower().split()).strip(_PUNCTUATION + " ")


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised reference, else 0.0.

    >>> exact_match("42 units.", ["42 Units"])
    1.0
    """
    answer = normalize_answer(prediction)
    return float(any(answer == normalize_answer(reference) for reference in references))


def anls(prediction: str, references: Sequence[str], threshold: float = _ANLS_THRESHOLD) -> float:
    """Average Normalised Levenshtein Similarity of one answer (DocVQA's metric).

    ``1 - edit_distance / max(len)`` against the closest reference, or 0 when that distance is
    ``threshold`` or more: a near miss ("42 unit") scores high, a wrong answer 0.

    >>> round(anls("42 unit", ["42 units"]), 3)
    0.875
    >>> anls("nothing", ["42 units"])
    0.0
    """
    answer = normalize_answer(prediction)
    best = 0.0
    for reference in references:
        target = normalize_answer(reference)
        longest = max(len(answer), len(target))
        distance = _levenshtein(answer, target) / longest if longest else 0.0
        best = max(best, 1.0 - distance if distance < threshold else 0.0)
    return best


def answer_metrics(
    predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Exact match and ANLS, averaged over questions.

    >>> answer_metrics(["red", "blue"], [["Red"], ["green"]])
    {'exact_match': 0.5, 'anls': 0.5}
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} answers but {len(references)} references")
    if not predictions:
        raise ValueError("no answers to evaluate")
    return {
        "exact_match": sum(map(exact_match, predictions, references)) / len(predictions),
        "anls": sum(map(anls, predictions, references)) / len(predictions),
    }


# ---------------------------------------------------------------------------- with models


class PageRanker:
    """A corpus of pages embedded once by one encoder, ranking any number of queries against it.

    Args:
        encoder: the encoder (a base model, or one with an adapter).
        images: where the pages' images come from.
        keys: the page keys (:attr:`~llama_index_vlm.finetune.pairs.TrainingPair.page_key`).
        batch_size: the encoder's batch size.
    """

    def __init__(
        self,
        encoder: ColPaliEncoder,
        images: PageImages,
        keys: Sequence[str],
        batch_size: int | None = None,
    ) -> None:
        self.encoder = encoder
        self.keys = list(dict.fromkeys(keys))
        self.batch_size = batch_size
        self.page_vectors = encoder.embed_images(
            [images.by_key(key) for key in self.keys], batch_size=batch_size, show_progress=False
        )

    def rank(self, queries: Sequence[str]) -> list[list[str]]:
        """Per query, every page key from best to worst MaxSim score."""
        from llama_index_vlm.search import maxsim_scores

        query_vectors = self.encoder.embed_queries(
            list(queries), batch_size=self.batch_size, show_progress=False
        )
        scores = maxsim_scores(query_vectors, self.page_vectors)
        # A stable sort: ties keep corpus order, so a model that scores every page the same
        # ranks the same way every run.
        order = range(len(self.keys))
        return [[self.keys[i] for i in sorted(order, key=lambda i: -row[i])] for row in scores]


def evaluate_retriever(
    encoder: ColPaliEncoder,
    pairs: Sequence[TrainingPair],
    images: PageImages,
    corpus: Sequence[str] | None = None,
    batch_size: int | None = None,
) -> dict[str, float]:
    """Rank each query of ``pairs`` against a corpus of pages and score the rankings.

    Args:
        encoder: the encoder under test (a base model, or one with an adapter).
        pairs: the held-out pairs; pairs with the same query make all their pages relevant.
        images: where the pages' images come from.
        corpus: page keys (:attr:`~llama_index_vlm.finetune.pairs.TrainingPair.page_key`) to
            rank; default: every page of ``pairs``. Pass the keys of all training and
            held-out pages for a harder test.
        batch_size: the encoder's batch size.

    Returns:
        :data:`RETRIEVAL_METRICS` as a dict, plus ``"queries"`` and ``"pages"`` (counts).
    """
    keys = corpus if corpus is not None else [pair.page_key for pair in pairs]
    return retrieval_metrics(PageRanker(encoder, images, keys, batch_size), pairs)


def retrieval_metrics(ranker: PageRanker, pairs: Sequence[TrainingPair]) -> dict[str, float]:
    """:data:`RETRIEVAL_METRICS` of ``pairs``' queries ranked by ``ranker``, plus counts.

    Pairs with the same query make all their pages relevant to it.
    """
    relevant: dict[str, set[str]] = {}
    for pair in pairs:
        relevant.setdefault(pair.query, set()).add(pair.page_key)
    queries = list(relevant)
    metrics = ranking_metrics(ranker.rank(queries), [relevant[query] for query in queries])
    return {**metrics, "queries": len(queries), "pages": len(ranker.keys)}


def evaluate_answerer(
    vlm: Any,
    questions: Sequence[str],
    images: Sequence[Any],
    references: Sequence[Sequence[str]],
) -> dict[str, float]:
    """Ask ``vlm`` each question about its image and score the answers against references.

    Args:
        vlm: a :class:`~llama_index_vlm.vlm.HuggingFaceVLM` (any LlamaIndex multimodal LLM).
        questions: the questions.
        images: one PIL image per question.
        references: per question, the accepted answers.

    Returns:
        :data:`ANSWER_METRICS` as a dict, plus ``"questions"`` (the count).
    """
    from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock

    from llama_index_vlm.images import encode_image

    predictions = []
    for question, image in zip(questions, images, strict=True):
        message = ChatMessage(
            role="user",
            blocks=[
                ImageBlock(image=encode_image(image, "PNG"), image_mimetype="image/png"),
                TextBlock(text=question),
            ],
        )
        predictions.append(str(vlm.chat([message]).message.content or ""))
    return {**answer_metrics(predictions, references), "questions": len(questions)}


# ---------------------------------------------------------------------------- reporting


@dataclass
class Comparison:
    """Metrics before and after fine-tuning, on the same held-out data.

    Attributes:
        before: the base model's metrics.
        after: the fine-tuned model's metrics.
        metrics: the metric names, in table order.
        details: anything else worth recording (sizes, settings, training loss).
    """

    before: dict[str, float]
    after: dict[str, float]
    metrics: tuple[str, ...] = RETRIEVAL_METRICS
    details: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        """A plain-text table: one row per metric, before, after and the change.

        >>> print(Comparison({"mrr": 0.25}, {"mrr": 0.75}, metrics=("mrr",)).table())
        metric     before   after  change
        mrr         0.250   0.750  +0.500
        """
        lines = [f"{'metric':<9}{'before':>8}{'after':>8}{'change':>8}"]
        for name in self.metrics:
            before, after = self.before[name], self.after[name]
            lines.append(f"{name:<9}{before:>8.3f}{after:>8.3f}{after - before:>+8.3f}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The comparison as a JSON-able dict."""
        return {"before": self.before, "after": self.after, **self.details}

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` to ``path`` (indented JSON); return the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        return path


def _ndcg(ranking: Sequence[str], relevant: set[str], k: int) -> float:
    gains = sum(1 / math.log2(rank + 2) for rank, key in enumerate(ranking[:k]) if key in relevant)
    ideal = sum(1 / math.log2(rank + 2) for rank in range(min(len(relevant), k)))
    return gains / ideal if ideal else 0.0


def _recall(ranking: Sequence[str], relevant: set[str], k: int) -> float:
    return len(relevant.intersection(ranking[:k])) / len(relevant) if relevant else 0.0


def _reciprocal_rank(ranking: Sequence[str], relevant: set[str]) -> float:
    for rank, key in enumerate(ranking, start=1):
        if key in relevant:
            return 1 / rank
    return 0.0


def _levenshtein(first: str, second: str) -> int:
    previous = list(range(len(second) + 1))
    for i, left in enumerate(first, start=1):
        current = [i]
        for j, right in enumerate(second, start=1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (left != right))
            )
        previous = current
    return previous[-1]
