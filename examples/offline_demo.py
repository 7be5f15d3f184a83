"""Offline demo: the whole pipeline on a CPU with no network, in well under a minute.

It builds tiny random checkpoints of the real architectures (a ColPali retriever and a LLaVA
answering model), generates a 3-page PDF, indexes it into LanceDB, asks a question through
LlamaIndex's query engine, prints the answer and the cited pages, and draws similarity maps of
the best page: where on the page each query word matched.

TINY RANDOM MODELS GIVE MEANINGLESS RANKINGS AND ANSWERS. The demo shows that every step runs
offline (shapes, prompts and code paths are the real ones), not retrieval or answer quality;
``examples/quickstart.py`` runs the same steps with the real checkpoints.

Run::

    python examples/offline_demo.py                  # what `make demo` runs
    python examples/offline_demo.py --workdir /tmp/demo
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from offline_setup import cache_dir, tiny_checkpoints, write_sample_pdf  # noqa: E402

QUESTION = "What was the revenue in 2023?"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The demo's options: where to work and where the tiny checkpoints are cached."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir",
        type=Path,
        default=cache_dir() / "offline_demo",
        help="where the PDF, the index and the maps are written (default: %(default)s)",
    )
    parser.add_argument(
        "--checkpoints",
        type=Path,
        help="where tiny checkpoints are built and reused (default: WORKDIR/../tiny_checkpoints)",
    )
    parser.add_argument("--question", default=QUESTION, help="the question (default: %(default)s)")
    return parser.parse_args(argv)


def command_line() -> str:
    """How to run this Python's ``llama-index-vlm`` from here: the bare name when its venv is
    active (on PATH), else the script's path (``.venv/bin/llama-index-vlm``).
    """
    script = Path(sys.executable).parent / "llama-index-vlm"
    if shutil.which("llama-index-vlm") == str(script) or not script.exists():
        return "llama-index-vlm"
    try:
        return shlex.quote(str(script.relative_to(Path.cwd())))
    except ValueError:  # the venv is not under the working directory
        return shlex.quote(str(script))


def main(argv: list[str] | None = None) -> None:
    """Run the demo end to end and print what each step did."""
    args = parse_args(argv)
    started = time.perf_counter()
    print("NOTE: this demo uses TINY RANDOM models, so its rankings and answers are MEANINGLESS.")
    print("      It shows the pipeline runs offline on a CPU; see examples/quickstart.py for real")
    print("      answers from vidore/colpali-v1.3-hf and llava-hf/llava-1.5-7b-hf.\n")

    # Imported here, after the notice: torch and transformers take a few seconds to import.
    from PIL import Image

    from llama_index_vlm import ColPaliEncoder, HuggingFaceVLM, LanceDBPageStore
    from llama_index_vlm import VisualDocumentIndex as Index
    from llama_index_vlm.index import cited_pages
    from llama_index_vlm.ingestion import ingest
    from llama_index_vlm.interpretability import (
        draw_region,
        hottest_region,
        overlay_heatmap,
        similarity_map_panels,
        similarity_maps,
    )

    workdir = args.workdir
    checkpoint_dir = args.checkpoints or workdir.parent / "tiny_checkpoints"
    step = time.perf_counter()
    checkpoints = tiny_checkpoints(checkpoint_dir, "colpali", "llava")
    print(f"1. tiny checkpoints in {checkpoint_dir} ({time.perf_counter() - step:.1f} s)")

    pdf = write_sample_pdf(workdir / "sample_report.pdf")
    index_dir = workdir / "vlm_index"
    shutil.rmtree(index_dir, ignore_errors=True)  # a fresh index each run
    step = time.perf_counter()
    encoder = ColPaliEncoder.from_pretrained(checkpoints["colpali"], show_progress=False)
    store = LanceDBPageStore(uri=str(index_dir))
    report = ingest(pdf, encoder, store, show_progress=False)
    print(f"2. indexed {pdf.name}: {report.summary()}")
    print(f"   index at {index_dir} ({time.perf_counter() - step:.1f} s with model loading)")

    step = time.perf_counter()
    vlm = HuggingFaceVLM.from_pretrained(checkpoints["llava"], max_new_tokens=12)
    index = Index.from_store(store, encoder)
    query_engine = index.as_query_engine(llm=vlm, similarity_top_k=2)
    response = query_engine.query(args.question)
    print(f"3. asked {args.question!r} ({time.perf_counter() - step:.1f} s)")
    # repr(): a random model emits random tokens, control characters included.
    print(f"   answer (random tokens from a random model): {str(response)!r}")
    print("   cited pages:")
    for page in cited_pages(response):
        print(f"     {page}")

    step = time.perf_counter()
    best = response.source_nodes[0].node
    with Image.open(best.resolve_image()) as opened:
        page_image = opened.convert("RGB")
    (query_vectors,) = encoder.embed_queries([args.question], show_progress=False)
    maps = similarity_maps(query_vectors, encoder.embed_image_patches(page_image))
    tokens = encoder.query_token_labels(args.question)
    special = set(encoder.processor.tokenizer.all_special_tokens)
    words = [position for position, token in enumerate(tokens) if token not in special]
    tokenizer = encoder.processor.tokenizer
    # "Ġrevenue" -> "revenue": captions as people read them.
    captions = [tokenizer.convert_tokens_to_string([tokens[i]]).strip() or tokens[i] for i in words]
    panels = similarity_map_panels(page_image, maps[words], captions)
    panels_path = workdir / "similarity_map.png"
    panels.save(panels_path)
    # The page's overall "where": each patch's best similarity to any query word.
    overall = maps[words].max(axis=0)
    region = hottest_region(overall, page_image.size)
    region_path = workdir / "answer_region.png"
    draw_region(overlay_heatmap(page_image, overall), region).save(region_path)
    print(
        f"4. similarity maps of {best.metadata['file_name']}, page "
        f"{best.metadata['page_number']} ({time.perf_counter() - step:.1f} s)"
    )
    print(f"   one panel per query token: {panels_path}")
    print(f"   hottest region {region} outlined: {region_path}")

    print(f"\nDone in {time.perf_counter() - started:.1f} s. The same index from the command line:")
    cli = command_line()
    store = shlex.quote(str(index_dir))
    print(f'  {cli} search "revenue" --store {store}')
    llava = shlex.quote(str(checkpoints["llava"]))
    print(f"  {cli} ask {shlex.quote(args.question)} --store {store} --vlm {llava}")
    print(f"  {cli} info --store {store}")
    if cli != "llama-index-vlm":
        print(
            f"(or `source {Path(cli).parent / 'activate'}` first, then run `llama-index-vlm ...`)"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
