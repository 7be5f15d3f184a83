"""Running model.generate (vlm/generation.py): beam search and errors in the stream's thread."""

from __future__ import annotations

import pytest
from chats import question, variant


def test_beam_search_streams_its_whole_answer_at_once(vlms):
    vlm = variant(vlms("llava"), num_beams=2)
    answer = vlm.chat(question(1)).message.content
    chunks = list(vlm.stream_chat(question(1)))
    assert len(chunks) <= 1 and "".join(chunk.delta for chunk in chunks) == answer


def test_errors_in_the_generation_thread_reach_the_stream(vlms, monkeypatch):
    vlm = vlms("llava")

    def broken_generate(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(vlm.model, "generate", broken_generate)
    with pytest.raises(RuntimeError, match="simulated"):
        list(vlm.stream_chat(question(1)))
