"""What the ``vllm.general_plugins`` entry point runs: registers models, tokenizer and checks.

Registration goes through vLLM's own registries (``ModelRegistry``, ``TokenizerRegistry``,
``RENDERER_REGISTRY``, the per-architecture config hooks of ``MODELS_CONFIG_MAP``) by module
path, so nothing heavy is imported until a z2z model is actually loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from z2z_vllm.modeling.config import serving_architecture

if TYPE_CHECKING:
    from vllm.config import ModelConfig, VllmConfig

__all__ = ["register", "SUPPORTED_BASE_ARCHITECTURES", "TOKENIZER_MODE", "ARCHITECTURES"]

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

    from z2z_vllm.vllm import patches
    from z2z_vllm.vllm.name_resolution import resolve_z2z_names

    for architecture in ARCHITECTURES:
        ModelRegistry.register_model(architecture, f"z2z_vllm.vllm.model:{architecture}")
        MODELS_CONFIG_MAP[architecture] = Zip2ZipConfigChecks
    TokenizerRegistry.register(TOKENIZER_MODE, "z2z_vllm.vllm.tokenizer", "Zip2ZipTokenizer")
    RENDERER_REGISTRY.register(TOKENIZER_MODE, "z2z_vllm.vllm.renderer", "Zip2ZipRenderer")
    patches.apply()
    resolve_z2z_names()  # names become folders before any config says "z2z": here, not in the hook
    _registered = True


class Zip2ZipConfigChecks:
    """Per-architecture config hook (vLLM's ``VerifyAndUpdateConfig`` shape): picks the z2z
    tokenizer mode and refuses engine features that do not work with hypertokens yet."""

    @staticmethod
    def verify_and_update_model_config(model_config: ModelConfig) -> None:
        if model_config.tokenizer_mode in ("auto", "hf"):
            model_config.tokenizer_mode = TOKENIZER_MODE
        elif model_config.tokenizer_mode != TOKENIZER_MODE:
            raise ValueError(
                f"z2z models need tokenizer_mode={TOKENIZER_MODE!r} (or 'auto'), "
                f"got {model_config.tokenizer_mode!r}"
            )
        checks = "z2z_vllm.vllm.request_checks:Zip2ZipRequestChecks"
        processors = list(model_config.logits_processors or ())
        if checks not in processors:
            model_config.logits_processors = [*processors, checks]

    @staticmethod
    def verify_and_update_config(vllm_config: VllmConfig) -> None:
        unsupported = {
            "speculative decoding": vllm_config.speculative_config is not None,
            "LoRA adapters (enable_lora)": vllm_config.lora_config is not None,
            "pipeline parallelism": vllm_config.parallel_config.pipeline_parallel_size > 1,
            # The hyper-encoders read whole embedding tables, which tensor parallelism shards.
            "tensor parallelism": vllm_config.parallel_config.tensor_parallel_size > 1,
            "prompt embeddings (enable_prompt_embeds)": bool(vllm_config.model_config.enable_prompt_embeds),
            "the V2 model runner (VLLM_USE_V2_MODEL_RUNNER=1)": bool(
                getattr(vllm_config, "use_v2_model_runner", False)
            ),
        }
        refused = [name for name, asked in unsupported.items() if asked]
        if refused:
            raise ValueError(f"z2z models do not support {', '.join(refused)} yet")
        # The runner advances each request's codebook over its token list on the host, which
        # must hold the previous step's sampled token: no overlap of scheduling and execution.
        vllm_config.scheduler_config.async_scheduling = False
        # The per-step hypertoken work (codebook slots, device updates, hyper rows) runs in the
        # model's own forward, around the base model: a full CUDA graph would capture it with one
        # step's tensors baked in. Piecewise graphs capture only the compiled base model.
        from vllm.config.compilation import CUDAGraphMode

        compilation = vllm_config.compilation_config
        if compilation.cudagraph_mode is None or compilation.cudagraph_mode.has_full_cudagraphs():
            compilation.cudagraph_mode = CUDAGraphMode.PIECEWISE
