"""Ingestion: read files into pages, embed them, and store them in atomic batches.

:func:`ingest` is the one entry point for files and folders; :func:`ingest_documents` does the
same for page documents already loaded (what ``VisualDocumentIndex.from_documents`` uses).

Each batch of pages is one commit of the store, so a crash (even SIGKILL) at any moment leaves
only whole pages behind, and running the same ingest again completes the job: pages already
stored unchanged are recognised by their content hash and neither re-encoded nor rewritten.
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
from typing import Any

from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters
from tqdm.auto import tqdm

from llama_index_vlm.encoder import ColPaliEncoder
from llama_index_vlm.errors import (
    EmptyInputError,
    InvalidPageError,
    UnreadableDocumentError,
    VLMError,
)
from llama_index_vlm.fingerprint import POOL_FACTOR_KEY
from llama_index_vlm.pages import doc_id_of, page_content_hash, page_image, source_of
from llama_index_vlm.reader import SUPPORTED_EXTENSIONS, PDFPageReader
from llama_index_vlm.search.pooling import hierarchical_pool
from llama_index_vlm.store import LanceDBPageStore

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
        raise ValueError(f"pool_factor must be a number >= 1 (1: no pooling), not {pool_factor!r}")
    pool_factor = int(pool_factor) if float(pool_factor).is_integer() else float(pool_factor)
    fingerprint = {**encoder.fingerprint, POOL_FACTOR_KEY: pool_factor}
    store.check_fingerprint(fingerprint, encoder.embedding_dim)
    return fingerprint


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
        self.pending: list[tuple[str, BaseNode]] = []
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
            page_content_hash(node)
        except InvalidPageError as error:
            self.fail(source, str(error))
            return
        file_path = node.metadata.get("file_path")
        self.documents_by_source.setdefault(source, set()).add(
            (doc_id_of(node), None if file_path is None else str(file_path))
        )
        self.pending.append((source, node))
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        unchanged = self.store.unchanged_page_ids([node for _, node in batch])
        decoded = []
        for source, node in batch:
            if node.node_id in unchanged or source in self.failed_sources:
                continue
            try:
                decoded.append((source, node, page_image(node)))
            except Exception as error:  # noqa: BLE001 - fails this page's file only
                page = node.metadata.get("page_number") or node.node_id
                self.fail(source, f"page {page}: image cannot be decoded: {error}")
        to_write = [
            (source, node) for source, node, _ in decoded if source not in self.failed_sources
        ]
        images = [image for source, _, image in decoded if source not in self.failed_sources]
        for source, node in batch:
            if node.node_id in unchanged and source not in self.failed_sources:
                self.report.pages_unchanged += 1
                self.outcomes_by_source.setdefault(source, {})[node.node_id] = "unchanged"
        try:
            if to_write:
                vectors = self.encoder.embed_images(images, show_progress=False)
                if self.pool_factor > 1:
                    vectors = [hierarchical_pool(page, self.pool_factor) for page in vectors]
                result = self.store.upsert_pages(
                    [node for _, node in to_write], vectors, fingerprint=self.fingerprint
                )
            else:
                result = None
        except InvalidPageError as error:  # e.g. vectors that are not finite: their files fail
            self._fail_files(to_write, batch, error)
            return
        except VLMError:
            raise  # a model mismatch, bad configuration or unwritable store concerns all: stop
        except Exception as error:  # noqa: BLE001 - reported per file, never swallowed silently
            self._fail_files(to_write, batch, error)
            return
        if result is not None:
            self.report.pages_unchanged += len(result.unchanged)
            self.report.pages_added += len(result.added)
            self.report.pages_replaced += len(result.replaced)
            self.report.pages_removed += len(result.removed)
            added, replaced = set(result.added), set(result.replaced)
            for source, node in to_write:
                outcome = (
                    "added"
                    if node.node_id in added
                    else "replaced"
                    if node.node_id in replaced
                    else "unchanged"
                )
                self.outcomes_by_source.setdefault(source, {})[node.node_id] = outcome
        self.progress.update(len(batch))
        self.progress.set_postfix(
            added=self.report.pages_added,
            unchanged=self.report.pages_unchanged,
            failed=len(self.report.failed),
        )

    def _fail_files(
        self, to_write: list[tuple[str, BaseNode]], batch: list, error: Exception
    ) -> None:
        # Nothing of this batch was committed: its upsert is a single commit. The files with
        # pages to write in it are not indexed; files whose pages here were all stored already
        # are not concerned.
        reason = f"embedding or storing failed: {type(error).__name__}: {error}"
        for source in dict.fromkeys(source for source, _ in to_write):
            self.fail(source, reason)
        self.progress.update(len(batch))

    def fail(self, source: str, reason: str) -> None:
        """Record ``source`` as failed and delete its stored pages: a file is indexed whole or
        not at all. That includes pages an earlier, interrupted run left of the same file,
        which this run found unchanged.
        """
        if source in self.failed_sources:
            return
        self.failed_sources.add(source)
        self.report.failed.append(FailedFile(source, reason))
        self.pending = [(s, node) for s, node in self.pending if s != source]
        outcomes = self.outcomes_by_source.pop(source, {})
        stored: list[str] = []
        for doc_id, file_path in sorted(
            self.documents_by_source.pop(source, set()), key=lambda pair: (pair[0], pair[1] or "")
        ):
            # The file's own rows only: the same bytes at another path share the doc_id.
            conditions = [MetadataFilter(key="doc_id", value=doc_id)]
            if file_path is not None:
                conditions.append(MetadataFilter(key="file_path", value=file_path))
            stored += self.store.page_ids(filters=MetadataFilters(filters=conditions))
        if stored:
            self.store.delete_nodes(node_ids=stored)
        for page_id in stored:
            outcome = outcomes.get(page_id)
            if outcome == "added":
                self.report.pages_added -= 1
                continue
            if outcome == "replaced":
                self.report.pages_replaced -= 1
            elif outcome == "unchanged":
                self.report.pages_unchanged -= 1
            self.report.pages_removed += 1
        logger.warning("not indexed: %s: %s", source, reason)


def ingest(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    encoder: ColPaliEncoder,
    store: LanceDBPageStore,
    *,
    reader: PDFPageReader | None = None,
    batch_size: int = 16,
    pool_factor: float | None = None,
    show_progress: bool = True,
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
        StoreError: the store could not be written (disk full, permission denied...). The
            batches committed before stay; run the same ingest again once the cause is fixed
            and it continues where it stopped.

    Example::

        report = ingest("reports/", encoder, LanceDBPageStore(uri="./vlm_index"))
        print(report.summary())
    """
    started = time.perf_counter()
    reader = reader or PDFPageReader()
    files = reader.list_files(paths)
    if not files:
        raise EmptyInputError(
            f"no PDF or image files ({', '.join(sorted(SUPPORTED_EXTENSIONS))}) under {paths!r}"
        )
    fingerprint = _page_fingerprint(encoder, store, pool_factor)
    report = IngestReport(files=len(files))
    readable: list[Path] = []
    total_pages = 0
    for path in files:
        try:
            total_pages += reader.count_pages(path)
            readable.append(path)
        except UnreadableDocumentError as error:
            report.failed.append(FailedFile(str(path), error.reason))
            logger.warning("not indexed: %s: %s", path, error.reason)
    with tqdm(
        total=total_pages, desc="Indexing", unit="page", disable=not show_progress
    ) as progress:
        writer = _BatchWriter(encoder, store, report, batch_size, progress, fingerprint)
        for path in readable:
            try:
                for document in reader.read_file(path):
                    writer.add(str(path), document)
                    if str(path) in writer.failed_sources:
                        break  # e.g. its batch failed to embed: render no more of it
            except UnreadableDocumentError as error:
                writer.fail(str(path), error.reason)
        writer.flush()
    report.seconds = time.perf_counter() - started
    return report


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
    report.seconds = time.perf_counter() - started
    return report
