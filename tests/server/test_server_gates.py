"""Generation slots and the queue for them; the encoder's one-call-at-a-time lock."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from llama_index_vlm.server.gates import GenerationQueue, SerialEncoder, ServerBusyError


def test_askers_beyond_slots_and_queue_are_refused():
    queue = GenerationQueue(slots=1, max_waiting=1)
    queue.ticket()
    queue.ticket()

    with pytest.raises(ServerBusyError, match="busy"):
        queue.ticket()


def test_a_released_slot_goes_to_the_next_asker():
    async def scenario():
        queue = GenerationQueue(slots=1, max_waiting=1)
        first, second = queue.ticket(), queue.ticket()
        await first.acquire()
        waiting = asyncio.create_task(second.acquire())
        await asyncio.sleep(0)
        blocked = not waiting.done()
        first.release()
        await asyncio.wait_for(waiting, timeout=10)
        return blocked, queue.active, queue.waiting

    assert asyncio.run(scenario()) == (True, 1, 0)


def test_releasing_twice_gives_back_one_place():
    queue = GenerationQueue(slots=1, max_waiting=0)
    ticket = queue.ticket()

    ticket.release()
    ticket.release()

    assert (queue.active, queue.waiting) == (0, 0)
    queue.ticket()  # the place is free again, once


def test_a_cancelled_wait_leaves_the_queue():
    async def scenario():
        queue = GenerationQueue(slots=1, max_waiting=1)
        holder, waiter = queue.ticket(), queue.ticket()
        await holder.acquire()
        task = asyncio.create_task(waiter.acquire())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        waiter.release()  # what the request's cleanup does
        return queue.active, queue.waiting

    assert asyncio.run(scenario()) == (1, 0)


def test_encoder_calls_take_turns():
    class SlowEncoder:
        embedding_dim = 128

        def __init__(self):
            self.running = 0
            self.most_at_once = 0

        def embed_queries(self, queries, **kwargs):
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            time.sleep(0.01)
            self.running -= 1
            return queries

    encoder = SlowEncoder()
    serial = SerialEncoder(encoder)
    threads = [threading.Thread(target=serial.embed_queries, args=(["q"],)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert encoder.most_at_once == 1
    assert serial.embedding_dim == 128  # everything else is the wrapped encoder's
