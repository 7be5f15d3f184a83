"""Exact MaxSim with every page on a GPU (``search_device="cuda"``), against the CPU, one run.

Issue 15's GPU row: exact and rerank MaxSim on CUDA with pages/s at 100,000 pages. Pages are
random unit vectors (the time of a product does not depend on its values), float16 as the
store keeps them: ColPali's fixed 1,030 vectors a page, or ColQwen2's 700-770
(``--variable``, which takes the unequal-length path). Per query, median of ``--queries``:

- **exact, resident**: :class:`~llama_index_vlm.search.DevicePageMatrix` over every page, the
  scores copied back and the top 10 chosen on the host (what the retriever does);
- **rerank, resident**: 512 candidate pages gathered on the device and scored there;
- **rerank, uploaded**: the same 512 pages copied from host memory first (fast mode's rerank
  if it ran on the GPU: its candidates' vectors live on the host);
- **CPU exact** on ``--cpu-pages`` of the same pages (the default CPU path, float16 screening),
  scaled to pages/s, for the side-by-side ratio.

It also checks the device's scores against the CPU's float32 MaxSim on 200 pages.

Needs only numpy and torch (and this package on ``PYTHONPATH``). On a GPU machine::

    PYTHONPATH=. python benchmarks/search_gpu.py --pages 100000
    PYTHONPATH=. python benchmarks/search_gpu.py --pages 100000 --variable

``--device cpu --pages 300`` runs the same code on a CPU (a quick check that it works).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llama_index_vlm.search import (  # noqa: E402
    DevicePageMatrix,
    PageVectorMatrix,
    exact_top_k,
    maxsim_scores,
    top_k,
)

DIM, K, RERANK = 128, 10, 512


def random_pages(n_pages: int, variable: bool, seed: int) -> PageVectorMatrix:
    """``n_pages`` pages of unit float16 vectors, made in chunks (host memory: the result)."""
    generator = torch.Generator().manual_seed(seed)
    if variable:
        lengths = torch.randint(700, 771, (n_pages,), generator=generator).numpy()
    else:
        lengths = np.full(n_pages, 1030)
    offsets = np.zeros(n_pages + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    vectors = torch.empty((int(offsets[-1]), DIM), dtype=torch.float16)
    step = 1 << 22
    for start in range(0, vectors.shape[0], step):
        chunk = torch.randn((min(step, vectors.shape[0] - start), DIM), generator=generator)
        vectors[start : start + chunk.shape[0]] = torch.nn.functional.normalize(chunk, dim=1)
    return PageVectorMatrix(vectors=vectors.numpy(), offsets=offsets)


def median_ms(run, queries) -> float:
    run(queries[0])  # warm-up: kernels, the caching allocator
    times = []
    for query in queries:
        started = time.perf_counter()
        run(query)
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--cpu-pages", type=int, default=2_000)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--variable", action="store_true", help="ColQwen2's 700-770 vectors")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}, {os.cpu_count()} CPUs", flush=True)

    started = time.perf_counter()
    pages = random_pages(args.pages, args.variable, seed=0)
    rng = np.random.default_rng(1)
    queries = [
        np.asarray(torch.nn.functional.normalize(torch.from_numpy(q), dim=1))
        for q in rng.standard_normal((args.queries, 20, DIM)).astype(np.float32)
    ]
    print(f"{args.pages:,} pages made in {time.perf_counter() - started:.1f} s", flush=True)

    started = time.perf_counter()
    on_device = DevicePageMatrix(pages, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    upload_s = time.perf_counter() - started
    exact_ms = median_ms(lambda q: on_device.top_k(q, K), queries)

    candidates = np.sort(rng.choice(args.pages, min(RERANK, args.pages), replace=False))
    chosen = [pages.page(int(i)) for i in candidates]
    rows = torch.from_numpy(
        np.concatenate([np.arange(pages.offsets[i], pages.offsets[i + 1]) for i in candidates])
    ).to(device)
    chosen_offsets = np.zeros(candidates.size + 1, dtype=np.int64)
    np.cumsum([page.shape[0] for page in chosen], out=chosen_offsets[1:])
    lengths = torch.from_numpy(np.diff(chosen_offsets)).to(device)  # known before the queries

    def rerank_resident(query):
        gathered = on_device.vectors.index_select(0, rows).float()
        scores = torch.mm(gathered, torch.from_numpy(query).to(device).T)
        best = torch.segment_reduce(scores, "max", lengths=lengths, axis=0).sum(1)
        return top_k(best.cpu().numpy(), K)

    def rerank_uploaded(query):
        matrix = PageVectorMatrix(vectors=np.concatenate(chosen), offsets=chosen_offsets)
        return DevicePageMatrix(matrix, device).top_k(query, K)

    rerank_resident_ms = median_ms(rerank_resident, queries)
    rerank_uploaded_ms = median_ms(rerank_uploaded, queries)

    n_cpu = min(args.cpu_pages, args.pages)
    cpu_pages = PageVectorMatrix(
        vectors=pages.vectors[: pages.offsets[n_cpu]], offsets=pages.offsets[: n_cpu + 1]
    )
    cpu_ms = median_ms(lambda q: exact_top_k(q, cpu_pages, K), queries[: min(5, args.queries)])

    n_sample = min(200, args.pages)
    sample = PageVectorMatrix(
        vectors=pages.vectors[: pages.offsets[n_sample]], offsets=pages.offsets[: n_sample + 1]
    )
    device_scores = DevicePageMatrix(sample, device).scores(queries[0])
    error = float(np.abs(device_scores - maxsim_scores(queries[0], sample)[0]).max())

    layout = "700-770 vectors (ColQwen2)" if args.variable else "1,030 vectors (ColPali)"
    gib = on_device.nbytes / 2**30
    print(
        f"\n{args.pages:,} pages of {layout}, {gib:.1f} GiB float16 on {name}; upload "
        f"{upload_s:.1f} s; largest score difference against the CPU's float32: {error:.2e}\n"
    )
    print("| search | pages | p50 ms | pages/s |")
    print("|---|---|---|---|")
    for label, n, ms in [
        ("exact, resident on the device", args.pages, exact_ms),
        (f"rerank of {candidates.size} candidates, resident", candidates.size, rerank_resident_ms),
        (f"rerank of {candidates.size} candidates, uploaded", candidates.size, rerank_uploaded_ms),
        ("CPU exact (float16 screening)", n_cpu, cpu_ms),
    ]:
        print(f"| {label} | {n:,} | {ms:,.1f} | {n / ms * 1000:,.0f} |")


if __name__ == "__main__":
    main()
