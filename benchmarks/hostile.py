"""Benchmark: the worst hostile input built for each attack class of issue 13, and what it costs.

Each case runs in a fresh Python process (``tests/peak_memory.py``): imports and model loading
first (not counted), then the case, whose peak resident memory over the memory before it, and
its time, are measured. Render workers are separate processes capped at
``render_memory_limit`` (2048 MiB by default): for the cases that only read files (no model
loaded, a light parent), the largest worker's peak is shown too.

Usage::

    python benchmarks/hostile.py                 # every case, table on stdout
    python benchmarks/hostile.py --cases pixel-bomb render-bomb --out /tmp/hostile.md
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # bombs.py builds the files, peak_memory.py measures

from peak_memory import measure  # noqa: E402

_ENCODER = """
from llama_index_vlm.testing import make_tiny_checkpoint
from llama_index_vlm.encoder import ColPaliEncoder
encoder = ColPaliEncoder.from_pretrained(
    make_tiny_checkpoint({kind!r}, root / "checkpoint"), show_progress=False
)
"""
_ROOT = """
from pathlib import Path
import bombs, pdfs
root = Path({root!r})
(root / "docs").mkdir(parents=True, exist_ok=True)
"""

#: name -> (attack class, worst case, setup, work); ``work`` sets ``result`` to the outcome.
CASES: dict[str, tuple[str, str, str, str]] = {
    "pixel-bomb": (
        "Pixel bombs",
        "16 pages of 14,400 x 14,400 pt (a 1 KB PDF; rendered at 47 dpi: 9400 x 9400 px, the "
        "pixel budget) and a good PDF, ingested in one batch of 16",
        _ROOT
        + _ENCODER.format(kind="colpali")
        + """
from llama_index_vlm.ingestion import ingest
from llama_index_vlm.store import LanceDBPageStore
(root / "docs" / "bomb.pdf").write_bytes(bombs.huge_media_box_pdf(16))
pdfs.write_numbered_pdf(root / "docs" / "good.pdf", 2)
store = LanceDBPageStore(uri=str(root / "index"))
""",
        """
report = ingest(root / "docs", encoder, store, batch_size=16, show_progress=False)
result = f"all {report.pages_added} pages indexed, {len(report.failed)} failed"
""",
    ),
    "strip-query": (
        "Pixel bombs",
        "a 1 x 1,000,000 px PNG as an image query (ColQwen2; was padded to 5,000 x 1,000,000)",
        _ROOT
        + _ENCODER.format(kind="colqwen2")
        + """
from llama_index.core.schema import QueryBundle
from llama_index_vlm.ingestion import ingest
from llama_index_vlm.retriever import ColPaliRetriever
from llama_index_vlm.store import LanceDBPageStore
pdfs.write_numbered_pdf(root / "docs" / "good.pdf", 2)
(root / "strip.png").write_bytes(bombs.strip_png(1, 1_000_000))
store = LanceDBPageStore(uri=str(root / "index"))
ingest(root / "docs", encoder, store, show_progress=False)
retriever = ColPaliRetriever(encoder, store, similarity_top_k=1)
retriever.retrieve("page")
""",
        """
hits = retriever.retrieve(QueryBundle(query_str="", image_path=str(root / "strip.png")))
result = f"answered ({len(hits)} hit)"
""",
    ),
    "render-bomb": (
        "Render-time bombs",
        "a 3 KB PDF of 12 nested Form XObjects, each drawing the next 4 times (16.8 million "
        "paths; 49 s and 8 GB in-process before), default limits (30 s, 2048 MiB)",
        _ROOT
        + """
from llama_index_vlm.errors import UnreadableDocumentError
from llama_index_vlm.reader import PDFPageReader
(root / "nested.pdf").write_bytes(bombs.nested_forms_pdf(12))
""",
        """
try:
    PDFPageReader().load_data(root / "nested.pdf")
    result = "read"
except UnreadableDocumentError as error:
    result = "refused: " + error.reason.split(" (PDFPageReader")[0]
""",
    ),
    "over-wide": (
        "Over-wide pages",
        "a 70,000 x 8 px PNG (over JPEG's 65,500 px) beside a good PDF, ingested",
        _ROOT
        + _ENCODER.format(kind="colpali")
        + """
from llama_index_vlm.ingestion import ingest
from llama_index_vlm.store import LanceDBPageStore
(root / "docs" / "wide.png").write_bytes(bombs.wide_png(70_000, 8))
pdfs.write_numbered_pdf(root / "docs" / "good.pdf", 2)
store = LanceDBPageStore(uri=str(root / "index"))
""",
        """
report = ingest(root / "docs", encoder, store, show_progress=False)
result = f"{report.pages_added} pages indexed (the wide one as PNG), {len(report.failed)} failed"
""",
    ),
    "malformed": (
        "Malformed files",
        "90 fuzzed files (byte-flipped multi-page TIFFs, PNGs and PDFs, broken xrefs, PNG "
        "chunks claiming 2 GB, 40 MB of compressed text chunks), each counted and read",
        _ROOT
        + """
