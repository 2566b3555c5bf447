"""LoRA uptraining of a zip2zip model: a plain PyTorch loop with checkpoints and resume.

    z2z train --config configs/smollm2_code_short.yaml            # resumes from the latest checkpoint
    python -c "from z2z_vllm.training import load_train_config, train; train(load_train_config('cfg.yaml'))"
    torchrun --nproc_per_node 8 -m z2z_vllm.cli train --config cfg.yaml   # DDP (training.distributed)
    torchrun --nproc_per_node 8 -m z2z_vllm.cli train --config cfg.yaml --set parallel=fsdp  # sharded

The loss of a micro-batch (:func:`training_losses`): CLM over the compressed ids (hypertokens
included), the reconstruction of entries' subtokens from their embeddings (on sampled entries
with ``reconstruction_samples``), and distillation from the frozen base, which the same PEFT
model gives for free with its adapter switched off: it reads the window as base tokens, and at
every compressed position the z2z model is pulled toward (a) the base's next-base-token
distribution, its own V + C distribution folded onto base ids by each column's first subtoken,
and (b) the base's probability of the next id's whole expansion, as a Bernoulli KL on "the next
id is this one". Both are zero when the z2z model induces the base's distribution over text;
(b) also moves mass off spelling out a defined hypertoken. Details and the alignment of
compressed and base positions: ``z2z_vllm/training/distill.py``.

Why not the Hugging Face ``Trainer``: the model is a plain ``nn.Module`` (not a
``PreTrainedModel``) whose checkpoint is a LoRA adapter plus hyper-encoder weights, its loss has
several logged terms, and batches carry a ``CodebookBatch``; each needs an override of ``Trainer``
(``_save``, ``_load_from_checkpoint``, ``compute_loss``, the collator's tensor handling), more code
than this loop, which keeps step, data position, optimizer, scheduler and RNG state explicit.

A checkpoint ``<output_dir>/checkpoint-<step>/`` holds ``adapter_config.json`` +
``adapter_model.safetensors`` (PEFT), ``z2z_config.json`` + ``z2z_encoders.safetensors``
(hyper-encoders, reconstruction head), ``train_config.json`` and ``trainer_state.pt`` (optimizer,
scheduler, RNG, log history). It is written to a temporary folder and renamed, so a run killed at
any moment restarts from the last complete checkpoint with the same data order and the same
loss trajectory. :func:`load_trained_model` reads a checkpoint (or an output dir's latest) back
for evaluation, with LoRA merged.
"""

from __future__ import annotations

import functools
import json
import random
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from z2z_vllm.modeling import EncoderConfig, Zip2ZipForCausalLM
from z2z_vllm.modeling.config import CONFIG_FILE
from z2z_vllm.modeling.model import WEIGHTS_FILE
from z2z_vllm.training.config import TrainConfig
from z2z_vllm.training.data import (
    Collator,
    CompressedDataset,
    batch_to,
    build_dataset,
    load_documents,
    load_text_tokenizer,
)
from z2z_vllm.training.distill import distillation_losses, teacher_log_probs
from z2z_vllm.training.distributed import World, gather_full_state, join_world, load_full_optimizer_state

__all__ = [
    "TRAIN_CONFIG_FILE",
    "TRAINER_STATE_FILE",
    "TrainState",
    "evaluate_loss",
    "latest_checkpoint",
    "load_trained_model",
    "resolve_base_model",
    "train",
]

TRAIN_CONFIG_FILE = "train_config.json"
TRAINER_STATE_FILE = "trainer_state.pt"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    compressed_tokens: int = 0  # non-pad ids trained on
    base_tokens: int = 0  # base tokens those ids stand for
    elapsed_s: float = 0.0  # training wall time over all sessions
    log_history: list[dict[str, Any]] = field(default_factory=list)


# -- model --------------------------------------------------------------------------------------


