"""Photo and figure collections on the command line: ``index --images-only``,
``search --image-search`` and ``ask --image-search``.

The images live in the index's ``images`` table (same ``--store``), embedded by an image-text
model (BLIP-2 or SigLIP), not by the page retriever. The option adders below need the standard
library only (the parser imports this module); the ``run_*`` functions import the rest of the
command line and the models when they run.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING

from llama_index_vlm.errors import InvalidCheckpointError, UsageError

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from llama_index_vlm.image_search import ImageTextEncoder, LanceDBImageStore

# The same value as llama_index_vlm.image_search.encoder.DEFAULT_IMAGE_TEXT_ENCODER (a test
# checks): written out because importing that module means importing torch.
DEFAULT_IMAGE_MODEL = "Salesforce/blip2-itm-vit-g"


# ------------------------------------------------------------------ options (standard library)


def _image_model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image-model",
        metavar="CKPT",
        help="image-text model for photos (BLIP-2 image-text retrieval or SigLIP): hub id or "
        f"local directory (default: the image table's own, or {DEFAULT_IMAGE_MODEL})",
    )


def add_index_options(index: argparse.ArgumentParser) -> None:
    """``index --images-only``: photos into the image table instead of pages."""
    index.add_argument(
        "--images-only",
        action="store_true",
        help="index the image files as photos/figures for image search (text or example "
        "image), embedded by --image-model, instead of as document pages; PDFs are skipped",
    )
    _image_model_option(index)


def add_search_options(search: argparse.ArgumentParser) -> None:
    """``search --image-search [--image PATH] [--itm-rerank]``."""
    _search_options(search)


def add_ask_options(ask: argparse.ArgumentParser) -> None:
    """``ask --image-search``: answer from the photos that match the question."""
    _search_options(ask)


def _search_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image-search",
        action="store_true",
        help="search the photos indexed with `index --images-only` instead of the pages",
    )
    parser.add_argument(
        "--image",
        metavar="PATH",
        help="with --image-search: find photos like this image (search by example)",
    )
    parser.add_argument(
        "--itm-rerank",
        action="store_true",
        help="with --image-search and a text query: rerank the best 20 photos with BLIP-2's "
        "image-text matching head (scores become match probabilities)",
    )
    _image_model_option(parser)


# ------------------------------------------------------------------ commands


def run_index_images(args: argparse.Namespace) -> int:
    """``index --images-only PATH...``: embed and store photos; 1 when any file failed."""
    from llama_index_vlm.cli.common import quantity
    from llama_index_vlm.image_search import index_images

    store = open_image_store(args.store, must_exist=False)
    encoder = load_image_encoder(args, store)
    report = index_images(
        args.paths, encoder, store, batch_size=args.batch_size, show_progress=not args.no_progress
    )
    print(report.summary())
    for path, reason in report.failed:
        print(f"  not indexed: {path}: {reason}")
    print(f"index {args.store}: {quantity(store.count(), 'image')}")
    return 0 if report.ok else 1


def run_image_search(args: argparse.Namespace) -> int:
    """``search --image-search QUERY`` (or ``--image PATH``): the best photos."""
    hits = _retrieve(args, args.query, args.k)
    if args.json:
        results = [
            {"rank": rank, "score": hit.score, "image_id": hit.node.node_id, **hit.node.metadata}
            for rank, hit in enumerate(hits, start=1)
        ]
        print(json.dumps(results, indent=2))
        return 0
    for rank, hit in enumerate(hits, start=1):
        where = hit.node.metadata.get("file_path") or hit.node.node_id
        print(f"{rank}. {where}  score {hit.score:.3f}")
    return 0


def run_ask_images(args: argparse.Namespace) -> int:
    """``ask --image-search QUESTION``: the VLM answers from the photos the question finds."""
    from llama_index_vlm.cli.models import load_vlm, place, vlm_name
    from llama_index_vlm.query_engines import page_query_engine

    retriever = _retriever(args, args.k)
    answerer = vlm_name(args.vlm)
    vlm = load_vlm(
        answerer,
        place([answerer], args.device, args.dtype),
        args.max_new_tokens,
        verbose=args.verbose,
        adapter=args.vlm_adapter,
    )
    engine = page_query_engine(retriever, vlm, streaming=args.stream)
    query = _query(args, args.question)
    response = engine.query(query)
    if args.stream:
        for text in response.response_gen:
            print(text, end="", flush=True)
        print()
    else:
        print(str(response))
    print("\nPhotos:")
    for rank, hit in enumerate(response.source_nodes, start=1):
        where = hit.node.metadata.get("file_path") or hit.node.node_id
        print(f"  {rank}. {where} (score {hit.score:.3f})")
    return 0


# ------------------------------------------------------------------ opening things


def open_image_store(uri: str, *, must_exist: bool) -> LanceDBImageStore:
    """The image table of the index at ``uri``; with ``must_exist``, refuse an empty one."""
    from llama_index_vlm.cli.common import no_index_message

    local = "://" not in uri
    if local and os.path.exists(uri) and not os.path.isdir(uri):
        raise UsageError(f"{uri} is a file, not an index directory; choose another --store")
    if must_exist and local and not os.path.isdir(uri):
        raise UsageError(no_index_message(uri))
    from llama_index_vlm.image_search import LanceDBImageStore

    store = LanceDBImageStore(uri=uri)
    if must_exist and store.count() == 0:
        raise UsageError(
            f"the index at {uri} holds no photos; run `llama-index-vlm index --images-only "
            "PATH` first"
        )
    return store


def load_image_encoder(args: argparse.Namespace, store: LanceDBImageStore) -> ImageTextEncoder:
    """The image-text model: ``--image-model``, else the image table's own, else the default;
    checked against the table's vectors.
    """
    from llama_index_vlm.cli.models import check_checkpoint, place, resolve_local
    from llama_index_vlm.image_search import ImageTextEncoder

    recorded = (store.fingerprint or {}).get("model")
    name = args.image_model or recorded or DEFAULT_IMAGE_MODEL
    check_checkpoint(name, "--image-model")
    placement = place([name], args.device, args.dtype)
    try:
        encoder = ImageTextEncoder.from_pretrained(
            resolve_local(name),
            device=placement.device,
            dtype=placement.dtype,
            show_progress=False,
        )
    except InvalidCheckpointError as error:
        raise InvalidCheckpointError(f"--image-model: {error}") from error
    store.check_fingerprint(encoder.fingerprint)
    return encoder


def _retriever(args: argparse.Namespace, k: int):
    from llama_index_vlm.cli.common import metadata_filters
    from llama_index_vlm.image_search import ImageSearchRetriever

    store = open_image_store(args.store, must_exist=True)
    encoder = load_image_encoder(args, store)
    return ImageSearchRetriever(
        encoder,
        store,
        similarity_top_k=k,
        filters=metadata_filters(args.filters, None),
        itm_rerank=args.itm_rerank and not args.image,
    )


def _query(args: argparse.Namespace, text: str | None):
    """The query bundle: by example with ``--image``, else the text."""
    from llama_index.core.schema import QueryBundle

    from llama_index_vlm.cli.common import require_text

    if args.image:
        if not os.path.isfile(args.image):
            raise UsageError(f"--image {args.image}: there is no such file")
        return QueryBundle(query_str=text or "", image_path=os.path.abspath(args.image))
    return QueryBundle(query_str=require_text(text or "", "query"))


def _retrieve(args: argparse.Namespace, text: str | None, k: int):
    query = _query(args, text)
    return _retriever(args, k).retrieve(query)
