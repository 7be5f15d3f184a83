"""``llama-index-vlm info`` and ``delete`` (llama_index_vlm.cli.admin), which read and write
only the store: they never import torch or transformers.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
from cli_runner import run_cli

from llama_index_vlm.store import LanceDBPageStore

# --------------------------------------------------------------------------- info


def test_info_counts_pages_and_documents(indexed):
    status, out, _ = run_cli("info", "--store", indexed["store"])
    assert status == 0
    assert re.search(r"^pages +3$", out, re.M) and re.search(r"^documents +1$", out, re.M)


def test_info_names_the_model_and_its_vectors(indexed):
    _, out, _ = run_cli("info", "--store", indexed["store"])
    assert f"model      {indexed['colpali']} (ColPaliForRetrieval, 128-dim vectors" in out


def test_info_gives_the_disk_size(indexed):
    _, out, _ = run_cli("info", "--store", indexed["store"])
    assert re.search(r"^disk size +\d+\.\d KiB$", out, re.M)


def test_info_lists_the_documents_by_file(indexed):
    _, out, _ = run_cli("info", "--store", indexed["store"])
    assert str(indexed["pdf"]) in out


def test_info_json_describes_the_store(indexed):
    status, out, _ = run_cli("info", "--store", indexed["store"], "--json")
    assert status == 0
    info = json.loads(out)
    store = LanceDBPageStore(uri=str(indexed["store"]))
    assert info["pages"] == 3 and info["version"] == store.version
    assert info["fingerprint"] == store.fingerprint
    assert info["fingerprint"]["model"] == str(indexed["colpali"])
    assert info["disk_bytes"] > 0


def test_info_json_lists_each_document_with_its_pages(indexed):
    info = json.loads(run_cli("info", "--store", indexed["store"], "--json")[1])
    (document,) = info["documents"]
    assert document["pages"] == 3 and document["file_name"] == "report.pdf"
    assert document["doc_id"] == LanceDBPageStore(uri=str(indexed["store"])).doc_ids()[0]


# --------------------------------------------------------------------------- delete


@pytest.fixture
def copied_store(indexed, tmp_path):
    """A copy of the CLI tests' index, to delete from, and its one document's doc id."""
    store = tmp_path / "copy"
    shutil.copytree(indexed["store"], store)
    doc_id = json.loads(run_cli("info", "--store", store, "--json")[1])["documents"][0]["doc_id"]
    return store, doc_id


def test_delete_refuses_a_document_the_index_does_not_hold(copied_store):
    store, _ = copied_store
    status, _, err = run_cli("delete", "missing.pdf", "--store", store)
    assert status == 2 and "no document 'missing.pdf'" in err


def test_delete_by_file_name_deletes_every_page_of_the_document(copied_store, indexed):
    store, doc_id = copied_store
    status, out, _ = run_cli("delete", "report.pdf", "--store", store)
    assert status == 0
    assert out == f"deleted 3 pages of {indexed['pdf']} (doc id {doc_id}); 0 pages left\n"
    assert json.loads(run_cli("info", "--store", store, "--json")[1])["pages"] == 0


def test_delete_by_doc_id_deletes_the_document(copied_store):
    store, doc_id = copied_store
    status, out, _ = run_cli("delete", doc_id, "--store", store)
    assert status == 0 and out.endswith("; 0 pages left\n")


def test_a_deleted_document_cannot_be_deleted_again(copied_store):
    store, doc_id = copied_store
    run_cli("delete", "report.pdf", "--store", store)
    status, _, err = run_cli("delete", doc_id, "--store", store)
    assert status == 2 and f"no document {doc_id!r}" in err


def test_searching_an_emptied_index_says_it_holds_no_pages(copied_store):
    store, _ = copied_store
    run_cli("delete", "report.pdf", "--store", store)
    status, _, err = run_cli("search", "q", "--store", store)
    assert status == 2 and "holds no pages" in err


# --------------------------------------------------------------------------- no model libraries

#: Runs ``main(argv)`` in a fresh interpreter; prints its status and the model libraries loaded.
_RUN_AND_LIST_IMPORTS = """
import contextlib, io, json, sys
from llama_index_vlm.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    status = main(json.loads(sys.argv[1]))
loaded = [name for name in ("torch", "transformers") if name in sys.modules]
print(json.dumps({"status": status, "loaded": loaded}))
"""


def _run_in_fresh_python(argv: list[str]) -> dict:
    finished = subprocess.run(
        [sys.executable, "-c", _RUN_AND_LIST_IMPORTS, json.dumps(argv)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    return json.loads(finished.stdout.strip().splitlines()[-1])


def test_info_imports_neither_torch_nor_transformers(small_store):
    assert _run_in_fresh_python(["info", "--store", small_store]) == {"status": 0, "loaded": []}


def test_delete_imports_neither_torch_nor_transformers(small_store):
    result = _run_in_fresh_python(["delete", "report", "--store", small_store])
    assert result == {"status": 0, "loaded": []}
    assert LanceDBPageStore(uri=small_store).count() == 0


# --------------------------------------------------------------------------- delete: naming


def test_delete_takes_a_unique_beginning_of_a_doc_id(copied_store):
    store, doc_id = copied_store
    status, out, _ = run_cli("delete", doc_id[:8], "--store", store)
    assert status == 0 and f"(doc id {doc_id}); 0 pages left" in out


def test_delete_refuses_a_beginning_shorter_than_four_characters(copied_store):
    store, doc_id = copied_store
    status, _, err = run_cli("delete", doc_id[:3], "--store", store)
    assert status == 2 and f"no document {doc_id[:3]!r}" in err


def test_delete_refuses_a_beginning_several_doc_ids_share(tmp_path):
    from page_documents import document_pages, vectors_for

    store = LanceDBPageStore(uri=str(tmp_path / "index"))
    for doc_id in ("abcd1111", "abcd2222"):
        pages = document_pages(doc_id, 1)
        store.add(pages, page_vectors=vectors_for(pages), fingerprint={"model": "m"})
    status, _, err = run_cli("delete", "abcd", "--store", store.uri)
    assert status == 2
    assert err.startswith("error: 2 documents are named 'abcd'; give a doc id: abcd1111 (")


# --------------------------------------------------------------------------- delete: asking


@pytest.fixture
def on_a_terminal(monkeypatch):
    """stdin is a terminal; ``answers`` are what the user types, in order."""
    answers: list[str] = []
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt="": answers.pop(0))
    return answers


def test_delete_on_a_terminal_lists_what_it_deletes_and_asks(copied_store, on_a_terminal):
    store, doc_id = copied_store
    on_a_terminal.append("y")
    status, out, _ = run_cli("delete", "report.pdf", "--store", store)
    assert status == 0
    listed, deleted = out.splitlines()
    assert listed.startswith("will delete 3 pages of ") and listed.endswith(f"(doc id {doc_id})")
    assert deleted.startswith("deleted 3 pages of ")


def test_delete_on_a_terminal_deletes_nothing_unless_confirmed(copied_store, on_a_terminal):
    store, _ = copied_store
    on_a_terminal.append("")
    status, out, _ = run_cli("delete", "report.pdf", "--store", store)
    assert status == 1 and out.endswith("nothing deleted\n")
    assert LanceDBPageStore(uri=str(store)).count() == 3


def test_delete_yes_does_not_ask(copied_store, on_a_terminal):
    store, _ = copied_store
    status, out, _ = run_cli("delete", "report.pdf", "--store", store, "--yes")
    assert status == 0 and out.startswith("deleted 3 pages of ")
