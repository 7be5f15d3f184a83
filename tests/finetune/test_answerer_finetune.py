"""Fine-tuning the answering model: answer-only labels, a frozen vision tower, and it learns."""

from __future__ import annotations

import json
import re

import pytest
import torch

from llama_index_vlm.errors import TrainingDataError
from llama_index_vlm.finetune.answerer import (
    LANGUAGE_MODELS,
    VISION_TOWERS,
    AnswerCollator,
    finetune_answerer,
    load_answer_examples,
)
from llama_index_vlm.finetune.evaluation import evaluate_answerer
from llama_index_vlm.finetune.training import TrainingSettings, linear_layer_pattern
from llama_index_vlm.testing.finetune_tasks import colour_answer_examples
from llama_index_vlm.vlm import HuggingFaceVLM


@pytest.fixture(scope="module")
def learned(tiny_checkpoint, tmp_path_factory):
    """LLaVA fine-tuned for 60 steps on the colour task, evaluated on its own questions."""
    examples = colour_answer_examples(tmp_path_factory.mktemp("colours"))
    settings = TrainingSettings(
        max_steps=60,
        batch_size=4,
        learning_rate=1e-2,
        warmup=0,
        lora_dropout=0.0,
        logging_steps=10,
        save_steps=1000,
        show_progress=False,
    )
    result = finetune_answerer(
        examples,
        tmp_path_factory.mktemp("learned") / "adapter",
        base=tiny_checkpoint("llava"),
        eval_examples=examples,
        settings=settings,
        max_new_tokens=4,
        device="cpu",
    )
    return examples, result


def test_fine_tuning_teaches_llava_the_answers(learned):
    _, result = learned
    before, after = result.comparison.before, result.comparison.after
    assert after["exact_match"] >= before["exact_match"] + 0.5, result.comparison.table()


def test_the_answer_loss_falls(learned):
    _, result = learned
    assert result.losses[-1] < result.losses[0]


def test_the_saved_adapter_answers_the_same_when_loaded(learned, tiny_checkpoint):
    from PIL import Image

    examples, result = learned
    vlm = HuggingFaceVLM.from_pretrained(
        tiny_checkpoint("llava"), adapter=result.adapter_dir, max_new_tokens=4, device="cpu"
    )
    metrics = evaluate_answerer(
        vlm,
        [example.question for example in examples],
        [Image.open(example.image) for example in examples],
        [example.answers for example in examples],
    )
    assert metrics["exact_match"] == result.comparison.after["exact_match"]


@pytest.mark.parametrize("kind", ["paligemma", "llava", "blip2", "qwen2_vl", "smolvlm", "gemma3"])
def test_only_the_answer_and_its_end_are_labelled(kind, tiny_checkpoint, colour_examples):
    from PIL import Image

    vlm = HuggingFaceVLM.from_pretrained(tiny_checkpoint(kind), device="cpu")
    items = [
        {"image": Image.open(example.image), "question": "What colour?", "answer": example.answer}
        for example in colour_examples[:2]
    ]
    batch = AnswerCollator(vlm)(items)
    tokenizer = vlm.processor.tokenizer
    for row, item in zip(batch["labels"], items, strict=True):
        labelled = row[row != -100].tolist()
        assert labelled[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(labelled[:-1]).strip() == item["answer"]


def test_the_collated_batch_runs_through_the_model_with_a_loss(tiny_checkpoint, colour_examples):
    from PIL import Image

    vlm = HuggingFaceVLM.from_pretrained(tiny_checkpoint("llava"), device="cpu")
    items = [
        {"image": Image.open(e.image), "question": "Colour?", "answer": e.answer}
        for e in colour_examples
    ]
    with torch.no_grad():
        loss = vlm.model(**AnswerCollator(vlm)(items)).loss
    assert torch.isfinite(loss) and loss > 0


def test_the_default_adapter_targets_only_the_language_model(tiny_checkpoint):
    vlm = HuggingFaceVLM.from_pretrained(tiny_checkpoint("paligemma"), device="cpu")
    pattern = linear_layer_pattern(vlm.model, ["language_model"])
    targets = [name for name, _ in vlm.model.named_modules() if re.fullmatch(pattern, name)]
    assert targets and all(".language_model." in name for name in targets)
    assert not any("lm_head" in name for name in targets)


@pytest.mark.parametrize("kind", ["smolvlm", "qwen2_vl"])
def test_the_adapter_finds_each_familys_language_model(kind, tiny_checkpoint):
    vlm = HuggingFaceVLM.from_pretrained(tiny_checkpoint(kind), device="cpu")
    pattern = linear_layer_pattern(vlm.model, LANGUAGE_MODELS)
    targets = [name for name, _ in vlm.model.named_modules() if re.fullmatch(pattern, name)]
    assert targets
    assert not any(part in name for name in targets for part in VISION_TOWERS)


def test_training_the_vision_tower_adds_its_layers(tiny_checkpoint):
    vlm = HuggingFaceVLM.from_pretrained(tiny_checkpoint("paligemma"), device="cpu")
    pattern = linear_layer_pattern(vlm.model, ["language_model", *VISION_TOWERS])
    targets = [name for name, _ in vlm.model.named_modules() if re.fullmatch(pattern, name)]
    assert any(".vision_tower." in name for name in targets)


def test_qa_files_accept_several_answers(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(
        json.dumps({"page_id": "d-p1", "question": "Region?", "answers": ["EMEA", "Europe"]}) + "\n"
    )
    (example,) = load_answer_examples(path)
    assert (example.answer, example.answers, example.page_key) == (
        "EMEA",
        ("EMEA", "Europe"),
        "d-p1",
    )


def test_a_qa_line_without_an_answer_is_refused(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"image": "a.png", "question": "Region?"}) + "\n")
    with pytest.raises(TrainingDataError, match=r"qa.jsonl:1: give \"answer\""):
        load_answer_examples(path)
