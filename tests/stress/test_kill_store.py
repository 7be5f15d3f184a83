"""A page store writer killed with SIGKILL at random moments, in and between its commits: what
stays visible is whole pages of whole batches, and re-running the writer completes the job.

Slow (about a minute): each run starts a fresh interpreter that imports LanceDB and Arrow.
"""

from __future__ import annotations

import base64
import os
import random
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from llama_index_vlm.images import decode_image
from llama_index_vlm.store import LanceDBPageStore

# The writer run in a subprocess. Its page generator is also loaded by the test (runpy), so
# both sides agree on what every page must contain.
WRITER = r'''
import base64, io, sys, zlib
import numpy as np
from PIL import Image

N_VECTORS, DIM = 1030, 128
# Small batches give many commits to kill between; big ones a long write to kill inside.
BATCH = {"v1": 6, "v2": 40}
FINGERPRINT = {"model": "test-colpali", "embedding_dim": DIM}


def file_plan(phase):
    """(file, doc_id, page_count) per file of an ingest run."""
    if phase == "v1":
        return [(f"/docs/f{i}.pdf", f"f{i}-v1", 8) for i in range(4)]
    # v2: f1 changed (fewer pages), f2 unchanged, f4 and f5 new.
    return [
        ("/docs/f1.pdf", "f1-v2", 6),
        ("/docs/f2.pdf", "f2-v1", 8),
        ("/docs/f4.pdf", "f4-v2", 8),
        ("/docs/f5.pdf", "f5-v2", 60),
    ]


def page_ids(phase):
    return [f"{doc}-p{n}" for _, doc, count in file_plan(phase) for n in range(1, count + 1)]


def page_image(page_id):
    rng = np.random.default_rng(zlib.crc32(page_id.encode()))
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def page_vectors(page_id):
    rng = np.random.default_rng(zlib.crc32(page_id.encode()) + 1)
    count = N_VECTORS - int(rng.integers(0, 30))
    vectors = rng.standard_normal((count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def batches(phase):
    from llama_index.core.schema import ImageDocument

    pages = []
    for path, doc, count in file_plan(phase):
        for n in range(1, count + 1):
            page_id = f"{doc}-p{n}"
            pages.append(ImageDocument(
                id_=page_id, image=base64.b64encode(page_image(page_id)).decode(),
                image_mimetype="image/png", text=page_id,
                metadata={"doc_id": doc, "page_id": page_id, "file_path": path,
                          "file_name": path.rsplit("/", 1)[-1], "page_number": n,
                          "page_count": count},
            ))
    size = BATCH[phase]
    return [pages[i:i + size] for i in range(0, len(pages), size)]


if __name__ == "__main__":
    from llama_index_vlm.store import LanceDBPageStore

    uri, phase = sys.argv[1], sys.argv[2]
    store = LanceDBPageStore(uri=uri)
    # Everything is prepared before "ready", so that after it the writer is almost always
    # inside store.add, where a kill is meant to land.
    work = [(batch, [page_vectors(p.node_id) for p in batch]) for batch in batches(phase)]
    print("ready", flush=True)
    for index, (batch, vectors) in enumerate(work):
        store.add(batch, page_vectors=vectors, fingerprint=FINGERPRINT)
        print("committed", index, flush=True)
    print("done", flush=True)
'''


