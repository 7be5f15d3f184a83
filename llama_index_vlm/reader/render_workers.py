"""Reading files in render workers: child processes with a memory cap, killed when a page is late.

A PDF of nested drawings can make PDFium work for minutes and allocate gigabytes on one page,
and a crafted file can crash it; none of that must stop or exhaust the reader's process. With
limits set, :class:`~llama_index_vlm.reader.PDFPageReader` hands every file to a worker
(:mod:`~llama_index_vlm.reader.render_worker`) that caps its own address space
(``RLIMIT_AS``), and waits at most ``timeout`` seconds for each answer: opening and counting a
file's pages, or one page. A worker that is late is killed; one that dies (out of memory,
crashed) is reported; either way the file fails with
:class:`~llama_index_vlm.errors.UnreadableDocumentError` naming the page, and the next file
gets a fresh worker.

Workers are kept for the next file (:class:`WorkerPool`), so a run pays for starting one
(about 0.2 s: Python, PDFium and Pillow) once, not per file or page; only the encoded page
(about 200 KB as JPEG) crosses the pipe.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_index_vlm.errors import UnreadableDocumentError
from llama_index_vlm.reader import worker_protocol
from llama_index_vlm.reader.encoded import EncodedPage
from llama_index_vlm.reader.pdf_renderers import RendererNotInstalledError
from llama_index_vlm.reader.sources import ReadSettings

logger = logging.getLogger(__name__)

#: Idle workers kept per set of limits, for the next file.
MAX_IDLE_WORKERS = 2
#: Seconds a new worker may take to start (Python, PDFium, Pillow) on a loaded machine.
STARTUP_TIMEOUT = 120.0


@dataclass(frozen=True)
class RenderLimits:
    """What one file may cost a worker.

    Attributes:
        timeout: seconds to open and count a file, and to render and encode each page.
        memory_mib: the worker's address space, in MiB.
    """

    timeout: float | None = 30.0
    memory_mib: int | None = 2048


class RenderWorker:
    """One worker process and the pipes to it."""

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        request_read, self._request_fd = os.pipe()
        self._reply_fd, reply_write = os.pipe()
        memory = "none" if limits.memory_mib is None else str(limits.memory_mib)
        # Numerical libraries start one thread (and its address space) per core otherwise.
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "llama_index_vlm.reader.render_worker",
                    str(request_read),
                    str(reply_write),
                    memory,
                ],
                pass_fds=(request_read, reply_write),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                # Its own session: a Ctrl-C in the terminal stops the reader, which then closes
                # the worker, instead of killing the worker under a file.
                start_new_session=True,
            )
        finally:
            os.close(request_read)
            os.close(reply_write)
        self.pid = os.getpid()
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        """Wait for the worker's first message, so its start-up is not charged to a file."""
        try:
            ready, _ = worker_protocol.receive(self._reply_fd, time.monotonic() + STARTUP_TIMEOUT)
        except (worker_protocol.WorkerTimeoutError, worker_protocol.WorkerGoneError) as error:
            self.kill()
            raise RuntimeError(
                f"the render worker ({sys.executable} -m llama_index_vlm.reader.render_worker) "
                f"did not start: {error}; {self.exit_description()}. Set "
                "PDFPageReader(render_timeout=None, render_memory_limit=None) to read files in "
                "this process instead"
            ) from error
        if not ready.get("memory_capped", True) and self.limits.memory_mib is not None:
            _warn_once(
                "this system does not let the render worker cap its memory (RLIMIT_AS); files "
                "are read with the time limit only"
            )

    def request(self, header: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        """Send one request and wait for its answer, at most the time limit.

        Raises:
            WorkerTimeoutError: no answer in time (the worker is killed).
            WorkerGoneError: the worker died before answering.
        """
        timeout = self.limits.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            worker_protocol.send(self._request_fd, header)
            answer, payload = worker_protocol.receive(self._reply_fd, deadline)
        except (worker_protocol.WorkerTimeoutError, ValueError):
            self.kill()
            raise
        except (worker_protocol.WorkerGoneError, BrokenPipeError) as error:
            self.kill()
            raise worker_protocol.WorkerGoneError(self.exit_description()) from error
        for name, level, message in answer.pop("logs", []):
            logging.getLogger(name).log(level, "%s", message)
        return answer, payload

    @property
    def alive(self) -> bool:
        """Whether the process runs (and belongs to this process, not to a forked parent)."""
        return self.pid == os.getpid() and self.process.poll() is None

    def exit_description(self) -> str:
        """How the process ended, for a message: ``"killed by SIGSEGV"``, ``"exit status 1"``."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "still running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"

    def kill(self) -> None:
        """End the process now and close the pipes (idempotent)."""
        if self.pid == os.getpid() and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.close_pipes()

    def close(self) -> None:
        """Let the process exit by closing its pipes, and wait for it briefly."""
        self.close_pipes()
        if self.pid == os.getpid():
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.kill()

    def close_pipes(self) -> None:
        for name in ("_request_fd", "_reply_fd"):
            fd = getattr(self, name)
            if fd is not None:
                setattr(self, name, None)
                try:
                    os.close(fd)
                except OSError:
                    pass


class WorkerPool:
    """Idle workers by limits: a file takes one (or starts one) and gives it back when done."""

    def __init__(self) -> None:
        self._idle: dict[RenderLimits, list[RenderWorker]] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def acquire(self, limits: RenderLimits) -> RenderWorker:
        """An idle live worker with these limits, or a new one."""
        with self._lock:
            if self._pid != os.getpid():  # forked: the workers are the parent's, not ours
                self._idle, self._pid = {}, os.getpid()
            idle = self._idle.get(limits, [])
            while idle:
                worker = idle.pop()
                if worker.alive:
                    return worker
                worker.kill()
        return RenderWorker(limits)

    def release(self, worker: RenderWorker) -> None:
        """Keep ``worker`` for the next file, or close it if enough are idle."""
        with self._lock:
            idle = self._idle.setdefault(worker.limits, [])
            if worker.alive and len(idle) < MAX_IDLE_WORKERS and self._pid == os.getpid():
                idle.append(worker)
                return
        worker.close()

    def close(self) -> None:
        """Close every idle worker (at exit)."""
        with self._lock:
            workers = [worker for idle in self._idle.values() for worker in idle]
            self._idle = {}
        for worker in workers:
            worker.close()


POOL = WorkerPool()
atexit.register(POOL.close)
_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)


def count_in_worker(path: Path, settings: ReadSettings, limits: RenderLimits) -> int:
    """:func:`~llama_index_vlm.reader.sources.count_file_pages` in a worker."""
    worker = POOL.acquire(limits)
    request = {"op": "count", "path": str(path), "settings": settings.to_json()}
    try:
        answer, _ = _ask(worker, request, path, limits, "opening it and counting its pages")
    finally:
        POOL.release(worker)
    return int(answer["pages"])


def pages_in_worker(
    path: Path, settings: ReadSettings, limits: RenderLimits
) -> Iterator[EncodedPage]:
    """:func:`~llama_index_vlm.reader.sources.encoded_pages` in a worker, one page at a time.

    Closing the generator early stops the worker's reading; the worker is reused.
    """
    worker = POOL.acquire(limits)
    request: dict[str, Any] = {"op": "pages", "path": str(path), "settings": settings.to_json()}
    finished = False
    page_number = settings.first_page
    try:
        while True:
            stage = f"rendering page {page_number}"
            if request["op"] == "pages":
                stage = f"opening it and {stage}"
            answer, payload = _ask(worker, request, path, limits, stage)
            if "done" in answer:
                finished = True
                return
            page = EncodedPage(image_bytes=payload, **answer["page"])
            page_number = page.page_number + 1
            request = {"op": "next"}
            yield page
    finally:
        _end_session(worker, finished)


def _end_session(worker: RenderWorker, finished: bool) -> None:
    """Give the worker back once it stopped reading the file (closing it if it was stopped
    mid-file and does not confirm in time).
    """
    if not finished and worker.alive:
        try:
            worker.request({"op": "close"})
        except (worker_protocol.WorkerTimeoutError, EOFError, OSError, ValueError):
            worker.kill()
    POOL.release(worker)


def _ask(
    worker: RenderWorker,
    request: dict[str, Any],
    path: Path,
    limits: RenderLimits,
    stage: str,
) -> tuple[dict[str, Any], bytes]:
    """The worker's answer to ``request``, or the file's UnreadableDocumentError."""
    try:
        answer, payload = worker.request(request)
    except worker_protocol.WorkerTimeoutError as error:
        raise UnreadableDocumentError(
            str(path),
            f"{stage} took longer than the render time limit of {limits.timeout:g} s, and was "
            "stopped (PDFPageReader(render_timeout=...), `index --render-timeout`)",
        ) from error
    except (worker_protocol.WorkerGoneError, ValueError) as error:
        memory = "" if limits.memory_mib is None else f" of {limits.memory_mib} MiB"
        raise UnreadableDocumentError(
            str(path),
            f"the renderer stopped while {stage} ({error}): it crashed or went over its "
            f"memory limit{memory} (PDFPageReader(render_memory_limit=...), "
            "`index --render-memory-limit`)",
        ) from error
    if answer.get("error") == "unreadable":
        raise UnreadableDocumentError(str(path), answer["reason"])
    if answer.get("error") == "renderer":
        raise RendererNotInstalledError(answer["message"])
    return answer, payload
