"""Checkpoints of zip2zip models: our training format, and the servable export for vLLM.

    from z2z_vllm.training.checkpoints import save_checkpoint, load_checkpoint, export_for_serving

    save_checkpoint(model, "runs/ckpt-500", tokenizer=tok)        # during / after training
    model = load_checkpoint("runs/ckpt-500")                       # Zip2ZipForCausalLM (LoRA unmerged)
    export_for_serving("runs/ckpt-500", "models/z2z-smollm2")     # or: z2z export SRC DST
    model = load_for_inference("models/z2z-smollm2")               # HF-level check of an export

Training checkpoint (``save_checkpoint``; also what ``z2z import-reference`` writes)
------------------------------------------------------------------------------------
One folder::

    z2z_config.json             Zip2ZipConfig (``base_model``: HF name or path of the base)
    z2z_encoders.safetensors    hyper weights: input_encoder.*, output_encoder.* (absent when
                                tied), reconstruction.* (absent when reconstruction_weight == 0)
    adapter_config.json         optional PEFT adapter over the base (LoRA), as PEFT saves it
    adapter_model.safetensors
    config.json, model.safetensors   optional full base weights (then ``base_model`` is null and
                                the folder is its own base)
    tokenizer files             optional (export needs them here or in the base folder)

A folder written by ``Zip2ZipForCausalLM.save_pretrained`` alone is a valid checkpoint whose base
comes from ``base_model`` in its config, or from the ``base_model=`` argument (``--base``).

Servable export (``export_for_serving``; read by the vLLM plugin)
------------------------------------------------------------------
::

    config.json                 the base model's HF config, changed as below
    model.safetensors           base weights with the LoRA merged, HF names (may be sharded, with
                                model.safetensors.index.json)
    z2z_encoders.safetensors    input_encoder.*, output_encoder.* (absent when tied); no
                                reconstruction head (serving does not use it)
    generation_config.json      the base model's
    tokenizer files             the base tokenizer (the plugin wraps it with the codec)

``config.json`` for a Llama base (SmolLM2-135M: V = 49152, C = 1024, M = 4)::

    {
      "architectures": ["Zip2ZipLlamaForCausalLM"],   # "Zip2Zip" + the base architecture
      "model_type": "llama",                          # unchanged: AutoConfig still parses it
      "hidden_size": 576, ...,                        # every other base key unchanged
      "vocab_size": 50176,                            # V + C: the width the sampler must see
      "z2z_base_vocab_size": 49152,                   # rows of embed_tokens / lm_head in the
                                                      # weights (>= V; e.g. Qwen2.5 pads its table)
      "z2z": {                                        # Zip2ZipConfig.to_dict()
        "format_version": 1,
        "base_architecture": "LlamaForCausalLM",      # the class to build under the wrapper
        "base_model": null,                           # weights are in this folder
        "initial_vocab_size": 49152,                  # V: base ids 0..V-1, hyper ids V..V+C-1
        "max_codebook_size": 1024,                    # C
        "max_subtokens": 4,                           # M
        "disabled_ids": [0, 1, 2, ...],               # never merged (specials, digits if protected)
        "protect_digits": false,
        "pad_token_id": 2,                            # codec pad id (also disabled) or null
        "input_encoder": {"kind": "transformer", "num_layers": 1, "num_heads": 9,
                          "hidden_size": 576, "intermediate_size": 2304,
                          "positions": "learned", "pool_mask_pads": true,
                          "pad_embedding_id": null},
        "output_encoder": {...same keys...} or null,  # null when tie_encoders
        "tie_encoders": false,
        "reconstruction_weight": 0.0                  # the export carries no reconstruction head
      }
    }

Encoder sizes are always resolved (no nulls in ``num_heads`` / ``hidden_size`` /
``intermediate_size``). ``Zip2ZipConfig.load(export_dir)`` reads the ``"z2z"`` block. Hyper
weights keep their own file and prefixes, which never collide with the base's (``model.*``,
``lm_head.*``): vLLM's default loader passes them to ``load_weights`` when the base weights are one
unsharded file, and leaves them out when an index names the shards, so the plugin should read
``z2z_encoders.safetensors`` itself and skip those prefixes in the base weight stream.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from z2z_vllm.modeling import WEIGHTS_FILE, Zip2ZipConfig, Zip2ZipForCausalLM
from z2z_vllm.modeling.config import (
    BASE_VOCAB_SIZE_KEY,
    CONFIG_FILE,
    HF_CONFIG_FILE,
    HF_CONFIG_KEY,
    serving_architecture,
)

__all__ = [
    "ADAPTER_CONFIG_FILE",
    "BASE_VOCAB_SIZE_KEY",
    "export_for_serving",
    "is_export",
    "load_checkpoint",
    "load_for_inference",
    "pack_weights",
    "save_checkpoint",
    "serving_architecture",
]

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
_BASE_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def is_export(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` is a servable export (a ``"z2z"`` block in ``config.json``)."""
    hf_config = Path(directory) / HF_CONFIG_FILE
    return hf_config.is_file() and HF_CONFIG_KEY in json.loads(hf_config.read_text())


