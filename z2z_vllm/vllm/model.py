"""vLLM model classes for zip2zip exports: the base architecture plus hyper-encoders.

``Zip2Zip<Base>ForCausalLM`` is vLLM's own ``<Base>ForCausalLM`` built over the export's base
config (vocabulary = the weights' ``z2z_base_vocab_size`` rows), with

- input embeddings: base rows for ids ``< V``, the request's hyper input rows for hypertokens;
- ``compute_logits``: base logits ``[:, :V]`` then ``V .. V+C-1`` from the request's hyper output
  rows, -inf for entries not defined yet (vLLM's sampler sees ``vocab_size`` = V + C);
- ``hyper_slots``: the per-request codebooks (:class:`~z2z_vllm.vllm.slots.HyperSlots`), one slot
  per schedulable sequence (``max_num_seqs``), advanced by the runner hook in
  :mod:`z2z_vllm.vllm.patches` before each forward;
- ``forward``: the step's embeddings (base and hyper rows) are composed outside the compiled
  base model and written into a static buffer it reads from: compiled code and piecewise CUDA
  graphs see the same input address on every step, as with vLLM's own embeddings buffer for
  models that take embeddings (a graph replays from the address seen at capture).

Memory for the slots: 2 x max_num_seqs x C x hidden values in the model dtype (SmolLM2-135M,
C = 1024, 64 sequences, bf16: 151 MB), plus the shared row caches: 2 x 16384 x hidden (38 MB).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from vllm.config import VllmConfig
from vllm.model_executor.models.llama import LlamaForCausalLM
from vllm.model_executor.models.mistral import MistralForCausalLM
from vllm.model_executor.models.qwen2 import Qwen2ForCausalLM
from vllm.model_executor.models.qwen3 import Qwen3ForCausalLM

from z2z_vllm.modeling import WEIGHTS_FILE
from z2z_vllm.modeling.config import BASE_VOCAB_SIZE_KEY, HF_CONFIG_KEY, Zip2ZipConfig
from z2z_vllm.modeling.encoders import build_encoder
from z2z_vllm.ops._backend import resolve
from z2z_vllm.vllm import patches
from z2z_vllm.vllm.compose import encode_rows
from z2z_vllm.vllm.slots import HyperSlots

__all__ = [
    "Zip2ZipModelMixin",
    "Zip2ZipLlamaForCausalLM",
    "Zip2ZipMistralForCausalLM",
    "Zip2ZipQwen2ForCausalLM",
    "Zip2ZipQwen3ForCausalLM",
]

_ENCODER_PREFIXES = ("input_encoder.", "output_encoder.")


def _base_vllm_config(vllm_config: VllmConfig, z2z: Zip2ZipConfig) -> VllmConfig:
    """The same engine config over the base model's own HF config (its vocabulary, its class)."""
    hf_config = vllm_config.model_config.hf_config
    base_config = copy.deepcopy(hf_config)
    base_config.vocab_size = getattr(hf_config, BASE_VOCAB_SIZE_KEY)
    return vllm_config.with_hf_config(base_config, architectures=[z2z.base_architecture])


DEVICE_CODEBOOKS_ENV = "Z2Z_DEVICE_CODEBOOKS"


def _device_codebooks_setting() -> bool | None:
    """``Z2Z_DEVICE_CODEBOOKS=1`` / ``0`` forces decode-step codebook updates on / off the device
    (e.g. on to test the GPU path's logic on a CPU); unset: on where the model runs on a GPU."""
    value = os.environ.get(DEVICE_CODEBOOKS_ENV)
    return None if value is None else value == "1"


# kMaxSubtokens in kernels/codebook_update.cuh: the CUDA update kernel keeps an entry in registers.
CUDA_KERNEL_MAX_SUBTOKENS = 16


def check_codebook_backend(max_subtokens: int, backend: str | None) -> None:
    """Refuses, at model load, a model whose decode-step codebook updates would run on a kernel
    that cannot hold its entries (``backend``: the update's backend, None: host updates only)."""
    if backend == "cuda" and max_subtokens > CUDA_KERNEL_MAX_SUBTOKENS:
        raise ValueError(
            f"z2z: the model's hypertokens hold up to M = {max_subtokens} base tokens; the CUDA codebook "
            f"kernel (z2z_vllm._cuda_ops) handles M <= {CUDA_KERNEL_MAX_SUBTOKENS}. Serve it without the "
            f"CUDA extension (Triton kernels) or with {DEVICE_CODEBOOKS_ENV}=0 (codebook updates on the host)"
        )


