"""Ingestion: read files into pages, embed them, and store them in atomic batches.

:func:`ingest` is the one entry point for files and folders; :func:`ingest_documents` does the
same for page documents already loaded (what ``VisualDocumentIndex.from_documents`` uses).

Each batch of pages is one commit of the store, so a crash (even SIGKILL) at any moment leaves
only whole pages behind, and running the same ingest again completes the job: pages already
stored unchanged are recognised by their content hash and neither re-encoded nor rewritten.
A file is stored whole or not at all, also when the store fails mid-file (a full disk).
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters
from tqdm.auto import tqdm

from llama_index_vlm.encoder import ColPaliEncoder
from llama_index_vlm.errors import (
    EmptyInputError,
    InvalidPageError,
    InvalidRequestError,
    StoreError,
    UnreadableDocumentError,
    VLMError,
)
from llama_index_vlm.fingerprint import POOL_FACTOR_KEY
from llama_index_vlm.pages import doc_id_of, page_content_hash, page_image, source_of
from llama_index_vlm.reader import SUPPORTED_EXTENSIONS, PDFPageReader
from llama_index_vlm.reader.pdf_renderers import RendererNotInstalledError
from llama_index_vlm.search.pooling import hierarchical_pool
from llama_index_vlm.store import AddResult, LanceDBPageStore

if TYPE_CHECKING:  # pragma: no cover - for annotations only
    from PIL import Image

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FailedFile:
    """A file that was not indexed, and why."""

    path: str
    reason: str


@dataclass
class IngestReport:
    """What an ingest did: pages written, skipped and removed, and files that failed."""

    files: int = 0
    pages_added: int = 0
    pages_replaced: int = 0
    pages_unchanged: int = 0
    pages_removed: int = 0
    failed: list[FailedFile] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def pages_written(self) -> int:
        """Pages added or replaced."""
        return self.pages_added + self.pages_replaced

    @property
    def ok(self) -> bool:
        """True when no file failed."""
        return not self.failed

    def summary(self) -> str:
        """One line for people, e.g. ``12 pages added, 3 unchanged, 1 file failed in 4.2 s``."""
        parts = [f"{self.pages_added} pages added"]
        if self.pages_replaced:
            parts.append(f"{self.pages_replaced} replaced")
        parts.append(f"{self.pages_unchanged} unchanged")
        if self.pages_removed:
            parts.append(f"{self.pages_removed} removed")
        if self.failed:
            parts.append(f"{len(self.failed)} file{'s' if len(self.failed) != 1 else ''} failed")
        files = f"{self.files} file{'s' if self.files != 1 else ''}"
        return f"{', '.join(parts)} from {files} in {self.seconds:.1f} s"


def _page_fingerprint(
    encoder: ColPaliEncoder, store: LanceDBPageStore, pool_factor: float | None = None
) -> dict[str, Any]:
    """The fingerprint of the page vectors an ingest writes: the encoder's and the pool factor.

    ``pool_factor=None`` keeps the store's (1, no pooling, for a new store), so later ingests
    pool as the first did. Raises :class:`ModelMismatchError` if the store holds another
    encoder's vectors or vectors pooled by another factor.
    """
    if pool_factor is None:
        pool_factor = store.pool_factor
    if (
        isinstance(pool_factor, bool)
        or not isinstance(pool_factor, numbers.Real)
        or not 1 <= pool_factor < math.inf
    ):
        raise InvalidRequestError(
            f"pool_factor must be a number >= 1 (1: no pooling), not {pool_factor!r}"
        )
    pool_factor = int(pool_factor) if float(pool_factor).is_integer() else float(pool_factor)
    fingerprint = {**encoder.fingerprint, POOL_FACTOR_KEY: pool_factor}
    store.check_fingerprint(fingerprint, encoder.embedding_dim)
    return fingerprint


class _PendingPage(NamedTuple):
    """A page waiting for its batch: the file it comes from, and its content hash."""

    source: str
    node: BaseNode
    content_hash: str


_Decoded = tuple[_PendingPage, "Image.Image"]  # a page, decoded and reduced for the model


class _BatchWriter:
    """Buffers pages, encodes the ones the store lacks, and commits each batch at once."""

    def __init__(
        self,
        encoder: ColPaliEncoder,
        store: LanceDBPageStore,
        report: IngestReport,
        batch_size: int,
        progress: tqdm,
        fingerprint: dict[str, Any],
    ):
        self.encoder = encoder
        self.store = store
        self.report = report
        self.batch_size = batch_size
        self.progress = progress
        self.fingerprint = fingerprint
        self.pool_factor = float(fingerprint[POOL_FACTOR_KEY])
        self.pending: list[_PendingPage] = []
        # What this run did to each source's pages (page_id -> "added", "replaced" or
        # "unchanged"), and the (doc_id, file_path) its pages carry: what to take back, and
        # to count back, if the source later fails.
        self.outcomes_by_source: dict[str, dict[str, str]] = {}
        self.documents_by_source: dict[str, set[tuple[str, str | None]]] = {}
        self.failed_sources: set[str] = set()

    def add(self, source: str, node: BaseNode) -> None:
        if source in self.failed_sources:
            return  # the rest of a failed file is not indexed
        try:
            # What the store would refuse (no image, inconsistent page fields, text that is not
            # valid Unicode) fails this page's file here, not the batch it would share.
            digest = page_content_hash(node)
        except InvalidPageError as error:
            self.fail(source, str(error))
            return
        file_path = node.metadata.get("file_path")
        self.documents_by_source.setdefault(source, set()).add(
            (doc_id_of(node), None if file_path is None else str(file_path))
        )
        self.pending.append(_PendingPage(source, node, digest))
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Encode and store the pending pages that are not stored unchanged, in one commit."""
        batch, self.pending = self.pending, []
        if not batch:
            return
        unchanged = self._unchanged(batch)
        decoded = self._decode([page for page in batch if page.node.node_id not in unchanged])
        self._record_unchanged([page for page in batch if page.node.node_id in unchanged])
        to_write = [
            (page, image) for page, image in decoded if page.source not in self.failed_sources
        ]
        stored = not to_write or self._embed_and_store(to_write)
        self.progress.update(len(batch))
        if stored:
            self.progress.set_postfix(
                added=self.report.pages_added,
                unchanged=self.report.pages_unchanged,
                failed=len(self.report.failed),
            )

    def _unchanged(self, batch: list[_PendingPage]) -> set[str]:
        """Ids of the pages of ``batch`` the store already holds with the same content."""
        stored = self.store.page_hashes(page_ids=[page.node.node_id for page in batch])
        return {
            page.node.node_id
            for page in batch
            if stored.get(page.node.node_id) == page.content_hash
        }

    def _decode(self, pages: list[_PendingPage]) -> list[_Decoded]:
        """The images of ``pages``; a page that cannot be decoded fails its file."""
        decoded = []
        for page in pages:
            if page.source in self.failed_sources:
                continue
            try:
                # Reduced to the model's input size at once: a batch of pages at the pixel
                # limit would otherwise hold gigabytes.
                decoded.append((page, self.encoder.prepare_image(page_image(page.node))))
            except Exception as error:  # noqa: BLE001 - fails this page's file only
                number = page.node.metadata.get("page_number") or page.node.node_id
                self.fail(page.source, f"page {number}: image cannot be decoded: {error}")
        return decoded

    def _record_unchanged(self, pages: list[_PendingPage]) -> None:
        for page in pages:
            if page.source not in self.failed_sources:
                self.report.pages_unchanged += 1
                self.outcomes_by_source.setdefault(page.source, {})[page.node.node_id] = "unchanged"

    def _embed_and_store(self, to_write: list[_Decoded]) -> bool:
        """Encode (and pool) the pages and store them in one commit; False when files failed.
        A failed batch is retried file by file; a store error takes its files back and stops.
        """
        try:
            self._write(to_write)
        except VLMError as error:
            if isinstance(error, InvalidPageError):  # e.g. vectors that are not finite
                return self._retry_by_file(to_write, error)
            self._take_back(to_write, error)  # a mismatch or unwritable store concerns all
            raise
        except Exception as error:  # noqa: BLE001 - reported per file, never swallowed silently
            return self._retry_by_file(to_write, error)
        return True

    def _write(self, to_write: list[_Decoded]) -> None:
        vectors = self.encoder.embed_images([image for _, image in to_write], show_progress=False)
        if self.pool_factor > 1:
            vectors = [hierarchical_pool(page, self.pool_factor) for page in vectors]
        nodes = [page.node for page, _ in to_write]
        result = self.store.upsert_pages(nodes, vectors, fingerprint=self.fingerprint)
        self._record(result, [page for page, _ in to_write])

    def _retry_by_file(self, to_write: list[_Decoded], error: Exception) -> bool:
        """Store each file's pages of a failed batch alone; False when any file failed."""
        by_source: dict[str, list[_Decoded]] = {}
        for page, image in to_write:
            by_source.setdefault(page.source, []).append((page, image))
        if len(by_source) == 1:
            self._fail_files(to_write, error)
            return False
        results = [self._embed_and_store(pages) for pages in by_source.values()]
        return all(results)

    def _take_back(self, to_write: list[_Decoded], error: VLMError) -> None:
        """Fail the batch's files (deleting their earlier batches) or say which stay stored."""
        try:
            self._fail_files(to_write, error)
        except VLMError as cleanup_error:
            sources = sorted({page.source for page, _ in to_write})
            raise StoreError(
                f"{error}. Taking back the files of the failed batch failed too "
                f"({cleanup_error}): pages of {', '.join(sources)} may stay stored from "
                "earlier batches; run the same ingest again once the store can be written, "
                "which completes them"
            ) from error

    def _record(self, result: AddResult, written: list[_PendingPage]) -> None:
        self.report.pages_unchanged += len(result.unchanged)
        self.report.pages_added += len(result.added)
        self.report.pages_replaced += len(result.replaced)
        self.report.pages_removed += len(result.removed)
        added, replaced = set(result.added), set(result.replaced)
        for page in written:
            page_id = page.node.node_id
            outcome = (
                "added" if page_id in added else "replaced" if page_id in replaced else "unchanged"
            )
            self.outcomes_by_source.setdefault(page.source, {})[page_id] = outcome

    def _fail_files(self, to_write: list[_Decoded], error: Exception) -> None:
        # Nothing of this batch was committed: its upsert is a single commit. The files with
        # pages to write in it are not indexed; files whose pages here were all stored already
        # are not concerned.
        reason = f"embedding or storing failed: {type(error).__name__}: {error}"
        for source in dict.fromkeys(page.source for page, _ in to_write):
            self.fail(source, reason)

    def fail(self, source: str, reason: str) -> None:
        """Record ``source`` as failed and delete its stored pages: a file is indexed whole or
        not at all. That includes pages an earlier, interrupted run left of the same file,
        which this run found unchanged.
        """
        if source in self.failed_sources:
            return
        self.failed_sources.add(source)
        self.report.failed.append(FailedFile(source, reason))
        self.pending = [page for page in self.pending if page.source != source]
        stored = self._stored_pages_of(source)
        if stored:
            self.store.delete_nodes(node_ids=stored)
        self._count_back(self.outcomes_by_source.pop(source, {}), stored)
        logger.warning("not indexed: %s: %s", source, reason)

    def _stored_pages_of(self, source: str) -> list[str]:
        stored: list[str] = []
        for doc_id, file_path in sorted(
            self.documents_by_source.pop(source, set()), key=lambda pair: (pair[0], pair[1] or "")
        ):
            # The file's own rows only: the same bytes at another path share the doc_id.
            conditions = [MetadataFilter(key="doc_id", value=doc_id)]
            if file_path is not None:
                conditions.append(MetadataFilter(key="file_path", value=file_path))
            stored += self.store.page_ids(filters=MetadataFilters(filters=conditions))
        return stored

    def _count_back(self, outcomes: dict[str, str], deleted: list[str]) -> None:
        """Take the ``deleted`` pages of a failed file back out of the report's counts."""
        for page_id in deleted:
            outcome = outcomes.get(page_id)
            if outcome == "added":
                self.report.pages_added -= 1
                continue
            if outcome == "replaced":
                self.report.pages_replaced -= 1
            elif outcome == "unchanged":
                self.report.pages_unchanged -= 1
            self.report.pages_removed += 1


