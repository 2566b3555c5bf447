"""Shared fixtures: tokenizers load once per session (a large tokenizer.json takes about a second)."""

from __future__ import annotations

import functools

import pytest

from z2z_vllm.data import load_tokenizer


@pytest.fixture(scope="session")
def tokenizer_of():
    """``tokenizer_of(name)``: the session's shared ``tokenizers.Tokenizer`` for ``name`` (do not mutate)."""
    return functools.cache(load_tokenizer)
