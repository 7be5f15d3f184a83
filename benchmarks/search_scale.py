"""The fast index's stages at up to a million pages, from generated codes (issue 15).

The full vectors of 1M ColPali pages (264 GB of float16) and even their pooled codes (33 GB)
do not fit this machine's disk and memory, so each stage is measured on what it touches:

- *prefilter*: centroid interaction over inverted lists of ``--pages`` pages, each page's bag
  of ``--bag`` centroid ids drawn at random from a codebook of the size the index would train
  (:func:`~llama_index_vlm.search.centroids.codebook_size`; a uniform spread, the worst case
  for list lengths), 20-token queries probing 32 centroids per token. Both ways
  :meth:`~llama_index_vlm.search.CentroidPostings.scores` can take each page's best list are
  timed side by side on the same queries (scattered: one ``maximum.at`` over every entry;
  list by list: one assignment per list), and their scores compared;
- *pooled-code stage*: the float MaxSim of the ``--prefilter`` pages the prefilter keeps (129
  codes of 128 dims each, as pool factor 8 gives a 1030-vector page), scored as the index
  scores them (:func:`~llama_index_vlm.search.code_scores.code_maxsim_scores`), from memory as
  the index holds them, and from a memory-mapped file whose pages the OS has dropped from its
  cache (``posix_fadvise``), as a corpus larger than memory would read them;
- *build*: assigning every code its nearest centroid, timed on 65,536 codes and scaled;
- *rerank*: the exact MaxSim of 32, 75 (a typical adaptive depth) and 512 (the most) pages'
  full vectors (1030 x 128 float16), read from a persisted-index segment by its own reader as
  the retriever reads them: cached, and dropped from the page cache, each with and without
  announcing the pages to the OS first (``will_read``). Its cost depends on the depth, not on
  the corpus; cold reads are what a corpus far larger than the page cache pays.

The cold files hold ``--cold-code-pages`` and ``--cold-vector-pages`` pages (2 GB each by
default: the kept pages are a few percent of them, so the OS's read-ahead seldom brings in
the next one, as in a large corpus) and are deleted afterwards.

Usage::

    python benchmarks/search_scale.py --pages 10000,100000,1000000
"""

from __future__ import annotations

import argparse
import mmap
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llama_index_vlm.retriever.fast_index_files import _Segment  # noqa: E402
from llama_index_vlm.search import CentroidPostings, top_k  # noqa: E402
from llama_index_vlm.search import centroids as centroids_module  # noqa: E402
from llama_index_vlm.search.centroids import assign_centroids, codebook_size  # noqa: E402
from llama_index_vlm.search.code_scores import (  # noqa: E402
    code_matrix,
    code_maxsim_scores,
    code_tensor,
    preferred_code_dtype,
)
from llama_index_vlm.search.fast import default_prefilter_depth  # noqa: E402
from llama_index_vlm.search.rerank import rerank_exactly  # noqa: E402

CODES_PER_PAGE = 129
VECTORS_PER_PAGE = 1030
DIM = 128
QUERY_TOKENS = 20
N_PROBE = 32
RERANK_DEPTHS = (32, 75, 512)
#: As a new fast index keeps its codes on this CPU.
CODE_DTYPE = preferred_code_dtype()


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def _ms(seconds: list[float]) -> str:
    return f"{np.median(seconds) * 1000:,.1f}"


