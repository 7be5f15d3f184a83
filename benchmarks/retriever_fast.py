"""A ``ColPaliRetriever`` fast-mode query, store reads included, and its thread scaling (issue 15).

Pages are ``search.py``'s synthetic ColPali-like pages (1030 x 128 float16), written straight
to a :class:`~llama_index_vlm.store.LanceDBPageStore` (1-pixel images) as ``search.py`` does.
The retriever's encoder is replaced by a stand-in that returns each query's precomputed
vectors (query encoding is the model's time, not the search's); everything else is the real
retriever: table version, fingerprint check, the fast cache (persisted index, candidates,
adaptive rerank reading memory-mapped vectors) and the nodes of the top ``k`` read from
LanceDB.

Rows, in one process:

- A first pass of the queries (reported, not counted: it maps the candidates' vectors from the
  index files the first query wrote).
- ``retriever.retrieve`` one query at a time, ``--passes`` times over the queries: p50 / p90
  ms, recall@10 against exact MaxSim (computed in chunks over all pages), planted page first.
  ``cache.search`` (the fast cache alone, no node reads) takes turns with it query by query.
- Throughput of 1 thread vs ``--threads`` threads sharing the one retriever, ``--seconds``
  each, alternating ``--rounds`` times so a burst of load hits both alike.
- With ``--compare-numpy-centroids``: the same throughput rows with the prefilter's
  query-centroid product through torch (today) and through numpy (before), round by round.
- With ``--compare-read-paths``: each query today and with the reads before issue 15's fifth
  session (nodes by a ``page_id IN`` scan instead of by row address, the store's fingerprint
  and size read at every query, reranked pages gathered before widening), paired.
- With ``--compare-search-slots``: the throughput rows with at most one search per core at a
  time (today, ``llama_index_vlm.retriever.search_slots``) and unbounded, round by round.
- With ``--compare-openmp-rule``: the throughput rows with a search that starts beside another
  running on one OpenMP thread (today) and on torch's full team, round by round.
- With ``--compare-code-dtypes``: each query with the fast index's codes kept in the type this
  CPU prefers (``preferred_code_dtype``) and in the other one (float16 or bfloat16: the same
  codes, converted), paired; then the throughput rows of both, round by round.
- With ``--compare-node-versions``: each query with the hits' nodes read at the version the
  search scored (today) and at the current version (a second read of the table's version),
  paired; then the throughput rows of both, round by round.
- With ``--diagnose-store-calls``: the throughput rows with the store's calls as they are, with
  the table version from memory, with the version and the hits' nodes from memory, and with
  both from memory after a 3 ms sleep, with the cores busy and the machine's idle share (where
  the threads wait, not a mode to use).
- With ``--compare-stage-threads``: a lone search's candidates and rerank stages each on one
  OpenMP thread and on torch's whole team, query by query in turns.
- With ``--compare-rerank-threads``: each query with the rerank on the threads this process's
  probe chose (``search_slots.rerank_on_one_thread``) and on the other choice, paired; then the
  throughput rows of both, round by round.
- With ``--compare-memmap-slices``: each query with the rerank's pages sliced from plain arrays
  over the index files' mapping (today) and from the ``np.memmap`` objects, paired.
- With ``--compare-read-advice``: each query with the rerank's pages announced to the OS
  before they are read (today; ``posix_fadvise`` ``WILLNEED``) and without, paired: what the
  announcement costs when the pages are in the page cache, as in this run.
- With ``--compare-version-reads``: the table's version listed from the Lance dataset (today)
  and read through LanceDB's ``Table.version`` (before): the reads alone and from many threads
  at once, then each query paired, then the throughput rows of both, round by round.
- With ``--compare-processes``: one thread, ``--threads`` threads, and two processes querying
  the same store with one thread each, round by round (what one process's threads leave).
- With ``--compare-search-processes``: the retriever's fast searches in this process (the
  default) and in two worker processes (``ColPaliRetriever(search_processes=2)``): the answers
  compared, each query's latency paired, then one thread and ``--threads`` threads, round by
  round, with the machine's idle share.
- With ``--compare-one-thread-blocks``: products on one OpenMP thread (the rerank's, and the
  codes' beside another search) in small blocks that stay in the core's cache (today) and in
  a thread team's large blocks (before): each query paired on one thread, then the throughput
  of 1 and ``--threads`` threads and of two processes of one thread each, round by round.
- With ``--compare-lance-takes``: each query with the hits' nodes taken from the Lance dataset
  (today) and through LanceDB's ``take_row_ids`` (before), paired; then the throughput rows of
  both, round by round.

Usage::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/retriever_fast.py --pages 10000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from search import K, SyntheticCorpus, write_page_store, write_pages  # noqa: E402

from llama_index_vlm import ColPaliRetriever  # noqa: E402
from llama_index_vlm.search import PageVectorMatrix, maxsim_scores, top_k  # noqa: E402


class QueryVectors:
    """Stands in for the encoder: ``embed_queries(["q3"])`` returns query 3's vectors."""

    fingerprint = None

    def __init__(self, queries: list[np.ndarray]) -> None:
        self.queries = queries

    def embed_queries(self, texts: list[str], show_progress: bool = False) -> list[np.ndarray]:
        return [self.queries[int(text[1:])] for text in texts]


