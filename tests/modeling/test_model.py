"""Whole-sequence scoring: masking, causality, KwKwK, padding, losses, training, save/load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.modeling.helpers import C, SPECIAL, V, base_stream, pad_batch, tiny_model
from z2z_vllm.modeling import CodebookBatch, EncoderConfig, Zip2ZipConfig, Zip2ZipForCausalLM


def canonical_streams(model, lengths=(60, 41, 23), seed=0) -> list[list[int]]:
    return [model.codec.encode(base_stream(n, seed=seed + i)) for i, n in enumerate(lengths)]


def allowed_columns(model, ids: list[int]) -> list[set[int]]:
    """Oracle from the incremental decoder: the hyper columns defined after each position."""
    decoder, out = model.codec.decoder(), []
    for token in ids:
        decoder.feed(token)
        columns = set(range(V, V + decoder.num_entries))
        if decoder.candidate is not None:
            columns.add(decoder.candidate[0])
        out.append(columns)
    return out


@torch.no_grad()
def test_unknown_slots_are_minus_inf_and_targets_finite(arch):
    model = tiny_model(arch)
    streams = canonical_streams(model)
    ids, mask = pad_batch(streams)
    logits = model(ids, attention_mask=mask).logits
    assert logits.shape == (len(streams), ids.shape[1], V + C)
    assert any(t >= V for s in streams for t in s)
    for row, stream in enumerate(streams):
        for t, columns in enumerate(allowed_columns(model, stream)):
            hyper = logits[row, t, V:]
            finite = {V + i for i in torch.isfinite(hyper).nonzero().flatten().tolist()}
            assert finite == columns, f"row {row} position {t}"
            assert torch.all(hyper[~torch.isfinite(hyper)] == float("-inf"))
            assert torch.isfinite(logits[row, t, :V]).all()  # base columns are never masked
        targets = logits[row, torch.arange(len(stream) - 1), torch.tensor(stream[1:])]
        assert torch.isfinite(targets).all()


@torch.no_grad()
def test_later_entries_never_change_earlier_positions(arch):
    model = tiny_model(arch)
    prefix = base_stream(14, seed=3)
    a = model.codec.encode(prefix + [7, 8, 7, 8, 7, 8, 9, 9, 9])
    b = model.codec.encode(prefix + [10, 11, 12, 10, 11, 12, 10, 11])
    shared = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    assert model.codec.codebook(a) != model.codec.codebook(b)
    ids, mask = pad_batch([a, b])
    out = model(ids, attention_mask=mask, labels=ids)
    la, lb = out.logits[0, :shared], out.logits[1, :shared]
    assert torch.equal(torch.isinf(la), torch.isinf(lb))
    torch.testing.assert_close(la.masked_fill(torch.isinf(la), 0), lb.masked_fill(torch.isinf(lb), 0))
    # Per-position losses on the shared part agree too.
    losses = [
        F.cross_entropy(out.logits[row, : shared - 1], torch.tensor(stream[1:shared]), reduction="none")
        for row, stream in ((0, a), (1, b))
    ]
    assert torch.isfinite(losses[0]).all()
    torch.testing.assert_close(losses[0], losses[1])


@torch.no_grad()
def test_kwkwk_target_uses_the_candidate_row():
    model = tiny_model()
    stream = model.codec.encode([3, 4, 1, 1, 1, 5, 2])  # "1 1 1" codes as 1, V+e where e is being made
    kwkwk = [t for t in range(1, len(stream)) if stream[t] >= V and stream[t] - V == len(model.codec.codebook(stream[:t]))]
    assert kwkwk, stream
    t = kwkwk[0] - 1  # position predicting the self-naming id
    ids = torch.tensor([stream])
    logits = model(ids).logits
    rows = model.encode_inputs(CodebookBatch.from_sequences(model.codec, [stream]).entries[0])
    hidden = model.base_model(inputs_embeds=model.embed(ids, rows.unsqueeze(0)), output_hidden_states=True).hidden_states[-1]
    candidate = model.codec.decoder()
    candidate.feed(stream[: t + 1])
    slot, subtokens = candidate.candidate
    assert slot == stream[t + 1]
    expected = hidden[0, t] @ model.encode_outputs(torch.tensor([subtokens]))[0]
    assert torch.isfinite(logits[0, t, slot])
    torch.testing.assert_close(logits[0, t, slot], expected)


@torch.no_grad()
@pytest.mark.parametrize("left", [False, True])
def test_padding_does_not_change_real_positions(arch, left):
    model = tiny_model(arch)
    streams = canonical_streams(model, lengths=(50, 17))
    ids, mask = pad_batch(streams, left=left)
    batched = model(ids, attention_mask=mask).logits
    for row, stream in enumerate(streams):
        alone = model(torch.tensor([stream])).logits[0]
        real = batched[row][mask[row].bool()]
        assert torch.equal(torch.isinf(real), torch.isinf(alone))
        torch.testing.assert_close(real.masked_fill(torch.isinf(real), 0), alone.masked_fill(torch.isinf(alone), 0))


@torch.no_grad()
def test_precomputed_codebooks_match():
    model = tiny_model()
    streams = canonical_streams(model)
    ids, mask = pad_batch(streams)
    codebooks = CodebookBatch.from_sequences(model.codec, streams)
    assert torch.equal(model(ids, attention_mask=mask, codebooks=codebooks).logits, model(ids, attention_mask=mask).logits)


@torch.no_grad()
def test_base_vocabulary_larger_than_v():
    """Real models often pad their embedding matrix: V is the config's boundary, not its rows."""
    small_v = V - 8
    model = Zip2ZipForCausalLM.from_base(
        tiny_model().base_model, initial_vocab_size=small_v, max_codebook_size=C, max_subtokens=3, disabled_ids=(SPECIAL,)
    )
    stream = model.codec.encode([i % 6 + 1 for i in range(40)])
    logits = model(torch.tensor([stream])).logits[0]
    assert logits.shape == (len(stream), small_v + C)
    assert torch.isfinite(logits[torch.arange(len(stream) - 1), torch.tensor(stream[1:])]).all()
    generated = model.generate([stream], max_new_tokens=5).sequences[0]
    assert all(0 <= t < small_v + C for t in generated)