import sys
sys.path.insert(0, {hostile!r})
from test_hostile_malformed_files import _malformed_files, _read
from llama_index_vlm.reader import PDFPageReader
for name, data in _malformed_files().items():
    (root / "docs" / name).write_bytes(data)
reader = PDFPageReader(dpi=36)
""",
        """
outcomes = [_read(reader, path) for path in sorted((root / "docs").iterdir())]
refused = sum(isinstance(outcome, Exception) for outcome in outcomes)
result = f"{len(outcomes) - refused} read, {refused} refused by name, 0 other errors"
""",
    ),
    "page-count-pdf": (
        "Page-count bombs",
        "a 6 MB PDF listing one page 1,000,000 times, default limit (10,000 pages)",
        _ROOT
        + """
from llama_index_vlm.errors import UnreadableDocumentError
from llama_index_vlm.reader import PDFPageReader
(root / "listed.pdf").write_bytes(bombs.repeated_page_pdf(1_000_000))
""",
        """
try:
    PDFPageReader().count_pages(root / "listed.pdf")
    result = "counted"
except UnreadableDocumentError as error:
    result = "refused: " + error.reason.split(";")[0]
""",
    ),
    "page-count-tiff": (
        "Page-count bombs",
        "a 20,000-frame TIFF (2.3 MB), default limit (10,000 pages)",
        _ROOT
        + """
from llama_index_vlm.errors import UnreadableDocumentError
from llama_index_vlm.reader import PDFPageReader
(root / "frames.tif").write_bytes(bombs.many_frames_tiff(20_000))
""",
        """
try:
    PDFPageReader().count_pages(root / "frames.tif")
    result = "counted"
except UnreadableDocumentError as error:
    result = "refused: " + error.reason.split(";")[0]
""",
    ),
    "query-tokens": (
        "Query injection",
        "a query spelling every special token of ColPali's tokenizer, and a FIFO as image query",
        _ROOT
        + _ENCODER.format(kind="colpali")
        + """
import os
from llama_index.core.schema import QueryBundle
from llama_index_vlm.errors import UnreadableDocumentError
from llama_index_vlm.ingestion import ingest
from llama_index_vlm.retriever import ColPaliRetriever
from llama_index_vlm.special_tokens import SpecialTokens
from llama_index_vlm.store import LanceDBPageStore
pdfs.write_numbered_pdf(root / "docs" / "good.pdf", 2)
store = LanceDBPageStore(uri=str(root / "index"))
ingest(root / "docs", encoder, store, show_progress=False)
retriever = ColPaliRetriever(encoder, store, similarity_top_k=2)
tokens = SpecialTokens(encoder.processor.tokenizer, ("<image>",)).tokens
os.mkfifo(root / "query.png")
""",
        """
hits = retriever.retrieve(" ".join(tokens))
try:
    retriever.retrieve(QueryBundle(query_str="", image_path=str(root / "query.png")))
    fifo = "read?!"
except UnreadableDocumentError:
    fifo = "FIFO refused"
result = f"{len(tokens)} special tokens: answered ({len(hits)} hits); {fifo}"
""",
    ),
    "damaged-store": (
        "Damaged stores",
        "a page's stored vectors overwritten with NaN among 200 pages; loading the page "
        "vectors, as a retriever's page cache does before it searches",
        _ROOT
        + """
import numpy as np, pyarrow as pa
from page_documents import document_pages as page_documents
from llama_index_vlm.errors import DamagedStoreError
from llama_index_vlm.store import LanceDBPageStore
store = LanceDBPageStore(uri=str(root / "index"))
for n in range(20):
    pages = page_documents(f"doc{n}", 10)
    store.add(pages, [np.eye(8, 16, dtype=np.float32)] * len(pages))
table = store.client.open_table("pages")
row = table.search().where("page_id = 'doc7-p3'").limit(None).to_arrow()
index = row.schema.get_field_index("vectors")
field = row.schema.field(index)
nan = [[[float("nan")] * 16 for _ in range(8)]]
row = row.set_column(index, field, pa.array(nan, type=field.type))
table.delete("page_id = 'doc7-p3'")
table.add(row)
""",
        """
try:
    next(LanceDBPageStore(uri=str(root / "index")).iter_page_vectors())
    list(LanceDBPageStore(uri=str(root / "index")).iter_page_vectors())
    result = "read?!"
except DamagedStoreError as error:
    result = f"DamagedStoreError naming {error.doc_ids}"
""",
    ),
    "symlinks": (
        "Symlinks",
        "a folder of 2 PDFs and 1,000 symbolic links to a folder and files outside it, listed "
        "with the default follow_symlinks=False",
        _ROOT
        + """
import os
from llama_index_vlm.reader import PDFPageReader
outside = root / "outside"
pdfs.write_numbered_pdf(outside / "secret.pdf", 1)
for name in ("a", "b"):
    pdfs.write_numbered_pdf(root / "docs" / f"{name}.pdf", 1)
for n in range(500):
    os.symlink(outside, root / "docs" / f"folder{n}")
    os.symlink(outside / "secret.pdf", root / "docs" / f"file{n}.pdf")
