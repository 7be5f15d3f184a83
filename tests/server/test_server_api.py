"""The JSON API through FastAPI's TestClient: each route's answer, errors and limits."""

from __future__ import annotations

import io
import json
import threading

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serving import wait_for

from llama_index_vlm.images import decode_image
from llama_index_vlm.retriever.page_caches import store_cache_holder
from llama_index_vlm.server import Models, ServerLimits


def sse_events(text: str) -> list[tuple[str, dict]]:
    """(event, payload) of each server-sent event in a response body."""
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def wait_for_job(client: TestClient, job_id: str) -> dict:
    def finished():
        job = client.get(f"/jobs/{job_id}").json()
        return job if job["state"] in ("done", "failed") else None

    return wait_for(finished, f"job {job_id}")


def upload(client: TestClient, *files: tuple[str, bytes, str]):
    return client.post("/documents", files=[("files", file) for file in files])


# ------------------------------------------------------------------------------ search


def test_search_ranks_pages_best_first_with_their_fields(client, store):
    response = client.post("/search", json={"query": "revenue", "k": 3})

    assert response.status_code == 200
    results = response.json()["results"]
    assert {hit["page_id"] for hit in results} == set(store.page_ids())
    assert [hit["score"] for hit in results] == sorted((h["score"] for h in results), reverse=True)
    first = results[0]
    assert first["file_name"] == "report.pdf"
    assert first["label"] == f"report.pdf, page {first['page_number']}"
    assert first["page_id"] == f"{first['doc_id']}-p{first['page_number']}"


def test_search_scores_match_the_library_retriever(client, store, colpali_encoder):
    from llama_index_vlm.retriever import ColPaliRetriever

    expected = ColPaliRetriever(encoder=colpali_encoder, store=store, similarity_top_k=2)
    expected = [(hit.node.node_id, hit.score) for hit in expected.retrieve("warranty")]

    results = client.post("/search", json={"query": "warranty", "k": 2}).json()["results"]

    assert [(hit["page_id"], pytest.approx(hit["score"])) for hit in results] == expected


def test_search_filters_on_page_fields(client):
    body = {"query": "revenue", "k": 5, "filters": {"page_number": 2}}

    results = client.post("/search", json=body).json()["results"]

    assert [hit["page_number"] for hit in results] == [2]


def test_searches_reuse_the_page_cache_loaded_at_start(client, store, monkeypatch):
    reads = []
    original = type(store).get_page_vectors

    def get_page_vectors(self, *args, **kwargs):
        reads.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(store), "get_page_vectors", get_page_vectors)
    for query in ("revenue", "warranty", "installation"):
        assert client.post("/search", json={"query": query}).status_code == 200
    assert client.post("/ask", json={"question": "revenue?"}).status_code == 200

    assert reads == []  # exact mode: every page's vectors were read once, at start


def test_empty_query_is_a_400_saying_why(client):
    response = client.post("/search", json={"query": "   ", "k": 2})

    assert response.status_code == 400
    assert "empty" in response.json()["detail"]


def test_out_of_range_k_is_refused_by_the_schema(client):
    assert client.post("/search", json={"query": "revenue", "k": 0}).status_code == 422


# ------------------------------------------------------------------------------ ask


def test_ask_answers_with_the_generated_text_and_cited_pages(client, tiny_vlm, store):
    response = client.post("/ask", json={"question": "What was the revenue?", "k": 2})

    assert response.status_code == 200
    body = response.json()
    assert body["answer"]  # the tiny model's 12 tokens, whatever they say
    assert len(body["pages"]) == 2
    assert {page["page_id"] for page in body["pages"]} <= set(store.page_ids())


def test_streamed_ask_sends_tokens_then_pages_then_done(client):
    body = {"question": "What was the revenue?", "k": 2, "stream": True}

    response = client.post("/ask", json=body)

    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names[-2:] == ["pages", "done"] and set(names[:-2]) == {"token"}
    tokens = "".join(payload["text"] for name, payload in events if name == "token")
    assert events[-1][1]["answer"] == tokens
    assert len(events[-2][1]["pages"]) == 2


def test_streamed_and_whole_answers_are_the_same_text(client):
    question = {"question": "Which page describes the warranty?", "k": 1}

    whole = client.post("/ask", json=question).json()["answer"]
    streamed = sse_events(client.post("/ask", json={**question, "stream": True}).text)

    assert streamed[-1] == ("done", {"answer": whole})


def test_ask_without_an_answering_model_is_501(make_app):
    with TestClient(make_app(vlm=None)) as client:
        response = client.post("/ask", json={"question": "What was the revenue?"})

    assert response.status_code == 501
    assert "--vlm" in response.json()["detail"]


