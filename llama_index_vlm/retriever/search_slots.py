"""As many page searches at once as the process has CPU cores; further ones wait their turn.

A search is CPU work from start to end: products over the page codes, the rerank's widening
and MaxSim, each with torch's own thread team. When a server's threads run more searches than
there are cores, the operating system time-slices them, and each switch evicts the working
set the other search had in the cache (a rerank's float32 block is megabytes). On 2 cores,
8 threads querying one 10k-page store in fast mode spent 48-58 ms of CPU per query, against
36-44 ms for one thread alone; with at most 2 searches at a time, 38-49 ms, and 3-22% more
queries per second in seven paired comparisons (``benchmarks/RESULTS.md``, issue 15). Waiting
threads sleep; the rest of a query (reading its nodes from the store, building the response)
runs outside a slot, so it still overlaps the searches.

Example:
    >>> with search_slot():
    ...     pass  # score pages here
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


_SLOTS = threading.BoundedSemaphore(usable_cores())


def _free_slots_in_child() -> None:
    """A forked child starts with every slot free: the threads holding them in the parent
    do not exist in the child and would never give them back."""
    global _SLOTS
    _SLOTS = threading.BoundedSemaphore(usable_cores())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_free_slots_in_child)


@contextmanager
def search_slot() -> Iterator[None]:
    """Hold one of the process's search slots (one per core) for the ``with`` block."""
    with _SLOTS:
        yield
