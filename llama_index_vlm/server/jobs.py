"""Indexing uploads in the background, one job at a time, with progress.

An upload's files are indexed by :func:`~llama_index_vlm.ingestion.ingest`, the path every file
on disk takes (the same reader checks, limits and per-file failures), in one worker thread, so
uploads never run two encoders' batches at once. A job records its progress as pages read out
of the pages its files hold, and its outcome as the ingest report says.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import ImageDocument

from llama_index_vlm.errors import UnreadableDocumentError, VLMError
from llama_index_vlm.ingestion import ingest
from llama_index_vlm.pages import doc_id_for_file
from llama_index_vlm.reader import PDFPageReader
from llama_index_vlm.server.schemas import FailedFileModel, Job
from llama_index_vlm.server.uploads import UPLOAD_NAME_KEY, SavedUpload, remove_upload

logger = logging.getLogger(__name__)

#: Finished jobs kept for ``GET /jobs/{id}``; older ones are forgotten.
_KEPT_JOBS = 256
#: Pages per encoder call and commit: small, so progress (pages read) runs at most this far
#: ahead of the pages stored.
UPLOAD_BATCH_SIZE = 8


class UploadReader(PDFPageReader):
    """The reader for uploads: a :class:`PDFPageReader` that labels each uploaded file's pages
    with the name the client gave it and reports every page it reads.
    """

    _names: dict[str, str] = PrivateAttr(default_factory=dict)
    _on_page: Callable[[], None] | None = PrivateAttr(default=None)

    def for_uploads(self, uploads: list[SavedUpload], on_page: Callable[[], None]) -> UploadReader:
        """A copy of this reader for one job's files."""
        reader = self.model_copy()
        reader._names = {str(upload.path): upload.name for upload in uploads}
        reader._on_page = on_page
        return reader

    def read_file(
        self,
        path: str | os.PathLike[str],
        doc_id: str | None = None,
        extra_info: dict[str, Any] | None = None,
    ) -> Iterator[ImageDocument]:
        name = self._names.get(os.path.abspath(os.fspath(path)))
        if name is not None:
            extra_info = {**(extra_info or {}), UPLOAD_NAME_KEY: name}
        for document in super().read_file(path, doc_id=doc_id, extra_info=extra_info):
            if self._on_page is not None:
                self._on_page()
            yield document


