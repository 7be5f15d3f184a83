"""Fast searches in worker processes, for many query threads on several cores.

A fast search is many short steps (products over the page codes, the rerank's widening, the
candidates' bookkeeping), and the Python between them holds the interpreter's lock. Query
threads of one process then wait on each other's Python: on 2 cores, 8 threads querying one
10k-page store reached 1.15-1.37x the queries a second of one thread, while two processes
with a thread each reached 1.79-1.96x (``benchmarks/retriever_fast.py
--compare-processes``). Through two workers, 8 threads reached 1.97x one thread of the calling
process alone, and one thread 1.07x (``--compare-search-processes``, ``benchmarks/RESULTS.md``,
issue 15).

:class:`SearchProcesses` runs a retriever's fast searches in ``processes`` worker processes
(``ColPaliRetriever(..., search_processes=2)``). Each worker opens the store from its
configuration (:meth:`~llama_index_vlm.store.LanceDBPageStore.to_dict`) and keeps its own fast
index, refreshed to the table version each query asks for, so its answer is the one the
calling process would give. The query's encoding, the filters, reading the hit pages' nodes
and the rest of LlamaIndex's retrieval stay in the calling process.

Costs: each worker holds its own fast index in memory (at 10,000 ColPali pages about 700 MiB
of its own: 385 MiB of index, the rest libraries; a local store's full vectors are
memory-mapped from the persisted index and shared through the operating system's page
cache), and starts in a few seconds (torch's import, then the
index loaded from its persisted files; on object storage, where none is saved, each worker
pools every page again) at the first search. Workers are spawned, not forked (torch's and
LanceDB's threads do not survive a fork): a script that creates them needs the usual
``if __name__ == "__main__":`` guard. Where workers cannot start or die, the search runs in
the calling process instead (with a warning), and a later search starts new workers, unless
none of them ever answered a search (then they are not tried again).

Example::

    retriever = ColPaliRetriever(encoder, store, search_mode="fast", search_processes=2)
    nodes = retriever.retrieve("What was the 2023 revenue?")  # searched in a worker
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import weakref
from concurrent.futures import CancelledError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import nullcontext
from typing import Any

import numpy as np

from llama_index_vlm.retriever.search_slots import one_openmp_thread
from llama_index_vlm.store import LanceDBPageStore

logger = logging.getLogger(__name__)


class SearchProcessesUnavailable(RuntimeError):
    """The worker processes could not answer a search (they could not start, or died)."""


# ---------------------------------------------------------------------------- in a worker

#: The worker's own handle on the store, its fast cache over it, its place in the pool, and
#: the pool's flags of which workers are searching (a shared ``multiprocessing.Array``).
_worker_store: LanceDBPageStore | None = None
_worker_cache: Any = None
_worker_place = 0
_searching: Any = None


def _start_worker(store_config: dict[str, Any], place: int, searching: Any) -> None:
    """A worker's initialiser: open the store and load the fast index at its current
    version, so that the first searches find it ready (a failure here is left for the
    searches to report)."""
    global _worker_store, _worker_cache, _worker_place, _searching
    from llama_index_vlm.retriever.page_caches import FastPageCache

    _worker_place, _searching = place, searching
    _worker_store = LanceDBPageStore.from_dict(store_config)
    _worker_cache = FastPageCache(_worker_store)
    try:
        version = _worker_store.version
        if version:
            _worker_cache.refresh(version)
    except Exception as error:  # noqa: BLE001 - the searches raise it, as the caller's would
        logger.debug("search worker did not load the fast index ahead: %s", error)


def _nothing() -> None:
    """A task that only makes the pool start its worker."""


def _search_in_worker(
    query_vectors: np.ndarray,
    k: int,
    version: int,
    allowed: set[str] | None,
    candidate_depth: int,
) -> list[tuple[str, float]]:
    """One fast search in a worker, at table ``version`` (the cache refreshed to it first),
    on one OpenMP thread while another worker searches (as :func:`~llama_index_vlm.retriever.
    search_slots.search_slot` does for the threads of one process)."""
    _worker_cache.refresh(version)
    others = any(flag for place, flag in enumerate(_searching[:]) if place != _worker_place)
    _searching[_worker_place] = 1
    try:
        with one_openmp_thread() if others else nullcontext():
            return _worker_cache.search(
                query_vectors, k, version=version, allowed=allowed, candidate_depth=candidate_depth
            )
    finally:
        _searching[_worker_place] = 0


# ------------------------------------------------------------------------ in the caller


class _Worker:
    """One worker process (a ``ProcessPoolExecutor`` of one) and its place in the pool."""

    def __init__(self, executor: ProcessPoolExecutor, place: int) -> None:
        self.executor = executor
        self.place = place


class SearchProcesses:
    """A pool of ``processes`` worker processes answering fast searches of one store.

    Args:
        store: the store searched; the workers open it from ``store.to_dict()``.
        processes: worker processes (searches at once; further ones wait for a worker). A
            search alone uses torch's whole thread team, one beside another search a single
            thread.

    The workers start at the first :meth:`search`, each loading the fast index. A search
    goes to the worker that finished last: one query thread keeps to one warm worker (taking
    turns between two idle workers cost one thread 15% of its queries a second). Each worker is
    a ``ProcessPoolExecutor`` of one process, which notices a worker that died.
    :meth:`close` stops them (also done when the store object is garbage-collected, for pools
    from :func:`shared_search_processes`).
    """

    def __init__(self, store: LanceDBPageStore, processes: int) -> None:
        if processes < 1:
            raise ValueError(f"search_processes must be at least 1, not {processes}")
        self.processes = processes
        self.store_config = store.to_dict()
        #: Why the workers are not used (they never answered a search); None while they are.
        self.unavailable: str | None = None
        self._workers: list[_Worker] = []
        self._idle: list[_Worker] = []  # the worker that finished last at the end
        self._answered = False  # some worker of this pool answered a search
        self._changed = threading.Condition()
        self._spawn = multiprocessing.get_context("spawn")
        self._searching: Any = None  # made with the first workers

    def _take_worker(self) -> _Worker:
        """An idle worker (starting missing ones first), waiting for one if all are busy."""
        with self._changed:
            while True:
                if self.unavailable is not None:
                    raise SearchProcessesUnavailable(self.unavailable)
                if len(self._workers) < self.processes:
                    self._start_missing_workers()
                if self._idle:
                    return self._idle.pop()
                self._changed.wait()

    def _start_missing_workers(self) -> None:
        if self._searching is None:
            self._searching = self._spawn.Array("b", self.processes, lock=False)
        taken = {worker.place for worker in self._workers}
        for place in sorted(set(range(self.processes)) - taken):
            self._searching[place] = 0  # a worker that died searching left its flag up
            executor = ProcessPoolExecutor(
                1,
                mp_context=self._spawn,
                initializer=_start_worker,
                initargs=(self.store_config, place, self._searching),
            )
            executor.submit(_nothing)  # the process starts now and loads its index
            worker = _Worker(executor, place)
            self._workers.append(worker)
            self._idle.insert(0, worker)  # a worker known warm goes first

    def _give_back(self, worker: _Worker) -> None:
        with self._changed:
            if worker in self._workers:  # not dropped meanwhile
                self._idle.append(worker)
                self._changed.notify()

    def search(
        self,
        query_vectors: np.ndarray,
        k: int,
        *,
        version: int,
        allowed: set[str] | None = None,
        candidate_depth: int = 1,
    ) -> list[tuple[str, float]]:
        """The ``k`` best ``(page_id, exact MaxSim)`` pairs at table ``version``, searched in a
        worker (as :meth:`FastPageCache.search
        <llama_index_vlm.retriever.page_caches.FastPageCache.search>` would).

        Raises:
            SearchProcessesUnavailable: the workers could not start or died; search in this
                process instead. Errors of the search itself (a bad query, a storage error)
                are raised as they are.
        """
        query = np.ascontiguousarray(query_vectors, dtype=np.float32)
        worker = self._take_worker()
        try:
            try:
                # RuntimeError: the executor was shut down meanwhile (the pool was closed).
                future = worker.executor.submit(
                    _search_in_worker, query, k, version, allowed, candidate_depth
                )
            except (BrokenProcessPool, RuntimeError) as error:
                raise SearchProcessesUnavailable(self._drop(worker, error)) from error
            try:
                hits = future.result()
            except (BrokenProcessPool, CancelledError) as error:
                raise SearchProcessesUnavailable(self._drop(worker, error)) from error
            self._answered = True
            return hits
        finally:
            self._give_back(worker)

    def _drop(self, worker: _Worker, error: BaseException) -> str:
        """Drop a worker that died; the next search starts another, unless no worker of this
        pool ever answered a search (they would most likely fail again)."""
        with self._changed:
            if worker in self._workers:
                self._workers.remove(worker)
                if not self._answered:
                    self.unavailable = (
                        f"the search processes could not start ({error!r}); a script that "
                        'starts them needs an `if __name__ == "__main__":` guard'
                    )
                logger.warning(
                    "%s; searching in the calling process instead",
                    self.unavailable or f"a search process stopped: {error!r}",
                )
                self._changed.notify_all()
        worker.executor.shutdown(wait=False, cancel_futures=True)
        return f"a search process stopped: {error!r}"

    @property
    def worker_pids(self) -> list[int]:
        """The process ids of the running workers (none before the first search)."""
        with self._changed:
            executors = [worker.executor for worker in self._workers]
        return sorted(pid for ex in executors for pid in (getattr(ex, "_processes", None) or ()))

    def close(self) -> None:
        """Stop the workers (a later search starts new ones)."""
        with self._changed:
            workers, self._workers, self._idle = self._workers, [], []
            self._changed.notify_all()
        for worker in workers:
            worker.executor.shutdown(wait=False, cancel_futures=True)


#: Pools by ``(id(store), processes)``; each is closed when its store object is collected.
_POOLS: dict[tuple[int, int], SearchProcesses] = {}
_POOLS_LOCK = threading.Lock()


def shared_search_processes(store: LanceDBPageStore, processes: int) -> SearchProcesses:
    """The pool of ``processes`` workers searching ``store``, shared by every retriever over
    that store object (made at the first call, closed when the store object goes)."""
    key = (id(store), processes)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = SearchProcesses(store, processes)
            weakref.finalize(store, _forget_pool, key, pool)
        return pool


def _forget_pool(key: tuple[int, int], pool: SearchProcesses) -> None:
    with _POOLS_LOCK:
        if _POOLS.get(key) is pool:
            del _POOLS[key]
    pool.close()
