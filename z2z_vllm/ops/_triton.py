"""Helpers shared by the Triton kernels."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def both(mask, flag):
    """``mask & flag`` for a vector mask and a scalar flag, spelled so that Triton's interpreter
    keeps the result boolean (it widens a broadcast scalar flag to int32, which loads reject)."""
    return tl.where(flag, mask, False)