class IndexingJobs:
    """Upload jobs: queued, run one at a time in a worker thread, and looked up by id.

    Args:
        encoder: the page encoder (the server's :class:`~.gates.SerialEncoder`).
        store: where pages go.
        upload_dir: the folder uploads are saved in; a file is deleted once none of its pages
            is stored (it failed, or its document was deleted).
        reader: how files become pages; its settings apply to every upload.
        max_pages_per_file: a file with more pages is not indexed (it fails, with the reason).
        on_done: called after each job, e.g. to warm the search cache.
    """

    def __init__(
        self,
        encoder: Any,
        store: Any,
        upload_dir: Path,
        reader: UploadReader,
        max_pages_per_file: int,
        on_done: Callable[[], None] | None = None,
    ):
        self.encoder = encoder
        self.store = store
        self.upload_dir = upload_dir
        self.reader = reader
        self.max_pages_per_file = max_pages_per_file
        self.on_done = on_done
        self.batch_size = UPLOAD_BATCH_SIZE
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-index-vlm-jobs")

    def submit(self, uploads: list[SavedUpload]) -> Job:
        """Queue the indexing of saved uploads; returns the job as it stands."""
        job = Job(
            job_id=uuid.uuid4().hex,
            state="queued",
            file_names=[upload.name for upload in uploads],
            pages_total=0,
            pages_done=0,
        )
        with self._lock:
            self._jobs[job.job_id] = job
            while len(self._jobs) > _KEPT_JOBS:
                self._jobs.popitem(last=False)
        self._worker.submit(self._run, job, uploads)
        return self.get(job.job_id)

    def get(self, job_id: str) -> Job | None:
        """A copy of the job's current state, or None for an unknown (or forgotten) id."""
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else job.model_copy(deep=True)

    def shutdown(self) -> None:
        """Stop taking jobs; the running one finishes, queued ones are dropped."""
        self._worker.shutdown(wait=True, cancel_futures=True)

    def _update(self, job: Job, **fields: Any) -> None:
        with self._lock:
            for name, value in fields.items():
                setattr(job, name, value)

    def _page_read(self, job: Job) -> None:
        with self._lock:
            job.pages_done += 1

    def _run(self, job: Job, uploads: list[SavedUpload]) -> None:
        readable, failed = self._check(uploads)
        self._update(
            job,
            state="running",
            failed=failed,
            pages_total=sum(pages for _, pages in readable),
        )
        outcome: dict[str, Any] = {"state": "done"}
        try:
            if readable:
                self._ingest(job, [upload for upload, _ in readable])
        except (VLMError, OSError) as error:
            logger.warning("upload job %s failed: %s", job.job_id, error)
            outcome = {"state": "failed", "error": str(error)}
        except Exception as error:  # noqa: BLE001 - a job reports its failure, never dies silently
            logger.exception("upload job %s failed", job.job_id)
            outcome = {"state": "failed", "error": f"{type(error).__name__}: {error}"}
        finally:
            # Before the job says it has finished: a client then sees the files' final state
            # and searches a warm cache.
            self._forget_unstored(uploads)
            self._call_on_done(job)
        self._update(job, **outcome)

    def _call_on_done(self, job: Job) -> None:
        if self.on_done is None:
            return
        try:
            self.on_done()
        except Exception:  # noqa: BLE001 - the job's own outcome stands
            logger.exception("after upload job %s, on_done failed", job.job_id)

    def _check(
        self, uploads: list[SavedUpload]
    ) -> tuple[list[tuple[SavedUpload, int]], list[FailedFileModel]]:
        """Count each file's pages first: unreadable files and files over the page limit fail
        before anything is encoded."""
        readable, failed = [], []
        for upload in uploads:
            try:
                pages = self.reader.count_pages(upload.path)
            except UnreadableDocumentError as error:
                failed.append(FailedFileModel(file_name=upload.name, reason=error.reason))
                continue
            if pages > self.max_pages_per_file:
                reason = (
                    f"has {pages} pages; this server indexes at most {self.max_pages_per_file} "
                    "pages per file (llama-index-vlm serve --max-pages)"
                )
                failed.append(FailedFileModel(file_name=upload.name, reason=reason))
                continue
            readable.append((upload, pages))
        return readable, failed

    def _ingest(self, job: Job, uploads: list[SavedUpload]) -> None:
        reader = self.reader.for_uploads(uploads, lambda: self._page_read(job))
        report = ingest(
            [upload.path for upload in uploads],
            self.encoder,
            self.store,
            reader=reader,
            batch_size=self.batch_size,
            show_progress=False,
        )
        names = {str(upload.path): upload.name for upload in uploads}
        failed_paths = {failure.path for failure in report.failed}
        failures = [
            FailedFileModel(file_name=names.get(failure.path, failure.path), reason=failure.reason)
            for failure in report.failed
        ]
        doc_ids = [
            doc_id_for_file(upload.path)
            for upload in uploads
            if str(upload.path) not in failed_paths
        ]
        self._update(
            job,
            pages_added=report.pages_written,
            pages_unchanged=report.pages_unchanged,
            doc_ids=doc_ids,
            failed=job.failed + failures,
        )

    def _forget_unstored(self, uploads: list[SavedUpload]) -> None:
        from llama_index.core.vector_stores.types import MetadataFilters

        for upload in uploads:
            stored = MetadataFilters.from_dicts([{"key": "file_path", "value": str(upload.path)}])
            if self.store.count(stored) == 0:
                remove_upload(upload.path, self.upload_dir)
