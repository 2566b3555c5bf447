"""Zip2ZipConfig: JSON round trips, where it is read from, the codec, disabled ids."""

from __future__ import annotations

import json

import pytest

from tests.modeling.helpers import C, M, V, tiny_base
from z2z_vllm.modeling import EncoderConfig, Zip2ZipConfig, Zip2ZipForCausalLM, disabled_ids_for

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")


def small_tokenizer():
    vocab = {"<s>": 0, "</s>": 1, "a": 2, "b": 3, "1": 4, "a2": 5, "Ġ7": 6, "x": 7}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="x"))
    tok.add_special_tokens(["<s>", "</s>", "<pad>"])
    return tok


def config() -> Zip2ZipConfig:
    return Zip2ZipConfig(
        initial_vocab_size=V,
        max_codebook_size=C,
        max_subtokens=M,
        disabled_ids=(3, 0, 3),
        input_encoder=EncoderConfig(kind="attention", num_heads=2),
        output_encoder=EncoderConfig(kind="residual", hidden_size=32),
        base_model="some/base",
        reconstruction_weight=0.0,
    )


def test_dict_and_file_round_trips(tmp_path):
    original = config()
    assert original.disabled_ids == (0, 3)
    assert original.vocab_size == V + C
    assert Zip2ZipConfig.from_dict(json.loads(json.dumps(original.to_dict()))) == original
    original.save(tmp_path)
    assert Zip2ZipConfig.load(tmp_path) == original


def test_load_from_the_z2z_block_of_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["X"], "z2z": config().to_dict()}))
    assert Zip2ZipConfig.load(tmp_path) == config()
    with pytest.raises(FileNotFoundError):
        Zip2ZipConfig.load(tmp_path / "missing")


def test_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="unknown"):
        Zip2ZipConfig.from_dict({**config().to_dict(), "typo": 1})
    with pytest.raises(ValueError):
        config().replace(reconstruction_weight=-1.0)
    with pytest.raises(ValueError, match="tie_encoders"):
        config().replace(tie_encoders=True)


def test_codec_follows_the_config():
    codec = config().replace(pad_token_id=5).codec()
    assert (codec.initial_vocab_size, codec.max_codebook_size, codec.max_subtokens) == (V, C, M)
    assert codec.encode([3, 3, 3, 3]) == [3, 3, 3, 3]  # disabled: never merged
    assert codec.encode([5, 5]) == [5, 5]


@pytest.mark.parametrize("wrap", [False, True])
def test_disabled_ids_for_tokenizers(wrap):
    tok = small_tokenizer()
    if wrap:
        tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    assert disabled_ids_for(tok, initial_vocab_size=9) == (0, 1, 8)
    assert disabled_ids_for(tok, initial_vocab_size=8) == (0, 1)  # ids >= V are not base ids
    assert disabled_ids_for(tok, initial_vocab_size=9, protect_digits=True) == (0, 1, 4, 5, 6, 8)


def test_from_base_reads_the_tokenizer():
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=small_tokenizer(), bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    model = Zip2ZipForCausalLM.from_base(
        tiny_base(), tokenizer=tok, protect_digits=True, max_codebook_size=C, max_subtokens=M
    )
    c = model.config
    assert (c.initial_vocab_size, c.disabled_ids, c.pad_token_id, c.protect_digits) == (9, (0, 1, 4, 5, 6, 8), 8, True)
    assert c.base_architecture == "LlamaForCausalLM"
    assert c.input_encoder.num_heads == 2 and c.input_encoder.hidden_size == 64  # resolved from the base
    assert c.output_encoder == c.input_encoder
