"""Tests of the page store on S3-compatible object storage (the local moto server, which
requires its own credentials and supports the conditional writes Lance commits with): ingest
and search, delete, compaction, two writers at once, a reader during commits, and storage
that cannot be reached or refuses the credentials.
"""

from __future__ import annotations

import socket
import threading

import pytest
from page_documents import document_pages, vectors_for
from pdfs import page_ids_of, write_numbered_pdf

from llama_index_vlm.cli import main
from llama_index_vlm.distributed.local_s3 import LocalS3Server
from llama_index_vlm.errors import StoreError
from llama_index_vlm.ingestion import ingest
from llama_index_vlm.retriever import ColPaliRetriever
from llama_index_vlm.store import LanceDBPageStore
from llama_index_vlm.store import table as table_module

FINGERPRINT = {"model": "test", "embedding_dim": 16}


def open_again(store: LanceDBPageStore, **settings) -> LanceDBPageStore:
    """Another handle (its own connection) on the same store, as another process has."""
    return LanceDBPageStore(uri=store.uri, storage_options=store.storage_options, **settings)


def fragments(store: LanceDBPageStore) -> int:
    """The number of data fragments of the store's table (each commit of new pages adds one)."""
    table = store.client.open_table(store.table_name)
    return table.stats()["fragment_stats"]["num_fragments"]


def test_search_on_s3_finds_what_search_on_disk_finds(
    tmp_path, s3_store, colpali_encoder, reader, monkeypatch
):
    """The hits' nodes are read by row address from the Lance dataset on both stores."""
    taken_from_lance = []
    take = table_module.take_rows

    def spied_take(*args):
        taken = take(*args)
        taken_from_lance.append(taken is not None)
        return taken

    monkeypatch.setattr(table_module, "take_rows", spied_take)
    for name in "ab":
        write_numbered_pdf(tmp_path / "docs" / f"{name}.pdf", 2)
    local = LanceDBPageStore(uri=str(tmp_path / "index"))
    for store in (s3_store, local):
        ingest(tmp_path / "docs", colpali_encoder, store, reader=reader, show_progress=False)

    hits = {
        name: [
            (hit.node.node_id, round(hit.score, 4), hit.node.image)
            for hit in ColPaliRetriever(
                encoder=colpali_encoder, store=store, similarity_top_k=3
            ).retrieve("a page 2")
        ]
        for name, store in (("s3", s3_store), ("disk", local))
    }

    assert len(hits["s3"]) == 3 and hits["s3"] == hits["disk"]
    assert taken_from_lance.count(True) >= 2 and False not in taken_from_lance


def test_delete_on_s3_removes_only_that_document(
    tmp_path, s3_store, colpali_encoder, reader, check_whole_pages
):
    a = write_numbered_pdf(tmp_path / "docs" / "a.pdf", 2)
    b = write_numbered_pdf(tmp_path / "docs" / "b.pdf", 3)
    ingest(tmp_path / "docs", colpali_encoder, s3_store, reader=reader, show_progress=False)

    s3_store.delete(next(iter(page_ids_of(a, 1))).rsplit("-p", 1)[0])

    assert check_whole_pages(open_again(s3_store)) == page_ids_of(b, 3)


def test_compaction_on_s3_merges_fragments_and_keeps_every_page(
    tmp_path, s3_store, colpali_encoder, reader
):
    for name in "abcd":
        write_numbered_pdf(tmp_path / "docs" / f"{name}.pdf", 1)
    # One commit, so one fragment, per page.
    ingest(
        tmp_path / "docs",
        colpali_encoder,
        s3_store,
        reader=reader,
        batch_size=1,
        show_progress=False,
    )
    pages_before = s3_store.page_hashes()
    vectors_before = s3_store.get_page_vectors(sorted(pages_before))
    fragments_before = fragments(s3_store)

    s3_store.optimize()

    assert fragments_before == 4
    assert fragments(s3_store) == 1
    assert s3_store.page_hashes() == pages_before
    after = s3_store.get_page_vectors(sorted(pages_before))
    assert all((x == y).all() for x, y in zip(after, vectors_before, strict=True))


def test_two_writers_at_once_on_s3_store_every_page_once(
    tmp_path, s3_store, colpali_encoder, reader, check_whole_pages
):
    shared = write_numbered_pdf(tmp_path / "shared" / "shared.pdf", 2)
    own = [write_numbered_pdf(tmp_path / f"w{n}" / f"own{n}.pdf", 3) for n in range(2)]
    writers = [s3_store, open_again(s3_store)]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        start.wait()
        try:
            # Page by page (one commit each), both creating the table and racing on `shared`.
            ingest(
                [own[n], shared],
                colpali_encoder,
                writers[n],
                reader=reader,
                batch_size=1,
                show_progress=False,
            )
        except BaseException as error:  # noqa: BLE001 - re-raised by the test below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)

    assert not errors
    expected = page_ids_of(own[0], 3) | page_ids_of(own[1], 3) | page_ids_of(shared, 2)
    assert check_whole_pages(open_again(s3_store)) == expected


