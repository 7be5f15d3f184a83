"""Encoder fingerprints: when two sets of page vectors may share one index.

An encoder describes its vector space as a JSON-able dict (its *fingerprint*: model class,
dimension, a digest of the projection head, the processor settings). The store records the
fingerprint of the vectors it holds and refuses vectors of another one. The rules live here,
apart from the encoder, so the store can apply them without importing torch.
"""

from __future__ import annotations

from typing import Any

from llama_index_vlm.pages import canonical_json

#: The fingerprint fields that decide whether two encoders' vectors may share an index. The
#: checkpoint's name or path is recorded too, but only for people: the same weights copied to
#: another directory are the same model.
FINGERPRINT_IDENTITY_KEYS = ("model_class", "embedding_dim", "weights_digest", "processor")

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
