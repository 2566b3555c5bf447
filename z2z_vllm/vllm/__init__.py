"""The vLLM plugin: serve zip2zip models with ``vllm serve DIR`` and ``LLM(model=DIR)``.

vLLM loads :func:`register` through the ``vllm.general_plugins`` entry point in every process
(API server, engine core, workers). It registers

- the model classes ``Zip2Zip<Base>ForCausalLM`` (:mod:`z2z_vllm.vllm.model`) named by the
  ``architectures`` of a folder written by ``z2z export``;
- the ``z2z`` tokenizer mode and renderer (:mod:`z2z_vllm.vllm.tokenizer`,
  :mod:`z2z_vllm.vllm.renderer`), selected automatically for those architectures;
- config checks that refuse vLLM features hypertokens do not support yet, with a clear error;
- the runner and detokenizer hooks of :mod:`z2z_vllm.vllm.patches` (the only module that
  touches vLLM internals).

Nothing here is imported by the rest of ``z2z_vllm``: the package works without vLLM.
"""

from z2z_vllm.vllm.registration import SUPPORTED_BASE_ARCHITECTURES, TOKENIZER_MODE, register

__all__ = ["register", "SUPPORTED_BASE_ARCHITECTURES", "TOKENIZER_MODE"]
