"""What CUDA vLLM does by default, on the CPU engine: a z2z model served with no flags where vLLM
would pick its V2 model runner (it does wherever Triton runs; here vLLM is made to see Triton),
compiled (no ``enforce_eager``), with prefix caching and preemption. Outputs stay token for token
equal to the HF reference, and the compiled base model reads its input embeddings from one
address (CUDA graphs replay from the addresses seen at capture; the CPU engine captures none, so
the address is checked directly).

One engine serves the module (compilation makes it slow to start); it shuts down at the end.
"""

from __future__ import annotations

import os

import pytest
import torch

from tests.vllm.helpers import greedy, make_llm, reference_generation, shared_prefix_prompts

pytest.importorskip("vllm")

from vllm import envs  # noqa: E402
from vllm.config import CompilationMode  # noqa: E402
from vllm.v1.worker.gpu_model_runner import GPUModelRunner  # noqa: E402

from z2z_vllm.vllm.patches import V2_MODEL_RUNNER_ENV  # noqa: E402
from z2z_vllm.vllm.registration import logger  # noqa: E402


@pytest.fixture(scope="module")
def engine(tiny_export):
    """Built as ``vllm serve DIR`` would be on a GPU: VLLM_USE_V2_MODEL_RUNNER unset, Triton seen
    as available (vLLM then defaults to V2), compilation on, prefix caching on. 9 KV blocks of 32
    tokens (one longest sequence, 256) cannot hold 8 growing sequences: preemption with recompute."""
    import vllm.config.vllm as vllm_config_module

    messages: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        # The hook's log lines, recorded at the call: vLLM reconfigures logging when an engine
        # starts, which drops handlers from its child loggers.
        patch.setattr(logger, "info", lambda message, *args: messages.append(message % args))
        patch.setattr(vllm_config_module, "HAS_TRITON", True)
        patch.setenv(V2_MODEL_RUNNER_ENV, "recorded for restoring")
        patch.delenv(V2_MODEL_RUNNER_ENV)
        envs.disable_envs_cache()  # an earlier in-process engine froze vLLM's environment reads
        llm = make_llm(
            tiny_export, enforce_eager=False, enable_prefix_caching=True, block_size=32,
            num_gpu_blocks_override=9, disable_log_stats=False,
        )  # fmt: skip
        try:
            yield llm, messages
        finally:
            llm.llm_engine.engine_core.shutdown()
            envs.disable_envs_cache()


def runner_of(llm) -> GPUModelRunner:
    return llm.llm_engine.model_executor.driver_worker.worker.model_runner


def test_the_v1_runner_is_chosen_where_vllm_defaults_to_v2_and_logged(engine):
    llm, messages = engine
    assert isinstance(runner_of(llm), GPUModelRunner)  # CPUModelRunner subclasses the V1 runner
    assert os.environ[V2_MODEL_RUNNER_ENV] == "0"
    assert not llm.llm_engine.vllm_config.use_v2_model_runner
    assert any("V1 model runner (VLLM_USE_V2_MODEL_RUNNER=0)" in m for m in messages), messages


def test_compiled_engine_with_prefix_caching_and_preemption_matches_the_reference(engine, prompts, reference, tiny_export, codec):
    llm, _ = engine
    assert llm.llm_engine.vllm_config.compilation_config.mode != CompilationMode.NONE  # CPU: DYNAMO_TRACE_ONCE
    assert greedy(llm, prompts) == reference
    shared_prefix = shared_prefix_prompts(codec)
    shared_prefix_reference = reference_generation(tiny_export, shared_prefix)
    assert greedy(llm, shared_prefix) == shared_prefix_reference
    assert greedy(llm, shared_prefix) == shared_prefix_reference  # from cached blocks
    metrics = {m.name: m.value for m in llm.get_metrics() if hasattr(m, "value")}
    assert metrics["vllm:num_preemptions"] > 0
    assert metrics["vllm:prefix_cache_hits"] >= 32 * 3


class _InputRecorder(torch.nn.Module):
    """Stands in for the base model and keeps every embeddings tensor it is given (alive, so a
    fresh tensor per step could not reuse an address)."""

    def __init__(self, base: torch.nn.Module) -> None:
        super().__init__()
        self.base = base
        self.received: list[torch.Tensor] = []

    def __getattr__(self, name: str):  # embed_tokens, embed_input_ids, ...: the base model's
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.base, name)

    def forward(self, input_ids, positions, intermediate_tensors=None, inputs_embeds=None, **kwargs):
        self.received.append(inputs_embeds)
        return self.base(input_ids, positions, intermediate_tensors, inputs_embeds, **kwargs)


def test_the_base_model_reads_its_embeddings_from_one_address(engine, prompts, reference):
    llm, _ = engine
    model = runner_of(llm).model
    base = model.model
    model.model = recorder = _InputRecorder(base)
    try:
        assert greedy(llm, prompts[:3]) == reference[:3]
    finally:
        model.model = base
    sizes = {t.shape[0] for t in recorder.received}
    assert len(recorder.received) > 10 and len(sizes) > 2  # prefills and decode steps of several sizes
    assert {t.data_ptr() for t in recorder.received} == {model.inputs_embeds_buffer.data_ptr()}
