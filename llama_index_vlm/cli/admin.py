"""``llama-index-vlm info`` and ``delete DOC_ID``: describe an index, delete a document.

These commands only read and write the store: they never import torch or transformers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from llama_index_vlm.cli.common import is_complete, open_store, quantity, store_option
from llama_index_vlm.cli.copies import FileCopies
from llama_index_vlm.cli.output import escaped
from llama_index_vlm.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from llama_index_vlm.store import LanceDBPageStore, StoredDocument


#: The shortest beginning of a doc id that ``delete`` takes (as git takes commit ids).
MIN_PREFIX = 4


def run_info(args: argparse.Namespace) -> int:
    """``info``: pages, documents, model fingerprint, disk size and version of an index."""
    store = open_store(args.store, must_exist=True)
    documents = list_documents(store)
    copies = FileCopies(store).by_document()
    description = {
        "store": args.store,
        "pages": store.count(),
        "fingerprint": store.fingerprint or {},
        "disk_bytes": disk_size(args.store),
        "version": store.version,
        "documents": [
            {
                **asdict(document),
                "complete": is_complete(document),
                "copies": copies.get(document.doc_id, []),
            }
            for document in documents
        ],
    }
    if args.json:
        print(json.dumps(description, indent=2))
        return 0
    disk_bytes = description["disk_bytes"]
    incomplete = sum(1 for document in documents if not is_complete(document))
    print(f"index      {escaped(args.store)}")
    print(f"pages      {description['pages']}")
    print(f"documents  {len(documents)}" + (f" ({incomplete} incomplete)" if incomplete else ""))
    print(f"model      {escaped(_model_line(description['fingerprint'], store.pool_factor))}")
    print(f"disk size  {'unknown (remote)' if disk_bytes is None else human_size(disk_bytes)}")
    print(f"version    {store.version}")
    if documents:
        print(f"\n{'doc id':<64}  {'pages':>5}  file")
        for document in documents:
            _print_document(document, copies.get(document.doc_id, []))
    return 0


def _print_document(document: StoredDocument, copies: list[str]) -> None:
    where = escaped(document.file_path or document.file_name or "")
    note = ""
    if not is_complete(document):
        note = (
            f"  (incomplete: {document.pages} of {document.page_count} pages; "
            "`llama-index-vlm index` it again to finish)"
        )
    print(f"{escaped(document.doc_id):<64}  {document.pages:>5}  {where}{note}")
    for copy in copies:
        print(f"{'':<64}  {'':>5}  same content: {escaped(copy)}")


def run_delete(args: argparse.Namespace) -> int:
    """``delete DOC_ID``: delete every page of one document, after asking on a terminal."""
    store = open_store(args.store, must_exist=True)
    document = find_document(store, args.document)
    name = escaped(document.file_path or document.file_name or document.doc_id)
    if not args.yes and sys.stdin.isatty():
        print(
            f"will delete {quantity(document.pages, 'page')} of {name} (doc id {document.doc_id})"
        )
        if input("delete it? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    store.delete(document.doc_id)
    FileCopies(store).forget(doc_ids=[document.doc_id])
    print(
        f"deleted {quantity(document.pages, 'page')} of {name} (doc id {document.doc_id}); "
        f"{quantity(store.count(), 'page')} left"
    )
    return 0


def list_documents(store: LanceDBPageStore) -> list[StoredDocument]:
    """Every stored document with its page count, by file path."""
    return store.documents()


def find_document(store: LanceDBPageStore, name: str) -> StoredDocument:
    """The stored document named by its doc id, its file path, its file name (if unique), the
    path or name of a recorded copy, or a unique beginning of its doc id.
    """
    documents = list_documents(store)
    by_id = {document.doc_id: document for document in documents}
    if name in by_id:
        return by_id[name]
    path = os.path.abspath(name)
    matches = [document for document in documents if document.file_path == path]
    matches = matches or [document for document in documents if document.file_name == name]
    matches = matches or [
        by_id[doc_id] for doc_id in FileCopies(store).documents_named(name) if doc_id in by_id
    ]
    if len(name) >= MIN_PREFIX:
        matches = matches or [
            document for document in documents if document.doc_id.startswith(name)
        ]
    if len(matches) == 1:
        return matches[0]
    if matches:
        listing = "; ".join(
            f"{d.doc_id} ({escaped(d.file_path or d.file_name or '')})" for d in matches
        )
        raise UsageError(f"{len(matches)} documents are named {name!r}; give a doc id: {listing}")
    raise UsageError(
        f"no document {name!r} in the index at {escaped(store.uri)}; "
        f"`llama-index-vlm info{store_option(store.uri)}` lists the doc ids"
    )


def disk_size(uri: str) -> int | None:
    """Bytes under a local index directory; None for a remote URI."""
    from llama_index_vlm.store.compaction import disk_bytes

    return None if "://" in uri else disk_bytes(uri)


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
