"""``llama-index-vlm index PATH...``: read, embed and store files and folders."""

from __future__ import annotations

import argparse

from llama_index_vlm.cli.common import open_store, quantity
from llama_index_vlm.cli.models import load_encoder


def run_index(args: argparse.Namespace) -> int:
    """``index PATH...``: ingest files and folders; 1 when any file failed."""
    from llama_index_vlm.ingestion import ingest
    from llama_index_vlm.reader import PDFPageReader

    store = open_store(args.store, must_exist=False)
    encoder = load_encoder(args.model, store, args.device)
    if args.ray is not None:
        from llama_index_vlm.distributed.ray_ingest import connect

        connect(None if args.ray == "local" else args.ray)
    report = ingest(
        args.paths,
        encoder,
        store,
        reader=PDFPageReader(dpi=args.dpi, extract_text=args.text),
        batch_size=args.batch_size,
        pool_factor=args.pool_factor,
        show_progress=not args.no_progress,
        engine="local" if args.ray is None else "ray",
    )
    print(report.summary())
    for failed in report.failed:
        print(f"  not indexed: {failed.path}: {failed.reason}")
    documents = len(store.doc_ids())
    print(
        f"index {args.store}: {quantity(store.count(), 'page')}, {quantity(documents, 'document')}"
    )
    return 0 if report.ok else 1
