"""Reference generation: batching, incremental vs whole-sequence logits, EOS, sampling."""

from __future__ import annotations

import torch

from tests.modeling.helpers import C, SPECIAL, V, base_stream, pad_batch, tiny_model
from z2z_vllm.modeling import expand_generated


def prompts(model) -> list[list[int]]:
    return [model.codec.encode(base_stream(n, seed=10 + n)) for n in (30, 9, 18)]


def test_batched_equals_one_by_one(arch):
    model = tiny_model(arch)
    batch = prompts(model)
    together = model.generate(batch, max_new_tokens=12).sequences
    alone = [model.generate([p], max_new_tokens=12).sequences[0] for p in batch]
    assert together == alone
    assert all(len(s) == 12 for s in together)


def test_tensor_prompts_with_left_padding(arch):
    model = tiny_model(arch)
    batch = prompts(model)
    ids, mask = pad_batch(batch, left=True)
    assert model.generate(ids, attention_mask=mask, max_new_tokens=6).sequences == model.generate(
        batch, max_new_tokens=6
    ).sequences


@torch.no_grad()
def test_step_logits_equal_whole_sequence_logits(arch):
    model = tiny_model(arch)
    batch = prompts(model)
    out = model.generate(batch, max_new_tokens=10, output_logits=True)
    assert out.logits.shape == (len(batch), 10, V + C)
    for row, (prompt, generated) in enumerate(zip(batch, out.sequences)):
        full = model(torch.tensor([prompt + generated])).logits[0]
        expected = full[len(prompt) - 1 : len(prompt) - 1 + len(generated)]
        got = out.logits[row, : len(generated)]
        assert torch.equal(torch.isinf(got), torch.isinf(expected))
        torch.testing.assert_close(got.masked_fill(torch.isinf(got), 0), expected.masked_fill(torch.isinf(expected), 0))


def test_generated_ids_are_valid_and_expand(arch):
    model = tiny_model(arch)
    batch = prompts(model)
    out = model.generate(batch, max_new_tokens=15, do_sample=True, temperature=1.5, seed=0)
    for prompt, generated in zip(batch, out.sequences):
        base = expand_generated(model.codec, prompt, generated)  # raises on an undefined id
        assert model.codec.decode(prompt + generated) == model.codec.decode(prompt) + base
    assert any(t >= V for s in out.sequences for t in s)


def test_sampling_is_seeded_and_respects_top_k():
    model = tiny_model()
    batch = prompts(model)
    first = model.generate(batch, max_new_tokens=8, do_sample=True, top_k=3, top_p=0.9, seed=7).sequences
    again = model.generate(batch, max_new_tokens=8, do_sample=True, top_k=3, top_p=0.9, seed=7).sequences
    assert first == again
    greedy = model.generate(batch, max_new_tokens=8, output_logits=True)
    top1 = model.generate(batch, max_new_tokens=8, do_sample=True, top_k=1, seed=1).sequences
    assert top1 == greedy.sequences


def test_stops_at_eos_per_sequence():
    model = tiny_model()
    batch = prompts(model)
    free = model.generate(batch, max_new_tokens=10).sequences
    eos = free[0][3]  # the first sequence stops after its 4th id; others stop at their own hit
    stopped = model.generate(batch, max_new_tokens=10, eos_token_id=[eos, SPECIAL]).sequences
    for free_row, row in zip(free, stopped):
        hits = [i for i, t in enumerate(free_row) if t in (eos, SPECIAL)]
        assert row == (free_row[: hits[0] + 1] if hits else free_row)
    assert len(stopped[0]) == 4
