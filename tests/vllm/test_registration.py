"""The plugin's entry point and per-architecture config hook: what registration costs a process
that serves a plain model, engine features refused with a clear error, and the settings z2z
models need (V1 model runner, no async scheduling, no full CUDA graphs): chosen and logged where
the user left them unset, refused with the reason where the user asked for something else."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

pytest.importorskip("vllm")

from vllm import envs  # noqa: E402
from vllm.config.compilation import CUDAGraphMode  # noqa: E402
from vllm.platforms import current_platform  # noqa: E402

from tests.vllm.vllm_source import ROOT  # noqa: E402
from z2z_vllm.vllm.patches import V2_MODEL_RUNNER_ENV  # noqa: E402
from z2z_vllm.vllm.registration import Zip2ZipConfigChecks, logger  # noqa: E402


def engine_config(**changes) -> SimpleNamespace:
    """The parts of a ``VllmConfig`` the hook reads, for a plain single-GPU engine, as vLLM hands
    them to the hook: settings the user left unset are still None."""
    config = SimpleNamespace(
        speculative_config=None,
        lora_config=None,
        parallel_config=SimpleNamespace(pipeline_parallel_size=1, tensor_parallel_size=1),
        model_config=SimpleNamespace(enable_prompt_embeds=False, enforce_eager=False),
        use_v2_model_runner=False,
        scheduler_config=SimpleNamespace(async_scheduling=None),
        compilation_config=SimpleNamespace(cudagraph_mode=None),
    )
    for name, value in changes.items():
        setattr(config, name, value)
    return config


@pytest.fixture
def runner_env(monkeypatch):
    """Sets VLLM_USE_V2_MODEL_RUNNER for one test (None: unset), restored afterwards, with vLLM's
    frozen environment reads (an earlier in-process engine freezes them) refreshed."""

    def set_to(value: str | None) -> None:
        monkeypatch.setenv(V2_MODEL_RUNNER_ENV, "recorded for restoring")
        if value is None:
            monkeypatch.delenv(V2_MODEL_RUNNER_ENV)
        else:
            monkeypatch.setenv(V2_MODEL_RUNNER_ENV, value)
        envs.disable_envs_cache()

    yield set_to
    envs.disable_envs_cache()


@pytest.fixture
def z2z_log(caplog):
    """The hook's log lines (vLLM's logger does not propagate to pytest's handler)."""
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger=logger.name)
    yield caplog
    logger.removeHandler(caplog.handler)


def test_unset_settings_are_chosen_for_z2z_and_logged(runner_env, z2z_log):
    runner_env(None)  # vLLM would pick the V2 runner on CUDA
    config = engine_config()
    Zip2ZipConfigChecks.verify_and_update_config(config)
    assert os.environ[V2_MODEL_RUNNER_ENV] == "0" and envs.VLLM_USE_V2_MODEL_RUNNER is False
    assert config.scheduler_config.async_scheduling is False
    assert config.compilation_config.cudagraph_mode == CUDAGraphMode.PIECEWISE  # vLLM's default: FULL_AND_PIECEWISE
    logged = z2z_log.text
    assert "V1 model runner (VLLM_USE_V2_MODEL_RUNNER=0)" in logged
    assert "async scheduling off" in logged
    assert "cudagraph_mode=PIECEWISE" in logged


@pytest.mark.parametrize("mode", [CUDAGraphMode.PIECEWISE, CUDAGraphMode.NONE])
def test_explicit_settings_that_work_are_kept_silently(mode, runner_env, z2z_log):
    runner_env("0")
    config = engine_config(
        scheduler_config=SimpleNamespace(async_scheduling=False),
        compilation_config=SimpleNamespace(cudagraph_mode=mode),
    )
    Zip2ZipConfigChecks.verify_and_update_config(config)
    assert config.compilation_config.cudagraph_mode == mode
    assert config.scheduler_config.async_scheduling is False
    assert z2z_log.text == ""


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"compilation_config": SimpleNamespace(cudagraph_mode=CUDAGraphMode.FULL_AND_PIECEWISE)}, "cudagraph_mode=FULL_AND_PIECEWISE"),
        ({"compilation_config": SimpleNamespace(cudagraph_mode=CUDAGraphMode.FULL_DECODE_ONLY)}, "cudagraph_mode=FULL_DECODE_ONLY"),
        ({"scheduler_config": SimpleNamespace(async_scheduling=True)}, "async scheduling"),
        ({"use_v2_model_runner": True}, "features that need vLLM's V2 model runner"),  # e.g. watermarking
    ],
)  # fmt: skip
def test_explicit_conflicting_settings_are_refused_with_the_reason(changes, named, runner_env):
    runner_env("0")
    with pytest.raises(ValueError, match=f"z2z models do not support .*{re.escape(named)}"):
        Zip2ZipConfigChecks.verify_and_update_config(engine_config(**changes))


