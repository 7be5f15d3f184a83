"""Quickstart: index your PDFs and ask a question, with the real checkpoints.

Downloads vidore/colpali-v1.3-hf (about 6 GB) and llava-hf/llava-1.5-7b-hf (about 14 GB) from
the Hugging Face hub on first use; both run on a CPU, but a GPU makes answers fast. To try the
pipeline offline first, run ``examples/offline_demo.py``.

::

    python examples/quickstart.py reports/ "What was the 2023 revenue?"
    python examples/quickstart.py scan.pdf "Which page describes the warranty?" --store ./idx

Pass local checkpoint directories with ``--model`` / ``--vlm`` where the hub is unreachable.
"""

from __future__ import annotations

import argparse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options: what to index, what to ask, where the index lives, which checkpoints."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("documents", nargs="+", help="PDFs, page images or folders of them")
    parser.add_argument("question", help="the question to ask about them")
    parser.add_argument("--store", default="./vlm_index", help="index directory (%(default)s)")
    parser.add_argument(
        "--model",
        default="vidore/colpali-v1.3-hf",
        help="ColPali retriever: hub id or local directory (%(default)s)",
    )
    parser.add_argument(
        "--vlm",
        default="llava-hf/llava-1.5-7b-hf",
        help="answering model: hub id or local directory (%(default)s)",
    )
    parser.add_argument("-k", type=int, default=3, help="pages given to the VLM (%(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Index ``documents`` (unchanged pages are skipped), then answer ``question``, streamed."""
    args = parse_args(argv)
    # Imported after parsing, so --help answers without importing torch.
    from llama_index_vlm import (
        ColPaliEncoder,
        HuggingFaceVLM,
        LanceDBPageStore,
        PDFPageReader,
        VisualDocumentIndex,
    )

    encoder = ColPaliEncoder.from_pretrained(args.model)  # or a local directory
    store = LanceDBPageStore(uri=args.store)  # embedded LanceDB, a local folder
    index = VisualDocumentIndex(encoder=encoder, store=store, show_progress=True)
    # Streams pages from disk and reports files it cannot read; for documents already loaded,
    # VisualDocumentIndex.from_documents(PDFPageReader().load_data(...), encoder=...) does the same.
    report = index.ingest(args.documents, reader=PDFPageReader(dpi=144))
    print(report.summary())
    for failed in report.failed:
        print(f"  not indexed: {failed.path}: {failed.reason}")

    vlm = HuggingFaceVLM.from_pretrained(args.vlm, max_new_tokens=256)
    query_engine = index.as_query_engine(llm=vlm, similarity_top_k=args.k, streaming=True)
    response = query_engine.query(args.question)
    response.print_response_stream()
    print("\n\nCited pages:")
    for hit in response.source_nodes:
        metadata = hit.node.metadata
        print(f"  {metadata['file_name']}, page {metadata['page_number']} (score {hit.score:.2f})")


if __name__ == "__main__":
    main()
