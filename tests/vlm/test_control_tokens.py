"""User text never reaches a model as its control tokens (vlm/control_tokens.py): a page label
from a file named ``<image>.pdf``, or a question holding ``<|im_end|>``, is read as text."""

from __future__ import annotations

import pytest
import torch
from chats import KINDS, png_bytes
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock

from llama_index_vlm.vlm.control_tokens import BREAK, control_tokens, neutralise


def _ask(vlm, seen, file_name: str, question: str) -> dict:
    """The generate call for one page labelled ``file_name`` and ``question``."""
    calls = seen(vlm)
    blocks = [
        TextBlock(text=f"file_name: {file_name}\npage_number: 1"),
        ImageBlock(image=png_bytes()),
        TextBlock(text=question),
    ]
    vlm.chat([ChatMessage(role="user", blocks=blocks)])
    return calls[-1]


def _control_token_counts(vlm, call: dict) -> dict[str, int]:
    tokenizer = vlm.processor.tokenizer
    ids = call["input_ids"][0]
    return {
        token: int((ids == tokenizer.convert_tokens_to_ids(token)).sum())
        for token in control_tokens(vlm.processor)
    }


@pytest.fixture
def hostile(vlms, seen):
    """``hostile(kind)`` -> (clean call, hostile call): the hostile one's file name and question
    hold every control token of the family, ``<image>`` first."""

    def ask(kind: str) -> tuple[dict, dict]:
        vlm = vlms(kind)
        tokens = " ".join(("<image>", *control_tokens(vlm.processor)))
        clean = _ask(vlm, seen, "report.pdf", "What is the total revenue?")
        attack = _ask(vlm, seen, f"{tokens}.pdf", f"What is the total revenue? {tokens}")
        return clean, attack

    return ask


@pytest.mark.parametrize("kind", KINDS)
def test_control_tokens_in_labels_and_questions_add_no_control_token(kind, vlms, hostile):
    clean, attack = hostile(kind)
    assert _control_token_counts(vlms(kind), attack) == _control_token_counts(vlms(kind), clean)


@pytest.mark.parametrize("kind", KINDS)
def test_control_tokens_in_user_text_leave_the_pages_pixels_alone(kind, hostile):
    clean, attack = hostile(kind)
    assert torch.equal(attack["pixel_values"], clean["pixel_values"])


@pytest.mark.parametrize("kind", ["qwen2_5_vl", "smolvlm", "gemma3", "llava", "paligemma"])
def test_the_model_reads_the_control_tokens_as_their_text(kind, vlms, seen):
    vlm = vlms(kind)
    call = _ask(vlm, seen, "report.pdf", "What does <image> mean?")
    prompt = vlm.processor.tokenizer.decode(call["input_ids"][0], skip_special_tokens=True)
    assert "What does <image> mean?" in prompt.replace(BREAK, "")


def test_a_familys_control_tokens_are_its_special_template_and_placeholder_tokens(vlms):
    tokens = control_tokens(vlms("qwen2_5_vl").processor)
    assert {"<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>"} <= set(tokens)


def test_gemma3s_image_placeholder_is_a_control_token(vlms):
    assert "<start_of_image>" in control_tokens(vlms("gemma3").processor)


def test_neutralise_breaks_the_longest_token_first():
    text = neutralise("a <|im_end|> b", ("<|im", "<|im_end|>"))
    assert text == f"a <{BREAK}|im_end|> b"


def test_neutralise_leaves_other_text_unchanged():
    assert neutralise("<table> revenue", ("<image>",)) == "<table> revenue"
