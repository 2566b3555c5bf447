from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """A servable export of a tiny random z2z model (see tests/vllm/helpers.py); shared by the
    plugin tests and the serving benchmark's smoke test."""
    from tests.vllm.helpers import export_tiny_model, use_test_env

    use_test_env()
    return export_tiny_model(tmp_path_factory.mktemp("z2z_tiny"))
