"""Full-size architectures with random weights: what the default checkpoints cost to load and run.

Random weights have the real models' compute and memory, so load time, memory and throughput
measured with them are what the released checkpoints give, without downloading them. The
configurations are shared with the benchmarks' ``--full`` runs (``encode.py``, ``generate.py``).

Run as a script, it saves each default architecture once (ColPali v1.3: PaliGemma-3B-448;
LLaVA-1.5-7B: CLIP ViT-L/14-336 + Llama-2-7B) with random bfloat16 weights in transformers'
format, then loads each in every dtype asked for, in a fresh process, through the same
``from_pretrained`` path and memory check as the command line, and prints one Markdown row per
model and dtype: checkpoint size, load seconds, peak RSS, pages/s (ColPali) or seconds per answer
(LLaVA, one page). A dtype that does not fit in free memory is refused by the command line's
check, and the row says so.

    python benchmarks/full_size.py --workdir /tmp/full_size              # CPU, bfloat16
    python benchmarks/full_size.py --dtypes bfloat16,float32 --models colpali
    python benchmarks/full_size.py --device cuda --pages 32              # on a GPU

Needs about 20 GB of disk in ``--workdir`` (removed at the end unless ``--keep``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

QUESTION = "What was the total revenue in 2023?"


# ---------------------------------------------------------------- saving random checkpoints

#: This script's models, by their names in ``architectures.py``.
ARCHITECTURES = {"colpali": "colpali", "llava": "llava-1.5-7b"}
LABELS = {"colpali": "ColPali v1.3 (PaliGemma-3B-448)", "llava": "LLaVA-1.5-7B"}


def save(kind: str, directory: Path) -> Path:
    """Save ``kind``'s full-size architecture with random bfloat16 weights (``architectures``),
    under ``directory / kind``."""
    from architectures import save_random

    path = save_random(ARCHITECTURES[kind], directory)
    return path.rename(directory / kind)


# ---------------------------------------------------------------- measuring one row (a child)


def page_image():
    """An A4 page at 150 dpi (1240 x 1754) with text-like stripes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    page = np.full((1754, 1240, 3), 255, dtype=np.uint8)
    for top in range(100, 1654, 40):
        page[top : top + 14, 100 : 100 + int(rng.integers(200, 1040))] = int(rng.integers(0, 80))
    return Image.fromarray(page)


