"""A read-write lock: many readers at once, or one writer."""

from __future__ import annotations

import threading


class ReadWriteLock:
    """Many readers at once or one writer; waiting writers go before new readers.

    A writer can :meth:`downgrade` to a reader without letting another writer in between, so
    a query that refreshed a cache to its table version searches that version.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    def acquire_read(self) -> None:
        with self._condition:
            while self._writing or self._writers_waiting:
                self._condition.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._condition:
            self._readers -= 1
            if not self._readers:
                self._condition.notify_all()

    def acquire_write(self) -> None:
        with self._condition:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._condition.wait()
            self._writers_waiting -= 1
            self._writing = True

    def release_write(self) -> None:
        with self._condition:
            self._writing = False
            self._condition.notify_all()

    def downgrade(self) -> None:
        """Turn the write lock this thread holds into a read lock."""
        with self._condition:
            self._writing = False
            self._readers += 1
            self._condition.notify_all()
