"""Fused composition kernels against their torch references and against the hyper-encoders."""

from __future__ import annotations

import pytest
import torch

from tests.ops.helpers import DEVICES, assert_close_to, triton_device
from z2z_vllm.modeling import EncoderConfig, build_encoder
from z2z_vllm.modeling.encoders import MeanEncoder, _gather_subtokens, _pool
from z2z_vllm.ops import gather_subtokens, mean_encode, residual_combine
from z2z_vllm.ops.compose import gather_subtokens_reference, mean_encode_reference, residual_combine_reference

V, H, M = 50, 48, 4  # H not a power of two: the last column block is partial


def random_ids(generator: torch.Generator, n: int, width: int) -> torch.Tensor:
    """Left-aligned entries of 0..width subtokens (-1 padded), empty rows included."""
    ids = torch.randint(0, V, (n, width), generator=generator)
    lengths = torch.randint(0, width + 1, (n,), generator=generator)
    lengths[0] = 0
    return ids.masked_fill(torch.arange(width) >= lengths[:, None], -1)


def inputs(seed: int, dtype: torch.dtype, device: str, *, n: int = 9, width: int = M):
    g = torch.Generator().manual_seed(seed)
    ids = random_ids(g, n, width)
    table = torch.randn(V, H, generator=g)
    positions = torch.randn(M, H, generator=g)
    return ids.to(device), table.to(device, dtype), positions.to(device, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_positions", [False, True])
@pytest.mark.parametrize("pad_row", [None, 7])
@pytest.mark.parametrize("width", [1, 3, M])
def test_gather_matches_reference(device, dtype, with_positions, pad_row, width):
    device = triton_device(device)
    ids, table, positions = inputs(width, dtype, device, width=width)
    positions = positions if with_positions else None
    x, valid = gather_subtokens(ids, table, positions=positions, pad_row=pad_row, backend="triton")
    x_ref, valid_ref = gather_subtokens_reference(ids, table, positions=positions, pad_row=pad_row)
    assert torch.equal(valid, valid_ref) and x.dtype == x_ref.dtype
    if dtype == torch.float32 or device == "cuda":
        # One rounding of one addition, as torch does. (The CPU interpreter truncates float32 ->
        # bf16 where GPUs round to nearest: bf16 is compared by tolerance there.)
        assert torch.equal(x, x_ref)
    else:
        x64, _ = gather_subtokens_reference(
            ids, table.double(), positions=None if positions is None else positions.double(), pad_row=pad_row
        )
        assert_close_to(x, x64, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("seed", range(3))
def test_mean_and_residual_match_reference(device, dtype, seed):
    device = triton_device(device)
    ids, table, _ = inputs(seed, dtype, device)
    delta = torch.randn(ids.shape[0], H, generator=torch.Generator().manual_seed(seed)).to(device, dtype)
    mean = mean_encode(ids, table, backend="triton")
    assert mean.dtype == dtype and torch.equal(mean[0], torch.zeros_like(mean[0]))  # empty entry
    assert_close_to(mean, mean_encode_reference(ids, table.double()), dtype)
    combined = residual_combine(ids, table, delta, backend="triton")
    assert torch.equal(combined[0], torch.zeros_like(combined[0]))
    assert_close_to(combined, residual_combine_reference(ids, table.double(), delta.double()), dtype)
    if dtype == torch.float32:
        assert torch.equal(combined, residual_combine_reference(ids, table, delta))


def test_references_are_the_encoders_code():
    ids, table, positions = inputs(0, torch.float32, "cpu")
    x, valid = gather_subtokens_reference(ids, table, positions=positions, pad_row=3)
    x_enc, valid_enc = _gather_subtokens(ids, table, pad_embedding_id=3)
    assert torch.equal(valid, valid_enc) and torch.equal(x, x_enc + positions)
    assert torch.equal(mean_encode_reference(ids, table), MeanEncoder()(ids, table))


def encoder(kind: str, **changes) -> torch.nn.Module:
    config = EncoderConfig(kind=kind, num_heads=2, num_layers=1, **changes)
    config = config.resolved(model_hidden_size=H, model_num_heads=2)
    torch.manual_seed(0)
    module = build_encoder(config, model_hidden_size=H, max_subtokens=M).eval()
    for parameter in module.parameters():  # a trained-looking delta (proj_out starts at zero)
        torch.nn.init.normal_(parameter, std=0.2)
    return module


@torch.no_grad()
@pytest.mark.parametrize("changes", [{}, {"pool_mask_pads": False, "pad_embedding_id": 5}])
def test_transformer_encoder_from_fused_gather(changes):
    """How the plugin composes a transformer encoder from the fused front: same output, bit for
    bit, in float32."""
    triton_device("cpu")
    enc = encoder("transformer", **changes)
    ids, table, _ = inputs(1, torch.float32, "cpu")
    if not enc.config.pool_mask_pads:
        ids = torch.nn.functional.pad(ids, (0, M - ids.shape[1]), value=-1)
    x, valid = gather_subtokens(
        ids, table, positions=enc.positions.weight, pad_row=enc.config.pad_embedding_id, backend="triton"
    )
    out = _pool(enc.transform(x, valid), valid, mask_pads=enc.config.pool_mask_pads) * valid.any(1, keepdim=True)
    assert torch.equal(out, enc(ids, table))


@torch.no_grad()
def test_residual_encoder_from_fused_gather_and_combine():
    triton_device("cpu")
    enc = encoder("residual")
    assert enc.proj_in is None  # inner size = model size: positions fuse into the gather
    ids, table, _ = inputs(2, torch.float32, "cpu")
    x, valid = gather_subtokens(ids, table, positions=enc.positions.weight, backend="triton")
    for layer in enc.layers:
        x = layer(x, valid)
    delta = enc.proj_out(_pool(enc.final_norm(x), valid, mask_pads=True))
    assert torch.equal(residual_combine(ids, table, delta, backend="triton"), enc(ids, table))


def test_cpu_tensors_dispatch_to_the_references():
    ids, table, positions = inputs(3, torch.float32, "cpu")
    assert torch.equal(mean_encode(ids, table), MeanEncoder()(ids, table))
    x, valid = gather_subtokens(ids, table, positions=positions)
    assert torch.equal(x, gather_subtokens_reference(ids, table, positions=positions)[0])
