"""The per-architecture config hook: engine features refused with a clear error, and the settings
it forces (no async scheduling, no full CUDA graphs around the per-step hypertoken work)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("vllm")

from vllm.config.compilation import CUDAGraphMode  # noqa: E402

from z2z_vllm.vllm.registration import Zip2ZipConfigChecks  # noqa: E402


def engine_config(**changes) -> SimpleNamespace:
    """The parts of a ``VllmConfig`` the hook reads, for a plain single-GPU engine."""
    config = SimpleNamespace(
        speculative_config=None,
        lora_config=None,
        parallel_config=SimpleNamespace(pipeline_parallel_size=1, tensor_parallel_size=1),
        model_config=SimpleNamespace(enable_prompt_embeds=False),
        use_v2_model_runner=False,
        scheduler_config=SimpleNamespace(async_scheduling=True),
        compilation_config=SimpleNamespace(cudagraph_mode=None),
    )
    for name, value in changes.items():
        setattr(config, name, value)
    return config


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (None, CUDAGraphMode.PIECEWISE),  # vLLM's default would be FULL_AND_PIECEWISE
        (CUDAGraphMode.FULL_AND_PIECEWISE, CUDAGraphMode.PIECEWISE),
        (CUDAGraphMode.FULL_DECODE_ONLY, CUDAGraphMode.PIECEWISE),
        (CUDAGraphMode.PIECEWISE, CUDAGraphMode.PIECEWISE),
        (CUDAGraphMode.NONE, CUDAGraphMode.NONE),
    ],
)
def test_full_cuda_graphs_and_async_scheduling_are_turned_off(mode, expected):
    config = engine_config(compilation_config=SimpleNamespace(cudagraph_mode=mode))
    Zip2ZipConfigChecks.verify_and_update_config(config)
    assert config.compilation_config.cudagraph_mode == expected
    assert config.scheduler_config.async_scheduling is False


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"speculative_config": object()}, "speculative decoding"),
        ({"lora_config": object()}, "LoRA adapters"),
        ({"parallel_config": SimpleNamespace(pipeline_parallel_size=1, tensor_parallel_size=2)}, "tensor parallelism"),
        ({"model_config": SimpleNamespace(enable_prompt_embeds=True)}, "prompt embeddings"),
    ],
)
def test_unsupported_engine_features_are_refused_by_name(changes, named):
    with pytest.raises(ValueError, match=f"z2z models do not support {named}"):
        Zip2ZipConfigChecks.verify_and_update_config(engine_config(**changes))
