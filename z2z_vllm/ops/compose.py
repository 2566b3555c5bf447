"""Hyper-embedding composition: the subtoken rows of many codebook entries, gathered and pooled
in one pass.

Each op takes ``subtoken_ids`` [N, W] (base ids of N entries, -1 padded, W <= M, any integer
dtype) and ``table`` [V', H] (the base model's input embedding or lm_head rows, last dim
contiguous), and matches :mod:`z2z_vllm.modeling.encoders` on the same inputs:

- :func:`gather_subtokens`: ``_gather_subtokens`` plus the learned positions, i.e. the input of
  the attention / transformer layers (and of the residual encoder's layers when it has no
  ``proj_in``: with one, gather without positions and add them after the projection);
- :func:`mean_encode`: ``MeanEncoder`` whole (masked mean, zeros for an entry with no subtoken);
- :func:`residual_combine`: ``ResidualEncoder``'s output from its delta (first subtoken row +
  delta, zeros for an entry with no subtoken).

Kernels: one program per (entry, block of H columns); the W subtoken rows are read once, pad
slots not at all, and sums are kept in float32 (one rounding to the output dtype).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from z2z_vllm.ops._backend import Backend, resolve
from z2z_vllm.ops._triton import both

__all__ = [
    "gather_subtokens",
    "gather_subtokens_reference",
    "mean_encode",
    "mean_encode_reference",
    "residual_combine",
    "residual_combine_reference",
]


def _grid(table: torch.Tensor, N: int) -> tuple[tuple[int, int], int]:
    """Grid and BLOCK_H: a program per (entry, 1024 columns), i.e. one 16-byte bf16 load per
    thread of 4 warps."""
    if table.stride(1) != 1:
        raise ValueError("table rows must be contiguous (table.stride(1) == 1)")
    H = table.shape[1]
    block_h = min(1024, triton.next_power_of_2(H))
    return (N, triton.cdiv(H, block_h)), block_h


def gather_subtokens(
    subtoken_ids: torch.Tensor,
    table: torch.Tensor,
    *,
    positions: torch.Tensor | None = None,
    pad_row: int | None = None,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Subtoken rows ``x`` [N, W, H] and the real-subtoken mask ``valid`` [N, W] (bool).

    Pad slots hold ``table[pad_row]`` (zeros if None); ``positions`` [>= W, H] (learned position
    rows) are added to every slot, pads included. Output dtype: that of ``table + positions``."""
    N, W = subtoken_ids.shape
    H = table.shape[1]
    dtype = table.dtype if positions is None else torch.promote_types(table.dtype, positions.dtype)
    if resolve(backend, table.device) == "torch":
        return gather_subtokens_reference(subtoken_ids, table, positions=positions, pad_row=pad_row)
    x = torch.empty(N, W, H, dtype=dtype, device=table.device)
    valid = torch.empty(N, W, dtype=torch.bool, device=table.device)
    if N and W:
        grid, block_h = _grid(table, N)
        _gather_kernel[grid](
            subtoken_ids.contiguous(), table, table if positions is None else positions.contiguous(), x, valid,
            H, table.stride(0), -1 if pad_row is None else pad_row,
            W=W, HAS_POSITIONS=positions is not None, BLOCK_H=block_h,
        )  # fmt: skip
    return x, valid


def mean_encode(subtoken_ids: torch.Tensor, table: torch.Tensor, *, backend: Backend = "auto") -> torch.Tensor:
    """``MeanEncoder``: the masked mean of each entry's subtoken rows, [N, H] in table's dtype."""
    N, W = subtoken_ids.shape
    H = table.shape[1]
    if resolve(backend, table.device) == "torch":
        return mean_encode_reference(subtoken_ids, table)
    out = torch.empty(N, H, dtype=table.dtype, device=table.device)
    if N:
        grid, block_h = _grid(table, N)
        _mean_kernel[grid](subtoken_ids.contiguous(), table, out, H, table.stride(0), W=W, BLOCK_H=block_h)
    return out


def residual_combine(
    subtoken_ids: torch.Tensor, table: torch.Tensor, delta: torch.Tensor, *, backend: Backend = "auto"
) -> torch.Tensor:
    """``ResidualEncoder``'s output: ``table[first subtoken] + delta`` ([N, H] delta), zeros for
    an entry with no subtoken; dtype of ``table + delta``."""
    N, W = subtoken_ids.shape
    H = table.shape[1]
    if resolve(backend, table.device) == "torch":
        return residual_combine_reference(subtoken_ids, table, delta)
    out = torch.empty(N, H, dtype=torch.promote_types(table.dtype, delta.dtype), device=table.device)
    if N:
        grid, block_h = _grid(table, N)
        _residual_kernel[grid](
            subtoken_ids.contiguous(), table, delta.contiguous(), out, H, table.stride(0), W=W, BLOCK_H=block_h
        )
    return out


