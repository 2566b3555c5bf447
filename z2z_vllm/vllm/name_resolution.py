"""z2z model names in vLLM: the one change to vLLM internals that
:func:`~z2z_vllm.vllm.registration.register` makes in every vLLM process, whatever model it serves.
Written for vLLM 0.32.0 and 0.33.0; ``tests/vllm/test_patches.py`` fails when the internals change.

Registered names live in the Hugging Face cache (:mod:`z2z_vllm.model_names`). vLLM turns a model
name into a folder before any config says the model is a z2z model, so this cannot wait for the
config hook as :mod:`z2z_vllm.vllm.patches` does. Both patches are in ``vllm.engine.arg_utils``:

- ``get_model_path``: with ``HF_HUB_OFFLINE=1``, ``EngineArgs.__post_init__`` replaces the name by
  its cache snapshot. Registered names resolve there without help; the patch adds the message that
  says how to build an unregistered ``z2z-`` name, where vLLM would only report a missing cache
  entry.
- ``EngineArgs.create_engine_config``: without ``HF_HUB_OFFLINE`` the name reaches it unresolved,
  and vLLM would ask the Hub about it (speculator check, then the file list), which fails for a
  name only this machine knows: no network, two minutes of retries, then a connection error; with
  network, repository not found. The patch replaces a registered model or tokenizer name by its
  snapshot first, as the offline path does, so nothing asks the Hub.

Both ask :func:`z2z_vllm.model_names.resolve_name`: a registered name becomes its snapshot path,
an unregistered ``z2z-`` name raises ``ValueError``, any other model is left to vLLM. Cost to a
process serving any model: ``vllm.engine.arg_utils`` is imported where it was not yet (the
processes that build engine arguments have it; engine and worker processes add 9 small vLLM
modules, 0.1 s), and each engine start looks its model name up with a few ``stat`` calls.
"""

from __future__ import annotations

import functools
from typing import Any

from z2z_vllm.model_names import resolve_name

__all__ = ["resolve_z2z_names"]


def _resolved(model: Any) -> Any:
    snapshot = resolve_name(model) if model is not None else None
    return model if snapshot is None else str(snapshot)


def resolve_z2z_names() -> None:
    """Installs both patches; safe to call more than once."""
    from vllm.engine import arg_utils

    if hasattr(arg_utils.get_model_path, "__wrapped__"):
        return
    get_model_path = arg_utils.get_model_path
    create_engine_config = arg_utils.EngineArgs.create_engine_config

    @functools.wraps(get_model_path)
    def get_model_path_or_z2z_snapshot(model: Any, *args: Any, **kwargs: Any) -> Any:
        snapshot = resolve_name(model)
        return get_model_path(model, *args, **kwargs) if snapshot is None else str(snapshot)

    @functools.wraps(create_engine_config)
    def create_engine_config_with_z2z_names(self: Any, *args: Any, **kwargs: Any) -> Any:
        self.model, self.tokenizer = _resolved(self.model), _resolved(self.tokenizer)
        return create_engine_config(self, *args, **kwargs)

    arg_utils.get_model_path = get_model_path_or_z2z_snapshot
    arg_utils.EngineArgs.create_engine_config = create_engine_config_with_z2z_names
