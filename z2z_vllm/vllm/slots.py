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
slot each scheduled token and each logits row belongs to. The decoders advance in one native
call per step (:meth:`LZWCodec.advance_requests`, GIL released) that returns flat arrays of
what changed, so no Python loop runs per entry or token; ``native_host=False`` takes the same
step in Python (:class:`PythonHostPath`, the reference the native path is tested against).
A request whose decoder has read past the start of its scheduled range (preemption with
recompute, discarded tokens) is replayed from position 0: the codebook is a function of the
token prefix, so replaying is always right.

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
from typing import NamedTuple

import numpy as np
import torch

from z2z_vllm import ops
from z2z_vllm.codec import LZWCodec, RowIndex

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


def _on(device: torch.device, array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).to(device)


class RowCache:
    """Encoder rows by entry content, shared by every request: a row depends only on the entry's
    base ids, and common entries (and KwKwK candidates) recur across requests and steps, so most
    steps encode little. A ring of ``capacity`` rows; the oldest insert is overwritten first.
    Contents are looked up natively (:class:`z2z_vllm.codec.RowIndex`)."""

    def __init__(
        self, encode: Encoder, *, capacity: int, max_subtokens: int, hidden_size: int, device, dtype: torch.dtype
    ) -> None:
        self.encode = encode
        self.rows = torch.zeros(capacity, hidden_size, device=device, dtype=dtype)
        self._index = RowIndex(capacity, max_subtokens)

    def __call__(self, entries: np.ndarray) -> torch.Tensor:
        """Rows [N, H] of ``entries`` ([N, W] base ids, -1 padded), encoding the ones not cached."""
        device = self.rows.device
        positions, missing_first, missing_of = self._index.find(entries)
        if not len(missing_first):
            return self.rows.index_select(0, _on(device, positions))
        # Integer indices throughout: boolean-mask indexing cost several times more per step.
        out = self.rows.new_empty(len(entries), self.rows.shape[1])
        found = np.flatnonzero(positions >= 0)
        if len(found):  # read before inserting: an insert may overwrite a row read here
            out.index_copy_(0, _on(device, found), self.rows.index_select(0, _on(device, positions[found])))
        missing = entries[missing_first]
        width = int((missing >= 0).sum(1).max())  # the encoder sees no all-padding columns
        encoded = self.encode(_on(device, missing[:, :width].astype(np.int64))).to(self.rows.dtype)
        not_found = np.flatnonzero(positions < 0)
        out.index_copy_(0, _on(device, not_found), encoded.index_select(0, _on(device, missing_of[not_found])))
        capacity = self._index.capacity
        self.rows.index_copy_(0, _on(device, self._index.insert(missing[-capacity:])), encoded[-capacity:])
        return out

    def clear(self) -> None:
        """Forgets every row (the encoder's weights changed)."""
        self._index.clear()


class StepAdvance(NamedTuple):
    """What advancing the decoders of a step changed (arrays; see
    :meth:`z2z_vllm.codec.LZWCodec.advance_requests`, which returns them natively). R requests,
    K entries created, Q hypertokens read in the scheduled ranges; contents [., W] -1 padded;
    requests not advanced on the host have 0 / False / -1."""

    first_token: np.ndarray  # [R] the id at each request's begin (-1: none)
    replayed: np.ndarray  # [R] bool: the decoder was reset and replayed from position 0
    num_entries: np.ndarray  # [R]
    created_slot: np.ndarray  # [K]
    created_index: np.ndarray  # [K]
    created_content: np.ndarray  # [K, W]
    has_candidate: np.ndarray  # [R] bool
    candidate: np.ndarray  # [R, W]: the KwKwK entry, all -1 where none
    read_slot: np.ndarray  # [Q]
    read_index: np.ndarray  # [Q]
    read_content: np.ndarray  # [Q, W]


def _padded(contents: Sequence[Sequence[int]], width: int) -> np.ndarray:
    array = np.full((len(contents), width), -1, dtype=np.int32)
    for row, content in enumerate(contents):
        array[row, : len(content)] = content
    return array


class NativeHostPath:
    """The decoders of every slot, advanced in one native call per step."""

    def __init__(self, codec: LZWCodec, num_slots: int) -> None:
        self.codec = codec
        self.decoders = [codec.decoder() for _ in range(num_slots)]

    def reset(self, slot: int) -> None:
        self.decoders[slot].reset()

    def advance(self, requests: Sequence[ScheduledRequest], slots: np.ndarray, host: np.ndarray) -> StepAdvance:
        return StepAdvance(**self.codec.advance_requests(self.decoders, slots, requests, host))


