"""What the retriever's and the answerer's fine-tuning share: settings, LoRA, the Trainer's
arguments, and the record written next to an adapter.

Training runs on transformers' ``Trainer``: checkpoints every ``save_steps`` in
``<out>/checkpoints``, ``resume_from_checkpoint``, gradient accumulation, bfloat16 mixed
precision on a GPU that has it, and a tqdm progress bar. Only LoRA adapters (peft) are trained;
the base model stays frozen, and the result is the adapter alone (a few megabytes for a real
model), loaded back with ``adapter=`` by the encoder and the VLM.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from llama_index_vlm.errors import UsageError

#: The file written next to an adapter: what it was trained from and how well it did.
ADAPTER_RECORD = "llama_index_vlm_adapter.json"
#: Where checkpoints go, inside the output directory.
CHECKPOINTS_DIR = "checkpoints"
#: The before/after metrics, written next to the adapter.
METRICS_FILE = "metrics.json"


@dataclass
class FinetuneResult:
    """What a fine-tuning run produced.

    Attributes:
        adapter_dir: the saved LoRA adapter (load it with ``adapter=adapter_dir``).
        comparison: the held-out metrics before and after (a
            :class:`~llama_index_vlm.finetune.evaluation.Comparison`).
        losses: the training loss at each logged step, in order.
    """

    adapter_dir: Path
    comparison: Any
    losses: list[float]


@dataclass
class TrainingSettings:
    """How to train: the optimiser, the LoRA adapter, checkpoints and progress.

    The defaults follow the ColPali paper's recipe (LoRA rank 32, alpha 32, dropout 0.1,
    learning rate 5e-5, 2.5% linear warmup then linear decay).

    Attributes:
        epochs: passes over the training data (fractions allowed).
        max_steps: optimiser steps; overrides ``epochs`` when set.
        batch_size: examples per forward pass (and, for the retriever, in-batch negatives).
        gradient_accumulation_steps: forward passes per optimiser step.
        learning_rate: peak learning rate.
        warmup: warmup steps, or a fraction (below 1) of all steps.
        lora_rank: the adapter's rank ``r``.
        lora_alpha: the adapter's scale numerator (the scale is ``alpha / r``).
        lora_dropout: dropout on the adapter's input.
        seed: seeds the adapter's initialisation and the data order.
        save_steps: steps between checkpoints.
        save_total_limit: checkpoints kept (the oldest are deleted).
        logging_steps: steps between loss logs.
        bf16: bfloat16 mixed precision: ``"auto"`` uses it on a CUDA GPU that supports it.
        show_progress: show the Trainer's progress bar.
        resume_from_checkpoint: ``True`` resumes from the last checkpoint in the output
            directory, a path from that checkpoint; ``None`` starts afresh.
    """

    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-5
    warmup: float = 0.025
    lora_rank: int = 32
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    seed: int = 0
    save_steps: int = 500
    save_total_limit: int | None = 2
    logging_steps: int = 10
    bf16: bool | Literal["auto"] = "auto"
    show_progress: bool = True
    resume_from_checkpoint: bool | str | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "gradient_accumulation_steps", "lora_rank", "save_steps"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UsageError(f"max_steps must be at least 1, not {self.max_steps}")
        if self.epochs <= 0 or self.learning_rate <= 0:
            raise UsageError("epochs and learning_rate must be positive")

    def use_bf16(self) -> bool:
        """Whether to train in bfloat16 mixed precision on this machine."""
        if self.bf16 != "auto":
            return bool(self.bf16)
        import torch

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def training_arguments(
    settings: TrainingSettings, output_dir: str | os.PathLike[str], use_cpu: bool = False
) -> Any:
    """transformers ``TrainingArguments`` for ``settings``, checkpoints under ``output_dir``.

    ``use_cpu`` keeps training on the CPU even where a GPU is available.
    """
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(Path(output_dir) / CHECKPOINTS_DIR),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps or -1,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup,
        lr_scheduler_type="linear",
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        logging_steps=settings.logging_steps,
        bf16=settings.use_bf16(),
        seed=settings.seed,
        data_seed=settings.seed,
        report_to="none",
        disable_tqdm=not settings.show_progress,
        # Batches are built by our collators from pairs, not from dataset columns.
        remove_unused_columns=False,
        dataloader_pin_memory=False,
        use_cpu=use_cpu,
    )


def linear_layer_pattern(model: Any, parts: Iterable[str], extra: Iterable[str] = ()) -> str:
    """A peft ``target_modules`` regex: every ``nn.Linear`` inside the named submodules.

    The layer names are read from the model itself (``q_proj`` ... ``down_proj`` for Gemma and
    Qwen2, ``out_proj``, ``fc1`` for OPT), so one rule serves every architecture. ``extra``
    names whole modules to adapt as well (ColPali's ``embedding_proj_layer``).

    Raises:
        UsageError: none of ``parts`` holds a linear layer in this model.
    """
    import torch

    parts = list(parts)
    leaves = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear)
            and any(f"{part}." in f"{name}." for part in parts)
            and not name.endswith("lm_head")
        }
    )
    if not leaves:
        raise UsageError(f"{type(model).__name__} has no linear layers inside {parts}")
    inside = "|".join(re.escape(part) for part in parts)
    pattern = rf".*(?:{inside})\..*\.(?:{'|'.join(map(re.escape, leaves))})"
    extras = [rf"(?:.*\.)?{re.escape(name)}" for name in extra]
    return "^(?:" + "|".join([pattern, *extras]) + ")$"


def add_lora(model: Any, settings: TrainingSettings, target_modules: str) -> Any:
    """Wrap ``model`` in a peft LoRA adapter on ``target_modules``; only the adapter trains."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(settings.seed)
    config = LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=target_modules,
        init_lora_weights="gaussian",
    )
    return get_peft_model(model, config)


