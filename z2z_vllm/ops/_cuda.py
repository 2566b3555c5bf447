"""The optional CUDA C++ extension ``z2z_vllm._cuda_ops`` (kernels/*.cu).

setup.py builds it only on request (``Z2Z_BUILD_CUDA=1``) where torch has CUDA and nvcc exists;
without it every op still runs (Triton on GPU, torch on CPU).
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType


@functools.cache
def extension() -> ModuleType | None:
    """The built extension, or None where it was not built."""
    try:
        return importlib.import_module("z2z_vllm._cuda_ops")
    except ImportError:
        return None
