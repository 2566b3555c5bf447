"""Masked hyper logits: each logits row against its own request's hyper output rows.

Hyper output rows live in one table ``rows`` [R, H] shared by all requests (one row per distinct
entry content); ``index`` [S, C] names the row of each slot's entries. Row r of the step belongs
to slot ``s = row_slots[r]``, of which ``n = num_entries[r]`` entries are defined at that row's
position (rows of one request differ under speculative decoding: drafts define entries). Its
hyper columns ``V + c`` are

- ``hidden[r] . rows[index[s, c]]`` for ``c < n``;
- ``hidden[r] . candidate_rows[r]`` for ``c == n`` when ``has_candidate[r]`` (LZW's KwKwK id,
  which names the entry it creates);
- ``-inf`` otherwise, and everywhere for a row whose slot is < 0 (padding, dummy runs).

The same function as ``z2z_vllm.vllm.slots.HyperSlots.logits`` and, per position,
``Zip2ZipForCausalLM.logits``. The kernel writes the C hyper columns into a preallocated
[N, V + C] buffer whose base columns already hold the base logits, and reads only defined rows
(and their index entries): its bytes are those of the entries in use.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from z2z_vllm.ops._backend import Backend, resolve
from z2z_vllm.ops._triton import both

__all__ = ["hyper_logits", "hyper_logits_reference"]


def hyper_logits(
    hidden: torch.Tensor,
    rows: torch.Tensor,
    index: torch.Tensor,
    row_slots: torch.Tensor,
    num_entries: torch.Tensor,
    candidate_rows: torch.Tensor,
    has_candidate: torch.Tensor,
    logits: torch.Tensor,
    *,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Writes the hyper columns ``logits[:, V:]`` in place and returns ``logits``.

    ``hidden`` [N, H]; ``rows`` [R, H] (the hyper output row table) and ``candidate_rows``
    [N, H] in hidden's dtype; ``index`` [S, C] int32 (the row of each slot's entries, read for
    defined entries only); ``row_slots`` [N] (any int, < 0: all -inf); ``num_entries`` [N]
    (any int); ``has_candidate`` [N] (bool); ``logits`` [N, V + C] (any float dtype, last dim
    contiguous). The kernel accumulates products in float32; the torch reference multiplies in
    hidden's dtype, as the plugin's CPU path does."""
    N, H = hidden.shape
    C = index.shape[1]
    if resolve(backend, hidden.device) == "torch":
        args = (hidden, rows, index, row_slots, num_entries, candidate_rows, has_candidate)
        return hyper_logits_reference(*args, logits)
    if index.dtype != torch.int32:
        raise ValueError(f"index must be int32, got {index.dtype}")
    if logits.stride(1) != 1:
        raise ValueError("logits must be contiguous in its last dimension")
    if N:
        block_c, block_h = min(32, triton.next_power_of_2(C)), min(256, triton.next_power_of_2(H))
        _hyper_logits_kernel[(N, triton.cdiv(C, block_c))](
            hidden.contiguous(), rows.contiguous(), index.contiguous(), row_slots.contiguous(), num_entries,
            candidate_rows.contiguous(),
            has_candidate, logits,
            H, C, logits.shape[1] - C, logits.stride(0),
            BLOCK_C=block_c, BLOCK_H=block_h,
        )  # fmt: skip
    return logits


def hyper_logits_reference(
    hidden: torch.Tensor,
    rows: torch.Tensor,
    index: torch.Tensor,
    row_slots: torch.Tensor,
    num_entries: torch.Tensor,
    candidate_rows: torch.Tensor,
    has_candidate: torch.Tensor,
    logits: torch.Tensor,
) -> torch.Tensor:
    C = index.shape[1]
    active = row_slots >= 0
    slot = row_slots.long().clamp(min=0)
    n = torch.where(active, num_entries.long(), 0)
    with_candidate = active & has_candidate & (n < C)
    entry_rows = rows[index[slot].long().clamp(min=0)]  # [N, C, H]; undefined entries masked below
    scores = torch.bmm(entry_rows, hidden.unsqueeze(-1)).squeeze(-1)  # [N, C]
    candidate = torch.bmm(candidate_rows.unsqueeze(1), hidden.unsqueeze(-1)).view(-1, 1)
    columns = torch.arange(C, device=hidden.device)
    hyper = torch.where(columns < n[:, None], scores, float("-inf"))
    hyper = torch.where(with_candidate[:, None] & (columns == n[:, None]), candidate, hyper)
    logits[:, logits.shape[1] - C :] = hyper.to(logits.dtype)
    return logits


@triton.jit
def _hyper_logits_kernel(
    hidden_ptr, rows_ptr, index_ptr, row_slots_ptr, num_entries_ptr, candidate_rows_ptr, has_candidate_ptr,
    logits_ptr,
    H, C, V, logits_stride,
    BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    r = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    slot = tl.load(row_slots_ptr + r)
    active = slot >= 0
    slot = tl.maximum(slot, 0).to(tl.int64)
    n = tl.where(active, tl.load(num_entries_ptr + r), 0)
    with_candidate = active & tl.load(has_candidate_ptr + r) & (n < C)
    end = n + with_candidate.to(n.dtype)  # columns < end get a score

    # Column n takes the candidate row (read once per program that holds it); columns past the
    # defined entries read nothing: undefined rows cost no bandwidth.
    acc = tl.zeros([BLOCK_C, BLOCK_H], dtype=tl.float32)
    candidate_acc = tl.zeros([BLOCK_H], dtype=tl.float32)
    if tl.program_id(1) * BLOCK_C < end:
        holds_candidate = with_candidate & (n // BLOCK_C == tl.program_id(1))
        entry_rows = tl.load(index_ptr + slot * C + c, mask=c < n, other=0).to(tl.int64)
        row_ptrs = rows_ptr + entry_rows[:, None] * H
        for start in range(0, H, BLOCK_H):
            h = start + tl.arange(0, BLOCK_H)
            in_h = h < H
            x = tl.load(hidden_ptr + r * H + h, mask=in_h, other=0.0).to(tl.float32)
            w = tl.load(row_ptrs + h[None, :], mask=(c[:, None] < n) & in_h[None, :], other=0.0)
            acc += w.to(tl.float32) * x[None, :]
            cand = tl.load(candidate_rows_ptr + r * H + h, mask=both(in_h, holds_candidate), other=0.0)
            candidate_acc += cand.to(tl.float32) * x
    scores = tl.where(c == n, tl.sum(candidate_acc), tl.sum(acc, axis=1))
    out = tl.where(c < end, scores, float("-inf"))
    tl.store(logits_ptr + r * logits_stride + V + c, out.to(logits_ptr.dtype.element_ty), mask=c < C)