def test_ask_with_filters_matching_nothing_is_a_400(client):
    body = {"question": "What was the revenue?", "filters": {"page_number": 99}}

    response = client.post("/ask", json=body)

    assert response.status_code == 400
    assert "no pages match" in response.json()["detail"]


# ------------------------------------------------------------------------------ pages


def test_page_image_is_the_stored_image(client, store):
    page_id = store.page_ids()[0]
    stored = decode_image(store.get_nodes([page_id])[0].image)

    response = client.get(f"/pages/{page_id}/image")

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"  # the reader's default format
    assert Image.open(io.BytesIO(response.content)).size == stored.size


def test_page_thumbnail_fits_the_size_asked(client, store):
    page_id = store.page_ids()[0]

    response = client.get(f"/pages/{page_id}/image", params={"size": 64})

    assert max(Image.open(io.BytesIO(response.content)).size) == 64


def test_page_map_is_a_png_with_the_matched_region(client, store):
    page_id = store.page_ids()[0]
    width, height = decode_image(store.get_nodes([page_id])[0].image).size

    response = client.get(f"/pages/{page_id}/map", params={"query": "revenue"})

    assert response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (width, height)
    left, top, right, bottom = map(int, response.headers["x-region"].split(","))
    assert 0 <= left < right <= width and 0 <= top < bottom <= height


def test_unknown_page_is_404(client):
    assert client.get("/pages/nope-p1/image").status_code == 404


def test_a_page_id_written_as_sql_finds_nothing(client):
    assert client.get("/pages/x' OR '1'='1/image").status_code == 404


# ------------------------------------------------------------------------------ documents


def test_documents_lists_the_index(client, store):
    documents = client.get("/documents").json()["documents"]

    assert documents == [{"doc_id": store.doc_ids()[0], "file_name": "report.pdf", "pages": 3}]


def test_upload_is_indexed_and_then_found_by_search(client, tmp_path):
    from pdfs import write_numbered_pdf

    pdf = write_numbered_pdf(tmp_path / "numbers.pdf", 4, tag="upload").read_bytes()

    response = upload(client, ("Q3 numbers.pdf", pdf, "application/pdf"))

    assert response.status_code == 202
    job = wait_for_job(client, response.json()["job_id"])
    assert job["state"] == "done" and job["failed"] == []
    assert (job["pages_total"], job["pages_done"], job["pages_added"]) == (4, 4, 4)
    (doc_id,) = job["doc_ids"]
    body = {"query": "numbers", "k": 10, "filters": {"doc_id": doc_id}}
    results = client.post("/search", json=body).json()["results"]
    assert sorted(hit["page_number"] for hit in results) == [1, 2, 3, 4]
    assert {hit["file_name"] for hit in results} == {"Q3 numbers.pdf"}
    listed = {doc["doc_id"]: doc for doc in client.get("/documents").json()["documents"]}
    assert listed[doc_id] == {"doc_id": doc_id, "file_name": "Q3 numbers.pdf", "pages": 4}


def test_job_progress_counts_pages_while_indexing(make_app, colpali_encoder, monkeypatch, tmp_path):
    from pdfs import write_numbered_pdf

    embedding = threading.Event()
    go_on = threading.Event()
    original = colpali_encoder.embed_images

    def held_embed_images(images, **kwargs):
        if len(embedding_calls) == 1:  # the second batch waits until the test has looked
            embedding.set()
            go_on.wait(timeout=60)
        embedding_calls.append(len(images))
        return original(images, **kwargs)

    embedding_calls: list[int] = []
    monkeypatch.setattr(colpali_encoder, "embed_images", held_embed_images)
    app = make_app()
    app.state.server.jobs.batch_size = 1
    pdf = write_numbered_pdf(tmp_path / "three.pdf", 3, tag="progress").read_bytes()
    with TestClient(app) as client:
        job_id = upload(client, ("three.pdf", pdf, "application/pdf")).json()["job_id"]
        assert embedding.wait(timeout=60)
        during = client.get(f"/jobs/{job_id}").json()
        go_on.set()
        after = wait_for_job(client, job_id)

    assert (during["state"], during["pages_done"], during["pages_total"]) == ("running", 2, 3)
    assert (after["state"], after["pages_done"], after["pages_added"]) == ("done", 3, 3)


