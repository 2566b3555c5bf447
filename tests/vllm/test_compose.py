"""The plugin's hyper-row encoding through the fused composition kernels against the encoders'
own forward (Triton interpreted on CPU)."""

from __future__ import annotations

import pytest
import torch

from tests.ops.helpers import triton_device
from z2z_vllm.modeling import EncoderConfig, build_encoder
from z2z_vllm.vllm.compose import encode_rows

V, H, M = 20, 32, 4


def make(kind: str, **changes) -> torch.nn.Module:
    config = EncoderConfig(kind=kind, num_heads=2, num_layers=1, **changes)
    config = config.resolved(model_hidden_size=H, model_num_heads=2)
    torch.manual_seed(0)
    encoder = build_encoder(config, model_hidden_size=H, max_subtokens=M).eval()
    for parameter in encoder.parameters():  # a trained-looking residual delta (proj_out starts at zero)
        torch.nn.init.normal_(parameter, std=0.2)
    return encoder


def subtoken_ids(width: int) -> torch.Tensor:
    """Six left-aligned entries of 0..width subtokens (-1 padded), an empty one included."""
    g = torch.Generator().manual_seed(width)
    ids = torch.randint(0, V, (6, width), generator=g)
    lengths = torch.tensor([0, 1, 2, width, width, 1]).clamp(max=width)
    return ids.masked_fill(torch.arange(width) >= lengths[:, None], -1)


@pytest.mark.parametrize(
    ("kind", "changes"),
    [
        ("mean", {}),
        ("attention", {}),
        ("transformer", {}),
        ("transformer", {"pool_mask_pads": False, "pad_embedding_id": 5}),
        ("residual", {}),
        ("residual", {"hidden_size": 16}),  # with proj_in: positions after the projection
    ],
)
@pytest.mark.parametrize("width", [3, M])  # narrower than M: pad-counting pooling widens to M
def test_kernels_match_the_encoder(kind, changes, width):
    triton_device("cpu")
    encoder = make(kind, **changes)
    ids = subtoken_ids(width)
    table = torch.randn(V, H, generator=torch.Generator().manual_seed(1))
    expected = encoder(ids, table)
    fused = encode_rows(encoder, ids, table, max_subtokens=M, use_kernels=True, backend="triton")
    assert fused.shape == (len(ids), H) and not fused.requires_grad
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(fused[0], torch.zeros(H))  # the empty entry
    plain = encode_rows(encoder, ids, table, max_subtokens=M, use_kernels=False)
    assert torch.equal(plain, expected)
