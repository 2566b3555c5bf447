"""Checks the z2z model classes make when a model loads, before the first step could fail."""

from __future__ import annotations

import pytest

from tests.vllm.vllm_source import ROOT

pytest.importorskip("vllm")

from z2z_vllm.vllm.model import (  # noqa: E402
    CUDA_KERNEL_MAX_SUBTOKENS,
    HYPER_ROWS_ENV,
    check_codebook_backend,
    initial_hyper_rows,
)


def test_the_limit_is_the_cuda_kernels_own():
    header = (ROOT / "kernels" / "codebook_update.cuh").read_text()
    assert f"constexpr int kMaxSubtokens = {CUDA_KERNEL_MAX_SUBTOKENS};" in header


def test_hypertokens_longer_than_the_cuda_kernel_holds_are_refused_at_load():
    with pytest.raises(ValueError, match="M = 17 .* M <= 16.* Z2Z_DEVICE_CODEBOOKS=0"):
        check_codebook_backend(17, "cuda")


@pytest.mark.parametrize(("max_subtokens", "backend"), [(16, "cuda"), (17, "triton"), (17, "torch"), (17, None)])
def test_what_the_update_backend_can_hold_loads(max_subtokens, backend):
    check_codebook_backend(max_subtokens, backend)


def test_the_row_table_size_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(HYPER_ROWS_ENV, raising=False)
    assert initial_hyper_rows() is None
    monkeypatch.setenv(HYPER_ROWS_ENV, "65536")
    assert initial_hyper_rows() == 65536


@pytest.mark.parametrize("value", ["0", "-5", "lots", "1e5"])
def test_a_bad_row_table_size_is_refused(monkeypatch, value):
    monkeypatch.setenv(HYPER_ROWS_ENV, value)
    with pytest.raises(ValueError, match="Z2Z_HYPER_ROWS must be a positive number of rows"):
        initial_hyper_rows()
