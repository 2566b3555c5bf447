"""The serving benchmark runs end to end on tiny models (a tiny random Llama served plain against
the tiny z2z export), offline and against two OpenAI servers, and writes complete, sane JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.checkpoint_helpers import tiny_base_folder
from tests.vllm.helpers import repeated_words

pytest.importorskip("vllm")
pytest.importorskip("aiohttp")

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_bench.py"
FIGURES = (
    "prompt_tokens", "output_tokens", "output_bytes", "requests_per_s", "prompt_bytes_per_s",
    "generated_bytes_per_s", "ttft_ms", "tpot_ms", "ms_per_output_byte", "base_tokens_per_emitted",
)  # fmt: skip
RATIOS = (
    "prompt_tokens", "output_bytes", "requests_per_s", "prompt_bytes_per_s", "generated_bytes_per_s",
    "ttft_ms", "tpot_ms", "ms_per_output_byte",
)  # fmt: skip
MAX_TOKENS = 6


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory) -> Path:
    return tiny_base_folder(tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    """Texts in the tiny word vocabulary; repeats, so that the z2z tokenizer compresses them."""
    path = tmp_path_factory.mktemp("prompts") / "words.json"
    texts = [repeated_words([1, 2, 3, 4], 6), repeated_words([5, 6, 7], 8), repeated_words([8, 9], 10)]
    path.write_text(json.dumps({"words": texts}))
    return path


def run_bench(tmp_path, plain_dir, tiny_export, prompts_file, *args: str) -> tuple[dict, str]:
    path = tmp_path / "serve.json"
    finished = subprocess.run(
        [sys.executable, str(BENCHMARK), "--plain", str(plain_dir), "--z2z", str(tiny_export),
         "--prompts", str(prompts_file), "--dtype", "float32", "--max-model-len", "256",
         "--max-tokens", str(MAX_TOKENS), "--repeats", "1", "--json", str(path), *args],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-5000:]
    return json.loads(path.read_text()), finished.stdout


def check_report(report: dict, mode: str, parallel: list[int]) -> None:
    assert report["conditions"]["modes"] == [mode]
    assert report["conditions"]["domains"] == ["words"]
    rows = report["rows"]
    assert [(row["mode"], row["parallel"], row["model"]) for row in rows] == [
        (mode, p, model) for p in parallel for model in ("plain", "z2z")
    ]
    for row in rows:
        assert row["domain"] == "words" and row["runs"] == 1 and row["requests"] >= 1
        assert all(row[name] > 0 for name in FIGURES), row
        assert isinstance(row["sample_output"], str)
        assert row["output_tokens"] == MAX_TOKENS  # ignore_eos: every request runs its full length
        assert row["base_tokens_per_emitted"] == 1 if row["model"] == "plain" else row["base_tokens_per_emitted"] >= 1
    by_key = {(row["parallel"], row["model"]): row for row in rows}
    assert [ratio["parallel"] for ratio in report["ratios"]] == parallel
    for ratio in report["ratios"]:
        z2z, plain = by_key[(ratio["parallel"], "z2z")], by_key[(ratio["parallel"], "plain")]
        for name in RATIOS:
            assert ratio[name] == pytest.approx(z2z[name] / plain[name])
        assert ratio["prompt_tokens"] < 1  # the z2z tokenizer compressed the same text


def test_offline(tmp_path, plain_dir, tiny_export, prompts_file):
    report, stdout = run_bench(
        tmp_path, plain_dir, tiny_export, prompts_file, "--modes", "offline", "--batch-sizes", "1", "3"
    )
    check_report(report, "offline", [1, 3])
    assert "offline LLM.generate" in stdout and "z2z/plain" in stdout


def test_server(tmp_path, plain_dir, tiny_export, prompts_file):
    report, stdout = run_bench(
        tmp_path, plain_dir, tiny_export, prompts_file,
        "--modes", "server", "--concurrency", "2", "--requests-per-client", "2",
    )  # fmt: skip
    check_report(report, "server", [2])
    assert report["rows"][0]["requests"] == 4
    assert "OpenAI server" in stdout and "z2z/plain" in stdout
