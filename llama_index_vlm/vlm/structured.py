"""Structured answers: generation constrained to a JSON schema, so the answer always parses.

LlamaIndex asks a model for a pydantic ``output_cls`` (``as_query_engine(output_cls=...)``,
``llm.as_structured_llm(...)``, ``llm.structured_predict(...)``) by describing the schema in the
prompt and parsing what comes back; a small model rarely answers in valid JSON, and a failed
parse becomes the answer "Empty Response". :class:`StructuredOutputMixin` answers those calls
with constrained decoding instead: at every step, `llguidance <https://github.com/guidance-ai/
llguidance>`_ (a maintained Rust library for grammar-constrained decoding, used by vLLM and
llama.cpp) masks the tokens that cannot continue a JSON document of the schema, through a
transformers ``LogitsProcessor`` (:class:`SchemaLogitsProcessor`). The answer is then valid
JSON of the schema, and when the token budget would run out before the document is complete,
the processor steers to the shortest way to close it, so it completes even from a random model.

Install it with the ``structured`` extra: ``pip install "llama-index-vlm[structured]"``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import weakref
from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any, TypeVar

import numpy as np
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.bridge.pydantic import BaseModel, ValidationError
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.llm import (
    LLMStructuredPredictEndEvent,
    LLMStructuredPredictStartEvent,
)
from llama_index.core.prompts.base import BasePromptTemplate

from llama_index_vlm.errors import InvalidRequestError, VLMError

Model = TypeVar("Model", bound=BaseModel)

dispatcher = get_dispatcher(__name__)

# Token preference when closing a document quickly: a quote ends a string (or opens one that
# the next quote ends), brackets end containers, then separators, a one-digit number, any one
# byte, and longer tokens last.
_CLOSING_RANKS = {b'"': 0, b"}": 1, b"]": 1, b",": 2, b":": 2, b"0": 3}
_NOT_A_CHOICE = np.iinfo(np.int32).max

# Tokens of slack kept when deciding to close: one free token may open up to this much more.
_CLOSING_MARGIN = 4

SCHEMA_INSTRUCTION = "Answer with one JSON object that follows this JSON schema:\n{schema}"


class SchemaTokenizer:
    """A tokenizer as llguidance sees it, and each token's rank when closing a document.

    Building it reads the whole vocabulary (about a second for a large one), so a model keeps
    one (:func:`schema_tokenizer`).
    """

    def __init__(self, tokenizer: Any, n_vocab: int, eos_token_ids: list[int]) -> None:
        try:
            import llguidance
            import llguidance.hf
        except ImportError as error:
            raise InvalidRequestError(
                "structured answers (output_cls, as_structured_llm, structured_predict) need "
                'llguidance: pip install "llama-index-vlm[structured]"'
            ) from error
        self.llguidance = llguidance
        try:
            self.tokenizer = llguidance.hf.from_tokenizer(
                tokenizer, n_vocab=n_vocab, eos_token=eos_token_ids
            )
        except ValueError as error:
            raise InvalidRequestError(
                f"structured answers need a fast (tokenizers) tokenizer: {error}"
            ) from error
        self.n_vocab = n_vocab
        self.eos_token_ids = eos_token_ids
        self.ranks = np.full(n_vocab, _NOT_A_CHOICE, dtype=np.int64)
        for token in range(min(n_vocab, self.tokenizer.vocab_size)):
            if token in eos_token_ids or self.tokenizer.is_special_token(token):
                continue
            data = self.tokenizer.decode_bytes([token])
            if data:
                self.ranks[token] = _CLOSING_RANKS.get(data, 4 if len(data) == 1 else 4 + len(data))

    def matcher(self, schema: dict[str, Any]) -> Any:
        """A fresh llguidance matcher of ``schema`` (compact JSON: no free whitespace)."""
        matcher_class = self.llguidance.LLMatcher
        grammar = matcher_class.grammar_from_json_schema(
            schema, overrides={"whitespace_flexible": False}
        )
        error = matcher_class.validate_grammar(grammar, self.tokenizer)
        if error and not matcher_class.is_validate_warning(error):
            raise InvalidRequestError(f"cannot constrain answers to this JSON schema: {error}")
        matcher = matcher_class(self.tokenizer, grammar, log_level=0)
        _check(matcher)
        return matcher

    def allowed(self, matcher: Any) -> np.ndarray:
        """The tokens that may come next, as a boolean mask over the model's vocabulary."""
        bias = np.frombuffer(matcher.compute_logit_bias(), dtype=np.uint8)
        allowed = np.zeros(self.n_vocab, dtype=bool)
        allowed[: min(len(bias), self.n_vocab)] = bias[: self.n_vocab] > 0
        return allowed

    def closing_path(self, matcher: Any, limit: int) -> list[int] | None:
        """The tokens that complete the document from ``matcher``'s state by the closing
        preference, or None if that takes more than ``limit`` tokens.
        """
        probe = matcher.deep_copy()
        path: list[int] = []
        while not probe.is_accepting():
            if len(path) >= limit:
                return None
            ranks = np.where(self.allowed(probe), self.ranks, _NOT_A_CHOICE)
            token = int(np.argmin(ranks))
            if ranks[token] == _NOT_A_CHOICE or not probe.consume_token(token):
                raise VLMError(f"the JSON grammar cannot be completed ({probe.get_error()})")
            path.append(token)
        return path


