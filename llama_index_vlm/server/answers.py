"""Answers from the VLM, token by token, to a client that may go away mid-answer.

The query engine's streaming response yields text from ``model.generate`` running in a worker
thread (:func:`llama_index_vlm.vlm.generation.stream`). Each piece is fetched in a threadpool
thread, and before each one the client is checked: when it has gone, or the request is
cancelled, the token generator is closed, which stops ``generate`` at its next token and frees
the model for the next asker.

Streamed answers are server-sent events (``text/event-stream``)::

    event: queued   data: {"waiting": 2}                  (only when it had to wait)
    event: token    data: {"text": "The revenue"}         (one per piece of text)
    event: pages    data: {"pages": [{"page_id": ...}]}   (the pages the model was given)
    event: done     data: {"answer": "The revenue was ..."}
    event: error    data: {"error": "..."}                (instead of pages and done)
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from llama_index_vlm.server.gates import GenerationQueue, Ticket
from llama_index_vlm.server.state import page_hit

logger = logging.getLogger(__name__)

_DONE = object()


def sse_event(event: str, payload: dict[str, Any]) -> str:
    """One server-sent event with a JSON payload."""
    return f"event: {event}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def answer_pieces(response: Any, request: Request) -> AsyncIterator[str]:
    """The text of a LlamaIndex streaming response, piece by piece, while the client listens."""
    tokens = getattr(response, "response_gen", None)
    if tokens is None:  # a plain Response, e.g. LlamaIndex's "Empty Response"
        text = str(response)
        if text:
            yield text
        return
    try:
        while not await request.is_disconnected():
            piece = await run_in_threadpool(next, tokens, _DONE)
            if piece is _DONE:
                return
            if piece:
                yield piece
    finally:
        tokens.close()  # stops model.generate at its next token


async def answer_events(
    response: Any, ticket: Ticket, queue: GenerationQueue, request: Request
) -> AsyncIterator[str]:
    """The server-sent events of one streamed answer; holds a generation slot meanwhile."""
    try:
        if queue.active >= queue.slots:
            yield sse_event("queued", {"waiting": queue.waiting})
        await ticket.acquire()
        pieces = []
        async with aclosing(answer_pieces(response, request)) as stream:
            async for piece in stream:
                pieces.append(piece)
                yield sse_event("token", {"text": piece})
        pages = [page_hit(hit).model_dump() for hit in response.source_nodes]
        yield sse_event("pages", {"pages": pages})
        yield sse_event("done", {"answer": "".join(pieces)})
    except Exception as error:  # noqa: BLE001 - the status line is sent; report in the stream
        logger.exception("a streamed answer failed")
        yield sse_event("error", {"error": f"{type(error).__name__}: {error}"})
    finally:
        ticket.release()


async def whole_answer(response: Any, ticket: Ticket, request: Request) -> str:
    """The whole answer text, generated in a slot; stops early if the client goes away."""
    try:
        await ticket.acquire()
        async with aclosing(answer_pieces(response, request)) as stream:
            return "".join([piece async for piece in stream])
    finally:
        ticket.release()