# -- torch references (the encoders' own code paths) ----------------------------------------


def gather_subtokens_reference(
    subtoken_ids: torch.Tensor,
    table: torch.Tensor,
    *,
    positions: torch.Tensor | None = None,
    pad_row: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    valid = subtoken_ids >= 0
    x = F.embedding(subtoken_ids.long().clamp(min=0), table)
    pad = table[pad_row] if pad_row is not None else x.new_zeros(())
    x = torch.where(valid.unsqueeze(-1), x, pad)
    if positions is not None:
        x = x + positions[: x.shape[1]]
    return x, valid


def mean_encode_reference(subtoken_ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    x, valid = gather_subtokens_reference(subtoken_ids, table)
    count = valid.sum(dim=1, keepdim=True).clamp(min=1)
    return (x * valid.unsqueeze(-1)).sum(dim=1) / count


def residual_combine_reference(subtoken_ids: torch.Tensor, table: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    x, valid = gather_subtokens_reference(subtoken_ids, table)
    return (x[:, 0] + delta) * valid.any(dim=1, keepdim=True)


# -- Triton kernels -------------------------------------------------------------------------


@triton.jit
def _subtoken_row(ids_ptr, table_ptr, table_stride, n, w, h, in_h, W: tl.constexpr):
    """Row of subtoken w of entry n (float32, zeros for a pad slot, whose row is never read)."""
    token = tl.load(ids_ptr + n * W + w)
    row_ptr = table_ptr + tl.maximum(token, 0).to(tl.int64) * table_stride
    row = tl.load(row_ptr + h, mask=both(in_h, token >= 0), other=0.0)
    return row.to(tl.float32), token >= 0


@triton.jit(do_not_specialize=["pad_row"])  # an int arg equal to 1 would become a constant
def _gather_kernel(
    ids_ptr, table_ptr, positions_ptr, x_ptr, valid_ptr,
    H, table_stride, pad_row,
    W: tl.constexpr, HAS_POSITIONS: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    in_h = h < H
    pad_ptr = table_ptr + pad_row.to(tl.int64) * table_stride
    pad = tl.load(pad_ptr + h, mask=both(in_h, pad_row >= 0), other=0.0).to(tl.float32)
    for w in tl.static_range(W):
        row, real = _subtoken_row(ids_ptr, table_ptr, table_stride, n, w, h, in_h, W)
        x = tl.where(real, row, pad)
        if HAS_POSITIONS:
            x += tl.load(positions_ptr + w * H + h, mask=in_h, other=0.0).to(tl.float32)
        tl.store(x_ptr + (n * W + w) * H + h, x.to(x_ptr.dtype.element_ty), mask=in_h)
        tl.store(valid_ptr + n * W + w, real, mask=tl.program_id(1) == 0)


@triton.jit
def _mean_kernel(ids_ptr, table_ptr, out_ptr, H, table_stride, W: tl.constexpr, BLOCK_H: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    in_h = h < H
    total = tl.zeros([BLOCK_H], dtype=tl.float32)
    count = tl.zeros([1], dtype=tl.int32)
    for w in tl.static_range(W):
        row, real = _subtoken_row(ids_ptr, table_ptr, table_stride, n, w, h, in_h, W)
        total += row
        count += real.to(tl.int32)
    mean = total / tl.maximum(count, 1)
    tl.store(out_ptr + n * H + h, mean.to(out_ptr.dtype.element_ty), mask=in_h)


@triton.jit
def _residual_kernel(ids_ptr, table_ptr, delta_ptr, out_ptr, H, table_stride, W: tl.constexpr, BLOCK_H: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    in_h = h < H
    first, any_real = _subtoken_row(ids_ptr, table_ptr, table_stride, n, 0, h, in_h, W)
    for w in tl.static_range(1, W):
        any_real |= tl.load(ids_ptr + n * W + w) >= 0
    out = first + tl.load(delta_ptr + n * H + h, mask=in_h, other=0.0).to(tl.float32)
    tl.store(out_ptr + n * H + h, tl.where(any_real, out, 0.0).to(out_ptr.dtype.element_ty), mask=in_h)
