"""Fails loudly when the vLLM internals the plugin relies on change: the ones
z2z_vllm.vllm.patches patches, and the ones the config hook and the model classes build on.

Every source-level check runs on the installed vLLM (the CPU build) and on the CUDA wheel's
files (downloaded by ``make vllm-wheel``, never installed), so a vLLM change fails here, not for
a user. If a test fails after a vLLM upgrade, re-read the code in the new version and update
patches.py (and PATCHED_VLLM_VERSIONS) before trusting any other result.
"""

from __future__ import annotations

import re

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from tests.vllm.vllm_source import ROOT, VllmSource, cuda_wheel, wheel_requirements

pytest.importorskip("vllm")

from z2z_vllm.vllm import patches, register  # noqa: E402

RUNNER = "vllm/v1/worker/gpu_model_runner.py"
INPUT_BATCH = "vllm/v1/worker/gpu_input_batch.py"
DETOKENIZER = "vllm/v1/engine/detokenizer.py"
LOGPROBS = "vllm/v1/engine/logprobs.py"
CONFIG = "vllm/config/vllm.py"


@pytest.fixture(scope="module", params=["installed", "cuda-wheel"])
def vllm_source(request) -> VllmSource:
    if request.param == "installed":
        return VllmSource.installed()
    return VllmSource.wheel(cuda_wheel())


def test_patches_were_written_for_this_vllm(vllm_source):
    assert vllm_source.version in patches.PATCHED_VLLM_VERSIONS, (
        f"vLLM {vllm_source.version}; z2z_vllm/vllm/patches.py was written for "
        f"{patches.PATCHED_VLLM_VERSIONS}: re-check every internal this module checks"
    )


def test_runner_methods_the_patches_wrap_keep_their_signatures(vllm_source):
    src = vllm_source
    assert src.parameters(RUNNER, "GPUModelRunner._model_forward") == [
        "self", "input_ids", "positions", "intermediate_tensors", "inputs_embeds", "model_kwargs",
    ]  # fmt: skip
    assert src.parameters(RUNNER, "GPUModelRunner._on_request_state_removed") == ["self", "req_id", "req_state"]
    assert src.parameters(RUNNER, "GPUModelRunner.reload_weights") == [
        "self", "weights_iterator", "weights_path", "is_checkpoint_format",
    ]  # fmt: skip
    # _step_batch reads these after _prepare_inputs.
    assert "self.query_start_loc.np[1 : num_reqs + 1] = cu_num_tokens" in src.source(RUNNER, "GPUModelRunner._prepare_inputs")
    batch_init = src.source(INPUT_BATCH, "InputBatch.__init__")
    for array, tensor in [("num_computed_tokens_cpu", "num_computed_tokens_cpu_tensor"),
                          ("num_tokens_no_spec", "num_tokens_no_spec_cpu_tensor"), ("token_ids_cpu", "token_ids_cpu_tensor")]:
        assert f"self.{array} = self.{tensor}.numpy()" in batch_init
    assert re.search(r"self\.token_ids_cpu_tensor = torch\.zeros\(\s*\(max_num_reqs, max_model_len\),[^)]*dtype=torch\.int32", batch_init)
    assert {"req_ids", "num_reqs"} <= src.member_names(INPUT_BATCH, "InputBatch")
    # Each row of token_ids_cpu: the prompt, then each sampled id, then this step's drafts.
    add_request = src.source(INPUT_BATCH, "InputBatch.add_request")
    assert "self.token_ids_cpu[req_index, :num_prompt_tokens] = request.prompt_token_ids" in add_request
    assert "self.token_ids_cpu[req_index, start_idx:end_idx] = request.output_token_ids" in add_request
    assert "self.input_batch.token_ids_cpu[req_idx, start_idx:end_idx] = sampled_ids" in src.source(
        RUNNER, "GPUModelRunner._bookkeeping_sync"
    )
    spec = src.source(INPUT_BATCH, "InputBatch.update_req_spec_token_ids")
    assert "start_index = self.num_tokens_no_spec[req_index]" in spec
    assert "self.token_ids_cpu[req_index, start_index:end_token_index] = spec_token_ids" in spec
    # The forward hook runs between input preparation and the model call.
    execute = src.source(RUNNER, "GPUModelRunner.execute_model")
    assert execute.index("self._prepare_inputs(") < execute.index("self._model_forward(")
    assert "self.model.compute_logits(sample_hidden_states)" in execute
    # The model's static embeddings buffer is sized by what the runner schedules at most.
    assert "self.max_num_tokens = scheduler_config.max_num_batched_tokens" in src.source(
        RUNNER, "GPUModelRunner.__init__"
    )