def _run_writer(script: Path, uri: str, phase: str, kill: tuple[int, float] | None) -> list[str]:
    """Run the writer to the end, or SIGKILL it ``kill = (n, delay)``: ``delay`` seconds after
    its n-th commit (n=0: after start-up), i.e. in the middle of the next add. Returns its
    output lines.
    """
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(
        [sys.executable, str(script), uri, phase],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        lines = [process.stdout.readline().strip()]
        assert lines == ["ready"], lines
        if kill is None:
            lines += process.stdout.read().split()
            assert process.wait(timeout=120) == 0
            assert lines[-1] == "done", lines
            return lines
        commits, delay = kill
        while sum(line.startswith("committed") for line in lines) < commits:
            line = process.stdout.readline()
            assert line, f"the writer stopped early: {lines}"
            lines.append(line.strip())
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        lines += process.stdout.read().splitlines()
        process.wait(timeout=30)
        return [line for line in lines if line]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _check_whole_pages(uri: str, writer: dict) -> set[str]:
    """Every visible page is whole and unique; returns the visible page ids."""
    store = LanceDBPageStore(uri=uri)
    if store.count() == 0:
        return set()
    visible = [i for ids, _ in store.iter_page_vectors(batch_size=16) for i in ids]
    assert len(visible) == len(set(visible)) == store.count(), "a page_id is duplicated"
    for node in store.get_nodes(visible):
        page_id = node.node_id
        vectors = store.get_page_vectors([page_id])[0]
        expected = writer["page_vectors"](page_id)
        assert vectors.shape == expected.shape, page_id
        np.testing.assert_allclose(vectors.astype(np.float32), expected, atol=1e-3, err_msg=page_id)
        assert base64.b64decode(node.image) == writer["page_image"](page_id)
        assert decode_image(node.image).size == (48, 64)
        assert node.text == page_id
    lengths = {i: len(v) for i, v in zip(visible, store.get_page_vectors(visible), strict=True)}
    for page_id, count in store.vector_counts().items():
        assert lengths[page_id] == count, page_id
    return set(visible)


def _states(initial: set[str], batches: list[list[str]]) -> list[set[str]]:
    """The page set after each prefix of ``batches``: what the store may show after a kill.

    A batch adds its pages and drops the pages of older versions of the same files (page ids
    are ``f"{file}-{version}-p{n}"`` here).
    """
    states = [set(initial)]
    for batch in batches:
        state = set(states[-1])
        for page_id in batch:
            doc_id = page_id.rsplit("-p", 1)[0]
            file = doc_id.split("-")[0]
            state -= {
                p for p in state if p.split("-")[0] == file and not p.startswith(doc_id + "-p")
            }
        states.append(state | set(batch))
    return states


def _batches_shown(visible: set[str], states: list[set[str]], context) -> list[int]:
    """Which prefixes of the batches the store may be showing (batches of unchanged pages
    leave the same state); fails if none (a partial batch is visible).
    """
    shown = [count for count, state in enumerate(states) if visible == state]
    assert shown, f"visible pages are not whole batches ({context}): {sorted(visible)}"
    return shown


@pytest.mark.slow
def test_sigkill_mid_ingest_leaves_whole_pages_and_rerun_completes(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    writer = runpy.run_path(str(script))
    uri = str(tmp_path / "index")
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)

    # Each phase is killed at a random moment (mostly inside an add: once ready, the writer
    # does little else), checked, then re-run to completion. Phase 2 re-ingests with a changed
    # file (fewer pages, new doc_id), an unchanged one and a new one.
    before: set[str] = set()
    for phase, kills, final in [
        ("v1", 2, set(writer["page_ids"]("v1"))),
        (
            "v2",
            1,
            set(writer["page_ids"]("v2"))
            | {p for p in writer["page_ids"]("v1") if p[:2] in ("f0", "f3")},
        ),
    ]:
        batches = [[p.node_id for p in batch] for batch in writer["batches"](phase)]
        states = _states(before, batches)
        assert states[-1] == final
        previous = 0
        for _ in range(kills):
            kill = (rng.randrange(len(batches)), rng.uniform(0.0, 0.05 * len(batches[0]) / 6))
            lines = _run_writer(script, uri, phase, kill)
            committed = sum(line.startswith("committed") for line in lines)
            context = (seed, phase, kill, lines)
            shown = _batches_shown(_check_whole_pages(uri, writer), states, context)
            # A re-run skips the batches already stored; a commit is durable before the writer
            # prints it, so at most one more batch than printed is visible.
            possible = [n for n in shown if committed <= n <= max(committed + 1, previous)]
            assert possible, (shown, context)
            previous = max(possible)
        _run_writer(script, uri, phase, kill=None)
        assert _check_whole_pages(uri, writer) == final, (seed, phase)
        before = final

    # Re-running the finished ingest writes nothing.
    store = LanceDBPageStore(uri=uri)
    version = store.version
    for batch in writer["batches"]("v2"):
        vectors = [writer["page_vectors"](p.node_id) for p in batch]
        assert not store.upsert_pages(batch, vectors, fingerprint=writer["FINGERPRINT"]).written
    assert store.version == version