""",
        """
import logging
logging.getLogger("llama_index_vlm").setLevel(logging.ERROR)
files = PDFPageReader().list_files(root / "docs")
result = f"{len(files)} files listed, 1,000 links out skipped"
""",
    ),
    "disk-full": (
        "Disk full mid-file",
        "a 2-page PDF then a 40-page TIFF (60 KB pages) ingested in batches of 4 onto a 600 KB "
        "tmpfs (or, without permission to mount, LanceDB failing with ENOSPC)",
        _ROOT
        + _ENCODER.format(kind="colpali")
        + """
import subprocess, sys
sys.path.insert(0, {hostile!r})
from test_hostile_disk_full import _fail_commits_from, _mount_tmpfs, _noise_tiff
import pytest
from llama_index_vlm.errors import StoreError
from llama_index_vlm.ingestion import ingest
from llama_index_vlm.reader import PDFPageReader
from llama_index_vlm.store import LanceDBPageStore
pdfs.write_numbered_pdf(root / "docs" / "a-small.pdf", 2)
_noise_tiff(root / "docs" / "b-scans.tif", 40)
mounted = _mount_tmpfs(root / "small", "600k")
patch = pytest.MonkeyPatch()
if not mounted:
    _fail_commits_from(patch, 3)
store = LanceDBPageStore(uri=str(root / "small" / "index"), auto_compact=False)
""",
        """
try:
    ingest(root / "docs", encoder, store, reader=PDFPageReader(dpi=36), batch_size=4,
           show_progress=False)
    outcome = "no error?!"
except StoreError:
    outcome = "StoreError"
files = sorted(n.metadata["file_name"] for n in LanceDBPageStore(
    uri=str(root / "small" / "index"), auto_compact=False).get_nodes())
how = "real tmpfs" if mounted else "ENOSPC injected"
stored = {name: files.count(name) for name in sorted(set(files))}
result = f"{outcome} ({how}); pages stored by file: {stored}"
patch.undo()
if mounted:
    subprocess.run(["umount", "-l", str(root / "small")], check=False)
""",
    ),
    "compaction": (
        "Deletes free space",
        "2,000 pages of 200 KB stored in 100 commits, all deleted, then compact(grace=0) "
        "(`compact --grace 0`)",
        _ROOT
        + """
import numpy as np
from datetime import timedelta
from PIL import Image
from page_documents import page_document
from llama_index_vlm.images import encode_image
from llama_index_vlm.store import LanceDBPageStore
store = LanceDBPageStore(uri=str(root / "index"), auto_compact=False)
rng = np.random.default_rng(0)
def noise_png():
    return encode_image(Image.fromarray(rng.integers(0, 255, (260, 260, 3), dtype=np.uint8)), "PNG")
for n in range(100):
    pages = [page_document(f"doc{n}", p, 20, image=noise_png()) for p in range(1, 21)]
    store.add(pages, [np.eye(8, 16, dtype=np.float32)] * len(pages))
store.clear()
""",
        """
report = store.compact(grace=timedelta(0))
result = report.summary()
""",
    ),
}


def machine() -> str:
    """CPU model, cores and memory, for the results file."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB"


def run_case(name: str, scratch: Path) -> dict:
    """Build and run one case in a fresh process; its measurements."""
    attack, worst_case, setup, work = CASES[name]
    root = scratch / name
    # str.replace, not format: the setups hold braces of their own (f-strings).
    setup = setup.replace("{root!r}", repr(str(root)))
    setup = setup.replace("{hostile!r}", repr(str(REPO / "tests" / "hostile")))
    measured = measure(setup, {name: work}, timeout=1800)[name]
    return {
        "attack": attack,
        "case": worst_case,
        "outcome": measured.result,
        "growth_mb": measured.growth_mb,
        "children_mb": measured.children_peak_mb,
        "seconds": measured.seconds,
        "light": "ColPaliEncoder" not in setup,
    }


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| attack class | worst case built | outcome | peak memory over start (MB) | "
        "largest render worker (MB) | time (s) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for row in rows:
        worker = f"{row['children_mb']:.0f}" if row["light"] else "≤ 2048 (cap)"
        lines.append(
            f"| {row['attack']} | {row['case']} | {row['outcome']} | {row['growth_mb']:.0f} | "
            f"{worker} | {row['seconds']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Run the cases asked for and print (and optionally write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--out", type=Path, help="write the results as Markdown here")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.cases:
            rows.append(run_case(name, Path(scratch)))
            print(f"  {name:16s} {rows[-1]['growth_mb']:7.0f} MB  {rows[-1]['seconds']:6.1f} s  "
                  f"{rows[-1]['outcome']}", flush=True)  # fmt: skip
    header = (
        f"Machine: {machine()}; load average {load_before:.1f} before and "
        f"{os.getloadavg()[0]:.1f} after (shared with other work). Command: "
        f"`python benchmarks/hostile.py`.\n\n"
    )
    print()
    print(header + table(rows))
    if args.out:
        args.out.write_text(header + table(rows) + "\n")


if __name__ == "__main__":
    main()
