"""Hyper-encoders: one vector of the model's width for each codebook entry.

Every encoder maps ``subtoken_ids`` [N, W] (base ids of N entries, padded with -1, W <= M) and an
embedding table [V', H] (rows of the base model's input embedding or lm_head) to [N, H]. Rows with
no subtoken at all give zeros. Encoders depend only on an entry's content, so callers compute each
entry once and cache it.

Kinds (``EncoderConfig.kind``):

- ``mean``: masked mean of the subtoken embeddings. No parameters.
- ``attention``: learned subtoken positions, one pad-masked multi-head self-attention, pooling.
- ``transformer``: learned positions, ``num_layers`` post-norm layers (attention + GELU MLP),
  pad-masked attention and pad-masked mean pooling.
- ``residual``: embedding of the first subtoken + a delta from a small pre-norm transformer whose
  output projection starts at zero, so at initialisation an entry is embedded as its first
  subtoken.

Attention is pad-masked on the key side; pad query rows are zeroed before the output projection
(which is exactly what a fully masked row gives under ``scaled_dot_product_attention``).

Authors' encoders (``zip2zip==0.2.0``) and how to reproduce them
------------------------------------------------------------------
Their codebook rows are padded to M with the tokenizer's pad id (or EOS), whose embedding row then
sits in the pad slots. :func:`reference_state_dict` renames their weights to ours.

=================================  =============================================================
theirs                             ours (``EncoderConfig``)
=================================  =============================================================
``attention``                      ``kind="attention", pool_mask_pads=False``
                                   (mean over M slots with pad rows = 0 after the masked
                                   attention; their positions are always learned)
``transformer`` (no positions)     ``kind="transformer", positions=None, pool_mask_pads=False,
                                   pad_embedding_id=<their pad id>`` (pad slots carry the pad
                                   token's embedding through every layer into the mean)
``transformer`` ("learnable")      same with ``positions="learned"``
``res_latent_attn`` (residual,     ``kind="residual"``, ``hidden_size`` = their latent size;
bidirectional)                     without their ``proj_in``/``proj_out`` (latent size = model
                                   size) ours keeps ``proj_in = None`` and ``proj_out`` must be
                                   set to the identity
=================================  =============================================================

Their ``causal`` residual variant and ``residual=False`` are not reproduced. Our defaults fix
what theirs get wrong: positions on (theirs: a permutation-invariant bag), pads left out of the
mean, and the residual delta always zero-initialised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from z2z_vllm.modeling.config import EncoderConfig

__all__ = [
    "MeanEncoder",
    "AttentionEncoder",
    "TransformerEncoder",
    "ResidualEncoder",
    "build_encoder",
    "pad_subtokens",
    "reference_state_dict",
]


def _gather_subtokens(
    subtoken_ids: torch.Tensor, table: torch.Tensor, *, pad_embedding_id: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Subtoken embeddings [N, W, H] and the real-subtoken mask [N, W]."""
    valid = subtoken_ids >= 0
    x = F.embedding(subtoken_ids.clamp(min=0), table)
    pad = table[pad_embedding_id] if pad_embedding_id is not None else x.new_zeros(())
    return torch.where(valid.unsqueeze(-1), x, pad), valid


def _pool(x: torch.Tensor, valid: torch.Tensor, *, mask_pads: bool) -> torch.Tensor:
    if not mask_pads:
        return x.mean(dim=1)
    count = valid.sum(dim=1, keepdim=True).clamp(min=1)
    return (x * valid.unsqueeze(-1)).sum(dim=1) / count


def pad_subtokens(subtoken_ids: torch.Tensor, width: int) -> torch.Tensor:
    """Pads with -1 columns up to ``width`` (pooling over all M slots needs all of them)."""
    return F.pad(subtoken_ids, (0, width - subtoken_ids.shape[1]), value=-1)


class SelfAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        n, w, h = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, w, self.num_heads, h // self.num_heads).transpose(1, 2)

        # An all-pad row may look at slot 0 so that softmax stays finite; its output is dropped.
        keys = valid.clone()
        keys[:, 0] |= ~valid.any(dim=1)
        out = F.scaled_dot_product_attention(
            heads(self.q(x)), heads(self.k(x)), heads(self.v(x)), attn_mask=keys[:, None, None, :]
        )
        out = out.transpose(1, 2).reshape(n, w, h) * valid.unsqueeze(-1)
        return self.o(out)


class MLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.up = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class EncoderLayer(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, *, prenorm: bool) -> None:
        super().__init__()
        self.prenorm = prenorm
        self.attn = SelfAttention(hidden_size, num_heads)
        self.mlp = MLP(hidden_size, intermediate_size)
        self.attn_norm = nn.LayerNorm(hidden_size)
        self.mlp_norm = nn.LayerNorm(hidden_size)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if self.prenorm:
            x = x + self.attn(self.attn_norm(x), valid)
            return x + self.mlp(self.mlp_norm(x))
        x = self.attn_norm(x + self.attn(x, valid))
        return self.mlp_norm(x + self.mlp(x))


