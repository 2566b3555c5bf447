"""What the ``vllm.general_plugins`` entry point runs: registers models, tokenizer and checks.

Registration goes through vLLM's own registries (``ModelRegistry``, ``TokenizerRegistry``,
``RENDERER_REGISTRY``, the per-architecture config hooks of ``MODELS_CONFIG_MAP``) by module
path, and vLLM runs it in every process whatever model it serves: it imports nothing vLLM has not
imported already. The patches of :mod:`z2z_vllm.vllm.patches` are applied only where a z2z model
is met: by the config hook (the process that builds the engine config: front end) and by the
model class (the worker that loads it).

The config hook also settles the engine settings z2z models need. vLLM calls it at the start of
``VllmConfig.__post_init__``, before it fills in its own defaults, so a setting still ``None``
there is one the user left unset: such settings are chosen for z2z and logged; a conflicting
setting the user asked for is refused with the reason.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from z2z_vllm.modeling.config import serving_architecture

if TYPE_CHECKING:
    from vllm.config import CompilationConfig, ModelConfig, SchedulerConfig, VllmConfig

__all__ = ["register", "SUPPORTED_BASE_ARCHITECTURES", "TOKENIZER_MODE", "ARCHITECTURES"]

# A child of vLLM's logger: printed with vLLM's own lines, at vLLM's level.
logger = logging.getLogger("vllm.z2z")

TOKENIZER_MODE = "z2z"
# Base classes the plugin can wrap (z2z_vllm.vllm.model defines one subclass for each).
SUPPORTED_BASE_ARCHITECTURES: tuple[str, ...] = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
)
ARCHITECTURES: tuple[str, ...] = tuple(serving_architecture(a) for a in SUPPORTED_BASE_ARCHITECTURES)

_registered = False


def register() -> None:
    """Entry point of the plugin; safe to call more than once."""
    global _registered
    if _registered:
        return
    from vllm import ModelRegistry
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP
    from vllm.renderers.registry import RENDERER_REGISTRY
    from vllm.tokenizers.registry import TokenizerRegistry

    from z2z_vllm.vllm.name_resolution import resolve_z2z_names

    for architecture in ARCHITECTURES:
        ModelRegistry.register_model(architecture, f"z2z_vllm.vllm.model:{architecture}")
        MODELS_CONFIG_MAP[architecture] = Zip2ZipConfigChecks
    TokenizerRegistry.register(TOKENIZER_MODE, "z2z_vllm.vllm.tokenizer", "Zip2ZipTokenizer")
    RENDERER_REGISTRY.register(TOKENIZER_MODE, "z2z_vllm.vllm.renderer", "Zip2ZipRenderer")
    resolve_z2z_names()  # names become folders before any config says "z2z": here, not in the hook
    _registered = True


class Zip2ZipConfigChecks:
    """Per-architecture config hook (vLLM's ``VerifyAndUpdateConfig`` shape): picks the z2z
    tokenizer mode and the engine settings z2z models need, refuses engine features that do not
    work with hypertokens yet, and applies the plugin's patches in this process."""

    @staticmethod
    def verify_and_update_model_config(model_config: ModelConfig) -> None:
        if model_config.tokenizer_mode in ("auto", "hf"):
            model_config.tokenizer_mode = TOKENIZER_MODE
        elif model_config.tokenizer_mode != TOKENIZER_MODE:
            raise ValueError(
                f"z2z models need tokenizer_mode={TOKENIZER_MODE!r} (or 'auto'), "
                f"got {model_config.tokenizer_mode!r}"
            )

    @staticmethod
    def verify_and_update_config(vllm_config: VllmConfig) -> None:
        from z2z_vllm.vllm import patches

        _ngram_drafts_only(vllm_config)
        unsupported = {
            "LoRA adapters (enable_lora)": vllm_config.lora_config is not None,
            "prompt embeddings (enable_prompt_embeds)": bool(vllm_config.model_config.enable_prompt_embeds),
        }
        refused = [name for name, asked in unsupported.items() if asked]
        if refused:
            raise ValueError(f"z2z models do not support {', '.join(refused)} yet")
        # Tensor and pipeline parallelism work: z2z_vllm.vllm.model reads the sharded embedding
        # and lm_head rows it needs on each rank, on the pipeline stage that holds them.
        _refuse_eager_pipeline_on_cpu(vllm_config)
        patches.guard_llvmlite_ffi(load=vllm_config.speculative_config is not None)
        _select_v1_model_runner(vllm_config)
        _turn_off_async_scheduling(vllm_config.scheduler_config)
        _piecewise_cuda_graphs_only(vllm_config.compilation_config)
        patches.apply()


def _ngram_drafts_only(vllm_config: VllmConfig) -> None:
    """Speculative decoding works with drafts made from the request's own token list (n-gram
    matches): the codebook slots check each draft row against the entries known at its position
    and rewind past rejected drafts. Draft models would have to read and write compressed ids.
    ``method="ngram"`` keeps vLLM's n-gram proposer over compressed ids unless
    ``Z2Z_NGRAM_DRAFTS`` asks for base-token matches (:mod:`z2z_vllm.vllm.drafts`, through vLLM's
    ``custom_class`` proposers)."""
    speculative = vllm_config.speculative_config
    if speculative is None:
        return
    from z2z_vllm.vllm.drafts import NGRAM_DRAFTS_ENV, PROPOSER_PATH, ngram_drafts_setting

    ours = speculative.method == "custom_class" and speculative.model == PROPOSER_PATH
    if speculative.method != "ngram" and not ours:
        raise ValueError(
            f"z2z models support speculative decoding with method 'ngram' (drafts copied from the request's "
            f"own tokens), got method={speculative.method!r}: a draft model would have to read and emit the "
            "request's hypertokens"
        )
    setting = ngram_drafts_setting()
    if speculative.method == "ngram" and setting != "compressed":
        speculative.method, speculative.model = "custom_class", PROPOSER_PATH
        logger.info("z2z: n-gram drafts (%s=%s: %s)", NGRAM_DRAFTS_ENV, setting, PROPOSER_PATH)


def _refuse_eager_pipeline_on_cpu(vllm_config: VllmConfig) -> None:
    """vLLM's CPU worker (0.32, 0.33) allocates the buffer a later pipeline stage receives its
    input in only during its compile warm-up, which eager mode skips: that stage's first step
    then fails an assertion and the engine dies (plain models too). Refused with what to do."""
    from vllm.platforms import current_platform

    if (
        vllm_config.parallel_config.pipeline_parallel_size > 1
        and current_platform.is_cpu()
        and vllm_config.model_config.enforce_eager
    ):
        raise ValueError(
            "pipeline parallelism on vLLM's CPU backend needs the compiled model: leave out "
            "enforce_eager (--enforce-eager). vLLM's CPU worker allocates a later stage's inputs only "
            "in its compile warm-up, which eager mode skips (plain models fail the same way)"
        )


def _select_v1_model_runner(vllm_config: VllmConfig) -> None:
    """The runner hooks of :mod:`z2z_vllm.vllm.patches` exist in vLLM's V1 model runner only.
    vLLM picks V2 by default where Triton runs (CUDA): z2z models pick V1 unless the user asked
    for V2."""
    from vllm import envs

    from z2z_vllm.vllm.patches import V2_MODEL_RUNNER_ENV, select_v1_model_runner

    requested = envs.VLLM_USE_V2_MODEL_RUNNER  # None: not set
    if requested:
        raise ValueError(
            f"z2z models run on vLLM's V1 model runner only (the per-request codebooks hook into "
            f"it), but {V2_MODEL_RUNNER_ENV}=1 is set: unset it or set it to 0"
        )
    if requested is None:
        select_v1_model_runner()
        logger.info(
            "z2z: using vLLM's V1 model runner (%s=0): the per-request codebooks hook into it; "
            "the V2 model runner is not supported yet", V2_MODEL_RUNNER_ENV,
        )  # fmt: skip
    if vllm_config.use_v2_model_runner:  # features that need V2 whatever the setting
        raise ValueError(
            "z2z models do not support features that need vLLM's V2 model runner "
            "(HiSparse attention, watermarking) yet"
        )


def _turn_off_async_scheduling(scheduler: SchedulerConfig) -> None:
    """The runner advances each request's codebook over its token list on the host, which must
    hold the previous step's sampled token: no overlap of scheduling and execution."""
    if scheduler.async_scheduling:
        raise ValueError(
            "z2z models do not support async scheduling (async_scheduling=True, --async-scheduling): "
            "each step's codebooks need the token sampled in the step before; leave the option out"
        )
    if scheduler.async_scheduling is None:
        logger.info("z2z: async scheduling off (each step's codebooks need the token sampled in the step before)")
    scheduler.async_scheduling = False


def _piecewise_cuda_graphs_only(compilation: CompilationConfig) -> None:
    """The per-step hypertoken work (codebook slots, device updates, hyper rows) runs in the
    model's own forward, around the base model: a full CUDA graph would capture it with one
    step's tensors baked in. Piecewise graphs capture only the compiled base model."""
    from vllm.config.compilation import CUDAGraphMode

    mode = compilation.cudagraph_mode
    if mode is None:
        compilation.cudagraph_mode = CUDAGraphMode.PIECEWISE
        logger.info("z2z: CUDA graphs of the base model only (cudagraph_mode=PIECEWISE): the per-step hypertoken work runs around it")
    elif mode.has_full_cudagraphs():
        raise ValueError(
            f"z2z models do not support full CUDA graphs (cudagraph_mode={mode.name}): they would capture "
            "the per-step hypertoken work with one step's tensors; use cudagraph_mode=PIECEWISE "
            "(-cc.cudagraph_mode=PIECEWISE) or leave it unset"
        )
