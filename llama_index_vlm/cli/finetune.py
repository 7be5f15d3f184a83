"""Fine-tuning on the command line: ``finetune retriever``, ``finetune answerer``,
``finetune pairs`` (synthetic pairs drafted by an answering model) and ``reindex``.

::

    llama-index-vlm finetune pairs --store ./vlm_index --vlm llava-hf/llava-1.5-7b-hf \
        --out pairs.jsonl
    llama-index-vlm finetune retriever --pairs pairs.jsonl --store ./vlm_index --out ./my-adapter
    llama-index-vlm reindex --store ./vlm_index --to ./vlm_index_tuned --adapter ./my-adapter
    llama-index-vlm finetune answerer --data qa.jsonl --base google/paligemma-3b-mix-448 \
        --out ./qa-adapter

The parsers need the standard library only (``--help`` stays instant); the commands import
the library when they run.
"""

from __future__ import annotations

import argparse
import os

from llama_index_vlm.errors import UsageError

_DEFAULT_ANSWERER = "google/paligemma-3b-mix-448"


# ------------------------------------------------------------------ parsers


def add_finetune_parser(commands: argparse._SubParsersAction) -> None:
    """``finetune {retriever,answerer,pairs}``."""
    finetune = commands.add_parser(
        "finetune",
        help="fine-tune the retriever or the answering model on your own data (LoRA)",
        description="Train a LoRA adapter on your own pairs or questions, print the held-out "
        "metrics before and after, and save the adapter (load it with --adapter).",
    )
    kinds = finetune.add_subparsers(dest="finetune_command", metavar="WHAT", required=True)
    retriever = kinds.add_parser(
        "retriever",
        parents=[_common_options(), _training_options(learning_rate=5e-5)],
        help="the ColPali/ColQwen2 retriever, on (query, page) pairs",
        description="LoRA on the retriever with colpali-engine's in-batch late-interaction loss;"
        " nDCG@5, recall@1/@5 and MRR on held-out pairs before and after.",
    )
    retriever.add_argument("--pairs", required=True, metavar="FILE", help="pairs (JSON Lines)")
    retriever.add_argument("--eval-pairs", metavar="FILE", help="held-out pairs (JSON Lines)")
    retriever.add_argument(
        "--model", metavar="CKPT", help="the retriever to adapt (default: the index's own)"
    )
    retriever.add_argument(
        "--loss", choices=["cross_entropy", "pairwise"], default="cross_entropy",
        help="colpali-engine's ColbertLoss or ColbertPairwiseCELoss (default: cross_entropy)",
    )  # fmt: skip
    retriever.add_argument(
        "--hard-negatives",
        action="store_true",
        help="give each query the page the base model wrongly ranks highest as a negative",
    )
    answerer = kinds.add_parser(
        "answerer",
        parents=[_common_options(), _training_options(learning_rate=1e-4)],
        help="the answering model (PaliGemma, LLaVA, BLIP-2), on (page, question, answer)",
        description="LoRA on the language model of a vision-language model, the loss on the "
        "answer's tokens only; exact match and ANLS on held-out questions before and after.",
    )
    answerer.add_argument("--data", required=True, metavar="FILE", help="QA examples (JSONL)")
    answerer.add_argument("--eval-data", metavar="FILE", help="held-out examples (JSONL)")
    answerer.add_argument(
        "--base", default=_DEFAULT_ANSWERER, metavar="CKPT",
        help=f"answering checkpoint of any supported family (default: {_DEFAULT_ANSWERER})",
    )  # fmt: skip
    answerer.add_argument(
        "--train-vision-tower", action="store_true", help="adapt the vision tower too"
    )
    _add_pairs_parser(kinds)


def _add_pairs_parser(kinds: argparse._SubParsersAction) -> None:
    pairs = kinds.add_parser(
        "pairs",
        parents=[_store_and_device()],
        help="draft synthetic (query, page) pairs for the stored pages with an answering model",
        description="Ask an answering model for a question per stored page and write the pairs, "
        'marked "synthetic": true, for `finetune retriever --pairs`. Review them first.',
    )
    pairs.add_argument("--vlm", required=True, metavar="CKPT", help="the answering model")
    pairs.add_argument("--out", required=True, metavar="FILE", help="pairs file to write")
    pairs.add_argument("--limit", type=int, metavar="N", help="draft for the first N pages only")


