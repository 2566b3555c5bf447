"""Reference generation for :class:`~z2z_vllm.modeling.model.Zip2ZipForCausalLM` (HF level).

Prompts are left-padded into one batch and run with the base model's KV cache. Each sequence
keeps its own incremental LZW decoder; per step, only entries the new id created are encoded (one
batched encoder call for the whole batch) into cached output rows [B, C, H], and the KwKwK
candidate row comes from ``decoder.candidate``. An entry's input row is encoded only when its id is
first read as input: most entries are never emitted, and the encoders dominate the per-step cost
at batch 1. The only per-sequence Python work is feeding the codec.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from z2z_vllm.codec import LZWCodec

__all__ = ["GenerationOutput", "HyperCache", "generate", "expand_generated"]


@dataclass
class GenerationOutput:
    sequences: list[list[int]]  # generated compressed ids per sequence; ends with EOS when hit
    logits: torch.Tensor | None = None  # [B, steps, V + C] masked logits per step (output_logits)


def _padded(rows: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [-1] * (width - len(r)) for r in rows], dtype=torch.long, device=device)


class HyperCache:
    """Codebook state of a generating batch: one decoder per sequence and, per slot, the hyper
    input / output rows [B, C, H] and whether the slot is known [B, C]. Input rows are filled by
    :meth:`encode_inputs` for the ids about to be embedded."""

    def __init__(self, model, batch_size: int) -> None:
        self.model = model
        weight = model.input_table()
        C, H = model.config.max_codebook_size, weight.shape[1]
        self.decoders = [model.codec.decoder() for _ in range(batch_size)]
        self.input_rows = weight.new_zeros(batch_size, C, H)
        self.output_rows = weight.new_zeros(batch_size, C, H)
        self.known = torch.zeros(batch_size, C, dtype=torch.bool, device=weight.device)
        self.candidate_rows = weight.new_zeros(batch_size, 1, H)
        self.candidate_where = torch.zeros(batch_size, 1, dtype=torch.bool, device=weight.device)
        self.unencoded_inputs: dict[tuple[int, int], list[int]] = {}  # (row, slot) -> subtokens

    def feed(self, ids: Sequence[Sequence[int] | None]) -> None:
        """Reads each sequence's new ids (None: sequence left alone) and encodes what changed."""
        V, device = self.model.initial_vocab_size, self.known.device
        new_rows, new_slots, new_subtokens = [], [], []
        candidate_rows, candidate_subtokens = [], []
        for row, (decoder, row_ids) in enumerate(zip(self.decoders, ids)):
            if row_ids is None:
                continue
            for hyper_id, subtokens in decoder.feed(row_ids):
                new_rows.append(row)
                new_slots.append(hyper_id - V)
                new_subtokens.append(subtokens)
            candidate = decoder.candidate
            if candidate is not None:
                candidate_rows.append(row)
                candidate_subtokens.append(candidate[1])

        self.candidate_where.zero_()
        if not new_subtokens and not candidate_subtokens:
            return
        outputs = self.model.encode_outputs(_padded(new_subtokens + candidate_subtokens, device))
        if new_subtokens:
            where = (torch.tensor(new_rows, device=device), torch.tensor(new_slots, device=device))
            self.output_rows[where] = outputs[: len(new_subtokens)]
            self.known[where] = True
            self.unencoded_inputs.update(zip(zip(new_rows, new_slots), new_subtokens))
        if candidate_subtokens:
            rows = torch.tensor(candidate_rows, device=device)
            self.candidate_rows[rows, 0] = outputs[len(new_subtokens) :]
            self.candidate_where[rows, 0] = True

    def encode_inputs(self, ids: Sequence[Sequence[int] | None]) -> None:
        """Encodes the input rows of the hyper ids in ``ids`` (per sequence, after :meth:`feed`)
        that are not encoded yet."""
        V, device = self.model.initial_vocab_size, self.known.device
        pending = {
            (row, token - V)
            for row, row_ids in enumerate(ids)
            if row_ids is not None
            for token in row_ids
            if token >= V and (row, token - V) in self.unencoded_inputs
        }
        if not pending:
            return
        keys = sorted(pending)
        rows = self.model.encode_inputs(_padded([self.unencoded_inputs.pop(key) for key in keys], device))
        where = tuple(torch.tensor(column, device=device) for column in zip(*keys))
        self.input_rows[where] = rows

    def logits(self, model, hidden: torch.Tensor, base_logits: torch.Tensor) -> torch.Tensor:
        """[B, V + C] logits of the last position."""
        return model.logits(
            hidden[:, -1:],
            base_logits[:, -1:],
            self.output_rows,
            self.known.unsqueeze(1),
            self.candidate_rows,
            self.candidate_where,
        )[:, 0]


