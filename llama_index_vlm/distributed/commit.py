"""The write stage of a Ray ingest, on the driver: whole files, committed with the store's upsert.

Workers render and encode; only the driver writes. It gathers the rows of each file until it
holds all of them (a file's rows may come back in any order, interleaved with other files',
and a retried task may send a row twice: rows are keyed by page id), then commits complete
files in one :meth:`~llama_index_vlm.store.LanceDBPageStore.upsert_pages` call of at least
``batch_size`` pages. So a file is stored whole or not at all, pages already stored unchanged
are skipped, and a killed worker or driver loses no committed page: re-running finishes the job.
"""

from __future__ import annotations

import logging
from typing import Any

from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

from llama_index_vlm.distributed.rows import row_document, row_vectors
from llama_index_vlm.errors import InvalidPageError, VLMError
from llama_index_vlm.ingestion import FailedFile, IngestReport

logger = logging.getLogger(__name__)

Row = dict[str, Any]


class FileCommitter:
    """Collects each file's rows and commits complete files, recording what happened in
    ``report``.

    Call :meth:`take` with every row the pipeline returns, then :meth:`finish`.
    """

    def __init__(
        self,
        store: Any,
        fingerprint: dict[str, Any],
        report: IngestReport,
        batch_size: int,
    ):
        self.store = store
        self.fingerprint = fingerprint
        self.report = report
        self.batch_size = batch_size
        self.rows_by_source: dict[str, dict[str, Row]] = {}
        self.finished: set[str] = set()
        self.ready: list[tuple[str, list[Row]]] = []
        self.ready_pages = 0

    def take(self, row: Row) -> None:
        """Take one row of the pipeline; commit when complete files hold ``batch_size`` pages."""
        source = row["source"]
        if source in self.finished:
            return  # a duplicate from a retried task, or the rest of a failed file
        if row["error"]:
            rows = self.rows_by_source.pop(source, {})
            self.finished.add(source)
            self.fail(source, row["error"], [*rows.values(), row])
            return
        rows = self.rows_by_source.setdefault(source, {})
        rows[row["page_id"]] = row
        if len(rows) == row["file_rows"]:
            del self.rows_by_source[source]
            self.finished.add(source)
            self._complete(source, list(rows.values()))

    def finish(self) -> None:
        """Commit the files still waiting; a file some rows of which never came is failed."""
        self.commit()
        for source, rows in sorted(self.rows_by_source.items()):
            expected = next(iter(rows.values()))["file_rows"]
            self.fail(source, f"only {len(rows)} of its {expected} pages were processed", rows)
        self.rows_by_source.clear()

    def _complete(self, source: str, rows: list[Row]) -> None:
        to_write = sum(1 for row in rows if not row["unchanged"])
        if not to_write:
            self.report.pages_unchanged += len(rows)
            return
        self.ready.append((source, rows))
        self.ready_pages += to_write
        if self.ready_pages >= self.batch_size:
            self.commit()

    def commit(self) -> None:
        """Write the complete files waiting, in one commit (none if none is waiting)."""
        files, self.ready, self.ready_pages = self.ready, [], 0
        if not files:
            return
        pages = [row for _, rows in files for row in rows if not row["unchanged"]]
        try:
            result = self.store.upsert_pages(
                [row_document(row) for row in pages],
                [row_vectors(row) for row in pages],
                fingerprint=self.fingerprint,
            )
        except InvalidPageError as error:  # e.g. vectors that are not finite: their files fail
            self._fail_files(files, error)
            return
        except VLMError:
            raise  # a model mismatch or an unwritable store concerns every file: stop
        except Exception as error:  # noqa: BLE001 - reported per file, never swallowed silently
            self._fail_files(files, error)
            return
        self._count(files, result)

    def _count(self, files: list[tuple[str, list[Row]]], result: Any) -> None:
        outcomes = {
            **{page_id: "added" for page_id in result.added},
            **{page_id: "replaced" for page_id in result.replaced},
        }
        report = self.report
        for _, rows in files:
            for row in rows:
                # A page id met twice (the same bytes at two paths) is stored once: the second
                # copy is unchanged, as a local ingest counts it.
                outcome = "unchanged" if row["unchanged"] else outcomes.pop(row["page_id"], None)
                if outcome == "added":
                    report.pages_added += 1
                elif outcome == "replaced":
                    report.pages_replaced += 1
                else:
                    report.pages_unchanged += 1
        report.pages_removed += len(result.removed)

    def _fail_files(self, files: list[tuple[str, list[Row]]], error: Exception) -> None:
        # Nothing of the commit was written: an upsert is a single commit.
        reason = f"embedding or storing failed: {type(error).__name__}: {error}"
        for source, rows in files:
            self.fail(source, reason, rows)

    def fail(self, source: str, reason: str, rows: Any) -> None:
        """Record ``source`` as failed and delete the pages of it an earlier run stored."""
        self.report.failed.append(FailedFile(source, reason))
        documents = sorted({(row["doc_id"], row["file_path"]) for row in rows if row["doc_id"]})
        stored: list[str] = []
        for doc_id, file_path in documents:
            # The file's own rows only: the same bytes at another path share the doc_id.
            conditions = [MetadataFilter(key="doc_id", value=doc_id)]
            if file_path:
                conditions.append(MetadataFilter(key="file_path", value=file_path))
            stored += self.store.page_ids(filters=MetadataFilters(filters=conditions))
        if stored:
            self.store.delete_nodes(node_ids=stored)
            self.report.pages_removed += len(stored)
        logger.warning("not indexed: %s: %s", source, reason)
