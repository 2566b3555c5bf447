"""Kernels of the serving path, each beside its torch reference (see kernels/README.md).

Every op dispatches on its tensors' device (``backend="auto"``): Triton (or the CUDA C++ kernel,
where built) on a GPU, the torch reference elsewhere; ``backend=`` forces one. Ops import only
torch and triton, never the model code or vLLM.

- composition of hyper rows (:mod:`.compose`): :func:`gather_subtokens`, :func:`mean_encode`,
  :func:`residual_combine`;
- decode-step codebook update (:mod:`.codebook`): :class:`CodebookState`,
  :func:`codebook_update` -> :class:`CodebookStep`;
- masked hyper logits (:mod:`.logits`): :func:`hyper_logits`.
"""

from z2z_vllm.ops.codebook import NEVER, CodebookState, CodebookStep, codebook_update
from z2z_vllm.ops.compose import gather_subtokens, mean_encode, residual_combine
from z2z_vllm.ops.logits import hyper_logits

__all__ = [
    "NEVER",
    "CodebookState",
    "CodebookStep",
    "codebook_update",
    "gather_subtokens",
    "hyper_logits",
    "mean_encode",
    "residual_combine",
]
