"""``llama-index-vlm index PATH...``: read, embed and store files and folders.

The paths and the files under them are checked before the model is loaded; byte-identical
copies of a document are reported and recorded (:mod:`~llama_index_vlm.cli.copies`);
``--prune`` deletes the documents whose files are gone; Ctrl-C keeps the batches committed
and says what they hold.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llama_index_vlm.cli.common import is_complete, open_store, quantity
from llama_index_vlm.cli.copies import FileCopies
from llama_index_vlm.cli.images import run_index_images
from llama_index_vlm.cli.models import encoder_name, load_encoder, place, retriever_adapter
from llama_index_vlm.cli.output import escaped
from llama_index_vlm.errors import EmptyInputError, UsageError

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from pathlib import Path

    from llama_index_vlm.encoder import ColPaliEncoder
    from llama_index_vlm.reader import PDFPageReader
    from llama_index_vlm.store import LanceDBPageStore, StoredDocument


@dataclass(frozen=True)
class Copy:
    """A file listed for indexing whose bytes are those of another file."""

    path: str
    doc_id: str
    same_as: str


def run_index(args: argparse.Namespace) -> int:
    """``index PATH...``: ingest files and folders; 1 when any file failed."""
    if args.images_only:
        return run_index_images(args)
    from llama_index_vlm.reader import PDFPageReader

    reader = PDFPageReader(
        dpi=args.dpi,
        extract_text=args.text,
        render_timeout=args.render_timeout,
        render_memory_limit=args.render_memory_limit,
        max_pages=args.max_pages,
        follow_symlinks=args.follow_symlinks,
    )
    files = _listed_files(reader, args.paths, prune=args.prune)
    store = open_store(args.store, must_exist=False)
    doc_ids = _doc_ids(files)
    copies = find_copies(files, doc_ids, store.documents())
    retriever = encoder_name(args.model, store, args.adapter)
    placement = place([retriever], args.device, args.dtype)
    encoder = load_encoder(
        retriever,
        store,
        placement,
        model_given=args.model is not None,
        verbose=args.verbose,
        adapter=retriever_adapter(args.model, args.adapter, store),
    )
    pages_before = store.count()
    try:
        failed = _ingest(files, encoder, store, reader, args)
    except KeyboardInterrupt:
        print(_interrupted_summary(store, pages_before, args.store))
        return 130
    _record_copies(store, [copy for copy in copies if copy.path not in failed])
    _report_missing_files(store, args.paths, set(doc_ids.values()), prune=args.prune)
    print(
        f"index {escaped(args.store)}: {quantity(store.count(), 'page')}, "
        f"{quantity(len(store.doc_ids()), 'document')}"
    )
    return 1 if failed else 0


def _ingest(
    files: list[Path],
    encoder: ColPaliEncoder,
    store: LanceDBPageStore,
    reader: PDFPageReader,
    args: argparse.Namespace,
) -> set[str]:
    """Ingest ``files`` (none: nothing to do) and print the report; the paths that failed."""
    if not files:
        return set()
    from llama_index_vlm.ingestion import ingest

    if args.ray is not None:
        from llama_index_vlm.distributed.ray_ingest import connect

        connect(None if args.ray == "local" else args.ray)
    report = ingest(
        files,
        encoder,
        store,
        reader=reader,
        batch_size=args.batch_size,
        pool_factor=args.pool_factor,
        show_progress=not args.no_progress,
        engine="local" if args.ray is None else "ray",
    )
    print(escaped(report.summary()))
    for failed in report.failed:
        print(f"  not indexed: {escaped(failed.path)}: {escaped(failed.reason)}")
    return {failed.path for failed in report.failed}


def _listed_files(reader: PDFPageReader, paths: list[str], *, prune: bool) -> list[Path]:
    """The files under ``paths``, checked before any model is loaded.

    A path that does not exist is an error, except with ``--prune`` (a folder deleted from
    disk, whose documents are to go).
    """
    missing = [path for path in paths if not os.path.lexists(path)]
    if missing and not prune:
        raise UsageError(
            f"no such file or folder: {escaped(missing[0])}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    present = [path for path in paths if path not in missing]
    files = reader.list_files(present) if present else []
    if not files and not prune:
        from llama_index_vlm.reader import SUPPORTED_EXTENSIONS

        raise EmptyInputError(
            f"no PDF or image files ({', '.join(sorted(SUPPORTED_EXTENSIONS))}) under "
            f"{', '.join(escaped(path) for path in paths)}"
        )
    return files


def _doc_ids(files: list[Path]) -> dict[str, str]:
    """Each readable file's doc id (the sha256 of its bytes), by path."""
    from llama_index_vlm.errors import UnreadableDocumentError
    from llama_index_vlm.pages import doc_id_for_file

    doc_ids = {}
    for path in files:
        try:
            doc_ids[str(path)] = doc_id_for_file(path)
        except UnreadableDocumentError:
            continue  # ingest reports it, with the reason
    return doc_ids


