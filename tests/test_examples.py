"""Every example runs: each in its own process, offline, with the session's tiny checkpoints.

``quickstart.py`` downloads the real checkpoints, so it is only compiled and asked for
``--help``; the others run end to end as a user would run them.
"""

from __future__ import annotations

import os
import py_compile
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RUN_TIMEOUT_S = 180


def run_example(name: str, *args: object, cache: Path) -> subprocess.CompletedProcess:
    """Run ``examples/name`` offline; ``cache`` stands in for ~/.cache."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(cache), "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=env,
        cwd=cache,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result


@pytest.fixture(scope="module")
def checkpoint_dir(tiny_checkpoint) -> Path:
    """The folder holding the session's tiny colpali and llava checkpoints (built once)."""
    tiny_checkpoint("llava")
    return tiny_checkpoint("colpali").parent


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda path: path.name)
def test_example_compiles(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / "compiled.pyc"), doraise=True)


def test_every_example_is_run_here():
    runnable = {path.name for path in EXAMPLES.glob("*.py")} - {"offline_setup.py"}
    source = Path(__file__).read_text()
    assert {name for name in runnable if f'"{name}"' not in source} == set()


@pytest.fixture(scope="module")
def demo(checkpoint_dir, tmp_path_factory):
    """``offline_demo.py`` run once: (its result, its cache folder)."""
    cache = tmp_path_factory.mktemp("demo")
    result = run_example(
        "offline_demo.py", "--workdir", cache / "demo", "--checkpoints", checkpoint_dir,
        cache=cache,
    )  # fmt: skip
    return result, cache


@pytest.mark.slow
def test_offline_demo(demo):
    result, cache = demo
    out = result.stdout
    assert "TINY RANDOM models" in out and "MEANINGLESS" in out
    assert "3 pages added" in out
    assert "answer (random tokens from a random model):" in out
    cited = re.findall(r"^ +sample_report\.pdf, page [123] \(score -?\d+\.\d\d\)$", out, re.M)
    assert len(cited) == 2
    with Image.open(cache / "demo" / "similarity_map.png") as panels:
        assert panels.format == "PNG" and panels.width == 4 * 320
    with Image.open(cache / "demo" / "answer_region.png") as region:
        assert region.size == (1224, 1584)  # the page at the reader's 144 dpi


@pytest.mark.slow
def test_the_commands_the_demo_prints_run_as_printed(demo):
    # Pasted into a shell without the venv activated: they name the venv's script.
    result, cache = demo
    commands = [line.strip() for line in result.stdout.splitlines() if "llama-index-vlm " in line]
    commands = [command for command in commands if not command.startswith("(")]
    assert [command.split()[1] for command in commands] == ["search", "ask", "info"]
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # no venv on the PATH
    for command in commands:
        ran = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, cwd=cache, env=env,
            timeout=RUN_TIMEOUT_S,
        )  # fmt: skip
        assert ran.returncode == 0, (command, ran.stderr[-2000:])


@pytest.mark.slow
def test_query_engine_example(checkpoint_dir, tmp_path):
    result = run_example("query_engine.py", "--checkpoints", checkpoint_dir, cache=tmp_path)
    out = result.stdout
    assert "MEANINGLESS" in out
    for title in (
        "RetrieverQueryEngine, streamed",
        "RetrieverQueryEngine.from_args, async",
        "CitationQueryEngine",
    ):
        assert f"== {title}\nanswer: " in out
    assert len(re.findall(r"^  source: sample_report\.pdf, page [123], -?\d", out, re.M)) == 6


@pytest.mark.slow
def test_similarity_maps_example(checkpoint_dir, tmp_path):
    result = run_example(
        "similarity_maps.py", "revenue 2023", "--checkpoints", checkpoint_dir,
        "--out", tmp_path / "maps", cache=tmp_path,
    )  # fmt: skip
    assert "MEANINGLESS" in result.stdout
    assert "page patch grid 4x4" in result.stdout  # the tiny ColPali's 32 px / 8 px patches
    with Image.open(tmp_path / "maps" / "tokens.png") as panels:
        assert panels.width % 320 == 0
    with Image.open(tmp_path / "maps" / "best_token.png") as best:
        assert best.size == (612, 792)  # the generated letter page


def test_quickstart_uses_the_real_checkpoints(tmp_path):
    from llama_index_vlm.encoder import DEFAULT_ENCODER
    from llama_index_vlm.vlm import DEFAULT_VLM

    source = (EXAMPLES / "quickstart.py").read_text()
    assert "make_tiny_checkpoint" not in source and "offline_setup" not in source
    result = run_example("quickstart.py", "--help", cache=tmp_path)
    assert DEFAULT_ENCODER in result.stdout and DEFAULT_VLM in result.stdout


def test_make_demo_runs_the_offline_demo():
    makefile = (EXAMPLES.parent / "Makefile").read_text()
    demo_recipe = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "examples/offline_demo.py" in demo_recipe


def test_a_real_example_offline_says_in_one_line_what_it_needs(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "similarity_maps.py"), "revenue", "--real"],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "--real needs vidore/colpali-v1.3-hf from the Hugging Face hub: run "
        "`hf download vidore/colpali-v1.3-hf` where the hub is reachable"
    )