def test_an_explicit_request_for_the_v2_runner_is_refused_with_what_to_do(runner_env):
    runner_env("1")
    with pytest.raises(ValueError, match="V1 model runner only .* VLLM_USE_V2_MODEL_RUNNER=1 is set: unset it or set it to 0"):
        Zip2ZipConfigChecks.verify_and_update_config(engine_config())


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"lora_config": object()}, "LoRA adapters"),
        ({"model_config": SimpleNamespace(enable_prompt_embeds=True, enforce_eager=False)}, "prompt embeddings"),
    ],
)
def test_unsupported_engine_features_are_refused_by_name(changes, named):
    with pytest.raises(ValueError, match=f"z2z models do not support {named}"):
        Zip2ZipConfigChecks.verify_and_update_config(engine_config(**changes))


@pytest.mark.parametrize("method", ["eagle", "mtp", "draft_model", "ngram_gpu", "custom_class"])
def test_speculative_decoding_takes_ngram_drafts_only(method):
    speculative = SimpleNamespace(method=method, model="my.Proposer")
    with pytest.raises(ValueError, match=f"method 'ngram' .*got method={method!r}"):
        Zip2ZipConfigChecks.verify_and_update_config(engine_config(speculative_config=speculative))


@pytest.mark.parametrize("setting", [None, "ids+base", "base", "compressed"])
def test_ngram_drafts_are_vllms_unless_base_token_matches_are_asked_for(setting, runner_env, monkeypatch):
    from z2z_vllm.vllm.drafts import NGRAM_DRAFTS_ENV, PROPOSER_PATH

    runner_env("0")
    if setting is not None:
        monkeypatch.setenv(NGRAM_DRAFTS_ENV, setting)
    config = engine_config(speculative_config=SimpleNamespace(method="ngram", model="ngram"))
    Zip2ZipConfigChecks.verify_and_update_config(config)
    chosen = (config.speculative_config.method, config.speculative_config.model)
    assert chosen == (("ngram", "ngram") if setting in (None, "compressed") else ("custom_class", PROPOSER_PATH))
    Zip2ZipConfigChecks.verify_and_update_config(config)  # the hook may run again: our proposer is accepted
    assert config.scheduler_config.async_scheduling is False


@pytest.mark.parametrize(("tensor", "pipeline"), [(8, 1), (1, 2), (4, 2)])
def test_tensor_and_pipeline_parallelism_are_accepted(tensor, pipeline, runner_env):
    runner_env("0")
    config = engine_config(parallel_config=SimpleNamespace(pipeline_parallel_size=pipeline, tensor_parallel_size=tensor))
    Zip2ZipConfigChecks.verify_and_update_config(config)
    assert config.scheduler_config.async_scheduling is False  # the hook went through


@pytest.mark.skipif(not current_platform.is_cpu(), reason="a limit of vLLM's CPU backend")
def test_eager_pipeline_parallelism_on_cpu_is_refused_with_what_to_do(runner_env):
    runner_env("0")
    config = engine_config(
        parallel_config=SimpleNamespace(pipeline_parallel_size=2, tensor_parallel_size=1),
        model_config=SimpleNamespace(enable_prompt_embeds=False, enforce_eager=True),
    )
    with pytest.raises(ValueError, match=r"pipeline parallelism on vLLM's CPU backend .* leave out enforce_eager"):
        Zip2ZipConfigChecks.verify_and_update_config(config)


# What a vLLM process imports to build any engine (EngineArgs loads the plugins; the registries
# resolve every model), then the plugin's entry point: what register() adds is what every vLLM
# process pays, whatever model it serves.
_REGISTER_COST = """
import json, sys
from vllm import ModelRegistry
from vllm.engine.arg_utils import EngineArgs
from vllm.model_executor.models.config import MODELS_CONFIG_MAP
from vllm.renderers.registry import RENDERER_REGISTRY
from vllm.tokenizers.registry import TokenizerRegistry
before = set(sys.modules)
from z2z_vllm.vllm import register
register()
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_register_imports_nothing_heavy():
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "ERROR"}
    result = subprocess.run(
        [sys.executable, "-c", _REGISTER_COST], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    added = json.loads(result.stdout.strip().splitlines()[-1])
    heavy = [
        name for name in added
        if name.startswith(("vllm.v1.worker", "vllm.v1.engine", "transformers", "z2z_vllm.vllm.model",
                            "z2z_vllm.vllm.patches", "z2z_vllm.vllm.slots", "z2z_vllm.ops", "triton"))
    ]  # fmt: skip
    assert heavy == [], f"register() imported {heavy}"
    assert len(added) < 20, f"register() imported {len(added)} modules: {added}"
