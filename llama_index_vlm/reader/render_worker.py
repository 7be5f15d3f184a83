"""The render worker: a child process that opens, counts, renders and encodes pages for the reader.

Started by :mod:`~llama_index_vlm.reader.render_workers` as
``python -m llama_index_vlm.reader.render_worker REQUEST_FD REPLY_FD MEMORY_MIB``. Before it
reads any file it caps its own address space at ``MEMORY_MIB`` (``RLIMIT_AS``; ``none`` for no
cap) and forbids core dumps, so no file can make it use more; the reader kills it when a page
takes longer than its time limit. It imports only the reader's pixel modules (PDFium, Pillow,
NumPy), never LlamaIndex, torch or LanceDB.

Requests (JSON, see :mod:`~llama_index_vlm.reader.worker_protocol`), one answer each:

- ``{"op": "count", "path": ..., "settings": {...}}`` -> ``{"pages": n}``;
- ``{"op": "pages", "path": ..., "settings": {...}}`` starts reading a file and answers with
  its first page; ``{"op": "next"}`` answers with the next one. A page is
  ``{"page": {...fields}}`` with the encoded image as payload; ``{"done": true}`` ends a file;
- ``{"op": "close"}`` stops reading the current file -> ``{"closed": true}``.

A file that cannot be read is answered ``{"error": "unreadable", "reason": ...}``; a renderer
that is not installed ``{"error": "renderer", "message": ...}``. Log records of the reader
modules travel with each answer (``"logs"``), so the reader logs them as its own. The worker
exits when the reader closes its pipe. Its first message, ``{"ready": true}``, says it has
started (and whether the system let it cap its memory), so its start-up time never counts
against a file's time limit.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from PIL import Image

from llama_index_vlm.errors import UnreadableDocumentError
from llama_index_vlm.reader import worker_protocol
from llama_index_vlm.reader.encoded import EncodedPage
from llama_index_vlm.reader.pdf_renderers import RendererNotInstalledError
from llama_index_vlm.reader.sources import ReadSettings, count_file_pages, encoded_pages


class _LogBuffer(logging.Handler):
    """Keeps the package's log records until the next answer carries them to the reader."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[list[Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append([record.name, record.levelno, record.getMessage()])

    def take(self) -> list[list[Any]]:
        records, self.records = self.records, []
        return records


class RenderWorker:
    """The worker's state: the file being read, and the answers to the reader's requests."""

    def __init__(self, request_fd: int, reply_fd: int) -> None:
        self.request_fd = request_fd
        self.reply_fd = reply_fd
        self.pages: Iterator[EncodedPage] | None = None
        self.logs = _LogBuffer()
        package_logger = logging.getLogger("llama_index_vlm")
        package_logger.addHandler(self.logs)
        package_logger.setLevel(logging.INFO)
        package_logger.propagate = False  # the reader logs them; nothing is printed here

    def serve(self, memory_capped: bool = True) -> None:
        """Say it is ready (and whether its memory is capped), then answer requests until the
        reader closes the pipe.
        """
        worker_protocol.send(self.reply_fd, {"ready": True, "memory_capped": memory_capped})
        while True:
            try:
                request, _ = worker_protocol.receive(self.request_fd)
            except worker_protocol.WorkerGoneError:
                return
            header, payload = self.answer(request)
            header["logs"] = self.logs.take()
            worker_protocol.send(self.reply_fd, header, payload)

    def answer(self, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        """The answer to one request: ``(header, payload)``."""
        try:
            if request["op"] == "count":
                path, settings = _file_request(request)
                return {"pages": count_file_pages(path, settings)}, b""
            if request["op"] == "pages":
                self._close()
                self.pages = encoded_pages(*_file_request(request))
                return self._next_page()
            if request["op"] == "next":
                return self._next_page()
            self._close()
            return {"closed": True}, b""
        except UnreadableDocumentError as error:
            self._close()
            return {"error": "unreadable", "reason": error.reason}, b""
        except RendererNotInstalledError as error:
            self._close()
            return {"error": "renderer", "message": str(error)}, b""

    def _next_page(self) -> tuple[dict[str, Any], bytes]:
        page = None if self.pages is None else next(self.pages, None)
        if page is None:
            self._close()
            return {"done": True}, b""
        fields = asdict(page)
        image_bytes = fields.pop("image_bytes")
        return {"page": fields}, image_bytes

    def _close(self) -> None:
        if self.pages is not None:
            pages, self.pages = self.pages, None
            pages.close()


def _file_request(request: dict[str, Any]) -> tuple[Path, ReadSettings]:
    settings = ReadSettings(**request["settings"])
    # The reader's pixel budget, which its user may have raised, lowered or lifted.
    Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
    return Path(request["path"]), settings


def limit_resources(memory_mib: int | None) -> bool:
    """Cap this process's address space at ``memory_mib`` MiB (None: no cap), and forbid
    core dumps (a crash on a hostile file must not write gigabytes). False when the system
    refuses the cap (macOS does not enforce ``RLIMIT_AS``).
    """
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if memory_mib is not None:
            limit = memory_mib << 20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):
        return False
    return True


def main(argv: list[str]) -> int:
    """Serve the reader on the two pipes named by ``argv``."""
    request_fd, reply_fd, memory = int(argv[0]), int(argv[1]), argv[2]
    capped = limit_resources(None if memory == "none" else int(memory))
    RenderWorker(request_fd, reply_fd).serve(memory_capped=capped)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
