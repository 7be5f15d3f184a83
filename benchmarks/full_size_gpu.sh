#!/usr/bin/env bash
# The full-size GPU rows of benchmarks/RESULTS.md in one run: ColPali and ColQwen2 encoding in
# bfloat16, then LLaVA-1.5-7B, Qwen2.5-VL-7B and PaliGemma-3B-448 answering in bfloat16 and
# 4-bit (random weights, saved and loaded through from_pretrained as released checkpoints are).
# About 8 minutes on one H100/H200-class GPU: each 7B model is built on the GPU, saved to /tmp
# (15-17 GB) and loaded twice; fewer pages and repeats than the CPU defaults keep it short.
#
# Run from the repository root on a machine with a CUDA torch. The package's other
# dependencies must be importable (pip install -e '.[quantization]' where pip reaches PyPI;
# elsewhere carry wheels of llama-index-core, lancedb, pypdfium2, num2words, bitsandbytes,
# accelerate (4-bit weights load with a device_map) and a transformers >= 5.24, installed with
# --no-deps into a folder on PYTHONPATH).
#
#   bash benchmarks/full_size_gpu.sh | tee full_size_gpu.log
set -euo pipefail
cd "$(dirname "$0")"
export PYTHONPATH="..:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
PYTHON="${PYTHON:-python3}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PYTHON" encode.py --full --models colpali,colqwen2 --pages 32 --batch-sizes 1,8
"$PYTHON" generate.py --full --models llava-1.5-7b,qwen2.5-vl-7b,paligemma-3b-448 \
    --variants bfloat16,4bit --repeats 3 --new-tokens 64
