"""Benchmark: rendering a 300-page PDF at 144 dpi, pages/s and peak RSS per approach.

Each variant runs in a fresh Python subprocess, so its peak RSS is its own (not the largest
of every variant run so far). Variants:

- ``pypdfium2``: :func:`llama_index_vlm.reader.render_pdfium`, one page at a time.
- ``pdf2image-windows``: :func:`llama_index_vlm.reader.render_poppler`, 8-page windows.
- ``pdf2image-whole``: ``pdf2image.convert_from_path`` on the whole file (as byaldi does).
- ``reader-<renderer>-<format>``: ``PDFPageReader.lazy_load_data`` end to end (render, encode,
  base64, ImageDocument), each document dropped once made, as a streaming ingest does; by
  default in a render worker (a child process with a memory cap and a time limit per page:
  its CPU time counts as the children's, its start-up included).
- ``reader-pypdfium2-JPEG-inprocess``: the same in this process, without limits
  (``render_timeout=None, render_memory_limit=None``): the worker's overhead is the difference.

Wall-clock pages/s depends on what else the CPU runs; CPU ms per page (this process and its
finished ``pdftoppm``/``pdfinfo`` children, user + system) depends much less on it.
Peak RSS is the Python process's own (``ru_maxrss``), next to its RSS after imports.
``pdftoppm`` runs as a separate process that renders one page at a time into a pipe, so the
page images pdf2image holds are all on the Python side. Encoding cost alone (JPEG vs PNG, per
page) is timed in-process on the first pages.

Usage::

    python benchmarks/render.py                       # all variants, table on stdout
    python benchmarks/render.py --pages 300 --repeat 2 --out /tmp/render-section.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # tests/pdfs.py writes the benchmark PDF

VARIANTS = [
    "pypdfium2",
    "pdf2image-windows",
    "pdf2image-whole",
    "reader-pypdfium2-JPEG",
    "reader-pypdfium2-JPEG-inprocess",
    "reader-pypdfium2-PNG",
    "reader-pdf2image-JPEG",
    "reader-pdf2image-PNG",
]


def _peak_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (pdftoppm, pdfinfo)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_variant(variant: str, pdf: Path, dpi: int) -> dict:
    """Run one variant in this process and return its measurements."""
    import pdf2image

    from llama_index_vlm.reader import PDFPageReader, render_pdfium, render_poppler

    baseline_mb = _peak_rss_mb(resource.RUSAGE_SELF)
    cpu_before = _cpu_seconds()
    pages = 0
    stored_bytes = 0
    start = time.perf_counter()
    if variant == "pypdfium2":
        for page in render_pdfium(pdf, dpi=dpi):
            page.image.load()
            pages += 1
    elif variant == "pdf2image-windows":
        for page in render_poppler(pdf, dpi=dpi, window=8):
            # pdf2image's PPM images decode lazily: load them, as any consumer of pixels does.
            page.image.load()
            pages += 1
    elif variant == "pdf2image-whole":
        images = pdf2image.convert_from_path(str(pdf), dpi=dpi)
        for image in images:  # then use every page, as byaldi does
            image.load()
        pages = len(images)
    elif variant.startswith("reader-"):
        from llama_index_vlm.reader.render_workers import POOL

        _, renderer, image_format, *where = variant.split("-")
        limits = dict(render_timeout=None, render_memory_limit=None) if where else {}
        reader = PDFPageReader(dpi=dpi, renderer=renderer, image_format=image_format, **limits)
        for doc in reader.lazy_load_data(pdf):
            pages += 1
            stored_bytes += len(doc.image) * 3 // 4  # base64 -> bytes
        POOL.close()  # the worker exits, so its CPU time is counted with the children's
    else:
        raise ValueError(f"unknown variant {variant!r}")
    seconds = time.perf_counter() - start
    cpu_seconds = _cpu_seconds() - cpu_before
    return {
        "variant": variant,
        "pages": pages,
        "seconds": seconds,
        "pages_per_s": pages / seconds,
        "cpu_ms_per_page": 1000 * cpu_seconds / max(pages, 1),
        "peak_rss_mb": _peak_rss_mb(resource.RUSAGE_SELF),
        "baseline_rss_mb": baseline_mb,
        "kib_per_page": stored_bytes / max(pages, 1) / 1024,
    }


def measure(variant: str, pdf: Path, dpi: int) -> dict:
    """Run ``variant`` in a fresh subprocess and return its measurements."""
    command = [sys.executable, __file__, "--child", variant, "--pdf", str(pdf), "--dpi", str(dpi)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def encode_costs(pdf: Path, dpi: int, n_pages: int = 20) -> list[dict]:
    """Time JPEG (q90) and PNG encoding of rendered pages, in ms per page and KiB per page."""
    from llama_index_vlm.images import encode_image, to_rgb
    from llama_index_vlm.reader import render_pdfium

    pages = [to_rgb(page.image) for page in render_pdfium(pdf, dpi=dpi, last_page=n_pages)]
    rows = []
    for image_format in ("JPEG", "PNG"):
        encode_image(pages[0], image_format, 90)  # warm up
        sizes, start = 0, time.perf_counter()
        for image in pages:
            sizes += len(encode_image(image, image_format, 90))
        seconds = time.perf_counter() - start
        rows.append(
            {
                "format": image_format,
                "ms_per_page": 1000 * seconds / len(pages),
                "kib_per_page": sizes / len(pages) / 1024,
            }
        )
    return rows


def machine() -> str:
    """The CPU model and core count, for the results file."""
    model = platform.processor() or "unknown CPU"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def table(results: list[dict]) -> str:
    """A Markdown table of the variants' measurements."""
    lines = [
        "| variant | pages | pages/s | CPU ms/page | peak RSS (MB) | RSS after imports (MB) "
        "| stored KiB/page |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results:
        stored = f"{row['kib_per_page']:.0f}" if row["kib_per_page"] else "-"
        lines.append(
            f"| {row['variant']} | {row['pages']} | {row['pages_per_s']:.1f} | "
            f"{row['cpu_ms_per_page']:.1f} | "
            f"{row['peak_rss_mb']:.0f} | {row['baseline_rss_mb']:.0f} | {stored} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Parse arguments; as parent, run every variant in subprocesses and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--dpi", type=int, default=144)
    parser.add_argument("--repeat", type=int, default=2, help="runs per variant; best is kept")
    parser.add_argument("--variants", nargs="*", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--out", type=Path, help="write the results as Markdown here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--pdf", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(run_variant(args.child, args.pdf, args.dpi)))
        return

    from pdfs import write_report_pdf

    with tempfile.TemporaryDirectory() as scratch:
        pdf = write_report_pdf(Path(scratch) / "report.pdf", args.pages)
        size_mb = pdf.stat().st_size / 1e6
        print(f"{args.pages}-page PDF ({size_mb:.1f} MB) at {args.dpi} dpi on {machine()}")
        load = os.getloadavg()
        results = []
        for variant in args.variants:
            # The whole-file variant holds every page at once (several GB for 300 pages):
            # once is enough to show it, and spares the memory of a machine shared with others.
            repeat = 1 if variant == "pdf2image-whole" else args.repeat
            runs = [measure(variant, pdf, args.dpi) for _ in range(repeat)]
            best = max(runs, key=lambda run: run["pages_per_s"])
            best["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
            results.append(best)
            print(
                f"  {variant:24s} {best['pages_per_s']:6.1f} pages/s  "
                f"{best['cpu_ms_per_page']:5.1f} CPU ms/page  "
                f"peak RSS {best['peak_rss_mb']:6.0f} MB",
                flush=True,
            )
        encoding = encode_costs(pdf, args.dpi)
        load_after = os.getloadavg()

    report = table(results)
    report += "\n\nEncoding alone (first 20 pages, in-process, `images.encode_image`):\n\n"
    report += "| format | ms/page | KiB/page |\n| --- | ---: | ---: |\n"
    report += "\n".join(
        f"| {row['format']} | {row['ms_per_page']:.1f} | {row['kib_per_page']:.0f} |"
        for row in encoding
    )
    print()
    print(report)
    if args.out:
        header = (
            f"- Machine: {machine()}; load average {load[0]:.1f} before and "
            f"{load_after[0]:.1f} after (the CPU was shared with other work).\n"
            f"- Input: a generated {args.pages}-page report PDF ({size_mb:.1f} MB; text, bar "
            f"chart and table differing on every page), {args.dpi} dpi, best of {args.repeat} "
            "runs per variant (one for pdf2image-whole), each in a fresh process.\n"
            f"- Command: `python benchmarks/render.py --pages {args.pages} --repeat {args.repeat}`"
            "\n\n"
        )
        args.out.write_text(header + report + "\n")


if __name__ == "__main__":
    main()
