"""Multi-process training under ``torchrun`` (DDP): the process group, the micro-batches each rank
takes, and sums across ranks. Without torchrun the world is one process and none of this runs.

    torchrun --nproc_per_node 8 -m z2z_vllm.cli train --config configs/smollm2_z2z_kd.yaml

An optimizer step is the same ``grad_accum`` micro-batches whatever the world size: rank r takes
micro-batches r, r + N, r + 2N, ... and DDP sums their gradients (``grad_accum`` must divide by
N). So a run gives the loss curve of a single process at the same global batch, and a checkpoint
resumes under any world size. Exceptions, by design: LoRA dropout masks and the entries sampled
for the reconstruction loss come from each rank's own random stream.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["World", "join_world"]


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

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


def join_world(*, grad_accum: int, device: str | None) -> World:
    """The world torchrun started this process in (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), with
    its process group: NCCL on GPUs, gloo on CPUs."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if grad_accum % size:
        raise ValueError(f"grad_accum ({grad_accum}) must be a multiple of the world size ({size})")
    world = World(rank=int(os.environ["RANK"]), size=size, local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        on_gpu = world.device(device).type == "cuda"
        if on_gpu:
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group("nccl" if on_gpu else "gloo")
    return world
