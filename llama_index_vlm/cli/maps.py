"""``llama-index-vlm maps QUERY --page PAGE --out FILE``: where on a page a query matched."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llama_index_vlm.cli.common import open_store, require_text
from llama_index_vlm.cli.models import load_encoder
from llama_index_vlm.errors import UsageError
from llama_index_vlm.pages import page_image, page_label

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import numpy as np
    from llama_index.core.schema import BaseNode
    from PIL import Image

    from llama_index_vlm.encoder import ColPaliEncoder
    from llama_index_vlm.store import LanceDBPageStore


@dataclass(frozen=True)
class _TokenMaps:
    """A query's similarity maps over one page, one per query token, with the tokens' names."""

    maps: np.ndarray
    tokens: list[str]
    names: list[str]


def run_maps(args: argparse.Namespace) -> int:
    """``maps QUERY --page PAGE --out FILE``: similarity maps of a query over a stored page."""
    query = require_text(args.query, "query")
    _require_out_folder(args.out)
    store = open_store(args.store, must_exist=True)
    page = find_page(store, args.page)
    encoder = load_encoder(args.model, store, args.device)
    image = page_image(page)
    token_maps = _token_maps(encoder, query, image)
    if args.token is not None:
        chosen = [_check_token(args.token, token_maps)]
        picture, region = _one_token_picture(image, token_maps.maps[args.token])
    else:
        chosen = _shown_tokens(encoder, token_maps, args.all_tokens)
        picture, region = _panels_picture(image, token_maps, chosen), None
    save_image(picture, args.out)
    print(f"wrote {args.out} ({picture.width}x{picture.height}): {query!r} on {page_label(page)}")
    for position in chosen:
        name, best = token_maps.names[position], token_maps.maps[position].max()
        print(f"  token {position:>2} {name:<16} max similarity {best:.3f}")
    if region is not None:
        print(f"  hottest region (left, top, right, bottom): {region}")
    return 0


def find_page(store: LanceDBPageStore, page: str) -> BaseNode:
    """The stored page named by a page id or by ``FILE:PAGE_NUMBER`` (file name or path)."""
    from llama_index.core.vector_stores.types import MetadataFilters

    nodes = store.get_nodes([page])
    if nodes:
        return nodes[0]
    file, separator, number = page.rpartition(":")
    if separator and file and number.isdigit():
        key, value = ("file_path", os.path.abspath(file)) if os.sep in file else ("file_name", file)
        filters = MetadataFilters.from_dicts(
            [{"key": key, "value": value}, {"key": "page_number", "value": int(number)}]
        )
        nodes = store.get_nodes(filters=filters)
        if len(nodes) == 1:
            return nodes[0]
        if len(nodes) > 1:
            ids = ", ".join(node.node_id for node in nodes)
            raise UsageError(f"{len(nodes)} documents have a page {page}; give its page id: {ids}")
    raise UsageError(
        f"no page {page!r} in the index at {store.uri}; give a page id as "
        "`llama-index-vlm search` prints it, or FILE_NAME:PAGE_NUMBER (e.g. report.pdf:3)"
    )


def save_image(image: Any, path: str) -> None:
    """Save a PIL image, its format taken from the file's extension."""
    try:
        image.save(path)
    except (ValueError, KeyError):
        # Pillow raises ValueError for an unknown extension, KeyError for a known but unwritable
        # one; nothing is written in either case.
        raise UsageError(
            f"cannot tell an image format from {path!r}; name the file .png (or .jpg, .webp)"
        ) from None


def _require_out_folder(out: str) -> None:
    # Checked before the store and the model are opened, so a mistake is reported at once.
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise UsageError(f"--out {out}: there is no folder {folder}")


def _token_maps(encoder: ColPaliEncoder, query: str, image: Image.Image) -> _TokenMaps:
    from llama_index_vlm.interpretability import similarity_maps

    (query_vectors,) = encoder.embed_queries([query], show_progress=False)
    maps = similarity_maps(query_vectors, encoder.embed_image_patches(image))
    tokens = encoder.query_token_labels(query)
    if len(tokens) != len(maps):  # never seen; numbered panels beat a crash
        tokens = [f"#{position}" for position in range(len(maps))]
    return _TokenMaps(maps, tokens, [_token_text(encoder, token) for token in tokens])


def _check_token(token: int, token_maps: _TokenMaps) -> int:
    n_tokens = len(token_maps.maps)
    if token >= n_tokens:
        listing = ", ".join(f"{position} {name}" for position, name in enumerate(token_maps.names))
        raise UsageError(
            f"--token {token}: the query has {n_tokens} tokens, numbered 0 to "
            f"{n_tokens - 1}: {listing}"
        )
    return token


def _shown_tokens(encoder: ColPaliEncoder, token_maps: _TokenMaps, all_tokens: bool) -> list[int]:
    """The tokens drawn as panels: all of them, or those that are not special (padding)."""
    special = set(encoder.processor.tokenizer.all_special_tokens)
    shown = [
        position
        for position, token in enumerate(token_maps.tokens)
        if all_tokens or token not in special
    ]
    return shown or list(range(len(token_maps.maps)))


def _one_token_picture(
    image: Image.Image, token_map: np.ndarray
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """One token's heatmap over the full page, its hottest region outlined."""
    from llama_index_vlm.interpretability import draw_region, hottest_region, overlay_heatmap

    region = hottest_region(token_map, image.size)
    return draw_region(overlay_heatmap(image, token_map), region), region


def _panels_picture(image: Image.Image, token_maps: _TokenMaps, chosen: list[int]) -> Image.Image:
    """One heatmap panel per chosen token, titled with its number and text."""
    from llama_index_vlm.interpretability import similarity_map_panels

    titles = [f"{position}: {token_maps.names[position]}" for position in chosen]
    return similarity_map_panels(image, token_maps.maps[chosen], titles)


def _token_text(encoder: ColPaliEncoder, token: str) -> str:
    """A token as people read it (``Ġrevenue`` -> ``revenue``); whitespace tokens quoted."""
    try:
        text = encoder.processor.tokenizer.convert_tokens_to_string([token]).strip()
    except Exception:  # noqa: BLE001 - a label is cosmetic; fall back to the raw token
        text = token
    return text if text else repr(token)
