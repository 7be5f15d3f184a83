"""The LanceDB table behind a page store: opening, creating, snapshots and atomic writes.

:class:`PageTable` knows LanceDB and nothing of LlamaIndex: it opens the table when it exists
(refusing one that is not a page table), creates it on the first write, checks fingerprints
against it, and commits each write (new and changed pages, minus the stale ones) as one
``merge_insert`` under a lock, reporting a failed write as
:class:`~llama_index_vlm.errors.StoreError`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pyarrow as pa

from llama_index_vlm.errors import StoreError
from llama_index_vlm.fingerprint import check_compatible
from llama_index_vlm.store.object_storage import storage_error, storage_errors
from llama_index_vlm.store.queries import select, select_pages
from llama_index_vlm.store.row_takes import lance_dataset, take_rows
from llama_index_vlm.store.rows import PreparedPage, stale_condition, to_arrow
from llama_index_vlm.store.schema import (
    VECTOR_COLUMN,
    VectorDType,
    check_page_table,
    fingerprint_metadata,
    page_schema,
    schema_dim,
    schema_dtype,
    schema_fingerprint,
)


def _checks_every_read(connection: Any) -> bool:
    """Whether ``connection`` looks for other processes' commits at every read (LanceDB's
    ``read_consistency_interval`` of 0)."""
    interval = getattr(connection, "read_consistency_interval", None)
    return isinstance(interval, timedelta) and interval == timedelta(0)


class PageTable:
    """One page table of a LanceDB connection, opened lazily and created by the first write.

    Args:
        connection: the LanceDB connection.
        name: the table's name.
        uri: where the connection points (for messages).
        vector_dtype: how a table created here stores its vectors.
    """

    def __init__(self, connection: Any, name: str, uri: str, vector_dtype: VectorDType):
        self.connection = connection
        self.name = name
        self.uri = uri
        self.vector_dtype = vector_dtype
        self._table: Any | None = None
        self._lock = threading.RLock()
        #: Guards the read caches below (never held across a write, unlike ``_lock``).
        self._read_lock = threading.Lock()
        #: ``(version, handle checked out at it)`` of the last snapshot asked for
        self._snapshot: tuple[int, Any] | None = None
        #: ``(version, its Lance dataset or None)``: reads by row address take rows from it
        self._dataset: tuple[int, Any | None] | None = None
        #: ``(version, page_id -> _rowid at it)`` of the last version :meth:`read_all` read
        self._rows: tuple[int, dict[str, int]] | None = None
        #: The Lance dataset :meth:`version` lists the latest version from (False: none can
        #: be had; None: not looked for yet)
        self._versions_dataset: Any = None
        #: Rows this object deleted or replaced, and rows it wrote, since it last compacted
        #: the table: what makes an automatic compaction worth its cost.
        self.rows_deleted = 0
        self.rows_written = 0
        #: Called after each delete that removed rows (the store's automatic compaction).
        self.after_delete: Callable[[], Any] | None = None

    def open(self) -> Any | None:
        """The LanceDB table, or None while it does not exist.

        Raises:
            StoreError: a table of that name exists but is not a page table.
        """
        if self._table is not None:
            return self._table
        try:
            with storage_errors(self.uri):
                table = self.connection.open_table(self.name)
        except (ValueError, FileNotFoundError):
            # Not created yet (or a creation killed before its first commit, which LanceDB
            # also reports as not found): the first write creates it.
            return None
        check_page_table(table.schema, self.name, self.uri)
        self._table = table
        return table

    def version(self) -> int:
        """The table's current version (0 before it exists): the latest one committed, by any
        process, where the connection checks for other processes' commits at every read
        (``read_consistency_interval`` 0, the store's default); the table handle's otherwise.

        A retriever reads it at every query. LanceDB's ``Table.version`` loads the latest
        manifest for it, through LanceDB's one background event-loop thread, which query
        threads then wait on in turn: 254 us a read at 10k pages, 5,500 reads a second from 8
        threads. The Lance dataset behind the table lists the latest version number without
        that thread: 31 us, 44,000 a second (``benchmarks/retriever_fast.py
        --compare-version-reads``, ``benchmarks/RESULTS.md``). Where no dataset can be had, or
        the listing fails, LanceDB answers as before.
        """
        table = self.open()
        if table is None:
            return 0
        if _checks_every_read(self.connection):
            dataset = self._dataset_for_versions(table)
            if dataset is not None:
                try:
                    return int(dataset.latest_version)
                except Exception:  # noqa: BLE001 - a storage error: LanceDB answers, or raises
                    pass
        return int(table.version)

    def _dataset_for_versions(self, table: Any) -> Any | None:
        """The Lance dataset :meth:`version` lists versions from, opened at the first call."""
        with self._read_lock:
            dataset = self._versions_dataset
        if dataset is None:
            dataset = lance_dataset(table)
            with self._read_lock:
                self._versions_dataset = False if dataset is None else dataset
        return None if dataset is False else dataset

    def snapshot(self, version: int | None) -> Any | None:
        """The table, or a separate handle fixed at ``version`` (consistent multi-call reads).

        The handle of the last version asked for is kept: a retriever reads at one version
        until the table changes, and opening a handle costs LanceDB round trips.
        """
        table = self.open()
        if version is None:
            return table
        if table is None:
            raise StoreError(f"table {self.name!r} has no version {version}")
        with self._read_lock:
            if self._snapshot is not None and self._snapshot[0] == version:
                return self._snapshot[1]
        snapshot = self.connection.open_table(self.name)
        snapshot.checkout(version)
        with self._read_lock:
            self._snapshot = (version, snapshot)
        return snapshot

    def read_pages(
        self, page_ids: Sequence[str], columns: list[str], version: int | None = None
    ) -> pa.Table | None:
        """``columns`` of the stored pages among ``page_ids`` at ``version`` (the current one
        if None), in no particular order; ids not stored are left out. None: no table yet.

        When every page's row address at that version is known (:meth:`read_all` read them:
        a retriever's refresh does at each new version), the rows are taken by address: at
        10k pages in 51 fragments, 10 pages' nodes in 3.6 ms instead of 6.0
        (benchmarks/RESULTS.md), and from the Lance dataset itself where pylance can open it
        (:mod:`~llama_index_vlm.store.row_takes`: 0.97 ms instead of 2.7). Otherwise they are
        looked up by ``page_id IN (...)``, which the page_id index serves once the table is
        compacted: reading every address first would cost a scan of the whole table per
        version (about 1.5 s at 1M pages).
        """
        table = self.open()
        if table is None:
            return None
        if version is None:
            version = self.version()
        snapshot = self.snapshot(version)
        with self._read_lock:
            row_ids = self._rows[1] if self._rows is not None and self._rows[0] == version else None
        if row_ids is None:
            return select_pages(snapshot, columns, page_ids=page_ids)
        wanted = [row_ids[page_id] for page_id in dict.fromkeys(page_ids) if page_id in row_ids]
        if not wanted:
            return snapshot.schema.empty_table().select(columns)
        taken = take_rows(self._dataset_at(version, snapshot), wanted, columns)
        if taken is not None:
            return taken
        return snapshot.take_row_ids(wanted).select(columns).to_arrow()

    def _dataset_at(self, version: int, snapshot: Any) -> Any | None:
        """The Lance dataset of ``snapshot`` (at ``version``), opened once per version."""
        with self._read_lock:
            if self._dataset is not None and self._dataset[0] == version:
                return self._dataset[1]
        dataset = lance_dataset(snapshot)
        with self._read_lock:
            self._dataset = (version, dataset)
        return dataset

    def read_all(self, columns: list[str], version: int) -> pa.Table:
        """``columns`` (``page_id`` among them) of every row at ``version``, plus ``_rowid``.

        The pages' row addresses are kept for :meth:`read_pages` at that version (one
        version at a time): a retriever's refresh reads every page's hash at each new version,
        and its reads by id then take rows by address.
        """
        rows = select(self.snapshot(version), columns, None, with_row_ids=True)
        row_ids = dict(
            zip(rows.column("page_id").to_pylist(), rows.column("_rowid").to_pylist(), strict=True)
        )
        with self._read_lock:
            self._rows = (version, row_ids)
        return rows

    def check(self, fingerprint: dict[str, Any] | None, dim: int | None = None) -> None:
        """Refuse vectors from ``fingerprint`` (or of ``dim`` dimensions) for this table
        (:func:`~llama_index_vlm.fingerprint.check_compatible`).
        """
        table = self.open()
        schema = None if table is None else table.schema
        check_compatible(
            fingerprint,
            dim,
            stored=None if schema is None else schema_fingerprint(schema),
            stored_dim=None if schema is None else schema_dim(schema),
            table=f"table {self.name!r} at {self.uri!r}",
        )

    # ------------------------------------------------------------------ writing

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the write lock, and report a failed LanceDB write as :class:`StoreError`.

        LanceDB raises ``RuntimeError`` (``lance error: LanceError(IO): ...``) or ``OSError``
        when the disk is full, a file cannot be written or a commit conflict outlasts its
        retries. Lance publishes a version only after all of its files are written, so the
        store still shows the last committed version and the same call can simply be retried.
        """
        with self._lock:
            try:
                yield
            except (OSError, RuntimeError) as error:
                unreachable = storage_error(error, self.uri)
                if unreachable is not None:
                    raise unreachable from error
                raise StoreError(
                    f"writing to the page store at {self.uri!r} failed ({error}); nothing of "
                    "this call was committed and the store still holds its last committed "
                    "version. Free disk space or fix permissions, then run it again (pages "
                    "already stored are skipped)"
                ) from error

    def for_write(self, dim: int, fingerprint: dict[str, Any] | None) -> Any:
        """The table, created if need be, once vectors from ``fingerprint`` of ``dim``
        dimensions are known to fit it. Call it inside :meth:`writing`.
        """
        self.check(fingerprint, dim)
        table = self.open()
        if table is not None:
            return table
        schema = page_schema(dim, self.vector_dtype, fingerprint)
        try:
            table = self.connection.create_table(self.name, schema=schema)
        except ValueError:
            # Another process created it since we looked: open it as it is and check it like
            # any existing table. (Not exist_ok=True: LanceDB then compares schemas, and a
            # stored JSON column never equals pa.json_, so this would fail.)
            table = self.connection.open_table(self.name)
        check_page_table(table.schema, self.name, self.uri)
        self._table = table
        self.check(fingerprint, dim)
        return table

    def commit(
        self,
        pages: list[PreparedPage],
        to_write: list[PreparedPage],
        fingerprint: dict[str, Any] | None,
    ) -> tuple[list[str], int]:
        """Write ``to_write`` and delete the stored pages that ``pages`` make stale, in one
        commit (none when there is nothing to do): ``(removed page ids, table version)``.

        Call it inside :meth:`writing`, after :meth:`for_write`.
        """
        table = self.open()
        removed, stale_where = self._stale_pages(table, pages)
        if not to_write and stale_where is None:
            return removed, int(table.version)
        self._adopt_fingerprint(table, fingerprint)
        version = self._write(table, to_write, stale_where)
        self.rows_written += len(to_write)
        self.rows_deleted += len(removed)
        return removed, version

    def delete_where(self, where: str) -> None:
        """Delete the rows matching the SQL ``where`` in one commit (none if none match)."""
        table = self.open()
        if table is None:
            return
        with self.writing():
            # Deleting nothing would still commit an empty version and make every retriever
            # cache look stale, so count first.
            count = table.count_rows(where)
            if count == 0:
                return
            table.delete(where)
            self.rows_deleted += count
        if self.after_delete is not None:
            self.after_delete()

    @staticmethod
    def _stale_pages(table: Any, pages: list[PreparedPage]) -> tuple[list[str], str | None]:
        """The stored pages that ``pages`` make obsolete, and the SQL that selects them (None
        when there are none), to delete in the same commit.
        """
        where = stale_condition(pages)
        if where is None:
            return [], None
        removed = select(table, ["page_id"], where).column("page_id").to_pylist()
        return removed, where if removed else None

    @staticmethod
    def _adopt_fingerprint(table: Any, fingerprint: dict[str, Any] | None) -> None:
        if fingerprint is not None and schema_fingerprint(table.schema) is None:
            # A table made without a fingerprint adopts the first one given. This is a commit
            # of its own, before the data: a crash in between leaves no pages half written,
            # only the fingerprint recorded.
            table.update_field_metadata(
                {"path": VECTOR_COLUMN, "metadata": fingerprint_metadata(fingerprint)}
            )

    @staticmethod
    def _write(table: Any, to_write: list[PreparedPage], stale_where: str | None) -> int:
        if not to_write:
            table.delete(stale_where)
            return int(table.version)
        dim = int(to_write[0].vectors.shape[1])
        data = to_arrow(to_write, page_schema(dim, schema_dtype(table.schema)))
        merge = (
            table.merge_insert("page_id")
            # The condition repeats our own check, so a page rewritten by another process
            # since we looked is not overwritten with identical content.
            .when_matched_update_all(where="target.content_hash <> source.content_hash")
            .when_not_matched_insert_all()
            # Joined through compaction's page_id index, LanceDB 0.40 panics on the JSON
            # metadata column ("expected Utf8 got LargeBinary"): join by scan, as before it.
            .use_index(False)
        )
        if stale_where is not None:
            merge = merge.when_not_matched_by_source_delete(stale_where)
        return int(merge.execute(data).version)