def test_invalid_stream_is_rejected():
    model = tiny_model()
    with pytest.raises(ValueError):
        model(torch.tensor([[5, V + 3]]))


def test_reconstruction_loss_on_and_off():
    streams = canonical_streams(tiny_model())
    ids, mask = pad_batch(streams)
    on = tiny_model(reconstruction_weight=0.25)
    out = on(ids, attention_mask=mask, labels=ids)
    assert out.reconstruction_loss is not None and out.reconstruction_loss > 0
    torch.testing.assert_close(out.loss, out.clm_loss + 0.25 * out.reconstruction_loss)
    out.loss.backward()
    assert on.reconstruction.proj.weight.grad is not None
    assert on.input_encoder.layers[0].attn.q.weight.grad.abs().sum() > 0

    off = tiny_model(reconstruction_weight=0.0)
    assert off.reconstruction is None
    assert not any(name.startswith("reconstruction") for name, _ in off.named_parameters())
    out = off(ids, attention_mask=mask, labels=ids)
    assert out.reconstruction_loss is None
    assert torch.equal(out.loss, out.clm_loss)


def test_labels_ignore_padding_and_minus_100():
    model = tiny_model()
    streams = canonical_streams(model)
    ids, mask = pad_batch(streams)
    labels = ids.clone()
    labels[0, 5] = -100
    out = model(ids, attention_mask=mask, labels=labels)
    per_token = F.cross_entropy(out.logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    keep = mask[:, 1:].bool()
    keep[0, 4] = False
    torch.testing.assert_close(out.clm_loss, per_token[keep].mean())


def test_a_few_steps_lower_the_loss(arch):
    model = tiny_model(arch).train()
    streams = canonical_streams(model)
    ids, mask = pad_batch(streams)
    codebooks = CodebookBatch.from_sequences(model.codec, streams)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        out = model(ids, attention_mask=mask, labels=ids, codebooks=codebooks)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append((out.loss.item(), out.clm_loss.item(), out.reconstruction_loss.item()))
    assert losses[-1][0] < 0.8 * losses[0][0]
    assert losses[-1][1] < losses[0][1] and losses[-1][2] < losses[0][2]


@torch.no_grad()
@pytest.mark.parametrize("tie", [False, True])
def test_save_and_load_round_trip(tmp_path, arch, tie):
    encoder = EncoderConfig(kind="residual", hidden_size=32, num_heads=2)
    model = tiny_model(arch, encoder=encoder, tie_encoders=tie)
    for p in model.parameters():  # move off the zero init so that the load is visible
        p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "z2z_config.json").is_file() and (tmp_path / "z2z_encoders.safetensors").is_file()
    assert Zip2ZipConfig.load(tmp_path) == model.config

    loaded = Zip2ZipForCausalLM.from_pretrained(tmp_path, base_model=model.base_model)
    assert loaded.config == model.config
    assert (loaded.output_encoder is loaded.input_encoder) == tie
    streams = canonical_streams(model)
    ids, mask = pad_batch(streams)
    assert torch.equal(loaded(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)


def test_hyper_weights_must_match():
    model = tiny_model()
    state = model.hyper_state_dict()
    state.pop(next(iter(state)))
    with pytest.raises(ValueError, match="missing"):
        model.load_hyper_state_dict(state)
