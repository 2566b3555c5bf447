from __future__ import annotations

import importlib.util
import os

import pytest

# Without a GPU, Triton kernels run through Triton's interpreter (tests/ops). The setting is read
# when a kernel is decorated, and vLLM imports triton too, so it is set here, before any test
# module imports either; vLLM's CPU engine is unaffected by it.
if importlib.util.find_spec("torch") is not None:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """A servable export of a tiny random z2z model (see tests/vllm/helpers.py); shared by the
    plugin tests and the serving benchmark's smoke test."""
    from tests.vllm.helpers import export_tiny_model, use_test_env

    use_test_env()
    return export_tiny_model(tmp_path_factory.mktemp("z2z_tiny"))
