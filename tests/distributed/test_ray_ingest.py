"""Tests of ``ingest(..., engine="ray")`` on a local Ray instance (2 CPUs), with the tiny
ColPali checkpoint: the same pages as a local ingest, into a store on the local S3 server; the
CLI's ``--ray``; and an encoder worker killed mid-run.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from pdfs import page_ids_of, write_damaged_page_pdf, write_numbered_pdf

from llama_index_vlm.cli import main
from llama_index_vlm.encoder import ColPaliEncoder
from llama_index_vlm.ingestion import ingest
from llama_index_vlm.store import LanceDBPageStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    """Three good PDFs, a file that is not a PDF and one whose second page cannot render."""
    folder = tmp_path_factory.mktemp("docs")
    for name, pages in (("a", 3), ("b", 2), ("c", 1)):
        write_numbered_pdf(folder / f"{name}.pdf", pages)
    (folder / "notes.pdf").write_bytes(b"not a pdf")
    write_damaged_page_pdf(folder / "damaged.pdf", n_pages=3, damaged_page=2)
    return folder


@pytest.fixture(scope="module")
def local_ingest(docs, tmp_path_factory, colpali_encoder, reader):
    store = LanceDBPageStore(uri=str(tmp_path_factory.mktemp("local") / "index"))
    return store, ingest(docs, colpali_encoder, store, reader=reader, show_progress=False)


@pytest.fixture(scope="module")
def ray_ingest(docs, ray_cluster, s3_server, colpali_encoder, reader):
    store = LanceDBPageStore(uri=s3_server.uri("ray-ingest"), **_s3_options(s3_server))
    report = ingest(
        docs,
        colpali_encoder,
        store,
        reader=reader,
        batch_size=2,
        show_progress=False,
        engine="ray",
    )
    return store, report


def _s3_options(s3_server) -> dict:
    return {"storage_options": s3_server.storage_options}


def test_ray_ingest_stores_the_same_pages_as_a_local_ingest(
    ray_ingest, local_ingest, check_whole_pages
):
    (ray_store, _), (local_store, _) = ray_ingest, local_ingest

    assert check_whole_pages(ray_store) == check_whole_pages(local_store)
    assert ray_store.page_hashes() == local_store.page_hashes()
    page_ids = local_store.page_ids()
    for ray_vectors, local_vectors in zip(
        ray_store.get_page_vectors(page_ids), local_store.get_page_vectors(page_ids), strict=True
    ):
        np.testing.assert_array_equal(ray_vectors, local_vectors)


def test_ray_ingest_reports_what_a_local_ingest_reports(ray_ingest, local_ingest):
    (_, ray_report), (_, local_report) = ray_ingest, local_ingest

    assert ray_report.failed == local_report.failed
    assert {Path(failed.path).name for failed in ray_report.failed} == {
        "notes.pdf",
        "damaged.pdf",
    }
    counts = ("files", "pages_added", "pages_replaced", "pages_unchanged", "pages_removed")
    assert [getattr(ray_report, name) for name in counts] == [
        getattr(local_report, name) for name in counts
    ]


def test_the_cli_rerun_with_ray_adds_nothing(
    ray_ingest, docs, s3_server, tiny_checkpoint, monkeypatch, capsys
):
    store, _ = ray_ingest
    version = store.version
    # The CLI takes object-store settings from the environment, as LanceDB does.
    monkeypatch.setenv("AWS_ENDPOINT", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")

    status = main(
        [
            "index",
            str(docs),
            "--store",
            store.uri,
            "--model",
            str(tiny_checkpoint("colpali")),
            "--dpi",
            "36",
            "--ray",
            "--no-progress",
        ]
    )

    out = capsys.readouterr().out
    assert status == 1  # two files cannot be indexed, as in the first run
    assert out.startswith("0 pages added, 6 unchanged, 2 files failed from 5 files")
    assert store.version == version


def test_an_encoder_worker_killed_mid_run_is_replaced_and_nothing_is_lost_or_duplicated(
    tmp_path, ray_cluster, tiny_checkpoint, reader, check_whole_pages
):
    files = [write_numbered_pdf(tmp_path / "docs" / f"f{i}.pdf", 3) for i in range(6)]
    encoder = ColPaliEncoder.from_pretrained(
        tiny_checkpoint("colpali"), batch_size=1, show_progress=False
    )
    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    watcher, killed = _kill_encoder_workers_after_the_first_commit(store)

    report = ingest(
        tmp_path / "docs",
        encoder,
        store,
        reader=reader,
        batch_size=1,
        show_progress=False,
        engine="ray",
    )

    watcher.join(timeout=60)
    assert killed, "no encoder worker was killed"
    assert store.version > killed[0], "the run did not go on after the kill"
    assert check_whole_pages(store) == set().union(*(page_ids_of(f, 3) for f in files))
    assert report.ok and report.pages_added == 18


def _kill_encoder_workers_after_the_first_commit(
    store: LanceDBPageStore,
) -> tuple[threading.Thread, list[int]]:
    """SIGKILL the encoder actors' processes once the store has its first commit, from a
    thread; the list returned gets the table version at the time of each kill."""
    killed: list[int] = []

    def watch() -> None:
        deadline = time.monotonic() + 240
        while store.version == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        version = store.version
        for process in psutil.process_iter(["cmdline"]):
            if any("PageEncoder" in part for part in process.info["cmdline"] or []):
                process.send_signal(signal.SIGKILL)
                killed.append(version)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher, killed
