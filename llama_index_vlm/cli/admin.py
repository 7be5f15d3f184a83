"""``llama-index-vlm info`` and ``delete DOC_ID``: describe an index, delete a document.

These commands only read and write the store: they never import torch or transformers.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from llama_index_vlm.cli.common import open_store, quantity, store_option
from llama_index_vlm.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from llama_index_vlm.store import LanceDBPageStore, StoredDocument


def run_info(args: argparse.Namespace) -> int:
    """``info``: pages, documents, model fingerprint, disk size and version of an index."""
    store = open_store(args.store, must_exist=True)
    documents = list_documents(store)
    description = {
        "store": args.store,
        "pages": store.count(),
        "fingerprint": store.fingerprint or {},
        "disk_bytes": disk_size(args.store),
        "version": store.version,
        "documents": [asdict(document) for document in documents],
    }
    if args.json:
        print(json.dumps(description, indent=2))
        return 0
    disk_bytes = description["disk_bytes"]
    print(f"index      {args.store}")
    print(f"pages      {description['pages']}")
    print(f"documents  {len(documents)}")
    print(f"model      {_model_line(description['fingerprint'], store.pool_factor)}")
    print(f"disk size  {'unknown (remote)' if disk_bytes is None else human_size(disk_bytes)}")
    print(f"version    {store.version}")
    if documents:
        print(f"\n{'doc id':<64}  {'pages':>5}  file")
        for document in documents:
            where = document.file_path or document.file_name or ""
            print(f"{document.doc_id:<64}  {document.pages:>5}  {where}")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    """``delete DOC_ID``: delete every page of one document."""
    store = open_store(args.store, must_exist=True)
    document = find_document(store, args.document)
    store.delete(document.doc_id)
    name = document.file_path or document.file_name or document.doc_id
    print(
        f"deleted {quantity(document.pages, 'page')} of {name} (doc id {document.doc_id}); "
        f"{quantity(store.count(), 'page')} left"
    )
    return 0


def list_documents(store: LanceDBPageStore) -> list[StoredDocument]:
    """Every stored document with its page count, by file path."""
    return store.documents()


def find_document(store: LanceDBPageStore, name: str) -> StoredDocument:
    """The stored document named by its doc id, its file path or (if unique) its file name."""
    documents = list_documents(store)
    for document in documents:
        if document.doc_id == name:
            return document
    path = os.path.abspath(name)
    matches = [document for document in documents if document.file_path == path]
    matches = matches or [document for document in documents if document.file_name == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        listing = "; ".join(f"{d.doc_id} ({d.file_path})" for d in matches)
        raise UsageError(f"{len(matches)} documents are named {name!r}; give a doc id: {listing}")
    raise UsageError(
        f"no document {name!r} in the index at {store.uri}; `llama-index-vlm info"
        f"{store_option(store.uri)}` lists the doc ids"
    )


def disk_size(uri: str) -> int | None:
    """Bytes under a local index directory; None for a remote URI."""
    if "://" in uri:
        return None
    total = 0
    for folder, _, files in os.walk(uri):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(folder, name))
            except OSError:
                continue  # removed meanwhile by a concurrent cleanup
    return total


def human_size(size: int) -> str:
    """``size`` bytes in B, KiB, MiB or (from 1 GiB up) GiB.

    Example:
        >>> human_size(512), human_size(3 * 1024 + 512), human_size(5 * 1024**4)
        ('512 B', '3.5 KiB', '5120.0 GiB')
    """
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _model_line(fingerprint: dict[str, Any], pool_factor: float) -> str:
    """The model line of ``info``: its name, then its class, vectors, digest and pooling."""
    model = fingerprint.get("model", "unknown")
    details = ", ".join(
        part
        for part in (
            fingerprint.get("model_class"),
            f"{fingerprint['embedding_dim']}-dim vectors" if "embedding_dim" in fingerprint else "",
            f"weights digest {fingerprint['weights_digest']}"
            if "weights_digest" in fingerprint
            else "",
            f"pool factor {pool_factor:g}" if pool_factor > 1 else "",
        )
        if part
    )
    return f"{model} ({details})" if details else str(model)
