"""Which implementation of an op runs: the torch reference, the Triton kernel or the CUDA C++ one."""

from __future__ import annotations

from typing import Literal

import torch

Backend = Literal["auto", "torch", "triton", "cuda"]
BACKENDS = ("auto", "torch", "triton", "cuda")


def resolve(backend: Backend, device: torch.device, *, has_cuda_kernel: bool = False) -> str:
    """``auto``: on a CUDA device the CUDA C++ kernel if there is one and it was built, else
    Triton; on any other device the torch reference. An explicit choice is taken as given
    (``triton`` on CPU tensors needs ``TRITON_INTERPRET=1`` set before triton is imported)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if device.type != "cuda":
        return "torch"
    if has_cuda_kernel:
        from z2z_vllm.ops._cuda import extension

        if extension() is not None:
            return "cuda"
    return "triton"
