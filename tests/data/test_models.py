"""SmolLM2-135M-Instruct materialized from the pinned GGUF as a plain Hugging Face folder."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from z2z_vllm.data import corpus_text, load_tokenizer, tokenizer_dir  # noqa: E402
from z2z_vllm.data.models import base_model_dir  # noqa: E402


@pytest.fixture(scope="module")
def folder():
    return base_model_dir("smollm2-135m")


def test_folder_is_a_plain_llama_checkpoint(folder):
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (576, 30, 49152)
    assert "quantization_config" not in config
    assert (folder / "model.safetensors").stat().st_size > 200e6
    # Our verified tokenizer, not the GGUF loader's (which splits digits differently).
    assert (folder / "tokenizer.json").read_bytes() == (tokenizer_dir("smollm2") / "tokenizer.json").read_bytes()


def test_model_predicts_real_code_well(folder):
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids = load_tokenizer("smollm2").encode(corpus_text("code", split="heldout", max_bytes=2_000)).ids[:128]
    with torch.no_grad():
        loss = model(torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    # A random 49152-way guess is ln(49152) = 10.8; the real model is far better on Python code.
    assert loss < 3.0, loss
    assert math.isfinite(loss)
    assert base_model_dir("smollm2-135m") == folder  # cached: the second call builds nothing


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model"):
        base_model_dir("gpt-5")
