"""Offline ``LLM.generate`` on a tiny z2z model: token-for-token parity with the HF reference
generation, batch composition, n>1 sampling, bad input. One engine serves the module
(test_scheduling.py builds engines with other scheduler settings)."""

from __future__ import annotations

import pytest

from tests.vllm.helpers import greedy, make_llm

vllm = pytest.importorskip("vllm")

from vllm import SamplingParams, TokensPrompt  # noqa: E402
from vllm.exceptions import VLLMValidationError  # noqa: E402  (vLLM's error for bad requests)


@pytest.fixture(scope="module")
def llm(tiny_export):
    engine = make_llm(tiny_export, enable_prefix_caching=False)
    yield engine
    engine.llm_engine.engine_core.shutdown()


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


def test_n2_sampling_gives_two_valid_continuations(llm, prompts, codec):
    params = SamplingParams(n=2, max_tokens=24, temperature=1.0, seed=7)
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


@pytest.mark.parametrize(
    "option, value",
    [
        ("prompt_logprobs", 1),
        ("logit_bias", {1: -100.0}),
        ("allowed_token_ids", [1, 2]),
        ("presence_penalty", 0.5),
        ("frequency_penalty", 0.5),
        ("repetition_penalty", 1.2),
        ("logprob_token_ids", [1]),
        ("bad_words", ["t1"]),
    ],
)
def test_options_over_token_ids_are_refused(llm, prompts, option, value):
    # They would act on compressed ids: a base id also occurs inside hypertokens.
    with pytest.raises(VLLMValidationError, match=f"z2z models do not support {option}"):
        llm.generate(
            [TokensPrompt(prompt_token_ids=prompts[0])], SamplingParams(max_tokens=4, **{option: value}), use_tqdm=False
        )


def _first_stop_inside_a_hypertoken(codec, prompts, outputs):
    """(prompt index, index of the output token, base ids before the stop, stop id) of the first
    base id, in some greedy output, whose first occurrence is inside a hypertoken."""
    never_merged = set(codec.disabled_ids) | {codec.pad_token_id}
    for row, (prompt, output) in enumerate(zip(prompts, outputs)):
        decoder = codec.decoder()
        decoder.feed(prompt)
        before: list[int] = []
        for index, token in enumerate(output):
            expansion = decoder.decode([token])
            for offset, base_id in enumerate(expansion):
                if len(expansion) > 1 and base_id not in before + expansion[:offset] + list(never_merged):
                    return row, index, before + expansion[:offset], base_id
            before += expansion
    raise AssertionError("no base id first occurs inside a hypertoken")


@pytest.mark.parametrize("include_stop", [False, True])
def test_stop_token_ids_stop_inside_hypertokens(llm, prompts, reference, codec, tiny_export, include_stop):
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(str(tiny_export))
    row, index, kept, stop_id = _first_stop_inside_a_hypertoken(codec, prompts, reference)
    params = SamplingParams(
        max_tokens=24, temperature=0.0, stop_token_ids=[stop_id], include_stop_str_in_output=include_stop
    )
    (completion,) = llm.generate([TokensPrompt(prompt_token_ids=prompts[row])], params, use_tqdm=False)[0].outputs
    assert list(completion.token_ids) == reference[row][: index + 1]
    assert (completion.finish_reason, completion.stop_reason) == ("stop", stop_id)
    prompt_base = codec.decode(prompts[row])
    shown = kept + [stop_id] if include_stop else kept
    prompt_text = base.decode(prompt_base, skip_special_tokens=True)
    assert completion.text == base.decode(prompt_base + shown, skip_special_tokens=True)[len(prompt_text) :]


def test_text_stop_strings_and_logprobs_follow_the_expanded_tokens(llm, prompts, codec, tiny_export):
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(str(tiny_export))
    params = SamplingParams(max_tokens=24, temperature=0.0, logprobs=2)
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    for prompt, output in zip(prompts, outputs):
        completion = output.outputs[0]
        decoder = codec.decoder()
        prompt_base = decoder.decode(prompt)
        full = base.decode(prompt_base + decoder.decode(list(completion.token_ids)), skip_special_tokens=True)
        assert completion.text == full[len(base.decode(prompt_base, skip_special_tokens=True)) :]
        # Logprob texts show each sampled hypertoken as the text of its expansion.
        decoder = codec.decoder()
        decoder.feed(prompt)
        for position, token in zip(completion.logprobs, completion.token_ids):
            assert position[token].decoded_token == base.decode(decoder.decode([token]))

    # A stop string that ends inside a hypertoken's text cuts the text there.
    completion = outputs[1].outputs[0]
    words = completion.text.split()
    assert len(words) >= 4
    stop = " ".join(words[1:3])
    stopped = llm.generate(
        [TokensPrompt(prompt_token_ids=prompts[1])], SamplingParams(max_tokens=24, temperature=0.0, stop=[stop]),
        use_tqdm=False,
    )[0].outputs[0]
    assert stopped.text == completion.text[: completion.text.index(stop)]
    assert stopped.finish_reason == "stop"
