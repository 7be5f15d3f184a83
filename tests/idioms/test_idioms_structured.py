"""Structured answers are valid instances of the output class even from a tiny random model:
generation is constrained to the class's JSON schema.
"""

from __future__ import annotations

import json
from typing import Literal

import pytest
from chats import question
from llama_index.core.prompts import PromptTemplate
from pydantic import BaseModel, Field

from llama_index_vlm.vlm.structured import SCHEMA_INSTRUCTION


class Invoice(BaseModel):
    number: str
    total: float
    paid: bool
    lines: list[int]
    kind: Literal["invoice", "credit note"]
    note: str | None = None


def test_structured_predict_returns_an_instance(llava):
    answer = llava.structured_predict(Invoice, PromptTemplate("Read the invoice {name}"), name="x")
    assert isinstance(answer, Invoice)


def test_as_structured_llm_answers_json_of_the_class_about_the_pages(llava, seen, images_in):
    calls = seen(llava)
    response = llava.as_structured_llm(Invoice).chat(question(2, "Read the invoice"))
    assert isinstance(response.raw, Invoice)
    assert Invoice.model_validate(json.loads(response.message.content)) == response.raw
    assert images_in(calls[0]) == 2


def test_the_schema_is_stated_to_the_model(llava, seen, prompt_of):
    calls = seen(llava)
    llava.structured_predict(Invoice, PromptTemplate("Read it"))
    assert '"credit note"' in prompt_of(calls[0])
    assert SCHEMA_INSTRUCTION.split("{")[0].strip() in prompt_of(calls[0])


def test_a_budget_too_small_for_the_document_still_gives_a_valid_instance(llava):
    answer = llava.structured_predict(
        Invoice, PromptTemplate("Read it"), llm_kwargs={"max_new_tokens": 1}
    )
    assert isinstance(answer, Invoice)


def test_sampling_still_gives_valid_instances(llava):
    for seed in range(3):
        answer = llava.structured_predict(
            Invoice,
            PromptTemplate("Read invoice {seed}"),
            llm_kwargs={"do_sample": True, "temperature": 2.0, "max_new_tokens": 48},
            seed=str(seed),
        )
        assert isinstance(answer, Invoice)


class Bounded(BaseModel):
    code: str = Field(pattern=r"^[A-Z]{2}-\d{4}$")
    count: int = Field(ge=10, le=20)


def test_schema_constraints_are_enforced(llava):
    answer = llava.structured_predict(Bounded, PromptTemplate("Which part?"))
    assert 10 <= answer.count <= 20 and len(answer.code) == 7


@pytest.mark.parametrize("kind", ["paligemma", "blip2"])
def test_single_image_families_answer_one_document_about_several_pages(vlms, seen, kind):
    vlm = vlms(kind)
    calls = seen(vlm)
    response = vlm.as_structured_llm(Invoice).chat(question(3, "Read the invoice"))
    assert isinstance(response.raw, Invoice)
    assert len(calls) == 1  # the pages tiled into one image, not one answer per page