def test_front_end_internals_the_plugin_relies_on_are_unchanged(vllm_source):
    src = vllm_source
    # The request checks join the validator the input processor builds once and runs per request.
    processor = "vllm/v1/engine/input_processor.py"
    assert src.parameters(processor, "InputProcessor._build_logits_processors_params_validator") == ["self"]
    assert "self._build_logits_processors_params_validator()" in src.source(processor, "InputProcessor.__init__")
    assert "self.validate_logits_processors_params(params)" in src.source(processor, "InputProcessor._validate_params")
    assert src.parameters(DETOKENIZER, "IncrementalDetokenizer.from_new_request") == ["tokenizer", "request"]
    assert src.parameters(LOGPROBS, "LogprobsProcessor.from_new_request") == ["tokenizer", "request"]
    # Zip2ZipIncrementalDetokenizer: update() records each id before decoding it.
    decode_next = src.function(DETOKENIZER, "BaseIncrementalDetokenizer.decode_next")
    assert [ast_name(d) for d in decode_next.decorator_list] == ["abstractmethod"]
    update = src.source(DETOKENIZER, "BaseIncrementalDetokenizer.update")
    assert update.index("self.token_ids.append(new_token_id)") < update.index("self.decode_next(new_token_id)")
    # Zip2ZipLogprobsProcessor overrides this private method.
    assert src.parameters(LOGPROBS, "LogprobsProcessor._update_sample_logprobs") == ["self", "logprobs_lists"]
    # Zip2ZipRenderer's left truncation of compressed prompts overrides this private method.
    assert src.parameters("vllm/renderers/params.py", "TokenizeParams._token_truncation") == [
        "self", "tokenizer", "tokens",
    ]  # fmt: skip


def test_registries_and_model_classes_the_plugin_builds_on(vllm_source):
    src = vllm_source
    assert src.parameters("vllm/model_executor/models/registry.py", "_ModelRegistry.register_model") == [
        "self", "model_arch", "model_cls",
    ]  # fmt: skip
    registries = [
        ("vllm/tokenizers/registry.py", "_TokenizerRegistry", "tokenizer_mode"),
        ("vllm/renderers/registry.py", "RendererRegistry", "renderer_mode"),
    ]
    for path, registry, mode in registries:
        assert src.parameters(path, f"{registry}.register") == ["self", mode, "module", "class_name"]
    assert "MODELS_CONFIG_MAP: dict[str, type[VerifyAndUpdateConfig]] = {" in src.module("vllm/model_executor/models/config.py")[0]
    assert "def with_hf_config(" in src.source(CONFIG, "VllmConfig")
    # Zip2ZipModelMixin.forward calls the compiled base model positionally.
    for path, model in [("vllm/model_executor/models/llama.py", "LlamaModel"), ("vllm/model_executor/models/qwen2.py", "Qwen2Model")]:
        assert src.parameters(path, f"{model}.forward")[:5] == [
            "self", "input_ids", "positions", "intermediate_tensors", "inputs_embeds",
        ]  # fmt: skip
        assert "support_torch_compile" in [ast_name(d) for d in src.class_def(path, model).decorator_list]
    for path, name in [("vllm/model_executor/models/mistral.py", "MistralForCausalLM"), ("vllm/model_executor/models/qwen3.py", "Qwen3ForCausalLM")]:
        src.class_def(path, name)


def test_config_hook_runs_before_vllm_fills_in_defaults(vllm_source):
    """The hook tells a user's explicit setting from vLLM's default by seeing None."""
    src = vllm_source
    post_init = src.source(CONFIG, "VllmConfig.__post_init__")
    hook = post_init.index("self.try_verify_and_update_config()")
    assert hook < post_init.index("elif self.scheduler_config.async_scheduling is None:")
    assert hook < post_init.index("self._apply_optimization_level_defaults(")
    assert "cls.verify_and_update_config(self)" in src.source(CONFIG, "VllmConfig.try_verify_and_update_config")
    assert src.class_fields("vllm/config/scheduler.py", "SchedulerConfig")["async_scheduling"] == "None"
    assert src.class_fields("vllm/config/compilation.py", "CompilationConfig")["cudagraph_mode"] == "None"


