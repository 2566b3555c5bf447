"""Hyper-encoders: shapes, pad handling, positions, residual zero-init, the authors' layouts."""

from __future__ import annotations

import pytest
import torch

from tests.modeling.helpers import tiny_model
from z2z_vllm.modeling import EncoderConfig, build_encoder, reference_state_dict

H, M, V = 64, 4, 30


def make(kind: str, **changes) -> torch.nn.Module:
    config = EncoderConfig(kind=kind, num_heads=2, **changes).resolved(model_hidden_size=H, model_num_heads=2)
    torch.manual_seed(0)
    return build_encoder(config, model_hidden_size=H, max_subtokens=M)


def ids(rows: list[list[int]], width: int = M) -> torch.Tensor:
    return torch.tensor([r + [-1] * (width - len(r)) for r in rows])


TABLE = torch.randn(V, H, generator=torch.Generator().manual_seed(0))
ROWS = [[1, 2], [3, 4, 5], [6, 7, 8, 9], []]


@pytest.mark.parametrize("kind", ["mean", "attention", "transformer", "residual"])
def test_each_kind_runs_and_ignores_pad_columns(kind):
    encoder = make(kind)
    out = encoder(ids(ROWS), TABLE)
    assert out.shape == (len(ROWS), H) and torch.isfinite(out).all()
    assert torch.equal(out[-1], torch.zeros(H))  # a row with no subtoken encodes to zeros
    narrow = encoder(ids(ROWS[:2], width=3), TABLE)  # fewer pad columns, same result
    torch.testing.assert_close(narrow, out[:2])
    if kind != "mean":  # gradients stay finite, the all-pad row included
        out.sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in encoder.parameters())


def test_mean_is_the_masked_mean():
    out = make("mean")(ids(ROWS[:2]), TABLE)
    torch.testing.assert_close(out[1], TABLE[[3, 4, 5]].mean(0))


@pytest.mark.parametrize("kind", ["attention", "transformer", "residual"])
def test_learned_positions_make_order_matter(kind):
    encoder = make(kind)
    if kind == "residual":  # lift the zero init so that the delta shows
        torch.nn.init.normal_(encoder.proj_out.weight)
    forward, backward = encoder(ids([[1, 2, 3], [3, 2, 1]]), TABLE)
    assert not torch.allclose(forward, backward)
    bag = make("transformer", positions=None)
    forward, backward = bag(ids([[1, 2, 3], [3, 2, 1]]), TABLE)
    torch.testing.assert_close(forward, backward)  # without positions: a bag of subtokens


def test_residual_starts_as_the_first_subtoken():
    for hidden_size in (H, 32):
        encoder = make("residual", hidden_size=hidden_size)
        assert torch.equal(encoder.proj_out.weight, torch.zeros_like(encoder.proj_out.weight))
        out = encoder(ids(ROWS[:3]), TABLE)
        torch.testing.assert_close(out, TABLE[[1, 3, 6]])


def test_residual_model_embeds_entries_as_first_subtoken_at_init():
    model = tiny_model(encoder=EncoderConfig(kind="residual"))
    entries = torch.tensor([[5, 6, -1], [7, 8, 9]])
    torch.testing.assert_close(model.encode_inputs(entries), model.input_table()[[5, 7]])
    torch.testing.assert_close(model.encode_outputs(entries), model.output_table()[[5, 7]])


def test_pooling_over_all_slots_counts_pads():
    masked = make("attention")
    unmasked = make("attention", pool_mask_pads=False)
    unmasked.load_state_dict(masked.state_dict())
    rows = ids(ROWS[:2])
    scale = torch.tensor([[2 / M], [3 / M]])
    torch.testing.assert_close(unmasked(rows, TABLE), masked(rows, TABLE) * scale)
    # With a pad embedding, pad slots go through the layers and into the mean.
    filled = make("transformer", positions=None, pool_mask_pads=False, pad_embedding_id=0)
    zeros = make("transformer", positions=None, pool_mask_pads=False)
    assert not torch.allclose(filled(rows, TABLE), zeros(rows, TABLE))


def test_reference_weight_names_map_onto_ours():
    transformer = make("transformer", num_layers=2, positions=None)
    theirs = {
        "layers.1.attention.q_proj.weight": torch.ones(H, H),
        "layers.1.mlp.fc1.weight": torch.ones(4 * H, H),
        "layers.0.post_attention_layernorm.bias": torch.ones(H),
        "layers.0.post_mlp_layernorm.weight": torch.ones(H),
    }
    mapped = reference_state_dict(theirs)
    assert set(mapped) == {"layers.1.attn.q.weight", "layers.1.mlp.up.weight", "layers.0.attn_norm.bias", "layers.0.mlp_norm.weight"}
    assert set(mapped) <= set(transformer.state_dict())

    attention = make("attention")
    mapped = reference_state_dict({"pos_embed.weight": torch.ones(M, H), "attention.o_proj.weight": torch.ones(H, H)})
    assert set(mapped) <= set(attention.state_dict())

    residual = make("residual", hidden_size=32)
    mapped = reference_state_dict(
        {"layers.0.wq.weight": 1, "layers.0.w2.weight": 1, "layers.0.norm1.weight": 1, "norm.bias": 1, "proj_in.weight": 1}
    )
    assert set(mapped) == {"layers.0.attn.q.weight", "layers.0.mlp.down.weight", "layers.0.attn_norm.weight", "final_norm.bias", "proj_in.weight"}
    assert set(mapped) <= set(residual.state_dict())


def test_config_checks_widths():
    with pytest.raises(ValueError, match="width"):
        EncoderConfig(kind="transformer", hidden_size=32).resolved(model_hidden_size=H, model_num_heads=2)
    with pytest.raises(ValueError, match="divisible"):
        EncoderConfig(num_heads=3).resolved(model_hidden_size=H, model_num_heads=2)
    with pytest.raises(ValueError, match="kind"):
        EncoderConfig(kind="lstm")
