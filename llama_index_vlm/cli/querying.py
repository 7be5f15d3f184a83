"""``llama-index-vlm search QUERY`` and ``ask QUESTION``: the commands that retrieve pages."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from llama_index_vlm.cli.common import metadata_filters, open_store, require_pages, require_text
from llama_index_vlm.cli.models import load_encoder, load_vlm
from llama_index_vlm.errors import UsageError
from llama_index_vlm.pages import page_label

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from llama_index.core.schema import BaseNode, NodeWithScore

#: The page fields ``search --json`` prints for each hit, after its rank, score and page id.
_JSON_FIELDS = ("doc_id", "file_name", "file_path", "page_number")


def run_search(args: argparse.Namespace) -> int:
    """``search QUERY``: the best pages by MaxSim score (fused with BM25 with ``--hybrid``),
    without a language model.
    """
    query = require_text(args.query, "query")
    store = open_store(args.store, must_exist=True)
    filters = metadata_filters(args.filters)
    if not require_pages(store, filters):
        print("[]" if args.json else "no pages match the filters")
        return 0
    encoder = load_encoder(args.model, store, args.device)
    from llama_index_vlm.retriever import ColPaliRetriever  # after the checks, as in maps

    retriever = ColPaliRetriever(
        encoder=encoder,
        store=store,
        similarity_top_k=args.k,
        filters=filters,
        search_mode="hybrid" if args.hybrid else "auto",
    )
    hits = retriever.retrieve(query)
    if args.json:
        print(_hits_json(hits))
        return 0
    for rank, hit in enumerate(hits, start=1):
        print(f"{rank}. {page_label(hit.node)}  score {hit.score:.2f}  page_id {hit.node.node_id}")
    return 0


def run_ask(args: argparse.Namespace) -> int:
    """``ask QUESTION``: retrieve pages, have the VLM answer, print the answer and its pages."""
    question = require_text(args.question, "question")
    store = open_store(args.store, must_exist=True)
    filters = metadata_filters(args.filters)
    if not require_pages(store, filters):
        raise UsageError("no pages match the filters; nothing to answer from")
    encoder = load_encoder(args.model, store, args.device)
    vlm = load_vlm(args.vlm, args.device, args.max_new_tokens)
    from llama_index_vlm.index import VisualDocumentIndex, cited_pages

    index = VisualDocumentIndex.from_store(store, encoder)
    engine = index.as_query_engine(
        llm=vlm,
        similarity_top_k=args.k,
        streaming=args.stream,
        filters=filters,
        search_mode="hybrid" if args.hybrid else "auto",
    )
    response = engine.query(question)
    if args.stream:
        for text in response.response_gen:
            print(text, end="", flush=True)
        print()
    else:
        print(str(response))
    print("\nCited pages:")
    for rank, page in enumerate(cited_pages(response), start=1):
        print(f"  {rank}. {page}")
    return 0


def _hits_json(hits: list[NodeWithScore]) -> str:
    results = [
        {"rank": rank, "score": hit.score, **_page_fields(hit.node)}
        for rank, hit in enumerate(hits, start=1)
    ]
    return json.dumps(results, indent=2)


def _page_fields(node: BaseNode) -> dict[str, Any]:
    return {"page_id": node.node_id, **{key: node.metadata.get(key) for key in _JSON_FIELDS}}
