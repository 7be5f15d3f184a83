"""An ingest killed with SIGKILL at random moments, then re-run to completion: only whole pages
of files that will be indexed whole are ever visible, and the re-run stores exactly the pages
an uninterrupted ingest stores.

The test needs many killed processes. A fresh interpreter importing torch, transformers and
LanceDB takes about 10 s on the 2-core test machine, so a small fork server (``ZYGOTE``) imports
everything and loads the model once, then forks one ingest per run; each killed run costs a
fork. The fork server never runs the model or opens a LanceDB table before forking, so no
OpenMP worker and no LanceDB operation is in flight when it forks (LanceDB resets its async
runtime in forked children). ``LLAMA_INDEX_VLM_SIGKILLS`` sets the number of kills (20).
"""

from __future__ import annotations

import os
import queue
import random
import runpy
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pdfs import page_ids_of, write_encrypted_pdf, write_numbered_pdf

from llama_index_vlm.ingestion import ingest
from llama_index_vlm.reader import PDFPageReader
from llama_index_vlm.reader import sources as reader_module
from llama_index_vlm.store import LanceDBPageStore

ZYGOTE = r'''
"""Fork server: load the model once, then fork one ingest per "run <uri>" line on stdin.

After each fork it reads "kill" (SIGKILL the child, its own unreaped child, so the pid cannot
have been reused) or "wait", and prints "exit killed" or "exit <code>". Children print "ready"
before ingesting, "commit n"/"committed n" around each store write, and "done" at the end.
"""
import os
import signal
import sys
import warnings
from pathlib import Path

from llama_index_vlm.reader import sources as reader_module
from llama_index_vlm.errors import UnreadableDocumentError

# Batches of 2: [a1 a2] [a3 b1] [b2 b3] [c1 c2] then c_bad.pdf's page 3 fails and its first
# pages are deleted again, [d1 d2] [d3 e1] [e2 e3]; locked.pdf fails before any page.
FOLDER_FILES = {"a": 3, "b": 3, "c_bad": 3, "d": 3, "e": 3}
BAD_FILE, BAD_PAGE = "c_bad.pdf", 3
BATCH_SIZE, DPI = 2, 36
# The patched renderer runs in this process: no render worker.
IN_PROCESS = dict(render_timeout=None, render_memory_limit=None)
_real_render = reader_module.render_pdfium


def render_failing_mid_file(path, **options):
    """pypdfium2 rendering, except that BAD_FILE's page BAD_PAGE fails like a damaged page."""
    for page in _real_render(path, **options):
        if Path(path).name == BAD_FILE and page.page_number == BAD_PAGE:
            raise UnreadableDocumentError(
                str(path), f"page {BAD_PAGE} of {page.page_count} could not be rendered (test)"
            )
        yield page


def serve(checkpoint, folder):
    import torch

    torch.set_num_threads(1)  # and never run before forking: no OpenMP threads to lose
    # LanceDB resets its async runtime in a forked child and warns that an operation in flight
    # at fork time could deadlock; this process never starts one.
    warnings.filterwarnings("ignore", message="lancedb fork support is experimental")
    from llama_index_vlm.encoder import ColPaliEncoder
    from llama_index_vlm.ingestion import ingest
    from llama_index_vlm.reader import PDFPageReader
    from llama_index_vlm.store import LanceDBPageStore

    reader_module.render_pdfium = render_failing_mid_file
    real_upsert, real_delete = LanceDBPageStore.upsert_pages, LanceDBPageStore.delete_nodes
    writes = []

    def say(*words):
        # One write(2) of a short line is atomic: a kill never leaves half a line behind.
        os.write(1, (" ".join(map(str, words)) + "\n").encode())

    def marked(real, before, after):
        def write(self, *args, **kwargs):
            writes.append(1)
            say(before, len(writes))
            result = real(self, *args, **kwargs)
            say(after, len(writes))
            return result

        return write

    LanceDBPageStore.upsert_pages = marked(real_upsert, "commit", "committed")
    LanceDBPageStore.delete_nodes = marked(real_delete, "delete", "deleted")
    encoder = ColPaliEncoder.from_pretrained(checkpoint, show_progress=False)
    say("zygote")
    for line in sys.stdin:
        uri = line.split()[1]
        pid = os.fork()
        if pid == 0:
            try:
                store = LanceDBPageStore(uri=uri)
                say("ready")
                report = ingest(
                    folder, encoder, store, reader=PDFPageReader(dpi=DPI, **IN_PROCESS),
                    batch_size=BATCH_SIZE, show_progress=False,
                )
                say("done", report.pages_added, report.pages_unchanged)
                os._exit(0)
            except BaseException:
                import traceback

                traceback.print_exc()
                os._exit(1)
        command = sys.stdin.readline().strip()
        if command != "wait":  # "kill", or the test went away
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        say("exit", "killed" if killed else os.WEXITSTATUS(status))
        if not command:
            return


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
'''


