"""Hybrid page search (MaxSim fused with BM25 over the text layer) against visual-only search,
on queries for exact identifiers (part numbers, people's names) printed on one page each.

Builds a catalogue of PDF pages, each listing one part number and one contact name among shared
filler words, indexes it with its text layer (``PDFPageReader(extract_text=True)``), and asks
for each page's part number and name. Prints recall@1, recall@5 and MRR of the target page and
the median and p95 latency per query, for ``search_mode="exact"``, BM25 alone
(``text_search.search_pages``) and ``"hybrid"``, side by side in one process, with the
machine's load.

The encoder is the tiny random ColPali checkpoint (no real weights can be downloaded here), so
the visual ranking is near chance and the numbers show what the text ranking adds when the
visual one cannot read the identifier; a real ColPali reads large printed text far better than
chance, but identifiers differ by one character, which MaxSim over patches blurs.

    python benchmarks/hybrid.py --pages 200 --queries 100
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import string
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import sys  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from pdfs import write_text_pdf  # noqa: E402

from llama_index_vlm import (  # noqa: E402
    ColPaliEncoder,
    LanceDBPageStore,
    PDFPageReader,
    VisualDocumentIndex,
)
from llama_index_vlm.store.text_search import search_pages  # noqa: E402
from llama_index_vlm.testing import make_tiny_checkpoint  # noqa: E402

FILLER = (
    "pump valve bracket seal housing spare part maintenance interval torque warranty "
    "supplier contact order quantity delivery"
).split()
FIRST = ["Marta", "Jonas", "Aiko", "Pedro", "Lena", "Omar", "Ines", "Tariq", "Sven", "Nadia"]
LAST = ["Lindqvist", "Okafor", "Brandt", "Moreau", "Takeda", "Varga", "Silva", "Novak"]


def catalogue(n_pages: int, rng: random.Random) -> list[tuple[str, str, list[str]]]:
    """``(part number, name, page lines)`` per page; identifiers are unique."""
    pages, parts, names = [], set(), set()
    while len(pages) < n_pages:
        part = (
            "".join(rng.choices(string.ascii_uppercase, k=2))
            + f"-{rng.randrange(1000, 9999)}-"
            + rng.choice(string.ascii_uppercase)
        )
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)} {rng.randrange(10, 99)}"
        if part in parts or name in names:
            continue
        parts.add(part)
        names.add(name)
        lines = [
            " ".join(rng.choices(FILLER, k=6)),
            f"Part {part} {' '.join(rng.choices(FILLER, k=3))}",
            f"Contact {name}",
            " ".join(rng.choices(FILLER, k=6)),
        ]
        pages.append((part, name, lines))
    return pages


def build(root: Path, n_pages: int, per_file: int, seed: int):
    """The catalogue's PDFs indexed with their text layer; ``(index, {page_id: identifiers})``."""
    rng = random.Random(seed)
    pages = catalogue(n_pages, rng)
    for start in range(0, n_pages, per_file):
        chunk = pages[start : start + per_file]
        write_text_pdf(root / f"catalogue-{start // per_file:03d}.pdf", [p[2] for p in chunk])
    encoder = ColPaliEncoder.from_pretrained(
        make_tiny_checkpoint("colpali", root / "colpali"), show_progress=False
    )
    documents = PDFPageReader(dpi=72, extract_text=True).load_data(root)
    index = VisualDocumentIndex.from_documents(
        documents,
        encoder=encoder,
        store=LanceDBPageStore(uri=str(root / "index")),
        show_progress=False,
    )
    targets = {}
    for document in documents:
        position = (
            int(document.metadata["file_name"][10:13]) * per_file
            + document.metadata["page_number"]
            - 1
        )
        part, name, _ = pages[position]
        targets[document.node_id] = (part, name)
    return index, targets


def evaluate(index, queries: list[tuple[str, str]], mode: str) -> dict[str, float]:
    """Recall@1, recall@5, MRR of the target page and latency, for one search mode."""
    if mode == "text only":
        search = lambda text: [page_id for page_id, _ in search_pages(index.store, text, k=5)]  # noqa: E731
    else:
        retriever = index.as_retriever(similarity_top_k=5, search_mode=mode)
        search = lambda text: [hit.node.node_id for hit in retriever.retrieve(text)]  # noqa: E731
    search("warm up")
    ranks, latencies = [], []
    for text, target in queries:
        start = time.perf_counter()
        ids = search(text)
        latencies.append(time.perf_counter() - start)
        ranks.append(ids.index(target) + 1 if target in ids else None)
    n = len(queries)
    latencies.sort()
    return {
        "recall@1": sum(rank == 1 for rank in ranks) / n,
        "recall@5": sum(rank is not None for rank in ranks) / n,
        "mrr": sum(1 / rank for rank in ranks if rank) / n,
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": latencies[int(0.95 * (n - 1))] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--per-file", type=int, default=10)
    parser.add_argument("--queries", type=int, default=100, help="per identifier kind")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        index, targets = build(Path(tmp), args.pages, args.per_file, args.seed)
        print(f"indexed {index.store.count()} pages in {time.perf_counter() - start:.1f} s")
        rng = random.Random(args.seed + 1)
        sample = rng.sample(sorted(targets), min(args.queries, len(targets)))
        kinds = {
            "part number": [(targets[page][0], page) for page in sample],
            "name": [(targets[page][1], page) for page in sample],
        }
        print()
        print("| query | mode | recall@1 | recall@5 | MRR | p50 ms | p95 ms |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for kind, queries in kinds.items():
            for mode in ("exact", "text only", "hybrid"):
                result = evaluate(index, queries, mode)
                print(
                    f"| {kind} | {mode} | {result['recall@1']:.2f} | {result['recall@5']:.2f} "
                    f"| {result['mrr']:.3f} | {result['p50_ms']:.1f} | {result['p95_ms']:.1f} |"
                )
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
