"""Multi-process training under ``torchrun``: the process group, the micro-batches each rank
takes, sums across ranks, and the model's wrapping: DDP (every rank holds the whole model) or
FSDP2 (``parallel: fsdp``: each rank holds 1/N of every weight, for bases that do not fit one
device). Without torchrun the world is one process and none of this runs.

    torchrun --nproc_per_node 8 -m z2z_vllm.cli train --config configs/smollm2_z2z_kd.yaml
    torchrun --nproc_per_node 8 -m z2z_vllm.cli train --config cfg.yaml --set parallel=fsdp

An optimizer step is the same ``grad_accum`` micro-batches whatever the world size: rank r takes
micro-batches r, r + N, r + 2N, ... and DDP (or FSDP's reduce-scatter) averages their gradients
over the ranks (``grad_accum`` must divide by N). So a run gives the loss curve of a single
process at the same global batch, and a checkpoint resumes under any world size and either
wrapping: checkpoints hold full state dicts (FSDP gathers them). Exceptions, by design: LoRA
dropout masks and the entries sampled for the reconstruction loss come from each rank's own
random stream.

FSDP shards each decoder layer (the base's ``_no_split_modules``) and, at the root, everything
else: embeddings, LM head, final norm, hyper-encoders, reconstruction head. The root must hold the
embedding and LM head tables because the hyper-encoders read them outside those modules' own
forwards. Frozen base weights and trainable LoRA weights share a layer's group (FSDP2 reduces
only the gradients that exist).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["World", "join_world"]


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    sharded: bool = False  # FSDP: every rank runs every forward (evaluation too) and every gather

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def micro_batches(self, grad_accum: int) -> list[int]:
        """This rank's share of a step's micro-batches."""
        return list(range(self.rank, grad_accum, self.size))

    def device(self, requested: str | None) -> torch.device:
        if requested is None:
            requested = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(requested)
        if device.type == "cuda" and self.size > 1:
            device = torch.device("cuda", self.local_rank)
        return device

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def sum(self, values: dict[str, float]) -> dict[str, float]:
        """Each value summed over the ranks (float64 on the wire: token counts stay exact)."""
        if self.size == 1 or not values:
            return values
        backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        packed = torch.tensor(list(values.values()), dtype=torch.float64, device=backend_device)
        dist.all_reduce(packed)
        return dict(zip(values, packed.tolist()))

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """What runs the student forward: ``model`` itself (one process), a DDP wrapper of it, or
        ``model`` sharded in place by FSDP2 (its parameters become DTensors on ``device``).
        Build the optimizer after this: FSDP replaces the parameters."""
        if self.sharded:
            return _fully_shard(model, device)
        if self.size > 1:
            from torch.nn.parallel import DistributedDataParallel

            return DistributedDataParallel(model, broadcast_buffers=False)  # buffers (RoPE) never change
        return model

    @contextlib.contextmanager
    def gradient_sync(self, wrapped: torch.nn.Module, enabled: bool) -> Iterator[None]:
        """Backwards inside reduce gradients over the ranks only when ``enabled`` (a rank's last
        micro-batch of a step); the others accumulate locally."""
        if self.size == 1 or enabled:
            yield
        elif self.sharded:
            wrapped.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                wrapped.set_requires_gradient_sync(True)
        else:
            with wrapped.no_sync():
                yield


def join_world(*, grad_accum: int, device: str | None, parallel: str = "ddp") -> World:
    """The world torchrun started this process in (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), with
    its process group: NCCL on GPUs, gloo on CPUs. ``parallel``: "ddp" or "fsdp"."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        if parallel == "fsdp":
            raise ValueError(
                "parallel=fsdp shards the model over torchrun's processes, and this run has one: launch "
                "it with `torchrun --nproc_per_node N` (N > 1), or set parallel=ddp (the default) to "
                "train in one process (resuming an FSDP checkpoint included)"
            )
        return World()
    if grad_accum % size:
        raise ValueError(f"grad_accum ({grad_accum}) must be a multiple of the world size ({size})")
    world = World(rank=int(os.environ["RANK"]), size=size, local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                  sharded=parallel == "fsdp")
    if not dist.is_initialized():
        on_gpu = world.device(device).type == "cuda"
        if on_gpu:
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group("nccl" if on_gpu else "gloo")
    return world


# -- FSDP ---------------------------------------------------------------------------------------


def _fully_shard(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    layer_classes = set(getattr(_hf_model(model), "_no_split_modules", None) or ())
    layers = [module for module in model.modules() if type(module).__name__ in layer_classes]
    if not layers:
        raise ValueError(f"FSDP: found no decoder layers ({sorted(layer_classes)}) to shard in the base model")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    # The root keeps its weights gathered between forward and backward (FSDP2's default for the
    # root), so the teacher forward of distillation, which runs after the student's, finds them.
    return fully_shard(model, mesh=mesh)


def _hf_model(model: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face model under the PEFT wrapper."""
    base = model.base_model
    return base.get_base_model() if hasattr(base, "get_base_model") else base


def _optimizer_param_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Names of the optimizer's parameters in the order ``optimizer.state_dict()`` numbers them."""
    names = {param: name for name, param in model.named_parameters()}
    return [names[param] for group in optimizer.param_groups for param in group["params"]]


def _by_index(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """A named optimizer state dict (torch.distributed.checkpoint's) numbered as torch's own."""
    index = {name: i for i, name in enumerate(names)}
    return {
        "state": {index[name]: value for name, value in state["state"].items()},
        # Numbered in the optimizer's order, whatever order the named groups list them in.
        "param_groups": [{**group, "params": sorted(index[name] for name in group["params"])}
                         for group in state["param_groups"]],
    }


def _by_name(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Inverse of :func:`_by_index`."""
    return {
        "state": {names[i]: value for i, value in state["state"].items()},
        "param_groups": [{**group, "params": [names[i] for i in group["params"]]}
                         for group in state["param_groups"]],
    }


def gather_full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Full (unsharded) trainable weights, named from the root, and the optimizer state numbered as
    ``optimizer.state_dict()`` of a single process numbers it, both on the CPU of rank 0 (empty on
    the others). A collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    weights = get_model_state_dict(model, options=options)
    named = get_optimizer_state_dict(model, optimizer, options=options)
    if not named:
        return weights, {}
    return weights, _by_index(named, _optimizer_param_names(model, optimizer))


def load_full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                              saved: dict[str, Any]) -> None:
    """Loads a single process's ``optimizer.state_dict()`` into the optimizer of a sharded model
    (each rank keeps its shard of every state tensor). A collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, _by_name(saved, _optimizer_param_names(model, optimizer)),
                             options=StateDictOptions(full_state_dict=True))
