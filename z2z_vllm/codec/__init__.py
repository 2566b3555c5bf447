"""LZW hypertoken codec: the Python face of the native extension (csrc/).

    >>> from z2z_vllm.codec import LZWCodec
    >>> codec = LZWCodec(initial_vocab_size=10, max_codebook_size=4, max_subtokens=3)
    >>> codec.encode([1, 2, 1, 2, 1, 2])
    [1, 2, 10, 10]
    >>> codec.decode([1, 2, 10, 10])
    [1, 2, 1, 2, 1, 2]
    >>> codec.codebook([1, 2, 10, 10])
    {10: (1, 2), 11: (2, 1), 12: (1, 2, 1)}

``z2z_vllm.codec.reference`` holds the same algorithm in plain Python.
"""

from z2z_vllm._codec import LZWCodec, LZWDecoder, RowIndex

__all__ = ["LZWCodec", "LZWDecoder", "RowIndex"]
