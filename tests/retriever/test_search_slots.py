"""At most one search per core at a time (llama_index_vlm.retriever.search_slots)."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from llama_index_vlm.retriever import ColPaliRetriever, search_slots
from llama_index_vlm.retriever.page_caches import ExactPageCache, FastPageCache
from llama_index_vlm.search import FastPageIndex


def test_one_slot_per_usable_core():
    assert search_slots.usable_cores() == len(os.sched_getaffinity(0))
    # A fresh semaphore of that size: the module's own is at its full count when idle.
    acquired = 0
    while search_slots._SLOTS.acquire(blocking=False):
        acquired += 1
    for _ in range(acquired):
        search_slots._SLOTS.release()
    assert acquired == search_slots.usable_cores()


def test_no_more_threads_inside_than_slots(monkeypatch):
    monkeypatch.setattr(search_slots, "_SLOTS", threading.BoundedSemaphore(2))
    inside, most, lock = 0, 0, threading.Lock()

    def search() -> None:
        nonlocal inside, most
        with search_slots.search_slot():
            with lock:
                inside += 1
                most = max(most, inside)
            time.sleep(0.05)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=search) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert most == 2 and inside == 0


def test_a_slot_is_given_back_when_the_search_fails(monkeypatch):
    monkeypatch.setattr(search_slots, "_SLOTS", threading.BoundedSemaphore(1))
    with pytest.raises(RuntimeError), search_slots.search_slot():
        raise RuntimeError("search failed")
    assert search_slots._SLOTS.acquire(blocking=False)


# pylance (imported by earlier tests' reads) warns at every fork; this child never reads a table.
@pytest.mark.filterwarnings("ignore:lance is not fork-safe")
def test_a_forked_child_starts_with_every_slot_free():
    with search_slots.search_slot():  # held by this thread while the process forks
        pid = os.fork()
        if pid == 0:  # the child: no thread here will give the parent's slot back
            free = [search_slots._SLOTS.acquire(blocking=False) for _ in range(os.cpu_count())]
            os._exit(0 if sum(free) == search_slots.usable_cores() else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize(
    ("search_mode", "cache_class"), [("exact", ExactPageCache), ("fast", FastPageCache)]
)
def test_the_retriever_searches_its_cache_in_a_slot(
    store, colpali_encoder, monkeypatch, search_mode, cache_class
):
    monkeypatch.setattr(search_slots, "_SLOTS", threading.BoundedSemaphore(1))
    search = cache_class.search
    free_slots_while_searching: list[bool] = []

    def searching(cache, *args, **kwargs):
        free = search_slots._SLOTS.acquire(blocking=False)
        if free:
            search_slots._SLOTS.release()
        free_slots_while_searching.append(free)
        return search(cache, *args, **kwargs)

    monkeypatch.setattr(cache_class, "search", searching)
    retriever = ColPaliRetriever(encoder=colpali_encoder, store=store, search_mode=search_mode)
    assert len(retriever.retrieve("revenue")) == 5
    assert free_slots_while_searching == [False]  # the one slot was this search's
    assert search_slots._SLOTS.acquire(blocking=False)  # and given back after it


def _threads_inside_a_search(started: threading.Event | None = None, hold=None) -> list[int]:
    """torch's thread count in this thread before, inside and after a search slot."""
    counts = [torch.get_num_threads()]
    with search_slots.search_slot():
        counts.append(torch.get_num_threads())
        if started is not None:
            started.set()
        if hold is not None:
            hold.wait(timeout=30)
    counts.append(torch.get_num_threads())
    return counts


@pytest.fixture
def two_openmp_threads():
    """torch's default of 2 threads (a 2-core machine's), whatever this run was started with."""
    if search_slots._OPENMP is None:
        pytest.skip("torch was built without OpenMP: there is no thread team to size")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_a_search_alone_keeps_every_openmp_thread(two_openmp_threads):
    counts: list[int] = []
    alone = threading.Thread(target=lambda: counts.extend(_threads_inside_a_search()))
    alone.start()
    alone.join(timeout=30)
    assert counts == [2, 2, 2]


