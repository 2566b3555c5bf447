"""Import of checkpoints in the authors' format (``zip2zip==0.2.0``) into ours.

    from z2z_vllm.training.reference_import import import_reference

    import_reference("their-checkpoint/", "ours/")           # or: z2z import-reference SRC DST
    export_for_serving("ours/", "servable/")                 # then serve it (checkpoints module)

Their folder holds ``zip2zip_config.json`` (``base_model_name_or_path``, ``encoder_type``,
``encoder``, ``compression``) and ``zip2zip_encoders.safetensors`` (``input_encoder.*``,
``output_encoder.*`` unless tied), over a base model that is, as their loader reads it, one of:

- a PEFT adapter in the folder (``adapter_config.json``) over ``base_model_name_or_path``;
- ``model.safetensors`` in the folder loaded over that base (a "decoder override");
- ``base_model_name_or_path == "."``: the folder is a whole HF model (their self-contained v2);
- otherwise the base model as is.

The result is our training checkpoint (``z2z_vllm.training.checkpoints``): the adapter stays an
adapter; decoder overrides and self-contained weights become full base weights in DST. The base
(``--base`` overrides where it is read from) and its tokenizer must be available locally or in the
HF cache: nothing here downloads.

Encoders map as the table in ``z2z_vllm.modeling.encoders`` says (their pad slots, pooled means,
positions reproduced exactly). Not importable, with a clear error: ``position_mode`` other than
``"compressed"`` (their zip2zip++ base-token RoPE positions), and the ``res_latent_attn`` variants
``causal=True`` or ``residual=False``. Their undefined codebook slots scored 0 and later entries
leaked into earlier positions in training; our model scores those -inf, so logits agree on every
column that is defined at its position.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from z2z_vllm.modeling import EncoderConfig, Zip2ZipConfig, Zip2ZipForCausalLM, reference_state_dict
from z2z_vllm.training.checkpoints import ADAPTER_CONFIG_FILE, dtype_kwargs, save_checkpoint

__all__ = ["REFERENCE_CONFIG_FILE", "import_reference", "reference_config", "reference_hyper_state_dict"]

REFERENCE_CONFIG_FILE = "zip2zip_config.json"
_REFERENCE_WEIGHT_FILES = ("zip2zip_encoders.safetensors", "encoders.safetensors")  # their loader's order
_SELF_CONTAINED = "."
_DECODER_OVERRIDE_FILE = "model.safetensors"


def _encoder_config(encoder_type: str, encoder: dict[str, Any], *, pad_token_id: int) -> EncoderConfig:
    heads = encoder.get("num_heads")
    if encoder_type == "attention":
        # Their positions are always learned; pad slots are masked out of the attention, so
        # which embedding they carry does not matter, but they count in the mean.
        return EncoderConfig(kind="attention", num_heads=heads, hidden_size=encoder["hidden_size"],
                             positions="learned", pool_mask_pads=False)
    if encoder_type == "transformer":
        position_encoding = encoder.get("position_encoding")
        if position_encoding not in (None, "learnable"):
            raise ValueError(f"unknown position_encoding {position_encoding!r} in the reference config")
        return EncoderConfig(
            kind="transformer",
            num_layers=encoder["num_hidden_layers"],
            num_heads=heads,
            intermediate_size=encoder.get("intermediate_size"),
            hidden_size=encoder["hidden_size"],
            positions="learned" if position_encoding == "learnable" else None,
            pool_mask_pads=False,
            pad_embedding_id=pad_token_id,  # their pad slots carry the pad token's embedding
        )
    if encoder_type == "res_latent_attn":
        if encoder.get("causal", False) or not encoder.get("residual", True):
            raise NotImplementedError("res_latent_attn with causal=True or residual=False has no equivalent here")
        return EncoderConfig(
            kind="residual",
            num_layers=encoder["num_hidden_layers"],
            num_heads=heads,
            intermediate_size=encoder.get("intermediate_size"),
            hidden_size=encoder["hidden_size"],  # their latent width
            positions="learned",
        )
    raise ValueError(f"unknown reference encoder_type {encoder_type!r}")


def reference_config(
    reference: dict[str, Any], *, pad_token_id: int, base_model: str | None, base_architecture: str | None = None
) -> Zip2ZipConfig:
    """Our config for the authors' ``zip2zip_config.json`` dict. ``pad_token_id``: their codebook
    pad id (the tokenizer's pad id, else its EOS id)."""
    position_mode = reference.get("position_mode", "compressed")
    if position_mode != "compressed":
        raise NotImplementedError(
            f"position_mode {position_mode!r} (zip2zip++ base-token RoPE positions) is not supported"
        )
    compression, encoder = reference["compression"], reference["encoder"]
    encoder_config = _encoder_config(reference["encoder_type"], encoder, pad_token_id=pad_token_id)
    tied = bool(encoder.get("tie_encoders", False))
    return Zip2ZipConfig(
        initial_vocab_size=compression["initial_vocab_size"],
        max_codebook_size=compression["max_codebook_size"],
        max_subtokens=compression["max_subtokens"],
        disabled_ids=tuple(compression.get("disabled_ids") or ()),
        pad_token_id=pad_token_id,
        input_encoder=encoder_config,
        output_encoder=None if tied else encoder_config,
        tie_encoders=tied,
        base_model=base_model,
        base_architecture=base_architecture,
        reconstruction_weight=0.0,  # they have no reconstruction head
    )


def reference_hyper_state_dict(
    weights: dict[str, torch.Tensor], model: Zip2ZipForCausalLM
) -> dict[str, torch.Tensor]:
    """Their ``zip2zip_encoders.safetensors`` tensors renamed for ``model.load_hyper_state_dict``.

    A residual encoder of theirs without projections (latent width = model width) has no
    ``proj_out``: ours gets the identity there."""
    converted: dict[str, torch.Tensor] = {}
    for prefix in ("input_encoder", "output_encoder"):
        own = {k.removeprefix(f"{prefix}."): v for k, v in weights.items() if k.startswith(f"{prefix}.")}
        if not own:
            continue
        renamed = reference_state_dict(own)
        if model.config.input_encoder.kind == "residual" and "proj_out.weight" not in renamed:
            target = model.hyper_state_dict()[f"{prefix}.proj_out.weight"]
            renamed["proj_out.weight"] = torch.eye(target.shape[0], dtype=target.dtype)
        converted.update({f"{prefix}.{k}": v for k, v in renamed.items()})
    return converted


def _reference_weights(src: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    for name in _REFERENCE_WEIGHT_FILES:
        if (src / name).is_file():
            return load_file(str(src / name))
    raise FileNotFoundError(f"no reference encoder weights in {src}: expected one of {_REFERENCE_WEIGHT_FILES}")


def import_reference(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    base_model: nn.Module | str | os.PathLike | None = None,
    dtype: torch.dtype | str | None = None,
) -> Path:
    """Converts the authors' checkpoint ``src`` into our training checkpoint ``dst``.

    ``base_model`` (a model, name or path) replaces their ``base_model_name_or_path``, e.g. a
    local copy of a hub model. Returns ``dst``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, dst = Path(src), Path(dst)
    config_file = src / REFERENCE_CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"{src} is not a zip2zip checkpoint: no {REFERENCE_CONFIG_FILE}")
    reference = json.loads(config_file.read_text())
    self_contained = reference.get("base_model_name_or_path") == _SELF_CONTAINED
    base_source = src if self_contained else reference.get("base_model_name_or_path")
    if isinstance(base_model, str | os.PathLike):
        base_source, base_model = base_model, None
    if base_model is None and base_source is None:
        raise ValueError(f"{config_file} names no base model: pass base_model=")

    # Their codebook pads with the tokenizer's pad id, else EOS (CodebookManager.from_config).
    tokenizer_source = src if (src / "tokenizer_config.json").is_file() else base_source
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_source))
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    if base_model is None:
        base_model = AutoModelForCausalLM.from_pretrained(str(base_source), **dtype_kwargs(dtype))
    full_weights = self_contained
    if not self_contained and (src / ADAPTER_CONFIG_FILE).is_file():
        from peft import PeftModel

        base_model = PeftModel.from_pretrained(base_model, str(src))
    elif not self_contained and (src / _DECODER_OVERRIDE_FILE).is_file():
        from safetensors.torch import load_file

        base_model.load_state_dict(load_file(str(src / _DECODER_OVERRIDE_FILE)), strict=False)  # as theirs does
        full_weights = True

    architectures = getattr(base_model.config, "architectures", None)
    config = reference_config(
        reference,
        pad_token_id=pad_token_id,
        base_model=None if full_weights else str(base_source) if base_source is not None else None,
        base_architecture=architectures[0] if architectures else None,
    )
    model = Zip2ZipForCausalLM(base_model, config)
    model.load_hyper_state_dict(reference_hyper_state_dict(_reference_weights(src), model))
    return save_checkpoint(model, dst, tokenizer=tokenizer, include_base_weights=full_weights)
