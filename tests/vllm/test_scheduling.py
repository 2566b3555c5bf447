"""Scheduler features that change which tokens the model sees, each on its own engine: prefix
caching, chunked prefill, forced preemption with recompute. Outputs must stay token for token
equal to the HF reference generation.

In-process engines share vLLM's distributed state, and shutting one down tears it down: each
test here builds and shuts down its own engine, and no engine outlives a test.
"""

from __future__ import annotations

from tests.vllm.helpers import MAX_TOKENS, greedy, make_llm, reference_generation, shared_prefix_prompts


def test_prefix_caching_gives_the_same_tokens(tiny_export, codec):
    prompts = shared_prefix_prompts(codec)
    reference = reference_generation(tiny_export, prompts)
    engine = make_llm(tiny_export, enable_prefix_caching=True, block_size=32, disable_log_stats=False)
    try:
        assert greedy(engine, prompts[:1]) == reference[:1]
        assert greedy(engine, prompts) == reference
        assert greedy(engine, prompts) == reference
        hits = sum(metric.value for metric in engine.get_metrics() if metric.name == "vllm:prefix_cache_hits")
        assert hits >= 32 * 3
    finally:
        engine.llm_engine.engine_core.shutdown()


def test_chunked_prefill_gives_the_same_tokens(tiny_export, prompts, reference):
    engine = make_llm(
        tiny_export, enable_chunked_prefill=True, max_num_batched_tokens=8, enable_prefix_caching=False
    )
    try:
        assert greedy(engine, prompts) == reference
    finally:
        engine.llm_engine.engine_core.shutdown()


def test_forced_preemption_gives_the_same_tokens(tiny_export, prompts, reference):
    # 4 blocks of 32 tokens (about one longest sequence) cannot hold 8 growing sequences: the
    # scheduler preempts some and recomputes them from the start later.
    engine = make_llm(
        tiny_export, num_gpu_blocks_override=4, block_size=32, max_model_len=96,
        enable_prefix_caching=False, disable_log_stats=False,
    )
    try:
        assert greedy(engine, prompts) == reference
        preemptions = sum(
            metric.value for metric in engine.get_metrics() if metric.name == "vllm:num_preemptions"
        )
        assert preemptions > 0
    finally:
        engine.llm_engine.engine_core.shutdown()


def test_device_codebooks_give_the_same_tokens(tiny_export, prompts, reference, monkeypatch):
    """The GPU path's decode steps (codebook update and rows on the device, forced on here on the
    CPU) under preemption with recompute and chunked prefill, which move requests between that
    path and the host's."""
    from z2z_vllm.vllm.model import DEVICE_CODEBOOKS_ENV

    monkeypatch.setenv(DEVICE_CODEBOOKS_ENV, "1")
    engine = make_llm(
        tiny_export, num_gpu_blocks_override=4, block_size=32, max_model_len=96, enable_chunked_prefill=True,
        max_num_batched_tokens=16, enable_prefix_caching=False, disable_log_stats=False,
    )  # fmt: skip
    try:
        slots = engine.llm_engine.model_executor.driver_worker.worker.model_runner.model.hyper_slots
        assert slots.device_codebooks
        assert greedy(engine, prompts) == reference
        assert slots._device_position.max() > 0, "decode steps ran on the device path"
    finally:
        engine.llm_engine.engine_core.shutdown()


def test_slot_takeover_gives_the_same_tokens(tiny_export, prompts, reference):
    """A request whose codebook slot was taken while it waited replays its codebook when it runs
    again. Slots are taken only when all are held: here the running requests are preempted
    (reset_prefix_cache with reset_running_requests) and keep their slots, and requests of a
    higher priority, arriving then, are scheduled before them."""
    from vllm import SamplingParams, TokensPrompt

    engine = make_llm(tiny_export, max_num_seqs=3, scheduling_policy="priority", enable_prefix_caching=False)
    try:
        slots = engine.llm_engine.model_executor.driver_worker.worker.model_runner.model.hyper_slots
        takeovers: list[str] = []
        evict_idle = slots._evict_idle

        def counted_evict_idle(req_id: str) -> int:
            takeovers.append(req_id)
            return evict_idle(req_id)

        slots._evict_idle = counted_evict_idle
        params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0)
        outputs: dict[str, list[int]] = {}

        def add(indices: range, priority: int) -> None:
            for i in indices:
                prompt = TokensPrompt(prompt_token_ids=prompts[i])
                engine.llm_engine.add_request(str(i), prompt, params, priority=priority)

        def step() -> None:
            for output in engine.llm_engine.step():
                if output.finished:
                    outputs[output.request_id] = list(output.outputs[0].token_ids)

        add(range(3), priority=1)
        for _ in range(3):  # prefill and two decode steps
            step()
        assert engine.reset_prefix_cache(reset_running_requests=True)
        add(range(3, len(prompts)), priority=0)
        while engine.llm_engine.has_unfinished_requests():
            step()
        assert [outputs[str(i)] for i in range(len(prompts))] == reference
        # The runner's request ids are the engine's with a suffix.
        assert {req_id.split("-")[0] for req_id in takeovers} >= {"3", "4", "5"}, takeovers
    finally:
        engine.llm_engine.engine_core.shutdown()