def find_copies(
    files: list[Path], doc_ids: dict[str, str], stored: list[StoredDocument]
) -> list[Copy]:
    """The listed files whose bytes are those of a stored document under another existing path,
    or of a file listed before them.

    A stored document whose file is gone (moved, renamed) has no copy: the new path is then
    where it lives now.
    """
    first_path = {
        document.doc_id: document.file_path
        for document in stored
        if document.file_path and os.path.exists(document.file_path)
    }
    copies = []
    for path in map(str, files):
        doc_id = doc_ids.get(path)
        if doc_id is None:
            continue
        original = first_path.setdefault(doc_id, path)
        if original != path:
            copies.append(Copy(path, doc_id, original))
    return copies


def _record_copies(store: LanceDBPageStore, copies: list[Copy]) -> None:
    """Say which files were copies, and record them, once their document is stored."""
    stored = set(store.doc_ids()) if copies else set()
    recorded = FileCopies(store)
    for copy in copies:
        if copy.doc_id not in stored:
            continue  # the original failed: nothing of it is stored
        recorded.add(copy.doc_id, copy.path)
        print(
            f"  {escaped(copy.path)}: same content as {escaped(os.path.basename(copy.same_as))}"
            f" ({escaped(copy.same_as)}): stored once, found by either name"
        )


def _report_missing_files(
    store: LanceDBPageStore, paths: list[str], present_doc_ids: set[str], *, prune: bool
) -> None:
    """Documents under ``paths`` whose files are gone: deleted with ``prune``, else counted.

    A document whose bytes are still on disk under another name (a file moved or renamed, a
    recorded copy) is kept: its pages are in use.
    """
    roots = [os.path.abspath(path) for path in paths]
    copies = FileCopies(store)
    copy_paths = copies.by_document()
    gone = [
        document
        for document in store.documents()
        if document.file_path
        and _under(document.file_path, roots)
        and not os.path.exists(document.file_path)
        and document.doc_id not in present_doc_ids
        and not any(os.path.exists(path) for path in copy_paths.get(document.doc_id, []))
    ]
    if not prune:
        if gone:
            print(
                f"  {quantity(len(gone), 'indexed document')} under these paths "
                f"{'is' if len(gone) == 1 else 'are'} no longer on disk; `--prune` deletes "
                f"{'it' if len(gone) == 1 else 'them'} from the index"
            )
        return
    for document in gone:
        store.delete(document.doc_id)
        print(f"  pruned {escaped(document.file_path)} ({quantity(document.pages, 'page')})")
    lost_copies = [
        path
        for paths_of_document in copy_paths.values()
        for path in paths_of_document
        if _under(path, roots) and not os.path.exists(path)
    ]
    copies.forget(doc_ids=[document.doc_id for document in gone], paths=lost_copies)


def _under(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _interrupted_summary(store: LanceDBPageStore, pages_before: int, uri: str) -> str:
    """One line after Ctrl-C: what the committed batches hold, and how to finish."""
    documents = store.documents()
    incomplete = sum(1 for document in documents if not is_complete(document))
    return (
        f"interrupted: the batches committed before the stop are kept; the index at "
        f"{escaped(uri)} holds {quantity(store.count(), 'page')} ({pages_before} before) of "
        f"{quantity(len(documents), 'document')}"
        + (f", {incomplete} of them incomplete" if incomplete else "")
        + "; run the same command again to finish"
    )