def ingest(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    encoder: ColPaliEncoder,
    store: LanceDBPageStore,
    *,
    reader: PDFPageReader | None = None,
    batch_size: int = 16,
    pool_factor: float | None = None,
    show_progress: bool = True,
    engine: Literal["local", "ray"] = "local",
) -> IngestReport:
    """Read, embed and store every page of the PDFs and images under ``paths``.

    Args:
        paths: files and folders (folders are walked recursively; see
            :meth:`PDFPageReader.list_files`).
        encoder: the page encoder; its fingerprint is checked against the store's first.
        store: where pages go.
        reader: how files become pages (renderer, dpi, image format); default
            ``PDFPageReader()``.
        batch_size: pages per commit (and per encoder call). Larger batches write faster;
            smaller ones lose less work to a crash.
        pool_factor: shrink each page's vectors to ``1 / pool_factor`` of their number by
            Ward token pooling (:func:`~llama_index_vlm.search.hierarchical_pool`) before
            storing them: 3 stores a third of the vectors, and searches scan a third. Default:
            the store's own (recorded with its first pages; 1, no pooling, for a new store).
        show_progress: a progress bar of pages done, with pages/s.
        engine: ``"local"`` runs in this process; ``"ray"`` renders and encodes on a Ray
            cluster, committing from here (:mod:`llama_index_vlm.distributed.ray_ingest`).

    Returns:
        An :class:`IngestReport`. A file that cannot be read (corrupted, encrypted, empty,
        mislabelled, too large...) or fails to embed is listed in ``report.failed`` with the
        reason, the other files still go in, and none of its pages is left in the store
        once it failed mid-way (neither this run's nor those an interrupted earlier run
        stored); its pages are counted back out of ``pages_added``/``pages_unchanged``, and
        pages stored before this run count as ``pages_removed``.

    Raises:
        EmptyInputError: ``paths`` holds no supported file.
        ModelMismatchError: the store holds vectors of another encoder, or pooled by another
            ``pool_factor`` (nothing is written).
        StoreError: the store could not be written (disk full, permission denied...). Files
            of earlier batches stay, those of the failed batch are taken back; run the same
            ingest again once the cause is fixed and it continues where it stopped.

    Example::

        report = ingest("reports/", encoder, LanceDBPageStore(uri="./vlm_index"))
        print(report.summary())
    """
    if engine == "ray":
        from llama_index_vlm.distributed.ray_ingest import ingest as ingest_on_ray

        return ingest_on_ray(
            paths,
            encoder,
            store,
            reader=reader,
            batch_size=batch_size,
            pool_factor=pool_factor,
            show_progress=show_progress,
        )
    if engine != "local":
        raise ValueError(f"engine must be 'local' or 'ray', not {engine!r}")
    started = time.perf_counter()
    reader = reader or PDFPageReader()
    files = reader.list_files(paths)
    if not files:
        raise EmptyInputError(
            f"no PDF or image files ({', '.join(sorted(SUPPORTED_EXTENSIONS))}) under {paths!r}"
        )
    fingerprint = _page_fingerprint(encoder, store, pool_factor)
    report = IngestReport(files=len(files))
    readable, total_pages = _count_pages(reader, files, report)
    with tqdm(
        total=total_pages, desc="Indexing", unit="page", disable=not show_progress
    ) as progress:
        writer = _BatchWriter(encoder, store, report, batch_size, progress, fingerprint)
        for path in readable:
            _read_into(writer, reader, path)
        writer.flush()
    store.compact_if_needed()  # after a large ingest or many files taken back
    _update_fast_index(store, report)
    report.seconds = time.perf_counter() - started
    return report


