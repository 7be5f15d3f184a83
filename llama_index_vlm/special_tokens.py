"""User text that spells a special token (``<image>``, ``<bos>``, ``<|im_start|>``) read as text.

A tokenizer turns the characters ``<image>`` anywhere in its input into the image token, so a
query containing them made the model look for an image that is not there (a crash), and a
``<bos>`` or ``<|im_end|>`` typed by a user would end or restart the prompt. Text from users,
file names and metadata goes through :meth:`SpecialTokens.escape` first: every spelling of a
special token gets an invisible ZERO WIDTH SPACE after its first character, which the
tokenizer reads as ordinary text, so nothing the user typed becomes a special token. Text
without such spellings is unchanged.
"""

from __future__ import annotations

import re
from typing import Any

#: Inserted into a special token's spelling to break it: invisible, and not a special token.
BREAK = "\u200b"


class SpecialTokens:
    """The special tokens of one tokenizer, and how to keep user text from spelling them.

    Example:
        >>> from types import SimpleNamespace
        >>> tokenizer = SimpleNamespace(all_special_tokens=["<bos>", "<image>"])
        >>> SpecialTokens(tokenizer).escape("what is <image>?") == "what is <\\u200bimage>?"
        True
        >>> SpecialTokens(tokenizer).escape("revenue 2023")
        'revenue 2023'
    """

    def __init__(self, tokenizer: Any, extra: tuple[str, ...] = ()) -> None:
        tokens = set(getattr(tokenizer, "all_special_tokens", []) or [])
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        tokens |= {token.content for token in added.values() if getattr(token, "special", False)}
        tokens |= set(extra)
        #: The special tokens' spellings, longest first.
        self.tokens = sorted((token for token in tokens if token), key=len, reverse=True)
        self._pattern = (
            re.compile("|".join(re.escape(token) for token in self.tokens)) if self.tokens else None
        )

    def escape(self, text: str) -> str:
        """``text`` with every spelling of a special token broken, so it tokenises as text."""
        if self._pattern is None:
            return text
        # Breaking one spelling cannot create another (none contains BREAK); a second pass
        # catches spellings that overlapped the first ones.
        for _ in range(3):
            escaped = self._pattern.sub(_broken, text)
            if escaped == text:
                break
            text = escaped
        return text


def _broken(match: re.Match[str]) -> str:
    token = match.group()
    return token[0] + BREAK + token[1:] if len(token) > 1 else "\ufffd"
