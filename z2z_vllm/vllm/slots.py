"""Per-request codebook state of a serving batch, in fixed-size tensors indexed by slot.

A request takes a slot when it is first scheduled and gives it back when the runner drops it.
When all slots are taken (preempted requests keep theirs while new ones run), the slot of a
request that is not in the current step is reused; that request replays its codebook from
position 0 when it is scheduled again.

Hyper rows live in one content-addressed table shared by all requests (:class:`RowTable`):
output rows and input rows ``[R, H]`` (same row numbers), one row per distinct entry content in
flight plus unreferenced rows kept as a cache, growing (doubling) when every row is referenced.
Each slot holds:

- on the host: the request's incremental ``LZWDecoder`` and the row of each of its entries
  (a numpy mirror of the index below: the slot's references to the table are counted from it);
- on the model's device: the index ``[S, C]`` int32 naming the table row of each defined entry
  (-1: none), the number of entries defined ``[S]`` and the KwKwK candidate row ``[S, H]`` with
  its flag ``[S]``.

Two requests with the same entry share its row; a row is encoded once per content while any
request (or the cache) holds it, its input row only when the entry is first read as input. A
slot's reset, replay or release drops its references; a referenced row is never overwritten.
KwKwK candidates are copied from the table where it holds their content, else encoded each
time and not stored (a request's candidate changes every step). Memory: 2 x R x H values (R:
distinct entries in flight, 25-35 % of S x C on code in ``benchmarks/slots_bench.py``) instead
of 2 x S x C x H, plus the index (S x C x 4 bytes).

Per step, :meth:`HyperSlots.begin_step` advances each request's decoder over the request's own
token list up to the end of its scheduled range (not over the ids the model sees, which skip
prefix-cached tokens), looks up and encodes what changed in one batched call per encoder, and
records which slot each scheduled token and each logits row belongs to. The decoders advance in
one native call per step (:meth:`LZWCodec.advance_requests`, GIL released) that returns flat
arrays of what changed, so no Python loop runs per entry or token; ``native_host=False`` takes
the same step in Python (:class:`PythonHostPath`, the reference the native path is tested
against). A request whose decoder has read past the start of its scheduled range (preemption
with recompute, discarded tokens) is replayed from position 0: the codebook is a function of
the token prefix, so replaying is always right.

Speculative decoding: a request scheduled with draft ids (positions from ``num_verified`` to
``ends`` in :class:`StepBatch`; ``ScheduledRequest.drafts``) has a
logits row for its last verified token and one per draft; each row is masked by the entries
known after its own position (those the drafts define included) and gets the KwKwK candidate of
that position. Before reading the drafts the decoder keeps its state (a rewind point); at the
next step, whose range starts after the accepted drafts, it returns to that point and reads the
accepted ids from the token list, and the rows of entries only rejected drafts defined lose
their references. A draft id that cannot come next is not read: its logit is -inf, so vLLM's
rejection sampler rejects it.

With ``device_codebooks`` (default on a GPU) decode steps skip the host: a copy of each
decoder's state lives on the device (:class:`z2z_vllm.ops.CodebookState`), and a request that
reads one token where that copy stands is advanced by the batched update kernel, with no host
synchronisation. The host cannot look up entries it has not seen, so before each such step it
reserves one fresh row for the entry the request may create and writes it into the index ahead
(entries are created in order); the device step encodes the new entry's row into it, and the
id read's input row into a per-slot row. The host decoder then lags and catches up from the token
list the next time the request takes the host path (prefill chunks, replays), which names the
new entries' rows by content, drops the reserved rows and re-seeds the device copy.

A step's requests arrive as arrays (:class:`StepBatch`, laid out as vLLM's ``InputBatch`` holds
them), so neither the runner nor this module loops over requests in Python on decode steps;
:meth:`StepBatch.of` packs readable per-request descriptions (:class:`ScheduledRequest`).

No vLLM imports: :mod:`z2z_vllm.vllm.patches` turns runner state into a :class:`StepBatch`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from z2z_vllm import ops
from z2z_vllm._codec import lookup
from z2z_vllm.codec import LZWCodec, RowIndex

__all__ = ["HyperSlots", "ScheduledRequest", "StepBatch"]

Encoder = Callable[[torch.Tensor], torch.Tensor]  # [N, W] base ids (-1 padded) -> [N, H]


@dataclass(frozen=True)
class ScheduledRequest:
    """One request of a step: its tokens so far and the positions ``begin .. end-1`` it runs.

    With speculative decoding, ``drafts`` are the draft ids scheduled after the outputs (the
    range then ends with them); the step has a logits row for the last output and each draft."""

    req_id: str
    prompt: Sequence[int]
    outputs: Sequence[int]
    begin: int
    end: int
    drafts: Sequence[int] = ()

    @property
    def verified_size(self) -> int:
        """Positions before this one hold the prompt and outputs; drafts follow."""
        return len(self.prompt) + len(self.outputs)


class StepBatch(NamedTuple):
    """The R requests of a step as arrays, laid out as vLLM's ``InputBatch`` holds them, so that
    the runner builds it without a loop over requests."""

    req_ids: Sequence[str]  # [R]
    token_ids: np.ndarray  # [>= R, L] int32: row r holds request r's prompt and outputs, then its drafts
    num_verified: np.ndarray  # [R] prompt + outputs; positions from here to ends are drafts
    begins: np.ndarray  # [R] first scheduled position
    ends: np.ndarray  # [R] end of the scheduled range (past the drafts, when there are any)

    @classmethod
    def of(cls, requests: Sequence[ScheduledRequest]) -> StepBatch:
        """Packs per-request descriptions (tests, benchmarks, callers outside vLLM)."""
        lists = [[*request.prompt, *request.outputs, *request.drafts] for request in requests]
        for request, ids in zip(requests, lists):
            if not 0 <= request.begin <= request.end <= len(ids):
                raise ValueError(
                    f"request {request.req_id!r}: scheduled range {request.begin} .. {request.end} is not within "
                    f"its {len(ids)} ids"
                )
        token_ids = np.zeros((len(requests), max(map(len, lists), default=0)), dtype=np.int32)
        for row, ids in enumerate(lists):
            token_ids[row, : len(ids)] = ids
        return cls(
            [request.req_id for request in requests], token_ids,
            np.array([request.verified_size for request in requests], dtype=np.int64),
            np.array([request.begin for request in requests], dtype=np.int64),
            np.array([request.end for request in requests], dtype=np.int64),
        )  # fmt: skip

    @property
    def num_logits_rows(self) -> np.ndarray:
        """[R] one per request, plus one per draft."""
        return 1 + np.maximum(self.ends - self.num_verified, 0)


def _on(device: torch.device, array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).to(device)


def _encode(encode: Encoder, contents: np.ndarray, device: torch.device) -> torch.Tensor:
    width = int((contents >= 0).sum(1).max())  # the encoder sees no all-padding columns
    return encode(_on(device, contents[:, :width].astype(np.int64)))


class RowTable:
    """Hyper output and input rows ``[R, H]`` by entry content, shared by every request: a row
    depends only on the entry's base ids, and common entries recur across requests and steps.
    Slots name rows through their index and hold one reference per entry
    (:class:`z2z_vllm.codec.RowIndex` keeps contents and counts natively). A row nobody
    references stays cached by content, reused least recently released first; when every row is
    referenced the table doubles. Input rows are encoded on first read as input (a ready flag per
    row), output rows when their content first gets a row.

    Rows are read only outside vLLM's compiled / CUDA-graph-captured base model (embedding
    composition before the static input buffer, ``compute_logits``), so the new tensors growth
    makes, at new addresses, are safe (they are not in vLLM's memory profile: pass
    ``HyperSlots(initial_rows=...)`` to allocate the expected peak up front)."""

    def __init__(
        self, encode_inputs: Encoder, encode_outputs: Encoder, *, capacity: int, max_subtokens: int,
        hidden_size: int, device, dtype: torch.dtype,
    ) -> None:  # fmt: skip
        self.encode_inputs, self.encode_outputs = encode_inputs, encode_outputs
        self.index = RowIndex(capacity, max_subtokens)
        self.output_rows = torch.zeros(capacity, hidden_size, device=device, dtype=dtype)
        self.input_rows = torch.zeros(capacity, hidden_size, device=device, dtype=dtype)
        self.input_ready = np.zeros(capacity, dtype=bool)

    def acquire_step(
        self, entries: np.ndarray, candidates: np.ndarray, has_candidate: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, torch.Tensor]:
        """The rows of a step's new ``entries`` ([K, W] base ids, -1 padded; one reference
        each, output rows encoded for contents the table lacked) and its KwKwK ``candidates``
        ([R, W] where ``has_candidate`` [R]): looked up, not stored. Returns (entry rows [K]
        int32, requests whose candidate the table holds, their rows, requests whose candidate it
        does not, those candidates' output rows [U, H], encoded in the same encoder call as the
        new entries). Rows returned are valid until the next acquire_step or reserve."""
        rows, fresh_rows, to_encode, cached, cached_rows, missing = self.index.acquire_step(
            entries, candidates, has_candidate
        )
        self._fit()
        device = self.output_rows.device
        encoded = self.output_rows[:0]
        if len(to_encode):
            encoded = self.encode_outputs(_on(device, to_encode)).to(self.output_rows.dtype)
        if len(fresh_rows):
            self.output_rows.index_copy_(0, _on(device, fresh_rows), encoded[: len(fresh_rows)])
            self.input_ready[fresh_rows] = False
        return rows, cached, cached_rows, missing, encoded[len(fresh_rows) :]

    def reserve(self, count: int) -> np.ndarray:
        """``count`` rows without content, one reference each (rows the device writes)."""
        rows = self.index.reserve(count)
        self._fit()
        self.input_ready[rows] = False
        return rows

    def release(self, rows: np.ndarray) -> None:
        if len(rows):
            self.index.release(rows)

    def ensure_inputs(self, rows: np.ndarray, contents: np.ndarray) -> None:
        """Encodes the input rows of ``rows`` (holding ``contents`` [N, W]) not encoded yet."""
        due = np.flatnonzero(~self.input_ready[rows])
        if not len(due):
            return
        rows, first = np.unique(rows[due].astype(np.int64), return_index=True)
        device = self.input_rows.device
        encoded = _encode(self.encode_inputs, contents[due[first]], device)
        self.input_rows.index_copy_(0, _on(device, rows), encoded.to(self.input_rows.dtype))
        self.input_ready[rows] = True

    def clear(self) -> None:
        """Forgets every content and input row (the encoders' weights changed)."""
        self.index.clear()
        self.input_ready[:] = False

    def _fit(self) -> None:
        """Grows the tensors after the index grew (old rows copied; see the class docstring)."""
        capacity, old = self.index.capacity, len(self.input_ready)
        if capacity == old:
            return
        grow = capacity - old
        self.output_rows = torch.cat([self.output_rows, self.output_rows.new_zeros(grow, self.output_rows.shape[1])])
        self.input_rows = torch.cat([self.input_rows, self.input_rows.new_zeros(grow, self.input_rows.shape[1])])
        self.input_ready = np.concatenate([self.input_ready, np.zeros(grow, dtype=bool)])


class StepAdvance(NamedTuple):
    """What advancing the decoders of a step changed (arrays; see
    :meth:`z2z_vllm.codec.LZWCodec.advance_requests`, which returns them natively). R requests,
    N logits rows (1 + drafts per request, in request order), K entries created, Q hypertokens
    read in the scheduled ranges; contents [., W] -1 padded; requests not advanced on the host
    have 0 / False / -1."""

    first_token: np.ndarray  # [R] the id at each request's begin (-1: none)
    replayed: np.ndarray  # [R] bool: the decoder was reset and replayed from position 0
    kept_entries: np.ndarray  # [R] entries kept before reading (all; before the drafts; 0)
    num_entries: np.ndarray  # [N] after each row's position
    created_slot: np.ndarray  # [K]
    created_index: np.ndarray  # [K]
    created_content: np.ndarray  # [K, W]
    has_candidate: np.ndarray  # [N] bool
    candidate: np.ndarray  # [N, W]: the KwKwK entry, all -1 where none
    read_slot: np.ndarray  # [Q]
    read_index: np.ndarray  # [Q]
    read_content: np.ndarray  # [Q, W]


class DraftRows(NamedTuple):
    """Mask state of a step's draft logits rows (speculative decoding), set by begin_step."""

    rows: torch.Tensor  # [D] their positions among the step's logits rows
    num_entries: torch.Tensor  # [D]
    has_candidate: torch.Tensor  # [D]
    candidate_rows: torch.Tensor  # [D, H]


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

    def advance(self, batch: StepBatch, slots: np.ndarray, host: np.ndarray) -> StepAdvance:
        return StepAdvance(**self.codec.advance_requests(
            self.decoders, slots, batch.token_ids, batch.num_verified, batch.begins, batch.ends, host
        ))  # fmt: skip


class PythonHostPath(NativeHostPath):
    """The same step with a Python loop per request, entry and token: the reference the native
    path is tested and benchmarked against. Its rewind points are decoder copies."""

    def __init__(self, codec: LZWCodec, num_slots: int) -> None:
        super().__init__(codec, num_slots)
        self._entries: list[list[tuple[int, ...]]] = [[] for _ in range(num_slots)]  # base ids per entry
        self._rewind_points: list = [None] * num_slots  # a copy of the decoder before its drafts

    def reset(self, slot: int) -> None:
        super().reset(slot)
        self._entries[slot] = []
        self._rewind_points[slot] = None

    def _rewind(self, slot: int, begin: int) -> bool:
        point = self._rewind_points[slot]
        if point is None or point.position > begin:
            return False
        self.decoders[slot] = point.copy()
        del self._entries[slot][point.num_entries :]
        return True

    def advance(self, batch: StepBatch, slots: np.ndarray, host: np.ndarray) -> StepAdvance:
        V, R = self.codec.initial_vocab_size, len(slots)
        first_token = np.full(R, -1, dtype=np.int64)
        replayed = np.zeros(R, dtype=bool)
        kept = np.zeros(R, dtype=np.int64)
        num_entries: list[int] = []
        created: list[tuple[int, int, tuple[int, ...]]] = []
        candidates: list[tuple[int, ...]] = []
        reads: list[tuple[int, int, tuple[int, ...]]] = []
        for r, (slot, rows) in enumerate(zip(slots.tolist(), batch.num_logits_rows.tolist())):
            token_list = batch.token_ids[r].tolist()
            begin, end, verified = int(batch.begins[r]), int(batch.ends[r]), int(batch.num_verified[r])
            first_token[r] = token_list[begin] if begin < max(end, verified) else -1
            if not host[r]:
                num_entries += [0] * rows
                candidates += [()] * rows
                continue
            if self.decoders[slot].position > begin and not self._rewind(slot, begin):
                self.reset(slot)
                replayed[r] = True
            decoder, entries = self.decoders[slot], self._entries[slot]
            kept[r] = len(entries)

            def read(tokens: list[int]) -> None:
                for hyper_id, subtokens in decoder.feed(tokens):
                    created.append((slot, hyper_id - V, subtokens))
                    entries.append(subtokens)

            read(token_list[decoder.position : max(end - rows, decoder.position)])
            refused = False
            for position in range(end - rows, end):
                if rows > 1 and position == verified:
                    self._rewind_points[slot] = decoder.copy()
                if not refused and position == decoder.position:
                    try:
                        read(token_list[position : position + 1])
                    except ValueError:
                        if position < verified:
                            raise
                        refused = True  # a draft that cannot come next: rejected by the model
                candidate = decoder.candidate
                num_entries.append(len(entries))
                candidates.append(candidate[1] if candidate is not None else ())
            read_tokens = token_list[begin : decoder.position]
            reads.extend((slot, token - V, entries[token - V]) for token in read_tokens if token >= V)
        width = max([1] + [len(c) for _, _, c in created] + [len(c) for c in candidates] + [len(c) for _, _, c in reads])
        return StepAdvance(
            first_token, replayed, kept, np.array(num_entries, dtype=np.int64),
            np.array([s for s, _, _ in created], dtype=np.int64), np.array([e for _, e, _ in created], dtype=np.int64),
            _padded([c for _, _, c in created], width), np.array([len(c) > 0 for c in candidates], dtype=bool),
            _padded(candidates, width),
            np.array([s for s, _, _ in reads], dtype=np.int64), np.array([e for _, e, _ in reads], dtype=np.int64),
            _padded([c for _, _, c in reads], width),
        )  # fmt: skip


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
        initial_rows: int | None = None,
        native_host: bool = True,
    ) -> None:
        self.codec = codec
        self.num_slots = num_slots
        self.vocab_size = codec.initial_vocab_size
        self.codebook_size = codec.max_codebook_size
        S, C, H = num_slots, self.codebook_size, hidden_size
        # A quarter of S x C rows to start: distinct entries in flight came to 25-35 % of it on
        # code (benchmarks/slots_bench.py); the table doubles past that.
        initial_rows = max(1024, S * C // 4) if initial_rows is None else initial_rows
        self.table = RowTable(
            encode_inputs, encode_outputs, capacity=initial_rows, max_subtokens=codec.max_subtokens,
            hidden_size=H, device=device, dtype=dtype,
        )  # fmt: skip
        # The table row of each slot's entries (-1: none); the host copy is what the slot's
        # references are counted from (entries 0 .. n-1, then the rows reserved for the device).
        self.index = torch.full((S, C), -1, dtype=torch.int32, device=device)
        self._index_host = np.full((S, C), -1, dtype=np.int32)
        self._num_reserved = np.zeros(S, dtype=np.int64)
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
        # Input row of the id each slot read in its last device step (the device-path tokens' embeddings).
        self.decode_input_rows = torch.zeros(S, H, device=device, dtype=dtype) if self.device_codebooks else None

        self._slot_of: dict[str, int] = {}
        self._free = list(range(S - 1, -1, -1))  # pop() hands out slot 0 first
        self._step = 0
        self._last_step = np.zeros(S, dtype=np.int64)  # the step each slot was last scheduled in
        self.host = (NativeHostPath if native_host else PythonHostPath)(codec, S)
        # Host copies of num_known / has_candidate, written to the device once per step.
        self._num_known_host = np.zeros(S, dtype=np.int64)
        self._has_candidate_host = np.zeros(S, dtype=bool)
        # Set by begin_step, consumed by embed / logits (None outside a real step: dummy runs).
        self._token_slots: torch.Tensor | None = None
        self._token_on_device: torch.Tensor | None = None  # [T] bool; None: no device step
        self._row_slots: torch.Tensor | None = None
        # Speculative decoding: the slot of each logits row, and each draft row's mask state
        # (rows before a request's last; the last row reads its slot's).
        self._row_slots_host = np.zeros(0, dtype=np.int64)
        self._draft_of_row: np.ndarray | None = None  # [N] draft number of each row, -1 for last rows
        self._draft_rows: DraftRows | None = None
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
        """Frees the request's slot (finished, aborted) and its rows' references; unknown ids are
        ignored."""
        slot = self._slot_of.pop(req_id, None)
        if slot is not None:
            self._reset(slot)
            self._free.append(slot)

    def invalidate_rows(self) -> None:
        """Drops every hyper row encoded so far, for when the encoders' or the base model's
        weights change (``load_weights``, vLLM's ``reload_weights``): the row table forgets its
        contents, and each request keeps its slot but replays its codebook at its next step,
        encoding its rows with the new weights."""
        for slot in range(self.num_slots):
            self._reset(slot)
        self.table.clear()

    def _reset(self, slot: int) -> None:
        held = int(self._num_known_host[slot] + self._num_reserved[slot])
        if held:
            self.table.release(self._index_host[slot, :held])
        self._num_reserved[slot] = 0
        self._device_position[slot] = -1
        self.host.reset(slot)
        self._num_known_host[slot] = 0
        self._has_candidate_host[slot] = False

    def _drop_references(self, slots: np.ndarray, keep: np.ndarray) -> None:
        """Releases the rows of ``slots``' index past their first ``keep`` entries (the entries
        the host knows, then the rows reserved for the device)."""
        ends = self._num_known_host[slots] + self._num_reserved[slots]
        has_rows = ends > keep
        if not has_rows.any():
            return
        slots, keep, ends = slots[has_rows], keep[has_rows], ends[has_rows]
        columns = np.arange(int(ends.max()))
        within = (columns >= keep[:, None]) & (columns < ends[:, None])
        self.table.release(self._index_host[slots, : len(columns)][within])
        self._num_reserved[slots] = 0
        self._num_known_host[slots] = np.minimum(self._num_known_host[slots], keep)

    # -- per step -----------------------------------------------------------------------------

    def begin_step(self, batch: StepBatch) -> None:
        """Brings every scheduled request's codebook to the end of its scheduled range and
        encodes the rows this step needs. Raises ``ValueError`` on an invalid token list (the
        step's requests then replay their codebooks at their next step)."""
        device = self.num_known.device
        self._step += 1
        slots = lookup(self._slot_of, batch.req_ids)
        new = slots < 0
        if new.any():
            self._last_step[slots[~new]] = self._step  # before new requests take idle slots
            for r in np.flatnonzero(new).tolist():
                slots[r] = self.slot(batch.req_ids[r])
        else:
            self._last_step[slots] = self._step
        counts = batch.ends - batch.begins
        host = np.ones(len(slots), dtype=bool)
        if self.device_codebooks:  # decode steps where the device copy stands run there
            host = (counts != 1) | (self._device_position[slots] != batch.begins)
        try:
            step = self.host.advance(batch, slots, host)
        except ValueError:
            for slot in slots.tolist():
                self._reset(slot)
            raise
        last_rows = self._lay_out_rows(batch, slots, len(step.num_entries))
        # Without device codebooks every request takes the host path: no masks to apply.
        all_host = not self.device_codebooks or bool(host.all())
        host_slots = slots if all_host else slots[host]
        num_entries = step.num_entries[last_rows]
        has_candidate = step.has_candidate[last_rows]
        if not all_host:
            num_entries, has_candidate = num_entries[host], has_candidate[host]
        # Replayed codebooks drop all their rows, rewound ones those of the drafts they read,
        # caught-up ones the rows reserved for the device: the entries created below name their
        # rows by content.
        self._drop_references(host_slots, step.kept_entries if all_host else step.kept_entries[host])
        self._num_known_host[host_slots] = num_entries
        self._has_candidate_host[host_slots] = has_candidate

        self._encode_outputs(step, device)
        self._encode_inputs(step)
        self._token_on_device = None
        if self.device_codebooks:
            for slot in host_slots.tolist():  # the device copy follows the host decoder again
                decoder = self.host.decoders[slot]
                self.state.load_(slot, list(decoder.codebook.values()), decoder.known_at, decoder.buffer)
                self._device_position[slot] = decoder.position
            if not all_host:
                self._reserve_rows(slots[~host])
        self.num_known.copy_(torch.from_numpy(self._num_known_host))
        self.has_candidate.copy_(torch.from_numpy(self._has_candidate_host))
        if all_host:
            # Columns any row of this step can use: defined entries plus one KwKwK candidate.
            self._columns_used = min(int(step.num_entries.max(initial=0)) + 1, self.codebook_size)
        else:
            self._advance_on_device(slots[~host], step.first_token[~host], device)
            self._columns_used = self.codebook_size  # the host does not know how far the device went
        self._row_slots = _on(device, self._row_slots_host)
        if (counts == 1).all():  # decode steps: one token per request, in request order
            self._token_slots = self._row_slots
        else:
            # np.repeat, not torch.repeat_interleave: the latter cost ~10 ms a step on a loaded CPU.
            self._token_slots = _on(device, np.repeat(slots, counts))
        if not all_host:
            self._token_on_device = _on(device, np.repeat(~host, counts))

    def _lay_out_rows(self, batch: StepBatch, slots: np.ndarray, num_rows: int) -> np.ndarray:
        """Records the slot of each of the step's ``num_rows`` logits rows (one per request, plus
        one per draft) and which rows are drafts; returns each request's last row."""
        if num_rows == len(slots):
            self._row_slots_host, self._draft_of_row, self._draft_rows = slots, None, None
            return np.arange(num_rows)
        rows = batch.num_logits_rows
        last_rows = np.cumsum(rows) - 1
        self._row_slots_host = np.repeat(slots, rows)
        is_draft = np.ones(num_rows, dtype=bool)
        is_draft[last_rows] = False
        self._draft_of_row = np.full(num_rows, -1, dtype=np.int64)
        self._draft_of_row[is_draft] = np.arange(int(is_draft.sum()))
        self._draft_rows = None  # set by _encode_outputs
        return last_rows

    def _reserve_rows(self, slots: np.ndarray) -> None:
        """One fresh row for the next entry each of ``slots`` may create on the device, written
        into the index ahead (the device creates entries in order, so entry n + k of a slot whose
        host knows n entries takes the k-th row reserved since): the device step then finds where
        to write a new entry's row without the host knowing whether it made one."""
        ends = self._num_known_host[slots] + self._num_reserved[slots]
        slots, ends = slots[ends < self.codebook_size], ends[ends < self.codebook_size]
        if not len(slots):
            return
        rows = self.table.reserve(len(slots)).astype(np.int32)
        self._index_host[slots, ends] = rows
        self._num_reserved[slots] += 1
        self._write_index(slots, ends, rows)

    def _write_index(self, slots: np.ndarray, entries: np.ndarray, rows: np.ndarray) -> None:
        device = self.index.device
        self.index.view(-1).index_copy_(0, _on(device, slots * self.codebook_size + entries), _on(device, rows))

    def _advance_on_device(self, slots: np.ndarray, tokens: np.ndarray, device: torch.device) -> None:
        """Decode steps of ``slots`` reading ``tokens`` at their device copy's position: the
        batched codebook update, then the rows it makes due (the entry created, into the row
        reserved for it; the next KwKwK candidate; the input row of the id read), all on the
        device. Rows are encoded for every request of the batch, needed or not: choosing would
        need the kernel's results on the host."""
        positions = self._device_position[slots]
        slots_on, tokens_on = _on(device, slots), _on(device, tokens)
        update = ops.codebook_update(self.state, tokens_on, slots_on, _on(device, positions))
        created = update.created.long()
        content = self.state.entries[slots_on, created.clamp(min=0)].long()
        rows = self.encode_outputs(torch.cat([content, update.candidate.long()]))
        # A slot whose host-known codebook is full creates nothing; every other one holds a
        # reserved row (its last), where it writes back what it reads when it creates nothing:
        # the targets are distinct rows no other slot reads or writes.
        growing = np.flatnonzero(self._num_known_host[slots] < self.codebook_size)
        if len(growing):
            at, grown = _on(device, growing), slots[growing]
            last_reserved = self._index_host[grown, self._num_known_host[grown] + self._num_reserved[grown] - 1]
            made = created[at]
            reserved_for_made = self.index[slots_on[at], made.clamp(min=0)].long()
            target = torch.where(made >= 0, reserved_for_made, _on(device, last_reserved.astype(np.int64)))
            table = self.table.output_rows
            table[target] = torch.where((made >= 0).unsqueeze(1), rows[at].to(table.dtype), table[target])
        self.candidate_rows[slots_on] = rows[len(slots) :].to(self.candidate_rows.dtype)
        self.has_candidate[slots_on] = update.candidate[:, 0] >= 0
        self.num_known[slots_on] = self.state.num_entries[slots_on].long()
        self.decode_input_rows[slots_on] = self.encode_inputs(update.expansion.long()).to(self.decode_input_rows.dtype)
        self._device_position[slots] += 1

    def _encode_outputs(self, step: StepAdvance, device: torch.device) -> None:
        """Rows of the entries created (their slots keep one reference each), and the KwKwK
        candidate rows: copied from the table where it holds their content, else encoded (in
        the same encoder call as the new entries) and not stored: a request's candidate changes
        at every step, and storing each would push cached entries out of the table. A request's
        last logits row takes its slot's candidate row; draft rows keep theirs for the step."""
        if self._draft_of_row is not None:
            is_draft = self._draft_of_row >= 0
            self._draft_rows = DraftRows(
                rows=_on(device, np.flatnonzero(is_draft)),
                num_entries=_on(device, step.num_entries[is_draft]),
                has_candidate=_on(device, step.has_candidate[is_draft]),
                candidate_rows=self.candidate_rows.new_zeros(int(is_draft.sum()), self.candidate_rows.shape[1]),
            )
        if not len(step.created_slot) and not step.has_candidate.any():
            return
        rows, cached, cached_rows, missing, encoded = self.table.acquire_step(
            step.created_content, step.candidate, step.has_candidate
        )
        if len(rows):
            self._index_host[step.created_slot, step.created_index] = rows
            self._write_index(step.created_slot, step.created_index, rows)
        if len(cached):
            self._write_candidates(cached, self.table.output_rows.index_select(0, _on(device, cached_rows)))
        if len(missing):
            self._write_candidates(missing, encoded)

    def _write_candidates(self, logits_rows: np.ndarray, values: torch.Tensor) -> None:
        device = values.device
        if self._draft_of_row is None:  # one row per request
            self.candidate_rows.index_copy_(0, _on(device, self._row_slots_host[logits_rows]), values)
            return
        drafts = self._draft_of_row[logits_rows]
        last = drafts < 0
        if last.any():
            slots = self._row_slots_host[logits_rows[last]]
            self.candidate_rows.index_copy_(0, _on(device, slots), values[_on(device, np.flatnonzero(last))])
        if not last.all():
            at = _on(device, np.flatnonzero(~last))
            self._draft_rows.candidate_rows.index_copy_(0, _on(device, drafts[~last]), values[at])

    def _encode_inputs(self, step: StepAdvance) -> None:
        """Input rows of the hypertokens read whose rows hold none yet."""
        if len(step.read_slot):
            rows = self._index_host[step.read_slot, step.read_index]
            self.table.ensure_inputs(rows, step.read_content)

    # -- model hooks --------------------------------------------------------------------------

    def embed(self, input_ids: torch.Tensor, embed_base: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Input embeddings of the step's flattened ``input_ids`` [T]: base rows from
        ``embed_base``, hyper rows through the token's slot's index (the row its slot's device
        step encoded, for a device decode step). Tokens past the step's scheduled ones (padding)
        and every token outside a step (dummy runs) embed as base ids."""
        V = self.vocab_size
        is_hyper = input_ids >= V
        embeds = embed_base(input_ids.masked_fill(is_hyper, 0))
        token_slots, self._token_slots = self._token_slots, None
        on_device, self._token_on_device = self._token_on_device, None
        if token_slots is None:
            return embeds
        # Every token's row is gathered and the base ones are masked out: selecting the hyper
        # tokens first would need their count on the host (a sync per step on a GPU).
        n = min(len(token_slots), len(input_ids))
        slots = token_slots[:n]
        # Ids past the codebook (only a draft could hold one: it is rejected) read column C - 1.
        table_rows = self.index[slots, (input_ids[:n] - V).clamp(0, self.codebook_size - 1)].long().clamp(min=0)
        rows = self.table.input_rows[table_rows]
        if on_device is not None:
            rows = torch.where(on_device[:n, None], self.decode_input_rows[slots], rows)
        embeds[:n] = torch.where(is_hyper[:n, None], rows.to(embeds.dtype), embeds[:n])
        return embeds

    def logits(self, hidden: torch.Tensor, base_logits: torch.Tensor) -> torch.Tensor:
        """Logits [N, V + C] of the step's logits rows (one per request and draft, in step order): base
        logits, then ``hidden . row`` for defined entries and the KwKwK candidate, -inf
        elsewhere. Outside a step every hyper column is -inf.

        On a GPU (or with ``use_kernels``) the hyper columns come from the fused masked-logits
        kernel (:func:`z2z_vllm.ops.hyper_logits`); on CPU from torch over the columns in use."""
        row_slots, self._row_slots = self._row_slots, None
        num_rows, V, C = hidden.shape[0], self.vocab_size, self.codebook_size
        if row_slots is not None and len(row_slots) != num_rows:
            raise RuntimeError(
                f"z2z: {num_rows} logits rows where the step scheduled {len(row_slots)} (one per request "
                "and draft token: other sampled positions are not supported)"
            )
        if row_slots is None:  # outside a step: every hyper column is -inf
            row_slots = torch.full((num_rows,), -1, dtype=torch.long, device=hidden.device)
        num_known, has_candidate, candidate_rows = self._row_mask_state(row_slots)
        if self.use_kernels:
            logits = base_logits.new_empty(num_rows, V + C)
            logits[:, :V] = base_logits[:, :V]
            return ops.hyper_logits(
                hidden, self.table.output_rows, self.index, row_slots, num_known, candidate_rows, has_candidate,
                logits,
            )  # fmt: skip
        active = row_slots >= 0
        used = self._columns_used if active.any() else 0
        table_rows = self.index[row_slots.clamp(min=0), :used].long().clamp(min=0)
        rows = self.table.output_rows[table_rows].to(hidden.dtype)  # [R, used, H]
        scores = torch.nn.functional.pad(torch.einsum("rh,rch->rc", hidden, rows), (0, C - used))
        columns = torch.arange(C, device=hidden.device)
        n = torch.where(active, num_known, 0).unsqueeze(1)
        candidate_logit = (hidden * candidate_rows.to(hidden.dtype)).sum(-1, keepdim=True)
        is_candidate = (active & has_candidate).unsqueeze(1) & (columns == n)
        hyper = torch.where(columns < n, scores, float("-inf"))
        hyper = torch.where(is_candidate, candidate_logit, hyper).to(base_logits.dtype)
        return torch.cat([base_logits[:, :V], hyper], dim=-1)

    def _row_mask_state(self, row_slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Entries defined, KwKwK flag and candidate row of each logits row: its slot's, or for a
        draft row, the codebook's after the draft's position (speculative decoding)."""
        slots = row_slots.clamp(min=0)
        num_known, has_candidate = self.num_known[slots], self.has_candidate[slots]
        candidate_rows = self.candidate_rows[slots]
        drafts, self._draft_rows = self._draft_rows, None
        if drafts is not None:
            num_known[drafts.rows] = drafts.num_entries
            has_candidate[drafts.rows] = drafts.has_candidate
            candidate_rows[drafts.rows] = drafts.candidate_rows
        return num_known, has_candidate, candidate_rows
