"""Checks the z2z model classes make when a model loads, before the first step could fail."""

from __future__ import annotations

import pytest

from tests.vllm.vllm_source import ROOT

pytest.importorskip("vllm")

from z2z_vllm.vllm.model import CUDA_KERNEL_MAX_SUBTOKENS, check_codebook_backend  # noqa: E402


def test_the_limit_is_the_cuda_kernels_own():
    header = (ROOT / "kernels" / "codebook_update.cuh").read_text()
    assert f"constexpr int kMaxSubtokens = {CUDA_KERNEL_MAX_SUBTOKENS};" in header


def test_hypertokens_longer_than_the_cuda_kernel_holds_are_refused_at_load():
    with pytest.raises(ValueError, match="M = 17 .* M <= 16.* Z2Z_DEVICE_CODEBOOKS=0"):
        check_codebook_backend(17, "cuda")


@pytest.mark.parametrize(("max_subtokens", "backend"), [(16, "cuda"), (17, "triton"), (17, "torch"), (17, None)])
def test_what_the_update_backend_can_hold_loads(max_subtokens, backend):
    check_codebook_backend(max_subtokens, backend)
