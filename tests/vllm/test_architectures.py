"""The other base architectures the plugin wraps, and slot release: each engine is built and
shut down inside its test (see tests/vllm/helpers.py:make_llm)."""

from __future__ import annotations

import pytest

from tests.vllm.helpers import export_tiny_model, greedy, make_llm, reference_generation

vllm = pytest.importorskip("vllm")


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_other_bases_match_the_hf_reference(arch, tmp_path, codec):
    export = export_tiny_model(tmp_path, arch=arch)
    prompts = [codec.encode([1, 2, 3, 4] * 6), codec.encode([5, 6, 5, 7] * 5), codec.encode(list(range(9, 30)))]
    engine = make_llm(export)
    try:
        assert greedy(engine, prompts) == reference_generation(export, prompts)
    finally:
        engine.llm_engine.engine_core.shutdown()


def test_slots_are_freed_when_requests_finish_or_are_aborted(tiny_export, prompts):
    engine = make_llm(tiny_export)

    def active() -> int:
        (count,) = engine.apply_model(lambda model: model.hyper_slots.num_active)
        return count

    try:
        greedy(engine, prompts)
        # The runner hears of requests that finished in a step with the next schedule.
        engine.llm_engine.step()
        assert active() == 0
        params = vllm.SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True)
        for index, prompt in enumerate(prompts[:3]):
            engine.llm_engine.add_request(f"r{index}", vllm.TokensPrompt(prompt_token_ids=prompt), params)
        for _ in range(3):
            engine.llm_engine.step()
        assert active() == 3
        engine.llm_engine.abort_request(["r0", "r1", "r2"])
        while engine.llm_engine.has_unfinished_requests():
            engine.llm_engine.step()
        engine.llm_engine.step()
        assert active() == 0
    finally:
        engine.llm_engine.engine_core.shutdown()


def test_reloaded_weights_are_used_for_the_hyper_rows(tiny_export, prompts):
    """Rows cached by content before a weight reload are encoded again after it, whichever way
    vLLM reloads (checkpoint format through load_weights, or kernel format by copying parameters)."""
    engine = make_llm(tiny_export)

    def count_encodes(model) -> None:
        table = model.hyper_slots.table
        encode = table.encode_inputs
        model.z2z_encoded_rows = 0

        def counting(entries):
            model.z2z_encoded_rows += len(entries)
            return encode(entries)

        table.encode_inputs = counting

    def encoded_by(run) -> int:
        engine.apply_model(lambda model: setattr(model, "z2z_encoded_rows", 0))
        run()
        (count,) = engine.apply_model(lambda model: model.z2z_encoded_rows)
        return count

    try:
        engine.apply_model(count_encodes)
        first = greedy(engine, prompts)
        assert encoded_by(lambda: greedy(engine, prompts)) == 0  # every row cached by content
        for options in ({"weights_iterator": [], "is_checkpoint_format": False}, {}):
            engine.collective_rpc("reload_weights", kwargs=options)
            assert encoded_by(lambda: greedy(engine, prompts)) > 0, options
        assert greedy(engine, prompts) == first  # the same weights were reloaded
    finally:
        engine.llm_engine.engine_core.shutdown()
