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

A search that starts while another is running also gives its own OpenMP thread team one
thread: the cores are busy already, and two searches each waking torch's full team only
contend. The setting is the calling thread's own (OpenMP's ``omp_set_num_threads`` sets the
calling thread's count; ``torch.set_num_threads`` would also change the default every new
thread takes) and is restored when the search ends, so a search alone keeps every thread.
With 8 query threads on 2 cores at 10k pages: 11-18% more queries/s and 4-6 ms less CPU a
query than every search on torch's full team, in three paired runs (``benchmarks/RESULTS.md``).

A rerank runs on one OpenMP thread where torch's team only costs it time
(:func:`rerank_threads`). Its steps are small: each reranked page widened from float16 on its
own (a 1,030 x 128 page), each block's per-page maxima. Every one of them is a parallel
region, and where the team's threads sleep between regions (``OMP_WAIT_POLICY=PASSIVE``, the
setting a shared machine wants) waking them costs more than the second thread gives back: on
a 2-core VM, 62 us for a page's widening on 2 threads against 8.5 us on one, and a 10k-page
rerank 17.8 ms on 2 threads against 12.1 ms on one; with spinning threads the team wins
(5.3 against 9.0 us; 8.8 against 11.1 ms) and is kept (``benchmarks/RESULTS.md``, issue 15).
Which one holds is timed once per process on a page-sized widening.

Example:
    >>> with search_slot():
    ...     pass  # score pages here
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


_SLOTS = threading.BoundedSemaphore(usable_cores())
#: Searches running now (holding a slot), under ``_RUNNING_LOCK``.
_running = 0
_RUNNING_LOCK = threading.Lock()


def _free_slots_in_child() -> None:
    """A forked child starts with every slot free: the threads holding them in the parent
    do not exist in the child and would never give them back."""
    global _SLOTS, _running
    _SLOTS = threading.BoundedSemaphore(usable_cores())
    _running = 0


def _openmp_runtime() -> ctypes.CDLL | None:
    """The OpenMP runtime torch's thread teams run on (its own copy, in ``torch/lib``), or
    None where there is none to find (a build without OpenMP)."""
    try:
        import torch
    except ImportError:
        return None
    folder = Path(torch.__file__).parent / "lib"
    for pattern in ("libgomp*", "libiomp5*", "libomp*"):
        for path in sorted(folder.glob(pattern)):
            try:
                runtime = ctypes.CDLL(str(path))  # already loaded by torch: the same library
                runtime.omp_get_max_threads.restype = ctypes.c_int
                runtime.omp_set_num_threads.argtypes = [ctypes.c_int]
                return runtime
            except (OSError, AttributeError):
                continue
    return None


_OPENMP = _openmp_runtime()


@contextmanager
def _openmp_threads(threads: int) -> Iterator[None]:
    """This thread's OpenMP regions (torch's products and reductions) use ``threads`` threads
    for the ``with`` block; its own count is restored afterwards."""
    if _OPENMP is None:
        yield
        return
    before = _OPENMP.omp_get_max_threads()
    _OPENMP.omp_set_num_threads(threads)
    try:
        yield
    finally:
        _OPENMP.omp_set_num_threads(before)


def one_openmp_thread():
    """This thread's OpenMP regions use one thread for the ``with`` block."""
    return _openmp_threads(1)


#: The page widened by the rerank probe: ColPali's 1,030 vectors of 128 dimensions.
_PROBE_PAGE_SHAPE = (1030, 128)
_PROBE_REPEATS = 15
#: The rerank goes to one thread only if the team is this many times slower on a page: a
#: margin no timing noise seen here came near (the two sides differ 1.6-7x).
_TEAM_SLOWER_BY = 1.5
_rerank_on_one_thread: bool | None = None
_PROBE_LOCK = threading.Lock()


def page_widening_seconds(threads: int, repeats: int = _PROBE_REPEATS) -> float:
    """The median seconds of widening one float16 page to float32 with this thread's OpenMP
    regions on ``threads`` threads (its own count is restored afterwards)."""
    import torch

    source = torch.zeros(_PROBE_PAGE_SHAPE, dtype=torch.float16)
    target = torch.empty(_PROBE_PAGE_SHAPE, dtype=torch.float32)
    with _openmp_threads(threads):
        target.copy_(source)  # the team's threads started and warm
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            target.copy_(source)
            times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def _probe_rerank_threads() -> bool:
    """Time a page's widening on torch's team and on one thread, in a thread of its own (so
    the team is the process's default, whatever the caller's thread is set to)."""
    import torch

    answer: list[bool] = []

    def probe() -> None:
        torch.zeros(1 << 16).add_(1)  # torch sets this thread's team size at its first region
        team = _OPENMP.omp_get_max_threads()
        if team < 2:
            answer.append(False)
            return
        on_team = page_widening_seconds(team)
        on_one = page_widening_seconds(1)
        answer.append(on_team > _TEAM_SLOWER_BY * on_one)

    thread = threading.Thread(target=probe, name="llama-index-vlm-rerank-probe")
    thread.start()
    thread.join()
    return bool(answer and answer[0])


def rerank_on_one_thread() -> bool:
    """Whether this process's reranks run on one OpenMP thread: where a page's widening is
    more than 1.5x slower on torch's team than on one thread (timed at the first call, about
    2 ms; False without an OpenMP runtime)."""
    global _rerank_on_one_thread
    if _rerank_on_one_thread is not None:  # every search asks: no lock once it is known
        return _rerank_on_one_thread
    with _PROBE_LOCK:
        if _rerank_on_one_thread is None:
            _rerank_on_one_thread = _OPENMP is not None and _probe_rerank_threads()
        return _rerank_on_one_thread


@contextmanager
def rerank_threads() -> Iterator[None]:
    """This thread's OpenMP regions on one thread for the ``with`` block where
    :func:`rerank_on_one_thread` says so; torch's team otherwise."""
    with one_openmp_thread() if rerank_on_one_thread() else nullcontext():
        yield


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_free_slots_in_child)


@contextmanager
def search_slot() -> Iterator[None]:
    """Hold one of the process's search slots (one per core) for the ``with`` block; with
    one OpenMP thread in this thread if another search is running."""
    global _running
    with _SLOTS:
        with _RUNNING_LOCK:
            others = _running
            _running += 1
        try:
            with one_openmp_thread() if others else nullcontext():
                yield
        finally:
            with _RUNNING_LOCK:
                _running -= 1
