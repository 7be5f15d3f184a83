"""Chat engines over page images: every LlamaIndex chat mode sends the pages, or says why not.

LlamaIndex's text chat engines (``ContextChatEngine``, ``CondensePlusContextChatEngine``) put
the retrieved nodes' *text* into the prompt, so over page images they send none of the images.
LlamaIndex core has multimodal counterparts that send each retrieved ``ImageNode`` as an image:
``MultiModalContextChatEngine`` and ``MultiModalCondensePlusContextChatEngine``. The chat modes
of :meth:`VisualDocumentIndex.as_chat_engine` map to them:

==========================  =====================================================================
``chat_mode``               engine
==========================  =====================================================================
``"condense_question"``     ``CondenseQuestionChatEngine`` over ``index.as_query_engine(...)``
``"context"``               ``MultiModalContextChatEngine``
``"condense_plus_context"`` :class:`PageCondensePlusContextChatEngine` (LlamaIndex's multimodal
``"best"`` (the default)    engine, plus ``condense_llm`` for models that need an image)
``"simple"``                refused: it chats without the index
``"react"``, ``"openai"``   refused: LlamaIndex removed them; use an agent with a query tool
==========================  =====================================================================

Built by hand over any of our retrievers, the same engines work::

    from llama_index.core.chat_engine import MultiModalContextChatEngine

    chat = MultiModalContextChatEngine.from_defaults(retriever=index.as_retriever(),
                                                     multi_modal_llm=vlm)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from llama_index.core.chat_engine import CondenseQuestionChatEngine
from llama_index.core.chat_engine.multi_modal_condense_plus_context import (
    MultiModalCondensePlusContextChatEngine,
)
from llama_index.core.chat_engine.multi_modal_context import MultiModalContextChatEngine
from llama_index.core.chat_engine.types import BaseChatEngine, ChatMode
from llama_index.core.llms import LLM

from llama_index_vlm.errors import InvalidRequestError
from llama_index_vlm.retriever import RETRIEVER_SETTINGS

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from llama_index_vlm.index import VisualDocumentIndex


class PageCondensePlusContextChatEngine(MultiModalCondensePlusContextChatEngine):
    """LlamaIndex's ``MultiModalCondensePlusContextChatEngine``, condensing with ``condense_llm``.

    Each follow-up is first rewritten into a standalone question from the chat history (a
    text-only call), then the pages retrieved for it are sent as images with the question.
    PaliGemma and BLIP-2 answer only questions about an image; give them a text LLM (or a
    LLaVA-family :class:`~llama_index_vlm.vlm.HuggingFaceVLM`) as ``condense_llm``.

    Example::

        chat = PageCondensePlusContextChatEngine.from_defaults(
            retriever=index.as_retriever(), multi_modal_llm=paligemma, condense_llm=llava)
    """

    _condense_llm: LLM | None = None

    @classmethod
    def from_defaults(cls, *args: Any, condense_llm: LLM | None = None, **kwargs: Any):
        """LlamaIndex's ``from_defaults``, plus ``condense_llm`` (default: the answering LLM)."""
        engine = super().from_defaults(*args, **kwargs)
        engine._condense_llm = condense_llm
        return engine

    def _condense_question(self, chat_history: list, latest_message: str) -> str:
        with self._condensing():
            return super()._condense_question(chat_history, latest_message)

    async def _acondense_question(self, chat_history: list, latest_message: str) -> str:
        with self._condensing():
            return await super()._acondense_question(chat_history, latest_message)

    @contextmanager
    def _condensing(self) -> Iterator[None]:
        """Swap in ``condense_llm`` while LlamaIndex's own condensing code runs."""
        answering = self._multi_modal_llm
        self._multi_modal_llm = self._condense_llm or answering
        try:
            yield
        finally:
            self._multi_modal_llm = answering


#: The engine class of each supported chat mode.
_ENGINES: dict[str, type[BaseChatEngine]] = {
    ChatMode.CONDENSE_QUESTION.value: CondenseQuestionChatEngine,
    ChatMode.CONTEXT.value: MultiModalContextChatEngine,
    ChatMode.CONDENSE_PLUS_CONTEXT.value: PageCondensePlusContextChatEngine,
    ChatMode.BEST.value: PageCondensePlusContextChatEngine,
}


def page_chat_engine(
    index: VisualDocumentIndex, chat_mode: str | ChatMode, llm: LLM, arguments: dict[str, Any]
) -> BaseChatEngine:
    """The chat engine of ``chat_mode`` over ``index``; see the module's table.

    Raises:
        InvalidRequestError: a mode that would chat without the page images.
        TypeError: an argument the mode's engine does not take.
    """
    mode = str(getattr(chat_mode, "value", chat_mode))
    if mode not in _ENGINES:
        raise InvalidRequestError(_refusal(mode))
    engine_class = _ENGINES[mode]
    arguments = dict(arguments)
    condense_llm = arguments.pop("condense_llm", None)
    if mode == ChatMode.CONDENSE_QUESTION.value:
        engine_arguments = _take(arguments, _parameters(engine_class.from_defaults))
        query_engine = index.as_query_engine(llm=llm, **arguments)
        return engine_class.from_defaults(
            query_engine=query_engine, llm=condense_llm or llm, **engine_arguments
        )
    retriever_arguments = _take(arguments, set(RETRIEVER_SETTINGS))
    _check_known(arguments, _parameters(engine_class.from_defaults), mode)
    if condense_llm is not None:
        if engine_class is not PageCondensePlusContextChatEngine:
            raise TypeError(f"chat_mode={mode!r} does not condense; drop condense_llm")
        arguments["condense_llm"] = condense_llm
    return engine_class.from_defaults(
        retriever=index.as_retriever(**retriever_arguments), multi_modal_llm=llm, **arguments
    )


def _refusal(mode: str) -> str:
    if mode == ChatMode.SIMPLE.value:
        return (
            "chat_mode='simple' chats with the model without the index, so no page would reach "
            "it; use chat_mode='condense_plus_context' (the default) or 'context', or "
            "SimpleChatEngine.from_defaults(llm=vlm) to chat without pages"
        )
    if mode in (ChatMode.REACT.value, ChatMode.OPENAI.value):
        return (
            f"chat_mode={mode!r} was removed from LlamaIndex; use an agent "
            "(llama_index.core.agent.workflow) with QueryEngineTool.from_defaults("
            "index.as_query_engine(llm=vlm)), or chat_mode='condense_plus_context'"
        )
    return (
        f"unknown chat_mode {mode!r}; use one of {sorted(_ENGINES)} (each sends the retrieved "
        "page images to the model)"
    )


def _parameters(function: Callable[..., Any]) -> set[str]:
    """The named parameters of ``function`` (those its ``**kwargs`` would swallow excluded)."""
    return {
        name
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
    }


def _take(arguments: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """Remove and return the ``arguments`` whose names are in ``names``."""
    return {name: arguments.pop(name) for name in list(arguments) if name in names}


def _check_known(arguments: dict[str, Any], known: set[str], mode: str) -> None:
    # LlamaIndex's from_defaults swallow unknown keywords; a typo must not pass silently.
    unknown = set(arguments) - known - {"condense_llm"}
    if unknown:
        raise TypeError(
            f"chat_mode={mode!r} takes retriever settings and {sorted(known - {'retriever'})}, "
            f"not {sorted(unknown)}"
        )
