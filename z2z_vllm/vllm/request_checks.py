"""Admission checks of single requests, run by vLLM's logits-processor validation hook.

Registered for z2z models by :class:`z2z_vllm.vllm.registration.Zip2ZipConfigChecks`; a refused
request gets a ``ValueError`` (HTTP 400 on the server) before it reaches the engine.
"""

from __future__ import annotations

import torch
from vllm.sampling_params import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor

__all__ = ["Zip2ZipRequestChecks", "unsupported_request_features"]


def unsupported_request_features(params: SamplingParams) -> list[str]:
    """Names of the options in ``params`` that z2z models do not support yet."""
    asked = {
        # Scoring prompt positions needs the codebook as it was at each of them.
        "prompt_logprobs": params.prompt_logprobs is not None,
        # Grammars and banned words are written over base tokens, not hypertokens.
        "structured outputs": params.structured_outputs is not None,
        "bad_words": bool(params.bad_words),
    }
    return [name for name, is_asked in asked.items() if is_asked]


class Zip2ZipRequestChecks(LogitsProcessor):
    """Rejects unsupported request options at admission; leaves logits unchanged."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        refused = unsupported_request_features(sampling_params)
        if refused:
            raise ValueError(f"z2z models do not support {', '.join(refused)} yet")

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        del vllm_config, device, is_pin_memory

    def is_argmax_invariant(self) -> bool:
        return True

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        del batch_update

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits
