"""LoRA fine-tuning of the answering model (any family :class:`~llama_index_vlm.vlm.HuggingFaceVLM`
loads: PaliGemma, Qwen-VL, SmolVLM, LLaVA, BLIP-2...) on (page image, question, answer) triples.

A QA file is JSON Lines, one example per line, the page named as in a pairs file::

    {"image": "scans/invoice-7.png", "question": "Total due?", "answer": "$1,250.00"}
    {"page_id": "3f2a...-p4", "question": "Which region grew most?", "answers": ["EMEA", "Europe"]}

``answer`` (or the first of ``answers``) is what the model is trained to say; every one of
``answers`` counts as right in the evaluation (exact match and ANLS).

Each example is prompted exactly as :class:`~llama_index_vlm.vlm.HuggingFaceVLM` prompts that
family at question time (PaliGemma's ``answer en ...`` task prompt, the processor's chat template,
BLIP-2's ``Question: ... Answer:``), followed by the answer and the end-of-sequence token. The
loss covers only the answer's tokens: prompt, image and padding tokens are masked with -100.
Following PaliGemma's fine-tuning recipe, the vision tower is frozen by default: the adapter
covers the language model's linear layers only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index_vlm.errors import TrainingDataError
from llama_index_vlm.finetune.evaluation import ANSWER_METRICS, Comparison, evaluate_answerer
from llama_index_vlm.finetune.pairs import PageImages, page_key, parse_page, training_split
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
    from llama_index_vlm.store import LanceDBPageStore

#: Names of the language models of the supported families (SmolVLM's and Idefics3's is
#: ``text_model``), which the adapter covers.
LANGUAGE_MODELS = ("language_model", "text_model")
#: Names of the vision towers of the supported families, adapted with ``train_vision_tower``.
VISION_TOWERS = ("vision_tower", "vision_model", "visual")

_IGNORED = -100  # the label value transformers' losses skip


@dataclass(frozen=True)
class AnswerExample:
    """A question about a page, with the answer to train on and the answers to accept.

    Attributes:
        question: the question.
        answers: accepted answers; the first is the training target.
        page_id: the stored page, when the page is in a store.
        image: the path of an image file, when it is not.
    """

    question: str
    answers: tuple[str, ...]
    page_id: str | None = None
    image: str | None = None

    @property
    def answer(self) -> str:
        """The answer the model is trained to give."""
        return self.answers[0]

    @property
    def page_key(self) -> str:
        """The page's key (see :func:`~llama_index_vlm.finetune.pairs.page_key`)."""
        return page_key(self.page_id, self.image)


def load_answer_examples(path: str | os.PathLike[str]) -> list[AnswerExample]:
    """Read a JSON Lines QA file (see the module's docstring); blank lines are skipped.

    Raises:
        TrainingDataError: a line that is not JSON or not an example (its number is given),
            or a file without examples.
    """
    path = Path(path)
    examples = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                examples.append(_parse_example(line, path.parent, f"{path}:{number}"))
    if not examples:
        raise TrainingDataError(f"{path} holds no examples; write one JSON object per line")
    return examples


def finetune_answerer(
    examples: Sequence[AnswerExample] | str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    base: str | os.PathLike[str] = "google/paligemma-3b-mix-448",
    store: LanceDBPageStore | None = None,
    *,
    eval_examples: Sequence[AnswerExample] | None = None,
    eval_fraction: float = 0.2,
    settings: TrainingSettings | None = None,
    train_vision_tower: bool = False,
    max_new_tokens: int = 32,
    device: str = "auto",
) -> FinetuneResult:
    """Train a LoRA adapter for an answering model and report before/after metrics.

    Args:
        examples: the examples, or a JSON Lines file of them.
        output_dir: where the adapter, ``metrics.json``, the adapter record and the
            ``checkpoints/`` folder are written.
        base: the checkpoint to adapt (any family :class:`HuggingFaceVLM` loads).
        store: the page store the examples' ``page_id`` s refer to.
        eval_examples: the held-out examples; default: ``eval_fraction`` of ``examples``.
        eval_fraction: the share held out when ``eval_examples`` is not given.
        settings: optimiser, LoRA and checkpoint settings.
        train_vision_tower: adapt the vision tower too (off, as in PaliGemma's recipe).
        max_new_tokens: the longest answer generated during evaluation.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...

    Returns:
        The adapter's directory, the before/after :class:`Comparison` (exact match, ANLS) and
        the logged training losses.
    """
    from llama_index_vlm.vlm import HuggingFaceVLM

    require_peft()
    settings = settings or TrainingSettings()
    if isinstance(examples, (str, os.PathLike)):
        examples = load_answer_examples(examples)
    train, held_out, images = training_split(
        examples,
        eval_examples,
        eval_fraction,
        settings.seed,
        store,
        lambda example: [example.page_key],
    )
    vlm = HuggingFaceVLM.from_pretrained(base, device=device, max_new_tokens=max_new_tokens)
    before = _evaluate(vlm, held_out, images)
    parts = [*LANGUAGE_MODELS, *(VISION_TOWERS if train_vision_tower else ())]
    model = add_lora(vlm.model, settings, linear_layer_pattern(vlm.model, parts))
    trainer = _trainer_class()(
        model=model,
        args=training_arguments(settings, output_dir, use_cpu=device == "cpu"),
        train_dataset=_ExampleDataset(train, images),
        data_collator=AnswerCollator(vlm),
    )
    train_quietly(trainer, settings)
    model.save_pretrained(output_dir)
    # LoRA layers were injected into vlm.model itself: the same VLM now answers with them.
    model.eval()
    after = _evaluate(vlm, held_out, images)
    comparison = Comparison(
        before=before,
        after=after,
        metrics=ANSWER_METRICS,
        details={"train_examples": len(train), "eval_examples": len(held_out)},
    )
    record = {
        "kind": "answerer",
        "base": vlm.name_or_path,
        "family": vlm.family,
        "train_vision_tower": train_vision_tower,
    }
    return save_results(trainer, settings, output_dir, comparison, record)


