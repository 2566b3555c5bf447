"""The serving path's GPU code on a CUDA device (skipped without one; ``scripts/gpu_check.sh``
runs these on a lent GPU, where vLLM itself is not installed): the slots' device path (codebook
update kernel, fused row kernels, masked-logits kernel) against the host path with CUDA tensors,
and greedy decoding through the slots, kernels on and off, against the HF-level generation.

The per-step z2z work is not meant to be captured in a CUDA graph: it runs around the compiled
base model, outside vLLM's piecewise graphs (z2z_vllm/vllm/model.py), so no capture is tested.
"""

from __future__ import annotations

import pytest
import torch

from tests.modeling.helpers import M, V, base_stream, tiny_model
from tests.training.checkpoint_helpers import randomize_
from z2z_vllm.modeling.generation import generate
from z2z_vllm.vllm.compose import encode_rows
from z2z_vllm.vllm.slots import HyperSlots, ScheduledRequest, StepBatch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def model():
    model = tiny_model("llama", seed=0)
    randomize_(model.base_model, seed=3)
    randomize_(model.input_encoder, seed=1)
    randomize_(model.output_encoder, seed=2)
    return model.to("cuda").eval()


def serving_slots(model, *, gpu_path: bool, num_slots: int = 3) -> HyperSlots:
    """Slots as the vLLM model builds them on a GPU (``gpu_path``: kernels and device codebooks)
    or with the host path and torch only, on the same CUDA tensors."""

    def encoder(module, table):
        return lambda ids: encode_rows(module, ids, table(), max_subtokens=M, use_kernels=gpu_path)

    return HyperSlots(
        codec=model.codec, num_slots=num_slots, hidden_size=model.base_model.config.hidden_size,
        encode_inputs=encoder(model.input_encoder, model.input_table),
        encode_outputs=encoder(model.output_encoder, model.output_table),
        device=torch.device("cuda"), dtype=torch.float32, use_kernels=gpu_path, device_codebooks=gpu_path,
    )  # fmt: skip


def embed_base(model):
    return lambda ids: torch.nn.functional.embedding(ids, model.input_table())


@torch.no_grad()
def test_the_device_path_matches_the_host_path_on_cuda(model):
    """Prefill chunks, decode steps (device updates), a chunk after decode steps and a replay."""
    streams = {name: model.codec.encode(base_stream(160, seed=seed)) for name, seed in (("a", 1), ("b", 2))}
    a, b = streams["a"], streams["b"]
    schedule = [
        [("a", 0, 20), ("b", 0, 30)],
        *[[("a", t, t + 1), ("b", t + 10, t + 11)] for t in range(20, 50)],
        [("a", 50, 58), ("b", 60, 61)],
        [("b", 0, 5)],  # recompute from 0
        *[[("a", t, t + 1), ("b", t - 53, t - 52)] for t in range(58, 70)],
    ]
    host, device = serving_slots(model, gpu_path=False), serving_slots(model, gpu_path=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    H = model.base_model.config.hidden_size
    for step in schedule:
        requests = [ScheduledRequest(n, streams[n][:end], [], begin, end) for n, begin, end in step]
        ids = torch.tensor([t for n, begin, end in step for t in streams[n][begin:end]], device="cuda")
        hidden = torch.randn(len(step), H, generator=gen, device="cuda")
        base = torch.randn(len(step), V, generator=gen, device="cuda")
        results = []
        for slots in (host, device):
            slots.begin_step(StepBatch.of(requests))
            results.append((slots.embed(ids, embed_base(model)), slots.logits(hidden, base)))
        torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-4, atol=1e-4)
    assert device._device_position.max() > 0, "decode steps ran on the device path"
    assert len(a) > 70 and len(b) > 70


@torch.no_grad()
def greedy_through_slots(model, prompts: list[list[int]], *, gpu_path: bool, max_new_tokens: int) -> list[list[int]]:
    """Greedy decoding as the vLLM model runs it: one prefill step, then one token per request
    per step, embeddings and logits through the slots (the base model recomputes each sequence
    from its embeddings: no KV cache needed for a check)."""
    slots = serving_slots(model, gpu_path=gpu_path, num_slots=len(prompts))
    tokens = [list(p) for p in prompts]
    embeddings: list[list[torch.Tensor]] = [[] for _ in prompts]
    ranges = [(0, len(p)) for p in prompts]
    base = model.base_model
    for _ in range(max_new_tokens):
        slots.begin_step(StepBatch.of([ScheduledRequest(str(i), tokens[i], [], b, e) for i, (b, e) in enumerate(ranges)]))
        ids = torch.tensor([t for i, (b, e) in enumerate(ranges) for t in tokens[i][b:e]], device="cuda")
        step_rows = slots.embed(ids, embed_base(model)).split([e - b for b, e in ranges])
        last_hidden = []
        for i, rows in enumerate(step_rows):
            embeddings[i].append(rows)
            sequence = torch.cat(embeddings[i]).unsqueeze(0)
            last_hidden.append(base.model(inputs_embeds=sequence).last_hidden_state[0, -1])
        hidden = torch.stack(last_hidden)
        logits = slots.logits(hidden, base.lm_head(hidden))
        for i, token in enumerate(logits.argmax(-1).tolist()):
            tokens[i].append(token)
        ranges = [(len(t) - 1, len(t)) for t in tokens]
    return [t[len(p) :] for t, p in zip(tokens, prompts)]


def test_greedy_decoding_on_cuda_kernels_on_equals_off_equals_the_hf_generation(model):
    prompts = [model.codec.encode(base_stream(40 + 10 * i, seed=10 + i)) for i in range(3)]
    reference = generate(model, prompts, max_new_tokens=16).sequences
    with_kernels = greedy_through_slots(model, prompts, gpu_path=True, max_new_tokens=16)
    without = greedy_through_slots(model, prompts, gpu_path=False, max_new_tokens=16)
    assert with_kernels == without == reference
    assert any(t >= V for out in reference for t in out), "the test model should emit hypertokens"
