"""Image-text search over photo and figure collections (BLIP-2 or SigLIP, in LanceDB).

- :mod:`~llama_index_vlm.image_search.models`: what each architecture computes.
- :mod:`~llama_index_vlm.image_search.encoder`: :class:`ImageTextEncoder`, one vector per image
  and per text.
- :mod:`~llama_index_vlm.image_search.store`: :class:`LanceDBImageStore`, a single-vector
  LanceDB table (with an ANN index) next to the pages.
- :mod:`~llama_index_vlm.image_search.indexing`: :func:`index_images`, folders of images in.
- :mod:`~llama_index_vlm.image_search.retriever`: :class:`ImageSearchRetriever`, text ->
  images and image -> images, with an optional BLIP-2 matching-head rerank.

Example::

    from llama_index_vlm.image_search import (
        ImageSearchRetriever, ImageTextEncoder, LanceDBImageStore, index_images)

    encoder = ImageTextEncoder.from_pretrained("Salesforce/blip2-itm-vit-g")
    store = LanceDBImageStore(uri="./vlm_index")
    index_images("photos/", encoder, store)
    hits = ImageSearchRetriever(encoder, store, itm_rerank=True).retrieve("a red bicycle")
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ImageTextEncoder": "llama_index_vlm.image_search.encoder",
    "DEFAULT_IMAGE_TEXT_ENCODER": "llama_index_vlm.image_search.encoder",
    "LanceDBImageStore": "llama_index_vlm.image_search.store",
    "ImageIndexReport": "llama_index_vlm.image_search.indexing",
    "index_images": "llama_index_vlm.image_search.indexing",
    "ImageSearchRetriever": "llama_index_vlm.image_search.retriever",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llama_index_vlm.image_search' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
