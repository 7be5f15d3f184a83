"""``llama-index-vlm search QUERY`` and ``ask QUESTION``: the commands that retrieve pages.

Both check the store, the filters and the checkpoints before loading a model.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from llama_index_vlm.cli.common import metadata_filters, open_store, require_pages, require_text
from llama_index_vlm.cli.images import run_ask_images, run_image_search
from llama_index_vlm.cli.models import (
    Placement,
    encoder_name,
    load_encoder,
    load_vlm,
    note_tiny_checkpoints,
    place,
    retriever_adapter,
    vlm_name,
)
from llama_index_vlm.cli.output import escaped, page_name, shared_file_names
from llama_index_vlm.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from llama_index.core.schema import BaseNode, NodeWithScore

    from llama_index_vlm.encoder import ColPaliEncoder
    from llama_index_vlm.store import LanceDBPageStore

#: The page fields ``--json`` prints for each page, after its rank, score and page id.
_JSON_FIELDS = ("doc_id", "file_name", "file_path", "page_number")
#: What ``ask`` prints for an answer of no text (or only whitespace).
EMPTY_ANSWER = "(empty answer: the model generated no text)"


def run_search(args: argparse.Namespace) -> int:
    """``search QUERY``: the best pages by MaxSim score (fused with BM25 with ``--hybrid``),
    without a language model.
    """
    if args.image_search:
        return run_image_search(args)
    query = require_text(args.query, "query")
    store = open_store(args.store, must_exist=True)
    filters = metadata_filters(args.filters, store)
    if not require_pages(store, filters):
        print("[]" if args.json else "no pages match the filters")
        return 0
    retriever = encoder_name(args.model, store, args.adapter)
    encoder = _load_retriever(args, store, retriever, _place(args, [retriever]))
    from llama_index_vlm.retriever import ColPaliRetriever

    retriever = ColPaliRetriever(
        encoder=encoder,
        store=store,
        similarity_top_k=args.k,
        filters=filters,
        search_mode="hybrid" if args.hybrid else "auto",
    )
    hits = retriever.retrieve(query)
    if args.json:
        print(json.dumps(_pages_json(hits), indent=2))
        return 0
    shared = shared_file_names(store.documents())
    for rank, hit in enumerate(hits, start=1):
        print(
            f"{rank}. {page_name(hit.node, shared)}  score {hit.score:.2f}  "
            f"page_id {escaped(hit.node.node_id)}"
        )
    return 0


def run_ask(args: argparse.Namespace) -> int:
    """``ask QUESTION``: retrieve pages, have the VLM answer, print the answer and its pages."""
    if args.image_search:
        return run_ask_images(args)
    question = require_text(args.question, "question")
    store = open_store(args.store, must_exist=True)
    filters = metadata_filters(args.filters, store)
    if not require_pages(store, filters):
        raise UsageError("no pages match the filters; nothing to answer from")
    retriever, answerer = encoder_name(args.model, store, args.adapter), vlm_name(args.vlm)
    quantized = {answerer: args.quantization} if args.quantization else None
    placement = _place(args, [retriever, answerer], quantized)
    encoder = _load_retriever(args, store, retriever, placement)
    vlm = load_vlm(
        answerer,
        placement,
        args.max_new_tokens,
        quantization=args.quantization,
        verbose=args.verbose,
        adapter=args.vlm_adapter,
    )
    from llama_index_vlm.index import VisualDocumentIndex

    engine = VisualDocumentIndex.from_store(store, encoder).as_query_engine(
        llm=vlm,
        similarity_top_k=args.k,
        streaming=args.stream,
        filters=filters,
        search_mode="hybrid" if args.hybrid else "auto",
    )
    response = engine.query(question)
    if args.json:
        answer = {"question": question, "answer": str(response)}
        print(json.dumps({**answer, "pages": _pages_json(response.source_nodes)}, indent=2))
        return 0
    _print_answer(response, stream=args.stream)
    shared = shared_file_names(store.documents())
    print("\nCited pages:")
    for rank, hit in enumerate(response.source_nodes, start=1):
        score = "" if hit.score is None else f" (score {hit.score:.2f})"
        print(f"  {rank}. {page_name(hit.node, shared)}{score}")
    return 0


def _place(
    args: argparse.Namespace, names: list[str], quantized: dict[str, str] | None = None
) -> Placement:
    """Where the checkpoints ``names`` (checked) run together; says if they are tiny ones."""
    placement = place(names, args.device, args.dtype, quantized=quantized)
    note_tiny_checkpoints(names)
    return placement


def _load_retriever(
    args: argparse.Namespace, store: LanceDBPageStore, name: str, placement: Placement
) -> ColPaliEncoder:
    return load_encoder(
        name,
        store,
        placement,
        model_given=args.model is not None,
        verbose=args.verbose,
        adapter=retriever_adapter(args.model, args.adapter, store),
    )


def _print_answer(response: Any, *, stream: bool) -> None:
    """The answer, its own lines kept and every other control character escaped."""
    if not stream:
        answer = str(response)
        print(escaped(answer, keep="\n\t") if answer.strip() else EMPTY_ANSWER)
        return
    printed = ""
    for text in response.response_gen:
        printed += text
        print(escaped(text, keep="\n\t"), end="", flush=True)
    print("" if printed.strip() else EMPTY_ANSWER)


def _pages_json(hits: list[NodeWithScore]) -> list[dict[str, Any]]:
    return [
        {"rank": rank, "score": hit.score, **_page_fields(hit.node)}
        for rank, hit in enumerate(hits, start=1)
    ]


def _page_fields(node: BaseNode) -> dict[str, Any]:
    return {"page_id": node.node_id, **{key: node.metadata.get(key) for key in _JSON_FIELDS}}
