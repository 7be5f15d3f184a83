"""Offline demo: tiny random checkpoints, generated pages, the pipeline end to end on a CPU.

Tiny random models give meaningless rankings and answers: this shows the code paths run offline,
not retrieval quality. Use the real checkpoints (see quickstart.py) for real answers.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from PIL import Image, ImageDraw  # noqa: E402
from transformers import AutoProcessor  # noqa: E402

from llama_index_vlm import ColPaliEncoder  # noqa: E402
from llama_index_vlm.testing import make_tiny_checkpoint  # noqa: E402


def make_pages() -> list[Image.Image]:
    pages = []
    for title in ("Revenue 2023", "Warranty terms", "Installation"):
        page = Image.new("RGB", (620, 877), "white")
        ImageDraw.Draw(page).text((40, 40), title, fill="black")
        pages.append(page)
    return pages


def main() -> None:
    print("NOTE: tiny random models give meaningless rankings; this demo shows the pipeline runs.")
    with tempfile.TemporaryDirectory() as workdir:
        checkpoint = make_tiny_checkpoint("colpali", Path(workdir) / "colpali")
        encoder = ColPaliEncoder.from_pretrained(checkpoint)
        page_vectors = encoder.embed_images(make_pages())
        (query_vectors,) = encoder.embed_queries(["What was the 2023 revenue?"])
        import torch

        scores = AutoProcessor.from_pretrained(checkpoint).score_retrieval(
            [torch.from_numpy(query_vectors)], [torch.from_numpy(p) for p in page_vectors]
        )[0]
        for rank, page in enumerate(scores.argsort(descending=True).tolist(), start=1):
            print(f"{rank}. page {page + 1}  score {scores[page]:.3f}")


if __name__ == "__main__":
    main()