class AnswerCollator:
    """A batch of (image, question, answer) as model inputs with answer-only ``labels``.

    Prompts come from the VLM's own family (what it will be asked at question time);
    PaliGemma's processor builds its labels itself from a ``suffix`` (and the ``token_type_ids``
    of its prefix-LM attention), the other families' labels are the prompt-plus-answer tokens
    with the prompt's masked.
    """

    def __init__(self, vlm: Any) -> None:
        from llama_index_vlm.vlm.families import FAMILIES

        self.processor = vlm.processor
        self.family = FAMILIES[vlm.model.config.model_type]
        self.options = vlm._prompt_options()

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        specs = [self._prompt(item) for item in items]
        texts = [self._text(spec) for spec in specs]
        images = [spec.images[0] for spec in specs]
        answers = [item["answer"] for item in items]
        if self.family.model_type == "paligemma":
            batch = self.processor(
                text=texts, images=images, suffix=answers, padding=True, return_tensors="pt"
            )
            return dict(batch)
        if specs[0].conversation is not None:  # chat-template processors: images per sample
            images = [[image] for image in images]
        return self._masked_batch(specs[0].images_kwargs, texts, images, answers)

    def _prompt(self, item: dict[str, Any]) -> Any:
        from llama_index_vlm.vlm.messages import PageImage, Turn

        turn = Turn("user", [PageImage(item["image"], "page"), item["question"]])
        (spec,) = self.family.prompts([turn], self.processor, self.options)
        return spec

    def _text(self, spec: Any) -> str:
        """The prompt as text: a task prompt as it is, a conversation through the processor's
        chat template, ending where the answer begins."""
        if spec.text is not None:
            return spec.text
        return self.processor.apply_chat_template(
            spec.conversation, add_generation_prompt=True, tokenize=False
        )

    def _masked_batch(self, images_kwargs, texts, images, answers) -> dict[str, Any]:
        tokenizer = self.processor.tokenizer
        options: dict[str, Any] = {"return_tensors": "pt", **images_kwargs}
        if tokenizer.bos_token and texts[0].startswith(tokenizer.bos_token):
            options["add_special_tokens"] = False  # the chat template wrote it already
        prompt_lengths = [
            int(self.processor(text=[text], images=[image], **options)["input_ids"].shape[1])
            for text, image in zip(texts, images, strict=True)
        ]
        full = [
            f"{text}{'' if text[-1:].isspace() else ' '}{answer}{tokenizer.eos_token or ''}"
            for text, answer in zip(texts, answers, strict=True)
        ]
        side = tokenizer.padding_side
        tokenizer.padding_side = "right"  # so each prompt starts at position 0
        try:
            batch = dict(self.processor(text=full, images=images, padding=True, **options))
        finally:
            tokenizer.padding_side = side
        labels = batch["input_ids"].clone()
        for row, length in enumerate(prompt_lengths):
            labels[row, :length] = _IGNORED
        labels[batch["attention_mask"] == 0] = _IGNORED
        batch["labels"] = labels
        return batch


class _ExampleDataset:
    """QA examples as a map-style dataset of (image, question, answer)."""

    def __init__(self, examples: Sequence[AnswerExample], images: PageImages) -> None:
        self.examples = list(examples)
        self.images = images

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.examples[index]
        return {
            "image": self.images.by_key(example.page_key),
            "question": example.question,
            "answer": example.answer,
        }


def _trainer_class() -> type:
    from transformers import Trainer

    return Trainer


def _evaluate(vlm: Any, examples: Sequence[AnswerExample], images: PageImages) -> dict[str, float]:
    return evaluate_answerer(
        vlm,
        [example.question for example in examples],
        [images.by_key(example.page_key) for example in examples],
        [example.answers for example in examples],
    )


def _parse_example(line: str, base_dir: Path, where: str) -> AnswerExample:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise TrainingDataError(f"{where}: not JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise TrainingDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise TrainingDataError(f'{where}: "question" must be a non-empty string')
    answers = record.get("answers", [record["answer"]] if "answer" in record else [])
    if (
        not isinstance(answers, list)
        or not answers
        or not all(isinstance(answer, str) and answer.strip() for answer in answers)
    ):
        raise TrainingDataError(f'{where}: give "answer" (a string) or "answers" (strings)')
    page_id, image = parse_page(record, base_dir, where)
    return AnswerExample(
        question=question.strip(),
        answers=tuple(answer.strip() for answer in answers),
        page_id=page_id,
        image=image,
    )