def resolve_base_model(name_or_dir: str) -> Path:
    """A ``z2z_vllm.data.models`` name (built on first use) or an HF folder."""
    from z2z_vllm.data.models import MODEL_NAMES, base_model_dir

    return base_model_dir(name_or_dir) if name_or_dir in MODEL_NAMES else Path(name_or_dir)


def _load_base(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


def build_model(cfg: TrainConfig, *, tokenizer) -> Zip2ZipForCausalLM:
    """Base model + LoRA (PEFT) + fresh hyper-encoders; only LoRA and hyper weights train."""
    from peft import LoraConfig, get_peft_model

    base = _load_base(resolve_base_model(cfg.base_model))
    model = Zip2ZipForCausalLM.from_base(
        base,
        max_codebook_size=cfg.max_codebook_size,
        max_subtokens=cfg.max_subtokens,
        tokenizer=tokenizer,
        protect_digits=cfg.protect_digits,
        input_encoder=EncoderConfig(**cfg.encoder),
        tie_encoders=cfg.tie_encoders,
        reconstruction_weight=cfg.reconstruction_weight,
    )
    lora = LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_target_modules), task_type="CAUSAL_LM",
    )
    model.base_model = get_peft_model(model.base_model, lora)  # freezes every base weight
    return model


def _start_id(model: Zip2ZipForCausalLM) -> int | None:
    """Each window starts with the base model's BOS (a disabled id) so its first token is scored."""
    bos = getattr(model.base_model.config, "bos_token_id", None)
    return bos if isinstance(bos, int) and bos < model.initial_vocab_size else None


def _checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every ``checkpoint-<step>`` folder in ``output_dir``, by step."""
    found = []
    for child in Path(output_dir).glob("checkpoint-*"):
        if match := _CHECKPOINT.match(child.name):
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step in ``output_dir``, if any."""
    complete = [folder for _, folder in _checkpoints(output_dir) if (folder / TRAINER_STATE_FILE).is_file()]
    return complete[-1] if complete else None


def load_trained_model(directory: str | Path, *, base_model: str | None = None) -> tuple[Zip2ZipForCausalLM, TrainConfig]:
    """A trained model for evaluation, in float32 and eval mode, from a checkpoint folder or a
    training output dir (its latest checkpoint), with the LoRA adapter merged into the base.

    Reads the folder with ``z2z_vllm.training.checkpoints.load_checkpoint`` (the format both
    share); ``base_model`` overrides the base the run was trained from."""
    from z2z_vllm.training.checkpoints import load_checkpoint

    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file():  # an output dir: its latest checkpoint
        checkpoint = latest_checkpoint(directory)
        if checkpoint is None:
            raise FileNotFoundError(f"{directory} is neither a training checkpoint nor holds one")
        directory = checkpoint
    cfg = TrainConfig.from_dict(json.loads((directory / TRAIN_CONFIG_FILE).read_text()))
    base = str(resolve_base_model(base_model or cfg.base_model))
    model = load_checkpoint(directory, base_model=base, dtype=torch.float32)
    if hasattr(model.base_model, "merge_and_unload"):  # PEFT: one matmul per projection again
        model.base_model = model.base_model.merge_and_unload()
    return model.eval(), cfg


# -- data ---------------------------------------------------------------------------------------


