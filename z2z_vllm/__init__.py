"""z2z-vllm: serve zip2zip models (LLMs that read and write LZW hypertokens) with vLLM.

Public API: the codec (``LZWCodec``, ``LZWDecoder``); real tokenizers and corpora in
``z2z_vllm.data``; the ``z2z`` command in ``z2z_vllm.cli``.
"""

from z2z_vllm.codec import LZWCodec, LZWDecoder

__version__ = "0.1.0"
__all__ = ["LZWCodec", "LZWDecoder", "__version__"]
