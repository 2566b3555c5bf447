from __future__ import annotations

import pytest

from tests.vllm.helpers import PATTERNS, reference_generation


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