def _datasets(
    cfg: TrainConfig, model: Zip2ZipForCausalLM, tokenizer
) -> tuple[dict[str, CompressedDataset], dict[str, CompressedDataset]]:
    """Training and evaluation windows by source: "files" (``train_files`` / ``eval_files``) and
    each domain of ``cfg.domains`` (its "train" split capped by the domain's cap, its "heldout"
    split by ``eval_max_bytes``). Each source has its own cache entry."""
    cache_dir = cfg.cache_dir or str(Path(cfg.output_dir) / "data_cache")
    options = {"tokenizer": tokenizer, "codec": model.codec, "length": cfg.seq_len,
               "start_id": _start_id(model), "cache_dir": cache_dir}
    train_sources: dict[str, list] = {}
    eval_sources: dict[str, list] = {}
    if cfg.train_files:
        train_sources["files"] = load_documents(files=cfg.train_files)
    if cfg.eval_files:
        eval_sources["files"] = load_documents(files=cfg.eval_files)
    for domain, cap in cfg.domains.items():
        train_sources[domain] = load_documents(domain=domain, split="train", max_bytes=cap)
        eval_sources[domain] = load_documents(domain=domain, split="heldout", max_bytes=cfg.eval_max_bytes)
    train_sets = {name: build_dataset(docs, **options) for name, docs in train_sources.items() if docs}
    if not sum(len(data) for data in train_sets.values()):
        raise ValueError("the training data holds no sequences")
    eval_sets = {name: build_dataset(docs, **options) for name, docs in eval_sources.items() if docs}
    return train_sets, {name: data for name, data in eval_sets.items() if len(data)}


