"""Training settings: one :class:`TrainConfig`, read from YAML or JSON, with ``key=value`` overrides.

    z2z train --config configs/smollm2_code_short.yaml --set max_steps=200 --set lr=1e-4

An override's value is parsed as YAML (``1e-4`` -> float, ``true`` -> bool, ``[a, b]`` -> list,
``null`` -> None); unknown keys are errors. Relative paths in a config file are taken as they
are (relative to the working directory), not to the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["TrainConfig", "load_train_config", "parse_overrides"]

LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as ``train_config.json`` in every checkpoint."""

    output_dir: str = "runs/z2z"
    # Base model: a name of ``z2z_vllm.data.models`` (e.g. "smollm2-135m") or an HF folder.
    base_model: str = "smollm2-135m"
    tokenizer: str | None = None  # a tokenizer name or folder; None: the base model's folder
    # Data: local UTF-8 files (one document each) and/or a corpus domain of z2z_vllm.data.
    train_files: list[str] = field(default_factory=list)
    eval_files: list[str] = field(default_factory=list)
    domain: str | None = None  # its "train" split trains, its "heldout" split evaluates
    train_max_bytes: int | None = None  # cap on the domain's training text
    eval_max_bytes: int | None = 200_000  # cap on the domain's held-out text
    cache_dir: str | None = None  # compressed-data cache; None: <output_dir>/data_cache
    seq_len: int = 256  # compressed tokens per training sequence, the start token included
    # Codec and hyper-encoders.
    max_codebook_size: int = 256  # C
    max_subtokens: int = 4  # M
    protect_digits: bool = True
    encoder: dict[str, Any] = field(default_factory=dict)  # EncoderConfig fields
    tie_encoders: bool = False
    reconstruction_weight: float = 0.1
    # LoRA on the base model; the hyper-encoders are fully trained.
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: list(LLAMA_PROJECTIONS))
    # Optimisation.
    max_steps: int = 200  # optimizer steps
    batch_size: int = 4  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 3e-4
    min_lr: float = 1e-5
    warmup_steps: int = 10
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    bf16: bool = False  # bfloat16 autocast (weights stay float32)
    device: str | None = None  # None: "cuda" when available, else "cpu"
    num_threads: int | None = None  # torch threads; None: torch's default
    seed: int = 0
    # Bookkeeping.
    log_every: int = 5
    eval_every: int = 50
    eval_max_sequences: int = 16  # periodic eval on the first sequences of the eval set
    save_every: int = 50
    save_total_limit: int = 2  # checkpoints kept (oldest removed first)
    progress: bool = True  # tqdm bar

    def __post_init__(self) -> None:
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {self.seq_len}")
        for name in ("max_steps", "batch_size", "grad_accum", "log_every", "eval_every", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.train_files or self.domain):
            raise ValueError("no training data: set train_files or domain")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown train config keys: {unknown}")
        values = dict(data)
        for f in fields(cls):
            # YAML 1.1 reads "1e-4" as a string (it wants "1.0e-4"): float settings accept both.
            if f.type == "float" and isinstance(values.get(f.name), str | int):
                values[f.name] = float(values[f.name])
        return cls(**values)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["max_steps=200", "lr=1e-4"]`` -> ``{"max_steps": 200, "lr": 0.0001}`` (values as YAML)."""
    import yaml

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"override {pair!r} is not KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(value) if value else None
    return overrides


def load_train_config(path: str | os.PathLike | None, *, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A config from a ``.yaml``/``.yml``/``.json`` file (or defaults when ``path`` is None) with
    ``overrides`` applied on top."""
    data: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
        if str(path).endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path} does not hold a mapping of settings")
    data.update(overrides or {})
    return TrainConfig.from_dict(data)
