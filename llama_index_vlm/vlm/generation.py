"""Running ``model.generate``: all at once, or streamed token by token from a worker thread.

Knows transformers only (no LlamaIndex). Both paths decode the same way (new tokens only,
special tokens skipped, leading whitespace dropped), so a greedy stream joins to exactly the
text of a greedy non-streamed call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Generated:
    """The decoded answer of one call and how many tokens it took."""

    text: str
    n_tokens: int


def settings(
    own: dict[str, Any], generate_kwargs: dict[str, Any], overrides: dict[str, Any], model: Any
) -> dict[str, Any]:
    """``model.generate``'s keyword arguments: the LLM's own settings (``own``: max_new_tokens,
    do_sample, num_beams, temperature, top_p), then its ``generate_kwargs``, then one call's
    ``overrides``.
    """
    result = {key: own[key] for key in ("max_new_tokens", "do_sample", "num_beams")}
    if overrides.get("do_sample", own["do_sample"]):
        result.update(temperature=own["temperature"], top_p=own["top_p"])
    result.update(generate_kwargs)
    result.update(overrides)
    if result["do_sample"] and result.get("temperature") == 0:
        # LlamaIndex users write temperature=0 for deterministic answers; transformers refuses
        # to sample at 0, and greedy decoding is what it means.
        result["do_sample"] = False
        result.pop("temperature")
        result.pop("top_p", None)
    generation_config = model.generation_config
    if generation_config.pad_token_id is None and "pad_token_id" not in result:
        # Without it transformers warns on every call; eos is what it would use anyway.
        result["pad_token_id"] = generation_config.eos_token_id
    return result


def on_device(model: Any, inputs: Any) -> dict[str, Any]:
    """The processor's ``inputs`` on the model's device, floating-point ones in its dtype."""
    parameter = next(model.parameters())
    return {
        name: (
            value.to(parameter.device, parameter.dtype)
            if value.is_floating_point()
            else value.to(parameter.device)
        )
        for name, value in inputs.items()
    }


def generate(
    model: Any,
    tokenizer: Any,
    inputs: Mapping[str, Any],
    generate_kwargs: Mapping[str, Any],
    lock: threading.Lock,
) -> Generated:
    """Generate an answer for prepared ``inputs`` and decode its new tokens.

    ``lock`` serialises calls on one model: concurrent generations would not run faster on one
    device, only hold several KV caches in memory at once.

    Example::

        inputs = processor(images=[page], text=prompt, return_tensors="pt")
        generate(model, processor.tokenizer, inputs, {"max_new_tokens": 64}, lock).text
    """
    with lock, torch.inference_mode():
        output = model.generate(**inputs, **generate_kwargs)
    new_tokens = output[0, _prompt_length(model, inputs) :]
    text = tokenizer.decode(new_tokens, skip_special_tokens=True)
    return Generated(text=text.lstrip(), n_tokens=int(new_tokens.numel()))


def stream(
    model: Any,
    tokenizer: Any,
    inputs: Mapping[str, Any],
    generate_kwargs: Mapping[str, Any],
    lock: threading.Lock,
    counted: list[int] | None = None,
) -> Iterator[str]:
    """Yield the answer's text as it is generated, through ``TextIteratorStreamer``.

    Generation starts on the first ``next()``, in a daemon thread; an error in that thread is
    raised here. Closing the iterator early stops generation at the next token. Beam search
    cannot stream in transformers, so with ``num_beams > 1`` the whole answer comes as one piece.
    Once the answer is complete, the number of tokens generated is appended to ``counted``.

    Example::

        for text in stream(model, processor.tokenizer, inputs, {"max_new_tokens": 64}, lock):
            print(text, end="", flush=True)
    """
    if generate_kwargs.get("num_beams", 1) > 1:
        yield from _whole(model, tokenizer, inputs, generate_kwargs, lock, counted)
        return

    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    closed = threading.Event()
    lengths = [_prompt_length(model, inputs)]

    class StopWhenClosed(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            lengths.append(int(input_ids.shape[1]))  # called once per new token
            return torch.full((input_ids.shape[0],), closed.is_set(), dtype=torch.bool)

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    criteria = StoppingCriteriaList(generate_kwargs.get("stopping_criteria") or [])
    criteria.append(StopWhenClosed())
    kwargs = {**generate_kwargs, "stopping_criteria": criteria, "streamer": streamer}
    failures: list[BaseException] = []

    def run() -> None:
        try:
            with lock, torch.inference_mode():
                model.generate(**inputs, **kwargs)
        except BaseException as error:  # re-raised in the consumer's thread below
            failures.append(error)
            streamer.end()  # unblocks the consumer, which would otherwise wait forever

    thread = threading.Thread(target=run, name="llama-index-vlm-generate", daemon=True)
    thread.start()
    started = False
    try:
        for text in streamer:
            if not started:
                text = text.lstrip()
                started = bool(text)
            if text:
                yield text
        thread.join()
        if failures:
            raise failures[0]
        if counted is not None:
            counted.append(lengths[-1] - lengths[0])
    finally:
        closed.set()


def _whole(model, tokenizer, inputs, generate_kwargs, lock, counted) -> Iterator[str]:
    generated = generate(model, tokenizer, inputs, generate_kwargs, lock)
    if counted is not None:
        counted.append(generated.n_tokens)
    if generated.text:
        yield generated.text


def _prompt_length(model: Any, inputs: Mapping[str, Any]) -> int:
    # Decoder-only models return the prompt before the answer; encoder-decoders (BLIP-2 with
    # Flan-T5) return only the decoder's tokens.
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(config, "is_encoder_decoder", False) or getattr(
        text_config, "is_encoder_decoder", False
    ):
        return 0
    return int(inputs["input_ids"].shape[1])