def add_reindex_parser(commands: argparse._SubParsersAction) -> None:
    """``reindex --store OLD --to NEW [--model CKPT] [--adapter DIR]``."""
    reindex = commands.add_parser(
        "reindex",
        parents=[_store_and_device()],
        help="embed every stored page again with another model or adapter, into a new index",
        description="Read the pages back from --store (no source files needed), embed them "
        "with --model/--adapter and store them in --to. The old index is left as it is.",
    )
    reindex.add_argument("--to", required=True, metavar="DIR", help="the new index")
    reindex.add_argument("--model", metavar="CKPT", help="retriever (default: the index's own)")
    reindex.add_argument("--adapter", metavar="DIR", help="LoRA adapter from `finetune retriever`")
    reindex.add_argument("--batch-size", type=int, default=16, metavar="N", help="pages per commit")
    reindex.add_argument("--no-progress", action="store_true", help="no progress bar")


def _store_and_device() -> argparse.ArgumentParser:
    from llama_index_vlm.cli.parser import DEFAULT_STORE

    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--store", default=DEFAULT_STORE, metavar="DIR", help="the index")
    options.add_argument("--device", default="auto", help="torch device (default: auto)")
    options.add_argument("-v", "--verbose", action="store_true", help="show info logs")
    return options


def _common_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False, parents=[_store_and_device()])
    options.add_argument("--out", required=True, metavar="DIR", help="where the adapter goes")
    options.add_argument(
        "--eval-fraction", type=float, default=0.2, metavar="F",
        help="share held out for evaluation when no eval file is given (default: 0.2)",
    )  # fmt: skip
    return options


def _training_options(learning_rate: float) -> argparse.ArgumentParser:
    from llama_index_vlm.cli.parser import positive_int

    options = argparse.ArgumentParser(add_help=False)
    add = options.add_argument
    add("--epochs", type=float, default=1.0, help="passes over the data (default: 1)")
    add("--max-steps", type=positive_int, metavar="N", help="optimiser steps (overrides --epochs)")
    add("--batch-size", type=positive_int, default=4, metavar="N", help="examples per step")
    add("--grad-accum", type=positive_int, default=1, metavar="N", help="batches per step")
    add("--lr", type=float, default=learning_rate, help=f"learning rate (default: {learning_rate})")
    add("--lora-rank", type=positive_int, default=32, metavar="R", help="LoRA rank (default: 32)")
    add("--lora-alpha", type=positive_int, default=32, metavar="A", help="LoRA alpha (default: 32)")
    add("--save-steps", type=positive_int, default=500, metavar="N", help="steps per checkpoint")
    add("--seed", type=int, default=0, help="seed of the adapter and the split (default: 0)")
    add("--resume", action="store_true", help="resume from the last checkpoint in --out")
    add("--no-progress", action="store_true", help="no progress bar")
    return options


# ------------------------------------------------------------------ commands


def run_finetune(args: argparse.Namespace) -> int:
    """``finetune WHAT ...``."""
    return {"retriever": _run_retriever, "answerer": _run_answerer, "pairs": _run_pairs}[
        args.finetune_command
    ](args)


def _run_retriever(args: argparse.Namespace) -> int:
    from llama_index_vlm.cli.models import check_checkpoint, check_device, resolve_local
    from llama_index_vlm.cli.parser import DEFAULT_ENCODER
    from llama_index_vlm.finetune import finetune_retriever, load_pairs

    check_device(args.device)
    store = _existing_store(args.store)
    base = args.model or ((store.fingerprint or {}).get("model") if store else None)
    base = base or DEFAULT_ENCODER
    check_checkpoint(base, "--model")
    result = finetune_retriever(
        _readable(args.pairs, "--pairs"),
        args.out,
        base=resolve_local(base),
        store=store,
        eval_pairs=load_pairs(_readable(args.eval_pairs, "--eval-pairs"))
        if args.eval_pairs
        else None,
        eval_fraction=args.eval_fraction,
        settings=_settings(args),
        loss=args.loss,
        hard_negatives=args.hard_negatives,
        device=args.device,
    )
    _print_result(result)
    print(
        "\nnext: embed the pages with it into a new index:\n"
        f"  llama-index-vlm reindex --store {args.store} --to NEW_INDEX --adapter {args.out}"
    )
    return 0


