"""How the reader and its render worker talk: framed messages over a pair of pipes.

A message is a small JSON header and an optional binary payload (a page's encoded image),
each preceded by its length. Nothing is pickled, so a worker that a hostile file managed to
take over still cannot make the reader run code by what it sends back; the sizes it announces
are bounded before anything is allocated.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from typing import Any

#: Lengths of the JSON header and of the payload that follows it.
_FRAME = struct.Struct("<IQ")
#: The largest header and payload accepted: a page's text layer, a page's encoded image.
MAX_HEADER_BYTES = 64 << 20
MAX_PAYLOAD_BYTES = 2 << 30


class WorkerTimeoutError(TimeoutError):
    """The other side did not answer before the deadline."""


class WorkerGoneError(EOFError):
    """The other side closed its pipe (it exited or was killed)."""


def send(fd: int, header: dict[str, Any], payload: bytes = b"") -> None:
    """Write one message to the pipe ``fd`` (blocking)."""
    body = json.dumps(header).encode("utf-8")
    _write_all(fd, _FRAME.pack(len(body), len(payload)) + body)
    if payload:
        _write_all(fd, payload)


def receive(fd: int, deadline: float | None = None) -> tuple[dict[str, Any], bytes]:
    """Read one message from the pipe ``fd``: ``(header, payload)``.

    Raises:
        WorkerTimeoutError: ``deadline`` (a :func:`time.monotonic` time) passed first.
        WorkerGoneError: the pipe was closed before a whole message came.
        ValueError: the message announces more bytes than any message may have.
    """
    header_size, payload_size = _FRAME.unpack(_read_exactly(fd, _FRAME.size, deadline))
    if header_size > MAX_HEADER_BYTES or payload_size > MAX_PAYLOAD_BYTES:
        raise ValueError(f"message of {header_size} + {payload_size} bytes is over the limits")
    header = json.loads(_read_exactly(fd, header_size, deadline).decode("utf-8"))
    payload = _read_exactly(fd, payload_size, deadline) if payload_size else b""
    return header, payload


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_exactly(fd: int, size: int, deadline: float | None) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise WorkerTimeoutError(f"no answer within the deadline ({got} of {size} bytes)")
        count = os.readv(fd, [view[got:]])
        if count == 0:
            raise WorkerGoneError(f"pipe closed after {got} of {size} bytes")
        got += count
    return bytes(buffer)