def test_delete_removes_the_document_its_pages_and_its_upload(client, tmp_path):
    from pdfs import write_numbered_pdf

    pdf = write_numbered_pdf(tmp_path / "gone.pdf", 2, tag="gone").read_bytes()
    job = wait_for_job(
        client, upload(client, ("gone.pdf", pdf, "application/pdf")).json()["job_id"]
    )
    (doc_id,) = job["doc_ids"]
    assert len(list((tmp_path / "uploads").iterdir())) == 1

    response = client.delete(f"/documents/{doc_id}")

    assert response.json() == {"doc_id": doc_id, "pages_deleted": 2, "pages_left": 3}
    assert doc_id not in {doc["doc_id"] for doc in client.get("/documents").json()["documents"]}
    results = client.post("/search", json={"query": "gone", "k": 10}).json()["results"]
    assert doc_id not in {hit["doc_id"] for hit in results}
    assert list((tmp_path / "uploads").iterdir()) == []


def test_deleting_an_unknown_document_is_404(client):
    assert client.delete("/documents/no-such-doc").status_code == 404


def test_unknown_job_is_404(client):
    assert client.get("/jobs/0123").status_code == 404


def test_an_empty_index_fills_from_uploads(colpali_encoder, tmp_path):
    from pdfs import write_numbered_pdf

    from llama_index_vlm.server import create_app
    from llama_index_vlm.store import LanceDBPageStore

    empty = LanceDBPageStore(uri=str(tmp_path / "new_index"))
    pdf = write_numbered_pdf(tmp_path / "first.pdf", 2, tag="first").read_bytes()
    with TestClient(create_app(empty, colpali_encoder, upload_dir=tmp_path / "up")) as client:
        before = client.post("/search", json={"query": "first"}).json()["results"]
        job = wait_for_job(
            client, upload(client, ("first.pdf", pdf, "application/pdf")).json()["job_id"]
        )
        after = client.post("/search", json={"query": "first"}).json()["results"]

    assert before == [] and job["pages_added"] == 2
    assert sorted(hit["page_number"] for hit in after) == [1, 2]


# ------------------------------------------------------------------------------ hostile uploads


def test_uploaded_file_names_are_labels_never_paths(client, tmp_path):
    from pdfs import write_numbered_pdf

    pdf = write_numbered_pdf(tmp_path / "x.pdf", 1, tag="escape").read_bytes()

    response = upload(client, ("../../escaped.pdf", pdf, "application/pdf"))

    job = wait_for_job(client, response.json()["job_id"])
    assert job["file_names"] == ["escaped.pdf"] and job["state"] == "done"
    saved = list((tmp_path / "uploads").iterdir())
    assert len(saved) == 1 and saved[0].name != "escaped.pdf" and saved[0].suffix == ".pdf"
    assert (
        not (tmp_path / "escaped.pdf").exists() and not (tmp_path.parent / "escaped.pdf").exists()
    )


def test_a_text_file_named_pdf_fails_its_job_with_the_reader_reason(client, tmp_path):
    response = upload(client, ("fake.pdf", b"this is not a PDF", "application/pdf"))

    job = wait_for_job(client, response.json()["job_id"])
    assert job["state"] == "done" and job["doc_ids"] == []
    assert [failure["file_name"] for failure in job["failed"]] == ["fake.pdf"]
    assert "PDF" in job["failed"][0]["reason"]
    assert list((tmp_path / "uploads").iterdir()) == []  # a file not indexed is not kept


def test_a_file_of_an_unsupported_type_is_415(client):
    response = upload(client, ("notes.txt", b"hello", "text/plain"))

    assert response.status_code == 415
    assert "notes.txt" in response.json()["detail"]


def test_an_upload_over_the_size_limit_is_413(make_app):
    with TestClient(make_app(limits=ServerLimits(max_upload_bytes=10_000))) as client:
        response = upload(client, ("big.pdf", b"%PDF-" + b"0" * 20_000, "application/pdf"))

    assert response.status_code == 413


def test_a_file_over_the_page_limit_is_not_indexed(make_app, tmp_path):
    from pdfs import write_numbered_pdf

    pdf = write_numbered_pdf(tmp_path / "long.pdf", 3, tag="long").read_bytes()
    with TestClient(make_app(limits=ServerLimits(max_pages_per_file=2))) as client:
        job = wait_for_job(
            client, upload(client, ("long.pdf", pdf, "application/pdf")).json()["job_id"]
        )

    assert job["doc_ids"] == [] and job["pages_added"] == 0
    assert "has 3 pages" in job["failed"][0]["reason"]


# ------------------------------------------------------------------------------ server


