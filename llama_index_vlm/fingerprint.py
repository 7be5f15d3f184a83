"""Encoder fingerprints: when two sets of page vectors may share one index.

An encoder describes its vector space as a JSON-able dict (its *fingerprint*: model class,
dimension, a digest of the projection head, the processor settings). The store records the
fingerprint of the vectors it holds and refuses vectors of another one. The rules live here,
apart from the encoder, so the store can apply them without importing torch.
"""

from __future__ import annotations

from typing import Any

from llama_index_vlm.errors import ModelMismatchError
from llama_index_vlm.pages import canonical_json

#: The fingerprint fields that decide whether two encoders' vectors may share an index. The
#: checkpoint's name or path is recorded too, but only for people: the same weights copied to
#: another directory are the same model. ``adapter_digest`` is a fine-tuned LoRA adapter's
#: (absent, so None, for a base model): an adapted model's vectors never mix with the base's.
FINGERPRINT_IDENTITY_KEYS = (
    "model_class",
    "embedding_dim",
    "weights_digest",
    "processor",
    "adapter_digest",
)

#: Fingerprint key of the token pool factor the stored page vectors were shrunk by (1: none).
POOL_FACTOR_KEY = "pool_factor"


def identity(fingerprint: dict[str, Any]) -> str:
    """The part of a fingerprint that decides whether vectors may share a table, as text.

    >>> identity({"model": "a", "model_class": "X", "embedding_dim": 128}) == identity(
    ...     {"model": "b", "model_class": "X", "embedding_dim": 128})
    True
    """
    return canonical_json({key: fingerprint.get(key) for key in FINGERPRINT_IDENTITY_KEYS})


def pool_factor_of(fingerprint: dict[str, Any] | None) -> float:
    """The pool factor a fingerprint records (1 when it records none).

    >>> pool_factor_of({"pool_factor": 3}), pool_factor_of(None)
    (3.0, 1.0)
    """
    return float((fingerprint or {}).get(POOL_FACTOR_KEY) or 1)


def check_compatible(
    fingerprint: dict[str, Any] | None,
    dim: int | None = None,
    *,
    stored: dict[str, Any] | None = None,
    stored_dim: int | None = None,
    table: str = "the table",
) -> None:
    """Refuse vectors from ``fingerprint`` (or of ``dim`` dimensions) for a table that holds
    ``stored_dim``-dimensional vectors from the encoder ``stored``.

    Any argument may be None (unknown): only what is known is compared. A pool factor is
    compared only when ``fingerprint`` records one, as the vectors of a writer that pools do;
    a query's fingerprint (the encoder's) does not. ``table`` names the table in messages.

    Raises:
        ModelMismatchError: the fingerprint's ``embedding_dim`` is not ``dim``, the encoders
            differ (:func:`identity`), the pool factors differ, or the dimensions differ.

    >>> check_compatible({"model_class": "X", "embedding_dim": 128}, 128,
    ...                  stored={"model_class": "X", "embedding_dim": 128}, stored_dim=128)
    """
    declared = (fingerprint or {}).get("embedding_dim")
    if dim is not None and declared is not None and int(declared) != dim:
        raise ModelMismatchError(
            f"the encoder fingerprint says embedding_dim={declared}, but the page vectors "
            f"have {dim} dimensions; pass the fingerprint of the encoder that made them"
        )
    if stored is not None and fingerprint is not None:
        _check_same_encoder(fingerprint, stored, table)
    if dim is not None and stored_dim is not None and dim != stored_dim:
        raise ModelMismatchError(
            f"{table} holds {stored_dim}-dimensional vectors (encoder {canonical_json(stored)}), "
            f"these have {dim} dimensions (encoder {canonical_json(fingerprint)}); use the same "
            "encoder, or another uri/table_name for the new model"
        )


def _check_same_encoder(fingerprint: dict[str, Any], stored: dict[str, Any], table: str) -> None:
    if identity(stored) != identity(fingerprint):
        raise ModelMismatchError(
            f"{table} holds vectors from encoder {canonical_json(stored)}, not from "
            f"{canonical_json(fingerprint)}; use the same encoder, or another uri/table_name for "
            "the new model"
        )
    if POOL_FACTOR_KEY in fingerprint and pool_factor_of(fingerprint) != pool_factor_of(stored):
        raise ModelMismatchError(
            f"{table} holds page vectors pooled with pool_factor={pool_factor_of(stored):g}, "
            f"these are pooled with pool_factor={pool_factor_of(fingerprint):g}; leave "
            "pool_factor unset to use the table's, or use another uri/table_name"
        )
