"""scripts/gpu_check.sh, the one command for a lent GPU, dry-run on CPU: its plan names files
that exist and its gpu-marked tests collect (they run, and the build and benchmark with them, only
on a GPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


def test_dry_run_checks_the_plan():
    finished = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"], env={**os.environ, "PYTHON": sys.executable},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "Z2Z_BUILD_CUDA=1" in finished.stdout and "benchmarks/gpu_kernels.py" in finished.stdout
    assert "tests/gpu" in finished.stdout and "dry run ok" in finished.stdout