def test_a_search_beside_another_uses_one_openmp_thread_until_it_ends(
    two_openmp_threads, monkeypatch
):
    monkeypatch.setattr(search_slots, "_SLOTS", threading.BoundedSemaphore(2))
    started, release, first = threading.Event(), threading.Event(), []
    running = threading.Thread(
        target=lambda: first.extend(_threads_inside_a_search(started, release))
    )
    running.start()
    assert started.wait(timeout=30)
    second: list[int] = []
    beside = threading.Thread(target=lambda: second.extend(_threads_inside_a_search()))
    beside.start()
    beside.join(timeout=30)
    release.set()
    running.join(timeout=30)
    assert first == [2, 2, 2]  # the search that was alone when it began keeps its team
    assert second == [2, 1, 2]  # one thread beside it, its own count back afterwards
    assert torch.get_num_threads() == 2  # no other thread's count changed
    assert search_slots._running == 0


# ------------------------------------------------------------------ the rerank's threads


def _widening_times(on_team: float, on_one: float, asked: list[int]):
    def seconds(threads: int, repeats: int = 15) -> float:
        asked.append(threads)
        return on_one if threads == 1 else on_team

    return seconds


@pytest.mark.parametrize(
    ("on_team", "on_one", "one_thread"),
    [
        (62e-6, 8.5e-6, True),  # sleeping team threads woken at every region (PASSIVE, a VM)
        (5.3e-6, 9.0e-6, False),  # spinning team threads: the team is faster
        (10e-6, 8e-6, False),  # slower on the team, but within the margin
    ],
)
def test_the_probe_puts_the_rerank_on_one_thread_only_where_the_team_is_much_slower(
    two_openmp_threads, monkeypatch, on_team, on_one, one_thread
):
    asked: list[int] = []
    monkeypatch.setattr(
        search_slots, "page_widening_seconds", _widening_times(on_team, on_one, asked)
    )
    assert search_slots._probe_rerank_threads() is one_thread
    assert sorted(asked) == [1, 2]  # the process's team (2 here), not the caller's count


def test_the_probe_runs_once_per_process(monkeypatch):
    monkeypatch.setattr(search_slots, "_rerank_on_one_thread", None)
    calls = []
    monkeypatch.setattr(search_slots, "_probe_rerank_threads", lambda: calls.append(1) or True)
    threads = [threading.Thread(target=search_slots.rerank_on_one_thread) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert search_slots.rerank_on_one_thread() is True
    assert calls == [1]


def test_the_probe_times_a_real_widening_and_answers():
    assert search_slots.page_widening_seconds(1, repeats=3) > 0
    if search_slots._OPENMP is not None:
        assert search_slots._probe_rerank_threads() in (True, False)


@pytest.mark.parametrize("one_thread", [True, False])
def test_rerank_threads_narrows_this_thread_only_where_chosen(
    two_openmp_threads, monkeypatch, one_thread
):
    monkeypatch.setattr(search_slots, "_rerank_on_one_thread", one_thread)
    with search_slots.rerank_threads():
        inside = torch.get_num_threads()
    assert inside == (1 if one_thread else 2)
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("one_thread", [True, False])
def test_the_fast_cache_reranks_on_the_chosen_threads(
    store, colpali_encoder, two_openmp_threads, monkeypatch, one_thread
):
    monkeypatch.setattr(search_slots, "_rerank_on_one_thread", one_thread)
    rerank_vectors, candidates = FastPageCache._rerank_vectors, FastPageIndex.candidates
    seen: dict[str, list[int]] = {"rerank": [], "candidates": []}

    def reading(cache, *args, **kwargs):
        seen["rerank"].append(torch.get_num_threads())
        return rerank_vectors(cache, *args, **kwargs)

    def choosing(index, *args, **kwargs):
        seen["candidates"].append(torch.get_num_threads())
        return candidates(index, *args, **kwargs)

    monkeypatch.setattr(FastPageCache, "_rerank_vectors", reading)
    monkeypatch.setattr(FastPageIndex, "candidates", choosing)
    retriever = ColPaliRetriever(encoder=colpali_encoder, store=store, search_mode="fast")
    assert len(retriever.retrieve("revenue")) == 5
    assert seen["candidates"] == [2]  # the first stage keeps the team
    assert seen["rerank"] and set(seen["rerank"]) == {1 if one_thread else 2}
    assert torch.get_num_threads() == 2
