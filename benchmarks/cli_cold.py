"""CPU seconds of a cold ``llama-index-vlm search``: a 2,100-page store against a 50-page one.

The goal of issue 14: a cold ``search`` on a 2,100-page store (above the retriever's fast-mode
threshold of 2,000 pages) costs at most 2 CPU-seconds more than on a 50-page store, with the
same model. Both stores are built here with the tiny ColPali checkpoint (the same encoder, so
the only difference is the number of pages), then each is searched by a fresh
``llama-index-vlm search`` process, alternately, ``--runs`` times. CPU seconds (user + system,
of the process and its children) come from ``getrusage``; the medians and their difference are
printed with the machine's load before and after.

    python benchmarks/cli_cold.py                     # builds the stores in a temporary folder
    python benchmarks/cli_cold.py --workdir /tmp/cold --runs 5
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

QUERY = "What was the revenue in 2023?"
SIZES = (50, 2100)


def page_documents(n_pages: int, pages_per_document: int = 30) -> list:
    """``n_pages`` small page images (noise, different on every page) in documents of 30."""
    import numpy as np
    from llama_index.core.schema import ImageDocument
    from PIL import Image

    rng = np.random.default_rng(0)
    documents = []
    for number in range(n_pages):
        doc = number // pages_per_document
        page = number % pages_per_document + 1
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (80, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
        documents.append(
            ImageDocument(
                id_=f"doc{doc}-p{page}",
                image=base64.b64encode(buffer.getvalue()).decode(),
                image_mimetype="image/png",
                metadata={
                    "doc_id": f"doc{doc}",
                    "page_id": f"doc{doc}-p{page}",
                    "file_path": f"/docs/doc{doc}.pdf",
                    "file_name": f"doc{doc}.pdf",
                    "page_number": page,
                    "page_count": pages_per_document,
                },
            )
        )
    return documents


def build_store(path: Path, n_pages: int, checkpoint: Path) -> None:
    """Index ``n_pages`` pages with the tiny ColPali into a store at ``path``."""
    from llama_index_vlm import ColPaliEncoder, LanceDBPageStore
    from llama_index_vlm.ingestion import ingest_documents

    encoder = ColPaliEncoder.from_pretrained(checkpoint, show_progress=False)
    store = LanceDBPageStore(uri=str(path))
    ingest_documents(page_documents(n_pages), encoder, store, batch_size=64, show_progress=False)


def cold_search(store: Path) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, exit status) of one fresh ``llama-index-vlm search``."""
    command = [str(Path(sys.executable).parent / "llama-index-vlm"), "search", QUERY]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    finished = subprocess.run(
        [*command, "--store", str(store)], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if finished.returncode != 0:
        print(finished.stderr[-2000:], file=sys.stderr)
    return cpu, wall, finished.returncode


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="where the stores go (default: a temp dir)")
    parser.add_argument("--runs", type=int, default=3, help="cold processes per store")
    args = parser.parse_args()
    from llama_index_vlm.testing import make_tiny_checkpoint

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cli_cold_"))
    checkpoint = make_tiny_checkpoint("colpali", workdir / "colpali")
    stores = {}
    for size in SIZES:
        stores[size] = workdir / f"store_{size}"
        if not stores[size].exists():
            started = time.perf_counter()
            build_store(stores[size], size, checkpoint)
            print(f"built the {size}-page store in {time.perf_counter() - started:.0f} s")
    print(f"load before: {uptime()}")
    samples: dict[int, list[tuple[float, float]]] = {size: [] for size in SIZES}
    for _ in range(args.runs):
        for size in SIZES:  # alternately, so that a change of load hits both
            cpu, wall, status = cold_search(stores[size])
            if status != 0:
                raise SystemExit(f"search on the {size}-page store exited with {status}")
            samples[size].append((cpu, wall))
    print(f"load after: {uptime()}")
    print(f"\n| store | cold `search` CPU s (median of {args.runs}) | wall s | CPU s of each run |")
    print("| ---: | ---: | ---: | --- |")
    medians = {}
    for size in SIZES:
        cpus = [cpu for cpu, _ in samples[size]]
        medians[size] = statistics.median(cpus)
        wall = statistics.median(wall for _, wall in samples[size])
        runs = ", ".join(f"{cpu:.2f}" for cpu in cpus)
        print(f"| {size:,} pages | {medians[size]:.2f} | {wall:.2f} | {runs} |")
    difference = medians[SIZES[1]] - medians[SIZES[0]]
    verdict = "meets" if difference <= 2.0 else "misses"
    print(f"\ndifference: {difference:.2f} CPU s ({verdict} the goal of at most 2 CPU s)")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