def _run_answerer(args: argparse.Namespace) -> int:
    from llama_index_vlm.cli.models import check_checkpoint, check_device, resolve_local
    from llama_index_vlm.finetune import finetune_answerer, load_answer_examples

    check_device(args.device)
    check_checkpoint(args.base, "--base")
    eval_examples = (
        load_answer_examples(_readable(args.eval_data, "--eval-data")) if args.eval_data else None
    )
    result = finetune_answerer(
        _readable(args.data, "--data"),
        args.out,
        base=resolve_local(args.base),
        store=_existing_store(args.store),
        eval_examples=eval_examples,
        eval_fraction=args.eval_fraction,
        settings=_settings(args),
        train_vision_tower=args.train_vision_tower,
        device=args.device,
    )
    _print_result(result)
    print(f"\nnext: llama-index-vlm ask QUESTION --vlm {args.base} --vlm-adapter {args.out}")
    return 0


def _run_pairs(args: argparse.Namespace) -> int:
    from llama_index_vlm.cli.common import open_store
    from llama_index_vlm.cli.models import load_vlm, place, vlm_name
    from llama_index_vlm.finetune import draft_pairs, save_pairs

    store = open_store(args.store, must_exist=True)
    page_ids = store.page_ids()[: args.limit] if args.limit else None
    answerer = vlm_name(args.vlm)
    vlm = load_vlm(answerer, place([answerer], args.device, "auto"), 64, verbose=args.verbose)
    pairs = draft_pairs(store, vlm, page_ids=page_ids)
    save_pairs(pairs, args.out)
    print(f"wrote {len(pairs)} synthetic pairs to {args.out}; review them, then run")
    print(f"  llama-index-vlm finetune retriever --pairs {args.out} --store {args.store} --out DIR")
    return 0


def run_reindex(args: argparse.Namespace) -> int:
    """``reindex --store OLD --to NEW``: re-embed the stored pages into a new index."""
    from llama_index_vlm.cli.common import open_store, quantity
    from llama_index_vlm.cli.models import encoder_name, load_encoder, place
    from llama_index_vlm.finetune.reindex import reindex

    source = open_store(args.store, must_exist=True)
    target = open_store(args.to, must_exist=False)
    model = args.model or (source.fingerprint or {}).get("model")
    name = encoder_name(model, target, args.adapter)
    encoder = load_encoder(
        name,
        target,
        place([name], args.device, "auto"),
        model_given=True,
        verbose=args.verbose,
        adapter=args.adapter,
    )
    report = reindex(
        source, encoder, target, batch_size=args.batch_size, show_progress=not args.no_progress
    )
    print(report.summary())
    print(f"index {args.to}: {quantity(target.count(), 'page')}")
    return 0 if report.ok else 1


# ------------------------------------------------------------------ helpers


def _settings(args: argparse.Namespace):
    from llama_index_vlm.finetune import TrainingSettings

    return TrainingSettings(
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.lr,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        save_steps=args.save_steps,
        seed=args.seed,
        show_progress=not args.no_progress,
        resume_from_checkpoint=True if args.resume else None,
    )


def _existing_store(uri: str):
    """The page store at ``uri`` when there is one there (pairs may name image files only)."""
    from llama_index_vlm.cli.common import open_store

    if "://" not in uri and not os.path.isdir(uri):
        return None
    return open_store(uri, must_exist=False)


def _readable(path: str, option: str) -> str:
    if not os.path.isfile(path):
        raise UsageError(f"{option} {path}: there is no such file")
    return path


def _print_result(result) -> None:
    print(result.comparison.table())
    print(f"\nadapter: {result.adapter_dir}")
    print(f"metrics: {result.adapter_dir / 'metrics.json'}")
