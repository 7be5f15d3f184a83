"""Throughput and peak memory of ColPaliEncoder.embed_images, by batch size.

Default: the tiny ColPali checkpoint (llama_index_vlm.testing) on the CPU, which measures our
own overhead (image conversion, processor, unpadding) more than the model.
``--full``: the full-size ColPali architecture (PaliGemma-3B backbone, 448x448 pages, 1030
vectors per page) with random weights, which has the real model's compute; on a GPU when one
is available, else on the CPU with few pages.

    python benchmarks/encode.py                      # tiny, CPU
    python benchmarks/encode.py --full --pages 8     # full-size architecture
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
from full_size import paligemma_3b_448_config  # noqa: E402
from PIL import Image  # noqa: E402

from llama_index_vlm.encoder import ColPaliEncoder  # noqa: E402
from llama_index_vlm.testing import make_tiny_checkpoint  # noqa: E402


class PeakMemory:
    """Samples RSS (and CUDA allocations) in a thread; reports the peak above the start."""

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
        self.cuda_mb = (
            torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        )


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


def full_size_colpali(directory: Path) -> Path:
    """Save a full-size ColPali (PaliGemma-3B) with random weights and a 448px processor."""
    from transformers import (
        AutoTokenizer,
        ColPaliConfig,
        ColPaliForRetrieval,
        ColPaliProcessor,
        SiglipImageProcessor,
    )

    tokenizer_source = make_tiny_checkpoint("colpali", directory / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    image_processor = SiglipImageProcessor(
        size={"height": 448, "width": 448},
        image_seq_length=1024,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    processor = ColPaliProcessor(image_processor=image_processor, tokenizer=tokenizer)
    vlm_config = paligemma_3b_448_config(processor.image_token_id)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = ColPaliForRetrieval(ColPaliConfig(vlm_config=vlm_config, embedding_dim=128))
    path = directory / "full"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="full-size ColPali architecture")
    parser.add_argument("--pages", type=int, default=None, help="pages per measurement")
    parser.add_argument("--batch-sizes", default=None, help="comma-separated batch sizes")
    args = parser.parse_args()

    gpu = torch.cuda.is_available()
    n_pages = args.pages or (64 if not args.full else (64 if gpu else 4))
    batch_sizes = [
        int(b)
        for b in (args.batch_sizes or ("1,4,16" if gpu or not args.full else "1,2")).split(",")
    ]
    pages = synthetic_pages(n_pages)
    with tempfile.TemporaryDirectory() as directory:
        path = (
            full_size_colpali(Path(directory))
            if args.full
            else make_tiny_checkpoint("colpali", Path(directory) / "tiny")
        )
        encoder = ColPaliEncoder.from_pretrained(path, show_progress=False)
        device = encoder.device
        name = torch.cuda.get_device_name() if gpu else platform.processor() or platform.machine()
        print(
            f"model: {'full-size ColPali (random weights)' if args.full else 'tiny ColPali'}; "
            f"device: {device} ({name}); threads: {torch.get_num_threads()}; "
            f"dtype: {next(encoder.model.parameters()).dtype}; pages: {n_pages}"
        )
        encoder.embed_images(pages[:2], batch_size=2)  # warm-up
        print(
            f"{'batch':>5} {'pages/s':>9} {'peak RSS MB':>12} {'peak CUDA MB':>13} "
            f"{'vectors/page':>13}"
        )
        for batch_size in batch_sizes:
            with PeakMemory() as memory:
                start = time.perf_counter()
                vectors = encoder.embed_images(pages, batch_size=batch_size)
                if gpu:
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - start
            cuda = f"{memory.cuda_mb:13.0f}" if memory.cuda_mb is not None else f"{'-':>13}"
            print(
                f"{batch_size:5d} {n_pages / elapsed:9.2f} {memory.rss_mb:12.0f} {cuda} "
                f"{vectors[0].shape[0]:13d}"
            )


if __name__ == "__main__":
    main()
