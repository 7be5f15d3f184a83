"""A ``ColPaliRetriever`` exact-mode query, store reads included: float16 screening against the
float32 path it replaced, side by side (issue 15, fourth session).

Pages are ``search.py``'s synthetic ColPali-like pages (1030 x 128 float16), written straight
to a :class:`~llama_index_vlm.store.LanceDBPageStore` as ``retriever_fast.py`` writes them;
the encoder is the same stand-in that returns each query's precomputed vectors. One retriever
(``search_mode="exact"``) answers every query twice in turn: as it runs (``exact_top_k``
screens with float16 products where this CPU makes them fast), and with float16 products
switched off (float32 MaxSim of every page, the path before). Both must return the same pages;
their scores may differ in the last bit, as float32 products of a page in a different block of
pages may (the rescoring multiplies a few pages at a time, the full pass ~250 at a time).

``--compare-per-request`` times instead a new retriever for every query, as a web handler
makes one (``ColPaliRetriever(encoder, store).retrieve(q)``): with the store's own cache holder
(the default since issue 15's eighth session, an index's since its seventh:
:class:`~llama_index_vlm.retriever.page_caches.PageCacheHolder`, the page cache stays loaded)
and with a holder that goes with each retriever (so every query loads every page again: how
retrievers made per request behaved before), alternating query by query.

Usage::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/retriever_exact.py --pages 2000
    OMP_WAIT_POLICY=PASSIVE python benchmarks/retriever_exact.py --pages 1000 --queries 5 \
        --compare-per-request
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from retriever_fast import QueryVectors, log  # noqa: E402
from search import K, SyntheticCorpus, write_page_store, write_pages  # noqa: E402

from llama_index_vlm import ColPaliRetriever  # noqa: E402
from llama_index_vlm.retriever.page_caches import PageCacheHolder  # noqa: E402
from llama_index_vlm.search import code_scores  # noqa: E402
from llama_index_vlm.store import LanceDBPageStore  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=2_000)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a temp dir)")
    parser.add_argument(
        "--compare-per-request",
        action="store_true",
        help="a retriever per query, with and without an index's page-cache holder",
    )
    args = parser.parse_args()
    log(f"start: {args.pages} pages, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    corpus = SyntheticCorpus()
    fast_products = code_scores.half_products_are_fast()
    with tempfile.TemporaryDirectory(prefix="vlm-retriever-exact-", dir=args.workdir) as work:
        work = Path(work)
        pages = write_pages(corpus, args.pages, work / "pages.npy")
        targets = np.random.default_rng(args.pages).choice(args.pages, args.queries, replace=False)
        queries = [corpus.query(int(target)) for target in targets]
        store = write_page_store(pages, work)
        del pages
        if args.compare_per_request:
            compare_per_request(store, queries, args.rounds)
            return
        retriever = ColPaliRetriever(
            QueryVectors(queries), store, similarity_top_k=K, search_mode="exact"
        )
        started = time.perf_counter()
        retriever.retrieve("q0")  # loads every page's vectors (and their norms) into memory
        log(f"first query (exact cache loaded) in {time.perf_counter() - started:.1f}s")

        def run(position: int, half: bool) -> list[tuple[str, float]]:
            code_scores.half_products_are_fast = lambda: half and fast_products
            try:
                hits = retriever.retrieve(f"q{position}")
            finally:
                code_scores.half_products_are_fast = lambda: fast_products
            return [(hit.node.node_id, hit.score) for hit in hits]

        variants = {"float16 screening (exact_top_k)": True, "float32 over every page": False}
        times: dict[str, list[float]] = {name: [] for name in variants}
        differing, score_gap = 0, 0.0
        for _ in range(args.rounds):
            for position in range(args.queries):
                results = []
                for name, half in variants.items():
                    started = time.perf_counter()
                    results.append(run(position, half))
                    times[name].append(time.perf_counter() - started)
                screened, full = results
                differing += [page for page, _ in screened] != [page for page, _ in full]
                gaps = [abs(a - b) / abs(b) for (_, a), (_, b) in zip(screened, full, strict=True)]
                score_gap = max(score_gap, *gaps)
        for name, values in times.items():
            ms = np.array(values) * 1000
            log(f"{name}: p50 {np.median(ms):.1f} ms, p90 {np.percentile(ms, 90):.1f} ms")
        n_queries = len(times["float32 over every page"])
        log(
            f"same pages in the same order in {n_queries - differing} of {n_queries} queries, "
            f"scores within {score_gap:.1e} of each other (relative); this CPU's timing chose "
            f"float16 products: {fast_products}"
        )


def compare_per_request(store, queries, rounds: int) -> None:
    """p50 of a query through a retriever made for it, with the store's cache holder and with
    one of its own."""
    encoder = QueryVectors(queries)
    # Caches are shared per store object: the variant with a holder per retriever opens its own
    # store object, so that it finds no cache the store's holder keeps.
    other = LanceDBPageStore(uri=store.uri, table_name=store.table_name)
    variants = {
        "the store's holder (cache kept)": (store, lambda: None),
        "a holder per retriever (cache dropped)": (other, PageCacheHolder),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    hits: dict[str, list[list[str]]] = {name: [] for name in variants}
    ColPaliRetriever(encoder, store, search_mode="exact").retrieve("q0")
    for _ in range(rounds):
        for position in range(len(queries)):
            for name, (opened, new_holder) in variants.items():
                gc.collect()  # a dropped cache is freed, as between two requests
                started = time.perf_counter()
                retriever = ColPaliRetriever(
                    encoder,
                    opened,
                    similarity_top_k=K,
                    search_mode="exact",
                    cache_holder=new_holder(),
                )
                found = retriever.retrieve(f"q{position}")
                times[name].append(time.perf_counter() - started)
                hits[name].append([hit.node.node_id for hit in found])
                del retriever, found
    for name, values in times.items():
        ms = np.array(values) * 1000
        log(
            f"retriever per query, {name}: p50 {np.median(ms):,.1f} ms, p90 "
            f"{np.percentile(ms, 90):,.1f} ms"
        )
    same = sum(a == b for a, b in zip(*hits.values(), strict=True))
    log(f"same pages in {same} of {len(times[next(iter(times))])} queries")


if __name__ == "__main__":
    main()
