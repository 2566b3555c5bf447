"""Hyper rows on the serving path: the hyper-encoders, fronted by the fused composition kernels.

Each encoder starts by gathering its entries' subtoken rows from the embedding or lm_head table;
in torch that is an embedding, a ``where`` for the pads and an add for the positions, each a pass
over [N, M, H]. :mod:`z2z_vllm.ops.compose` reads the rows once and writes the layers' input (or,
for the mean and the residual sum, the result) directly. Serving needs no gradients, and the
kernels have none: training keeps the encoders' own ``forward``.
"""

from __future__ import annotations

import torch
from torch import nn

from z2z_vllm import ops
from z2z_vllm.modeling.encoders import MeanEncoder, ResidualEncoder, pad_subtokens
from z2z_vllm.ops._backend import Backend

__all__ = ["encode_rows"]


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
    if isinstance(encoder, MeanEncoder):
        return ops.mean_encode(subtoken_ids, table, backend=backend)
    if isinstance(encoder, ResidualEncoder):
        # Gathered without positions: the encoder adds its own after proj_in.
        x, valid = ops.gather_subtokens(subtoken_ids, table, backend=backend)
        return ops.residual_combine(subtoken_ids, table, encoder.delta(x, valid), backend=backend)
    config = encoder.config
    if not config.pool_mask_pads:  # pooling over all M slots needs all of them
        subtoken_ids = pad_subtokens(subtoken_ids, max_subtokens)
    positions = encoder.positions.weight if encoder.positions is not None else None
    x, valid = ops.gather_subtokens(
        subtoken_ids, table, positions=positions, pad_row=config.pad_embedding_id, backend=backend
    )
    return encoder.pooled(x, valid)
