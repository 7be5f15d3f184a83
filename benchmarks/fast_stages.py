"""The fast index's changes of issue 15's third session, each beside what it replaced (one process).

Rows:

- ``codes``: the pooled-code stage over the prefiltered pages of a ``--pages`` index built from
  ``search.py``'s synthetic pages: float16 products, bfloat16 products (the same codes kept as
  bfloat16) and the float32 path float16 codes fall back to (``code_maxsim_scores`` as the
  index runs each), taking turns query by query; and which one this CPU's index uses.
- ``lookups``: ``LanceDBPageStore.get_nodes`` of 10 pages from tables of ``--lookup-pages``
  one-vector pages, before and after compaction creates the ``page_id`` index.

Usage::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/fast_stages.py --pages 10000
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from search import SyntheticCorpus  # noqa: E402

from llama_index_vlm.search import (  # noqa: E402
    FastPageIndex,
    code_scores,  # noqa: E402
)
from llama_index_vlm.search import fast as fast_module  # noqa: E402


def log(message: str) -> None:
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"[{time.strftime('%H:%M:%S')}] (load {load}) {message}", flush=True)


def taking_turns(variants: dict, inputs: list, rounds: int) -> dict[str, tuple[float, float]]:
    """Median wall and CPU ms per call of each variant, the variants taking turns per input."""
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for item in inputs:
            for name, call in variants.items():
                started, cpu_started = time.perf_counter(), time.process_time()
                call(item)
                wall[name].append(time.perf_counter() - started)
                cpu[name].append(time.process_time() - cpu_started)
    return {name: (np.median(wall[name]) * 1e3, np.median(cpu[name]) * 1e3) for name in variants}


def bench_index(n_pages: int, n_queries: int, rounds: int) -> None:
    corpus = SyntheticCorpus()
    index = FastPageIndex(code_dtype="float16")
    started = time.perf_counter()
    for start in range(0, n_pages, 500):
        stop = min(n_pages, start + 500)
        index.add(range(start, stop), corpus.pages(start, stop))
    index.prepare()
    log(f"index of {n_pages:,} pages built in {time.perf_counter() - started:.0f}s")
    rng = np.random.default_rng(n_pages)
    queries = [corpus.query(int(t)) for t in rng.choice(n_pages, n_queries, replace=False)]
    alive = index._alive.values
    depth = fast_module.default_prefilter_depth(n_pages)
    slots = [np.sort(index._prefiltered_slots(q, alive, depth)) for q in queries]
    codes, offsets = index._codes.values, index._offsets.values
    bfloat16_codes = code_scores.code_matrix(codes, "bfloat16")
    fast_products = code_scores.half_products_are_fast()

    def with_products(half: bool, stored: np.ndarray):
        def call(position: int):
            code_scores.half_products_are_fast = lambda: half
            try:
                code_scores.code_maxsim_scores(queries[position], stored, offsets, slots[position])
            finally:
                code_scores.half_products_are_fast = lambda: fast_products

        return call

    results = taking_turns(
        {
            "float16 products": with_products(True, codes),
            "bfloat16 products": with_products(False, bfloat16_codes),
            "float32 (widened float16)": with_products(False, codes),
        },
        list(range(n_queries)),
        rounds,
    )
    for name, (wall, cpu) in results.items():
        log(f"codes: pooled-code stage over {depth} pages, {name}: p50 {wall:.1f} ms "
            f"({cpu:.1f} ms CPU)")  # fmt: skip
    log(f"codes: this CPU's timing chose float16 products: {fast_products}, bfloat16: "
        f"{code_scores.bfloat16_products_are_fast()}; a new index keeps "
        f"{code_scores.preferred_code_dtype()} codes")  # fmt: skip


def bench_lookups(n_pages: int, workdir: Path) -> None:
    from llama_index.core.schema import ImageDocument
    from PIL import Image

    from llama_index_vlm.store import LanceDBPageStore

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), "white").save(buffer, format="PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    store = LanceDBPageStore(uri=str(workdir / f"lookups-{n_pages}"), auto_compact=False)
    rng = np.random.default_rng(0)
    for start in range(0, n_pages, 5000):
        documents = [
            ImageDocument(id_=f"page{i}", image=image, image_mimetype="image/png",
                          metadata={"doc_id": f"doc{i}", "page_number": 1})
            for i in range(start, min(n_pages, start + 5000))
        ]  # fmt: skip
        store.add(documents, [rng.standard_normal((1, 128)).astype(np.float32) for _ in documents])
    page_ids = [f"page{(j * 7919) % n_pages}" for j in range(10)]

    def p50() -> float:
        store.get_nodes(page_ids)
        times = []
        for _ in range(40):
            started = time.perf_counter()
            store.get_nodes(page_ids)
            times.append(time.perf_counter() - started)
        return float(np.median(times)) * 1e3

    before = p50()
    store.compact()
    log(f"lookups: get_nodes of 10 pages among {n_pages:,}: {before:.1f} ms by scan, "
        f"{p50():.1f} ms with the page_id index")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=10_000, help="0 skips the codes rows")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lookup-pages", default="10000,100000", help="comma-separated")
    args = parser.parse_args()
    log(f"start, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    if args.pages:
        bench_index(args.pages, args.queries, args.rounds)
    with tempfile.TemporaryDirectory(prefix="vlm-fast-stages-") as workdir:
        for size in (int(s) for s in args.lookup_pages.split(",") if s):
            bench_lookups(size, Path(workdir))


if __name__ == "__main__":
    main()
