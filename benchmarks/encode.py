"""Throughput, query latency and peak memory of ColPaliEncoder, by model and batch size.

pages/s is wall-clock time; CPU s/page (the process's CPU time, all threads) depends least on
other work sharing the machine.

Default: the tiny ColPali checkpoint (llama_index_vlm.testing) on the CPU, which measures our
own overhead (image conversion, processor, unpadding) more than the model.
``--full``: full-size architectures with random weights (``architectures.py``: ColPali on
PaliGemma-3B at 448 px, ColQwen2 on Qwen2-VL-2B with up to 768 image tokens a page,
ColModernVBERT at 250M parameters), saved and loaded back through ``from_pretrained`` as a
released checkpoint is, with the real models' compute; bfloat16 on a GPU, float32 on a CPU.

    python benchmarks/encode.py                                        # tiny, CPU
    python benchmarks/encode.py --full                                 # ColPali, ColQwen2 (GPU)
    python benchmarks/encode.py --full --models colmodernvbert --pages 8 --allow-cpu
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
from architectures import RETRIEVERS, parameters_b, save_random  # noqa: E402
from PIL import Image  # noqa: E402

from llama_index_vlm.encoder import ColPaliEncoder  # noqa: E402
from llama_index_vlm.testing import make_tiny_checkpoint  # noqa: E402

QUERY = "What was the total revenue in 2023 compared to the previous fiscal year?"


class PeakMemory:
    """Samples RSS (and CUDA allocations) in a thread; reports the peak, absolute and above
    the start."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.process = psutil.Process()

    def __enter__(self):
        self.start = self.process.memory_info().rss
        self.peak = self.start
        self.running = True
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.rss_mb = (self.peak - self.start) / 2**20
        self.peak_rss_mb = self.peak / 2**20
        self.cuda_mb = (
            torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        )

    def describe(self) -> str:
        """The peak that matters here: GPU memory on a GPU, else the process's RSS."""
        if self.cuda_mb is not None:
            return f"{self.cuda_mb:.0f} (GPU)"
        return f"{self.peak_rss_mb:.0f} (RSS)"


def synthetic_pages(n_pages: int, size=(1240, 1754)) -> list[Image.Image]:
    """A4 pages at 150 dpi with text-like stripes, different on every page."""
    rng = np.random.default_rng(0)
    pages = []
    for _ in range(n_pages):
        page = np.full((size[1], size[0], 3), 255, dtype=np.uint8)
        for top in range(100, size[1] - 100, 40):
            width = int(rng.integers(200, size[0] - 200))
            page[top : top + 14, 100 : 100 + width] = rng.integers(0, 80)
        pages.append(Image.fromarray(page))
    return pages


def machine() -> str:
    gpu = torch.cuda.is_available()
    name = torch.cuda.get_device_name() if gpu else platform.processor() or platform.machine()
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"device: {'cuda' if gpu else 'cpu'} ({name}); {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}; load average {load}"
    )


def query_ms(encoder: ColPaliEncoder, repeats: int = 7) -> float:
    """Median milliseconds to embed one query (what a search waits for before MaxSim)."""
    encoder.embed_queries([QUERY])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        encoder.embed_queries([QUERY])
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def benchmark(label: str, path: Path, pages: list, batch_sizes: list[int], dtype="auto") -> None:
    start = time.perf_counter()
    encoder = ColPaliEncoder.from_pretrained(path, dtype=dtype, show_progress=False)
    load_s = time.perf_counter() - start
    dtype = str(encoder.model.dtype).removeprefix("torch.")
    encoder.embed_images(pages[:2], batch_size=2)  # warm-up
    query = query_ms(encoder)
    for batch_size in batch_sizes:
        with PeakMemory() as memory:
            start, cpu_start = time.perf_counter(), time.process_time()
            vectors = encoder.embed_images(pages, batch_size=batch_size)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            cpu_per_page = (time.process_time() - cpu_start) / len(pages)
        print(
            f"| {label} | {dtype} | {batch_size} | {len(pages) / elapsed:.2f} "
            f"| {cpu_per_page:.2f} | {query:.0f} | {memory.describe()} | {vectors[0].shape[0]} "
            f"| {load_s:.1f} |",
            flush=True,
        )
    del encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="full-size architectures")
    parser.add_argument(
        "--models", default="colpali,colqwen2", help=f"with --full: any of {sorted(RETRIEVERS)}"
    )
    parser.add_argument("--pages", type=int, default=None, help="pages per measurement")
    parser.add_argument("--batch-sizes", default=None, help="comma-separated batch sizes")
    parser.add_argument(
        "--dtypes", default="auto", help="comma-separated dtypes to compare (default: auto)"
    )
    parser.add_argument("--allow-cpu", action="store_true", help="run --full without a GPU")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    gpu = torch.cuda.is_available()
    if args.full and not gpu and not args.allow_cpu:
        raise SystemExit("--full needs a CUDA GPU (or --allow-cpu: slow, and GBs of RAM)")
    n_pages = args.pages or (64 if gpu or not args.full else 4)
    default_batches = "1,4,16" if gpu or not args.full else "1,2"
    batch_sizes = [int(b) for b in (args.batch_sizes or default_batches).split(",")]
    pages = synthetic_pages(n_pages)
    print(f"{machine()}; {n_pages} synthetic A4 pages (1240 x 1754); query: {len(QUERY)} chars")
    print(
        "| model | dtype | batch | pages/s | CPU s/page | query ms | peak MB | vectors/page "
        "| load s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as directory:
        if not args.full:
            path = make_tiny_checkpoint("colpali", Path(directory) / "tiny")
            for dtype in args.dtypes.split(","):
                benchmark("tiny ColPali", path, pages, batch_sizes, dtype)
            return
        for name in args.models.split(","):
            path = save_random(name, Path(directory), device="cuda" if gpu else "cpu")
            label = f"{name} ({parameters_b(path):.2f}B, random)"
            for dtype in args.dtypes.split(","):
                benchmark(label, path, pages, batch_sizes, dtype)
            shutil.rmtree(path)  # a few GB each
            if gpu:
                torch.cuda.empty_cache()
    print(f"after: load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
