"""Query engines over page images: LlamaIndex's own engines, built so the pages reach the VLM.

:func:`page_query_engine` takes every argument of ``RetrieverQueryEngine.from_args`` (and of
``CitationQueryEngine.from_args`` for citations) and honours it with a multimodal synthesizer:
custom text templates are wrapped so the pages go where their ``{context_str}`` stands
(:mod:`~llama_index_vlm.templates`), ``output_cls`` gives a structured answer (constrained to
its JSON schema by :class:`~llama_index_vlm.vlm.HuggingFaceVLM`), and what cannot work with page
images raises :class:`~llama_index_vlm.errors.InvalidRequestError` saying what to do instead.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.llms import LLM
from llama_index.core.query_engine import CitationQueryEngine, RetrieverQueryEngine
from llama_index.core.query_engine.citation_query_engine import (
    CITATION_CHAT_CONTENT_QA_TEMPLATE,
    CITATION_CHAT_CONTENT_REFINE_TEMPLATE,
    DEFAULT_CITATION_CHUNK_OVERLAP,
    DEFAULT_CITATION_CHUNK_SIZE,
)
from llama_index.core.response_synthesizers import (
    BaseSynthesizer,
    ResponseMode,
    get_response_synthesizer,
)

from llama_index_vlm.errors import InvalidRequestError
from llama_index_vlm.templates import page_template

#: The prompt arguments a query engine takes, and the context variable each one's text form
#: has (refine templates put the new pages in ``{context_msg}``).
TEMPLATE_ARGUMENTS = {
    "text_qa_template": "context_str",
    "refine_template": "context_msg",
    "summary_template": "context_str",
    "simple_template": None,
    "chat_content_qa_template": None,
    "chat_content_refine_template": None,
    "chat_summary_template": None,
    "citation_qa_template": "context_str",
    "citation_refine_template": "context_msg",
    "citation_chat_content_qa_template": None,
    "citation_chat_content_refine_template": None,
}

#: The other query-engine arguments :func:`page_query_engine` honours.
ENGINE_ARGUMENTS = (
    "response_mode",
    "output_cls",
    "node_postprocessors",
    "callback_manager",
    "response_synthesizer",
    "use_async",
    "verbose",
    "multimodal",
    "citation_chunk_size",
    "citation_chunk_overlap",
    "text_splitter",
    "metadata_mode",
)


def page_query_engine(
    retriever: BaseRetriever,
    llm: LLM,
    *,
    streaming: bool = False,
    citations: bool = False,
    **arguments: Any,
) -> RetrieverQueryEngine:
    """A LlamaIndex query engine whose answers come from the retrieved page images.

    Args:
        retriever: the page retriever.
        llm: the answering model (a :class:`~llama_index_vlm.vlm.HuggingFaceVLM`).
        streaming: stream the answer.
        citations: a ``CitationQueryEngine`` (pages as numbered sources) instead of a
            ``RetrieverQueryEngine``.
        **arguments: any of :data:`TEMPLATE_ARGUMENTS` and :data:`ENGINE_ARGUMENTS`.

    Raises:
        TypeError: an argument neither engine takes.
        InvalidRequestError: an argument asks for an answer without the page images
            (``multimodal=False``, ``response_mode="generation"``, a text-only
            ``response_synthesizer``), or streaming a structured answer.
    """
    _check_arguments(arguments, streaming)
    node_postprocessors = arguments.pop("node_postprocessors", None)
    callback_manager = arguments.pop("callback_manager", None)
    synthesizer = arguments.pop("response_synthesizer", None) or _synthesizer(
        llm, streaming, citations, callback_manager, arguments
    )
    if citations:
        return CitationQueryEngine.from_args(
            None,
            retriever=retriever,
            llm=llm,
            response_synthesizer=synthesizer,
            node_postprocessors=node_postprocessors,
            citation_chunk_size=arguments.get("citation_chunk_size", DEFAULT_CITATION_CHUNK_SIZE),
            citation_chunk_overlap=arguments.get(
                "citation_chunk_overlap", DEFAULT_CITATION_CHUNK_OVERLAP
            ),
            text_splitter=arguments.get("text_splitter"),
            multimodal=True,
            **{k: arguments[k] for k in ("metadata_mode",) if k in arguments},
        )
    return RetrieverQueryEngine(
        retriever=retriever,
        response_synthesizer=synthesizer,
        node_postprocessors=node_postprocessors,
        callback_manager=callback_manager,
    )


def _check_arguments(arguments: dict[str, Any], streaming: bool) -> None:
    unknown = set(arguments) - set(TEMPLATE_ARGUMENTS) - set(ENGINE_ARGUMENTS)
    if unknown:
        raise TypeError(
            f"as_query_engine got unknown arguments {sorted(unknown)}; it takes retriever "
            "settings and the arguments of RetrieverQueryEngine.from_args"
        )
    if arguments.get("multimodal", True) is False:
        raise InvalidRequestError(
            "multimodal=False would answer from the pages' text layer, not their images; "
            "leave multimodal out (page indexes always answer from the images)"
        )
    if str(getattr(arguments.get("response_mode"), "value", arguments.get("response_mode"))) == (
        ResponseMode.GENERATION.value
    ):
        raise InvalidRequestError(
            "response_mode='generation' answers without the retrieved pages; use 'compact' "
            "(the default), 'refine' or 'tree_summarize', or call vlm.complete(question) for "
            "an answer without pages"
        )
    if streaming and arguments.get("output_cls") is not None:
        raise InvalidRequestError(
            "a structured answer (output_cls) is one object and cannot be streamed; drop "
            "streaming=True"
        )
    synthesizer = arguments.get("response_synthesizer")
    if synthesizer is not None and not getattr(synthesizer, "_multimodal", False):
        raise InvalidRequestError(
            "this response_synthesizer was built without multimodal=True and would answer "
            "from the pages' text layer; build it with get_response_synthesizer(llm=vlm, "
            "multimodal=True, chat_prompt_helper=vlm.chat_prompt_helper()), or leave it out"
        )


def _synthesizer(
    llm: LLM,
    streaming: bool,
    citations: bool,
    callback_manager: Any,
    arguments: dict[str, Any],
) -> BaseSynthesizer:
    """The multimodal response synthesizer, every template where the pages can reach it."""
    templates = _templates(arguments, citations)
    options: dict[str, Any] = {
        "llm": llm,
        "streaming": streaming,
        "response_mode": arguments.get("response_mode", ResponseMode.COMPACT),
        "output_cls": arguments.get("output_cls"),
        "use_async": arguments.get("use_async", False),
        "verbose": arguments.get("verbose", False),
        "callback_manager": callback_manager,
        **templates,
    }
    chat_prompt_helper = getattr(llm, "chat_prompt_helper", None)
    if callable(chat_prompt_helper):
        # LlamaIndex budgets every image at 2125 tokens whatever the model; packing by
        # page count lets LLaVA see all pages in one prompt (see chat_prompt_helper).
        options["chat_prompt_helper"] = chat_prompt_helper()
    return get_response_synthesizer(multimodal=True, **options)


def _templates(arguments: dict[str, Any], citations: bool) -> dict[str, Any]:
    """The synthesizer's chat content templates: the caller's, wrapped, else the defaults."""
    given = {name: arguments.get(name) for name in TEMPLATE_ARGUMENTS}
    if citations:
        # A citation engine's QA and refine prompts are the citation ones unless given.
        given["text_qa_template"] = given["citation_qa_template"] or given["text_qa_template"]
        given["refine_template"] = given["citation_refine_template"] or given["refine_template"]
        given["chat_content_qa_template"] = (
            given["citation_chat_content_qa_template"]
            or given["chat_content_qa_template"]
            or (None if given["text_qa_template"] else CITATION_CHAT_CONTENT_QA_TEMPLATE)
        )
        given["chat_content_refine_template"] = (
            given["citation_chat_content_refine_template"]
            or given["chat_content_refine_template"]
            or (None if given["refine_template"] else CITATION_CHAT_CONTENT_REFINE_TEMPLATE)
        )
    return {
        "text_qa_template": given["text_qa_template"],
        "refine_template": given["refine_template"],
        "summary_template": given["summary_template"],
        "simple_template": given["simple_template"],
        "chat_content_qa_template": given["chat_content_qa_template"]
        or page_template(given["text_qa_template"], "context_str"),
        "chat_content_refine_template": given["chat_content_refine_template"]
        or page_template(given["refine_template"], "context_msg"),
        "chat_summary_template": given["chat_summary_template"]
        or page_template(given["summary_template"], "context_str"),
    }