def _count_pages(
    reader: PDFPageReader, files: list[Path], report: IngestReport
) -> tuple[list[Path], int]:
    """The files whose pages can be counted, and their total; the others fail in ``report``."""
    readable: list[Path] = []
    total_pages = 0
    for path in files:
        try:
            total_pages += reader.count_pages(path)
            readable.append(path)
        except RendererNotInstalledError:
            raise  # the setup's problem, not this file's: every file would fail
        except Exception as error:  # noqa: BLE001 - one file's failure never stops the run
            reason = f"cannot be read ({type(error).__name__}: {error})"
            if isinstance(error, UnreadableDocumentError):
                reason = error.reason
            report.failed.append(FailedFile(str(path), reason))
            logger.warning("not indexed: %s: %s", path, reason)
    return readable, total_pages


def _read_into(writer: _BatchWriter, reader: PDFPageReader, path: Path) -> None:
    """Give ``writer`` the pages of one file; a file that fails mid-way is taken back."""
    try:
        for document in reader.read_file(path):
            writer.add(str(path), document)
            if str(path) in writer.failed_sources:
                break  # e.g. its batch failed to embed: render no more of it
    except UnreadableDocumentError as error:
        writer.fail(str(path), error.reason)
    except (VLMError, RendererNotInstalledError):
        raise  # the store or the setup failed (every file would): stop
    except Exception as error:  # noqa: BLE001 - one file's failure never stops the run
        writer.fail(str(path), f"cannot be read ({type(error).__name__}: {error})")