def load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] (load {load()}) {message}", flush=True)


def exact_truth(pages: np.ndarray, queries: list[np.ndarray], chunk: int = 1000) -> np.ndarray:
    scores = np.empty((len(queries), len(pages)), dtype=np.float32)
    for start in range(0, len(pages), chunk):
        matrix = PageVectorMatrix.from_array(np.ascontiguousarray(pages[start : start + chunk]))
        scores[:, start : start + chunk] = maxsim_scores(queries, matrix)
    return top_k(scores, K)[0]


def calls_per_second(call, threads: int, seconds: float) -> tuple[float, float]:
    """Calls a second of ``call(slot, done)`` (the thread's number, its calls so far) from
    ``threads`` threads for ``seconds``, and the cores the process kept busy meanwhile."""
    done = [0] * threads
    stop = time.perf_counter() + seconds

    def work(slot: int) -> None:
        while time.perf_counter() < stop:
            call(slot, done[slot])
            done[slot] += 1

    started, cpu = time.perf_counter(), time.process_time()
    workers = [threading.Thread(target=work, args=(slot,)) for slot in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - started
    return sum(done) / wall, (time.process_time() - cpu) / wall


def throughput(retriever, n_queries: int, threads: int, seconds: float) -> tuple[float, float]:
    """Queries per second of ``threads`` threads calling ``retriever.retrieve`` for ``seconds``,
    and the cores the process kept busy meanwhile (its CPU seconds / wall seconds): threads that
    wait on each other leave it near 1 however many there are."""
    return calls_per_second(
        lambda slot, done: retriever.retrieve(f"q{(slot + done * threads) % n_queries}"),
        threads,
        seconds,
    )


def profile_queries(retriever, n_queries: int) -> None:
    """cProfile of one pass of the queries through ``retriever.retrieve``: the top functions."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for position in range(n_queries):
        retriever.retrieve(f"q{position}")
    profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument(
        "--passes", type=int, default=3, help="timed passes of the queries (p50 over all)"
    )
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0, help="per throughput round")
    parser.add_argument("--rounds", type=int, default=2, help="1-thread / N-thread alternations")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a temp dir)")
    parser.add_argument(
        "--compare-numpy-centroids",
        action="store_true",
        help="also the throughput with the prefilter's centroid product through numpy (before)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also print where one pass of the queries spends"
    )
    parser.add_argument(
        "--compare-read-paths",
        action="store_true",
        help="also time each query today and with the reads before the fifth session, paired",
    )
    parser.add_argument(
        "--compare-lance-takes",
        action="store_true",
        help="also the latency and throughput with the hits' nodes taken from the Lance "
        "dataset (today) and through LanceDB's take_row_ids",
    )
    parser.add_argument(
        "--compare-search-slots",
        action="store_true",
        help="also the throughput with one search per core at a time (today) and unbounded",
    )
    parser.add_argument(
        "--compare-openmp-rule",
        action="store_true",
        help="also the throughput with one OpenMP thread for a search beside another (today) "
        "and with torch's full team for every search",
    )
    parser.add_argument(
        "--compare-code-dtypes",
        action="store_true",
        help="also the latency and throughput with the fast index's codes kept as this CPU's "
        "preferred type and as the other (float16 / bfloat16)",
    )
    parser.add_argument(
        "--compare-node-versions",
        action="store_true",
        help="also the latency and throughput with the hits' nodes read at the searched "
        "version (today) and at the current one",
    )
    parser.add_argument(
        "--compare-read-advice",
        action="store_true",
        help="also the latency with the rerank's pages announced to the OS first (today) and "
        "without, paired",
    )
    parser.add_argument(
        "--compare-memmap-slices",
        action="store_true",
        help="also the latency with the rerank's pages sliced from plain arrays over the index "
        "files (today) and from np.memmap objects, paired",
    )
    parser.add_argument(
        "--compare-version-reads",
        action="store_true",
        help="also the table's version listed from the Lance dataset (today) against LanceDB's "
        "Table.version: the reads alone, then the latency and throughput",
    )
    parser.add_argument(
        "--compare-processes",
        action="store_true",
        help="also the throughput of one thread, of --threads threads and of two processes "
        "querying the same store with one thread each (what one process's threads leave)",
    )
    parser.add_argument(
        "--compare-search-processes",
        action="store_true",
        help="also the retriever's fast searches in this process (default) against two worker "
        "processes (search_processes=2): latency paired, then the throughput of 1 and "
        "--threads threads",
    )
    parser.add_argument(
        "--compare-one-thread-blocks",
        action="store_true",
        help="also products on one thread in small blocks (today) against a thread team's "
        "large ones: latency paired on one thread, then threads and two processes",
    )
    parser.add_argument(
        "--diagnose-store-calls",
        action="store_true",
        help="also the throughput rows with the table version and the hits' nodes answered "
        "from memory instead of the store (where the threads wait)",
    )
    parser.add_argument(
        "--compare-stage-threads",
        action="store_true",
        help="also a lone search's candidates and rerank stages on one OpenMP thread and on "
        "torch's team, in turns",
    )
    parser.add_argument(
        "--compare-rerank-threads",
        action="store_true",
        help="also the latency and throughput with the rerank on the threads this process's "
        "probe chose (today) and on the other choice",
    )
    args = parser.parse_args()
    log(f"start: {args.pages} pages, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    corpus = SyntheticCorpus()
    with tempfile.TemporaryDirectory(prefix="vlm-retriever-bench-", dir=args.workdir) as work:
        work = Path(work)
        started = time.perf_counter()
        pages = write_pages(corpus, args.pages, work / "pages.npy")
        log(f"pages generated in {time.perf_counter() - started:.0f}s")
        rng = np.random.default_rng(args.pages)
        targets = rng.choice(args.pages, size=args.queries, replace=False)
        queries = [corpus.query(int(target)) for target in targets]
        started = time.perf_counter()
        truth = exact_truth(pages, queries)
        log(f"exact truth in {time.perf_counter() - started:.0f}s")
        store = write_page_store(pages, work)
        del pages
        retriever = ColPaliRetriever(
            QueryVectors(queries), store, similarity_top_k=K, search_mode="fast"
        )
        started = time.perf_counter()
        retriever.retrieve("q0")  # builds the fast index and saves it beside the table
        log(f"first query (fast index built and saved) in {time.perf_counter() - started:.0f}s")
        cache = retriever._refreshed_cache(store.version, "fast")
        version = store.version

        # Each query's first pass maps its candidates' vectors from the saved index files,
        # just written; a served index has mapped them long ago. Report it, then measure.
        first_pass = []
        for position in range(len(queries)):
            started = time.perf_counter()
            retriever.retrieve(f"q{position}")
            first_pass.append(time.perf_counter() - started)
        ms = np.array(first_pass) * 1000
        log(f"first pass of the queries: p50 {np.median(ms):.1f} ms, mean {ms.mean():.1f} ms")
        latencies: dict[str, list[float]] = {"retriever.retrieve": [], "cache.search": []}
        found: list[list[int]] = []
        for pass_ in range(args.passes):
            for position in range(len(queries)):
                started = time.perf_counter()
                hits = retriever.retrieve(f"q{position}")
                latencies["retriever.retrieve"].append(time.perf_counter() - started)
                if pass_ == 0:
                    found.append([int(hit.node.node_id.removeprefix("page")) for hit in hits])
                started = time.perf_counter()
                cache.search(queries[position], K, version=version, candidate_depth=32)
                latencies["cache.search"].append(time.perf_counter() - started)
        recall = np.mean(
            [len(set(f) & set(t.tolist())) / K for f, t in zip(found, truth, strict=True)]
        )
        first = np.mean([f[0] == target for f, target in zip(found, targets, strict=True)])
        exact_first = np.mean([t[0] == target for t, target in zip(truth, targets, strict=True)])
        for name, values in latencies.items():
            ms = np.array(values) * 1000
            log(
                f"{name}: p50 {np.median(ms):.1f} ms, p90 {np.percentile(ms, 90):.1f} ms, "
                f"mean {ms.mean():.1f} ms over {len(ms)} queries"
            )
        log(f"recall@10 {recall:.3f}, planted first {first:.0%} (exact: {exact_first:.0%})")

        if args.profile:
            profile_queries(retriever, len(queries))
        if args.compare_read_paths:
            compare_read_paths(retriever, len(queries), rounds=4)
        rates: dict[int, list[float]] = {1: [], args.threads: []}
        for _ in range(args.rounds):
            for threads in rates:
                rate, cores = throughput(retriever, len(queries), threads, args.seconds)
                rates[threads].append(rate)
                log(f"{threads} thread(s): {rate:.1f} queries/s, {cores:.2f} cores busy")
        single, many = (float(np.mean(rates[t])) for t in rates)
        log(
            f"throughput: 1 thread {single:.1f} q/s, {args.threads} threads {many:.1f} q/s, "
            f"ratio {many / single:.2f}x"
        )
        if args.compare_numpy_centroids:
            compare_centroid_products(retriever, len(queries), args)
        if args.compare_search_slots:
            compare_search_slots(retriever, len(queries), args)
        if args.compare_openmp_rule:
            compare_openmp_rule(retriever, len(queries), args)
        if args.compare_lance_takes:
            compare_lance_takes(retriever, len(queries), args)
        if args.compare_node_versions:
            compare_node_versions(retriever, len(queries), args)
        if args.compare_memmap_slices:
            compare_memmap_slices(retriever, cache, len(queries))
        if args.compare_read_advice:
            compare_read_advice(retriever, cache, len(queries))
        if args.compare_version_reads:
            compare_version_reads(retriever, len(queries), args)
        if args.diagnose_store_calls:
            diagnose_store_calls(retriever, len(queries), args)
        if args.compare_processes:
            compare_processes(retriever, store.uri, queries, args)
        if args.compare_search_processes:
            compare_search_processes(retriever, len(queries), args)
        if args.compare_one_thread_blocks:
            compare_one_thread_blocks(retriever, store.uri, queries, args)
        if args.compare_stage_threads:
            compare_stage_threads(cache, queries, rounds=5)
        if args.compare_rerank_threads:
            compare_rerank_threads(retriever, len(queries), args)
        if args.compare_code_dtypes:
            compare_code_dtypes(retriever, cache, len(queries), args)


def compare_code_dtypes(retriever, cache, n_queries: int, args) -> None:
    """The fast index's codes in this CPU's preferred type (today) and in the other one (float16
    everywhere before issue 15's tenth session): paired latencies, then the throughput rows.
    Both hold the same codes (those the index keeps, converted)."""
    from llama_index_vlm.search._growable import GrowableArray
    from llama_index_vlm.search.code_scores import code_matrix, float16_codes, preferred_code_dtype

    index = cache._index
    codes = float16_codes(index._codes.values)
    columns = {}
    for dtype in ("float16", "bfloat16"):
        stored = code_matrix(codes, dtype)
        columns[dtype] = GrowableArray((index.dim,), stored.dtype)
        columns[dtype].append(stored)
    del codes
    today = preferred_code_dtype()
    other = "bfloat16" if today == "float16" else "float16"
    log(f"codes: this CPU keeps {today}; comparing with {other}")

    def use(before: bool) -> None:
        index._codes = columns[other if before else today]

    paired_latencies(retriever, n_queries, 4, use, f"{today} codes (today) against {other}")
    variants = {f"{today} codes": columns[today], f"{other} codes": columns[other]}
    alternating_throughput(retriever, n_queries, args, index, "_codes", variants)


def where_in_get_nodes(store, node_ids, filters=None, *, version=None):
    """``get_nodes`` as it was before issue 15's fifth session: a ``page_id IN (...)`` scan
    of the current version."""
    from llama_index_vlm.store import queries
    from llama_index_vlm.store.rows import row_to_node
    from llama_index_vlm.store.schema import NODE_COLUMNS

    rows = queries.select_pages(store._pages.open(), NODE_COLUMNS, filters, page_ids=node_ids)
    nodes = {node.node_id: node for node in map(row_to_node, rows.to_pylist())}
    return [nodes[page_id] for page_id in dict.fromkeys(node_ids) if page_id in nodes]


def compare_read_paths(retriever, n_queries: int, rounds: int) -> None:
    """Each query as it runs today and as before issue 15's fifth session (nodes found by a
    ``page_id IN`` scan, the fingerprint and page count read at every query, reranked float16
    pages gathered and then widened), paired (:func:`paired_latencies`)."""
    from llama_index_vlm.search import maxsim
    from llama_index_vlm.store import LanceDBPageStore

    today = (LanceDBPageStore.get_nodes, maxsim._DIRECT_WIDEN_ROWS)

    def use(before: bool) -> None:
        LanceDBPageStore.get_nodes = where_in_get_nodes if before else today[0]
        maxsim._DIRECT_WIDEN_ROWS = 2**62 if before else today[1]
        if before:
            retriever._checked_version = None

    paired_latencies(retriever, n_queries, rounds, use, "read paths")


def paired_latencies(
    retriever, n_queries: int, rounds: int, use, label: str, prepare=None
) -> tuple[np.ndarray, np.ndarray]:
    """Each query through ``retriever.retrieve`` after ``use(False)`` (today) and after
    ``use(True)`` (before), one right after the other in alternating order, so a burst of load
    hits both alike; ``use(False)`` again at the end. ``prepare()``, if given, runs untimed
    before each query. Returns the (today, before) latencies in ms."""
    times: dict[str, list[float]] = {"today": [], "before": []}
    try:
        for round_ in range(rounds):
            for position in range(n_queries):
                order = ("today", "before") if (round_ + position) % 2 else ("before", "today")
                for name in order:
                    use(name == "before")
                    if prepare is not None:
                        prepare()
                    started = time.perf_counter()
                    retriever.retrieve(f"q{position}")
                    times[name].append(time.perf_counter() - started)
    finally:
        use(False)
    today_ms, before_ms = (np.array(times[name]) * 1000 for name in ("today", "before"))
    log(
        f"{label}, paired over {today_ms.size} queries: today p50 {np.median(today_ms):.1f} "
        f"ms, before p50 {np.median(before_ms):.1f} ms, median saving "
        f"{np.median(before_ms - today_ms):.1f} ms"
    )
    return today_ms, before_ms


def compare_node_versions(retriever, n_queries: int, args) -> None:
    """The hits' nodes read at the version the search scored (today: no second read of the
    table's version) and at the current version (before issue 15's eleventh session): paired
    latencies, then the throughput rows round by round."""
    from llama_index_vlm.store import LanceDBPageStore

    today = LanceDBPageStore.get_nodes

    def at_current_version(store, node_ids=None, filters=None, *, version=None):
        return today(store, node_ids, filters)

    def use(before: bool) -> None:
        LanceDBPageStore.get_nodes = at_current_version if before else today

    paired_latencies(retriever, n_queries, 4, use, "nodes at the searched version")
    variants = {
        "nodes at the searched version": today,
        "nodes at the current version": at_current_version,
    }
    alternating_throughput(retriever, n_queries, args, LanceDBPageStore, "get_nodes", variants)


def compare_memmap_slices(retriever, cache, n_queries: int) -> None:
    """Each query with the rerank's pages sliced from plain arrays over the index files' mapping
    (today) and from the ``np.memmap`` objects themselves (before issue 15's twelfth session),
    paired."""
    segments = list(cache._files._segments.values())
    plain = [segment.vectors for segment in segments]
    mapped = [segment.vectors.base for segment in segments]
    assert all(isinstance(vectors, np.memmap) for vectors in mapped)

    def use(before: bool) -> None:
        for segment, today, memmap in zip(segments, plain, mapped, strict=True):
            segment.vectors = memmap if before else today

    paired_latencies(retriever, n_queries, 4, use, "pages sliced from plain arrays")


def compare_read_advice(retriever, cache, n_queries: int) -> None:
    """Each query with the rerank's pages announced to the OS before they are read (today,
    since issue 15's fourteenth session) and without, paired: the pages are cached here, so
    this is what the announcement costs a store that fits in memory. Then the same pairs with
    the pages dropped from the page cache before each query."""
    from llama_index_vlm.retriever.fast_index_files import _Segment

    today = _Segment.will_read

    def use(before: bool) -> None:
        _Segment.will_read = (lambda segment, position: None) if before else today

    paired_latencies(retriever, n_queries, 4, use, "rerank pages announced to the OS")
    # The same pairs with the index files' vectors dropped from the page cache before each
    # query, as in a store larger than memory or the first queries after a restart.
    from search_scale import drop_from_page_cache

    segments = list(cache._files._segments.values())

    def drop_vectors() -> None:
        for segment in segments:
            drop_from_page_cache(segment)

    label = "the same with the index files' vectors uncached"
    today_ms, before_ms = paired_latencies(retriever, n_queries, 2, use, label, drop_vectors)
    log(
        f"uncached p90: announced {np.percentile(today_ms, 90):.1f} ms, not announced "
        f"{np.percentile(before_ms, 90):.1f} ms"
    )


def compare_version_reads(retriever, n_queries: int, args) -> None:
    """The table's version listed from the Lance dataset (today) and read through LanceDB's
    ``Table.version`` (before issue 15's twelfth session): each alone, 2,000 reads in turns,
    then ``args.threads`` threads reading at once; then paired query latencies and the
    throughput rows, round by round."""
    from llama_index_vlm.store.table import PageTable

    listed = PageTable.version

    def through_lancedb(table) -> int:
        handle = table.open()
        return 0 if handle is None else int(handle.version)

    pages = retriever.store._pages
    reads = {"listed from the Lance dataset": listed, "LanceDB's Table.version": through_lancedb}
    assert len({read(pages) for read in reads.values()}) == 1, "the two reads disagree"
    for name, read in reads.items():
        wall, cpu = [], []
        for _ in range(4):
            started, cpu_started = time.perf_counter(), time.process_time()
            for _ in range(500):
                read(pages)
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
        log(
            f"version {name}: {sum(wall) / 2000 * 1e6:.0f} us a read, "
            f"{sum(cpu) / 2000 * 1e6:.0f} us of CPU (2,000 reads)"
        )
        rate, cores = calls_per_second(lambda *_, read=read: read(pages), args.threads, 3.0)
        log(f"version {name}, {args.threads} threads at once: {rate:.0f}/s, {cores:.2f} cores")

    def use(before: bool) -> None:
        PageTable.version = through_lancedb if before else listed

    paired_latencies(retriever, n_queries, 4, use, "version listed from the Lance dataset")
    variants = {"version listed": listed, "version through LanceDB": through_lancedb}
    alternating_throughput(retriever, n_queries, args, PageTable, "version", variants)


def _process_throughput(
    uri: str, queries: list[np.ndarray], seconds: float, ready, start, out, big_blocks=False
):
    """In a process of its own: one thread querying the store at ``uri`` (its saved fast index
    loaded, every query run once first) for ``seconds`` once ``start`` is set; with
    ``big_blocks``, one-thread products in team-sized blocks (:func:`use_big_blocks`)."""
    from llama_index_vlm.store import LanceDBPageStore

    use_big_blocks(big_blocks)
    retriever = ColPaliRetriever(
        QueryVectors(queries), LanceDBPageStore(uri=uri), similarity_top_k=K, search_mode="fast"
    )
    for position in range(len(queries)):
        retriever.retrieve(f"q{position}")
    ready.put(True)
    start.wait()
    out.put(throughput(retriever, len(queries), 1, seconds))


def two_processes_throughput(
    uri: str, queries: list[np.ndarray], seconds: float, big_blocks: bool = False
) -> tuple[float, float, str]:
    """Queries a second of two spawned processes with one thread each (:func:`
    _process_throughput`), timed together once both have loaded the saved fast index, the
    cores they kept busy, and the machine's idle share meanwhile."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # the parent's threads would not survive fork
    ready, start, out = context.Queue(), context.Event(), context.Queue()
    processes = [
        context.Process(
            target=_process_throughput,
            args=(uri, queries, seconds, ready, start, out, big_blocks),
        )
        for _ in range(2)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get()
    before = _cpu_ticks()
    start.set()
    results = [out.get() for _ in processes]
    idle = _idle_since(before)
    for process in processes:
        process.join()
    return sum(r[0] for r in results), sum(r[1] for r in results), idle


_ONE_THREAD_BLOCKS: dict[str, int | None] = {}


def use_big_blocks(big: bool) -> None:
    """Products on one thread in blocks as large as a thread team's (before issue 15's
    thirteenth session), or in today's small ones."""
    from llama_index_vlm.search import code_scores, rerank

    if not _ONE_THREAD_BLOCKS:
        _ONE_THREAD_BLOCKS["rerank"] = rerank.ONE_THREAD_BLOCK_ROWS
        _ONE_THREAD_BLOCKS["codes"] = code_scores._ONE_THREAD_BLOCK_ROWS
    rerank.ONE_THREAD_BLOCK_ROWS = None if big else _ONE_THREAD_BLOCKS["rerank"]
    code_scores._ONE_THREAD_BLOCK_ROWS = (
        code_scores._BLOCK_ROWS if big else _ONE_THREAD_BLOCKS["codes"]
    )


def compare_one_thread_blocks(retriever, uri: str, queries: list[np.ndarray], args) -> None:
    """Products on one thread in small blocks that stay in the core's cache (today) and in a
    thread team's large ones (before): each query paired with the whole search on one OpenMP
    thread; then 1 and ``args.threads`` threads of this process, and two processes of one
    thread each, round by round."""

    from llama_index_vlm.retriever import search_slots

    with search_slots._openmp_threads(1):
        paired_latencies(retriever, len(queries), 4, use_big_blocks, "small blocks, one thread")
    variants = {"small blocks": False, "team-sized blocks": True}
    throughput_rounds(retriever, len(queries), args, variants, use_big_blocks)
    use_big_blocks(False)
    rates: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, big in variants.items():
            rate, _, idle = two_processes_throughput(uri, queries, args.seconds, big)
            rates.setdefault(name, []).append(rate)
            log(f"{name}: 2 processes x 1 thread: {rate:.1f} queries/s, idle {idle}")
    for name, values in rates.items():
        log(f"{name}: 2 processes x 1 thread: {np.mean(values):.1f} q/s on average")


def compare_processes(retriever, uri: str, queries: list[np.ndarray], args) -> None:
    """One thread, ``args.threads`` threads, and two processes with one thread each, querying
    the same store, round by round: what the threads of one process leave on the table. The
    processes load the saved fast index before their round starts (not timed)."""
    rates: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name in ("1 thread", f"{args.threads} threads", "2 processes x 1 thread"):
            if name.endswith("processes x 1 thread"):
                rate, cores, idle = two_processes_throughput(uri, queries, args.seconds)
            else:
                threads = 1 if name == "1 thread" else args.threads
                before = _cpu_ticks()
                rate, cores = throughput(retriever, len(queries), threads, args.seconds)
                idle = _idle_since(before)
            rates.setdefault(name, []).append(rate)
            log(f"{name}: {rate:.1f} queries/s, {cores:.2f} cores busy, machine idle {idle}")
    single = float(np.mean(rates["1 thread"]))
    for name, values in rates.items():
        log(f"{name}: {np.mean(values):.1f} q/s, {np.mean(values) / single:.2f}x one thread")


def compare_search_processes(retriever, n_queries: int, args, processes: int = 2) -> None:
    """The retriever's fast searches in this process (the default) and in ``processes``
    worker processes (``search_processes``): the workers start and load the saved index, and
    every answer is checked equal, before anything is timed; then each query's latency,
    paired, and one thread and ``args.threads`` threads, round by round. The cores busy are
    the whole machine's (``/proc/stat``): the workers' CPU is not this process's."""
    with_workers = retriever.as_retriever(search_processes=processes)
    for query in range(n_queries):
        alone = [(hit.node.node_id, hit.score) for hit in retriever.retrieve(f"q{query}")]
        helped = [(hit.node.node_id, hit.score) for hit in with_workers.retrieve(f"q{query}")]
        assert helped == alone, f"query {query}: the workers answered differently"
    import psutil

    from llama_index_vlm.retriever.search_processes import shared_search_processes

    for pid in shared_search_processes(retriever.store, processes).worker_pids:
        memory = psutil.Process(pid).memory_full_info()
        log(
            f"search process {pid}: {memory.rss / 2**20:.0f} MiB resident, "
            f"{memory.uss / 2**20:.0f} MiB its own (the rest: mapped files, shared)"
        )
    variants = {"in this process": retriever, f"{processes} search processes": with_workers}
    latencies: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.passes):
        for query in range(n_queries):
            for name, each in variants.items():
                started = time.perf_counter()
                each.retrieve(f"q{query}")
                latencies[name].append((time.perf_counter() - started) * 1000)
    for name, values in latencies.items():
        log(f"{name}: p50 {np.median(values):.1f} ms, p90 {np.percentile(values, 90):.1f} ms")
    rates: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for name, each in variants.items():
            for threads in (1, args.threads):
                before = _cpu_ticks()
                rate, _ = throughput(each, n_queries, threads, args.seconds)
                idle = _idle_since(before)
                rates.setdefault((name, threads), []).append(rate)
                log(f"{name}: {threads} thread(s): {rate:.1f} queries/s, machine idle {idle}")
    single = float(np.mean(rates[("in this process", 1)]))
    for (name, threads), values in rates.items():
        log(
            f"{name}, {threads} thread(s): {np.mean(values):.1f} q/s, "
            f"{np.mean(values) / single:.2f}x one thread in this process"
        )


def diagnose_store_calls(retriever, n_queries: int, args) -> None:
    """Where the threads' throughput goes: the throughput rows with the store's two calls per
    query (the table's version, read through LanceDB's event loop, and the hits' nodes, taken
    from the Lance dataset) as they are, with the version from memory, with both from memory
    (the nodes each query returns, read once beforehand), and with both from memory after a
    3 ms sleep where the nodes are read (a wait with no store in it). A diagnosis, not a mode:
    the answers are the store's as it stands. The cores busy and the machine's idle share
    (``/proc/stat``) show whether the threads wait rather than work."""
    from llama_index_vlm.store import LanceDBPageStore

    store = retriever.store
    version = store.version
    real = (LanceDBPageStore.version, LanceDBPageStore.get_nodes)
    hit_ids = {hit.node.node_id for q in range(n_queries) for hit in retriever.retrieve(f"q{q}")}
    in_memory = {node.node_id: node for node in store.get_nodes(sorted(hit_ids))}

    def nodes_from_memory(store, node_ids=None, filters=None, *, version=None):
        return [in_memory[page_id] for page_id in node_ids]

    def nodes_after_a_wait(store, node_ids=None, filters=None, *, version=None):
        time.sleep(0.003)  # blocks as a store read does, without its work or the store
        return nodes_from_memory(store, node_ids)

    from_memory = property(lambda store: version)
    variants = {
        "store calls as they are": real,
        "version from memory": (from_memory, real[1]),
        "version and nodes from memory": (from_memory, nodes_from_memory),
        "both from memory, nodes after a 3 ms sleep": (from_memory, nodes_after_a_wait),
    }

    def use(calls) -> None:
        LanceDBPageStore.version, LanceDBPageStore.get_nodes = calls

    try:
        throughput_rounds(retriever, n_queries, args, variants, use)
    finally:
        use(real)


def compare_rerank_threads(retriever, n_queries: int, args) -> None:
    """The rerank on the threads this process's probe chose (today,
    ``search_slots.rerank_on_one_thread``) and on the other choice (torch's team everywhere
    before issue 15's eleventh session, or one thread where the probe kept the team): paired
    latencies, then the throughput rows round by round."""
    from llama_index_vlm.retriever import search_slots

    today = search_slots.rerank_on_one_thread()
    log(f"rerank threads: the probe chose {'one thread' if today else 'the team'}")

    def use(before: bool) -> None:
        search_slots._rerank_on_one_thread = (not today) if before else today

    paired_latencies(retriever, n_queries, 4, use, "rerank threads as the probe chose")
    variants = {
        f"rerank on {'one thread' if choice else 'the team'}": choice
        for choice in (today, not today)
    }
    alternating_throughput(
        retriever, n_queries, args, search_slots, "_rerank_on_one_thread", variants
    )


def compare_stage_threads(cache, queries: list[np.ndarray], rounds: int) -> None:
    """A lone search's two stages, the candidates (prefilter and pooled codes) and the
    adaptive rerank, each on one OpenMP thread and on torch's whole team, query by query in
    turns: which stage the team speeds up under this process's ``OMP_WAIT_POLICY``."""
    from llama_index_vlm.retriever import search_slots
    from llama_index_vlm.search.rerank import adaptive_rerank

    runtime = search_slots._OPENMP
    if runtime is None:
        log("stage threads: no OpenMP runtime found in torch; skipped")
        return
    team = runtime.omp_get_max_threads()
    index, version = cache._index, cache.version
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for query in queries:
            for threads in (1, team):
                with search_slots._openmp_threads(threads):
                    started = time.perf_counter()
                    ids, approximate = index.candidates(query, 512)
                    middle = time.perf_counter()
                    adaptive_rerank(
                        query,
                        ids,
                        approximate,
                        K,
                        lambda page_ids: cache._rerank_vectors(page_ids, version),
                        min_depth=32,
                        max_depth=512,
                    )
                    done = time.perf_counter()
                times.setdefault(("candidates", threads), []).append(middle - started)
                times.setdefault(("rerank", threads), []).append(done - middle)
    for stage in ("candidates", "rerank"):
        one, many = (np.median(times[(stage, t)]) * 1000 for t in (1, team))
        log(f"{stage}: p50 {one:.1f} ms on one OpenMP thread, {many:.1f} ms on {team}")


def _cpu_ticks() -> np.ndarray:
    """The machine's CPU time so far by state (user, nice, system, idle, ...) from
    ``/proc/stat``; zeros where there is none."""
    try:
        with open("/proc/stat") as stat:
            return np.array([int(x) for x in stat.readline().split()[1:9]], dtype=np.int64)
    except OSError:
        return np.zeros(8, dtype=np.int64)


def _idle_since(before: np.ndarray) -> str:
    """The machine's idle share since ``before`` (from :func:`_cpu_ticks`), or "n/a"."""
    ticks = _cpu_ticks() - before
    return f"{ticks[3] / ticks.sum():.0%}" if ticks.sum() else "n/a"


def compare_lance_takes(retriever, n_queries: int, args) -> None:
    """The hits' nodes taken by row address from the Lance dataset (today) and through
    LanceDB's ``take_row_ids`` (before issue 15's eighth session): paired latencies, then the
    throughput rows round by round."""
    from llama_index_vlm.store import table

    today = table.take_rows

    def through_lancedb(dataset, row_ids, columns):
        return None  # no take from the dataset: PageTable.read_pages asks LanceDB

    def use(before: bool) -> None:
        table.take_rows = through_lancedb if before else today

    paired_latencies(retriever, n_queries, 4, use, "node reads from the Lance dataset")
    variants = {"takes from the Lance dataset": today, "takes through LanceDB": through_lancedb}
    alternating_throughput(retriever, n_queries, args, table, "take_rows", variants)


def numpy_prefiltered_slots(index, query, searchable, depth):
    """The prefilter as it was before issue 15's third session: the product with numpy."""
    scores = index._centroid_postings().scores(query @ index.centroids.T, index.n_probe)
    scores[~searchable] = -np.inf
    return top_k(scores, depth)[0]


def alternating_throughput(
    retriever, n_queries: int, args, owner, attribute: str, variants: dict[str, object]
) -> None:
    """1 and ``args.threads`` query threads with ``owner.attribute`` set to each of
    ``variants`` (name -> value) in turn (:func:`throughput_rounds`); the attribute is
    restored after."""
    today = getattr(owner, attribute)
    try:
        throughput_rounds(
            retriever, n_queries, args, variants, lambda value: setattr(owner, attribute, value)
        )
    finally:
        setattr(owner, attribute, today)


def throughput_rounds(retriever, n_queries: int, args, variants: dict[str, object], use) -> None:
    """1 and ``args.threads`` query threads after ``use(value)`` for each of ``variants``
    (name -> value) in turn, round by round so a burst of load hits them alike: queries/s,
    the cores the process kept busy, its CPU a query and the machine's idle share
    (``/proc/stat``). The caller restores what ``use`` changed."""
    rates: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for name, value in variants.items():
            use(value)
            for threads in (1, args.threads):
                before = _cpu_ticks()
                rate, cores = throughput(retriever, n_queries, threads, args.seconds)
                idle = _idle_since(before)
                rates.setdefault((name, threads), []).append(rate)
                log(
                    f"{name}: {threads} thread(s): {rate:.1f} queries/s, {cores:.2f} cores "
                    f"busy, {cores / rate * 1000:.1f} ms of CPU per query, machine idle {idle}"
                )
    for name in variants:
        single, many = (float(np.mean(rates[(name, t)])) for t in (1, args.threads))
        log(f"{name}: {args.threads} threads {many:.1f} q/s, {many / single:.2f}x one thread")


def compare_centroid_products(retriever, n_queries: int, args) -> None:
    """Throughput with the prefilter's query-centroid product through torch (today) and numpy
    (before issue 15's third session)."""
    from llama_index_vlm.search.fast import FastPageIndex

    variants = {
        "centroid product with torch": FastPageIndex._prefiltered_slots,
        "centroid product with numpy": numpy_prefiltered_slots,
    }
    alternating_throughput(
        retriever, n_queries, args, FastPageIndex, "_prefiltered_slots", variants
    )


def compare_search_slots(retriever, n_queries: int, args) -> None:
    """Throughput with at most one search per core at a time (today) and with no bound
    (before issue 15's sixth session)."""
    from llama_index_vlm.retriever import search_slots

    variants = {
        "one search per core": search_slots._SLOTS,
        "unbounded": threading.BoundedSemaphore(1 << 20),
    }
    alternating_throughput(retriever, n_queries, args, search_slots, "_SLOTS", variants)


def compare_openmp_rule(retriever, n_queries: int, args) -> None:
    """Throughput with one OpenMP thread for a search that starts beside another (today) and
    with every search on torch's full thread team (before issue 15's seventh session)."""
    from llama_index_vlm.retriever import search_slots

    variants = {"one OpenMP thread beside another search": search_slots._OPENMP, "full team": None}
    alternating_throughput(retriever, n_queries, args, search_slots, "_OPENMP", variants)


if __name__ == "__main__":
    main()
