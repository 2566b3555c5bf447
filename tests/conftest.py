from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile

import pytest

# Without a GPU, Triton kernels run through Triton's interpreter (tests/ops). The setting is read
# when a kernel is decorated, and vLLM imports triton too, so it is set here, before any test
# module imports either; vLLM's CPU engine is unaffected by it.
if importlib.util.find_spec("torch") is not None:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_configure(config):
    """Tests never write to the user's Hugging Face cache, where `z2z build-model` and
    `z2z export --name` register model names (z2z_vllm.model_names): the session gets its own,
    which subprocesses inherit through the environment."""
    cache = tempfile.mkdtemp(prefix="z2z-tests-hf-hub-")
    os.environ["HF_HUB_CACHE"] = cache
    if "huggingface_hub.constants" in sys.modules:  # read at import: imported already, set it too
        sys.modules["huggingface_hub.constants"].HF_HUB_CACHE = cache
    config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """A servable export of a tiny random z2z model (see tests/vllm/helpers.py); shared by the
    plugin tests and the serving benchmark's smoke test."""
    from tests.vllm.helpers import export_tiny_model, use_test_env

    use_test_env()
    return export_tiny_model(tmp_path_factory.mktemp("z2z_tiny"))
