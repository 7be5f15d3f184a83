"""Model calls' answers as LlamaIndex responses: one text and its usage, whole or streamed.

Several calls (one per page, for families that see one image per prompt) make one answer: a
line per call, prefixed by its page's label. A stream yields the same text piece by piece.

Usage (:func:`usage`) is where LlamaIndex reads it, ``response.raw["usage"]`` (so
``TokenCountingHandler`` counts the model's real tokens, image tokens included), and also in
``additional_kwargs``. A stream's responses share one usage dict, completed with the answer's
token count when the stream ends, so the last response LlamaIndex's callbacks report has it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    MessageRole,
)

from llama_index_vlm.vlm.context import Request

_DONE = object()


def filed(text: str, label: str | None) -> str:
    """An answer filed under its page's label: ``"report.pdf, page 3: 42"``.

    >>> filed("42", "report.pdf, page 3"), filed("42", None)
    ('report.pdf, page 3: 42', '42')
    """
    return text if label is None else f"{label}: {text}"


def usage(requests: list[Request], completion_tokens: int | None) -> dict[str, Any]:
    """What the calls cost: prompt, image and (once known) completion tokens, images, calls."""
    prompt_tokens = sum(request.prompt_tokens for request in requests)
    numbers: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "image_tokens": sum(request.image_tokens for request in requests),
        "images": sum(request.n_images for request in requests),
        "model_calls": len(requests),
    }
    if completion_tokens is not None:
        numbers["completion_tokens"] = completion_tokens
        numbers["total_tokens"] = prompt_tokens + completion_tokens
    return numbers


def complete_usage(numbers: dict[str, Any], completion_tokens: int) -> None:
    """Record a finished answer's token count in a :func:`usage` dict, in place.

    >>> numbers = {"prompt_tokens": 10}
    >>> complete_usage(numbers, 3); numbers["total_tokens"]
    13
    """
    numbers["completion_tokens"] = completion_tokens
    numbers["total_tokens"] = numbers["prompt_tokens"] + completion_tokens


def chat_response(answers: Iterable[str], numbers: dict[str, Any]) -> ChatResponse:
    """The assistant's reply: the calls' answers, one per line, with their usage."""
    return ChatResponse(
        message=ChatMessage(role=MessageRole.ASSISTANT, content="\n".join(answers)),
        raw={"usage": numbers},
        additional_kwargs=numbers,
    )


def stream_responses(pieces: Iterator[str], numbers: dict[str, Any]) -> ChatResponseGen:
    """A ``ChatResponse`` per piece of text, each holding the text so far and the piece.

    Every response holds the same ``numbers`` (usage) dict: whoever produces ``pieces``
    completes it (:func:`complete_usage`) before the last piece is consumed.
    """
    text = ""
    for delta in pieces:
        text += delta
        yield ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
            delta=delta,
            raw={"usage": numbers},
            additional_kwargs=numbers,
        )
    if not text:
        # An empty answer still ends in one response: LlamaIndex's end-of-stream events
        # need a last response to report.
        yield ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=""),
            delta="",
            raw={"usage": numbers},
            additional_kwargs=numbers,
        )


def to_completion(response: ChatResponse) -> CompletionResponse:
    """A chat response as the completion response ``complete`` returns."""
    return CompletionResponse(
        text=response.message.content or "",
        delta=response.delta,
        raw=response.raw,
        additional_kwargs=response.additional_kwargs,
    )


def in_threads(responses: Iterator[ChatResponse]) -> ChatResponseAsyncGen:
    """Iterate a blocking generator from async code, each step in a worker thread."""

    async def gen() -> ChatResponseAsyncGen:
        try:
            while True:
                response = await asyncio.to_thread(next, responses, _DONE)
                if response is _DONE:
                    return
                yield response
        finally:
            try:
                responses.close()  # stops generation when the consumer stops early
            except ValueError:
                pass  # still running in a cancelled step's thread; it ends with its tokens

    return gen()
