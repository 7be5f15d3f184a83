"""Fine-tuning on your own documents: LoRA adapters for the retriever and the answering model.

- :mod:`~llama_index_vlm.finetune.pairs`: (query, page) training pairs from JSON Lines, split
  and loaded against a store; synthetic pairs drafted by an answering model.
- :mod:`~llama_index_vlm.finetune.losses`: colpali-engine's late-interaction losses.
- :mod:`~llama_index_vlm.finetune.retriever`: :func:`finetune_retriever` (ColPali, ColQwen2).
- :mod:`~llama_index_vlm.finetune.answerer`: :func:`finetune_answerer` (PaliGemma, Qwen-VL...).
- :mod:`~llama_index_vlm.finetune.evaluation`: nDCG@5, recall@k, MRR, exact match, ANLS, and
  the before/after table.
- :mod:`~llama_index_vlm.finetune.training`: the settings and LoRA set-up both share.
- :mod:`~llama_index_vlm.finetune.reindex`: :func:`reindex`, an index's pages embedded again
  by the fine-tuned retriever into a new index.

Training needs the ``finetune`` extra (peft, accelerate): ``pip install
'llama-index-vlm[finetune]'``.

Example::

    from llama_index_vlm.finetune import finetune_retriever, TrainingSettings

    result = finetune_retriever("pairs.jsonl", "./my-adapter", store=store,
                                settings=TrainingSettings(epochs=2, batch_size=8))
    print(result.comparison.table())
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainingPair": "llama_index_vlm.finetune.pairs",
    "load_pairs": "llama_index_vlm.finetune.pairs",
    "save_pairs": "llama_index_vlm.finetune.pairs",
    "split_pairs": "llama_index_vlm.finetune.pairs",
    "draft_pairs": "llama_index_vlm.finetune.pairs",
    "AnswerExample": "llama_index_vlm.finetune.answerer",
    "load_answer_examples": "llama_index_vlm.finetune.answerer",
    "finetune_answerer": "llama_index_vlm.finetune.answerer",
    "finetune_retriever": "llama_index_vlm.finetune.retriever",
    "Comparison": "llama_index_vlm.finetune.evaluation",
    "evaluate_retriever": "llama_index_vlm.finetune.evaluation",
    "evaluate_answerer": "llama_index_vlm.finetune.evaluation",
    "reindex": "llama_index_vlm.finetune.reindex",
    "FinetuneResult": "llama_index_vlm.finetune.training",
    "TrainingSettings": "llama_index_vlm.finetune.training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llama_index_vlm.finetune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
