"""tests/vllm/conftest.py: in CI, a vLLM that cannot be imported fails the run instead of
skipping every plugin test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _plugin_tests_without_vllm(tmp_path: Path, ci: str) -> subprocess.CompletedProcess:
    stub = tmp_path / "vllm"  # found before the installed vLLM: imports as if vLLM were missing
    stub.mkdir(exist_ok=True)
    (stub / "__init__.py").write_text("raise ModuleNotFoundError('stub: no vLLM here', name='vllm')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}", "CI": ci}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/vllm/test_tokenizer.py"]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_ci_run_fails_when_vllm_cannot_be_imported(tmp_path):
    result = _plugin_tests_without_vllm(tmp_path, ci="true")
    assert result.returncode != 0
    assert "CI=true but vLLM cannot be imported (stub: no vLLM here)" in result.stdout + result.stderr


def test_plugin_tests_skip_without_vllm_outside_ci(tmp_path):
    result = _plugin_tests_without_vllm(tmp_path, ci="")
    assert "could not import 'vllm'" in result.stdout and "1 skipped" in result.stdout
