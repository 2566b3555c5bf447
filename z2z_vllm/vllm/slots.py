"""Per-request codebook state of a serving batch, in fixed-size tensors indexed by slot.

A request takes a slot when it is first scheduled and gives it back when the runner drops it.
When all slots are taken (preempted requests keep theirs while new ones run), the slot of a
request that is not in the current step is reused; that request replays its codebook from
position 0 when it is scheduled again. Each slot holds:

- on the host: the request's incremental ``LZWDecoder`` and the base ids of its entries;
- on the model's device: hyper output rows ``[S, C, H]`` (for logits), hyper input rows
  ``[S, C, H]`` (encoded only when an entry is first read as input), the number of entries
  defined ``[S]`` and the KwKwK candidate row ``[S, H]`` with its flag ``[S]``.

Per step, :meth:`HyperSlots.begin_step` advances each request's decoder over the request's own
token list up to the end of its scheduled range (not over the ids the model sees, which skip
prefix-cached tokens), encodes what changed in one batched call per encoder (rows are cached by
entry content across requests: :class:`RowCache`), and records which
slot each scheduled token and each logits row belongs to. A request whose decoder has read
past the start of its scheduled range (preemption with recompute, discarded tokens) is replayed
from position 0: the codebook is a function of the token prefix, so replaying is always right.

With ``device_codebooks`` (default on a GPU) decode steps skip the host: a copy of each
decoder's state lives on the device (:class:`z2z_vllm.ops.CodebookState`), and a request that
reads one token where that copy stands is advanced by the batched update kernel, its new rows
encoded from what the kernel returns, with no host synchronisation. Its host decoder then lags
and catches up from the token list the next time the request takes the host path (prefill
chunks, replays), which also re-seeds the device copy.

No vLLM imports: :mod:`z2z_vllm.vllm.patches` turns runner state into :class:`ScheduledRequest`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from z2z_vllm import ops
from z2z_vllm.codec import LZWCodec

__all__ = ["HyperSlots", "ScheduledRequest"]

Encoder = Callable[[torch.Tensor], torch.Tensor]  # [N, W] base ids (-1 padded) -> [N, H]


@dataclass(frozen=True)
class ScheduledRequest:
    """One request of a step: its tokens so far and the positions ``begin .. end-1`` it runs."""

    req_id: str
    prompt: Sequence[int]
    outputs: Sequence[int]
    begin: int
    end: int

    def tokens(self, start: int, stop: int) -> list[int]:
        """Token list positions ``start .. stop-1`` (prompt, then outputs)."""
        split = len(self.prompt)
        head = list(self.prompt[start : min(stop, split)])
        return head + list(self.outputs[max(start - split, 0) : max(stop - split, 0)])


def _padded(rows: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [-1] * (width - len(r)) for r in rows], dtype=torch.long, device=device)


class RowCache:
    """Encoder rows by entry content, shared by every request: a row depends only on the entry's
    base ids, and common entries (and KwKwK candidates) recur across requests and steps, so most
    steps encode little. A ring of ``capacity`` rows; the oldest insert is overwritten first."""

    def __init__(self, encode: Encoder, *, capacity: int, hidden_size: int, device, dtype: torch.dtype) -> None:
        self.encode = encode
        self.rows = torch.zeros(capacity, hidden_size, device=device, dtype=dtype)
        self._index: dict[tuple[int, ...], int] = {}
        self._keys: list[tuple[int, ...] | None] = [None] * capacity
        self._next = 0

    def __call__(self, entries: Sequence[tuple[int, ...]]) -> torch.Tensor:
        """Rows [N, H] of ``entries`` (tuples of base ids), encoding the ones not cached."""
        device = self.rows.device
        out = self.rows.new_empty(len(entries), self.rows.shape[1])
        hits = [(i, self._index[e]) for i, e in enumerate(entries) if e in self._index]
        if hits:  # read before inserting: an insert may overwrite a row read here
            where, index = (torch.tensor(column, device=device) for column in zip(*hits))
            out[where] = self.rows[index]
        missing = list(dict.fromkeys(e for e in entries if e not in self._index))
        if missing:
            encoded = self.encode(_padded(missing, device)).to(self.rows.dtype)
            position = {key: row for row, key in enumerate(missing)}
            misses = [(i, position[e]) for i, e in enumerate(entries) if e in position]
            where, index = (torch.tensor(column, device=device) for column in zip(*misses))
            out[where] = encoded[index]
            self._insert(missing[-len(self._keys) :], encoded[-len(self._keys) :])
        return out

    def clear(self) -> None:
        """Forgets every row (the encoder's weights changed)."""
        self._index.clear()
        self._keys = [None] * len(self._keys)
        self._next = 0

    def _insert(self, keys: list[tuple[int, ...]], rows: torch.Tensor) -> None:
        positions = []
        for key in keys:
            position = self._next
            self._next = (self._next + 1) % len(self._keys)
            evicted = self._keys[position]
            if evicted is not None:
                del self._index[evicted]
            self._keys[position] = key
            self._index[key] = position
            positions.append(position)
        self.rows[torch.tensor(positions, device=self.rows.device)] = rows


def _write_rows(table: torch.Tensor, slots: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> None:
    """``table[slots[i], index[i]] = rows[i]`` where ``index[i] >= 0``, without a host sync:
    the other rows write back what they read (their (slot, index) pairs are distinct)."""
    keep = (index >= 0).unsqueeze(1)
    index = index.clamp(min=0)
    table[slots, index] = torch.where(keep, rows.to(table.dtype), table[slots, index])


class HyperSlots:
    """Codebooks of up to ``num_slots`` running requests (module docstring)."""

    def __init__(
        self,
        *,
        codec: LZWCodec,
        num_slots: int,
        hidden_size: int,
        encode_inputs: Encoder,
        encode_outputs: Encoder,
        device: torch.device,
        dtype: torch.dtype,
        use_kernels: bool | None = None,
        device_codebooks: bool | None = None,
        cache_rows: int = 16384,
    ) -> None:
        self.codec = codec
        self.num_slots = num_slots
        self.vocab_size = codec.initial_vocab_size
        self.codebook_size = codec.max_codebook_size
        S, C, H = num_slots, self.codebook_size, hidden_size
        self.input_cache = RowCache(encode_inputs, capacity=cache_rows, hidden_size=H, device=device, dtype=dtype)
        self.output_cache = RowCache(encode_outputs, capacity=cache_rows, hidden_size=H, device=device, dtype=dtype)
        self.output_rows = torch.zeros(S, C, H, device=device, dtype=dtype)
        self.input_rows = torch.zeros(S, C, H, device=device, dtype=dtype)
        self.num_known = torch.zeros(S, dtype=torch.long, device=device)
        self.candidate_rows = torch.zeros(S, H, device=device, dtype=dtype)
        self.has_candidate = torch.zeros(S, dtype=torch.bool, device=device)
        # None: the fused kernels where they run compiled (CUDA), torch elsewhere.
        self.use_kernels = self.num_known.device.type == "cuda" if use_kernels is None else use_kernels
        self.encode_inputs, self.encode_outputs = encode_inputs, encode_outputs
        self.device_codebooks = self.use_kernels if device_codebooks is None else device_codebooks
        self.state = ops.CodebookState.empty(
            num_slots=S, vocab_size=self.vocab_size, codebook_size=C, max_subtokens=codec.max_subtokens,
            disabled_ids=codec.disabled_ids, pad_token_id=codec.pad_token_id, device=self.num_known.device,
        ) if self.device_codebooks else None  # fmt: skip
        self._device_position = np.full(S, -1, dtype=np.int64)  # ids the device copy has read; -1: stale

        self._slot_of: dict[str, int] = {}
        self._free = list(range(S - 1, -1, -1))  # pop() hands out slot 0 first
        self._step = 0
        self._last_step = np.zeros(S, dtype=np.int64)  # the step each slot was last scheduled in
        self._decoders = [codec.decoder() for _ in range(S)]
        self._entries: list[list[tuple[int, ...]]] = [[] for _ in range(S)]  # base ids per entry
        self._input_ready = np.zeros((S, C), dtype=bool)
        # Host copies of num_known / has_candidate, written to the device once per step.
        self._num_known_host = np.zeros(S, dtype=np.int64)
        self._has_candidate_host = np.zeros(S, dtype=bool)
        # Set by begin_step, consumed by embed / logits (None outside a real step: dummy runs).
        self._token_slots: torch.Tensor | None = None
        self._row_slots: torch.Tensor | None = None
        self._columns_used = 0

    # -- slot bookkeeping ---------------------------------------------------------------------

    @property
    def num_active(self) -> int:
        return len(self._slot_of)

    def slot(self, req_id: str) -> int:
        """The request's slot, taking a free one (or one idle in this step) on first sight."""
        slot = self._slot_of.get(req_id)
        if slot is None:
            slot = self._free.pop() if self._free else self._evict_idle(req_id)
            self._slot_of[req_id] = slot
            self._reset(slot)
        self._last_step[slot] = self._step
        return slot

    def _evict_idle(self, req_id: str) -> int:
        """Takes the slot of the request scheduled longest ago that is not in this step."""
        idle = {slot: owner for owner, slot in self._slot_of.items() if self._last_step[slot] < self._step}
        if not idle:
            raise RuntimeError(
                f"no free codebook slot for request {req_id!r}: all {self.num_slots} are in this step"
            )
        slot = min(idle, key=lambda s: self._last_step[s])
        del self._slot_of[idle[slot]]
        return slot

    def release(self, req_id: str) -> None:
        """Frees the request's slot (finished, aborted); unknown ids are ignored."""
        slot = self._slot_of.pop(req_id, None)
        if slot is not None:
            self._free.append(slot)

    def invalidate_rows(self) -> None:
        """Drops every hyper row encoded so far, for when the encoders' or the base model's
        weights change (``load_weights``, vLLM's ``reload_weights``): the row caches empty, and
        each request keeps its slot but replays its codebook at its next step, encoding its rows
        with the new weights."""
        self.input_cache.clear()
        self.output_cache.clear()
        for slot in range(self.num_slots):
            self._reset(slot)

    def _reset(self, slot: int) -> None:
        self._device_position[slot] = -1
        self._decoders[slot].reset()
        self._entries[slot] = []
        self._input_ready[slot] = False
        self._num_known_host[slot] = 0
        self._has_candidate_host[slot] = False

    # -- per step -----------------------------------------------------------------------------

    def begin_step(self, requests: Sequence[ScheduledRequest]) -> None:
        """Brings every scheduled request's codebook to the end of its scheduled range and
        encodes the rows this step needs. Raises ``ValueError`` on an invalid token list."""
        V = self.vocab_size
        device = self.num_known.device
        self._step += 1
        new_keys: list[tuple[int, int]] = []  # (slot, entry) whose output row is due
        candidates: list[tuple[int, list[int]]] = []
        reads: list[tuple[int, int]] = []  # (slot, entry) read as input this step
        slots: list[int] = []
        counts: list[int] = []
        on_device: list[tuple[int, int, int]] = []  # (slot, token, position) of device decode steps
        seeds: list[int] = []  # slots whose device copy follows their host decoder after this step
        for request in requests:
            slot = self.slot(request.req_id)
            slots.append(slot)
            counts.append(request.end - request.begin)
            if self.device_codebooks:
                if request.end == request.begin + 1 and self._device_position[slot] == request.begin:
                    on_device.append((slot, request.tokens(request.begin, request.end)[0], request.begin))
                    continue
                seeds.append(slot)
            decoder = self._decoders[slot]
            if decoder.position > request.begin:
                self._reset(slot)
            entries = self._entries[slot]
            for hyper_id, subtokens in decoder.feed(request.tokens(decoder.position, request.end)):
                new_keys.append((slot, hyper_id - V))
                entries.append(tuple(subtokens))
            candidate = decoder.candidate
            self._has_candidate_host[slot] = candidate is not None
            if candidate is not None:
                candidates.append((slot, tuple(candidate[1])))
            self._num_known_host[slot] = len(entries)
            reads.extend(
                (slot, token - V) for token in request.tokens(request.begin, request.end) if token >= V
            )

        self._encode_outputs(new_keys, candidates, device)
        self._encode_inputs(reads, device)
        self.num_known.copy_(torch.from_numpy(self._num_known_host))
        self.has_candidate.copy_(torch.from_numpy(self._has_candidate_host))
        # Columns any row of this step can use: defined entries plus one KwKwK candidate (all of
        # them when the device advanced some codebook: the host does not know how far).
        self._columns_used = min(int(self._num_known_host[slots].max(initial=0)) + 1, self.codebook_size)
        for slot in seeds:
            decoder = self._decoders[slot]
            self.state.load_(slot, self._entries[slot], decoder.known_at, decoder.buffer)
            self._device_position[slot] = decoder.position
        if on_device:
            self._advance_on_device(on_device, device)
            self._columns_used = self.codebook_size
        self._row_slots = torch.tensor(slots, dtype=torch.long, device=device)
        self._token_slots = torch.repeat_interleave(
            self._row_slots, torch.tensor(counts, dtype=torch.long, device=device)
        )

    def _advance_on_device(self, steps: list[tuple[int, int, int]], device: torch.device) -> None:
        """Decode steps of ``(slot, token, position)``: the batched codebook update, then the rows
        it makes due (the entry created, the next KwKwK candidate, the input row of a hypertoken
        read), all on the device. Rows are encoded for every request of the batch, needed or not:
        choosing would need the kernel's results on the host."""
        slots, tokens, positions = (torch.tensor(column, device=device) for column in zip(*steps))
        update = ops.codebook_update(self.state, tokens, slots, positions)
        slots = slots.long()
        created = update.created.long()
        content = self.state.entries[slots, created.clamp(min=0)].long()
        rows = self.encode_outputs(torch.cat([content, update.candidate.long()]))
        _write_rows(self.output_rows, slots, created, rows[: len(steps)])
        self.candidate_rows[slots] = rows[len(steps) :].to(self.candidate_rows.dtype)
        self.has_candidate[slots] = update.candidate[:, 0] >= 0
        self.num_known[slots] = self.state.num_entries[slots].long()
        read = torch.where(tokens >= self.vocab_size, tokens - self.vocab_size, -1).long()
        _write_rows(self.input_rows, slots, read, self.encode_inputs(update.expansion.long()))
        self._device_position[[slot for slot, _, _ in steps]] += 1

    def _encode_outputs(
        self, keys: list[tuple[int, int]], candidates: list[tuple[int, tuple[int, ...]]], device: torch.device
    ) -> None:
        if not keys and not candidates:
            return
        subtokens = [self._entries[slot][entry] for slot, entry in keys] + [ids for _, ids in candidates]
        rows = self.output_cache(subtokens)
        if keys:
            slot_index, entry_index = (torch.tensor(column, device=device) for column in zip(*keys))
            self.output_rows[slot_index, entry_index] = rows[: len(keys)]
        if candidates:
            slot_index = torch.tensor([slot for slot, _ in candidates], device=device)
            self.candidate_rows[slot_index] = rows[len(keys) :]

    def _encode_inputs(self, reads: list[tuple[int, int]], device: torch.device) -> None:
        due = sorted({key for key in reads if not self._input_ready[key]})
        if not due:
            return
        rows = self.input_cache([self._entries[slot][entry] for slot, entry in due])
        slot_index, entry_index = (torch.tensor(column, device=device) for column in zip(*due))
        self.input_rows[slot_index, entry_index] = rows
        for key in due:
            self._input_ready[key] = True

    # -- model hooks --------------------------------------------------------------------------

    def embed(self, input_ids: torch.Tensor, embed_base: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Input embeddings of the step's flattened ``input_ids`` [T]: base rows from
        ``embed_base``, hyper rows from the token's slot. Tokens past the step's scheduled ones
        (padding) and every token outside a step (dummy runs) embed as base ids."""
        V = self.vocab_size
        is_hyper = input_ids >= V
        embeds = embed_base(input_ids.masked_fill(is_hyper, 0))
        token_slots, self._token_slots = self._token_slots, None
        if token_slots is None:
            return embeds
        # Every token's row is gathered and the base ones are masked out: selecting the hyper
        # tokens first would need their count on the host (a sync per step on a GPU).
        n = min(len(token_slots), len(input_ids))
        rows = self.input_rows[token_slots[:n], (input_ids[:n] - V).clamp(min=0)]
        embeds[:n] = torch.where(is_hyper[:n, None], rows.to(embeds.dtype), embeds[:n])
        return embeds

    def logits(self, hidden: torch.Tensor, base_logits: torch.Tensor) -> torch.Tensor:
        """Logits [R, V + C] of the step's logits rows (one per request, in step order): base
        logits, then ``hidden . row`` for defined entries and the KwKwK candidate, -inf
        elsewhere. Outside a step every hyper column is -inf.

        On a GPU (or with ``use_kernels``) the hyper columns come from the fused masked-logits
        kernel (:func:`z2z_vllm.ops.hyper_logits`); on CPU from torch over the columns in use."""
        row_slots, self._row_slots = self._row_slots, None
        num_rows, V, C = hidden.shape[0], self.vocab_size, self.codebook_size
        if row_slots is not None and len(row_slots) != num_rows:
            raise RuntimeError(
                f"z2z: {num_rows} logits rows for {len(row_slots)} scheduled requests "
                "(only one sampled position per request is supported)"
            )
        if self.use_kernels:
            logits = base_logits.new_empty(num_rows, V + C)
            logits[:, :V] = base_logits[:, :V]
            if row_slots is None:
                row_slots = torch.full((num_rows,), -1, dtype=torch.long, device=hidden.device)
            return ops.hyper_logits(
                hidden, self.output_rows, row_slots, self.num_known, self.candidate_rows, self.has_candidate, logits
            )
        hyper = base_logits.new_full((num_rows, C), float("-inf"))
        if row_slots is not None:
            used = self._columns_used
            rows = self.output_rows[row_slots, :used].to(hidden.dtype)  # [R, used, H]
            scores = torch.nn.functional.pad(torch.einsum("rh,rch->rc", hidden, rows), (0, C - used))
            columns = torch.arange(C, device=hidden.device)
            known = columns < self.num_known[row_slots].unsqueeze(1)
            candidate_logit = (hidden * self.candidate_rows[row_slots].to(hidden.dtype)).sum(-1, keepdim=True)
            is_candidate = self.has_candidate[row_slots].unsqueeze(1) & (
                columns == self.num_known[row_slots].unsqueeze(1)
            )
            hyper = torch.where(known, scores, hyper)
            hyper = torch.where(is_candidate, candidate_logit, hyper).to(base_logits.dtype)
        return torch.cat([base_logits[:, :V], hyper], dim=-1)
