"""The API on a real uvicorn, over real sockets: streaming, concurrency and disconnects."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serving import live_server, wait_for

from llama_index_vlm.server import ServerLimits

QUESTION = {"question": "What was the revenue?", "k": 1, "stream": True}


def read_events(lines, until: str | None = None) -> list[tuple[str, dict]]:
    """Server-sent events from an iterator of lines, up to and including the event ``until``
    (all of them when None)."""
    events, event = [], None
    for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((event, json.loads(line.removeprefix("data: "))))
            if event == until:
                break
    return events


def ask_streamed(url: str, body: dict = QUESTION) -> list[tuple[str, dict]]:
    with httpx.Client(timeout=120) as client:
        with client.stream("POST", f"{url}/ask", json=body) as response:
            assert response.status_code == 200, response.read()
            return read_events(response.iter_lines())


@pytest.fixture
def url(make_app):
    with live_server(make_app()) as base_url:
        yield base_url


def test_tokens_arrive_while_the_answer_is_still_being_generated(
    url, generation_gate, generate_calls
):
    gate = generation_gate(24, hold_at=24)  # the last token waits for the test
    with httpx.Client(timeout=120) as client:
        with client.stream("POST", f"{url}/ask", json=QUESTION) as response:
            lines = response.iter_lines()
            first = read_events(lines, until="token")
            generating_when_first_token_came = generate_calls.finished == 0
            gate.release()
            rest = read_events(lines)

    assert first[-1][0] == "token" and first[-1][1]["text"]
    assert generating_when_first_token_came
    assert [name for name, _ in rest][-2:] == ["pages", "done"]
    streamed = "".join(data["text"] for name, data in first + rest if name == "token")
    assert rest[-1][1]["answer"] == streamed


def test_concurrent_askers_are_answered_one_generation_at_a_time(
    url, generation_gate, generate_calls
):
    generation_gate(8)

    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(lambda _: ask_streamed(url)[-1], range(3)))

    assert [name for name, _ in answers] == ["done"] * 3
    assert len({data["answer"] for _, data in answers}) == 1  # greedy: the same answer
    assert generate_calls.finished == 3 and generate_calls.most_at_once == 1


def test_a_full_queue_answers_503(make_app, generation_gate):
    gate = generation_gate(4, hold_at=1)
    app = make_app(limits=ServerLimits(generation_slots=1, max_waiting=0))
    with live_server(app) as base_url, ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(ask_streamed, base_url)
        assert gate.holding.wait(timeout=60)
        refused = httpx.post(f"{base_url}/ask", json=QUESTION, timeout=60)
        gate.release()
        answered = first.result(timeout=120)

    assert refused.status_code == 503 and refused.headers["retry-after"] == "2"
    assert "busy" in refused.json()["detail"]
    assert answered[-1][0] == "done"


def test_searches_are_served_while_an_answer_is_generated(url, generation_gate):
    gate = generation_gate(4, hold_at=1)
    with ThreadPoolExecutor(max_workers=1) as pool:
        asking = pool.submit(ask_streamed, url)
        assert gate.holding.wait(timeout=60)
        search = httpx.post(f"{url}/search", json={"query": "revenue", "k": 2}, timeout=60)
        gate.release()
        asking.result(timeout=120)

    assert search.status_code == 200 and len(search.json()["results"]) == 2


def test_concurrent_searches_all_get_the_same_ranking(url):
    body = {"query": "warranty terms", "k": 3}

    def search(_):
        response = httpx.post(f"{url}/search", json=body, timeout=60)
        return [(hit["page_id"], hit["score"]) for hit in response.json()["results"]]

    with ThreadPoolExecutor(max_workers=8) as pool:
        rankings = list(pool.map(search, range(16)))

    assert len(rankings[0]) == 3 and all(ranking == rankings[0] for ranking in rankings)


def test_a_client_that_disconnects_stops_its_generation_and_frees_the_slot(
    url, generation_gate, generate_calls, monkeypatch, tiny_vlm
):
    long_answer = 3000
    gate = generation_gate(long_answer)
    with httpx.Client(timeout=120) as client:
        with client.stream("POST", f"{url}/ask", json=QUESTION) as response:
            assert read_events(response.iter_lines(), until="token")
        # leaving the blocks closes the connection mid-answer

    wait_for(lambda: generate_calls.finished == 1, "the generation to stop")
    assert gate.tokens < long_answer
    info = wait_for(
        lambda: (body := httpx.get(f"{url}/info").json())["generation"]["active"] == 0 and body,
        "the slot to be released",
    )
    assert info["generation"]["waiting"] == 0
    generation_gate(4)
    assert ask_streamed(url)[-1][0] == "done"
