"""Speculative decoding (n-gram drafts) on a tiny z2z model: the same greedy tokens as the HF
reference without speculation, with prefix caching and under forced preemption, while drafts are
proposed and accepted; each kind of drafts (vLLM's own over compressed ids, the default, and
z2z_vllm.vllm.drafts). Each test builds and shuts down its own engine (test_scheduling.py)."""

from __future__ import annotations

import pytest

from tests.vllm.helpers import greedy, make_llm, reference_generation, shared_prefix_prompts

vllm = pytest.importorskip("vllm")

from vllm.exceptions import VLLMValidationError  # noqa: E402  (vLLM's error for bad requests, HTTP 400)

NGRAM = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3, "prompt_lookup_min": 1}


def metric(engine, name: str) -> float:
    return sum(m.value for m in engine.get_metrics() if m.name == name)


def test_ngram_drafts_give_the_same_greedy_tokens_with_prefix_caching(tiny_export, codec):
    prompts = shared_prefix_prompts(codec)
    reference = reference_generation(tiny_export, prompts)
    engine = make_llm(
        tiny_export, speculative_config=NGRAM, enable_prefix_caching=True, block_size=32, disable_log_stats=False
    )
    try:
        assert greedy(engine, prompts[:1]) == reference[:1]
        assert greedy(engine, prompts) == reference
        assert metric(engine, "vllm:prefix_cache_hits") >= 32 * 3
        drafts, accepted = metric(engine, "vllm:spec_decode_num_draft_tokens"), metric(engine, "vllm:spec_decode_num_accepted_tokens")
        assert drafts > 0 and 0 < accepted < drafts  # drafts were verified: some accepted, some rejected
    finally:
        engine.llm_engine.engine_core.shutdown()


@pytest.mark.parametrize("drafts", ["compressed", "ids+base", "base"])
def test_ngram_drafts_give_the_same_greedy_tokens_under_preemption(tiny_export, prompts, reference, drafts, monkeypatch):
    from z2z_vllm.vllm.drafts import NGRAM_DRAFTS_ENV

    monkeypatch.setenv(NGRAM_DRAFTS_ENV, drafts)
    engine = make_llm(
        tiny_export, speculative_config=NGRAM, num_gpu_blocks_override=4, block_size=32, max_model_len=96,
        enable_prefix_caching=False, disable_log_stats=False,
    )  # fmt: skip
    try:
        assert greedy(engine, prompts) == reference
        assert metric(engine, "vllm:num_preemptions") > 0
        assert metric(engine, "vllm:spec_decode_num_accepted_tokens") > 0
    finally:
        engine.llm_engine.engine_core.shutdown()


def test_sampling_with_drafts_gives_valid_streams_and_options_stay_checked(tiny_export, prompts, codec):
    engine = make_llm(tiny_export, speculative_config=NGRAM)
    try:
        params = vllm.SamplingParams(max_tokens=24, temperature=1.0, seed=3)
        outputs = engine.generate([vllm.TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        for prompt, output in zip(prompts, outputs):
            codec.decode(prompt + list(output.outputs[0].token_ids))  # raises on an undefined hypertoken
        with pytest.raises(VLLMValidationError, match="z2z models do not support presence_penalty"):
            engine.generate([vllm.TokensPrompt(prompt_token_ids=prompts[0])], vllm.SamplingParams(presence_penalty=0.5))
    finally:
        engine.llm_engine.engine_core.shutdown()


def test_device_codebooks_with_drafts_give_the_same_greedy_tokens(tiny_export, prompts, reference, monkeypatch):
    """The GPU path's device decode steps (forced on here on the CPU) between steps with drafts,
    which go through the host: requests move between the two paths at every accepted or rejected
    draft."""
    from z2z_vllm.vllm.model import DEVICE_CODEBOOKS_ENV

    monkeypatch.setenv(DEVICE_CODEBOOKS_ENV, "1")
    engine = make_llm(tiny_export, speculative_config=NGRAM, enable_prefix_caching=False, disable_log_stats=False)
    try:
        slots = engine.llm_engine.model_executor.driver_worker.worker.model_runner.model.hyper_slots
        advance_on_device, device_steps = slots._advance_on_device, []
        slots._advance_on_device = lambda *args: device_steps.append(len(args[0])) or advance_on_device(*args)
        assert greedy(engine, prompts) == reference
        assert sum(device_steps) > 0, "decode steps ran on the device path"
        assert metric(engine, "vllm:spec_decode_num_accepted_tokens") > 0
    finally:
        engine.llm_engine.engine_core.shutdown()