def _has_base_weights(directory: Path) -> bool:
    return (directory / HF_CONFIG_FILE).is_file() and any((directory / f).is_file() for f in _BASE_WEIGHT_FILES)


def _has_tokenizer(directory: Path) -> bool:
    return any((directory / f).is_file() for f in _TOKENIZER_FILES)


def _is_peft(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def dtype_kwargs(dtype: torch.dtype | str | None) -> dict[str, Any]:
    """``from_pretrained`` arguments for ``dtype`` (a torch dtype or its name, e.g. "bfloat16")."""
    if dtype is None:
        return {}
    return {"dtype": getattr(torch, dtype) if isinstance(dtype, str) else dtype}


def save_checkpoint(
    model: Zip2ZipForCausalLM,
    directory: str | os.PathLike,
    *,
    tokenizer: Any = None,
    include_base_weights: bool = False,
) -> Path:
    """Writes ``model`` as a training checkpoint (module docstring): hyper weights and config, the
    PEFT adapter when the base is PEFT-wrapped, the tokenizer when given, and with
    ``include_base_weights`` the full base weights (the folder becomes its own base). Without
    them the base is the config's ``base_model`` (or ``base_model=`` when loading)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    if _is_peft(model.base_model):
        if include_base_weights:
            raise ValueError("include_base_weights with a PEFT base: merge the adapter first")
        model.base_model.save_pretrained(str(directory))
    elif include_base_weights:
        model.base_model.save_pretrained(str(directory))
        model.config.replace(base_model=None).save(directory)  # the weights are here now
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    return directory


def _resolve_base(
    directory: Path, config: Zip2ZipConfig, base_model: nn.Module | str | os.PathLike | None, dtype: Any
) -> nn.Module:
    if isinstance(base_model, nn.Module):
        return base_model
    if base_model is None:
        if _has_base_weights(directory):
            base_model = directory
        elif config.base_model is not None:
            base_model = config.base_model
        else:
            raise ValueError(f"{directory} names no base model and holds no base weights: pass base_model=")
    from transformers import AutoModelForCausalLM

    from z2z_vllm.data.models import MODEL_NAMES, base_model_dir

    if base_model in MODEL_NAMES:  # a model this project builds offline, e.g. "smollm2-135m"
        base_model = base_model_dir(base_model)
    return AutoModelForCausalLM.from_pretrained(str(base_model), **dtype_kwargs(dtype))


def load_checkpoint(
    directory: str | os.PathLike,
    *,
    base_model: nn.Module | str | os.PathLike | None = None,
    dtype: torch.dtype | str | None = None,
) -> Zip2ZipForCausalLM:
    """Loads a training checkpoint (or a servable export) as a :class:`Zip2ZipForCausalLM`.

    The base is ``base_model`` (a model, name or path) when given, else the weights in the folder,
    else the config's ``base_model``. A PEFT adapter in the folder is applied, unmerged.
    """
    directory = Path(directory)
    if is_export(directory) and not (directory / CONFIG_FILE).is_file():
        return load_for_inference(directory, dtype=dtype)
    config = Zip2ZipConfig.load(directory)
    base = _resolve_base(directory, config, base_model, dtype)
    if (directory / ADAPTER_CONFIG_FILE).is_file():
        from peft import PeftModel

        base = PeftModel.from_pretrained(base, str(directory))
    model = Zip2ZipForCausalLM(base, config)
    from safetensors.torch import load_file

    model.load_hyper_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    return model.eval()


def _load_tokenizer(directory: Path, config: Zip2ZipConfig, base_model: Any) -> Any:
    """The tokenizer saved with the checkpoint, else the base model's."""
    from transformers import AutoTokenizer

    candidates = [directory]
    for base in (base_model, config.base_model):
        if isinstance(base, str | os.PathLike):
            candidates.append(base)
    for candidate in candidates:
        if not Path(candidate).is_dir() or _has_tokenizer(Path(candidate)):
            try:
                return AutoTokenizer.from_pretrained(str(candidate))
            except OSError:  # a hub name that is neither cached nor reachable
                continue
    raise FileNotFoundError(
        f"no tokenizer for {directory}: save one with the checkpoint or point base_model at a folder with one"
    )


def export_for_serving(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    base_model: nn.Module | str | os.PathLike | None = None,
    dtype: torch.dtype | str | None = None,
) -> Path:
    """Writes the vLLM-servable folder ``dst`` (module docstring) from the checkpoint ``src``.

    ``base_model`` overrides the checkpoint's base (a folder made by ``save_pretrained`` next to
    a base folder); ``dtype`` (e.g. ``torch.bfloat16``) is the dtype the weights are loaded and
    written in (default: the base checkpoint's). ``dst`` must not exist or be empty.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"export destination {dst} is not empty")
    model = load_checkpoint(src, base_model=base_model, dtype=dtype)
    tokenizer = _load_tokenizer(src, model.config, base_model)
    hyper_weights = {
        name: tensor.contiguous()
        for name, tensor in model.hyper_state_dict().items()
        if not name.startswith("reconstruction.")
    }
    base = model.base_model.merge_and_unload() if _is_peft(model.base_model) else model.base_model
    base_architecture = type(base).__name__
    config = model.config.replace(base_model=None, base_architecture=base_architecture, reconstruction_weight=0.0)

    dst.mkdir(parents=True, exist_ok=True)
    base.save_pretrained(str(dst))
    from safetensors.torch import save_file

    save_file(hyper_weights, str(dst / WEIGHTS_FILE), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(dst))
    hf_config = json.loads((dst / HF_CONFIG_FILE).read_text())
    hf_config.update(
        {
            "architectures": [serving_architecture(base_architecture)],
            "vocab_size": config.vocab_size,
            BASE_VOCAB_SIZE_KEY: base.get_input_embeddings().num_embeddings,
            HF_CONFIG_KEY: config.to_dict(),
        }
    )
    (dst / HF_CONFIG_FILE).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    return dst


def load_for_inference(directory: str | os.PathLike, *, dtype: torch.dtype | str | None = None) -> Zip2ZipForCausalLM:
    """Loads a servable export back into a :class:`Zip2ZipForCausalLM` (Hugging Face level)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    directory = Path(directory)
    hf_config = json.loads((directory / HF_CONFIG_FILE).read_text())
    config = Zip2ZipConfig.from_dict(hf_config.pop(HF_CONFIG_KEY))
    base_vocab_size = hf_config.pop(BASE_VOCAB_SIZE_KEY)
    hf_config.update(vocab_size=base_vocab_size, architectures=[config.base_architecture])
    base_config = AutoConfig.for_model(**hf_config)
    base = AutoModelForCausalLM.from_pretrained(str(directory), config=base_config, **dtype_kwargs(dtype))
    model = Zip2ZipForCausalLM(base, config)
    model.load_hyper_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    return model.eval()


def pack_weights(
    src: str | os.PathLike, dst: str | os.PathLike, *, base_model: str, dtype: torch.dtype | str = torch.bfloat16
) -> Path:
    """Writes the shippable part of the training checkpoint ``src`` to ``dst``: the LoRA adapter
    and the hyper-encoders cast to ``dtype``, without the base weights, the reconstruction head
    (training only) or the optimizer state; ``base_model`` (a name, e.g. "smollm2-135m") replaces
    the local path the run recorded. ``dst`` is a checkpoint again: ``export_for_serving(dst, ...,
    base_model=...)`` builds the servable folder. The run's train_config.json comes along."""
    from safetensors.torch import load_file, save_file

    src, dst = Path(src), Path(dst)
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if not (src / CONFIG_FILE).is_file() or not (src / ADAPTER_CONFIG_FILE).is_file():
        raise ValueError(f"{src} is not a LoRA training checkpoint ({CONFIG_FILE} + {ADAPTER_CONFIG_FILE})")
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"pack destination {dst} is not empty")
    dst.mkdir(parents=True, exist_ok=True)

    def cast(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: tensor.to(dtype).contiguous() for name, tensor in tensors.items()}

    hyper = load_file(str(src / WEIGHTS_FILE))
    save_file(cast({n: t for n, t in hyper.items() if not n.startswith("reconstruction.")}),
              str(dst / WEIGHTS_FILE), metadata={"format": "pt"})
    Zip2ZipConfig.load(src).replace(base_model=base_model, reconstruction_weight=0.0).save(dst)
    save_file(cast(load_file(str(src / ADAPTER_WEIGHTS_FILE))), str(dst / ADAPTER_WEIGHTS_FILE),
              metadata={"format": "pt"})
    adapter = json.loads((src / ADAPTER_CONFIG_FILE).read_text())
    adapter["base_model_name_or_path"] = base_model
    (dst / ADAPTER_CONFIG_FILE).write_text(json.dumps(adapter, indent=2, sort_keys=True) + "\n")
    if (src / "train_config.json").is_file():  # the settings, for the model card and evaluation
        shutil.copyfile(src / "train_config.json", dst / "train_config.json")
    return dst