def train_quietly(trainer: Any, settings: TrainingSettings) -> None:
    """Run ``trainer.train`` (resuming as ``settings`` say); without a progress bar, also
    without the Trainer's printed log lines, so ``show_progress=False`` means silence.
    """
    from transformers.trainer_callback import PrinterCallback
    from transformers.trainer_utils import get_last_checkpoint

    if not settings.show_progress:
        trainer.remove_callback(PrinterCallback)
    folder = trainer.args.output_dir
    if settings.resume_from_checkpoint is True and (
        not os.path.isdir(folder) or get_last_checkpoint(folder) is None
    ):
        raise UsageError(f"there is no checkpoint in {folder} to resume from; start afresh")
    trainer.train(resume_from_checkpoint=settings.resume_from_checkpoint)


def save_results(
    trainer: Any,
    settings: TrainingSettings,
    output_dir: str | os.PathLike[str],
    comparison: Any,
    record: dict[str, Any],
) -> FinetuneResult:
    """Write ``metrics.json`` and the adapter record next to the saved adapter; the result."""
    output_dir = Path(output_dir)
    comparison.write(output_dir / METRICS_FILE)
    losses = logged_losses(trainer.state.log_history)
    full_record = {
        **record,
        "settings": asdict(settings),
        "metrics": comparison.to_json(),
        "losses": losses,
    }
    write_adapter_record(output_dir, full_record)
    return FinetuneResult(adapter_dir=output_dir, comparison=comparison, losses=losses)


def logged_losses(log_history: list[dict[str, Any]]) -> list[float]:
    """The training losses a Trainer logged, in order."""
    return [float(entry["loss"]) for entry in log_history if "loss" in entry]


def write_adapter_record(output_dir: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Write :data:`ADAPTER_RECORD` (JSON) in ``output_dir``; return its path."""
    path = Path(output_dir) / ADAPTER_RECORD
    path.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def require_peft() -> None:
    """Raise a :class:`UsageError` that says how to install peft when it is missing."""
    try:
        import peft  # noqa: F401
    except ImportError:
        raise UsageError(
            "fine-tuning needs peft and accelerate: pip install 'llama-index-vlm[finetune]'"
        ) from None
