"""Bits per byte of text under a zip2zip model and under a plain base model.

    z2z eval-bpb --model runs/smollm2_code_short notes.txt other.py [--base DIR] [--window 1024]
    z2z eval-bpb --model runs/smollm2_code_short --domain code --max-bytes 100000 --bf16

Each document is tokenized, cut into windows (``window`` compressed ids for the z2z model,
``window`` base ids for the base model; see ``z2z_vllm.training.data``), each window starting
with the base model's BOS so that every base token is scored exactly once. Bits per byte = total
NLL in bits / UTF-8 bytes of the documents.

The z2z figure scores the canonical LZW path only. Other segmentations into hypertokens decode to
the same text, so log p(text) >= log p(canonical path): the z2z bits per byte is an UPPER BOUND
on the model's true bits per byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from z2z_vllm.modeling import Zip2ZipForCausalLM
from z2z_vllm.training.data import IGNORE_INDEX, Collator, CompressedDataset, batch_to, build_dataset, load_text_tokenizer

__all__ = [
    "BitsPerByte", "InputSideLoss", "bits_per_byte", "compare_bits_per_byte", "compare_bits_per_byte_by_source",
    "input_side_loss",
]

UPPER_BOUND_NOTE = (
    "z2z bits/byte scores the canonical LZW path only: an upper bound on the model's true bits/byte "
    "(other hypertoken segmentations of the same text add probability)."
)


@dataclass(frozen=True)
class BitsPerByte:
    label: str
    num_bytes: int  # UTF-8 bytes of the documents
    scored_tokens: int  # ids whose NLL was summed (every base or compressed token of the text)
    windows: int
    nll_bits: float

    @property
    def bits_per_byte(self) -> float:
        return self.nll_bits / self.num_bytes

    @property
    def bits_per_token(self) -> float:
        return self.nll_bits / max(self.scored_tokens, 1)


@torch.no_grad()
def bits_per_byte(model, dataset: CompressedDataset, *, label: str, batch_size: int = 1, bf16: bool = False,
                  progress: bool = True) -> BitsPerByte:
    """Total NLL of ``dataset``'s windows under ``model`` (a :class:`Zip2ZipForCausalLM` for
    compressed windows, or a plain HF causal LM for base windows), over the dataset's bytes."""
    is_z2z = isinstance(model, Zip2ZipForCausalLM)
    collator = Collator(codec=model.codec if is_z2z else None)
    device = next(model.parameters()).device
    model.eval()
    starts = range(0, len(dataset), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"bpb {label}", unit="batch", dynamic_ncols=True)
    nats, scored = 0.0, 0
    for start in starts:
        windows = [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
        batch = batch_to(collator(windows), device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            if is_z2z:
                logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
            else:
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        targets = batch["labels"][:, 1:]
        nats += float(F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                                      ignore_index=IGNORE_INDEX, reduction="sum"))
        scored += int((targets != IGNORE_INDEX).sum())
    return BitsPerByte(label, dataset.num_bytes, scored, len(dataset), nats / math.log(2))


@dataclass(frozen=True)
class InputSideLoss:
    """Mean NLL (nats) of the next *base* token at every compressed position, both models reading
    the same text: z2z over compressed ids with its hyper columns masked, the base over base ids."""

    positions: int
    z2z_nats: float
    base_nats: float


@torch.no_grad()
def input_side_loss(model: Zip2ZipForCausalLM, base_model, dataset: CompressedDataset, *, batch_size: int = 1,
                    bf16: bool = False) -> InputSideLoss:
    """What reading hypertokens costs, apart from writing them. At compressed position t both
    models predict the first base token of id t+1 after the same text: the z2z model has read
    compressed ids 0..t and chooses among the V base columns only (a softmax without the hyper
    columns), the base model has read the base ids up to the same point. ``z2z_nats - base_nats``
    is the input-side loss; the rest of the z2z model's gap in bits per byte is on the output
    side (predicting hypertokens). ``base_model`` is a plain HF causal LM (LoRA-free)."""
    from z2z_vllm.training.distill import expansion_ends, teacher_log_probs

    V = model.initial_vocab_size
    collator = Collator(codec=model.codec, base_ids=True)
    device = next(model.parameters()).device
    z2z_nats = base_nats = 0.0
    positions = 0
    for start in range(0, len(dataset), batch_size):
        windows = [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
        batch = batch_to(collator(windows), device)
        mask = batch["attention_mask"].bool()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(batch["input_ids"], attention_mask=mask, codebooks=batch["codebooks"]).logits
            teacher = teacher_log_probs(base_model, batch["base_ids"], batch["base_attention_mask"],
                                        initial_vocab_size=V)
        ends = expansion_ends(batch["input_ids"], mask, batch["codebooks"].entries, initial_vocab_size=V)[:, :-1]
        base_ids = batch["base_ids"]
        target = base_ids.gather(1, ends.clamp(max=base_ids.shape[1] - 1))  # first base id of id t+1
        z2z = torch.log_softmax(logits[:, :-1, :V].float(), -1).gather(2, target.unsqueeze(-1)).squeeze(-1)
        base = teacher.gather(1, (ends - 1).clamp(min=0).unsqueeze(-1).expand(-1, -1, V))
        base = base.gather(2, target.unsqueeze(-1)).squeeze(-1)
        scored = mask[:, 1:]
        z2z_nats -= float(z2z[scored].sum())
        base_nats -= float(base[scored].sum())
        positions += int(scored.sum())
    return InputSideLoss(positions, z2z_nats / max(positions, 1), base_nats / max(positions, 1))


def compare_bits_per_byte(
    model_dir: str | Path, documents, *, base: str | None = None, window: int = 1024, batch_size: int = 1,
    bf16: bool = False, device: str | None = None, progress: bool = True,
) -> tuple[BitsPerByte, BitsPerByte]:
    """(z2z, base) bits per byte of ``documents`` (``z2z_vllm.training.data.Document``s).

    ``model_dir``: a training checkpoint or output dir; ``base``: the base model to compare with
    (a name or folder; default the one the z2z model was trained from, without LoRA); ``device``:
    where to run (default "cuda" when available, else "cpu")."""
    (pair,) = compare_bits_per_byte_by_source(
        model_dir, {"text": documents}, base=base, window=window, batch_size=batch_size, bf16=bf16, device=device,
        progress=progress,
    ).values()
    return pair


def compare_bits_per_byte_by_source(
    model_dir: str | Path, documents: dict[str, list], *, base: str | None = None, window: int = 1024,
    batch_size: int = 1, bf16: bool = False, device: str | None = None, progress: bool = True,
) -> dict[str, tuple[BitsPerByte, BitsPerByte]]:
    """:func:`compare_bits_per_byte` for several named document sets (e.g. one per domain),
    loading each model once: ``{name: (z2z, base)}``."""
    from z2z_vllm.training.trainer import (
        _load_base,
        _start_id,
        load_trained_model,
        resolve_base_model,
    )

    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, cfg = load_trained_model(model_dir)
    model.to(target)
    tokenizer = load_text_tokenizer(cfg.tokenizer or resolve_base_model(cfg.base_model))
    start_id = _start_id(model)
    z2z = {}
    for name, docs in documents.items():
        data = build_dataset(docs, tokenizer=tokenizer, codec=model.codec, length=window, start_id=start_id)
        z2z[name] = bits_per_byte(model, data, label="z2z", batch_size=batch_size, bf16=bf16, progress=progress)
    del model
    base_model = _load_base(resolve_base_model(base or cfg.base_model)).to(target)
    out = {}
    for name, docs in documents.items():
        data = build_dataset(docs, tokenizer=tokenizer, length=window, start_id=start_id)
        plain = bits_per_byte(base_model, data, label="base", batch_size=batch_size, bf16=bf16,
                              progress=progress)
        out[name] = (z2z[name], plain)
    return out
