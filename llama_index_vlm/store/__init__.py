"""LanceDB page store: one row per document page, with its image, text, metadata and multi-vector.

:class:`LanceDBPageStore` is a LlamaIndex ``BasePydanticVectorStore`` over an embedded LanceDB
table (a local directory by default; any URI LanceDB accepts, e.g. ``s3://bucket/index``).

Table layout (declared once in :func:`page_schema`):

==================  ===========================================================================
column              content
==================  ===========================================================================
``page_id``         node id, ``f"{doc_id}-p{page_number}"`` from the reader; unique
``doc_id``          sha256 of the source file (or the user's id); the node's ``ref_doc_id``
``file_path``...    ``file_path``, ``file_name``, ``page_number``, ``page_count``, ``width``,
                    ``height``, ``dpi``: the reader's page fields, typed
``image``           the encoded page image exactly as given (JPEG/PNG bytes)
``image_mimetype``  ``image/jpeg``, ``image/png``...
``text``            the node's text (the page's text layer, if the reader extracted it)
``metadata``        every other metadata key, as JSON (Lance JSONB, filterable)
``content_hash``    sha256 of image, text and metadata: an unchanged page is recognised
``n_vectors``       number of vectors of the page
``vectors``         ``list<fixed_size_list<float16, dim>>``: LanceDB's multi-vector column
==================  ===========================================================================

The encoder's fingerprint lives in the ``vectors`` field's metadata, which LanceDB carries into
every table version, so ``store.fingerprint`` is always the one the vectors were made with.

Atomicity: every :meth:`LanceDBPageStore.add` call is one LanceDB ``merge_insert`` (insert new
pages, replace changed ones, delete the stale pages of re-ingested files), which Lance commits as
one new table version: data files are written first and become visible only when the version's
manifest is published atomically. A process killed mid-add leaves the previous version, with
whole pages only; re-running the add finishes the job, as unchanged pages are skipped.

Example:
    >>> store = LanceDBPageStore(uri="./vlm_index")                       # doctest: +SKIP
    >>> store.add(page_documents, page_vectors=vectors, fingerprint=encoder.fingerprint)
    ...                                                                     # doctest: +SKIP
    >>> store.get_nodes(filters=MetadataFilters.from_dicts([{"key": "page_number", "value": 1}]))
    ...                                                                     # doctest: +SKIP

The modules, in the order a page takes:

- :mod:`~llama_index_vlm.store.page_store`: :class:`LanceDBPageStore`, the LlamaIndex store.
- :mod:`~llama_index_vlm.store.rows`: page nodes and vectors checked and turned into Arrow rows,
  and rows back into nodes (no LanceDB).
- :mod:`~llama_index_vlm.store.schema`: the Arrow schema, and what a stored schema says.
- :mod:`~llama_index_vlm.store.filters`: LlamaIndex ``MetadataFilters`` as LanceDB SQL.
- :mod:`~llama_index_vlm.store.table`: opening, creating and committing to the LanceDB table.
- :mod:`~llama_index_vlm.store.queries`: reading columns, vectors and LanceDB's own search.
- :mod:`~llama_index_vlm.store.results`: what writes and listings report.
- :mod:`~llama_index_vlm.store.object_storage`: object storage (``s3://``...) that cannot be
  reached or refuses the credentials, reported as one :class:`~llama_index_vlm.errors.StoreError`.
- :mod:`~llama_index_vlm.store.index_struct`: how a page index is recorded in (and loaded back
  from) a persisted LlamaIndex ``StorageContext``.
- :mod:`~llama_index_vlm.store.compaction`: giving the space of deleted pages back
  (:meth:`LanceDBPageStore.compact`), safe while queries run.

Searching is the ColPali retriever's job: it keeps the page vectors in memory and, when the
table version changes, reloads only the pages whose content hash changed
(:meth:`~LanceDBPageStore.page_hashes`, :meth:`~LanceDBPageStore.get_page_vectors`).
:meth:`LanceDBPageStore.query` is LanceDB's own exhaustive multi-vector search: the LlamaIndex
vector-store interface to the same pages, and a baseline for the retriever.

Importing this package loads LanceDB, Arrow and LlamaIndex's core, never torch or transformers.
"""

from llama_index_vlm.store import index_struct as _index_struct  # noqa: F401 (registers it)
from llama_index_vlm.store.compaction import CompactionReport
from llama_index_vlm.store.page_store import LanceDBPageStore
from llama_index_vlm.store.results import AddResult, StoredDocument
from llama_index_vlm.store.schema import VECTOR_COLUMN, page_schema

__all__ = [
    "VECTOR_COLUMN",
    "AddResult",
    "CompactionReport",
    "LanceDBPageStore",
    "StoredDocument",
    "page_schema",
]
