"""Setup of the kernel tests: Triton runs on CPU tensors through its interpreter.

``TRITON_INTERPRET`` is read when a kernel is decorated, so it is set here, before anything
imports ``z2z_vllm.ops``; run these tests in their own process (``pytest tests/ops``) or with
``TRITON_INTERPRET=1`` already set, else the Triton comparisons skip (see helpers.triton_device).
"""

from __future__ import annotations

import importlib.util
import os

if importlib.util.find_spec("torch") is None or importlib.util.find_spec("triton") is None:
    collect_ignore_glob = ["test_*.py"]
else:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