def _batch_indices(micro_step: int, *, num_sequences: int, batch_size: int, seed: int) -> list[int]:
    """Sequences of micro-batch ``micro_step``: a fresh seeded shuffle each epoch, so the data
    position follows from the step alone (nothing to save for resume)."""
    per_epoch = max(1, num_sequences // batch_size)
    epoch, index = divmod(micro_step, per_epoch)
    order = torch.randperm(num_sequences, generator=torch.Generator().manual_seed(seed + epoch))
    return order[index * batch_size : (index + 1) * batch_size].tolist()


# -- loss ---------------------------------------------------------------------------------------


def distills(cfg: TrainConfig) -> bool:
    return bool(cfg.distill_folded_weight or cfg.distill_expansion_weight)


def training_losses(model: Zip2ZipForCausalLM, batch: dict[str, Any], cfg: TrainConfig, *,
                    forward: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The loss terms of one micro-batch (unweighted, for the log) and ``"loss"``, their weighted
    sum. With distillation the batch carries the windows' base ids (``Collator(base_ids=True)``)
    and the teacher is the same base model with its LoRA adapter switched off. ``forward``: what
    runs the student (a DDP wrapper of ``model``; default ``model``)."""
    base_ids, base_mask = batch.pop("base_ids", None), batch.pop("base_attention_mask", None)
    out = (forward or model)(**batch, reconstruction_samples=cfg.reconstruction_samples)
    terms = {"clm_loss": out.clm_loss}
    loss = cfg.clm_weight * out.clm_loss
    if out.reconstruction_loss is not None:
        terms["reconstruction_loss"] = out.reconstruction_loss
        loss = loss + cfg.reconstruction_weight * out.reconstruction_loss
    if base_ids is not None:
        V = model.initial_vocab_size
        with model.base_model.disable_adapter():
            teacher = teacher_log_probs(model.base_model, base_ids, base_mask, initial_vocab_size=V)
        kd = distillation_losses(out.logits, batch["input_ids"], batch["attention_mask"], batch["codebooks"],
                                 teacher, base_ids, initial_vocab_size=V)
        terms.update(folded_kl=kd.folded_kl, expansion_kl=kd.expansion_kl)
        loss = loss + cfg.distill_folded_weight * kd.folded_kl + cfg.distill_expansion_weight * kd.expansion_kl
    terms["loss"] = loss
    return terms


# -- loop ---------------------------------------------------------------------------------------


def use_bf16(setting: bool | str, device: torch.device) -> bool:
    """Resolves ``TrainConfig.bf16``: "auto" times one float32 and one bfloat16 matmul of the
    model's shape on ``device`` and takes bf16 when it is clearly faster."""
    if setting != "auto":
        return bool(setting)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()

    def seconds(dtype: torch.dtype) -> float:
        a, b = torch.randn(64, 576, dtype=dtype, device=device), torch.randn(576, 576, dtype=dtype, device=device)
        a @ b  # warm-up: kernel selection
        start = time.perf_counter()
        for _ in range(3):
            a @ b
        return time.perf_counter() - start

    return seconds(torch.bfloat16) < 0.75 * seconds(torch.float32)


def _rng_state() -> dict[str, Any]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return {"torch": torch.get_rng_state(), "cuda": cuda, "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _save_checkpoint(model, optimizer, scheduler, state: TrainState, cfg: TrainConfig, *,
                     world: World) -> Path | None:
    """Rank 0 writes the checkpoint (the others return None); a sharded model's full state is
    gathered first, by every rank, so the files are those of a single process."""
    weights, optimizer_state = gather_full_state(model, optimizer) if world.sharded else (None, None)
    if not world.is_main:
        return None
    output = Path(cfg.output_dir)
    final = output / f"checkpoint-{state.step}"
    staging = output / f".checkpoint-{state.step}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if weights is None:
        model.base_model.save_pretrained(staging)  # LoRA adapter only
        model.save_pretrained(staging)  # z2z config + hyper weights
    else:  # the same files, from the gathered weights (named from the root)
        base_prefix = "base_model."
        model.base_model.save_pretrained(staging, state_dict={
            name.removeprefix(base_prefix): tensor for name, tensor in weights.items() if name.startswith(base_prefix)
        })
        model.save_pretrained(staging, state_dict={name: weights[name] for name in model.hyper_state_dict()})
    (staging / TRAIN_CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    torch.save(
        {"optimizer": optimizer_state or optimizer.state_dict(), "scheduler": scheduler.state_dict(),
         "rng": _rng_state(), "state": state.__dict__},
        staging / TRAINER_STATE_FILE,
    )
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    kept = _checkpoints(output)
    for _, old in kept[: max(0, len(kept) - cfg.save_total_limit)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _load_weights(folder: Path, model: Zip2ZipForCausalLM, *, fresh_reconstruction: bool = False) -> None:
    """LoRA adapter and hyper weights of a checkpoint (or, with ``fresh_reconstruction``, of packed
    weights, which carry no reconstruction head: the model's own stays)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    codec_keys = ("initial_vocab_size", "max_codebook_size", "max_subtokens", "disabled_ids")
    saved = json.loads((folder / CONFIG_FILE).read_text())
    expected = model.config.to_dict()
    if mismatched := [key for key in codec_keys if saved.get(key) != expected.get(key)]:
        raise ValueError(f"{folder} was trained with another codec: {', '.join(mismatched)} differ")
    set_peft_model_state_dict(model.base_model, load_file(str(folder / "adapter_model.safetensors")))
    hyper = load_file(str(folder / WEIGHTS_FILE))
    if fresh_reconstruction:
        def head(weights: dict[str, torch.Tensor], keep: bool) -> dict[str, torch.Tensor]:
            return {name: t for name, t in weights.items() if name.startswith("reconstruction.") == keep}

        hyper = {**head(hyper, False), **head(model.hyper_state_dict(), True)}
    model.load_hyper_state_dict(hyper)


def _load_trainer_state(checkpoint: Path, model, optimizer, scheduler, *, world: World) -> TrainState:
    """Optimizer, scheduler and RNG state and the :class:`TrainState` of a checkpoint (its weights:
    :func:`_load_weights`, before the model is wrapped)."""
    saved = torch.load(checkpoint / TRAINER_STATE_FILE, weights_only=False)
    if world.sharded:
        load_full_optimizer_state(model, optimizer, saved["optimizer"])
    else:
        optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    _set_rng_state(saved["rng"])
    return TrainState(**saved["state"])


@torch.no_grad()
def evaluate_loss(model, dataset: CompressedDataset, *, collator: Collator, batch_size: int,
                  max_sequences: int | None = None, bf16: bool = False) -> dict[str, float]:
    """Target-weighted mean CLM loss (nats per compressed id) and mean reconstruction loss over
    ``max_sequences`` windows of ``dataset`` spread evenly over it (all windows when None)."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    count = len(dataset) if max_sequences is None else min(len(dataset), max_sequences)
    # Evenly spaced windows sample the whole held-out text, not only its first documents.
    indices = np.linspace(0, len(dataset) - 1, count).round().astype(int).tolist() if count else []
    clm_sum, targets, reconstruction = 0.0, 0, []
    for start in range(0, count, batch_size):
        windows = [dataset[i] for i in indices[start : start + batch_size]]
        batch = batch_to(collator(windows), device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(**batch)
        n = int((batch["labels"][:, 1:] != -100).sum())
        clm_sum += float(out.clm_loss) * n
        targets += n
        if out.reconstruction_loss is not None:
            reconstruction.append(float(out.reconstruction_loss))
    model.train(was_training)
    result = {"eval_clm_loss": clm_sum / max(targets, 1)}
    if reconstruction:
        result["eval_reconstruction_loss"] = sum(reconstruction) / len(reconstruction)
    return result


def _evaluate_sources(model, eval_sets: dict[str, CompressedDataset], *, collator: Collator,
                      cfg: TrainConfig, bf16: bool) -> dict[str, float]:
    """``eval_clm_loss/<source>`` per held-out source, and ``eval_clm_loss`` /
    ``eval_reconstruction_loss`` as plain means over the sources (each source weighs the same)."""
    per_source = {
        name: evaluate_loss(model, data, collator=collator, batch_size=cfg.batch_size,
                            max_sequences=cfg.eval_max_sequences, bf16=bf16)
        for name, data in eval_sets.items()
    }
    result = {}
    for key in ("eval_clm_loss", "eval_reconstruction_loss"):
        values = [metrics[key] for metrics in per_source.values() if key in metrics]
        if values:
            result[key] = sum(values) / len(values)
    result.update({f"eval_clm_loss/{name}": metrics["eval_clm_loss"] for name, metrics in per_source.items()})
    return result


def _log(record: dict[str, Any], *, cfg: TrainConfig, state: TrainState, bar=None) -> None:
    state.log_history.append(record)
    with open(Path(cfg.output_dir) / "log.jsonl", "a") as log:
        log.write(json.dumps(record) + "\n")
    text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
    if bar is not None:
        bar.write(text)  # above the progress bar
    else:
        print(text, flush=True)


def train(cfg: TrainConfig, *, resume: bool = True, stop_at_step: int | None = None) -> TrainState:
    """Trains to ``cfg.max_steps`` optimizer steps, resuming from the latest checkpoint in
    ``cfg.output_dir`` (``resume=False`` refuses a folder that already has one).

    ``stop_at_step``: save a checkpoint and return at that step, as if stopped there (a later
    call continues the same run). Returns the final :class:`TrainState`.
    """
    from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    world = join_world(grad_accum=cfg.grad_accum, device=cfg.device, parallel=cfg.parallel)
    output = Path(cfg.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    checkpoint = latest_checkpoint(output)
    if checkpoint is not None and not resume:
        raise FileExistsError(f"{output} already holds {checkpoint.name}; resume, or use another output_dir")
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)

    tokenizer = load_text_tokenizer(cfg.tokenizer or resolve_base_model(cfg.base_model))
    model = build_model(cfg, tokenizer=tokenizer)
    device = world.device(cfg.device)
    if not world.sharded:  # FSDP moves each rank's shards there: the whole model never sits on it
        model.to(device)
    model.train()
    bf16 = use_bf16(cfg.bf16, device)
    if not world.is_main:  # rank 0 builds the data cache, the others read it
        world.barrier()
    train_sets, eval_sets = _datasets(cfg, model, tokenizer)
    if world.is_main:
        world.barrier()
    train_data = CompressedDataset.concatenate(list(train_sets.values()))  # shuffled together below
    collator = Collator(codec=model.codec)
    train_collator = Collator(codec=model.codec, base_ids=distills(cfg))
    if checkpoint is not None:
        _load_weights(checkpoint, model)
    elif cfg.init_from:
        _load_weights(Path(cfg.init_from), model, fresh_reconstruction=True)
    forward = world.wrap(model, device)  # FSDP shards `model` in place: its parameters change
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.max_steps, min_lr=cfg.min_lr
    )
    state = TrainState()
    if checkpoint is not None:
        state = _load_trainer_state(checkpoint, model, optimizer, scheduler, world=world)
    log = functools.partial(_log, cfg=cfg, state=state) if world.is_main else lambda *_, **__: None
    if world.is_main:
        (output / TRAIN_CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    bar = None
    if cfg.progress and world.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_steps, initial=state.step, desc="train", unit="step", dynamic_ncols=True)
    header = {
        "event": "start", "step": state.step, "train_sequences": len(train_data),
        "train_compressed_tokens": train_data.num_tokens, "train_base_tokens": sum(train_data.base_tokens),
        "train_sequences_by_source": {name: len(data) for name, data in train_sets.items()},
        "eval_sequences_by_source": {name: len(data) for name, data in eval_sets.items()},
        "trainable_params": sum(p.numel() for p in trainable),
        "bf16": bf16,
        "world_size": world.size,
        "resumed_from": checkpoint.name if checkpoint else None,
        "initialised_from": None if checkpoint else cfg.init_from,
    }
    log(header, bar=bar)
    last_stop = stop_at_step if stop_at_step is not None else cfg.max_steps
    session_start, session_elapsed0 = time.monotonic(), state.elapsed_s
    while state.step < min(cfg.max_steps, last_stop):
        terms: dict[str, float] = {"compressed_tokens": 0, "base_tokens": 0}
        mine = world.micro_batches(cfg.grad_accum)
        for micro in mine:
            indices = _batch_indices(state.step * cfg.grad_accum + micro, num_sequences=len(train_data),
                                     batch_size=cfg.batch_size, seed=cfg.seed)
            batch = batch_to(train_collator([train_data[i] for i in indices]), device)
            # DDP all-reduces (FSDP reduce-scatters) gradients, averaged over ranks, in the backward
            # of a rank's last micro-batch.
            with world.gradient_sync(forward, micro == mine[-1]):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    losses = training_losses(model, batch, cfg, forward=forward)
                (losses.pop("loss") * world.size / cfg.grad_accum).backward()
            for name, value in losses.items():
                terms[name] = terms.get(name, 0.0) + value.item() / cfg.grad_accum
            terms["compressed_tokens"] += int(batch["attention_mask"].sum())
            terms["base_tokens"] += sum(train_data.base_tokens[i] for i in indices)
        terms = world.sum(terms)
        state.compressed_tokens += int(terms.pop("compressed_tokens"))
        state.base_tokens += int(terms.pop("base_tokens"))
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.elapsed_s = session_elapsed0 + time.monotonic() - session_start
        if bar is not None:
            bar.update(1)
            bar.set_postfix({name.removesuffix("_loss"): f"{value:.3f}" for name, value in terms.items()})
        if state.step % cfg.log_every == 0 or state.step == 1:
            log({"step": state.step, **terms,
                 "grad_norm": float(grad_norm), "lr": lr, "compressed_tokens": state.compressed_tokens,
                 "base_tokens": state.base_tokens, "elapsed_s": round(state.elapsed_s, 1)}, bar=bar)
        # Under FSDP every rank takes part in each forward (the weights are gathered from all).
        if eval_sets and (world.is_main or world.sharded) and (
                state.step % cfg.eval_every == 0 or state.step == cfg.max_steps):
            metrics = _evaluate_sources(model, eval_sets, collator=collator, cfg=cfg, bf16=bf16)
            log({"step": state.step, **metrics}, bar=bar)
        if state.step % cfg.save_every == 0 or state.step in (cfg.max_steps, last_stop):
            _save_checkpoint(model, optimizer, scheduler, state, cfg, world=world)
            world.barrier()  # no rank runs ahead of a checkpoint (or of the evaluation before it)
    if bar is not None:
        bar.close()
    return state
