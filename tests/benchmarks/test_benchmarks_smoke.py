"""Both benchmark scripts run end to end in ``--quick`` mode and write complete, sane JSON."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
CODEC_OPS = {
    "encode",
    "encode numpy int32",
    "decode",
    "decode numpy int32",
    "encode_batch 32 x1 thread",
    "encode_batch 32 x2 threads",
    "decode_batch 32 x1 thread",
    "decode_batch 32 x2 threads",
    "encode_batch numpy 32 x1 thread",
    "encode_batch numpy 32 x2 threads",
    "decode_batch numpy 32 x1 thread",
    "decode_batch numpy 32 x2 threads",
    "feed 1 id/step",
}


def _data_available() -> bool:
    try:
        from z2z_vllm.data import corpus_documents, load_tokenizer

        load_tokenizer("smollm2")
        corpus_documents("code", split="heldout", max_bytes=1000)
    except Exception:  # any missing source: the scripts' own fallbacks are not what is tested here
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _data_available(), reason="data sources missing (bash scripts/install_data_sources.sh)"
)


def run_script(name: str, *args: str) -> str:
    finished = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), "--quick", *args], capture_output=True, text=True, timeout=120
    )
    assert finished.returncode == 0, finished.stderr
    return finished.stdout


def test_codec_bench_quick(tmp_path):
    path = tmp_path / "codec.json"
    stdout = run_script("codec_bench.py", "--json", str(path))
    report = json.loads(path.read_text())

    assert report["conditions"]["tokenizer"] == "smollm2"
    assert report["conditions"]["corpus_bytes"] > 0
    rows = report["rows"]
    assert {row["op"] for row in rows} == CODEC_OPS
    assert {(row["codebook_size"], row["max_subtokens"]) for row in rows} == {(1024, 4), (2048, 8)}
    for row in rows:
        assert row["ours_tokens_per_s"] > 0 and row["anchor_tokens_per_s"] > 0 and row["ours_over_anchor"] > 0
        assert len(row["ours_s"]) >= 3 and len(row["anchor_s"]) >= 3
        if row["op"].endswith("x2 threads"):
            assert row["threads_2_over_1"] > 0
        if row["op"].startswith("feed"):
            assert row["ours_us_per_id"] > 0 and row["anchor_us_per_id"] > 0
    assert all(0 < ratio < 1 for ratio in report["compressed_over_base"].values())
    assert "ours/anchor" in stdout and "targets:" in stdout


def test_compression_report_quick(tmp_path):
    json_path, png_path = tmp_path / "compression.json", tmp_path / "compression.png"
    with_png = importlib.util.find_spec("matplotlib") is not None  # the `bench` extra
    stdout = run_script("compression_report.py", "--json", str(json_path), *(["--png", str(png_path)] * with_png))
    report = json.loads(json_path.read_text())

    cells = report["cells"]
    assert {(cell["tokenizer"], cell["domain"]) for cell in cells} == {
        (tokenizer, domain)
        for tokenizer in ("llama3", "qwen2.5", "gpt2", "smollm2")
        for domain in ("code", "prose", "math", "multilingual", "structured", "biomedical")
    }
    for cell in cells:
        assert cell["skipped"] is None
        assert cell["bytes"] > 0 and cell["base_tokens"] > 0 and cell["bytes_per_base_token"] > 0
        assert {(c["max_subtokens"], c["codebook_size"]) for c in cell["configs"]} == {
            (3, 1024), (3, 2048), (4, 1024), (4, 2048)
        }  # fmt: skip
        for config in cell["configs"]:
            assert 0 < config["reduction_pct"] < 100
            assert config["bytes_per_z2z_token"] > cell["bytes_per_base_token"]
    assert png_path.exists() == with_png
    assert "paper Table 9" in stdout
