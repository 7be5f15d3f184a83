"""How many clients may use a model at once.

- :class:`SerialEncoder`: one call at a time into the retriever model (query encoding, similarity
  maps, indexing uploads), shared by every request; memory stays one batch's activations.
- :class:`GenerationQueue`: answers are generated in a fixed number of slots; askers wait in a
  bounded queue, and the ones beyond it are told the server is busy instead of piling up.

A search's MaxSim scoring runs outside both: only model calls are serialised.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class SerialEncoder:
    """A :class:`~llama_index_vlm.encoder.ColPaliEncoder` whose model calls take turns.

    It stands in for the encoder everywhere (retriever, ingest, similarity maps): model calls
    go through one lock, everything else (``fingerprint``, ``embedding_dim``, ``processor``) is
    the wrapped encoder's.
    """

    def __init__(self, encoder: Any):
        self._encoder = encoder
        self._lock = threading.Lock()

    @property
    def wrapped(self) -> Any:
        """The encoder itself."""
        return self._encoder

    def embed_images(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._encoder.embed_images(*args, **kwargs)

    def embed_queries(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._encoder.embed_queries(*args, **kwargs)

    def embed_image_patches(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._encoder.embed_image_patches(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)


class ServerBusyError(Exception):
    """Every generation slot is taken and the queue is full; the client should retry later."""


class GenerationQueue:
    """Generation slots and the askers waiting for one, for one event loop.

    Example::

        ticket = queue.ticket()      # ServerBusyError when the queue is full
        try:
            await ticket.acquire()   # waits for a slot; cancellable
            ...                      # generate
        finally:
            ticket.release()
    """

    def __init__(self, slots: int = 1, max_waiting: int = 16):
        if slots < 1:
            raise ValueError(f"slots must be at least 1, not {slots}")
        if max_waiting < 0:
            raise ValueError(f"max_waiting must be 0 or more, not {max_waiting}")
        self.slots = slots
        self.max_waiting = max_waiting
        self.active = 0
        self.waiting = 0
        self._semaphore: asyncio.Semaphore | None = None

    def ticket(self) -> Ticket:
        """A place in the queue, or :class:`ServerBusyError` when there is none."""
        if self.active + self.waiting >= self.slots + self.max_waiting:
            raise ServerBusyError(
                f"the answering model is busy: {self.active} answers are being generated and "
                f"{self.waiting} are waiting; try again in a moment"
            )
        self.waiting += 1
        return Ticket(self)

    def _slot_semaphore(self) -> asyncio.Semaphore:
        # Made on first use, inside the event loop that will await it.
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.slots)
        return self._semaphore


class Ticket:
    """One asker's place: waiting, then holding a slot, then released (once)."""

    def __init__(self, queue: GenerationQueue):
        self._queue = queue
        self._state = "waiting"

    async def acquire(self) -> None:
        """Wait for a slot. A client that goes away meanwhile cancels this and loses its place."""
        if self._state != "waiting":
            raise RuntimeError(f"a {self._state} ticket cannot wait for a slot")
        await self._queue._slot_semaphore().acquire()
        self._queue.waiting -= 1
        self._queue.active += 1
        self._state = "active"

    def release(self) -> None:
        """Give back the slot, or the place in the queue; a second call does nothing."""
        if self._state == "active":
            self._queue.active -= 1
            self._queue._slot_semaphore().release()
        elif self._state == "waiting":
            self._queue.waiting -= 1
        self._state = "released"
