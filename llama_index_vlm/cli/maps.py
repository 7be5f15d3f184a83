"""``llama-index-vlm maps QUERY --page PAGE --out FILE``: where on a page a query matched."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llama_index_vlm.cli.common import open_store, require_text
from llama_index_vlm.cli.models import (
    encoder_name,
    load_encoder,
    note_tiny_checkpoints,
    place,
    retriever_adapter,
)
from llama_index_vlm.cli.output import escaped, page_name
from llama_index_vlm.errors import UsageError
from llama_index_vlm.pages import page_image

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


@dataclass(frozen=True)
class QueryWord:
    """A word of the query as the user wrote it, and the positions of its tokens."""

    text: str
    tokens: tuple[int, ...]


def run_maps(args: argparse.Namespace) -> int:
    """``maps QUERY --page PAGE --out FILE``: similarity maps of a query over a stored page."""
    query = require_text(args.query, "query")
    _require_out_folder(args.out)
    store = open_store(args.store, must_exist=True)
    page = find_page(store, args.page)
    retriever = encoder_name(args.model, store, args.adapter)
    placement = place([retriever], args.device, args.dtype)
    note_tiny_checkpoints([retriever])
    encoder = load_encoder(
        retriever,
        store,
        placement,
        model_given=args.model is not None,
        verbose=args.verbose,
        adapter=retriever_adapter(args.model, args.adapter, store),
    )
    image = page_image(page)
    token_maps = _token_maps(encoder, query, image)
    if args.token is not None:
        position = _check_token(args.token, token_maps)
        picture, region = _one_token_picture(image, token_maps.maps[position])
        name = escaped(token_maps.names[position])
        lines = [(f"token {position:>2} {name:<16}", token_maps.maps[position])]
    else:
        words = _shown_words(encoder, token_maps, query, args.all_tokens)
        # A word's map is the mean of its tokens' maps: where the word as a whole matched.
        word_maps = [token_maps.maps[list(word.tokens)].mean(axis=0) for word in words]
        picture, region = _panels_picture(image, word_maps, words), None
        lines = [(_word_line(number, word), word_maps[number]) for number, word in enumerate(words)]
    save_image(picture, args.out)
    print(
        f"wrote {escaped(args.out)} ({picture.width}x{picture.height}): {query!r} "
        f"on {page_name(page)}"
    )
    for line, similarity_map in lines:
        print(f"  {line} max similarity {similarity_map.max():.3f}")
    if region is not None:
        print(f"  hottest region (left, top, right, bottom): {region}")
    return 0


def query_words(token_texts: list[str], query: str, skipped: set[int]) -> list[QueryWord]:
    """Group a query's tokens into the words of ``query``: sub-word tokens (``rev`` ``enue``)
    become one word, and tokens outside the query (the processor's ``Question:`` prefix, the
    padding it appends) and those in ``skipped`` belong to none.

    Args:
        token_texts: ``token_texts[i]`` is the text of tokens ``0..i`` decoded together (so a
            character split over several byte tokens is counted once).
        query: the query as the user wrote it.
        skipped: positions of tokens never shown (special tokens).

    Returns:
        The words in order; empty when the query cannot be found in the decoded text.

    Example:
        >>> decoded = ["<bos>", "<bos>Q:", "<bos>Q: rev", "<bos>Q: revenue", "<bos>Q: revenue 23"]
        >>> [(w.text, w.tokens) for w in query_words(decoded, "revenue 23", {0})]
        [('revenue', (2, 3)), ('23', (4,))]
    """
    full = token_texts[-1] if token_texts else ""
    start = full.find(query)
    if start < 0 or not query.strip():
        return []
    end, words, previous_end = start + len(query), [], 0
    for position, text in enumerate(token_texts):
        token_start, token_end, previous_end = previous_end, len(text), len(text)
        piece = full[token_start:token_end]
        if position in skipped or token_end <= start or token_start >= end:
            continue
        continues_word = bool(words) and words[-1][1] == token_start
        if not piece.strip() and not (piece == "" and continues_word):
            continue  # whitespace between words; an empty piece is a character's first bytes
        if continues_word and not piece[:1].isspace():
            words[-1] = (words[-1][0] + [position], token_end, words[-1][2])
        else:
            words.append(([position], token_end, token_start))
    return [
        QueryWord(full[max(first, start) : min(last, end)].strip(), tuple(positions))
        for positions, last, first in words
    ]


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
        nodes = store.get_nodes(filters=filters) or _copy_page(store, file, int(number))
        if len(nodes) == 1:
            return nodes[0]
        if len(nodes) > 1:
            ids = ", ".join(node.node_id for node in nodes)
            raise UsageError(
                f"{len(nodes)} documents have a page {escaped(page)}; give its page id: {ids}"
            )
    raise UsageError(
        f"no page {page!r} in the index at {escaped(store.uri)}; give a page id as "
        "`llama-index-vlm search` prints it, or FILE_NAME:PAGE_NUMBER (e.g. report.pdf:3)"
    )


def _copy_page(store: LanceDBPageStore, file: str, number: int) -> list[BaseNode]:
    """Page ``number`` of the documents with a recorded copy named ``file``."""
    from llama_index_vlm.cli.copies import FileCopies
    from llama_index_vlm.pages import page_id_for

    page_ids = [page_id_for(doc_id, number) for doc_id in FileCopies(store).documents_named(file)]
    return store.get_nodes(page_ids) if page_ids else []


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
        raise UsageError(f"--out {escaped(out)}: there is no folder {escaped(folder)}")


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
        listing = ", ".join(
            f"{position} {escaped(name)}" for position, name in enumerate(token_maps.names)
        )
        raise UsageError(
            f"--token {token}: the query has {n_tokens} tokens, numbered 0 to "
            f"{n_tokens - 1}: {listing}"
        )
    return token


def _shown_words(
    encoder: ColPaliEncoder, token_maps: _TokenMaps, query: str, all_tokens: bool
) -> list[QueryWord]:
    """The panels drawn: one per word of the query, or one per token with ``--all-tokens``
    (the processor's prefix and padding included), or per token when the words cannot be found.
    """
    tokenizer = encoder.processor.tokenizer
    special = set(tokenizer.all_special_tokens)
    tokens = token_maps.tokens
    if not all_tokens:
        decoded = [
            tokenizer.convert_tokens_to_string(tokens[: end + 1]) for end in range(len(tokens))
        ]
        skipped = {position for position, token in enumerate(tokens) if token in special}
        words = query_words(decoded, query, skipped)
        if words:
            return words
    shown = [
        position for position, token in enumerate(tokens) if all_tokens or token not in special
    ] or list(range(len(tokens)))
    return [QueryWord(token_maps.names[position], (position,)) for position in shown]


def _word_line(number: int, word: QueryWord) -> str:
    first, last = word.tokens[0], word.tokens[-1]
    span = f"token {first}" if first == last else f"tokens {first}-{last}"
    return f"word {number:>2} {escaped(word.text):<16} ({span})"


def _one_token_picture(
    image: Image.Image, token_map: np.ndarray
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """One token's heatmap over the full page, its hottest region outlined."""
    from llama_index_vlm.interpretability import draw_region, hottest_region, overlay_heatmap

    region = hottest_region(token_map, image.size)
    return draw_region(overlay_heatmap(image, token_map), region), region


def _panels_picture(
    image: Image.Image, maps: list[np.ndarray], words: list[QueryWord]
) -> Image.Image:
    """One heatmap panel per word, titled with its number and text."""
    import numpy as np

    from llama_index_vlm.interpretability import similarity_map_panels

    titles = [f"{number}: {word.text}" for number, word in enumerate(words)]
    return similarity_map_panels(image, np.stack(maps), titles)


def _token_text(encoder: ColPaliEncoder, token: str) -> str:
    """A token as people read it (``Ġrevenue`` -> ``revenue``); whitespace tokens quoted."""
    try:
        text = encoder.processor.tokenizer.convert_tokens_to_string([token]).strip()
    except Exception:  # noqa: BLE001 - a label is cosmetic; fall back to the raw token
        text = token
    return text if text else repr(token)