def test_two_writers_with_the_dynamodb_commit_store_store_every_page_once(s3_server, s3_uri):
    import boto3

    table = s3_server.dynamodb_commit_table()
    uri = s3_uri.replace("s3://", "s3+ddb://") + f"?ddbTableName={table}"
    writers = [LanceDBPageStore(uri=uri, storage_options=s3_server.storage_options)]
    writers.append(open_again(writers[0]))
    documents = [document_pages(f"doc{n}", 4) for n in range(2)]
    start = threading.Barrier(2)

    def write(n: int) -> None:
        start.wait()
        for page in documents[n]:  # one commit per page, racing the other writer
            writers[n].add([page], page_vectors=vectors_for([page]), fingerprint=FINGERPRINT)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    expected = {page.node_id for pages in documents for page in pages}
    assert sorted(open_again(writers[0]).page_ids()) == sorted(expected)
    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=s3_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=s3_server.access_key_id,
        aws_secret_access_key=s3_server.secret_access_key,
    )
    commits = dynamodb.scan(TableName=table)["Items"]
    assert len([c for c in commits if c["base_uri"]["S"].endswith(".lance")]) >= 8


def test_a_reader_sees_only_committed_versions_while_a_writer_commits(
    tmp_path, s3_store, colpali_encoder, reader
):
    first = write_numbered_pdf(tmp_path / "first" / "first.pdf", 2)
    ingest(first, colpali_encoder, s3_store, reader=reader, show_progress=False)
    files = [write_numbered_pdf(tmp_path / "docs" / f"f{n}.pdf", 2) for n in range(4)]
    whole_files = [frozenset(page_ids_of(path, 2)) for path in [first, *files]]
    reading = open_again(s3_store)
    pinned = reading.version
    seen: list[set[str]] = []

    # A commit per file: every version holds whole files.
    writer = threading.Thread(
        target=ingest,
        args=(tmp_path / "docs", colpali_encoder, s3_store),
        kwargs={"reader": reader, "batch_size": 2, "show_progress": False},
    )
    writer.start()
    while writer.is_alive():
        seen.append(set(reading.page_hashes()))
    writer.join()
    seen.append(set(reading.page_hashes()))

    assert len({frozenset(pages) for pages in seen}) >= 3, "no commit seen while writing"
    for pages in seen:
        assert pages == set().union(*(f for f in whole_files if f <= pages)), "part of a file"
    assert seen[-1] == set().union(*whole_files)
    assert set(reading.page_ids(version=pinned)) == whole_files[0]
    assert len(reading.get_page_vectors(sorted(whole_files[0]), version=pinned)) == 2


def test_a_reader_that_never_checks_keeps_its_version_until_refreshed(
    tmp_path, s3_store, colpali_encoder, reader
):
    a = write_numbered_pdf(tmp_path / "a" / "a.pdf", 1)
    b = write_numbered_pdf(tmp_path / "b" / "b.pdf", 1)
    ingest(a, colpali_encoder, s3_store, reader=reader, show_progress=False)
    reading = open_again(s3_store, read_consistency_interval=None)
    assert set(reading.page_ids()) == page_ids_of(a, 1)

    ingest(b, colpali_encoder, s3_store, reader=reader, show_progress=False)

    assert set(reading.page_ids()) == page_ids_of(a, 1)
    reading.refresh()
    assert set(reading.page_ids()) == page_ids_of(a, 1) | page_ids_of(b, 1)


# ------------------------------------------------------------------ unreachable or refused


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_endpoint_is_one_store_error(s3_server):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    options = {**s3_server.storage_options, "aws_endpoint": endpoint}

    with pytest.raises(StoreError) as raised:
        LanceDBPageStore(uri=s3_server.uri("unreachable"), storage_options=options)

    message = str(raised.value)
    assert f"cannot reach the object store at {endpoint}" in message
    assert "connection refused" in message and "aws_endpoint" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "option, value, code",
    [
        ("aws_secret_access_key", "not-the-secret", "SignatureDoesNotMatch"),
        ("aws_access_key_id", "AKIANOTAKEY", "InvalidAccessKeyId"),
    ],
)
def test_refused_credentials_are_one_store_error(s3_server, option, value, code):
    options = {**s3_server.storage_options, option: value}

    with pytest.raises(StoreError) as raised:
        LanceDBPageStore(uri=s3_server.uri("refused"), storage_options=options)

    message = str(raised.value)
    assert f"refused the credentials for {s3_server.uri('refused')!r} ({code}" in message
    assert "aws_secret_access_key" in message and "\n" not in message


def test_a_missing_bucket_is_one_store_error(s3_server):
    with pytest.raises(StoreError, match=r"has no bucket for 's3://no-such-bucket/index' \("):
        LanceDBPageStore(uri="s3://no-such-bucket/index", storage_options=s3_server.storage_options)


def test_storage_lost_after_opening_is_one_store_error_on_reads_and_writes():
    pages = document_pages("d1", 2)
    with LocalS3Server() as lost:
        store = LanceDBPageStore(uri=lost.uri("lost"), storage_options=lost.storage_options)
        store.add(pages, page_vectors=vectors_for(pages), fingerprint=FINGERPRINT)

    with pytest.raises(StoreError, match="cannot reach the object store at http://127.0.0.1"):
        store.version  # noqa: B018 - what a retriever checks before every query
    with pytest.raises(StoreError, match="cannot reach the object store"):
        store.add(pages, page_vectors=vectors_for(pages), fingerprint=FINGERPRINT)


def test_the_cli_reports_refused_credentials_in_one_line(s3_server, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")

    status = main(["search", "revenue", "--store", s3_server.uri("cli")])

    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("error: the object store at ") and err.count("\n") == 1
    assert "SignatureDoesNotMatch" in err and "Traceback" not in err