def ingest_documents(
    documents: Sequence[BaseNode] | Iterable[BaseNode],
    encoder: ColPaliEncoder,
    store: LanceDBPageStore,
    *,
    batch_size: int = 16,
    pool_factor: float | None = None,
    show_progress: bool = True,
) -> IngestReport:
    """Embed and store page documents already loaded (e.g. by :class:`PDFPageReader`).

    Same batching, pooling, skipping of unchanged pages and atomic commits as :func:`ingest`. A
    document whose image cannot be decoded fails its source file (``metadata["file_path"]``,
    or the document id) and is reported, like an unreadable file.
    """
    started = time.perf_counter()
    fingerprint = _page_fingerprint(encoder, store, pool_factor)
    documents = list(documents)
    report = IngestReport(files=len({source_of(document) for document in documents}))
    with tqdm(
        total=len(documents), desc="Indexing", unit="page", disable=not show_progress
    ) as progress:
        writer = _BatchWriter(encoder, store, report, batch_size, progress, fingerprint)
        for document in documents:
            if source_of(document) not in writer.failed_sources:
                writer.add(source_of(document), document)
        writer.flush()
    store.compact_if_needed()  # after a large ingest or many files taken back
    _update_fast_index(store, report)
    report.seconds = time.perf_counter() - started
    return report


def _update_fast_index(store: LanceDBPageStore, report: IngestReport) -> None:
    """Bring the fast index saved beside a store big enough for fast search up to date, so
    the next search process pools nothing (only the pages this run wrote are pooled)."""
    from llama_index_vlm.retriever.page_caches import FastPageCache
    from llama_index_vlm.search import FAST_MODE_MIN_PAGES

    if report.pages_written and store.count() >= FAST_MODE_MIN_PAGES:
        FastPageCache(store).refresh(store.version)