class MeanEncoder(nn.Module):
    def forward(self, subtoken_ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        x, valid = _gather_subtokens(subtoken_ids, table, pad_embedding_id=None)
        return _pool(x, valid, mask_pads=True)


class _PooledEncoder(nn.Module):
    """Subtoken embeddings (+ learned positions) -> ``transform`` -> pooled; zero for empty rows."""

    def __init__(self, config: EncoderConfig, *, max_subtokens: int) -> None:
        super().__init__()
        self.config = config
        self.max_subtokens = max_subtokens
        self.positions = nn.Embedding(max_subtokens, config.hidden_size) if config.positions else None

    def transform(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, subtoken_ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        if not self.config.pool_mask_pads:
            subtoken_ids = pad_subtokens(subtoken_ids, self.max_subtokens)
        x, valid = _gather_subtokens(subtoken_ids, table, pad_embedding_id=self.config.pad_embedding_id)
        if self.positions is not None:
            x = x + self.positions.weight[: x.shape[1]]
        return self.pooled(x, valid)

    def pooled(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The encoding from gathered subtoken rows ``x`` [N, W, H], positions already added
        (the serving path gathers them with a fused kernel)."""
        pooled = _pool(self.transform(x, valid), valid, mask_pads=self.config.pool_mask_pads)
        return pooled * valid.any(dim=1, keepdim=True)


class AttentionEncoder(_PooledEncoder):
    """One self-attention layer (no MLP, no norm), then pooling."""

    def __init__(self, config: EncoderConfig, *, max_subtokens: int) -> None:
        super().__init__(config, max_subtokens=max_subtokens)
        self.attn = SelfAttention(config.hidden_size, config.num_heads)

    def transform(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.attn(x, valid)


class TransformerEncoder(_PooledEncoder):
    """``num_layers`` post-norm transformer layers, then pooling."""

    def __init__(self, config: EncoderConfig, *, max_subtokens: int) -> None:
        super().__init__(config, max_subtokens=max_subtokens)
        self.layers = nn.ModuleList(
            EncoderLayer(config.hidden_size, config.num_heads, config.intermediate_size, prenorm=False)
            for _ in range(config.num_layers)
        )

    def transform(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, valid)
        return x


class ResidualEncoder(nn.Module):
    """First subtoken's embedding + zero-initialised delta (pre-norm layers at ``hidden_size``)."""

    def __init__(self, config: EncoderConfig, *, model_hidden_size: int, max_subtokens: int) -> None:
        super().__init__()
        self.config = config
        inner = config.hidden_size
        self.proj_in = nn.Linear(model_hidden_size, inner, bias=False) if inner != model_hidden_size else None
        self.positions = nn.Embedding(max_subtokens, inner) if config.positions else None
        self.layers = nn.ModuleList(
            EncoderLayer(inner, config.num_heads, config.intermediate_size, prenorm=True)
            for _ in range(config.num_layers)
        )
        self.final_norm = nn.LayerNorm(inner)
        self.proj_out = nn.Linear(inner, model_hidden_size, bias=False)
        nn.init.zeros_(self.proj_out.weight)

    def forward(self, subtoken_ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        x, valid = _gather_subtokens(subtoken_ids, table, pad_embedding_id=None)
        return (x[:, 0] + self.delta(x, valid)) * valid.any(dim=1, keepdim=True)

    def delta(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The delta [N, H] from gathered subtoken rows ``x`` [N, W, H] at the model's width, no
        positions (they are added after ``proj_in``; the serving path gathers with a fused kernel)."""
        if self.proj_in is not None:
            x = self.proj_in(x)
        if self.positions is not None:
            x = x + self.positions.weight[: x.shape[1]]
        for layer in self.layers:
            x = layer(x, valid)
        return self.proj_out(_pool(self.final_norm(x), valid, mask_pads=True))


def build_encoder(config: EncoderConfig, *, model_hidden_size: int, max_subtokens: int) -> nn.Module:
    """An encoder for a resolved config (``EncoderConfig.resolved``)."""
    if config.kind == "mean":
        return MeanEncoder()
    if config.kind == "attention":
        return AttentionEncoder(config, max_subtokens=max_subtokens)
    if config.kind == "transformer":
        return TransformerEncoder(config, max_subtokens=max_subtokens)
    return ResidualEncoder(config, model_hidden_size=model_hidden_size, max_subtokens=max_subtokens)


# Authors' parameter names -> ours, applied per dotted name component.
_REFERENCE_NAMES = {
    "pos_embed": "positions",
    "attention": "attn",
    "q_proj": "q",
    "k_proj": "k",
    "v_proj": "v",
    "o_proj": "o",
    "fc1": "up",
    "fc2": "down",
    "post_attention_layernorm": "attn_norm",
    "post_mlp_layernorm": "mlp_norm",
    "norm1": "attn_norm",
    "norm2": "mlp_norm",
    "norm": "final_norm",
}
# res_latent_attn keeps attention and MLP weights flat in the layer: wq -> attn.q, w1 -> mlp.up.
_REFERENCE_FLAT = {"wq": "attn.q", "wk": "attn.k", "wv": "attn.v", "wo": "attn.o", "w1": "mlp.up", "w2": "mlp.down"}


def reference_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames one encoder's weights from ``zip2zip==0.2.0`` (``attention``, ``transformer``,
    ``res_latent_attn``; keys without the ``input_encoder.`` prefix) to ours.

    Their residual encoder without projections has no ``proj_out``: load with ``strict=False``
    and set ours to the identity.
    """
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        renamed = [_REFERENCE_FLAT.get(p) or _REFERENCE_NAMES.get(p, p) for p in parts]
        out[".".join(renamed)] = value
    return out