def measure(kind: str, path: Path, dtype: str, device: str, pages: int, new_tokens: int) -> dict:
    """Load ``path`` as the command line would and time it; one row as a dict."""
    from llama_index_vlm.cli.memory import model_size, require_memory
    from llama_index_vlm.errors import UsageError

    size = model_size(str(path), dtype)
    row = {"kind": kind, "dtype": dtype, "device": device, "weights_bytes": size.bytes}
    try:
        require_memory([size], device)
    except UsageError as refusal:
        return {**row, "refused": str(refusal)}
    started = time.perf_counter()
    if kind == "colpali":
        from llama_index_vlm import ColPaliEncoder

        model = ColPaliEncoder.from_pretrained(path, device=device, dtype=dtype, batch_size=1)
        row["load_s"] = time.perf_counter() - started
        row.update(_run_colpali(model, pages))
    else:
        from llama_index_vlm import HuggingFaceVLM

        model = HuggingFaceVLM.from_pretrained(
            path, device=device, dtype=dtype, max_new_tokens=new_tokens, min_new_tokens=new_tokens
        )
        row["load_s"] = time.perf_counter() - started
        row.update(_run_llava(model, new_tokens))
    row["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return row


def cpu_seconds() -> float:
    """CPU seconds this process has used, all its threads together."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run_colpali(encoder, pages: int) -> dict:
    images = [page_image()] * pages
    encoder.embed_images(images[:1], show_progress=False)  # warm-up: kernels, allocations
    started, cpu = time.perf_counter(), cpu_seconds()
    vectors = encoder.embed_images(images, show_progress=False)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    started = time.perf_counter()
    encoder.embed_queries([QUESTION], show_progress=False)
    return {
        "pages_per_s": pages / seconds,
        "s_per_page": seconds / pages,
        "cpu_s_per_page": cpu / pages,
        "query_s": time.perf_counter() - started,
        "vectors_per_page": len(vectors[0]),
    }


def _run_llava(vlm, new_tokens: int) -> dict:
    from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock

    from llama_index_vlm.images import encode_image

    page = encode_image(page_image(), "PNG")
    blocks = [TextBlock(text="file_name: report.pdf\npage_number: 1")]
    blocks += [ImageBlock(image=page, image_mimetype="image/png"), TextBlock(text=QUESTION)]
    started, cpu = time.perf_counter(), cpu_seconds()
    vlm.chat([ChatMessage(role="user", blocks=blocks)])
    return {
        "s_per_answer": time.perf_counter() - started,
        "cpu_s_per_answer": cpu_seconds() - cpu,
        "new_tokens": new_tokens,
    }


# ----------------------------------------------------- one layer, where a model does not fit

#: One decoder layer of each language model, and the tokens of one call: ColPali embeds a page
#: (1024 image + ~6 text tokens); LLaVA reads a page and a question (576 + ~40) before answering.
#: A generated token is one more call of one token (reading every weight once).
LAYERS = [
    ("colpali", "PaliGemma-3B text layer (Gemma-2B), a page", 1030, 18),
    ("llava", "LLaVA-1.5-7B text layer (Llama-2-7B), page + question", 616, 32),
    ("llava", "LLaVA-1.5-7B text layer (Llama-2-7B), one new token", 1, 32),
]


def _one_layer_model(kind: str):
    from architectures import llava_15_7b_config, paligemma_3b_448_config
    from transformers import GemmaConfig, GemmaModel, LlamaConfig, LlamaModel

    if kind == "colpali":
        config = paligemma_3b_448_config(0).text_config
        return GemmaModel(GemmaConfig(**{**config.to_dict(), "num_hidden_layers": 1,
                                         "vocab_size": 8}))  # fmt: skip
    config = llava_15_7b_config(0).text_config
    return LlamaModel(LlamaConfig(**{**config.to_dict(), "num_hidden_layers": 1, "vocab_size": 8}))


def layer_rows(dtypes: list[str], repeats: int = 3) -> list[str]:
    """CPU seconds of one decoder layer's forward over one call's tokens, per dtype: whether
    bfloat16 is usable on this CPU (it needs AVX512-BF16 or AMX to be fast), when the whole
    model does not fit in memory here. The model's layers times this is its language model's
    share of a call (vision tower not included).
    """
    import statistics

    import torch

    rows = []
    for kind, label, tokens, n_layers in LAYERS:
        for dtype in dtypes:
            torch.manual_seed(0)
            model = _one_layer_model(kind).to(getattr(torch, dtype)).eval()
            hidden = torch.randn(1, tokens, model.config.hidden_size, dtype=getattr(torch, dtype))
            samples = []
            with torch.inference_mode():
                model(inputs_embeds=hidden)  # warm-up
                for _ in range(repeats if tokens > 1 else 10 * repeats):
                    started, cpu = time.perf_counter(), cpu_seconds()
                    model(inputs_embeds=hidden)
                    samples.append((time.perf_counter() - started, cpu_seconds() - cpu))
            wall = statistics.median(sample[0] for sample in samples)
            cpu = statistics.median(sample[1] for sample in samples)
            rows.append(
                f"| {label} | {dtype} | {tokens} | {wall:.2f} | {cpu:.2f} "
                f"| {cpu * n_layers:.0f} ({n_layers} layers) |"
            )
            del model
    return rows


# ---------------------------------------------------------------- the parent: rows and table


def _child(argv: list[str]) -> dict:
    finished = subprocess.run(
        [sys.executable, __file__, *argv], capture_output=True, text=True, check=False
    )
    if finished.returncode != 0:
        return {"error": finished.stderr.strip().splitlines()[-1:] or [f"status {finished}"]}
    return json.loads(finished.stdout.strip().splitlines()[-1])


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _gb(size: float) -> str:
    return f"{size / 2**30:.1f}"


def table_row(row: dict) -> str:
    label = f"{LABELS[row['kind']]} | {row['dtype']} | {row['device']}"
    weights = _gb(row["weights_bytes"])
    if "refused" in row:
        return f"| {label} | {weights} | refused by the memory check: {row['refused']} | | | |"
    if "error" in row:
        return f"| {label} | {weights} | failed: {row['error']} | | | |"
    rate = (
        f"{row['pages_per_s']:.3f} pages/s ({row['s_per_page']:.1f} s, "
        f"{row['cpu_s_per_page']:.1f} CPU s per page), query {row['query_s']:.2f} s"
        if row["kind"] == "colpali"
        else f"{row['s_per_answer']:.1f} s ({row['cpu_s_per_answer']:.1f} CPU s) per answer "
        f"({row['new_tokens']} new tokens, 1 page)"
    )
    return f"| {label} | {weights} | {row['load_s']:.1f} | {_gb(row['peak_rss_bytes'])} | {rate} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("full_size_checkpoints"))
    parser.add_argument("--models", default="colpali,llava", help="colpali, llava")
    parser.add_argument("--dtypes", default="bfloat16", help="bfloat16, float16, float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pages", type=int, default=2, help="pages ColPali embeds per row")
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens per LLaVA answer")
    parser.add_argument("--keep", action="store_true", help="keep the saved checkpoints")
    parser.add_argument(
        "--layers", action="store_true", help="time one decoder layer per dtype instead"
    )
    parser.add_argument("--save", choices=sorted(ARCHITECTURES), help=argparse.SUPPRESS)
    parser.add_argument("--measure", choices=sorted(ARCHITECTURES), help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.save:  # a child: save one architecture, print its path
        print(json.dumps({"path": str(save(args.save, args.workdir))}))
        return
    if args.measure:  # a child: measure one row
        row = measure(
            args.measure, args.workdir / args.measure, args.dtype, args.device, args.pages,
            args.new_tokens,
        )  # fmt: skip
        print(json.dumps(row))
        return
    print(f"load before: {_uptime()}", flush=True)
    if args.layers:
        print("| layer | dtype | tokens | wall s | CPU s | CPU s for all layers |")
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        print("\n".join(layer_rows(args.dtypes.split(","))))
        print(f"load after: {_uptime()}")
        return
    print("| model | dtype | device | weights GB | load s | peak RSS GB | throughput |")
    print("| --- | --- | --- | ---: | ---: | ---: | --- |", flush=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    common = ["--workdir", str(args.workdir), "--device", args.device, "--pages", str(args.pages)]
    common += ["--new-tokens", str(args.new_tokens)]
    for kind in args.models.split(","):
        if not (args.workdir / kind / "config.json").is_file():
            saved = _child(["--save", kind, "--workdir", str(args.workdir)])
            if "error" in saved:
                print(f"| {LABELS[kind]} | could not be saved: {saved['error']} |", flush=True)
                continue
        for dtype in args.dtypes.split(","):
            row = _child([*common, "--measure", kind, "--dtype", dtype])
            row = {"kind": kind, "dtype": dtype, "device": args.device, **row}
            row.setdefault("weights_bytes", 0)
            print(table_row(row), flush=True)
    print(f"load after: {_uptime()}")
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
