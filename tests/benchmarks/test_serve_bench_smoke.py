"""The serving benchmark runs end to end on tiny models (a tiny random Llama served plain against
the tiny z2z export), offline and against two OpenAI servers, and writes complete, sane JSON with
each ratio's compression bound; its workloads and bounds hold on their own too."""

from __future__ import annotations

import importlib.util
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
# Each bound from the z2z and plain rows, spelled out here: rates gain what compression saves,
# times lose it.
BOUNDS = {
    "prompt_bytes_per_s": lambda z2z, plain: plain["prompt_tokens"] / z2z["prompt_tokens"],
    "ttft_ms": lambda z2z, plain: z2z["prompt_tokens"] / plain["prompt_tokens"],
    "generated_bytes_per_s": lambda z2z, plain: z2z["base_tokens_per_emitted"],
    "ms_per_output_byte": lambda z2z, plain: 1 / z2z["base_tokens_per_emitted"],
}
MAX_TOKENS = 6


@pytest.fixture
def serve_bench(monkeypatch):
    """The benchmark as a module (its sibling ``machine`` on the path, as when run as a script)."""
    monkeypatch.syspath_prepend(str(BENCHMARK.parent))
    spec = importlib.util.spec_from_file_location("serve_bench", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "serve_bench", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


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


def bound_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.split()[:1] == ["bound"]]


def check_report(report: dict, mode: str, parallel: list[int], *, engines=("plain", "z2z"),
                 sampling=("greedy",)) -> None:
    assert report["conditions"]["modes"] == [mode]
    assert report["conditions"]["domains"] == ["words"]
    rows = report["rows"]
    assert [(row["mode"], row["sampling"], row["parallel"], row["model"]) for row in rows] == [
        (mode, s, p, engine) for s in sampling for p in parallel for engine in engines
    ]
    for row in rows:
        assert row["domain"] == "words" and row["runs"] == 1 and row["requests"] >= 1
        assert all(row[name] > 0 for name in FIGURES), row
        assert isinstance(row["sample_output"], str)
        assert row["output_tokens"] == MAX_TOKENS  # ignore_eos: every request runs its full length
        z2z_model = row["model"].startswith("z2z")
        assert row["base_tokens_per_emitted"] == 1 if not z2z_model else row["base_tokens_per_emitted"] >= 1
        assert row["equal_text_bytes_per_s"] is None  # --prompts texts have no reference continuation
        if row["model"].endswith("+ngram") and mode == "offline":  # None when nothing was drafted
            assert row["acceptance"] is None or 0 <= row["acceptance"] <= 1
        else:
            assert row["acceptance"] is None
    by_key = {(row["sampling"], row["parallel"], row["model"]): row for row in rows}
    comparisons = {r["comparison"] for r in report["ratios"]}
    pairs = [("z2z", "plain"), ("plain+ngram", "plain"), ("z2z", "plain+ngram"), ("z2z+ngram", "plain+ngram"), ("z2z+ngram", "z2z")]
    assert comparisons == {f"{a}/{b}" for a, b in pairs if a in engines and b in engines}
    z2z_plain = [ratio for ratio in report["ratios"] if ratio["comparison"] == "z2z/plain"]
    assert [(ratio["sampling"], ratio["parallel"]) for ratio in z2z_plain] == [(s, p) for s in sampling for p in parallel]
    for ratio in report["ratios"]:
        top, bottom = ratio["comparison"].split("/")
        a, b = by_key[(ratio["sampling"], ratio["parallel"], top)], by_key[(ratio["sampling"], ratio["parallel"], bottom)]
        for name in RATIOS:
            assert ratio[name] == pytest.approx(a[name] / b[name])
    for ratio in z2z_plain:
        z2z, plain = by_key[(ratio["sampling"], ratio["parallel"], "z2z")], by_key[(ratio["sampling"], ratio["parallel"], "plain")]
        for name in RATIOS:
            assert ratio[name] == pytest.approx(z2z[name] / plain[name])
        assert ratio["prompt_tokens"] < 1  # the z2z tokenizer compressed the same text
        assert {key for key in ratio if key.startswith("bound_")} == {f"bound_{name}" for name in BOUNDS}
        for name, bound in BOUNDS.items():
            assert ratio[f"bound_{name}"] == pytest.approx(bound(z2z, plain))
        # Compression can only help: rates may rise, times may fall.
        assert ratio["bound_prompt_bytes_per_s"] > 1 and ratio["bound_ttft_ms"] < 1
        assert ratio["bound_generated_bytes_per_s"] >= 1 and ratio["bound_ms_per_output_byte"] <= 1


def test_offline(tmp_path, plain_dir, tiny_export, prompts_file):
    """The four engines (plain and z2z, each with and without n-gram speculation) in one process
    (speculative ones started last: see serve_bench.creation_order), greedy and sampled."""
    engines = ("plain", "plain+ngram", "z2z", "z2z+ngram")
    report, stdout = run_bench(
        tmp_path, plain_dir, tiny_export, prompts_file, "--modes", "offline", "--batch-sizes", "1", "3",
        "--engines", *engines, "--sampling", "greedy", "sampled",
    )  # fmt: skip
    check_report(report, "offline", [1, 3], engines=engines, sampling=("greedy", "sampled"))
    assert "offline LLM.generate" in stdout and "z2z+ngram/plain+ngram" in stdout and bound_lines(stdout)


