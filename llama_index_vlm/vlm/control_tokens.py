"""Keeping the model's control tokens out of the text a prompt is built from.

Questions, page labels and metadata are user text: a file named ``<image>.pdf`` puts
``<image>`` into every prompt that cites it. A processor would expand that text into image
placeholders (and refuse the call, or misalign the pages), and a tokenizer would encode
``<|im_end|>`` or ``<end_of_turn>`` as the real control token, ending the turn early. So every
control token in user text is broken with a zero-width space after its first character: the text
reads the same, and is encoded as ordinary characters.

A model's control tokens are the special tokens of its tokenizer, the added tokens its chat
template writes (transformers' own rule for ``sanitize_control_tokens``), and the placeholder
tokens its processor expands (``<image>``, ``<start_of_image>``, ``<fake_token_around_image>``,
...), which processors find by plain string search whether or not the tokenizer marks them special.
"""

from __future__ import annotations

import functools
import re
from typing import Any

#: Inserted after a control token's first character: invisible, and never part of a token.
BREAK = "\u200b"


def control_tokens(processor: Any) -> tuple[str, ...]:
    """The strings that must not reach ``processor`` from user text, longest first.

    Example::

        control_tokens(vlm.processor)  # ('<|vision_start|>', '<|image_pad|>', '<|im_end|>', ...)
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    template = getattr(processor, "chat_template", None) or getattr(
        tokenizer, "chat_template", None
    )
    template = template if isinstance(template, str) else ""
    tokens = {
        token.content
        for token in tokenizer.added_tokens_decoder.values()
        if token.special or (token.content in template and not token.content.isspace())
    }
    # The placeholders a processor expands by string search: image_token, video_token,
    # boi_token, fake_image_token, global_image_token, ...
    for name, value in vars(processor).items():
        if name.endswith("_token") and isinstance(value, str) and value.strip():
            tokens.add(value)
    return tuple(sorted(tokens, key=lambda token: (-len(token), token)))


def neutralise(text: str, tokens: tuple[str, ...]) -> str:
    """``text`` with every one of ``tokens`` broken by :data:`BREAK` after its first character.

    >>> neutralise("scan <image>.pdf", ("<image>",)) == "scan <" + BREAK + "image>.pdf"
    True
    >>> neutralise("no tokens here", ("<image>",))
    'no tokens here'
    """
    if not tokens or not text:
        return text
    return _pattern(tokens).sub(lambda match: match[0][0] + BREAK + match[0][1:], text)


@functools.lru_cache(maxsize=64)
def _pattern(tokens: tuple[str, ...]) -> re.Pattern[str]:
    longest_first = sorted(tokens, key=len, reverse=True)
    return re.compile("|".join(re.escape(token) for token in longest_first))
