"""Benchmark: ingestion on Ray against a local ingest, and the store on S3 against local disk.

(a) Ingestion, tiny ColPali checkpoint, the same PDFs (generated report pages, 144 dpi): a
    local ``ingest`` and ``ingest(engine="ray")`` with 1 and 2 encoder actors on a local Ray
    (3 logical CPUs: the render tasks' and the actors'), each into a fresh store. The store
    records when each commit lands, so the fixed cost (Ray Data's start, starting the actors
    and loading the model in them: the time to the first commit) and the steady rate (pages
    committed after the first commit / time from the first commit to the last) come apart.
    Ray's overhead per page is the Ray variant's steady ms per page minus the local one's. A
    re-run over the same store (every page unchanged: rendered and hashed, nothing encoded or
    written) is timed too.
(b) Store operations on the local S3 server (moto, in this process, over HTTP on loopback)
    against local disk, on the same synthetic pages as ``benchmarks/store.py`` (1030 x 128
    float32 vectors stored as float16, a distinct ~100 KB JPEG each), taking turns.

Usage::

    python benchmarks/distributed.py                        # both, Markdown on stdout
    python benchmarks/distributed.py --files 12 --pages-per-file 8 --store-pages 256
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import render  # benchmarks/render.py: machine description
import store as store_bench  # benchmarks/store.py: synthetic pages

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # tests/pdfs.py writes the benchmark PDFs

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ---------------------------------------------------------------------------- (a) ingestion


def write_files(folder: Path, files: int, pages_per_file: int) -> list[Path]:
    from pdfs import write_report_pdf

    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_report_pdf(folder / f"report{n:03d}.pdf", pages_per_file, seed=n)
        for n in range(files)
    ]


COMMITS: list[tuple[float, int]] = []  # (time, pages) of every upsert of the timed run


def timed_store(uri: str):
    """A store that records when each commit happened and how many pages it wrote."""
    from llama_index_vlm.store import LanceDBPageStore

    class TimedStore(LanceDBPageStore):
        def upsert_pages(self, nodes, page_vectors, fingerprint=None):
            result = super().upsert_pages(nodes, page_vectors, fingerprint)
            COMMITS.append((time.perf_counter(), len(result.added) + len(result.replaced)))
            return result

    return TimedStore(uri=uri)


def timed_ingest(paths, encoder, uri: str, engine: str, encoders: int | None) -> dict:
    """Wall time, time to the first commit, and pages/s from the first commit to the last."""
    from llama_index_vlm.distributed import ray_ingest
    from llama_index_vlm.ingestion import ingest
    from llama_index_vlm.reader import PDFPageReader

    store = timed_store(uri)
    reader = PDFPageReader(dpi=144)
    COMMITS.clear()
    started = time.perf_counter()
    if engine == "local":
        report = ingest(paths, encoder, store, reader=reader, show_progress=False)
    else:
        report = ray_ingest.ingest(
            paths, encoder, store, reader=reader, show_progress=False, encoders=encoders
        )
    seconds = time.perf_counter() - started
    steady = None
    if len(COMMITS) > 1:
        pages_after_first = sum(pages for _, pages in COMMITS[1:])
        steady = pages_after_first / (COMMITS[-1][0] - COMMITS[0][0])
    first = COMMITS[0][0] - started if COMMITS else None
    return {"seconds": seconds, "first_commit": first, "steady": steady, "report": report}


def ingestion_rows(args, root: Path) -> list[dict]:
    import ray

    from llama_index_vlm.encoder import ColPaliEncoder
    from llama_index_vlm.testing import make_tiny_checkpoint

    files = write_files(root / "docs", args.files, args.pages_per_file)
    pages = args.files * args.pages_per_file
    encoder = ColPaliEncoder.from_pretrained(
        make_tiny_checkpoint("colpali", root / "colpali"), show_progress=False
    )
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    rows = []
    variants = [
        ("local", "local", None),
        ("ray, 1 encoder", "ray", 1),
        ("ray, 2 encoders", "ray", 2),
    ]
    for name, engine, encoders in variants:
        uri = str(root / name)
        run = timed_ingest(files, encoder, uri, engine, encoders)
        rerun = timed_ingest(files, encoder, uri, engine, encoders)
        assert run["report"].pages_added == pages, run["report"]
        assert rerun["report"].pages_unchanged == pages, rerun["report"]
        rows.append({"variant": name, "pages": pages, **run, "rerun": rerun["seconds"]})
    ray.shutdown()
    local_ms = 1000 / rows[0]["steady"]
    for row in rows:
        row["overhead_ms"] = 1000 / row["steady"] - local_ms
    return rows


def ingestion_table(rows: list[dict]) -> str:
    lines = [
        "| variant | pages | total s | pages/s overall | s to first commit "
        "| pages/s after it | ms/page after it | Ray overhead ms/page | re-run s (unchanged) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {row['pages']} | {row['seconds']:.1f} "
            f"| {row['pages'] / row['seconds']:.1f} | {row['first_commit']:.1f} "
            f"| {row['steady']:.1f} | {1000 / row['steady']:.0f} | {row['overhead_ms']:+.0f} "
            f"| {row['rerun']:.1f} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- (b) store


def store_rows(args, root: Path) -> list[dict]:
    import numpy as np

    from llama_index_vlm.distributed.local_s3 import LocalS3Server
    from llama_index_vlm.store import LanceDBPageStore

    rng = np.random.default_rng(0)
    batches = [
        store_bench.make_batch(start, args.batch_size, rng)
        for start in range(0, args.store_pages, args.batch_size)
    ]
    timings: dict[str, dict[str, list[float]]] = {"local disk": {}, "local S3 server": {}}
    with LocalS3Server() as s3:
        targets = {
            "local disk": lambda n: LanceDBPageStore(uri=str(root / f"store{n}")),
            "local S3 server": lambda n: LanceDBPageStore(
                uri=s3.uri(f"store{n}"), storage_options=s3.storage_options
            ),
        }
        for repeat in range(args.repeat):
            for name, open_store in targets.items():  # taking turns
                for operation, seconds in store_operations(open_store, repeat, batches).items():
                    timings[name].setdefault(operation, []).append(seconds)
    return [
        {"target": name, **{op: statistics.median(values) for op, values in ops.items()}}
        for name, ops in timings.items()
    ]


def store_operations(open_store, repeat: int, batches) -> dict[str, float]:
    """Seconds of each operation on a fresh store (median taken over repeats by the caller)."""
    results = {}
    started = time.perf_counter()
    page_store = open_store(repeat)
    results["open"] = time.perf_counter() - started
    started = time.perf_counter()
    for pages, vectors in batches:
        page_store.add(pages, page_vectors=vectors, fingerprint=store_bench.FINGERPRINT)
    results["add"] = time.perf_counter() - started
    started = time.perf_counter()
    for pages, vectors in batches:
        page_store.add(pages, page_vectors=vectors, fingerprint=store_bench.FINGERPRINT)
    results["re-add"] = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(20):
        page_store.version  # noqa: B018 - what every query pays to notice new commits
    results["version check"] = (time.perf_counter() - started) / 20
    started = time.perf_counter()
    loaded = sum(len(ids) for ids, _ in page_store.iter_page_vectors())
    results["iter_page_vectors"] = time.perf_counter() - started
    page_ids = page_store.page_ids()[:100]
    started = time.perf_counter()
    page_store.get_nodes(page_ids)
    results["get_nodes (100)"] = time.perf_counter() - started
    started = time.perf_counter()
    page_store.delete(page_store.doc_ids()[0])
    results["delete a document"] = time.perf_counter() - started
    started = time.perf_counter()
    page_store.optimize()
    results["optimize"] = time.perf_counter() - started
    results["pages"] = loaded
    return results


def store_table(rows: list[dict]) -> str:
    pages = rows[0]["pages"]
    per_second = {"add", "re-add", "iter_page_vectors"}
    operations = [
        "open", "add", "re-add", "version check", "iter_page_vectors", "get_nodes (100)",
        "delete a document", "optimize",
    ]  # fmt: skip
    header = "| operation | " + " | ".join(row["target"] for row in rows) + " | S3 / disk |"
    lines = [header, "| --- |" + " ---: |" * (len(rows) + 1)]
    for operation in operations:
        cells = []
        for row in rows:
            seconds = row[operation]
            cells.append(
                f"{pages / seconds:,.0f} pages/s"
                if operation in per_second
                else f"{1000 * seconds:,.1f} ms"
            )
        ratio = rows[1][operation] / rows[0][operation]
        lines.append(f"| {operation} | " + " | ".join(cells) + f" | {ratio:.1f}x time |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--pages-per-file", type=int, default=8)
    parser.add_argument("--store-pages", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="store runs per target")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-store", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    load_before = os.getloadavg()
    print(f"- Machine: {render.machine()}; load average before: {load_before[0]:.1f}")
    try:
        if not args.skip_ingest:
            print("\n(a) Ingestion, tiny ColPali, 144 dpi report pages\n")
            print(ingestion_table(ingestion_rows(args, root)))
        if not args.skip_store:
            print(f"\n(b) Store operations, {args.store_pages} synthetic pages, "
                  f"batches of {args.batch_size}, median of {args.repeat}\n")  # fmt: skip
            print(store_table(store_rows(args, root)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n- Load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
