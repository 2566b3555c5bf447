"""benchmarks/gpu_kernels.py runs end to end on CPU (Triton's interpreter, tiny sizes)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_kernels.py"


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
def test_cpu_interpreter_run(tmp_path):
    path = tmp_path / "gpu_kernels.json"
    finished = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu-interpret", "--json", str(path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    report = json.loads(path.read_text())
    rows = {(row["kernel"], row["impl"]): row for row in report["rows"]}
    kernels = {"gather+positions", "mean encoder", "residual combine", "codebook update", "hyper logits"}
    assert set(rows) == {(kernel, impl) for kernel in kernels for impl in ("triton", "torch")}
    assert rows["codebook update", "triton"]["check"] == "exact"
    for row in rows.values():
        assert row["time_us"] > 0 and row["bytes"] > 0
        assert row["check"] in ("exact", "reference") or row["check"].startswith("rel ")
    assert report["copy_gbps"] > 0 and "codebook update" in finished.stdout
