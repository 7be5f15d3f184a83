"""Fixtures of the fine-tuning tests: synthetic tasks and quiet, quick training settings."""

from __future__ import annotations

import pytest

from llama_index_vlm.finetune.training import TrainingSettings
from llama_index_vlm.testing.finetune_tasks import colour_answer_examples, word_page_pairs


@pytest.fixture
def quick_settings():
    """``quick_settings(**overrides)`` -> settings for a few steps, no progress bar."""

    def settings(**overrides) -> TrainingSettings:
        values = {
            "max_steps": 2,
            "batch_size": 4,
            "learning_rate": 5e-3,
            "warmup": 0,
            "lora_dropout": 0.0,
            "save_steps": 1000,
            "logging_steps": 1,
            "show_progress": False,
        }
        return TrainingSettings(**{**values, **overrides})

    return settings


@pytest.fixture
def word_pairs(tmp_path):
    """Eight pages showing one word each, and one query per page naming its word."""
    return word_page_pairs(tmp_path / "pages", n_pages=8)


@pytest.fixture
def colour_examples(tmp_path):
    """Four plain coloured pages, each with the question of its colour."""
    return colour_answer_examples(tmp_path / "colours")
