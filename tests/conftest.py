"""Shared fixtures. Tests run offline: every model is a tiny checkpoint built locally."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from llama_index_vlm.testing import make_tiny_checkpoint  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Tiny checkpoints of the real architectures, built once per test session.


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """``tiny_checkpoint(kind)`` -> path of a tiny checkpoint, built once per session."""
    root = tmp_path_factory.mktemp("tiny_checkpoints")

    def build(kind: str):
        return make_tiny_checkpoint(kind, root / kind)

    return build


@pytest.fixture(scope="session")
def colpali_encoder(tiny_checkpoint):
    from llama_index_vlm.encoder import ColPaliEncoder

    return ColPaliEncoder.from_pretrained(tiny_checkpoint("colpali"), show_progress=False)


@pytest.fixture(scope="session")
def colqwen2_encoder(tiny_checkpoint):
    from llama_index_vlm.encoder import ColPaliEncoder

    return ColPaliEncoder.from_pretrained(tiny_checkpoint("colqwen2"), show_progress=False)
