"""Similarity maps: where on a page each word of a query found its best match.

ColPali scores a page by summing, over query tokens, each token's best similarity to any image
patch. Keeping every patch's similarity gives one heatmap per token over the page: why the
page was retrieved, and where on it the answer is.

Offline by default, with a tiny random ColPali (MEANINGLESS maps; the code paths are the real
ones) and a generated page; ``--real`` uses vidore/colpali-v1.3-hf::

    python examples/similarity_maps.py "revenue 2023"
    python examples/similarity_maps.py "revenue 2023" --real --page scan.png --out maps/
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from offline_setup import (  # noqa: E402
    SAMPLE_PAGES,
    cache_dir,
    explained_download,
    sample_page,
    tiny_checkpoints,
)

REAL_ENCODER = "vidore/colpali-v1.3-hf"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options: the query, the page, tiny or real checkpoint, where to write."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("query", nargs="?", default="revenue 2023", help="(default: %(default)s)")
    parser.add_argument("--page", type=Path, help="a page image (default: a generated page)")
    parser.add_argument("--real", action="store_true", help=f"use {REAL_ENCODER} (downloads)")
    parser.add_argument(
        "--out",
        type=Path,
        default=cache_dir() / "similarity_maps",
        help="folder for the PNGs (default: %(default)s)",
    )
    parser.add_argument(
        "--checkpoints",
        type=Path,
        default=cache_dir() / "tiny_checkpoints",
        help="where tiny checkpoints are built and reused (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Draw one panel per query token, and the best token over the full page."""
    args = parse_args(argv)
    if not args.real:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        print("NOTE: a tiny random ColPali draws MEANINGLESS maps (--real for the real one).")

    from PIL import Image

    from llama_index_vlm import ColPaliEncoder
    from llama_index_vlm.interpretability import (
        draw_region,
        hottest_region,
        overlay_heatmap,
        similarity_map_panels,
        similarity_maps,
    )

    checkpoint = (
        REAL_ENCODER if args.real else tiny_checkpoints(args.checkpoints, "colpali")["colpali"]
    )
    with explained_download(REAL_ENCODER):
        encoder = ColPaliEncoder.from_pretrained(checkpoint)
    if args.page:
        with Image.open(args.page) as opened:
            page = opened.convert("RGB")
    else:
        page = sample_page(*SAMPLE_PAGES[0])

    # The page's patch vectors on their grid (the grid comes from the processor), and the
    # query's token vectors with the token each row belongs to.
    patch_grid = encoder.embed_image_patches(page)
    (query_vectors,) = encoder.embed_queries([args.query])
    tokens = encoder.query_token_labels(args.query)
    maps = similarity_maps(query_vectors, patch_grid)  # (n_tokens, rows, cols)
    print(f"page patch grid {patch_grid.shape[0]}x{patch_grid.shape[1]}, {len(tokens)} tokens")

    # ColPali appends padding tokens to every query; the maps of the query's own words say more.
    tokenizer = encoder.processor.tokenizer
    special = set(tokenizer.all_special_tokens)
    words = [position for position, token in enumerate(tokens) if token not in special]
    captions = [tokenizer.convert_tokens_to_string([tokens[i]]).strip() or tokens[i] for i in words]

    args.out.mkdir(parents=True, exist_ok=True)
    panels_path = args.out / "tokens.png"
    similarity_map_panels(page, maps[words], captions).save(panels_path)
    print(f"one panel per query token: {panels_path}")

    best = max(words, key=lambda position: maps[position].max())
    region = hottest_region(maps[best], page.size)
    best_path = args.out / "best_token.png"
    draw_region(overlay_heatmap(page, maps[best]), region).save(best_path)
    print(f"best-matching token {tokens[best]!r}, hottest region {region}: {best_path}")


if __name__ == "__main__":
    main()
