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
    # Start LoRA and hyper-encoders from a checkpoint or packed weights folder (`z2z pack`) instead
    # of fresh ones; a reconstruction head it lacks starts fresh. Only at step 0 (resume wins).
    init_from: str | None = None
    # Data: local UTF-8 files (one document each) and/or corpus domains of z2z_vllm.data.
    train_files: list[str] = field(default_factory=list)
    eval_files: list[str] = field(default_factory=list)
    # Domain -> cap on its training text in UTF-8 bytes (None: all of it), e.g. {code: 3000000}.
    # The "train" splits are mixed (windows shuffled together, so each domain weighs as its capped
    # size); each "heldout" split is evaluated on its own.
    domains: dict[str, int | None] = field(default_factory=dict)
    eval_max_bytes: int | None = 200_000  # cap on each domain's held-out text
    cache_dir: str | None = None  # compressed-data cache; None: <output_dir>/data_cache
    seq_len: int = 256  # compressed tokens per training sequence, the start token included
    # Codec and hyper-encoders.
    max_codebook_size: int = 256  # C
    max_subtokens: int = 4  # M
    protect_digits: bool = True
    encoder: dict[str, Any] = field(default_factory=dict)  # EncoderConfig fields
    tie_encoders: bool = False
    reconstruction_weight: float = 0.1
    reconstruction_samples: int | None = None  # entries scored per micro-batch (None: all)
    # Loss = clm_weight * CLM + reconstruction_weight * reconstruction + the distillation terms
    # (training.distill; each weight 0 turns its term, and the teacher forward, off).
    clm_weight: float = 1.0
    distill_folded_weight: float = 0.0
    distill_expansion_weight: float = 0.0
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
    # bfloat16 autocast (weights stay float32); "auto": where this device multiplies bf16 faster
    # than float32 (CPUs without AMX / AVX512-BF16 emulate it up to ~100x slower).
    bf16: bool | str = False
    device: str | None = None  # None: "cuda" when available, else "cpu"
    # Under torchrun: "ddp" (a whole model per rank) or "fsdp" (FSDP2, each weight sharded over
    # the ranks: for bases that do not fit one device). training.distributed.
    parallel: str = "ddp"
    num_threads: int | None = None  # torch threads; None: torch's default
    seed: int = 0
    # Bookkeeping.
    log_every: int = 5
    eval_every: int = 50
    eval_max_sequences: int = 16  # periodic eval: windows per held-out source, evenly spaced
    save_every: int = 50
    save_total_limit: int = 2  # checkpoints kept (oldest removed first)
    progress: bool = True  # tqdm bar

    def __post_init__(self) -> None:
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {self.seq_len}")
        for name in ("max_steps", "batch_size", "grad_accum", "log_every", "eval_every", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.bf16 not in (True, False, "auto"):
            raise ValueError(f"bf16 must be true, false or auto, got {self.bf16!r}")
        if self.parallel not in ("ddp", "fsdp"):
            raise ValueError(f"parallel must be ddp or fsdp, got {self.parallel!r}")
        self._check_domains()
        if not (self.train_files or self.domains):
            raise ValueError("no training data: set train_files or domains")

    def _check_domains(self) -> None:
        from z2z_vllm.data.corpora import DOMAINS

        if not isinstance(self.domains, dict):
            raise ValueError(
                f"domains must map domain names to byte caps (e.g. {{code: 3000000}}), got {self.domains!r}"
            )
        unknown = sorted(set(self.domains) - set(DOMAINS))
        if unknown:
            raise ValueError(f"unknown domains {unknown}; known: {', '.join(DOMAINS)}")
        for name, cap in self.domains.items():
            if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
                raise ValueError(f"domains[{name!r}] must be a positive number of bytes or null, got {cap!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        values = dict(data)
        # Configs written before `domains` (older checkpoints) name one `domain` and its cap.
        if {"domain", "train_max_bytes"} & set(values):
            if "domains" in values:
                raise ValueError("give `domains`, or the older `domain` and `train_max_bytes`, not both")
            domain, cap = values.pop("domain", None), values.pop("train_max_bytes", None)
            values["domains"] = {} if domain is None else {domain: cap}
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown train config keys: {unknown}")
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