def test_model_runner_choice_follows_the_environment(vllm_source):
    """patches.select_v1_model_runner: vLLM reads VLLM_USE_V2_MODEL_RUNNER on every access of
    ``use_v2_model_runner`` (where it is set, it decides) and can refresh its frozen reads."""
    src = vllm_source
    choice = src.source(CONFIG, "VllmConfig.use_v2_model_runner")
    assert "use_v2_model_runner = envs.VLLM_USE_V2_MODEL_RUNNER\n        if use_v2_model_runner is not None:\n            return use_v2_model_runner" in choice
    # The CPU test of the CUDA default makes vLLM see Triton through this module global.
    assert "from vllm.triton_utils import HAS_TRITON" in src.module(CONFIG)[0]
    assert "HAS_TRITON" in choice
    envs = src.module("vllm/envs.py")[0]
    assert '"VLLM_USE_V2_MODEL_RUNNER": lambda: maybe_convert_bool(' in envs
    for function in ("_is_envs_cache_enabled", "enable_envs_cache", "disable_envs_cache"):
        assert src.parameters("vllm/envs.py", function) == []


def test_cuda_install_pins_are_the_wheels():
    """scripts/install_vllm.sh (Z2Z_VLLM_TARGET=cuda) and the Makefile install the torch the CUDA
    wheel pins, and transformers versions both the wheel and this package's `model` extra take."""
    wheel = cuda_wheel()
    requires = wheel_requirements(wheel)
    script = (ROOT / "scripts" / "install_vllm.sh").read_text()
    cuda = script[script.index("  cuda)") : script.index(";;", script.index("  cuda)"))]
    assert f'"vllm=={VllmSource.wheel(wheel).version}"' in cuda
    assert f'"torch{requires["torch"]}"' in cuda
    assert f"torch{requires['torch']}" in (ROOT / "Makefile").read_text()
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11, as vllm 0.33 needs
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    extra = next(Requirement(r) for r in extras["model"] if r.startswith("transformers"))
    installed = Requirement(re.search(r'"(transformers[^"]*)"', cuda).group(1))
    candidates = [f"5.{minor}.{patch}" for minor in range(0, 30) for patch in range(3)]
    taken = [v for v in candidates if installed.specifier.contains(v)]
    assert taken, installed
    for version in taken:
        assert version in SpecifierSet(requires["transformers"]) and extra.specifier.contains(version), version


def test_register_registers_without_patching_and_patches_install_once():
    register()
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    patches.apply()
    patches.apply()
    for method in (GPUModelRunner._model_forward, GPUModelRunner._on_request_state_removed,
                   GPUModelRunner.reload_weights):
        assert hasattr(method, "__wrapped__") and not hasattr(method.__wrapped__, "__wrapped__")


def ast_name(node) -> str:
    """The name of a decorator: ``name``, ``module.name`` or a call of either."""
    node = getattr(node, "func", node)
    return getattr(node, "attr", getattr(node, "id", ""))


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


def test_the_kernel_rebinding_scan_still_needs_the_llvmlite_guard(vllm_source):
    """guard_llvmlite_ffi exists for this line of vLLM's dispatcher: when it changes, re-check
    whether engines still fail to start after an n-gram engine without the guard."""
    scan, _ = vllm_source.module("vllm/triton_utils/dispatcher.py")
    assert 'if hasattr(value, "__dict__"):' in scan and 'vars(value).get("kernel")' in scan


def test_the_llvmlite_guard_hides_only_missing_dunders():
    pytest.importorskip("llvmlite")
    from llvmlite.binding import ffi

    patches.guard_llvmlite_ffi(load=True)
    assert not hasattr(ffi.lib, "__dict__")  # what vLLM's scan asks
    assert callable(ffi.lib.LLVMPY_GetVersionInfo)  # library functions still resolve
    patches.guard_llvmlite_ffi(load=True)  # once per process
    assert not hasattr(ffi.lib, "__dict__")
