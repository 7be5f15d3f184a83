"""benchmarks/search_gpu.py, the run a GPU session makes, end to end on the CPU device: it
must not first fail on the machine that has the GPU."""

from __future__ import annotations

import re

import search_gpu


def test_the_gpu_benchmark_runs_on_the_cpu_device_and_matches_cpu_scores(capsys):
    search_gpu.main(["--device", "cpu", "--pages", "40", "--queries", "2", "--cpu-pages", "10"])
    out = capsys.readouterr().out

    difference = float(re.search(r"against the CPU's float32: ([0-9.e+-]+)", out).group(1))
    assert difference < 1e-4
    rows = [line for line in out.splitlines() if line.startswith("| ") and "search" not in line]
    assert [row.split(" | ")[1] for row in rows] == ["40", "40", "40", "10"]


def test_unequal_page_lengths_take_the_same_run(capsys):
    search_gpu.main(["--device", "cpu", "--pages", "12", "--queries", "2", "--variable"])
    out = capsys.readouterr().out

    assert "700-770 vectors (ColQwen2)" in out
    assert float(re.search(r"float32: ([0-9.e+-]+)", out).group(1)) < 1e-4
