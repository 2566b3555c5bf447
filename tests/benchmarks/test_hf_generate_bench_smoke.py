"""The HF generate benchmark runs end to end with ``--tiny`` and writes complete, sane JSON."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _available() -> bool:
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        return False
    try:
        from z2z_vllm.data import corpus_documents, tokenizer_dir

        tokenizer_dir("smollm2")
        corpus_documents("code", split="heldout", max_bytes=1000)
    except Exception:  # any missing source: nothing here to test then
        return False
    return True


pytestmark = pytest.mark.skipif(not _available(), reason="model extra or data sources missing")


def test_hf_generate_bench_tiny(tmp_path):
    path = tmp_path / "generate.json"
    finished = subprocess.run(
        [sys.executable, str(BENCHMARKS / "hf_generate_bench.py"), "--tiny", "--json", str(path),
         "--batch-sizes", "1", "2", "--new-tokens", "3", "--repeats", "1", "--threads", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert finished.returncode == 0, finished.stderr
    report = json.loads(path.read_text())
    assert report["conditions"]["model"] == "tiny random Llama"
    assert [row["batch_size"] for row in report["rows"]] == [1, 2]
    for row in report["rows"]:
        assert row["z2z_ms_per_step"] > 0 and row["base_ms_per_step"] > 0
        assert row["base_tokens_per_emitted"] >= 1
        assert row["prompt_z2z_tokens"] < row["prompt_base_tokens"]
        assert row["z2z_text_bytes_per_s"] > 0 and row["base_text_bytes_per_s"] > 0
    assert "overhead" in finished.stdout and "target:" in finished.stdout
