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

Tensor parallelism: the encoders and the hyper rows are replicated on every rank (rows are full
width: the logits need whole hidden states), the embedding and lm_head are vocabulary shards, from
which the rows an encoding reads are gathered (:meth:`Zip2ZipModelMixin._encode_rows`). Pipeline
parallelism: the first stage encodes input rows, the last output rows.

Memory for the slots: the row table of :mod:`z2z_vllm.vllm.slots` (2 x rows in flight x hidden
values in the model dtype) and its index (max_num_seqs x C int32), on every tensor-parallel rank.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from vllm.config import VllmConfig
from vllm.distributed import get_pp_group, get_tensor_model_parallel_world_size
from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding
from vllm.model_executor.models.llama import LlamaForCausalLM
from vllm.model_executor.models.mistral import MistralForCausalLM
from vllm.model_executor.models.qwen2 import Qwen2ForCausalLM
from vllm.model_executor.models.qwen3 import Qwen3ForCausalLM

from z2z_vllm.modeling import WEIGHTS_FILE
from z2z_vllm.modeling.config import BASE_VOCAB_SIZE_KEY, HF_CONFIG_KEY, Zip2ZipConfig
from z2z_vllm.modeling.encoders import build_encoder
from z2z_vllm.ops._backend import resolve
from z2z_vllm.vllm import patches
from z2z_vllm.vllm.compose import encode_rows, encode_rows_from_shards
from z2z_vllm.vllm.slots import HyperSlots, StepBatch

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


HYPER_ROWS_ENV = "Z2Z_HYPER_ROWS"


def initial_hyper_rows() -> int | None:
    """``Z2Z_HYPER_ROWS=N`` allocates the shared hyper row table for N rows at model load (unset:
    ``HyperSlots``' default, a quarter of max_num_seqs x C). On a GPU, allocating the expected peak
    up front keeps the table's growth out of the memory vLLM gives the KV cache."""
    value = os.environ.get(HYPER_ROWS_ENV)
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{HYPER_ROWS_ENV} must be a positive number of rows, got {value!r}")
    return int(value)


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


class RankConsistentSlots(HyperSlots):
    """:class:`HyperSlots` for tensor-parallel ranks: slots are freed in the same order on every
    rank.

    vLLM's runner frees finished requests in the iteration order of a set of request ids
    (``SchedulerOutput.finished_req_ids``), which differs between worker processes (string hashes
    are salted per process). Freed in that order, slots would go to different requests on
    different ranks and the row table would keep and reuse different rows; the ranks would then
    encode different rows, or the same in another order, and the sharded lookup's all-reduce would
    sum rows of different ids, or wait for a rank with nothing to encode. Releases are held until
    the next step and applied in sorted order (``num_active`` still counts them until then)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._released: set[str] = set()

    def release(self, req_id: str) -> None:
        self._released.add(req_id)

    def begin_step(self, batch: StepBatch) -> None:
        for req_id in sorted(self._released):
            super().release(req_id)
        self._released.clear()
        super().begin_step(batch)


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
        slots_class = RankConsistentSlots if get_tensor_model_parallel_world_size() > 1 else HyperSlots
        self.hyper_slots = slots_class(
            codec=z2z.codec(),
            num_slots=vllm_config.scheduler_config.max_num_seqs,
            hidden_size=hidden,
            encode_inputs=self._encode_inputs,
            encode_outputs=self._encode_outputs,
            device=None,  # the loader's target device is the default device here
            dtype=vllm_config.model_config.dtype,
            device_codebooks=_device_codebooks_setting(),
            initial_rows=initial_hyper_rows(),
        )
        slots = self.hyper_slots
        backend = resolve("auto", slots.num_known.device, has_cuda_kernel=True) if slots.device_codebooks else None
        check_codebook_backend(z2z.max_subtokens, backend)
        pipeline = get_pp_group()
        self.is_first_stage, self.is_last_stage = pipeline.is_first_rank, pipeline.is_last_rank
        # The base model's input, at a fixed address (module docstring); the runner never
        # schedules more than max_num_batched_tokens tokens, padding included.
        self.inputs_embeds_buffer = torch.zeros(
            vllm_config.scheduler_config.max_num_batched_tokens, hidden, dtype=vllm_config.model_config.dtype
        )

    # -- hyper rows -----------------------------------------------------------------------------

    def _encode_inputs(self, subtoken_ids: torch.Tensor) -> torch.Tensor:
        return self._encode_rows(
            self.input_encoder, subtoken_ids, self.model.embed_tokens if self.is_first_stage else None
        )

    def _encode_outputs(self, subtoken_ids: torch.Tensor) -> torch.Tensor:
        return self._encode_rows(self.output_encoder, subtoken_ids, self.lm_head if self.is_last_stage else None)

    def _encode_rows(self, encoder: nn.Module, subtoken_ids: torch.Tensor, table: nn.Module | None) -> torch.Tensor:
        """Rows [N, H] of ``encoder`` over ``table`` (the input embedding or the lm_head; None on a
        pipeline stage that does not read these rows).

        Under tensor parallelism ``table`` holds one vocabulary shard per rank: the rows read
        are fetched by vLLM's own masked lookup and all-reduce (``VocabParallelEmbedding.forward``,
        called on the lm_head too: its own ``forward`` refuses), and every rank encodes them
        with its copy of the (small, replicated) encoder. Every rank enters that all-reduce at
        the same point with the same ids: each runs :meth:`HyperSlots.begin_step` on the same
        schedule over the same token lists (every rank samples the same tokens from the same
        all-gathered logits) with slots and table rows taken and freed in the same order
        (:class:`RankConsistentSlots`), so what gets encoded never depends on the rank.

        Under pipeline parallelism only the first stage embeds the tokens and only the last
        computes logits (the others hold no embedding or lm_head: ``PPMissingLayer``): the
        other stages encode nothing and keep zero rows they never read."""
        if table is None:
            buffer = self.inputs_embeds_buffer
            return buffer.new_zeros(len(subtoken_ids), buffer.shape[1])
        settings = {"max_subtokens": self.z2z_config.max_subtokens, "use_kernels": self.hyper_slots.use_kernels}
        if table.tp_size == 1:  # the whole table here: read it directly, no extra copy
            return encode_rows(encoder, subtoken_ids, table.weight, **settings)
        return encode_rows_from_shards(
            encoder, subtoken_ids, functools.partial(VocabParallelEmbedding.forward, table), **settings
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
        if inputs_embeds is None and self.is_first_stage:  # later stages start from intermediate_tensors
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
