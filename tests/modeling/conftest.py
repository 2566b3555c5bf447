"""Fixtures of the modeling tests; builders live in tests/modeling/helpers.py."""

from __future__ import annotations

import importlib.util

import pytest

# The modeling extra (pip install -e .[model]) brings torch and transformers; without it these
# tests have nothing to run against.
if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(params=["llama", "gpt2"])
def arch(request) -> str:
    """Each test taking ``arch`` runs on a Llama- and a GPT-2-shaped base model."""
    return request.param
