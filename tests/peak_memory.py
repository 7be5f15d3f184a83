"""Run pieces of Python in a fresh process and measure what each cost: peak memory and time.

Plain functions, no pytest, so ``benchmarks/hostile.py`` measures the same way as the tests.
The child runs ``setup`` (imports, loading a model: not counted), then each step of ``steps``
in turn: before a step it resets the kernel's high-water mark of its resident memory, and the
step's peak is the high-water mark after it, over the resident memory before it. A step may
set ``result`` to any JSON-able value, which comes back with its measurement. The reader's
render workers are other processes, capped by ``RLIMIT_AS``: the largest peak of the children
reaped so far is reported too (a child's peak includes what it shared with this process when
it was forked, so it means something only for a light parent).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TESTS = Path(__file__).resolve().parent

_PRELUDE = """
import json, os, resource, sys, time
sys.path.insert(0, {tests!r})

def _status(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return 0.0

def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current VmRSS
        return True
    except OSError:
        return False

result = None
"""

_STEP = """
result = None
baseline = _status("VmRSS:")
resettable = _reset_peak()
started = time.perf_counter()
{code}
print("@@" + json.dumps({{
    "step": {name!r},
    "baseline_mb": baseline,
    "peak_mb": _status("VmHWM:") if resettable else resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024,
    "seconds": time.perf_counter() - started,
    "children_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    "result": result,
}}), flush=True)
"""


@dataclass(frozen=True)
class Measured:
    """What one step cost: resident memory before it and at its peak (MB), its duration, the
    ``result`` it set, and the largest peak of the child processes reaped so far (MB).
    """

    baseline_mb: float
    peak_mb: float
    seconds: float
    result: Any
    children_peak_mb: float = 0.0

    @property
    def growth_mb(self) -> float:
        """How far the step raised the process's resident memory (MB)."""
        return self.peak_mb - self.baseline_mb


def measure(setup: str, steps: dict[str, str], *, timeout: float = 600) -> dict[str, Measured]:
    """Run ``setup`` then each of ``steps`` (name -> Python source) in one fresh interpreter,
    and measure each step.

    Raises:
        RuntimeError: the child failed (its stderr is in the message).
    """
    code = _PRELUDE.format(tests=str(_TESTS)) + textwrap.dedent(setup)
    for name, step in steps.items():
        code += _STEP.format(name=name, code=textwrap.dedent(step))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env
    )
    measured = {}
    for line in done.stdout.splitlines():
        if line.startswith("@@"):
            fields = json.loads(line[2:])
            name = fields.pop("step")
            measured[name] = Measured(**fields)
    if done.returncode != 0 or set(measured) != set(steps):
        raise RuntimeError(f"measured child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return measured