def test_health_says_loading_until_the_models_are_loaded(store, colpali_encoder, tmp_path):
    from llama_index_vlm.server import create_app

    loaded = threading.Event()

    def load_models():
        loaded.wait(timeout=60)
        return Models(encoder=colpali_encoder)

    app = create_app(store, load_models=load_models, upload_dir=tmp_path / "uploads")
    with TestClient(app) as client:
        before = client.get("/health")
        search_before = client.post("/search", json={"query": "revenue"})
        loaded.set()
        wait_for(lambda: client.get("/health").status_code == 200, "ready")
        search_after = client.post("/search", json={"query": "revenue"})

    assert (before.status_code, before.json()["status"]) == (503, "loading")
    assert search_before.status_code == 503 and "loading" in search_before.json()["detail"]
    assert search_after.status_code == 200


def test_health_reports_a_model_that_failed_to_load(store, tmp_path):
    from llama_index_vlm.errors import InvalidCheckpointError
    from llama_index_vlm.server import create_app

    def load_models():
        raise InvalidCheckpointError("--vlm: no such checkpoint")

    app = create_app(store, load_models=load_models, upload_dir=tmp_path / "uploads")
    with TestClient(app) as client:
        health = wait_for(
            lambda: (r := client.get("/health")).json()["status"] == "failed" and r, "failure"
        )

    assert health.status_code == 503 and "no such checkpoint" in health.json()["error"]


def test_info_describes_index_models_and_limits(client, store, tiny_vlm):
    info = client.get("/info").json()

    assert (info["pages"], info["documents"]) == (3, 1)
    assert info["retriever"] == store.fingerprint["model"]
    assert info["vlm"] == tiny_vlm.name_or_path
    assert info["auth"] is False
    assert info["generation"] == {"slots": 1, "active": 0, "waiting": 0, "max_waiting": 16}


def test_openapi_schema_documents_every_route(client):
    paths = client.get("/openapi.json").json()["paths"]

    assert set(paths) == {
        "/health",
        "/info",
        "/search",
        "/ask",
        "/pages/{page_id}/image",
        "/pages/{page_id}/map",
        "/documents",
        "/documents/{doc_id}",
        "/jobs/{job_id}",
    }
    assert "text/event-stream" in paths["/ask"]["post"]["responses"]["200"]["content"]


def test_the_page_and_its_assets_are_served(client):
    page = client.get("/")
    script = client.get("/static/app.js")

    assert page.status_code == 200 and 'id="question"' in page.text
    assert script.status_code == 200 and "/ask" in script.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN


def test_a_search_device_keeps_the_pages_there_for_search_and_ask(make_app, store, colpali_encoder):
    import torch
    from fastapi.testclient import TestClient

    from llama_index_vlm.retriever import ColPaliRetriever

    expected = ColPaliRetriever(encoder=colpali_encoder, store=store, similarity_top_k=2)
    expected = [(hit.node.node_id, hit.score) for hit in expected.retrieve("warranty")]
    app = make_app(search_device="cpu")  # the GPU's code path, on the CPU device
    with TestClient(app) as client:
        results = client.post("/search", json={"query": "warranty", "k": 2}).json()["results"]
        held = store_cache_holder(app.state.server.index.store)
        cache = held.cache
        assert cache.device == torch.device("cpu")
        assert client.post("/ask", json={"question": "revenue?"}).status_code == 200
        assert held.cache is cache  # /ask searched the same pages on the device

    assert [(hit["page_id"], pytest.approx(hit["score"])) for hit in results] == expected


def test_a_search_device_torch_cannot_use_is_refused_when_the_app_is_made(make_app):
    from llama_index_vlm.errors import UnsupportedDeviceError

    with pytest.raises(UnsupportedDeviceError, match="unknown search device"):
        make_app(search_device="gpu0")


def test_search_processes_answer_search_and_ask_in_a_worker(
    make_app, store, colpali_encoder, monkeypatch
):
    from fastapi.testclient import TestClient

    from llama_index_vlm.retriever import ColPaliRetriever
    from llama_index_vlm.retriever.search_processes import shared_search_processes

    # This store is small enough for exact search, which stays in the server's process.
    monkeypatch.setattr(ColPaliRetriever, "_search_mode_for", lambda self, n_pages: "fast")
    expected = ColPaliRetriever(encoder=colpali_encoder, store=store, similarity_top_k=2)
    expected = [(hit.node.node_id, hit.score) for hit in expected.retrieve("warranty")]
    app = make_app(search_processes=1)
    try:
        with TestClient(app) as client:
            results = client.post("/search", json={"query": "warranty", "k": 2}).json()
            workers = shared_search_processes(app.state.server.index.store, 1)
            assert len(workers.worker_pids) == 1 and workers.unavailable is None
            assert client.post("/ask", json={"question": "revenue?"}).status_code == 200
    finally:
        shared_search_processes(app.state.server.index.store, 1).close()

    found = [(hit["page_id"], pytest.approx(hit["score"], abs=1e-4)) for hit in results["results"]]
    assert found == expected
