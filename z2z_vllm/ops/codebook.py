"""Batched LZW codebook update for decode steps: every request reads one new id, on device.

The per-request state lives in :class:`CodebookState` (one slot per request) and follows
``z2z_vllm.codec.reference.Decoder`` exactly: ``entries`` are its ``entries``, ``buffer`` its
``_buffer`` (the previous expansion plus the ids merged since, empty after a disabled id, a full
codebook or a merge that reached M), ``known_at`` the position of the id whose reading created
each entry. :func:`codebook_update` is ``Decoder.feed([id])`` for a batch of requests at once,
plus what the model needs next: the id's expansion (its input embedding), the index of the entry
it created (a new output row) and the KwKwK candidate of the next step (its logits column).

Step for one request, buffer ``B`` (length L), entries ``E`` (n of them), id ``t``:

1. expand t: a disabled base id empties B and merges nothing; a base id is itself; ``V + e`` with
   ``e < n`` is ``E[e]``; ``V + n`` (KwKwK) is ``B + B[0]``, valid only when B is not empty, L < M
   and that entry is new, and it is created and becomes the buffer;
2. replay the encoder: with a full codebook B empties; with L in (0, M) the candidates
   ``(B + expansion)[:L+k+1]``, ``k < min(D, M - L)``, are checked against E and the first new
   one is created (B becomes the expansion from its k-th id on), else B grows by the whole
   expansion or, having reached M, keeps what is left of it; with L == 0 or L == M, B becomes
   the expansion.

The Triton kernel and ``kernels/codebook_update.cu`` run one program per request: the duplicate
checks of every candidate scan that request's entries once, tile by tile, with no host sync.
Invalid ids (negative, ``>= V + C``, an undefined hypertoken, a KwKwK id that cannot be defined
there) cannot come from sampling masked logits; if one comes anyway, nothing fails and nothing
is corrupted: the slot stays as it was, the expansion is all -1, ``created`` -1, ``candidate`` that
of the unchanged slot, and no memory outside the slot's own rows is read or written (indices are
clamped and masked). The CPU codec raises ``ValueError`` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import triton
import triton.language as tl

from z2z_vllm.ops._backend import Backend, resolve
from z2z_vllm.ops._triton import both

__all__ = ["CodebookState", "CodebookStep", "codebook_update", "codebook_update_reference", "NEVER"]

NEVER = 2**31 - 1  # known_at of unused entries (as in z2z_vllm.modeling.codebooks)


@dataclass(frozen=True)
class CodebookState:
    """Decoder state of ``S`` slots on one device (all int32 unless said; ids -1 padded).

    - ``entries`` [S, C, M]: base ids of hypertoken ``V + e`` of each slot;
    - ``known_at`` [S, C]: position of the id whose reading created entry e (``NEVER`` if none);
    - ``num_entries`` [S]: entries defined;
    - ``buffer`` [S, M] and ``buffer_len`` [S]: the decoder's buffer (0: no previous token);
    - ``disabled`` [V] bool: ids emitted alone and never merged (the pad id among them).

    An entry's length is the count of its ids >= 0: rows are -1 padded, which also makes
    duplicate checks plain row comparisons.
    """

    entries: torch.Tensor
    known_at: torch.Tensor
    num_entries: torch.Tensor
    buffer: torch.Tensor
    buffer_len: torch.Tensor
    disabled: torch.Tensor

    @classmethod
    def empty(
        cls,
        *,
        num_slots: int,
        vocab_size: int,
        codebook_size: int,
        max_subtokens: int,
        disabled_ids: Sequence[int] = (),
        pad_token_id: int | None = None,
        device: torch.device | str = "cpu",
    ) -> CodebookState:
        """``num_slots`` empty slots for a codec (V, C, M, disabled ids, pad id as in ``LZWCodec``)."""
        if codebook_size < 1 or max_subtokens < 1:
            raise ValueError("codebook_size and max_subtokens must be >= 1")
        S, C, M = num_slots, codebook_size, max_subtokens
        disabled = torch.zeros(vocab_size, dtype=torch.bool)
        disabled[list(disabled_ids) + ([] if pad_token_id is None else [pad_token_id])] = True
        return cls(
            entries=torch.full((S, C, M), -1, dtype=torch.int32, device=device),
            known_at=torch.full((S, C), NEVER, dtype=torch.int32, device=device),
            num_entries=torch.zeros(S, dtype=torch.int32, device=device),
            buffer=torch.full((S, M), -1, dtype=torch.int32, device=device),
            buffer_len=torch.zeros(S, dtype=torch.int32, device=device),
            disabled=disabled.to(device),
        )

    @property
    def vocab_size(self) -> int:
        return self.disabled.shape[0]

    @property
    def codebook_size(self) -> int:
        return self.entries.shape[1]

    @property
    def max_subtokens(self) -> int:
        return self.entries.shape[2]

    def reset_(self, slots: torch.Tensor) -> None:
        """Empties ``slots`` [K] (int64, distinct), on device."""
        self.entries[slots] = -1
        self.known_at[slots] = NEVER
        self.num_entries[slots] = 0
        self.buffer[slots] = -1
        self.buffer_len[slots] = 0

    def load_(
        self,
        slot: int,
        entries: Sequence[Sequence[int]],
        known_at: Sequence[int],
        buffer: Sequence[int],
    ) -> None:
        """Sets one slot from a host decoder (its entries in order, their known-at positions and
        its buffer), e.g. after a prefill decoded on the CPU."""
        C, M = self.codebook_size, self.max_subtokens
        rows = np.full((C, M), -1, dtype=np.int32)
        for e, entry in enumerate(entries):
            rows[e, : len(entry)] = entry
        known = np.full(C, NEVER, dtype=np.int32)
        known[: len(known_at)] = known_at
        buffer_row = np.full(M, -1, dtype=np.int32)
        buffer_row[: len(buffer)] = buffer
        device = self.entries.device
        self.entries[slot] = torch.from_numpy(rows).to(device)
        self.known_at[slot] = torch.from_numpy(known).to(device)
        self.num_entries[slot] = len(entries)
        self.buffer[slot] = torch.from_numpy(buffer_row).to(device)
        self.buffer_len[slot] = len(buffer)


class CodebookStep(NamedTuple):
    """What one update tells the model, per request of the batch (int32, -1 padded)."""

    expansion: torch.Tensor  # [B, M] base ids of the id read (all -1: invalid id or slot < 0)
    created: torch.Tensor  # [B] index e of the entry created (hypertoken V + e), or -1
    candidate: torch.Tensor  # [B, M] the entry id V + num_entries would define next (KwKwK), or all -1


def codebook_update(
    state: CodebookState,
    ids: torch.Tensor,
    slots: torch.Tensor,
    positions: torch.Tensor,
    *,
    backend: Backend = "auto",
) -> CodebookStep:
    """Reads ``ids`` [B] (one new compressed id per request) into the slots ``slots`` [B] at
    stream positions ``positions`` [B] (integer tensors on the state's device), updating
    ``state`` in place. Slots must be distinct; a slot < 0 marks a padding row (state untouched,
    outputs -1). No host synchronisation on GPU (the torch reference syncs)."""
    B, M = ids.shape[0], state.max_subtokens
    device = state.entries.device
    ids, slots, positions = (t.to(device=device, dtype=torch.int32) for t in (ids, slots, positions))
    backend = resolve(backend, device, has_cuda_kernel=True)
    if backend == "torch":
        return codebook_update_reference(state, ids, slots, positions)
    expansion = torch.empty(B, M, dtype=torch.int32, device=device)
    created = torch.empty(B, dtype=torch.int32, device=device)
    candidate = torch.empty(B, M, dtype=torch.int32, device=device)
    if B == 0:
        return CodebookStep(expansion, created, candidate)
    args = (state.entries, state.known_at, state.num_entries, state.buffer, state.buffer_len, state.disabled)
    if backend == "cuda":
        from z2z_vllm.ops._cuda import extension

        if extension() is None:
            raise RuntimeError("backend='cuda' needs z2z_vllm._cuda_ops (Z2Z_BUILD_CUDA=1, kernels/README.md)")
        extension().codebook_update(*args, ids, slots, positions, expansion, created, candidate)
    else:
        block_m = triton.next_power_of_2(M)
        # Entries per tile: the duplicate check compares a [BLOCK_C, BLOCK_M, BLOCK_M] block.
        block_c = min(256, 4096 // block_m**2, triton.next_power_of_2(state.codebook_size))
        _codebook_update_kernel[(B,)](
            *args, ids, slots, positions, expansion, created, candidate,
            state.vocab_size, state.codebook_size,
            M=M, BLOCK_M=block_m, BLOCK_C=max(block_c, 1),
        )  # fmt: skip
    return CodebookStep(expansion, created, candidate)


# -- torch reference ------------------------------------------------------------------------


def codebook_update_reference(
    state: CodebookState, ids: torch.Tensor, slots: torch.Tensor, positions: torch.Tensor
) -> CodebookStep:
    """The update in batched torch ops, written as the module docstring's steps."""
    V, C, M = state.vocab_size, state.codebook_size, state.max_subtokens
    device = ids.device
    m = torch.arange(M, device=device)
    active = slots >= 0
    slot = slots.long().clamp(min=0)
    token = ids.long()
    n = state.num_entries[slot].long()
    L = state.buffer_len[slot].long()
    buf = state.buffer[slot].long()  # [B, M]
    book = state.entries[slot].long()  # [B, C, M]

    # 1. Expand the id; KwKwK expands to B[0] for now (the entry it defines is B + B[0]).
    is_base = (token >= 0) & (token < V)
    disabled = is_base & state.disabled[token.clamp(0, V - 1)]
    is_entry = (token >= V) & (token < V + n)
    is_kwkwk = (token == V + n) & (n < C)
    normal = (is_base & ~disabled) | is_entry
    entry_row = book.gather(1, (token - V).clamp(0, C - 1)[:, None, None].expand(-1, 1, M))[:, 0]
    dec = torch.where(is_entry[:, None], entry_row, -1)
    dec = torch.where((is_base | is_kwkwk)[:, None] & (m == 0), torch.where(is_base, token, buf[:, 0])[:, None], dec)
    D = (dec >= 0).sum(1)

    # 2. Candidates (B + expansion)[:L+k+1] and the first of them that is not an entry yet.
    j = torch.arange(2 * M, device=device)  # positions in B ++ expansion
    joined = torch.where(
        j < L[:, None],
        torch.nn.functional.pad(buf, (0, M), value=-1),
        dec.gather(1, (j - L[:, None]).clamp(0, M - 1)).masked_fill((j - L[:, None]) >= M, -1),
    )
    extends = (normal | is_kwkwk) & (L > 0) & (L < M) & (n < C)
    K = torch.where(extends, torch.minimum(D, M - L), 0)
    k = torch.arange(M, device=device)
    cands = torch.where(m <= (L[:, None] + k)[..., None], joined[:, None, :M], -1)  # [B, k, M]
    defined = torch.arange(C, device=device) < n[:, None]  # [B, C]
    known = ((book[:, :, None, :] == cands[:, None]).all(-1) & defined[..., None]).any(1)  # [B, k]
    first_new = torch.where((k < K[:, None]) & ~known, k, M).min(1).values
    kw_ok = is_kwkwk & extends & (first_new == 0)
    creates = active & ((normal & extends & (first_new < M)) | kw_ok)
    new_entry = cands[torch.arange(len(ids), device=device), first_new.clamp(max=M - 1)]

    # The new buffer is joined[start : start + length].
    full, restart, reached_m = n == C, (L == 0) | (L == M), L + D >= M
    start = torch.where(restart, L, torch.where(creates, L + first_new, torch.where(reached_m, M, 0)))
    length = torch.where(restart, D, torch.where(creates, D - first_new, torch.where(reached_m, L + D - M, L + D)))
    length = torch.where(full, 0, length)
    start = torch.where(normal, start, 0)
    length = torch.where(normal, length, torch.where(kw_ok, L + 1, torch.where(disabled, 0, L)))
    new_buf = torch.where(m < length[:, None], joined.gather(1, (start[:, None] + m).clamp(max=2 * M - 1)), -1)
    n_new = n + creates.long()

    # The next KwKwK candidate: new buffer + its first id, if that is not an entry.
    nxt = torch.where(m < length[:, None], new_buf, torch.where(m == length[:, None], new_buf[:, :1], -1))
    dup = ((book == nxt[:, None]).all(-1) & defined).any(1) | (creates & (nxt == new_entry).all(1))
    has_next = active & (length > 0) & (length < M) & (n_new < C) & ~dup

    valid = active & (disabled | normal | kw_ok)
    expansion = torch.where(valid[:, None], torch.where(kw_ok[:, None], new_entry, dec), -1)
    rows, where = slot[creates], n[creates]
    state.entries[rows, where] = new_entry[creates].to(torch.int32)
    state.known_at[rows, where] = positions[creates].to(torch.int32)
    state.num_entries[slot[active]] = n_new[active].to(torch.int32)
    state.buffer[slot[active]] = new_buf[active].to(torch.int32)
    state.buffer_len[slot[active]] = length[active].to(torch.int32)
    return CodebookStep(
        expansion=expansion.to(torch.int32),
        created=torch.where(creates, n, -1).to(torch.int32),
        candidate=torch.where(has_next[:, None], nxt, -1).to(torch.int32),
    )


# -- Triton kernel --------------------------------------------------------------------------


@triton.jit
def _pick(vec, idx, BLOCK: tl.constexpr):
    """``vec[idx]`` elementwise, -1 where idx is outside the vector (vec's values are >= -1):
    a one-hot select, since a register vector cannot be indexed."""
    hit = idx[:, None] == tl.arange(0, BLOCK)[None, :]
    return tl.max(tl.where(hit, vec[None, :], -1), axis=1)


@triton.jit
def _known(book, n, cands, ROWS: tl.constexpr, M: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """For each row of ``cands`` [ROWS, BLOCK_M] (-1 padded), whether it equals one of the first
    ``n`` rows of ``book`` [C, M]: one pass over the entries, a tile of BLOCK_C at a time."""
    m = tl.arange(0, BLOCK_M)
    c = tl.arange(0, BLOCK_C)
    found = tl.zeros([ROWS], dtype=tl.int32)
    for start in range(0, n, BLOCK_C):
        e = start + c
        tile = tl.load(book + e[:, None] * M + m[None, :], mask=(e[:, None] < n) & (m[None, :] < M), other=-1)
        same = tl.min((tile[:, None, :] == cands[None, :, :]).to(tl.int32), axis=2)  # [BLOCK_C, ROWS]
        same = tl.where(e[:, None] < n, same, 0)
        found = tl.maximum(found, tl.max(same, axis=0))
    return found > 0


@triton.jit
def _codebook_update_kernel(
    entries_ptr, known_at_ptr, num_entries_ptr, buffer_ptr, buffer_len_ptr, disabled_ptr,
    ids_ptr, slots_ptr, positions_ptr, expansion_ptr, created_ptr, candidate_ptr,
    V, C,
    M: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)
    slot = tl.load(slots_ptr + b)
    active = slot >= 0
    slot = tl.maximum(slot, 0).to(tl.int64)
    token = tl.load(ids_ptr + b)
    m = tl.arange(0, BLOCK_M)
    in_m = m < M
    book = entries_ptr + slot * C * M  # this slot's [C, M] entries
    n = tl.load(num_entries_ptr + slot)
    n_scan = tl.where(active, n, 0)  # padding rows scan nothing
    L = tl.load(buffer_len_ptr + slot)
    buf = tl.load(buffer_ptr + slot * M + m, mask=m < L, other=-1)

    # 1. Expand the id; KwKwK expands to B[0] for now (the entry it defines is B + B[0]).
    is_base = (token >= 0) & (token < V)
    disabled = tl.load(disabled_ptr + tl.where(is_base, token, 0)) & is_base
    is_entry = (token >= V) & (token < V + n)
    is_kwkwk = (token == V + n) & (n < C)
    normal = (is_base & ~disabled) | is_entry
    dec = tl.load(book + tl.where(is_entry, token - V, 0) * M + m, mask=both(in_m, is_entry), other=-1)
    dec = tl.where(both(m == 0, is_base), token, dec)
    dec = tl.where(both(m == 0, is_kwkwk), tl.max(tl.where(m == 0, buf, -1)), dec)
    D = tl.sum((dec >= 0).to(tl.int32))

    # 2. Candidates (B + expansion)[:L+k+1] and the first of them that is not an entry yet.
    head = tl.where(m < L, buf, _pick(dec, m - L, BLOCK_M))  # the first M ids of B ++ expansion
    extends = (normal | is_kwkwk) & (L > 0) & (L < M) & (n < C)
    K = tl.where(extends, tl.minimum(D, M - L), 0)
    k = tl.arange(0, BLOCK_M)
    cands = tl.where((m[None, :] <= L + k[:, None]) & (k[:, None] < K), head[None, :], -1)
    known = _known(book, n_scan, cands, BLOCK_M, M, BLOCK_M, BLOCK_C)
    first_new = tl.min(tl.where((k < K) & ~known, k, BLOCK_M))
    kw_ok = is_kwkwk & extends & (first_new == 0)
    creates = active & ((normal & extends & (first_new < BLOCK_M)) | kw_ok)
    new_entry = tl.max(tl.where(k[:, None] == first_new, cands, -1), axis=0)

    # The new buffer is (B ++ expansion)[start : start + length].
    restart = (L == 0) | (L == M)
    reached_m = L + D >= M
    start = tl.where(restart, L, tl.where(creates, L + first_new, tl.where(reached_m, M, 0)))
    length = tl.where(restart, D, tl.where(creates, D - first_new, tl.where(reached_m, L + D - M, L + D)))
    length = tl.where(n == C, 0, length)
    start = tl.where(normal, start, 0)
    length = tl.where(normal, length, tl.where(kw_ok, L + 1, tl.where(disabled, 0, L)))
    at = start + m
    new_buf = tl.where(m < length, tl.where(at < L, _pick(buf, at, BLOCK_M), _pick(dec, at - L, BLOCK_M)), -1)
    n_new = n + creates.to(tl.int32)

    # The next KwKwK candidate: new buffer + its first id, if that is not an entry.
    nxt = tl.where(m < length, new_buf, tl.where(m == length, tl.max(tl.where(m == 0, new_buf, -1)), -1))
    dup = tl.max(_known(book, n_scan, nxt[None, :], 1, M, BLOCK_M, BLOCK_C).to(tl.int32)) > 0
    dup = dup | (creates & (tl.min((nxt == new_entry).to(tl.int32)) > 0))
    has_next = active & (length > 0) & (length < M) & (n_new < C) & ~dup

    valid = active & (disabled | normal | kw_ok)
    expansion = tl.where(valid, tl.where(kw_ok, new_entry, dec), -1)
    tl.debug_barrier()  # every thread has read the old buffer before it is overwritten
    tl.store(book + n * M + m, new_entry, mask=both(in_m, creates))
    tl.store(known_at_ptr + slot * C + n, tl.load(positions_ptr + b), mask=creates)
    tl.store(num_entries_ptr + slot, n_new, mask=active)
    tl.store(buffer_ptr + slot * M + m, new_buf, mask=both(in_m, active))
    tl.store(buffer_len_ptr + slot, length, mask=active)
    tl.store(expansion_ptr + b * M + m, expansion, mask=in_m)
    tl.store(created_ptr + b, tl.where(creates, n, -1))
    tl.store(candidate_ptr + b * M + m, tl.where(has_next, nxt, -1), mask=in_m)