def _check(matcher: Any) -> None:
    if matcher.is_error():
        raise VLMError(f"constrained decoding failed: {matcher.get_error()}")


class SchemaLogitsProcessor:
    """A transformers ``LogitsProcessor`` that keeps one generated sequence inside a JSON
    schema, steering to close the document when ``budget`` new tokens are nearly spent.

    Its :attr:`follow` is the stopping criterion that feeds each new token to the matcher; give
    both to ``generate`` (``logits_processor=[p]``, ``stopping_criteria=[p.follow]``). Stateful:
    one instance per generation, batch size 1, no beam search.
    """

    def __init__(self, schema_tokenizer: SchemaTokenizer, matcher: Any, budget: int) -> None:
        self.schema_tokenizer = schema_tokenizer
        self.matcher = matcher
        self.budget = budget
        self.steps = 0
        self.follow = _FollowTokens(self)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if input_ids.shape[0] != 1:
            raise InvalidRequestError("structured answers are generated one at a time")
        remaining = self.budget - self.steps  # tokens left, this one included
        self.steps += 1
        allowed = self.schema_tokenizer.allowed(self.matcher)
        if not self.matcher.is_accepting():
            path = self.schema_tokenizer.closing_path(self.matcher, remaining)
            if path is None or len(path) + 1 + _CLOSING_MARGIN >= remaining:
                # Close the document now, while there are tokens left to end it.
                path = path or self.schema_tokenizer.closing_path(self.matcher, 1 << 16)
                allowed = np.zeros_like(allowed)
                allowed[path[0]] = True
        mask = torch.from_numpy(allowed[: scores.shape[-1]]).to(scores.device)
        constrained = scores.masked_fill(~mask, float("-inf"))
        if not torch.isfinite(constrained).any():
            # Earlier processors (top-k, top-p) removed every allowed token: choose among those.
            constrained = torch.zeros_like(scores).masked_fill(~mask, float("-inf"))
        return constrained

    def completion(self) -> str:
        """The text that closes the document from where generation stopped ('' if complete)."""
        if self.matcher.is_accepting():
            return ""
        path = self.schema_tokenizer.closing_path(self.matcher, 1 << 16) or []
        return self.schema_tokenizer.tokenizer.decode_str(path)


class _FollowTokens:
    """The stopping criterion half of :class:`SchemaLogitsProcessor`: it sees each token once
    it is chosen, and never stops generation itself (EOS, allowed once the document is
    complete, does).
    """

    def __init__(self, processor: SchemaLogitsProcessor) -> None:
        self.processor = processor

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        matcher = self.processor.matcher
        if not matcher.is_stopped():
            matcher.consume_token(int(input_ids[0, -1]))
            _check(matcher)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


_SCHEMA_TOKENIZERS: weakref.WeakKeyDictionary[Any, SchemaTokenizer] = weakref.WeakKeyDictionary()
_SCHEMA_TOKENIZERS_LOCK = threading.Lock()