def _unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = rng.standard_normal((n, DIM), dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _random_postings(rng: np.random.Generator, n_pages: int, bag: int, n_centroids: int):
    """Inverted lists straight from random bags: list c holds the pages whose bag has c."""
    n_pairs = n_pages * bag
    counts = rng.multinomial(n_pairs, np.full(n_centroids, 1 / n_centroids))
    offsets = np.zeros(n_centroids + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    slots = rng.integers(0, n_pages, size=n_pairs, dtype=np.int32)
    return CentroidPostings(list_offsets=offsets, slots=slots, n_pages=n_pages)


def _write_random_rows(path: Path, n_rows: int, rng: np.random.Generator, code_dtype: str) -> None:
    """A ``(n_rows, DIM)`` .npy file of unit rows as :func:`code_matrix` stores them in
    ``code_dtype``, written in blocks."""
    stored_dtype = np.float16 if code_dtype == "float16" else np.uint16
    array = np.lib.format.open_memmap(path, mode="w+", dtype=stored_dtype, shape=(n_rows, DIM))
    for start in range(0, n_rows, 1 << 20):
        stop = min(n_rows, start + (1 << 20))
        array[start:stop] = code_matrix(_unit_rows(rng, stop - start), code_dtype)
    array.flush()
    del array
    # On disk before any read is timed: write-back would slow the first cold reads.
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def drop_from_page_cache(segment: _Segment) -> None:
    """A persisted-index segment's full vectors out of the page cache, unmapped from this
    process first: the OS keeps the pages a process maps whatever it is told."""
    segment.vectors.base._mmap.madvise(mmap.MADV_DONTNEED)
    with open(segment.vectors.base.filename, "rb") as handle:
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def measure_first_stages(args, n_pages: int, cold: _Segment) -> str:
    """The prefilter both ways, the top pages, and the pooled-code stage from RAM and from
    ``cold``, a segment whose "vectors" are pages of pooled codes (announced as a rerank
    announces its pages)."""
    rng = np.random.default_rng(n_pages)
    n_centroids = codebook_size(n_pages * CODES_PER_PAGE)
    depth = args.prefilter or default_prefilter_depth(n_pages)
    started = time.perf_counter()
    postings = _random_postings(rng, n_pages, args.bag, n_centroids)
    build_s = time.perf_counter() - started
    centroids = _unit_rows(rng, n_centroids)
    warm_codes = code_matrix(_unit_rows(rng, depth * CODES_PER_PAGE), CODE_DTYPE)
    warm_offsets = np.arange(depth + 1, dtype=np.int64) * CODES_PER_PAGE
    cold_pages = cold.vector_offsets.size - 1
    times: dict[str, list[float]] = {
        name: [] for name in ("scattered", "by_list", "top", "warm", "cold", "cold_announced")
    }
    default_threshold = centroids_module.LIST_BY_LIST_MIN_LENGTH
    load_start = _load()
    try:
        for _ in range(args.queries):
            query = _unit_rows(rng, QUERY_TOKENS)
            similarity = torch.mm(torch.from_numpy(query), torch.from_numpy(centroids).T).numpy()
            results = {}
            for name, threshold in (("scattered", 2**62), ("by_list", 0)):
                centroids_module.LIST_BY_LIST_MIN_LENGTH = threshold
                began = time.perf_counter()
                results[name] = postings.scores(similarity, N_PROBE)
                times[name].append(time.perf_counter() - began)
            if not np.array_equal(results["scattered"], results["by_list"]):
                raise AssertionError("the two ways gave different prefilter scores")
            began = time.perf_counter()
            kept = np.sort(top_k(results["by_list"], depth)[0])
            times["top"].append(time.perf_counter() - began)
            began = time.perf_counter()
            top_k(code_maxsim_scores(query, warm_codes, warm_offsets, np.arange(depth)), 512)
            times["warm"].append(time.perf_counter() - began)
            # The kept pages, mapped onto the cold file's pages (random, ascending, as kept).
            cold_slots = np.sort(rng.choice(cold_pages, depth, replace=False))
            for state in ("cold", "cold_announced"):
                drop_from_page_cache(cold)
                began = time.perf_counter()
                if state == "cold_announced":
                    for slot in cold_slots.tolist():
                        cold.will_read(slot)
                scores = code_maxsim_scores(query, cold.vectors, cold.vector_offsets, cold_slots)
                top_k(scores, 512)
                times[state].append(time.perf_counter() - began)
    finally:
        centroids_module.LIST_BY_LIST_MIN_LENGTH = default_threshold
    assert kept.size == depth
    mean_list = postings.slots.size / n_centroids
    entries = mean_list * N_PROBE * QUERY_TOKENS
    # In bold: the way the library takes for lists of this length.
    by_list = mean_list >= centroids_module.LIST_BY_LIST_MIN_LENGTH
    cells = [_ms(times["scattered"]), _ms(times["by_list"])]
    cells[by_list] = f"**{cells[by_list]}**"
    prefilter_cells = " | ".join(cells)
    codes_gib = n_pages * CODES_PER_PAGE * DIM * 2 / 2**30
    return (
        f"| {n_pages:,} | {n_centroids:,} | {postings.nbytes / 2**20:,.0f} | {entries / 1e6:.2f}M "
        f"| {depth:,} "
        f"| {prefilter_cells} | {_ms(times['top'])} "
        f"| {_ms(times['warm'])} | {_ms(times['cold'])} | {_ms(times['cold_announced'])} "
        f"| {codes_gib:,.1f} | {build_s:.0f} "
        f"| {load_start}-{_load()} |"
    )


def measure_rerank(args, segment: _Segment) -> list[str]:
    """The rerank's reads through the persisted index's own segment reader, each query's
    pages cold (dropped from the page cache) with and without announcing them first, then
    cached, with and without announcing them (what announcing costs a cached store)."""
    n_pages = segment.vector_offsets.size - 1
    rng = np.random.default_rng(7)

    def fetch(page_ids: list[int]) -> list[np.ndarray]:
        return [segment.page_vectors(i) for i in page_ids]

    def announced_fetch(page_ids: list[int]) -> list[np.ndarray]:
        for i in page_ids:
            segment.will_read(i)
        return fetch(page_ids)

    rows = []
    for depth in RERANK_DEPTHS:
        times: dict[str, list[float]] = {
            name: [] for name in ("cold", "cold_announced", "cached", "cached_announced")
        }
        for _ in range(args.queries):
            query = _unit_rows(rng, QUERY_TOKENS)
            ids = rng.choice(n_pages, depth, replace=False).tolist()
            for state, read in (
                ("cold", fetch),
                ("cold_announced", announced_fetch),
                ("cached", fetch),
                ("cached_announced", announced_fetch),
            ):
                if state.startswith("cold"):
                    drop_from_page_cache(segment)
                began = time.perf_counter()
                rerank_exactly(query, ids, 10, read)
                times[state].append(time.perf_counter() - began)
        megabytes = depth * VECTORS_PER_PAGE * DIM * 2 / 1e6
        cells = " | ".join(_ms(times[name]) for name in times)
        rows.append(f"| {depth} | {megabytes:.0f} | {cells} | {_load()} |")
    return rows


def _write_segment(
    directory: Path, n_pages: int, rows_per_page: int, rng: np.random.Generator, dtype: str
) -> _Segment:
    """A persisted-index segment of ``n_pages`` random pages of ``rows_per_page`` rows (as
    :func:`code_matrix` stores them in ``dtype``) for its "vectors", and one code each."""
    directory.mkdir()
    _write_random_rows(directory / "vectors.npy", n_pages * rows_per_page, rng, dtype)
    np.save(directory / "vector_offsets.npy", np.arange(n_pages + 1) * rows_per_page)
    np.save(directory / "codes.npy", np.zeros((n_pages, DIM), dtype=np.float16))
    np.save(directory / "code_offsets.npy", np.arange(n_pages + 1))
    return _Segment(directory, None)


def measure_assignment(page_counts: list[int]) -> str:
    """How long building the index's centroid ids takes: every code's nearest centroid
    (:func:`~llama_index_vlm.search.centroids.assign_centroids`, what a first build and each
    retraining run over all codes), timed on 65,536 codes and scaled to each page count."""
    rng = np.random.default_rng(3)
    n_centroids = codebook_size(max(page_counts) * CODES_PER_PAGE)
    centroids = _unit_rows(rng, n_centroids)
    codes = code_tensor(code_matrix(_unit_rows(rng, 65_536), CODE_DTYPE))
    assign_centroids(codes[:4096], centroids)  # warm-up
    began = time.perf_counter()
    assign_centroids(codes, centroids)
    rate = codes.shape[0] / (time.perf_counter() - began)
    scaled = ", ".join(
        f"{n:,} pages {n * CODES_PER_PAGE / rate / 60:,.1f} min" for n in page_counts
    )
    return (
        f"assigning codes to {n_centroids:,} centroids: {rate:,.0f} codes/s; "
        f"for every code of {scaled} (load {_load()})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", default="1000000", help="comma-separated page counts")
    parser.add_argument("--bag", type=int, default=90, help="distinct centroids per page")
    parser.add_argument(
        "--prefilter",
        type=int,
        default=None,
        help="pages the prefilter keeps (default: the index's)",
    )
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--cold-code-pages", type=int, default=65536)
    parser.add_argument("--cold-vector-pages", type=int, default=8192)
    parser.add_argument("--workdir", default=None, help="for the cold files (default: a temp dir)")
    args = parser.parse_args(argv)
    page_counts = [int(value) for value in args.pages.split(",")]
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        rng = np.random.default_rng(0)
        cold_codes = _write_segment(
            Path(workdir, "seg-codes"), args.cold_code_pages, CODES_PER_PAGE, rng, CODE_DTYPE
        )
        full_pages = _write_segment(
            Path(workdir, "seg-rerank"), args.cold_vector_pages, VECTORS_PER_PAGE, rng, "float16"
        )
        print(
            f"codes in {CODE_DTYPE}, torch threads {torch.get_num_threads()}, OMP_WAIT_POLICY="
            f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}, {args.queries} queries per row, "
            f"prefilter keeps {args.prefilter or 'the default number of'} pages, load average "
            f"(1 min) at start {_load()}\n"
        )
        print(
            "| pages | centroids | postings MiB | list entries a query | pages kept "
            "| prefilter, scattered "
            "ms | prefilter, list by list ms | top pages ms | pooled codes in RAM ms "
            "| pooled codes, cold memory map ms | the same, announced ms "
            "| codes in RAM GiB (computed) "
            "| lists built s | load |\n"
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        )
        for n_pages in page_counts:
            print(measure_first_stages(args, n_pages, cold_codes), flush=True)
        print(
            "\n| rerank depth (pages) | full vectors read MB | cold ms | cold, announced ms "
            "| cached ms | cached, announced ms | load |\n|---:|---:|---:|---:|---:|---:|---|"
        )
        for row in measure_rerank(args, full_pages):
            print(row, flush=True)
        print(f"\n{measure_assignment(page_counts)}", flush=True)
        del cold_codes, full_pages


if __name__ == "__main__":
    main()
