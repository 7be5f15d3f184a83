"""What the offline examples share: tiny checkpoints in a cache folder, and a generated PDF.

Nothing here needs the network: the checkpoints are built locally by
``llama_index_vlm.testing.make_tiny_checkpoint`` (a few seconds, then reused), and the sample
report is drawn with Pillow.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# Letter size at 72 dpi: Pillow writes one PDF point per pixel.
PAGE_SIZE = (612, 792)

SAMPLE_PAGES = [
    (
        "Annual report 2023",
        [
            "Revenue 2023: $4.2 million (up 35%)",
            "Revenue 2022: $3.1 million",
            "Net income 2023: $0.6 million",
        ],
        [3.1, 4.2],  # a bar chart of revenue by year
    ),
    (
        "Warranty terms",
        [
            "Every unit carries a two-year warranty.",
            "Batteries are covered for one year.",
            "Keep the receipt to make a claim.",
        ],
        None,
    ),
    (
        "Installation guide",
        [
            "1. Unpack the unit and check the parts.",
            "2. Mount the bracket on a solid wall.",
            "3. Connect power and press RESET.",
        ],
        None,
    ),
]


def cache_dir() -> Path:
    """Where the examples keep what they build: ``$XDG_CACHE_HOME/llama_index_vlm``."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "llama_index_vlm"


@contextmanager
def explained_download(*hub_ids: str) -> Iterator[None]:
    """Turn a checkpoint that cannot be loaded (``--real`` offline, not downloaded yet) into
    one line saying what the example needs, instead of a traceback.
    """
    from llama_index_vlm.errors import InvalidCheckpointError

    try:
        yield
    except InvalidCheckpointError as error:
        downloads = " && ".join(f"hf download {hub_id}" for hub_id in hub_ids)
        raise SystemExit(
            f"--real needs {' and '.join(hub_ids)} from the Hugging Face hub: run `{downloads}` "
            f"where the hub is reachable, then run again (HF_HUB_OFFLINE=1 works after that). "
            f"({error})"
        ) from None


def tiny_checkpoints(directory: str | os.PathLike[str], *kinds: str) -> dict[str, Path]:
    """Build (or reuse) tiny random checkpoints of ``kinds`` under ``directory``."""
    from llama_index_vlm.testing import make_tiny_checkpoint

    return {kind: make_tiny_checkpoint(kind, Path(directory) / kind) for kind in kinds}


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def sample_page(title: str, lines: list[str], bars: list[float] | None = None) -> Image.Image:
    """A white letter-size page with a title, a few lines of text and an optional bar chart."""
    page = Image.new("RGB", PAGE_SIZE, "white")
    draw = ImageDraw.Draw(page)
    draw.text((56, 56), title, fill="black", font=_font(32))
    for row, line in enumerate(lines):
        draw.text((56, 130 + row * 34), line, fill="black", font=_font(20))
    if bars:
        base, top = 720, 360
        for column, value in enumerate(bars):
            left = 120 + column * 160
            height = (base - top) * value / max(bars)
            draw.rectangle((left, base - height, left + 100, base), fill="steelblue")
            draw.text((left + 20, base + 10), str(2022 + column), fill="black", font=_font(18))
    return page


def write_sample_pdf(path: str | os.PathLike[str]) -> Path:
    """Write a 3-page PDF (an annual report, warranty terms, an installation guide)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pages = [sample_page(title, lines, bars) for title, lines, bars in SAMPLE_PAGES]
    pages[0].save(path, "PDF", resolution=72.0, save_all=True, append_images=pages[1:])
    return path