def schema_tokenizer(vlm: Any) -> SchemaTokenizer:
    """The :class:`SchemaTokenizer` of a loaded VLM's model, built on first use and kept."""
    model = vlm.model
    with _SCHEMA_TOKENIZERS_LOCK:
        cached = _SCHEMA_TOKENIZERS.get(model)
        if cached is None:
            n_vocab = int(model.get_output_embeddings().weight.shape[0])
            eos = model.generation_config.eos_token_id
            if eos is None:
                eos = vlm.processor.tokenizer.eos_token_id
            eos_ids = [int(token) for token in (eos if isinstance(eos, list) else [eos])]
            cached = _SCHEMA_TOKENIZERS[model] = SchemaTokenizer(
                vlm.processor.tokenizer, n_vocab, eos_ids
            )
        return cached


def structured_chat(
    vlm: Any,
    output_cls: type[Model],
    messages: Sequence[ChatMessage],
    llm_kwargs: dict[str, Any] | None = None,
) -> Model:
    """Answer ``messages`` with an ``output_cls`` instance, generated under its JSON schema.

    Families that see one image per prompt see the pages tiled into one image, so the answer
    is one document. The schema is stated in a system message, which LLaVA families read.
    The answer gets at least the tokens the shortest document of the schema needs.

    Raises:
        InvalidRequestError: llguidance is not installed, or the schema cannot be compiled.
        VLMError: the answer does not validate (a constraint JSON schema cannot express).
    """
    schema = output_cls.model_json_schema()
    tokens = schema_tokenizer(vlm)
    matcher = tokens.matcher(schema)
    kwargs = dict(llm_kwargs or {})
    shortest = tokens.closing_path(matcher, 1 << 16) or []
    budget = max(int(kwargs.pop("max_new_tokens", vlm.max_new_tokens)), len(shortest) + 2)
    processor = SchemaLogitsProcessor(tokens, matcher, budget)
    instruction = SCHEMA_INSTRUCTION.format(schema=json.dumps(schema))
    response = vlm.model_copy(update={"multi_image_strategy": "tile"}).chat(
        [ChatMessage(role=MessageRole.SYSTEM, content=instruction), *messages],
        **kwargs,
        max_new_tokens=budget,
        num_beams=1,
        logits_processor=[*(vlm.generate_kwargs.get("logits_processor") or []), processor],
        stopping_criteria=[*(vlm.generate_kwargs.get("stopping_criteria") or []), processor.follow],
    )
    text = (response.message.content or "") + processor.completion()
    try:
        return output_cls.model_validate_json(text)
    except ValidationError as error:
        raise VLMError(
            f"the model's answer follows the JSON schema of {output_cls.__name__} but does not "
            f"validate ({error.error_count()} error(s)): {text!r}"
        ) from error


class StructuredOutputMixin:
    """LlamaIndex's structured-prediction methods, answered by :func:`structured_chat`.

    Mixed into :class:`~llama_index_vlm.vlm.HuggingFaceVLM`, so ``structured_predict``,
    ``as_structured_llm(...).chat`` and query engines with ``output_cls`` return an instance
    of the class whatever the model.
    """

    @dispatcher.span
    def structured_predict(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        """An ``output_cls`` instance answering ``prompt`` (formatted with ``prompt_args``).

        Example::

            class Revenue(BaseModel):
                year: int
                amount: float

            vlm.structured_predict(Revenue, PromptTemplate("What was the revenue? {q}"), q="")
        """
        dispatcher.event(
            LLMStructuredPredictStartEvent(
                output_cls=output_cls, template=prompt, template_args=prompt_args
            )
        )
        messages = self._get_messages(prompt, **prompt_args)
        result = structured_chat(self, output_cls, messages, llm_kwargs)
        dispatcher.event(LLMStructuredPredictEndEvent(output=result))
        return result

    async def astructured_predict(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        """:meth:`structured_predict` in a worker thread."""
        return await asyncio.to_thread(
            self.structured_predict, output_cls, prompt, llm_kwargs, **prompt_args
        )

    def stream_structured_predict(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Generator[Model, None, None]:
        """The complete answer as the only item (a constrained document is parsed whole)."""
        yield self.structured_predict(output_cls, prompt, llm_kwargs, **prompt_args)

    async def astream_structured_predict(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> AsyncGenerator[Model, None]:
        """:meth:`stream_structured_predict` without blocking the event loop."""
        result = await self.astructured_predict(output_cls, prompt, llm_kwargs, **prompt_args)

        async def gen() -> AsyncGenerator[Model, None]:
            yield result

        return gen()
