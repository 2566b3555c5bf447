from __future__ import annotations

import os

import pytest

from tests.vllm.helpers import PATTERNS, reference_generation


def _require_vllm_in_ci() -> None:
    """Every plugin test module skips without vLLM (importorskip), which in CI would pass a run
    that tested none of them: there, a vLLM that cannot be imported fails the run."""
    ci = os.environ.get("CI", "")
    if ci.lower() in ("", "0", "false"):
        return
    try:
        import vllm  # noqa: F401
    except ImportError as error:
        raise pytest.UsageError(
            f"CI={ci} but vLLM cannot be imported ({error}): the plugin tests in tests/vllm would all be "
            "skipped; install it with scripts/install_vllm.sh"
        ) from error


_require_vllm_in_ci()


@pytest.fixture(scope="session")
def codec(tiny_export):
    from z2z_vllm.modeling.config import Zip2ZipConfig

    return Zip2ZipConfig.load(tiny_export).codec()


@pytest.fixture(scope="session")
def prompts(codec) -> list[list[int]]:
    """Compressed prompts of PATTERNS, with hypertokens."""
    return [codec.encode(pattern) for pattern in PATTERNS]


@pytest.fixture(scope="session")
def reference(tiny_export, prompts) -> list[list[int]]:
    """The HF reference's greedy continuations of ``prompts``."""
    return reference_generation(tiny_export, prompts)
