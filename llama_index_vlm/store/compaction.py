"""Compaction: deleted and replaced pages give their disk space back, without breaking readers.

Lance never rewrites a file in place: a delete only marks rows deleted, every write adds files,
and every version stays readable until it is cleaned up, so a store whose pages were all
deleted still holds every byte it ever held. :func:`compact_table` rewrites the table's files
without the deleted rows (merging small files on the way), then removes the versions that
stopped being the latest more than ``grace`` ago, and the files only they used.

Why a grace period: a query in flight reads the version that was the latest when it began,
and a retriever's cache reads at its version; removing that version's files under it would
fail the query. A version is kept for ``grace`` after a newer one replaced it, however old the
version itself is (Lance's own cleanup counts from a version's creation, which would remove a
week-old version that was the latest a second ago). ``grace=timedelta(0)`` keeps only the
latest version: use it only when nothing else reads or writes the store.

Compaction also keeps a B-tree index on ``page_id`` (:func:`ensure_page_id_index`): deletes,
writes that replace pages and reads by id with filters are ``page_id IN (...)`` lookups, which
without the index scan the whole column. Reading 10 pages' nodes that way took 21.9 ms at 100k
pages without it and 8.7 ms with it (9.2 and 7.0 ms at 10k; benchmarks/RESULTS.md). Reads by
id at a version whose row addresses a retriever's refresh read take rows by address instead
(:meth:`PageTable.read_pages`). Rows written
since the index was last updated are found by a scan of those rows only, and each compaction's
``optimize`` folds them in.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from lancedb.index import BTree

from llama_index_vlm.store.table import PageTable

logger = logging.getLogger(__name__)

#: How long a version stays readable after a newer one replaced it, by default.
DEFAULT_GRACE = timedelta(minutes=10)
#: Versions created this long before the oldest version that must stay are kept too, so the
#: cleanup, which computes its cut-off a moment later, never reaches that version.
_SAFETY = timedelta(seconds=5)
#: Long enough that a cleanup removes nothing: compaction alone.
_NO_CLEANUP = timedelta(days=365 * 100)
#: The fragments at which the pages written since the last compaction make one worth it.
AUTO_COMPACT_FRAGMENTS = 16
#: The column with a B-tree index kept by compaction.
PAGE_ID_INDEX = "page_id"


@dataclass(frozen=True)
class CompactionReport:
    """What :meth:`LanceDBPageStore.compact` did.

    Attributes:
        bytes_before: bytes on disk before (None for a remote store).
        bytes_after: bytes on disk after (None for a remote store).
        versions_before: table versions kept before.
        versions_after: table versions kept after.
        fragments_before: data fragments of the latest version before.
        fragments_after: data fragments of the latest version after.
        grace: how long replaced versions were kept for.
    """

    bytes_before: int | None
    bytes_after: int | None
    versions_before: int
    versions_after: int
    fragments_before: int
    fragments_after: int
    grace: timedelta = DEFAULT_GRACE

    @property
    def bytes_reclaimed(self) -> int | None:
        """Bytes freed on disk (None for a remote store)."""
        if self.bytes_before is None or self.bytes_after is None:
            return None
        return max(0, self.bytes_before - self.bytes_after)

    def summary(self) -> str:
        """What was done, for people: space reclaimed, versions removed and kept."""
        reclaimed = self.bytes_reclaimed
        size = "space unknown (remote store)" if reclaimed is None else _mib(reclaimed)
        after = "" if self.bytes_after is None else f", {_mib(self.bytes_after)} on disk"
        removed = self.versions_before - self.versions_after
        line = f"reclaimed {size}{after}: {removed} old versions removed"
        if self.fragments_after != self.fragments_before:
            line += f", {self.fragments_before} data fragments merged into {self.fragments_after}"
        kept = self.versions_after - 1
        if kept > 0:
            line += (
                f"; {kept} version(s) replaced less than {_duration(self.grace)} ago are kept "
                "for queries in flight and freed by a later compaction (or now with a grace "
                "of 0, when nothing else uses the store)"
            )
        return line


class CompactingStore:
    """The page store's compaction methods (a mixin of
    :class:`~llama_index_vlm.store.LanceDBPageStore`, which has ``_pages``, ``auto_compact``).
    """

    def optimize(self, cleanup_older_than: timedelta | None = None) -> None:
        """Compact small files and drop versions older than ``cleanup_older_than``; prefer
        :meth:`compact`. Do not run this while another process is adding.
        """
        table = self._pages.open()
        if table is not None:
            with self._pages.writing():
                ensure_page_id_index(table)
                table.optimize(cleanup_older_than=cleanup_older_than)

    def compact(self, grace: timedelta = DEFAULT_GRACE) -> CompactionReport:
        """Give the disk space of deleted and replaced pages back, and report how much.

        Rewrites the table's files without the deleted rows (merging small ones), then removes
        the versions replaced by a newer one more than ``grace`` ago, with the files only they
        used. Safe while queries run, in this process or others: the version a query reads
        stays for ``grace`` after it was replaced. ``grace=timedelta(0)`` keeps only the
        latest version; use it only when nothing else reads or writes the store.

        Example:
            >>> print(store.compact().summary())                       # doctest: +SKIP
            reclaimed 396.0 MiB, 0.0 MiB on disk: 101 old versions removed

        Raises:
            StoreError: LanceDB could not rewrite or remove files (the store stays readable).
        """
        return compact_pages(self._pages, grace)

    def compact_if_needed(self) -> CompactionReport | None:
        """:meth:`compact` when :func:`worth_compacting` says so, unless ``auto_compact`` is
        off; called after deletes and at the end of an ingest. A failure is logged, never
        raised.
        """
        return compact_pages_if_needed(self._pages) if self.auto_compact else None


def compact_pages(pages: PageTable, grace: timedelta = DEFAULT_GRACE) -> CompactionReport:
    """:func:`compact_table` on a page table, under its write lock; an empty report before the
    table exists.
    """
    table = pages.open()
    if table is None:
        return CompactionReport(None, None, 0, 0, 0, 0, grace)
    with pages.writing():
        report = compact_table(table, grace)
        pages.rows_deleted = pages.rows_written = 0
    return report


def compact_pages_if_needed(pages: PageTable) -> CompactionReport | None:
    """:func:`compact_pages` when :func:`worth_compacting` says so; a failure is logged as a
    warning and never raised (compaction is housekeeping: it must not fail a write).
    """
    table = pages.open()
    if table is None:
        return None
    try:
        if not worth_compacting(table, pages.rows_deleted, pages.rows_written):
            return None
        report = compact_pages(pages)
    except Exception as error:  # noqa: BLE001 - logged; the store stays as it was
        logger.warning(
            "automatic compaction of the page store at %s failed (%s); run "
            "`llama-index-vlm compact` later",
            pages.uri,
            error,
        )
        return None
    logger.info("compacted the page store at %s: %s", pages.uri, report.summary())
    return report


def compact_table(table: Any, grace: timedelta = DEFAULT_GRACE) -> CompactionReport:
    """Rewrite ``table``'s files without deleted rows, and remove the versions that stopped
    being the latest more than ``grace`` ago (see the module's documentation).
    """
    if grace < timedelta(0):
        raise ValueError(f"grace must not be negative, not {grace}")
    path = _local_path(table)
    bytes_before, versions_before = disk_bytes(path), len(table.list_versions())
    fragments_before = _fragments(table)
    ensure_page_id_index(table)
    table.optimize(cleanup_older_than=_NO_CLEANUP)  # also folds new rows into the indexes
    _cleanup(table, _cleanup_age(table.list_versions(), grace))
    table.checkout_latest()
    return CompactionReport(
        bytes_before,
        disk_bytes(path),
        versions_before,
        len(table.list_versions()),
        fragments_before,
        _fragments(table),
        grace,
    )


def ensure_page_id_index(table: Any) -> bool:
    """Create the B-tree index on ``page_id`` unless ``table`` has one (a commit); True if
    created. Call it under the store's write lock. A failure is logged, not raised: lookups by
    id stay correct without the index, only slower.
    """
    try:
        if any(PAGE_ID_INDEX in index.columns for index in table.list_indices()):
            return False
        if not table.count_rows():
            return False
        table.create_index(PAGE_ID_INDEX, config=BTree())
    except Exception as error:  # noqa: BLE001 - an optimisation: the table stays as it was
        logger.warning("no page_id index on the page store (%s); lookups by id scan", error)
        return False
    return True


def worth_compacting(table: Any, rows_deleted: int, rows_written: int) -> bool:
    """Whether compacting ``table`` is worth its cost after ``rows_deleted`` rows were deleted
    (or replaced) and ``rows_written`` written since the last compaction.

    Worth it when the deleted rows are a quarter of the stored rows, or when the written rows
    are half of them and the table has split into :data:`AUTO_COMPACT_FRAGMENTS` fragments or
    more. Compaction rewrites the table, so each rewrite follows at least that much new work
    and the cost of automatic compaction stays proportional to the work done.
    """
    stats = table.stats()
    rows, fragments = stats["num_rows"], stats["fragment_stats"]["num_fragments"]
    if rows_deleted and 4 * rows_deleted >= rows:
        return True
    return bool(rows_written) and 2 * rows_written >= rows and fragments >= AUTO_COMPACT_FRAGMENTS


def _cleanup(table: Any, older_than: timedelta) -> None:
    with warnings.catch_warnings():
        # LanceDB warns that cleanup_older_than=0 breaks concurrent readers: the caller asked
        # for exactly that (grace=0), and the documentation says when it is safe.
        warnings.simplefilter("ignore", UserWarning)
        table.optimize(cleanup_older_than=older_than)


def _cleanup_age(versions: list[dict[str, Any]], grace: timedelta) -> timedelta:
    """The ``cleanup_older_than`` that removes exactly the versions replaced by a newer one
    more than ``grace`` ago (and keeps a few seconds more, for safety).

    >>> t = datetime(2026, 1, 1)
    >>> versions = [{"version": n, "timestamp": t + timedelta(minutes=n)} for n in (1, 2, 3)]
    >>> _cleanup_age(versions, timedelta(0))
    datetime.timedelta(0)
    """
    if grace == timedelta(0):
        return timedelta(0)
    ordered = sorted(versions, key=lambda version: version["version"])
    timestamps = [version["timestamp"] for version in ordered]
    now = datetime.now(timestamps[-1].tzinfo)
    keep_from = timestamps[-1]
    for created, replaced_at in zip(timestamps, timestamps[1:], strict=False):
        if now - replaced_at < grace:
            keep_from = created
            break
    return max(timedelta(0), now - keep_from + _SAFETY)


def _fragments(table: Any) -> int:
    return int(table.stats()["fragment_stats"]["num_fragments"])


def _local_path(table: Any) -> str | None:
    uri = str(table.uri)
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return uri if "://" not in uri and os.path.isdir(uri) else None


def disk_bytes(path: str | None) -> int | None:
    """Bytes of the files under the local directory ``path``; None for None."""
    if path is None:
        return None
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(folder, name))
            except OSError:
                continue  # removed meanwhile by a concurrent cleanup
    return total


def _mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB"


def _duration(grace: timedelta) -> str:
    seconds = grace.total_seconds()
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
