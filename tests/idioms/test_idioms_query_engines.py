"""``index.as_query_engine(**kwargs)`` honours every ``RetrieverQueryEngine.from_args`` argument
with the page images, or raises saying what to do instead.
"""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.base.response.schema import PydanticResponse
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.prompts import PromptTemplate
from pydantic import BaseModel

from llama_index_vlm.errors import InvalidRequestError

QA = PromptTemplate("PAGES-BELOW\n{context_str}\nMARKER-QA {query_str}\nAnswer:")
REFINE = PromptTemplate("{context_msg}\nMARKER-REFINE {query_str} was {existing_answer}\nNew:")
SUMMARY = PromptTemplate("{context_str}\nMARKER-SUMMARY {query_str}\nAnswer:")


class Revenue(BaseModel):
    year: int
    amount: float


def test_text_qa_template_reaches_the_model_with_the_page_images(
    idiom_index, llava, seen, prompt_of, images_in
):
    calls = seen(llava)
    idiom_index.as_query_engine(llm=llava, similarity_top_k=2, text_qa_template=QA).query("rev?")
    (call,) = calls
    prompt = prompt_of(call)
    assert "MARKER-QA rev?" in prompt and "PAGES-BELOW" in prompt
    assert images_in(call) == 2


def test_refine_template_is_used_for_the_pages_after_the_first(
    idiom_index, llava, seen, prompt_of, images_in
):
    calls = seen(llava)
    engine = idiom_index.as_query_engine(
        llm=llava, similarity_top_k=2, response_mode="refine", refine_template=REFINE
    )
    engine.query("rev?")
    assert len(calls) == 2 and [images_in(call) for call in calls] == [1, 1]
    assert "MARKER-REFINE rev? was" in prompt_of(calls[1])
    assert "MARKER-REFINE" not in prompt_of(calls[0])


def test_summary_template_is_used_by_tree_summarize(idiom_index, llava, seen, prompt_of, images_in):
    calls = seen(llava)
    engine = idiom_index.as_query_engine(
        llm=llava, similarity_top_k=2, response_mode="tree_summarize", summary_template=SUMMARY
    )
    engine.query("rev?")
    assert "MARKER-SUMMARY rev?" in prompt_of(calls[0]) and images_in(calls[0]) == 2


def test_output_cls_gives_an_instance_of_the_class(idiom_index, llava):
    engine = idiom_index.as_query_engine(llm=llava, similarity_top_k=2, output_cls=Revenue)
    response = engine.query("What was the revenue?")
    assert isinstance(response, PydanticResponse) and isinstance(response.response, Revenue)
    assert len(response.source_nodes) == 2


class _FirstPageOnly(BaseNodePostprocessor):
    def _postprocess_nodes(self, nodes, query_bundle=None):
        return nodes[:1]


def test_node_postprocessors_decide_the_pages_the_model_sees(idiom_index, llava, seen, images_in):
    calls = seen(llava)
    engine = idiom_index.as_query_engine(
        llm=llava, similarity_top_k=3, node_postprocessors=[_FirstPageOnly()]
    )
    response = engine.query("rev?")
    assert len(response.source_nodes) == 1 and images_in(calls[0]) == 1


def test_use_async_answers_aquery_from_the_page_images(idiom_index, llava, seen, images_in):
    calls = seen(llava)
    engine = idiom_index.as_query_engine(
        llm=llava, similarity_top_k=2, use_async=True, response_mode="tree_summarize"
    )
    response = asyncio.run(engine.aquery("rev?"))
    assert isinstance(response.response, str) and images_in(calls[0]) == 2


def test_verbose_is_accepted(idiom_index, llava):
    engine = idiom_index.as_query_engine(llm=llava, similarity_top_k=1, verbose=True)
    assert isinstance(engine.query("rev?").response, str)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"response_mode": "generation"}, "without the retrieved pages"),
        ({"multimodal": False}, "text layer"),
        ({"streaming": True, "output_cls": Revenue}, "cannot be streamed"),
    ],
)
def test_arguments_that_would_drop_the_pages_raise(idiom_index, llava, arguments, message):
    with pytest.raises(InvalidRequestError, match=message):
        idiom_index.as_query_engine(llm=llava, **arguments)


def test_a_text_only_response_synthesizer_is_refused(idiom_index, llava):
    from llama_index.core.response_synthesizers import get_response_synthesizer

    synthesizer = get_response_synthesizer(llm=llava)
    with pytest.raises(InvalidRequestError, match="multimodal=True"):
        idiom_index.as_query_engine(llm=llava, response_synthesizer=synthesizer)


def test_an_unknown_argument_raises_instead_of_being_ignored(idiom_index, llava):
    with pytest.raises(TypeError, match="text_qa_tempalte"):
        idiom_index.as_query_engine(llm=llava, text_qa_tempalte=QA)
