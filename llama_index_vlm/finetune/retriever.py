"""LoRA fine-tuning of a ColPali or ColQwen2 retriever on (query, page) pairs.

:func:`finetune_retriever` evaluates the base model on held-out pairs, trains a LoRA adapter
with transformers' ``Trainer`` and the in-batch late-interaction loss colpali-engine trains
ColPali with (:mod:`~llama_index_vlm.finetune.losses`), saves the adapter, and evaluates again.
The adapter covers the language model's linear layers and the projection head, as in the
ColPali paper; the vision tower stays as it is.

Example::

    from llama_index_vlm.finetune import finetune_retriever

    result = finetune_retriever("pairs.jsonl", "./my-adapter", store=store,
                                base="vidore/colpali-v1.3-hf")
    print(result.comparison.table())
    encoder = ColPaliEncoder.from_pretrained("vidore/colpali-v1.3-hf", adapter="./my-adapter")
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from llama_index_vlm.errors import TrainingDataError
from llama_index_vlm.finetune.evaluation import (
    RETRIEVAL_METRICS,
    Comparison,
    PageRanker,
    retrieval_metrics,
)
from llama_index_vlm.finetune.losses import DEFAULT_TEMPERATURE, LossName, late_interaction_loss
from llama_index_vlm.finetune.pairs import (
    PageImages,
    TrainingPair,
    load_pairs,
    training_split,
    with_page_key,
)
from llama_index_vlm.finetune.training import (
    FinetuneResult,
    TrainingSettings,
    add_lora,
    linear_layer_pattern,
    require_peft,
    save_results,
    train_quietly,
    training_arguments,
)

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from llama_index_vlm.encoder import ColPaliEncoder
    from llama_index_vlm.store import LanceDBPageStore


def finetune_retriever(
    pairs: Sequence[TrainingPair] | str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    base: str | os.PathLike[str] = "vidore/colpali-v1.3-hf",
    store: LanceDBPageStore | None = None,
    *,
    eval_pairs: Sequence[TrainingPair] | None = None,
    eval_fraction: float = 0.2,
    settings: TrainingSettings | None = None,
    loss: LossName = "cross_entropy",
    temperature: float = DEFAULT_TEMPERATURE,
    hard_negatives: bool = False,
    device: str = "auto",
) -> FinetuneResult:
    """Train a LoRA adapter for a ColPali-family retriever and report before/after metrics.

    Args:
        pairs: the pairs, or a JSON Lines file of them (see :mod:`~.pairs`).
        output_dir: where the adapter, ``metrics.json``, the adapter record and the
            ``checkpoints/`` folder are written.
        base: the retriever checkpoint to adapt (hub id or local directory).
        store: the page store the pairs' ``page_id`` s refer to.
        eval_pairs: the held-out pairs; default: ``eval_fraction`` of ``pairs``, split with
            ``settings.seed``.
        eval_fraction: the share of ``pairs`` held out when ``eval_pairs`` is not given.
        settings: optimiser, LoRA and checkpoint settings.
        loss: ``"cross_entropy"`` (colpali-engine's ``ColbertLoss``) or ``"pairwise"``
            (``ColbertPairwiseCELoss``).
        temperature: the cross-entropy's temperature.
        hard_negatives: give each training query a hard negative: the page the base model
            ranks highest among those that are not its own (pairs that name one keep theirs).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...

    Returns:
        The adapter's directory, the before/after :class:`Comparison` (on the held-out pairs
        ranked against every page of all pairs) and the logged training losses.

    Raises:
        TrainingDataError: too few pairs, pages that cannot be found, or hard negatives given
            for some pairs only (without ``hard_negatives=True``).
        UsageError: peft is not installed, or bad settings.
    """
    from llama_index_vlm.encoder import ColPaliEncoder

    require_peft()
    settings = settings or TrainingSettings()
    if isinstance(pairs, (str, os.PathLike)):
        pairs = load_pairs(pairs)
    train, held_out, images = training_split(
        pairs, eval_pairs, eval_fraction, settings.seed, store, lambda pair: pair.keys
    )
    if not hard_negatives:
        _check_negatives(train)
    corpus = [pair.page_key for pair in [*train, *held_out]]
    encoder = ColPaliEncoder.from_pretrained(base, device=device, show_progress=False)
    base_ranker = PageRanker(encoder, images, corpus, settings.batch_size)
    before = retrieval_metrics(base_ranker, held_out)
    if hard_negatives:
        train = mine_hard_negatives(train, base_ranker)
        _check_negatives(train)
    model = add_lora(
        encoder.model,
        settings,
        linear_layer_pattern(encoder.model, ["language_model"], ["embedding_proj_layer"]),
    )
    trainer = _trainer_class()(
        model=model,
        args=training_arguments(settings, output_dir, use_cpu=device == "cpu"),
        train_dataset=_PairDataset(train, images),
        data_collator=_PairCollator(encoder),
        loss=loss,
        temperature=temperature,
    )
    train_quietly(trainer, settings)
    model.save_pretrained(output_dir)
    adapted = ColPaliEncoder(model, encoder.processor, name_or_path=encoder.name_or_path)
    after = retrieval_metrics(PageRanker(adapted, images, corpus, settings.batch_size), held_out)
    comparison = Comparison(
        before=before,
        after=after,
        metrics=RETRIEVAL_METRICS,
        details={"train_pairs": len(train), "eval_pairs": len(held_out), "pages": len(set(corpus))},
    )
    record = {
        "kind": "retriever",
        "base": encoder.name_or_path,
        "model_class": type(encoder.model).__name__,
        "loss": loss,
        "temperature": temperature,
        "hard_negatives": hard_negatives,
        "synthetic_pairs": sum(pair.synthetic for pair in train),
    }
    return save_results(trainer, settings, output_dir, comparison, record)


def _trainer_class() -> type:
    """transformers' ``Trainer`` with the late-interaction loss as its ``compute_loss``."""
    from transformers import Trainer

    class _LateInteractionTrainer(Trainer):
        # compute_loss returns a per-batch mean: the Trainer divides it by the accumulation
        # steps itself (the model's forward takes **kwargs, which would make it assume not).
        loss_is_scaled_for_ga = False

        def __init__(self, *args: Any, loss: LossName, temperature: float, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.loss_name = loss
            self.temperature = temperature

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            queries = model(**inputs["query"]).embeddings
            pages = model(**inputs["page"]).embeddings
            negatives = model(**inputs["negative"]).embeddings if "negative" in inputs else None
            value = late_interaction_loss(
                queries,
                inputs["query"]["attention_mask"],
                pages,
                inputs["page"]["attention_mask"],
                negatives,
                inputs["negative"]["attention_mask"] if negatives is not None else None,
                loss=self.loss_name,
                temperature=self.temperature,
                page_groups=inputs["page_group"],
            )
            outputs = {"query_embeddings": queries, "page_embeddings": pages}
            return (value, outputs) if return_outputs else value

    return _LateInteractionTrainer


class _PairDataset:
    """Training pairs as a map-style dataset of (query, page image, hard negative image)."""

    def __init__(self, pairs: Sequence[TrainingPair], images: PageImages) -> None:
        self.pairs = list(pairs)
        self.images = images

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = self.pairs[index]
        negative = pair.negative_key
        return {
            "key": pair.page_key,
            "query": pair.query,
            "page": self.images.by_key(pair.page_key),
            "negative": None if negative is None else self.images.by_key(negative),
        }


class _PairCollator:
    """A batch of pairs as the encoder's query and page inputs (and hard negatives')."""

    def __init__(self, encoder: ColPaliEncoder) -> None:
        self.encoder = encoder

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        groups = {key: group for group, key in enumerate(dict.fromkeys(i["key"] for i in items))}
        batch = {
            "query": dict(
                self.encoder.processor.process_queries(text=[item["query"] for item in items])
            ),
            "page": dict(self.encoder.page_inputs([item["page"] for item in items])),
            # Which items share a page: the loss must not count one as the other's negative.
            "page_group": torch.tensor([groups[item["key"]] for item in items]),
        }
        if items[0]["negative"] is not None:
            batch["negative"] = dict(self.encoder.page_inputs([i["negative"] for i in items]))
        return batch


def mine_hard_negatives(pairs: list[TrainingPair], ranker: PageRanker) -> list[TrainingPair]:
    """``pairs`` with a hard negative for each pair that has none: the page ``ranker`` ranks
    highest for its query among the pages that are not the query's own.

    Pairs that name a hard negative keep it; a query whose corpus holds only its own pages
    gets none.
    """
    own: dict[str, set[str]] = {}
    for pair in pairs:
        own.setdefault(pair.query, set()).add(pair.page_key)
    queries = list(own)
    rankings = dict(zip(queries, ranker.rank(queries), strict=True))
    mined = []
    for pair in pairs:
        if pair.negative_key is None:
            negative = next(
                (key for key in rankings[pair.query] if key not in own[pair.query]), None
            )
            if negative is not None:
                pair = _with_negative(pair, negative)
        mined.append(pair)
    return mined


def _with_negative(pair: TrainingPair, key: str) -> TrainingPair:
    named = with_page_key({}, key)
    return replace(pair, negative_page_id=named.get("page_id"), negative_image=named.get("image"))


def _check_negatives(pairs: list[TrainingPair]) -> None:
    with_negative = sum(pair.negative_key is not None for pair in pairs)
    if 0 < with_negative < len(pairs):
        raise TrainingDataError(
            f"{with_negative} of {len(pairs)} training pairs have a hard negative: give one for "
            "every pair, or pass hard_negatives=True (--hard-negatives) to mine the missing ones"
        )
