"""Offline ``LLM.generate`` on a tiny z2z model: token-for-token parity with the HF reference
generation, under prefix caching, chunked prefill and forced preemption; n>1 sampling; bad
input. Each engine costs a few seconds on CPU, so engines are shared per module where possible.
"""

from __future__ import annotations

import pytest
import torch

from tests.vllm.helpers import LLM_TEST_KWARGS, use_test_env

vllm = pytest.importorskip("vllm")

from vllm import LLM, SamplingParams, TokensPrompt  # noqa: E402
from vllm.exceptions import VLLMValidationError  # noqa: E402  (vLLM's error for bad requests)

from z2z_vllm.modeling.config import Zip2ZipConfig  # noqa: E402
from z2z_vllm.modeling.generation import generate  # noqa: E402
from z2z_vllm.training import load_for_inference  # noqa: E402

MAX_TOKENS = 24
EOS = 0
# Word-id patterns: repeats build codebook entries in the prompt, the rest varies the batch.
PATTERNS = [
    [1, 2, 3, 4] * 6,
    [5, 6, 5, 7] * 5 + [1, 2],
    [8, 9, 10] * 8 + [11],
    [12, 13, 12, 13, 12, 13, 14] * 3,
    list(range(15, 40)),
    [40, 41] * 12 + [42, 43, 44],
    [3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3],  # KwKwK in the prompt
    [20, 21, 22, 23] * 10,
]


@pytest.fixture(scope="module")
def codec(tiny_export):
    return Zip2ZipConfig.load(tiny_export).codec()


@pytest.fixture(scope="module")
def prompts(codec) -> list[list[int]]:
    return [codec.encode(pattern) for pattern in PATTERNS]


@pytest.fixture(scope="module")
def reference(tiny_export, prompts) -> list[list[int]]:
    """Greedy continuations by the HF-level reference (z2z_vllm.modeling.generation)."""
    model = load_for_inference(tiny_export, dtype=torch.float32)
    return generate(model, prompts, max_new_tokens=MAX_TOKENS, eos_token_id=EOS).sequences


def make_llm(model_dir, **overrides) -> LLM:
    use_test_env()
    return LLM(model=str(model_dir), **{**LLM_TEST_KWARGS, **overrides})


@pytest.fixture(scope="module")
def llm(tiny_export):
    engine = make_llm(tiny_export, enable_prefix_caching=False)
    yield engine
    engine.llm_engine.engine_core.shutdown()


def greedy(llm: LLM, prompts: list[list[int]], *, max_tokens: int = MAX_TOKENS) -> list[list[int]]:
    outputs = llm.generate(
        [TokensPrompt(prompt_token_ids=p) for p in prompts],
        SamplingParams(max_tokens=max_tokens, temperature=0.0),
        use_tqdm=False,
    )
    return [list(o.outputs[0].token_ids) for o in outputs]


def test_greedy_matches_the_hf_reference(llm, prompts, reference, codec):
    outputs = greedy(llm, prompts)
    assert outputs == reference
    V = codec.initial_vocab_size
    generated = [t for out in outputs for t in out]
    assert any(t >= V for t in generated), "the test model should emit hypertokens"
    # Some emitted hypertokens were defined during generation, not by the prompt.
    assert any(_defined_late(codec, p, out) for p, out in zip(prompts, outputs))


def _defined_late(codec, prompt: list[int], output: list[int]) -> bool:
    decoder = codec.decoder()
    decoder.feed(prompt)
    known = decoder.num_entries
    return any(t >= codec.initial_vocab_size + known for t in output)


def test_batch_order_and_size_do_not_change_outputs(llm, prompts, reference):
    assert greedy(llm, prompts[::-1]) == reference[::-1]
    assert [greedy(llm, [p])[0] for p in prompts[:3]] == reference[:3]


def test_prefix_caching_gives_the_same_tokens(tiny_export, codec):
    # Long prompts sharing a prefix of several 32-token blocks: later requests start from
    # cached blocks, whose tokens the model never sees again.
    g = torch.Generator().manual_seed(0)
    shared = torch.randint(1, 12, (150,), generator=g).tolist()
    prompts = [codec.encode(shared + [30 + i, 40 + i] * 3) for i in range(4)]
    model = load_for_inference(tiny_export, dtype=torch.float32)
    reference = generate(model, prompts, max_new_tokens=MAX_TOKENS, eos_token_id=EOS).sequences
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


def test_n2_sampling_gives_two_valid_continuations(llm, prompts, codec):
    params = SamplingParams(n=2, max_tokens=MAX_TOKENS, temperature=1.0, seed=7)
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts[:4]], params, use_tqdm=False)
    for prompt, output in zip(prompts, outputs):
        assert len(output.outputs) == 2
        for completion in output.outputs:
            codec.decode(prompt + list(completion.token_ids))  # raises on an undefined hypertoken
    assert any(o.outputs[0].token_ids != o.outputs[1].token_ids for o in outputs)


def test_an_undefined_hypertoken_in_a_prompt_is_refused(llm, prompts, reference, codec):
    V = codec.initial_vocab_size
    bad = [1, 2, V + 5]  # entry 5 is not defined after two base ids
    with pytest.raises(VLLMValidationError, match="position 2"):
        llm.generate([TokensPrompt(prompt_token_ids=bad)], SamplingParams(max_tokens=4), use_tqdm=False)
    assert greedy(llm, prompts[:2]) == reference[:2]  # the engine keeps serving


def test_unsupported_request_options_are_refused(llm, prompts):
    with pytest.raises(VLLMValidationError, match="prompt_logprobs"):
        llm.generate(
            [TokensPrompt(prompt_token_ids=prompts[0])], SamplingParams(max_tokens=4, prompt_logprobs=1), use_tqdm=False
        )
