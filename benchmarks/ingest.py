"""Benchmark: ingesting a 300-page PDF at 144 dpi without a model, pages/s and peak RSS.

Three measurements, each variant in a fresh Python subprocess so that its peak RSS is its own:

(a) Rendering alone, pypdfium2 vs pdf2image: the ``pypdfium2`` and ``pdf2image-windows``
    variants of ``benchmarks/render.py``, run through its own :func:`render.measure`.
(b) Render + store, with precomputed synthetic vectors instead of a model (1030 x 128 float32
    unit rows per page, as ColPali gives; a pool of 64 distinct pages of them, cycled, made
    before the clock starts), batches of 32, default reader (pypdfium2, JPEG q90):

    - ``reader+store``: ``PDFPageReader.lazy_load_data`` -> ``LanceDBPageStore.upsert_pages``,
      the two components alone;
    - ``ingest``: :func:`llama_index_vlm.ingestion.ingest` with a stand-in encoder returning the
      synthetic vectors, i.e. the real pipeline (page counting, look-up of unchanged pages,
      decoding each page back to pixels for the encoder, atomic commits) minus the model;
    - ``ingest-png``: the same, storing PNG pages instead of JPEG;
    - ``ingest-rerun``: ``ingest`` run a second time over the same store (every page unchanged:
      rendered, hashed and looked up, nothing encoded or written); only the second run is timed.
(c) The store alone adding 1030 x 128 vectors (float32 in, float16 stored): one
    ``benchmarks/store.py --single`` run over the same number of pages.

Goals (issue 3): render + store at least 50 pages/s, peak RSS under 1 GB, store alone at least
200 pages/s. Wall-clock pages/s depends on what else the CPU runs; CPU ms per page (user +
system, every thread of the process and its finished children) depends much less on it.

Usage::

    python benchmarks/ingest.py                                   # table on stdout
    python benchmarks/ingest.py --repeat 2 --out /tmp/ingest-section.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import render  # benchmarks/render.py: variant runner and machine description

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # tests/pdfs.py writes the benchmark PDF

N_VECTORS, DIM = 1030, 128
POOL = 64  # distinct synthetic pages of vectors, cycled
STORE_VARIANTS = ["reader+store", "ingest", "ingest-png", "ingest-rerun"]
RENDER_VARIANTS = ["pypdfium2", "pdf2image-windows"]


def synthetic_vectors(count: int = POOL) -> list:
    """``count`` distinct (1030, 128) float32 arrays of unit rows."""
    import numpy as np

    rng = np.random.default_rng(0)
    pool = []
    for _ in range(count):
        vectors = rng.standard_normal((N_VECTORS, DIM)).astype(np.float32)
        pool.append(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    return pool


class SyntheticEncoder:
    """Stands in for :class:`ColPaliEncoder` in ``ingest``: returns precomputed vectors."""

    embedding_dim = DIM
    fingerprint = {"model": "synthetic-benchmark", "embedding_dim": DIM}

    def __init__(self, pool: list):
        self.pool = pool
        self.served = 0

    def embed_images(self, images, batch_size=None, show_progress=None) -> list:
        out = [self.pool[(self.served + i) % len(self.pool)] for i in range(len(images))]
        self.served += len(images)
        return out


def run_variant(variant: str, pdf: Path, dpi: int, batch_size: int, scratch: Path) -> dict:
    """Run one render + store variant in this process and return its measurements."""
    from llama_index_vlm.ingestion import ingest
    from llama_index_vlm.reader import PDFPageReader
    from llama_index_vlm.store import LanceDBPageStore

    pool = synthetic_vectors()
    baseline_mb = render._peak_rss_mb(resource.RUSAGE_SELF)
    store = LanceDBPageStore(uri=str(scratch / "index"))
    encoder = SyntheticEncoder(pool)
    reader = PDFPageReader(dpi=dpi, image_format="PNG" if variant == "ingest-png" else "JPEG")
    if variant == "ingest-rerun":
        ingest(pdf, encoder, store, reader=reader, batch_size=batch_size, show_progress=False)
    version = store.version

    cpu_before = render._cpu_seconds()
    start = time.perf_counter()
    if variant == "reader+store":
        pages = 0
        batch: list = []
        for document in reader.lazy_load_data(pdf):
            batch.append(document)
            if len(batch) == batch_size:
                vectors = [pool[(pages + i) % POOL] for i in range(len(batch))]
                store.upsert_pages(batch, vectors, fingerprint=encoder.fingerprint)
                pages += len(batch)
                batch = []
        if batch:
            vectors = [pool[(pages + i) % POOL] for i in range(len(batch))]
            store.upsert_pages(batch, vectors, fingerprint=encoder.fingerprint)
            pages += len(batch)
    else:
        report = ingest(
            pdf, encoder, store, reader=reader, batch_size=batch_size, show_progress=False
        )
        assert report.ok, report.failed
        pages = report.pages_added + report.pages_unchanged
        if variant == "ingest-rerun":
            assert report.pages_unchanged == pages and store.version == version
    seconds = time.perf_counter() - start
    cpu_seconds = render._cpu_seconds() - cpu_before
    assert store.count() == pages
    return {
        "variant": variant,
        "pages": pages,
        "seconds": seconds,
        "pages_per_s": pages / seconds,
        "cpu_ms_per_page": 1000 * cpu_seconds / max(pages, 1),
        "peak_rss_mb": render._peak_rss_mb(resource.RUSAGE_SELF),
        "baseline_rss_mb": baseline_mb,
        "kib_per_page": 0,
    }


def measure(variant: str, pdf: Path, dpi: int, batch_size: int) -> dict:
    """Run ``variant`` in a fresh subprocess (a render variant through render.py)."""
    if variant in RENDER_VARIANTS:
        return render.measure(variant, pdf, dpi)
    scratch = Path(tempfile.mkdtemp(prefix="vlm-ingest-bench-"))
    try:
        command = [sys.executable, __file__, "--child", variant, "--pdf", str(pdf)]
        command += ["--dpi", str(dpi), "--batch-size", str(batch_size), "--scratch", str(scratch)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{variant} failed:\n{done.stderr}")
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def measure_store_alone(pages: int, batch_size: int) -> dict:
    """One ``benchmarks/store.py`` run (fresh process) over ``pages`` synthetic pages."""
    command = [sys.executable, str(REPO / "benchmarks" / "store.py"), "--single"]
    command += ["--pages", str(pages), "--batch-size", str(batch_size)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: list[dict], store_alone: dict | None) -> str:
    """A Markdown table of every measurement."""
    lines = [
        "| part | variant | pages | pages/s | CPU ms/page | peak RSS (MB) | RSS before (MB) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results:
        part = "(a) render" if row["variant"] in RENDER_VARIANTS else "(b) render + store"
        lines.append(
            f"| {part} | {row['variant']} | {row['pages']} | {row['pages_per_s']:.1f} | "
            f"{row['cpu_ms_per_page']:.1f} | {row['peak_rss_mb']:.0f} | "
            f"{row['baseline_rss_mb']:.0f} |"
        )
    if store_alone:
        lines.append(
            f"| (c) store alone | store.py add(), {store_alone['image_kb']:.0f} KB JPEG | "
            f"{store_alone['pages']} | {store_alone['add_pages_per_s']:.1f} | - | "
            f"{store_alone['peak_rss_mb']:.0f} | {store_alone['rss_before_mb']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Parse arguments; as parent, run every variant in subprocesses and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--dpi", type=int, default=144)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2, help="runs per variant; best is kept")
    parser.add_argument(
        "--variants",
        nargs="*",
        default=RENDER_VARIANTS + STORE_VARIANTS,
        choices=RENDER_VARIANTS + STORE_VARIANTS,
    )
    parser.add_argument("--no-store-alone", action="store_true", help="skip part (c)")
    parser.add_argument("--out", type=Path, help="write the results as Markdown here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--pdf", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = run_variant(args.child, args.pdf, args.dpi, args.batch_size, args.scratch)
        print(json.dumps(result))
        return

    from pdfs import write_report_pdf

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        pdf = write_report_pdf(Path(scratch) / "report.pdf", args.pages)
        size_mb = pdf.stat().st_size / 1e6
        print(f"{args.pages}-page PDF ({size_mb:.1f} MB) at {args.dpi} dpi on {render.machine()}")
        results = []
        for variant in args.variants:
            runs = [measure(variant, pdf, args.dpi, args.batch_size) for _ in range(args.repeat)]
            best = max(runs, key=lambda run: run["pages_per_s"])
            best["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
            results.append(best)
            print(
                f"  {variant:20s} {best['pages_per_s']:6.1f} pages/s  "
                f"{best['cpu_ms_per_page']:5.1f} CPU ms/page  "
                f"peak RSS {best['peak_rss_mb']:6.0f} MB",
                flush=True,
            )
    store_alone = None
    if not args.no_store_alone:
        store_alone = measure_store_alone(args.pages, args.batch_size)
        store_alone["pages"] = args.pages
        print(f"  store alone          {store_alone['add_pages_per_s']:6.1f} pages/s", flush=True)
    load_after = os.getloadavg()

    report = table(results, store_alone)
    print()
    print(report)
    if args.out:
        header = (
            "## Ingestion without a model (`benchmarks/ingest.py`)\n\n"
            f"- Machine: {render.machine()}; load average {load_before[0]:.1f} before and "
            f"{load_after[0]:.1f} after (the CPU was shared with other engineers' work).\n"
            f"- Input: a generated {args.pages}-page report PDF ({size_mb:.1f} MB, "
            f"`tests/pdfs.write_report_pdf`), {args.dpi} dpi, batches of {args.batch_size}, "
            f"synthetic {N_VECTORS} x {DIM} float32 unit vectors per page (stored float16); "
            f"best of {args.repeat} runs per variant, each in a fresh process; peak RSS is "
            "the largest of the runs.\n"
            f"- Command: `python benchmarks/ingest.py --pages {args.pages} --repeat "
            f"{args.repeat} --out /tmp/ingest-section.md`\n\n"
        )
        args.out.write_text(header + report + "\n")


if __name__ == "__main__":
    main()
