"""LlamaIndex's own query engines, with llama-index-vlm's retriever and VLM as the parts.

``RetrieverQueryEngine`` and ``CitationQueryEngine`` come from ``llama_index.core`` unchanged:
the ColPali retriever hands them page ``ImageNode`` s, and ``HuggingFaceVLM`` answers from the
page images (``multimodal=True``).

By default it runs offline with tiny random checkpoints (MEANINGLESS answers; the code paths are
the real ones); ``--real`` uses vidore/colpali-v1.3-hf and llava-hf/llava-1.5-7b-hf (a GPU
helps)::

    python examples/query_engine.py
    python examples/query_engine.py --real --documents reports/ --question "2023 revenue?"
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from offline_setup import (  # noqa: E402
    cache_dir,
    explained_download,
    tiny_checkpoints,
    write_sample_pdf,
)

REAL_ENCODER = "vidore/colpali-v1.3-hf"
REAL_VLM = "llava-hf/llava-1.5-7b-hf"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options: tiny or real checkpoints, which documents, which question."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--real", action="store_true", help=f"use {REAL_ENCODER} and {REAL_VLM} (downloads)"
    )
    parser.add_argument(
        "--documents", type=Path, help="PDFs or a folder (default: a generated 3-page PDF)"
    )
    parser.add_argument("--question", default="What was the revenue in 2023?")
    parser.add_argument(
        "--checkpoints",
        type=Path,
        default=cache_dir() / "tiny_checkpoints",
        help="where tiny checkpoints are built and reused (default: %(default)s)",
    )
    return parser.parse_args(argv)


def show(title: str, response, answer: str) -> None:
    """Print an engine's answer and the pages it was given."""
    print(f"\n== {title}")
    # repr() for tiny models: their random tokens include control characters.
    print(f"answer: {answer!r}")
    for hit in response.source_nodes:
        metadata = hit.node.metadata
        print(f"  source: {metadata['file_name']}, page {metadata['page_number']}, {hit.score:.2f}")


def main(argv: list[str] | None = None) -> None:
    """Index the documents, then ask through three stock LlamaIndex engines."""
    args = parse_args(argv)
    if not args.real:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        print(
            "NOTE: tiny random checkpoints: rankings and answers are MEANINGLESS (--real for real)."
        )

    from llama_index.core import Settings
    from llama_index.core.query_engine import CitationQueryEngine, RetrieverQueryEngine
    from llama_index.core.response_synthesizers import get_response_synthesizer

    from llama_index_vlm import ColPaliEncoder, ColPaliRetriever, HuggingFaceVLM, LanceDBPageStore
    from llama_index_vlm.ingestion import ingest

    if args.real:
        encoder_path, vlm_path = REAL_ENCODER, REAL_VLM
    else:
        checkpoints = tiny_checkpoints(args.checkpoints, "colpali", "llava")
        encoder_path, vlm_path = checkpoints["colpali"], checkpoints["llava"]

    with tempfile.TemporaryDirectory() as workdir:
        documents = args.documents or write_sample_pdf(Path(workdir) / "sample_report.pdf")
        with explained_download(REAL_ENCODER, REAL_VLM):
            encoder = ColPaliEncoder.from_pretrained(encoder_path)
        store = LanceDBPageStore(uri=str(Path(workdir) / "vlm_index"))
        print(ingest(documents, encoder, store, show_progress=False).summary())
        with explained_download(REAL_ENCODER, REAL_VLM):
            vlm = HuggingFaceVLM.from_pretrained(vlm_path, max_new_tokens=64 if args.real else 8)
        retriever = ColPaliRetriever(encoder=encoder, store=store, similarity_top_k=2)

        # 1. RetrieverQueryEngine with an explicit multimodal synthesizer, streamed. The VLM's
        #    chat_prompt_helper packs pages by count: LlamaIndex's default budgets 2125 tokens
        #    per image whatever the model, which would send LLaVA one page per call.
        synthesizer = get_response_synthesizer(
            llm=vlm,
            multimodal=True,
            streaming=True,
            chat_prompt_helper=vlm.chat_prompt_helper(),
        )
        engine = RetrieverQueryEngine.from_args(
            retriever, llm=vlm, response_synthesizer=synthesizer
        )
        response = engine.query(args.question)
        show("RetrieverQueryEngine, streamed", response, "".join(response.response_gen))

        # 2. The same engine built by from_args alone, queried asynchronously.
        Settings.chat_prompt_helper = vlm.chat_prompt_helper()  # for engines built from args
        engine = RetrieverQueryEngine.from_args(retriever, llm=vlm, multimodal=True)
        response = asyncio.run(engine.aquery(args.question))
        show("RetrieverQueryEngine.from_args, async", response, str(response))

        # 3. CitationQueryEngine.from_args takes an index and calls index.as_retriever(); the
        #    retriever has as_retriever() too, so it stands in the index's place. Pages become
        #    numbered sources the model is asked to cite as [1], [2].
        engine = CitationQueryEngine.from_args(retriever, llm=vlm, multimodal=True)
        response = engine.query(args.question)
        show("CitationQueryEngine", response, str(response))


if __name__ == "__main__":
    main()
