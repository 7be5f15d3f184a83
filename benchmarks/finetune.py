"""Fine-tuning learns: before/after metrics of LoRA fine-tuning on tiny checkpoints, on a CPU.

The same synthetic tasks as tests/finetune, with more pages and steps:

- retriever: pages each showing one word, queries naming it ("revenue", "the revenue page").
  Metrics on the training queries (does it fit the task?) and on held-out phrasings of the
  same pages ("show the revenue": does it generalise beyond the exact queries?), ColPali and
  ColQwen2, both losses.
- answerer: plain coloured pages and "What colour is the page?", PaliGemma, LLaVA and BLIP-2.

Tiny checkpoints are random one-layer models seeing 32-pixel images: the numbers show that the
training loop, the losses and the label masking work and move the metrics, not what a real
model gains on real documents.

    python benchmarks/finetune.py                  # all rows
    python benchmarks/finetune.py --steps 300      # longer retriever runs
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

from llama_index_vlm.finetune.answerer import finetune_answerer  # noqa: E402
from llama_index_vlm.finetune.evaluation import PageRanker, retrieval_metrics  # noqa: E402
from llama_index_vlm.finetune.pairs import PageImages  # noqa: E402
from llama_index_vlm.finetune.retriever import finetune_retriever  # noqa: E402
from llama_index_vlm.finetune.training import TrainingSettings  # noqa: E402
from llama_index_vlm.testing import make_tiny_checkpoint  # noqa: E402
from llama_index_vlm.testing.finetune_tasks import (  # noqa: E402
    colour_answer_examples,
    word_page_pairs,
)

TRAIN_TEMPLATES = ("{word}", "the {word} page")
HELD_OUT_TEMPLATE = ("show the {word}",)


def settings(steps: int, batch_size: int, learning_rate: float) -> TrainingSettings:
    return TrainingSettings(
        max_steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        warmup=0,
        lora_dropout=0.0,
        save_steps=10_000,
        logging_steps=max(1, steps // 10),
        show_progress=False,
    )


def retriever_row(kind: str, loss: str, root: Path, pages: int, steps: int) -> str:
    folder = root / f"{kind}-{loss}"
    train = word_page_pairs(folder / "pages", n_pages=pages, templates=TRAIN_TEMPLATES)
    held_out = word_page_pairs(folder / "pages", n_pages=pages, templates=HELD_OUT_TEMPLATE)
    started = time.perf_counter()
    result = finetune_retriever(
        train,
        folder / "adapter",
        base=make_tiny_checkpoint(kind, root / "checkpoints" / kind),
        eval_pairs=held_out,
        settings=settings(steps, batch_size=8, learning_rate=5e-3),
        loss=loss,
        device="cpu",
    )
    seconds = time.perf_counter() - started
    # The training-query metrics come from the saved adapter, loaded as a user loads it.
    train_before, train_after = training_query_metrics(kind, root, folder, train)
    held = result.comparison
    return (
        f"| {kind} | {loss} | {pages} | {steps} | {train_before:.3f} -> {train_after:.3f} | "
        f"{held.before['recall@1']:.3f} -> {held.after['recall@1']:.3f} | "
        f"{held.before['mrr']:.3f} -> {held.after['mrr']:.3f} | "
        f"{result.losses[0]:.2f} -> {result.losses[-1]:.2f} | {seconds:.0f} |"
    )


def training_query_metrics(kind: str, root: Path, folder: Path, pairs: list) -> tuple[float, float]:
    """recall@1 of the training queries, base model then base + the saved adapter."""
    from llama_index_vlm.encoder import ColPaliEncoder

    images = PageImages()
    keys = [pair.page_key for pair in pairs]
    recalls = []
    for adapter in (None, folder / "adapter"):
        encoder = ColPaliEncoder.from_pretrained(
            root / "checkpoints" / kind, device="cpu", adapter=adapter
        )
        recalls.append(retrieval_metrics(PageRanker(encoder, images, keys), pairs)["recall@1"])
    return recalls[0], recalls[1]


def answerer_row(kind: str, root: Path, steps: int) -> str:
    folder = root / f"answer-{kind}"
    examples = colour_answer_examples(folder / "pages")
    started = time.perf_counter()
    result = finetune_answerer(
        examples,
        folder / "adapter",
        base=make_tiny_checkpoint(kind, root / "checkpoints" / kind),
        eval_examples=examples,
        settings=settings(steps, batch_size=4, learning_rate=1e-2),
        max_new_tokens=4,
        device="cpu",
    )
    seconds = time.perf_counter() - started
    before, after = result.comparison.before, result.comparison.after
    return (
        f"| {kind} | {steps} | {before['exact_match']:.2f} -> {after['exact_match']:.2f} | "
        f"{before['anls']:.2f} -> {after['anls']:.2f} | "
        f"{result.losses[0]:.2f} -> {result.losses[-1]:.2f} | {seconds:.0f} |"
    )


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            line.split(":", 1)[1].strip()
            for line in lscpu.splitlines()
            if line.startswith("Model name")
        )
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"{model}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); load average at end: {load}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=12, help="word pages (at most 12)")
    parser.add_argument("--steps", type=int, default=200, help="retriever optimiser steps")
    parser.add_argument("--answer-steps", type=int, default=150, help="answerer steps")
    parser.add_argument(
        "--retrievers",
        default="colpali:cross_entropy,colpali:pairwise,colqwen2:cross_entropy",
        help="retriever rows, KIND:LOSS comma-separated ('' for none)",
    )
    parser.add_argument(
        "--answerers", default="paligemma,llava,blip2", help="answerer rows ('' for none)"
    )
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="finetune-bench-"))
    print("Retriever: recall@1 (and MRR) before -> after; train = the training queries,")
    print("held-out = another phrasing of the same pages ('show the {word}').\n")
    print(
        "| model | loss | pages | steps | train recall@1 | held-out recall@1 | held-out MRR "
        "| loss first -> last | s |"
    )
    print("| --- | --- | ---: | ---: | --- | --- | --- | --- | ---: |")
    for row in filter(None, args.retrievers.split(",")):
        kind, loss = row.split(":")
        print(retriever_row(kind, loss, root, args.pages, args.steps), flush=True)
    print("\nAnswerer: exact match and ANLS on the training questions, before -> after.\n")
    print("| model | steps | exact match | ANLS | loss first -> last | s |")
    print("| --- | ---: | --- | --- | --- | ---: |")
    for kind in filter(None, args.answerers.split(",")):
        print(answerer_row(kind, root, args.answer_steps), flush=True)
    print(f"\nMachine: {machine()}")


if __name__ == "__main__":
    main()
