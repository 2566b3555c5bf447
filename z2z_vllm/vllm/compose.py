"""Hyper rows on the serving path: the hyper-encoders, fronted by the fused composition kernels.

Each encoder starts by gathering its entries' subtoken rows from the embedding or lm_head table;
in torch that is an embedding, a ``where`` for the pads and an add for the positions, each a pass
over [N, M, H]. :mod:`z2z_vllm.ops.compose` reads the rows once and writes the layers' input (or,
for the mean and the residual sum, the result) directly. Serving needs no gradients, and the
kernels have none: training keeps the encoders' own ``forward``.

Under tensor parallelism no rank holds the whole table (vLLM's ``VocabParallelEmbedding`` and
``ParallelLMHead`` keep a vocabulary shard each): :func:`encode_rows_from_shards` first fetches the
rows it reads into a small table of their own, then encodes over it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from z2z_vllm import ops
from z2z_vllm.modeling.encoders import MeanEncoder, ResidualEncoder, pad_subtokens
from z2z_vllm.ops._backend import Backend

__all__ = ["encode_rows", "encode_rows_from_shards"]


@torch.no_grad()
def encode_rows(
    encoder: nn.Module,
    subtoken_ids: torch.Tensor,
    table: torch.Tensor,
    *,
    max_subtokens: int,
    use_kernels: bool,
    backend: Backend = "auto",
) -> torch.Tensor:
    """``encoder(subtoken_ids, table)`` [N, H]; with ``use_kernels`` its gather (and, for the mean
    and residual kinds, its final sum) runs fused. ``backend`` is passed to the ops ("triton" runs
    the kernels on CPU tensors under ``TRITON_INTERPRET=1``)."""
    if not use_kernels:
        return encoder(subtoken_ids, table)
    return _encode_fused(
        encoder, subtoken_ids, table, pad_row=_pad_row(encoder), max_subtokens=max_subtokens, backend=backend
    )


@torch.no_grad()
def encode_rows_from_shards(
    encoder: nn.Module,
    subtoken_ids: torch.Tensor,
    lookup: Callable[[torch.Tensor], torch.Tensor],
    *,
    max_subtokens: int,
    use_kernels: bool,
    backend: Backend = "auto",
) -> torch.Tensor:
    """``encoder(subtoken_ids, table)`` [N, H] for a table split across ranks: ``lookup(ids)``
    returns whole rows [K, H] of base ``ids`` [K] (under tensor parallelism: each rank's masked
    lookup in its shard, summed over ranks), called exactly once per call, with K depending only
    on the shape of ``subtoken_ids`` and on the encoder, so a collective inside it is entered with
    the same shapes on every rank that encodes the same ids.

    The table fetched holds one row per slot of ``subtoken_ids`` (pads read row 0 there, then
    masked), plus the encoder's pad row if it has one: no ``unique``, whose data-dependent size
    would cost a host synchronisation on a GPU (the device codebook path has none); the rows
    fetched are as many as the encoder's own gathered input [N, W, H] holds anyway. The encoding
    then runs over that table with slot-position ids, through the fused path (the torch
    references without ``use_kernels``: the same values as the encoder's own ``forward``)."""
    num_entries, width = subtoken_ids.shape
    pad_row = _pad_row(encoder)
    ids = subtoken_ids.clamp(min=0).reshape(-1)
    if pad_row is not None:
        ids = torch.cat([ids, ids.new_tensor([pad_row])])
    table = lookup(ids)
    positions = torch.arange(num_entries * width, device=subtoken_ids.device).view(num_entries, width)
    local_ids = torch.where(subtoken_ids >= 0, positions, -1)
    return _encode_fused(
        encoder, local_ids, table,
        pad_row=None if pad_row is None else num_entries * width,
        max_subtokens=max_subtokens,
        backend=backend if use_kernels else "torch",
    )  # fmt: skip


def _pad_row(encoder: nn.Module) -> int | None:
    """The table row the encoder puts in pad slots (None: zeros)."""
    if isinstance(encoder, (MeanEncoder, ResidualEncoder)):
        return None
    return encoder.config.pad_embedding_id


def _encode_fused(
    encoder: nn.Module,
    subtoken_ids: torch.Tensor,
    table: torch.Tensor,
    *,
    pad_row: int | None,
    max_subtokens: int,
    backend: Backend,
) -> torch.Tensor:
    if isinstance(encoder, MeanEncoder):
        return ops.mean_encode(subtoken_ids, table, backend=backend)
    if isinstance(encoder, ResidualEncoder):
        # Gathered without positions: the encoder adds its own after proj_in.
        x, valid = ops.gather_subtokens(subtoken_ids, table, backend=backend)
        return ops.residual_combine(subtoken_ids, table, encoder.delta(x, valid), backend=backend)
    if not encoder.config.pool_mask_pads:  # pooling over all M slots needs all of them
        subtoken_ids = pad_subtokens(subtoken_ids, max_subtokens)
    positions = encoder.positions.weight if encoder.positions is not None else None
    x, valid = ops.gather_subtokens(subtoken_ids, table, positions=positions, pad_row=pad_row, backend=backend)
    return encoder.pooled(x, valid)
