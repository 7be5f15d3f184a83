"""llama-index-vlm: LlamaIndex RAG over document pages as images.

Pages are read as images (:class:`PDFPageReader`), embedded as ColPali multi-vectors
(:class:`ColPaliEncoder`), stored in LanceDB (:class:`LanceDBPageStore`), retrieved by late
interaction (:class:`ColPaliRetriever`) and answered by a local vision-language model
(:class:`HuggingFaceVLM`); :class:`VisualDocumentIndex` ties them together.

Public classes load lazily, so ``import llama_index_vlm`` (and the command line's ``--help``)
does not pay for importing torch and transformers until a model is actually used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from llama_index_vlm.errors import (
    ContextWindowExceededError,
    DamagedStoreError,
    EmptyInputError,
    InvalidCheckpointError,
    InvalidPageError,
    InvalidRequestError,
    MissingWeightsError,
    ModelMismatchError,
    PageNotFoundError,
    StoreError,
    TrainingDataError,
    UnreadableDocumentError,
    UnsupportedDeviceError,
    UnsupportedFilterError,
    UsageError,
    VLMError,
)

__version__ = "0.1.0"

_EXPORTS = {
    "ColPaliEncoder": "llama_index_vlm.encoder",
    "PDFPageReader": "llama_index_vlm.reader",
    "LanceDBPageStore": "llama_index_vlm.store",
    "IngestReport": "llama_index_vlm.ingestion",
    "ingest": "llama_index_vlm.ingestion",
    "ColPaliRetriever": "llama_index_vlm.retriever",
    "PageVectorTransform": "llama_index_vlm.transform",
    "HuggingFaceVLM": "llama_index_vlm.vlm",
    "VisualDocumentIndex": "llama_index_vlm.index",
    "ImageTextEncoder": "llama_index_vlm.image_search.encoder",
    "ImageSearchRetriever": "llama_index_vlm.image_search.retriever",
}

__all__ = [
    "ColPaliEncoder",
    "ColPaliRetriever",
    "ContextWindowExceededError",
    "DamagedStoreError",
    "EmptyInputError",
    "HuggingFaceVLM",
    "ImageSearchRetriever",
    "ImageTextEncoder",
    "IngestReport",
    "InvalidCheckpointError",
    "InvalidPageError",
    "InvalidRequestError",
    "LanceDBPageStore",
    "MissingWeightsError",
    "ModelMismatchError",
    "PDFPageReader",
    "PageNotFoundError",
    "PageVectorTransform",
    "StoreError",
    "TrainingDataError",
    "UnreadableDocumentError",
    "UnsupportedDeviceError",
    "UnsupportedFilterError",
    "UsageError",
    "VLMError",
    "VisualDocumentIndex",
    "__version__",
    "ingest",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from llama_index_vlm.encoder import ColPaliEncoder
    from llama_index_vlm.image_search.encoder import ImageTextEncoder
    from llama_index_vlm.image_search.retriever import ImageSearchRetriever
    from llama_index_vlm.index import VisualDocumentIndex
    from llama_index_vlm.ingestion import IngestReport, ingest
    from llama_index_vlm.reader import PDFPageReader
    from llama_index_vlm.retriever import ColPaliRetriever
    from llama_index_vlm.store import LanceDBPageStore
    from llama_index_vlm.transform import PageVectorTransform
    from llama_index_vlm.vlm import HuggingFaceVLM


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llama_index_vlm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