def test_server(tmp_path, plain_dir, tiny_export, prompts_file):
    report, stdout = run_bench(
        tmp_path, plain_dir, tiny_export, prompts_file,
        "--modes", "server", "--concurrency", "2", "--requests-per-client", "2",
        "--engines", "plain", "z2z", "--sampling", "greedy",
    )  # fmt: skip
    check_report(report, "server", [2])
    assert report["rows"][0]["requests"] == 4
    assert "OpenAI server" in stdout and "z2z/plain" in stdout and bound_lines(stdout)


def test_bound_directions(serve_bench):
    """Made-up rows: z2z prompts 20 % shorter, 1.5 base tokens per emitted token."""

    def row(model: str, prompt_tokens: float, base_per_emitted: float):
        figures = {name: 1.0 for name in RATIOS} | {"output_tokens": 1.0}
        figures |= {"prompt_tokens": prompt_tokens, "base_tokens_per_emitted": base_per_emitted}
        return serve_bench.Row(
            mode="offline", domain="code", parallel=1, model=model, requests=1, runs=1, sample_output="", **figures
        )

    rows = [row("plain", 100, 1), row("z2z", 80, 1.5)]
    (ratio,) = serve_bench.ratios(rows)
    assert ratio["comparison"] == "z2z/plain"
    assert ratio["bound_prompt_bytes_per_s"] == pytest.approx(1.25)
    assert ratio["bound_ttft_ms"] == pytest.approx(0.8)
    assert ratio["bound_generated_bytes_per_s"] == pytest.approx(1.5)
    assert ratio["bound_ms_per_output_byte"] == pytest.approx(1 / 1.5)
    table = serve_bench.format_table("offline", rows, [ratio]).splitlines()
    assert table[-2].split()[0] == "z2z/plain" and table[-1].split() == ["bound", "1.250", "1.500", "0.800", "0.667"]


def _corpora_available() -> bool:
    from z2z_vllm.data import DataSourceMissing, corpus_documents, load_tokenizer

    try:
        load_tokenizer("smollm2")
        for domain in ("code", "prose", "structured"):
            corpus_documents(domain, split="heldout", max_bytes=1000)
    except DataSourceMissing:
        return False
    return True


@pytest.mark.skipif(not _corpora_available(), reason="data sources missing (bash scripts/install_data_sources.sh)")
def test_workloads(serve_bench):
    """Code, prose and the context-heavy structured domain (longer prompts), in quick runs too; the
    longest prompt and its output fit the default model length in plain SmolLM2 tokens."""
    from z2z_vllm.data import load_tokenizer

    args, knobs = serve_bench.parse_args([])
    assert knobs.domains == ("code", "prose", "structured")
    knobs, prompts = serve_bench.load_prompts(args, knobs)
    assert {domain: {len(text) for text in texts} for domain, texts in prompts.items()} == {
        "code": {1024}, "prose": {1024}, "structured": {2048},
    }  # fmt: skip
    assert prompts["structured"][0].lstrip().startswith("{")  # botocore's JSON
    tokenizer = load_tokenizer("smollm2")
    longest = max(len(tokenizer.encode(text).ids) for text in prompts["structured"])
    assert longest + knobs.max_tokens <= args.max_model_len

    assert "structured" in serve_bench.parse_args(["--quick"])[1].domains
    _, knobs = serve_bench.parse_args(["--domains", "structured", "--prompt-chars", "300"])
    assert knobs.domains == ("structured",) and knobs.chars("structured") == 300


def test_engines_start_with_speculative_ones_last(serve_bench):
    assert serve_bench.creation_order(["z2z+ngram", "plain+ngram", "z2z", "plain"]) == [
        "z2z", "plain", "z2z+ngram", "plain+ngram",
    ]  # fmt: skip


def test_equal_text_figure_prices_the_reference_in_each_engines_tokens(serve_bench):
    reference = serve_bench.Reference(bytes=400, base_tokens=100, z2z_tokens=60)
    result = serve_bench.RequestResult(prompt_bytes=10, output_text="x", prompt_ids=[1], output_ids=[2] * 11,
                                       ttft_s=0.1, decode_s=1.0, reference=reference)  # TPOT 0.1 s
    run = serve_bench.Run(wall_s=2.0, requests=[result])
    assert serve_bench._run_figures(run, None, "plain")["equal_text_bytes_per_s"] == pytest.approx(400 / 10.0)
    assert serve_bench._run_figures(run, None, "plain+ngram")["equal_text_bytes_per_s"] == pytest.approx(400 / 10.0)
    figures = serve_bench._run_figures(run, None, "z2z")  # no codec: base/emitted is not this test's
    assert figures["equal_text_bytes_per_s"] == pytest.approx(400 / 6.0)
