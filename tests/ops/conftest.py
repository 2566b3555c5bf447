"""Setup of the kernel tests: Triton runs on CPU tensors through its interpreter, switched on by
``tests/conftest.py`` (``TRITON_INTERPRET=1`` without a GPU, before anything imports triton)."""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("torch") is None or importlib.util.find_spec("triton") is None:
    collect_ignore_glob = ["test_*.py"]