class PythonHostPath(NativeHostPath):
    """The same step with a Python loop per request, entry and token: the reference the native
    path is tested and benchmarked against."""

    def __init__(self, codec: LZWCodec, num_slots: int) -> None:
        super().__init__(codec, num_slots)
        self._entries: list[list[tuple[int, ...]]] = [[] for _ in range(num_slots)]  # base ids per entry

    def reset(self, slot: int) -> None:
        super().reset(slot)
        self._entries[slot] = []

    def advance(self, requests: Sequence[ScheduledRequest], slots: np.ndarray, host: np.ndarray) -> StepAdvance:
        V, R = self.codec.initial_vocab_size, len(requests)
        first_token = np.full(R, -1, dtype=np.int64)
        replayed, has_candidate = np.zeros(R, dtype=bool), np.zeros(R, dtype=bool)
        num_entries = np.zeros(R, dtype=np.int64)
        created: list[tuple[int, int, tuple[int, ...]]] = []
        candidates: list[tuple[int, ...]] = []
        reads: list[tuple[int, int, tuple[int, ...]]] = []
        for r, (request, slot) in enumerate(zip(requests, slots.tolist())):
            scheduled = request.tokens(request.begin, request.end)
            first_token[r] = scheduled[0] if scheduled else -1
            if not host[r]:
                candidates.append(())
                continue
            decoder, entries = self.decoders[slot], self._entries[slot]
            if decoder.position > request.begin:
                self.reset(slot)
                replayed[r] = True
            for hyper_id, subtokens in decoder.feed(request.tokens(decoder.position, request.end)):
                created.append((slot, hyper_id - V, subtokens))
                entries.append(subtokens)
            candidate = decoder.candidate
            has_candidate[r] = candidate is not None
            candidates.append(candidate[1] if candidate is not None else ())
            num_entries[r] = len(entries)
            reads.extend((slot, token - V, entries[token - V]) for token in scheduled if token >= V)
        width = max([1] + [len(c) for _, _, c in created] + [len(c) for c in candidates] + [len(c) for _, _, c in reads])
        return StepAdvance(
            first_token, replayed, num_entries,
            np.array([s for s, _, _ in created], dtype=np.int64), np.array([e for _, e, _ in created], dtype=np.int64),
            _padded([c for _, _, c in created], width), has_candidate, _padded(candidates, width),
            np.array([s for s, _, _ in reads], dtype=np.int64), np.array([e for _, e, _ in reads], dtype=np.int64),
            _padded([c for _, _, c in reads], width),
        )  # fmt: skip


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
        native_host: bool = True,
    ) -> None:
        self.codec = codec
        self.num_slots = num_slots
        self.vocab_size = codec.initial_vocab_size
        self.codebook_size = codec.max_codebook_size
        S, C, M, H = num_slots, self.codebook_size, codec.max_subtokens, hidden_size
        self.input_cache, self.output_cache = (
            RowCache(encode, capacity=cache_rows, max_subtokens=M, hidden_size=H, device=device, dtype=dtype)
            for encode in (encode_inputs, encode_outputs)
        )
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
        self.host = (NativeHostPath if native_host else PythonHostPath)(codec, S)
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
        self.host.reset(slot)
        self._input_ready[slot] = False
        self._num_known_host[slot] = 0
        self._has_candidate_host[slot] = False

    # -- per step -----------------------------------------------------------------------------

    def begin_step(self, requests: Sequence[ScheduledRequest]) -> None:
        """Brings every scheduled request's codebook to the end of its scheduled range and
        encodes the rows this step needs. Raises ``ValueError`` on an invalid token list (the
        step's requests then replay their codebooks at their next step)."""
        device = self.num_known.device
        self._step += 1
        slots = np.array([self._slot_of.get(request.req_id, -1) for request in requests], dtype=np.int64)
        self._last_step[slots[slots >= 0]] = self._step  # before new requests take idle slots
        for r in np.flatnonzero(slots < 0).tolist():
            slots[r] = self.slot(requests[r].req_id)
        host = np.ones(len(slots), dtype=bool)
        if self.device_codebooks:  # decode steps where the device copy stands run there
            begins = np.array([request.begin for request in requests], dtype=np.int64)
            ends = np.array([request.end for request in requests], dtype=np.int64)
            host = (ends != begins + 1) | (self._device_position[slots] != begins)
        try:
            step = self.host.advance(requests, slots, host)
        except ValueError:
            for slot in slots.tolist():
                self._reset(slot)
            raise
        self._input_ready[slots[step.replayed]] = False
        host_slots = slots[host]
        self._num_known_host[host_slots] = step.num_entries[host]
        self._has_candidate_host[host_slots] = step.has_candidate[host]

        self._encode_outputs(step, slots, device)
        self._encode_inputs(step, device)
        self.num_known.copy_(torch.from_numpy(self._num_known_host))
        self.has_candidate.copy_(torch.from_numpy(self._has_candidate_host))
        # Columns any row of this step can use: defined entries plus one KwKwK candidate (all of
        # them when the device advanced some codebook: the host does not know how far).
        self._columns_used = min(int(self._num_known_host[slots].max(initial=0)) + 1, self.codebook_size)
        if self.device_codebooks:
            for slot in host_slots.tolist():  # the device copy follows the host decoder again
                decoder = self.host.decoders[slot]
                self.state.load_(slot, list(decoder.codebook.values()), decoder.known_at, decoder.buffer)
                self._device_position[slot] = decoder.position
            if not host.all():
                on_device = ~host
                self._advance_on_device(slots[on_device], step.first_token[on_device], device)
                self._columns_used = self.codebook_size
        self._row_slots = _on(device, slots)
        # np.repeat, not torch.repeat_interleave: the latter cost ~10 ms a step on a loaded CPU.
        counts = np.array([request.end - request.begin for request in requests], dtype=np.int64)
        self._token_slots = _on(device, np.repeat(slots, counts))

    def _advance_on_device(self, slots: np.ndarray, tokens: np.ndarray, device: torch.device) -> None:
        """Decode steps of ``slots`` reading ``tokens`` at their device copy's position: the
        batched codebook update, then the rows it makes due (the entry created, the next KwKwK
        candidate, the input row of a hypertoken read), all on the device. Rows are encoded for
        every request of the batch, needed or not: choosing would need the kernel's results on
        the host."""
        positions = self._device_position[slots]
        slots_on, tokens_on = _on(device, slots), _on(device, tokens)
        update = ops.codebook_update(self.state, tokens_on, slots_on, _on(device, positions))
        created = update.created.long()
        content = self.state.entries[slots_on, created.clamp(min=0)].long()
        rows = self.encode_outputs(torch.cat([content, update.candidate.long()]))
        _write_rows(self.output_rows, slots_on, created, rows[: len(slots)])
        self.candidate_rows[slots_on] = rows[len(slots) :].to(self.candidate_rows.dtype)
        self.has_candidate[slots_on] = update.candidate[:, 0] >= 0
        self.num_known[slots_on] = self.state.num_entries[slots_on].long()
        read = torch.where(tokens_on >= self.vocab_size, tokens_on - self.vocab_size, -1).long()
        _write_rows(self.input_rows, slots_on, read, self.encode_inputs(update.expansion.long()))
        self._device_position[slots] += 1

    def _encode_outputs(self, step: StepAdvance, slots: np.ndarray, device: torch.device) -> None:
        """Output rows of the entries created and the KwKwK candidates, in one encoder call."""
        with_candidate = np.flatnonzero(step.has_candidate)
        created = len(step.created_slot)
        if not created and not len(with_candidate):
            return
        rows = self.output_cache(np.concatenate([step.created_content, step.candidate[with_candidate]]))
        if created:
            self.output_rows[_on(device, step.created_slot), _on(device, step.created_index)] = rows[:created]
        if len(with_candidate):
            self.candidate_rows[_on(device, slots[with_candidate])] = rows[created:]

    def _encode_inputs(self, step: StepAdvance, device: torch.device) -> None:
        """Input rows of the hypertokens read whose rows their slot does not hold yet."""
        keys, first = np.unique(step.read_slot * self.codebook_size + step.read_index, return_index=True)
        due = ~self._input_ready.ravel()[keys]
        keys, first = keys[due], first[due]
        if not len(keys):
            return
        rows = self.input_cache(step.read_content[first])
        slot_index, entry_index = np.divmod(keys, self.codebook_size)
        self.input_rows[_on(device, slot_index), _on(device, entry_index)] = rows
        self._input_ready.ravel()[keys] = True

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
