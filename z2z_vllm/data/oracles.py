"""Reference encoders, independent of the Hugging Face conversions, to check them id for id.

- gpt2, llama3, qwen2.5, cl100k_base, o200k_base: ``tiktoken.Encoding`` objects built from the
  same hash-checked ranks with each tokenizer's official split pattern (tiktoken's own possessive
  patterns for gpt2 and cl100k_base). ``tiktoken.get_encoding`` would download, so it is not used.
- smollm2: a plain-Python port of llama.cpp's BPE for the GGUF's "smollm" pre-tokenizer (digits
  one by one, then GPT-2's regex; merges applied lowest rank first).

Both sides match special tokens written in the text (``allowed_special="all"``).
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable

from z2z_vllm.data import patterns, vocab_sources
from z2z_vllm.data.byte_level_bpe import spell
from z2z_vllm.data.sources import require_module

_TIKTOKEN_PATTERNS = {
    "gpt2": patterns.GPT2_TIKTOKEN,
    "llama3": patterns.LLAMA3,
    "qwen2.5": patterns.QWEN2,
    "cl100k_base": patterns.CL100K_TIKTOKEN,
    "o200k_base": patterns.O200K,
}


def _tiktoken_encoder(name: str) -> Callable[[str], list[int]]:
    tiktoken = require_module("tiktoken")
    encoding = tiktoken.Encoding(
        name=f"z2z-{name}",
        pat_str=_TIKTOKEN_PATTERNS[name],
        mergeable_ranks=vocab_sources.tiktoken_ranks(name),
        special_tokens={spec.content: spec.id for spec in vocab_sources.ADDED_TOKENS[name]},
    )
    if name == "qwen2.5":  # Qwen normalizes to NFC before encoding
        return lambda text: encoding.encode(unicodedata.normalize("NFC", text), allowed_special="all")
    return lambda text: encoding.encode(text, allowed_special="all")


class _GgufBpe:
    """llama.cpp's byte-level BPE over a GGUF vocabulary, for the "smollm" pre-tokenizer."""

    def __init__(self, gguf: vocab_sources.GgufVocabulary):
        regex = require_module("regex")
        self._ids = {token: token_id for token_id, token in enumerate(gguf.tokens)}
        self._merge_rank = {pair: rank for rank, pair in enumerate(gguf.merges)}
        control = [token for token, kind in zip(gguf.tokens, gguf.token_types) if kind == gguf.CONTROL]
        control.sort(key=len, reverse=True)  # the longest first, as alternatives of one regex
        self._control = regex.compile("(" + "|".join(regex.escape(token) for token in control) + ")")
        self._digit = regex.compile(r"(\p{N})")
        self._gpt2 = regex.compile(patterns.GPT2)

    def encode(self, text: str) -> list[int]:
        ids = []
        for index, chunk in enumerate(self._control.split(text)):
            if index % 2:  # a captured control token
                ids.append(self._ids[chunk])
                continue
            for part in self._digit.split(chunk):
                for piece in self._gpt2.findall(part):
                    ids.extend(self._ids[token] for token in self._merge(spell(piece.encode("utf-8"))))
        return ids

    @functools.lru_cache(maxsize=1 << 16)
    def _merge(self, word: str) -> tuple[str, ...]:
        parts, unmergeable = list(word), len(self._merge_rank)
        while len(parts) > 1:
            pairs = zip(parts, parts[1:])
            rank, i = min((self._merge_rank.get(pair, unmergeable), i) for i, pair in enumerate(pairs))
            if rank == unmergeable:
                break
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        return tuple(parts)


@functools.cache
def reference_encoder(name: str) -> Callable[[str], list[int]]:
    """The oracle for tokenizer ``name``: text -> the ids the official tokenizer gives."""
    if name == "smollm2":
        return _GgufBpe(vocab_sources.smollm2_vocabulary()).encode
    if name not in _TIKTOKEN_PATTERNS:
        raise ValueError(f"no reference encoder for {name!r}")
    return _tiktoken_encoder(name)
