"""``llama-index-vlm compact``: give the disk space of deleted and replaced pages back.

Like ``info`` and ``delete``, it only touches the store: it never imports torch or transformers.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import timedelta

from llama_index_vlm.cli.common import open_store
from llama_index_vlm.cli.output import escaped


def run_compact(args: argparse.Namespace) -> int:
    """``compact``: compact the index and print the space reclaimed."""
    store = open_store(args.store, must_exist=True)
    report = store.compact(grace=timedelta(minutes=args.grace))
    if args.json:
        fields = {**asdict(report), "grace": report.grace.total_seconds()}
        print(json.dumps({**fields, "bytes_reclaimed": report.bytes_reclaimed}, indent=2))
        return 0
    print(f"index {escaped(args.store)}: {report.summary()}")
    return 0
