"""How a page index is recorded in a LlamaIndex ``StorageContext``, so it loads back.

LlamaIndex persists an index as its *index struct* (``storage_context.persist(...)``) and
rebuilds it with ``load_index_from_storage``, which picks the index class by the struct's type.
A page index's pages live in LanceDB, not in the storage context; its struct,
:class:`PageIndexStruct`, records where (the store's configuration) and which encoder made the
vectors, under its own type, registered with LlamaIndex when this module is imported (importing
``llama_index_vlm.store`` does). So the LlamaIndex idiom works::

    index.storage_context.persist("./storage")
    index = load_index_from_storage(StorageContext.from_defaults(persist_dir="./storage"),
                                    encoder=encoder)   # a VisualDocumentIndex again

Without ``encoder=`` the encoder is loaded from the recorded checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llama_index.core.data_structs.data_structs import IndexDict
from llama_index.core.data_structs.registry import INDEX_STRUCT_TYPE_TO_INDEX_STRUCT_CLASS

#: The index struct type of a page index in a persisted LlamaIndex index store.
PAGE_INDEX_TYPE = "llama_index_vlm_pages"


@dataclass
class PageIndexStruct(IndexDict):
    """A page index's entry in LlamaIndex's index store: where its pages are, which encoder.

    Attributes:
        store: the page store's configuration (``LanceDBPageStore.to_dict()``).
        encoder: the encoder's ``name_or_path`` and ``revision``.
    """

    store: dict[str, Any] = field(default_factory=dict)
    encoder: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def get_type(cls) -> str:  # type: ignore[override]
        """:data:`PAGE_INDEX_TYPE`: loads back as a ``VisualDocumentIndex``, not a vector index."""
        return PAGE_INDEX_TYPE


def _load_page_index(**kwargs: Any) -> Any:
    """What ``load_index_from_storage`` calls for a :class:`PageIndexStruct` (the class itself
    would import torch with the encoder; this imports it only when an index is loaded).
    """
    from llama_index_vlm.index import VisualDocumentIndex

    return VisualDocumentIndex(**kwargs)


def register() -> None:
    """Teach LlamaIndex's loaders the page index type (idempotent)."""
    from llama_index.core.indices.registry import INDEX_STRUCT_TYPE_TO_INDEX_CLASS

    INDEX_STRUCT_TYPE_TO_INDEX_STRUCT_CLASS[PAGE_INDEX_TYPE] = PageIndexStruct  # type: ignore[index]
    INDEX_STRUCT_TYPE_TO_INDEX_CLASS[PAGE_INDEX_TYPE] = _load_page_index  # type: ignore[index]


register()