class Zip2ZipModelMixin:
    """Turns a vLLM ``*ForCausalLM`` (with ``self.model``, ``self.lm_head``) into its z2z form.
    Subclasses list the mixin first: ``class Zip2ZipXForCausalLM(Zip2ZipModelMixin, XForCausalLM)``."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        patches.apply()  # this worker serves a z2z model: the runner hooks are needed here
        hf_config = vllm_config.model_config.hf_config
        z2z = Zip2ZipConfig.from_dict(getattr(hf_config, HF_CONFIG_KEY))
        super().__init__(vllm_config=_base_vllm_config(vllm_config, z2z), prefix=prefix)
        self.z2z_config = z2z
        self.model_dir = Path(vllm_config.model_config.model)
        hidden = hf_config.hidden_size

        def encoder(config):
            return build_encoder(config, model_hidden_size=hidden, max_subtokens=z2z.max_subtokens)

        self.input_encoder = encoder(z2z.input_encoder)
        self.output_encoder = self.input_encoder if z2z.tie_encoders else encoder(z2z.output_encoder_config)
        self.hyper_slots = HyperSlots(
            codec=z2z.codec(),
            num_slots=vllm_config.scheduler_config.max_num_seqs,
            hidden_size=hidden,
            encode_inputs=self._encode_inputs,
            encode_outputs=self._encode_outputs,
            device=None,  # the loader's target device is the default device here
            dtype=vllm_config.model_config.dtype,
            device_codebooks=_device_codebooks_setting(),
        )
        slots = self.hyper_slots
        backend = resolve("auto", slots.num_known.device, has_cuda_kernel=True) if slots.device_codebooks else None
        check_codebook_backend(z2z.max_subtokens, backend)
        # The base model's input, at a fixed address (module docstring); the runner never
        # schedules more than max_num_batched_tokens tokens, padding included.
        self.inputs_embeds_buffer = torch.zeros(
            vllm_config.scheduler_config.max_num_batched_tokens, hidden, dtype=vllm_config.model_config.dtype
        )

    # -- hyper rows -----------------------------------------------------------------------------

    def _encode_inputs(self, subtoken_ids: torch.Tensor) -> torch.Tensor:
        return encode_rows(
            self.input_encoder,
            subtoken_ids,
            self.model.embed_tokens.weight,
            max_subtokens=self.z2z_config.max_subtokens,
            use_kernels=self.hyper_slots.use_kernels,
        )

    def _encode_outputs(self, subtoken_ids: torch.Tensor) -> torch.Tensor:
        return encode_rows(
            self.output_encoder,
            subtoken_ids,
            self.lm_head.weight,
            max_subtokens=self.z2z_config.max_subtokens,
            use_kernels=self.hyper_slots.use_kernels,
        )

    # -- vLLM model interface -------------------------------------------------------------------

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.hyper_slots.embed(input_ids, self.model.embed_input_ids)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors=None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ):
        if inputs_embeds is None:
            inputs_embeds = self.inputs_embeds_buffer[: input_ids.shape[0]]
            inputs_embeds.copy_(self.embed_input_ids(input_ids))
        return self.model(None, positions, intermediate_tensors, inputs_embeds, **kwargs)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        base_logits = super().compute_logits(hidden_states)
        if base_logits is None:
            return None
        return self.hyper_slots.logits(hidden_states, base_logits)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Base weights through the base class; hyper-encoder weights from the export's own
        file (vLLM's loader passes it along only when the base weights are not sharded)."""
        base_weights = ((name, w) for name, w in weights if not name.startswith(_ENCODER_PREFIXES))
        loaded = set(super().load_weights(base_weights))
        encoders = nn.ModuleDict({"input_encoder": self.input_encoder})
        if not self.z2z_config.tie_encoders:
            encoders["output_encoder"] = self.output_encoder
        state = load_file(str(self.model_dir / WEIGHTS_FILE))
        expected = encoders.state_dict()
        if set(state) != set(expected):
            raise ValueError(
                f"{self.model_dir / WEIGHTS_FILE}: encoder weights do not match the config "
                f"(missing {sorted(set(expected) - set(state))}, unexpected {sorted(set(state) - set(expected))})"
            )
        encoders.load_state_dict(state)
        self.hyper_slots.invalidate_rows()  # rows encoded so far came from the old weights
        return loaded | {name for name, _ in encoders.named_parameters()}


class Zip2ZipLlamaForCausalLM(Zip2ZipModelMixin, LlamaForCausalLM):
    pass


class Zip2ZipMistralForCausalLM(Zip2ZipModelMixin, MistralForCausalLM):
    pass


class Zip2ZipQwen2ForCausalLM(Zip2ZipModelMixin, Qwen2ForCausalLM):
    pass


class Zip2ZipQwen3ForCausalLM(Zip2ZipModelMixin, Qwen3ForCausalLM):
    pass
