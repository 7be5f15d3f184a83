"""Two processes ingesting into one store at once end with the union of their pages (issue 7):
both succeed, or one is told clearly to run it again and a rerun completes the job; every
committed version stays readable and whole.
"""

from __future__ import annotations

import json
import subprocess
import sys

import lancedb
import pytest
from pdfs import page_ids_of, write_numbered_pdf

from llama_index_vlm.ingestion import ingest
from llama_index_vlm.reader import PDFPageReader
from llama_index_vlm.store import LanceDBPageStore

INGEST_PROCESSES = r"""
# Loads the model once, then forks one ingest process per side; they start writing together.
# The model never runs before the fork (no OpenMP threads to lose), and no LanceDB operation
# is in flight (LanceDB resets its async runtime in forked children).
import json, os, sys, time, traceback, warnings
from pathlib import Path

import torch

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="lancedb fork support is experimental")
from llama_index_vlm.encoder import ColPaliEncoder
from llama_index_vlm.errors import StoreError
from llama_index_vlm.ingestion import ingest
from llama_index_vlm.reader import PDFPageReader
from llama_index_vlm.store import LanceDBPageStore

checkpoint, uri, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
jobs = json.loads(sys.argv[4])
encoder = ColPaliEncoder.from_pretrained(checkpoint, show_progress=False)
children = {}
for side, paths in jobs.items():
    pid = os.fork()
    if pid == 0:
        try:
            store = LanceDBPageStore(uri=uri)
            while not (out / "start").exists():
                time.sleep(0.002)
            try:
                report = ingest(paths, encoder, store, reader=PDFPageReader(dpi=36),
                                batch_size=1, show_progress=False)
                outcome = {"failed": [[f.path, f.reason] for f in report.failed],
                           "added": report.pages_added, "unchanged": report.pages_unchanged}
            except StoreError as error:
                outcome = {"store_error": str(error)}
            (out / f"{side}.json").write_text(json.dumps(outcome))
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    children[side] = pid
(out / "start").touch()
codes = {side: os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for side, pid in children.items()}
print(json.dumps(codes))
"""


def check_every_version(store: LanceDBPageStore) -> None:
    """Every committed version opens and holds each page once, with all its vectors."""
    table = lancedb.connect(store.uri).open_table(store.table_name)
    for version in [v["version"] for v in table.list_versions()]:
        table.checkout(version)
        rows = table.search().select(["page_id", "n_vectors", "vectors"]).limit(None).to_arrow()
        page_ids = rows["page_id"].to_pylist()
        assert len(page_ids) == len(set(page_ids)), f"version {version} duplicates a page"
        lengths = [len(vectors) for vectors in rows["vectors"].to_pylist()]
        assert lengths == rows["n_vectors"].to_pylist(), f"version {version} has torn vectors"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_processes_ingesting_into_one_store_end_with_the_union(
    tmp_path, tiny_checkpoint, colpali_encoder, check_whole_pages
):
    common = write_numbered_pdf(tmp_path / "shared" / "common.pdf", 3)
    own = {
        side: [write_numbered_pdf(tmp_path / side / f"{side}{n}.pdf", 2) for n in range(3)]
        for side in ("left", "right")
    }
    uri, out = str(tmp_path / "index"), tmp_path / "outcomes"
    out.mkdir()
    script = tmp_path / "ingest_processes.py"
    script.write_text(INGEST_PROCESSES)
    # Both add the common file first, so they race on the same new pages, then their own.
    jobs = {side: [str(common), str(tmp_path / side)] for side in own}
    finished = subprocess.run(
        [sys.executable, str(script), str(tiny_checkpoint("colpali")), uri, str(out)]
        + [json.dumps(jobs)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert json.loads(finished.stdout.strip().splitlines()[-1]) == dict.fromkeys(own, 0), (
        finished.stderr[-3000:]
    )
    outcomes = {side: json.loads((out / f"{side}.json").read_text()) for side in own}

    store = LanceDBPageStore(uri=uri)
    for side, outcome in outcomes.items():
        # Both succeed, or one is told clearly to retry; a retry then completes the job.
        if "store_error" in outcome:
            assert "run it again" in outcome["store_error"], outcome
            check_every_version(store)
            rerun = ingest(
                [common, tmp_path / side],
                colpali_encoder,
                store,
                reader=PDFPageReader(dpi=36),
                show_progress=False,
            )
            assert rerun.ok, rerun.failed
        else:
            assert outcome["failed"] == [], outcome
    expected = page_ids_of(common, 3).union(
        *(page_ids_of(path, 2) for paths in own.values() for path in paths)
    )
    assert check_whole_pages(store) == expected  # the union; no page twice, none torn
    check_every_version(store)
    # Each side accounts for each of its 9 pages once: added, or found stored by the other.
    for outcome in outcomes.values():
        if "store_error" not in outcome:
            assert outcome["added"] + outcome["unchanged"] == 9, outcomes