class ForkServer:
    """The test's side of ``ZYGOTE``: start runs, kill them, read their lines with timeouts."""

    def __init__(self, script: Path, checkpoint: Path, folder: Path):
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        self.process = subprocess.Popen(
            [sys.executable, str(script), str(checkpoint), str(folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.errors: list[str] = []
        threading.Thread(
            target=self._pump, args=(self.process.stdout, self.lines), daemon=True
        ).start()
        threading.Thread(target=self._collect_errors, daemon=True).start()

    @staticmethod
    def _pump(stream, lines):
        for line in stream:
            lines.put(line.strip())
        lines.put("<eof>")

    def _collect_errors(self):
        for line in self.process.stderr:
            self.errors.append(line)

    def read_until(self, predicate, timeout: float = 120) -> list[str]:
        """Lines up to and including the first one ``predicate`` accepts."""
        seen, deadline = [], time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no answer from the fork server: {seen} {self.errors}"
                ) from None
            assert line != "<eof>", f"the fork server died: {seen} {''.join(self.errors)}"
            seen.append(line)
            if predicate(line):
                return seen

    def send(self, command: str) -> None:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # the server kills any child it has, then exits
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _matches_some_version(visible: set[str], states: list[set[str]], part: set[str]) -> bool:
    return any(visible & part == state & part for state in states)


@pytest.mark.slow
def test_sigkill_at_random_points_leaves_whole_pages_and_a_rerun_completes(
    tmp_path,
    monkeypatch,
    tiny_checkpoint,
    colpali_encoder,
    check_whole_pages,
    failures,
    versions_page_ids,
):
    n_kills = int(os.environ.get("LLAMA_INDEX_VLM_SIGKILLS", "20"))
    script = tmp_path / "zygote.py"
    script.write_text(ZYGOTE)
    plan = runpy.run_path(str(script))  # the same files and failing page on both sides
    folder = tmp_path / "docs"
    files = {
        name: write_numbered_pdf(folder / f"{name}.pdf", n)
        for name, n in plan["FOLDER_FILES"].items()
    }
    write_encrypted_pdf(folder / "locked.pdf")
    good = set().union(
        *(
            page_ids_of(files[name], n)
            for name, n in plan["FOLDER_FILES"].items()
            if name != "c_bad"
        )
    )
    bad = page_ids_of(files["c_bad"], plan["FOLDER_FILES"]["c_bad"])
    expected_failures = {"c_bad.pdf", "locked.pdf"}
    monkeypatch.setattr(reader_module, "render_pdfium", plan["render_failing_mid_file"])

    def ingest_here(store):
        return ingest(
            folder,
            colpali_encoder,
            store,
            reader=PDFPageReader(dpi=plan["DPI"], **plan["IN_PROCESS"]),
            batch_size=plan["BATCH_SIZE"],
            show_progress=False,
        )

    server = ForkServer(script, tiny_checkpoint("colpali"), folder)
    try:
        # While the server imports, a reference ingest in this process gives the page contents
        # and the sequence of committed states a killed run may leave behind.
        reference = LanceDBPageStore(uri=str(tmp_path / "reference"))
        report = ingest_here(reference)
        assert set(failures(report)) == expected_failures
        assert check_whole_pages(reference) == good
        states = versions_page_ids(reference)
        assert any(state & bad for state in states)  # the bad file's first pages get committed
        reference_hashes = reference.page_hashes()
        reference_vectors = dict(
            zip(sorted(good), reference.get_page_vectors(sorted(good)), strict=True)
        )

        def check_visible(store_uri: str, context: str) -> set[str]:
            """Only whole pages, each the reference's, in a state some commit could leave."""
            reopened = LanceDBPageStore(uri=store_uri)
            visible = check_whole_pages(reopened)
            assert visible <= good | bad, context
            assert _matches_some_version(visible, states, good), context
            assert _matches_some_version(visible, states, bad), context
            ids = sorted(visible & good)
            assert reopened.page_hashes(page_ids=ids) == {i: reference_hashes[i] for i in ids}, (
                context
            )
            for page_id, vectors in zip(ids, reopened.get_page_vectors(ids), strict=True):
                np.testing.assert_allclose(
                    vectors.astype(np.float32),
                    reference_vectors[page_id].astype(np.float32),
                    atol=2e-3,
                    err_msg=context,
                )
            return visible

        # One run to the end times a child and shows that it alone completes the job.
        server.read_until(lambda line: line == "zygote", timeout=180)
        server.send(f"run {tmp_path / 'uninterrupted'}")
        server.read_until(lambda line: line == "ready")
        started = time.perf_counter()
        server.send("wait")
        lines = server.read_until(lambda line: line.startswith("exit"))
        run_seconds = time.perf_counter() - started
        assert lines[-2:] == [f"done {len(good)} 0", "exit 0"], lines
        assert check_visible(str(tmp_path / "uninterrupted"), str(lines)) == good

        rng = random.Random(seed := random.randrange(1_000_000))
        kills, landed, run = 0, [], 0
        while kills < n_kills:
            store_uri = str(tmp_path / f"index{run}")
            run += 1
            visible: set[str] = set()
            for _ in range(3):  # up to three killed runs on one store, each resuming the last
                server.send(f"run {store_uri}")
                lines = server.read_until(lambda line: line == "ready" or line.startswith("exit"))
                assert lines[-1] == "ready", lines
                if rng.random() < 0.5:  # some time into the run
                    left = 1 - len(visible & good) / len(good)
                    time.sleep(rng.uniform(0, run_seconds * left))
                else:  # inside the n-th write (commit or delete) of this run
                    n = rng.randint(1, 2 if visible else 4)
                    lines += server.read_until(
                        lambda line, n=n: line.endswith(f" {n}") or line.startswith("done")
                    )
                    time.sleep(rng.uniform(0, 0.05))
                server.send("kill")
                lines += server.read_until(lambda line: line.startswith("exit"))
                context = f"seed {seed}, store {run}: {lines}"
                if lines[-1] == "exit killed":
                    kills += 1
                    last = [line for line in lines if line[:1] in "cd"]
                    landed.append(last[-1].split()[0] if last else "start")
                else:
                    finished_ok = lines[-1] == "exit 0" and lines[-2].startswith("done")
                    assert finished_ok, f"{context}\n{''.join(server.errors[-30:])}"
                visible = check_visible(store_uri, context)
                if lines[-1] == "exit 0":
                    assert visible == good, context
                    break
                if kills == n_kills:
                    break

            # Re-run to completion here: exactly the expected pages, none duplicated.
            reopened = LanceDBPageStore(uri=store_uri)
            finished = ingest_here(reopened)
            assert set(failures(finished)) == expected_failures, context
            assert check_whole_pages(reopened) == good, context
            assert reopened.page_hashes() == reference_hashes, context
            assert finished.pages_added == len(good - visible), context
            assert finished.pages_unchanged == len(good & visible), context
    finally:
        server.close()
    # Where the kills landed ("commit"/"committed": in or after a page write, "delete"/
    # "deleted": in or after taking back the bad file's pages, "start": before any write).
    print(f"seed {seed}: {kills} kills over {run} stores, last line before each: {landed}")
    assert kills == n_kills