def _choose(
    logits: torch.Tensor,
    *,
    do_sample: bool,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    if not do_sample:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # keeps the smallest prefix reaching top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model,
    input_ids: Sequence[Sequence[int]] | torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    output_logits: bool = False,
) -> GenerationOutput:
    """Continues compressed prompts (lists of ids, or a left-padded tensor with its
    ``attention_mask``) by up to ``max_new_tokens`` compressed ids each.

    Greedy unless ``do_sample`` (then ``temperature``, ``top_k``, ``top_p``; randomness from
    ``generator``, or a new one seeded with ``seed``). A sequence stops after emitting an id in
    ``eos_token_id``. Ids only: expand them with :func:`expand_generated`.
    """
    if isinstance(input_ids, torch.Tensor):
        keep = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        prompts = [ids[k].tolist() for ids, k in zip(input_ids.cpu(), keep.cpu())]
    else:
        prompts = [list(p) for p in input_ids]
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one id")
    stop = set([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or ()))
    device = model.input_table().device
    if do_sample and generator is None and seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)

    batch, longest = len(prompts), max(len(p) for p in prompts)
    ids = torch.zeros(batch, longest, dtype=torch.long, device=device)
    mask = torch.zeros(batch, longest, dtype=torch.bool, device=device)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt) :] = torch.tensor(prompt, device=device)
        mask[row, longest - len(prompt) :] = True

    cache = HyperCache(model, batch)
    cache.feed(prompts)
    cache.encode_inputs(prompts)
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)
    hidden, base_logits, past = model.run_base(
        model.embed(ids, cache.input_rows),
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        last_only=True,
    )
    next_position = positions[:, -1:] + 1

    sequences: list[list[int]] = [[] for _ in prompts]
    finished = [False] * batch
    step_logits = []
    for step in range(max_new_tokens):
        logits = cache.logits(model, hidden, base_logits)
        if output_logits:
            step_logits.append(logits)
        chosen = _choose(
            logits, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
        )
        new_ids: list[list[int] | None] = []
        for row, token in enumerate(chosen.tolist()):
            if finished[row]:
                new_ids.append(None)
                continue
            sequences[row].append(token)
            finished[row] = token in stop
            new_ids.append(None if finished[row] else [token])
        if all(finished) or step == max_new_tokens - 1:
            break
        cache.feed(new_ids)
        cache.encode_inputs(new_ids)
        # Finished rows keep running on a harmless base id; their outputs are ignored.
        active = torch.tensor([ids is not None for ids in new_ids], device=device)
        chosen = chosen.masked_fill(~active, 0)
        mask = F.pad(mask, (0, 1), value=True)
        hidden, base_logits, past = model.run_base(
            model.embed(chosen.unsqueeze(1), cache.input_rows),
            attention_mask=mask,
            position_ids=next_position,
            past_key_values=past,
            use_cache=True,
        )
        next_position = next_position + 1
    return GenerationOutput(
        sequences=sequences, logits=torch.stack(step_logits, dim=1) if output_logits else None
    )


def expand_generated(codec: LZWCodec, prompt: Sequence[int], generated: Sequence[int]) -> list[int]:
    """Base ids of ``generated`` (hyper ids may name entries the prompt created)."""
    decoder = codec.decoder()
    decoder.feed(list(prompt))
    return decoder.decode(list(generated))
