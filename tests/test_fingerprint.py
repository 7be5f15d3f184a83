"""Tests of ``llama_index_vlm.fingerprint``: when vectors may go into a table of other vectors."""

from __future__ import annotations

import pytest

from llama_index_vlm.errors import ModelMismatchError
from llama_index_vlm.fingerprint import check_compatible, identity, pool_factor_of

STORED = {
    "model": "vidore/colpali-v1.3-hf",
    "model_class": "ColPaliForRetrieval",
    "embedding_dim": 128,
    "weights_digest": "0c516a4216330f1d",
    "processor": {"class": "ColPaliProcessor"},
}
TABLE = "table 'pages' at './index'"


def _refusal(fingerprint, dim=None, **stored) -> str | None:
    """The message ``check_compatible`` refuses with, or None when it accepts."""
    try:
        check_compatible(fingerprint, dim, table=TABLE, **stored)
    except ModelMismatchError as error:
        return str(error)
    return None


def test_anything_goes_into_a_table_that_holds_nothing():
    assert _refusal({"model_class": "Other", "embedding_dim": 64}, 64) is None


def test_the_same_encoder_is_accepted():
    assert _refusal(dict(STORED), 128, stored=STORED, stored_dim=128) is None


def test_the_same_weights_from_another_path_are_accepted():
    moved = {**STORED, "model": "/models/colpali-copy"}
    assert identity(moved) == identity(STORED)
    assert _refusal(moved, 128, stored=STORED, stored_dim=128) is None


def test_another_encoder_is_refused_naming_both_and_the_table():
    other = {**STORED, "model": "vidore/colqwen2-v1.0-hf", "model_class": "ColQwen2ForRetrieval"}
    message = _refusal(other, 128, stored=STORED, stored_dim=128)
    assert message.startswith(f"{TABLE} holds vectors from encoder")
    assert "colpali-v1.3-hf" in message and "colqwen2-v1.0-hf" in message


def test_vectors_contradicting_their_fingerprint_are_refused():
    assert "embedding_dim=128" in _refusal(dict(STORED), 64)


def test_vectors_of_another_dimension_are_refused():
    assert "holds 128-dimensional vectors" in _refusal(None, 64, stored=STORED, stored_dim=128)


def test_pages_pooled_by_another_factor_are_refused():
    pooled = {**STORED, "pool_factor": 3}
    message = _refusal({**STORED, "pool_factor": 1}, 128, stored=pooled, stored_dim=128)
    assert "pool_factor=3" in message and "pool_factor=1" in message


def test_a_query_fingerprint_without_pool_factor_fits_a_pooled_table():
    pooled = {**STORED, "pool_factor": 3}
    assert _refusal(dict(STORED), 128, stored=pooled, stored_dim=128) is None


@pytest.mark.parametrize(
    ("fingerprint", "factor"), [(None, 1.0), ({}, 1.0), ({"pool_factor": 2}, 2.0)]
)
def test_pool_factor_of(fingerprint, factor):
    assert pool_factor_of(fingerprint) == factor
