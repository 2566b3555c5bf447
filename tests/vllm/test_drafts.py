"""Base-space n-gram drafts (z2z_vllm.vllm.drafts): matches found over base tokens, drafted as the
ids the LZW encoder would emit from the request's codebook."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from z2z_vllm.codec import LZWCodec
from z2z_vllm.vllm import drafts
from z2z_vllm.vllm.drafts import Zip2ZipNgramProposer, propose_from_base, propose_from_ids

V, C, M = 20, 64, 4


@pytest.fixture
def codec():
    return LZWCodec(initial_vocab_size=V, max_codebook_size=C, max_subtokens=M, disabled_ids=(0,))


def test_encode_continuation_is_the_canonical_encoding_from_any_token_boundary(codec):
    rng = np.random.default_rng(0)
    for _ in range(200):
        base = rng.integers(0, 5, int(rng.integers(2, 150))).tolist()  # 0: disabled, never merged
        canonical = codec.encode(base)
        split = int(rng.integers(0, len(canonical) + 1))
        decoder = codec.decoder()
        read = decoder.decode(canonical[:split])
        assert decoder.encode_continuation(base[len(read) :], max_ids=len(base)) == canonical[split:]
        assert decoder.position == split  # left as it was
        assert decoder.encode_continuation(base[len(read) :], max_ids=2) == canonical[split : split + 2]


def test_a_repeated_passage_is_drafted_as_its_canonical_ids(codec):
    passage = [3, 7, 1, 9, 4, 4, 2, 8, 6, 5, 11, 12, 13]
    canonical = codec.encode([1, 2] + passage + [17, 18, 19] + passage)
    # Cut inside the second passage, 4 base ids into it.
    cut = next(i for i in range(len(canonical)) if len(codec.decode(canonical[:i])) >= 2 + len(passage) + 3 + 4)
    decoder = codec.decoder()
    base = np.asarray(decoder.decode(canonical[:cut]), dtype=np.int32)
    got = propose_from_base(decoder, base, min_n=2, max_n=6, num_drafts=3, max_subtokens=M)
    assert got == canonical[cut : cut + 3]  # what a model reading canonical text would emit


def test_compressed_matches_copy_the_ids_that_followed():
    ids = np.array([5, 9, 30, 31, 7, 8, 5, 9, 30], dtype=np.int32)
    assert propose_from_ids(ids, min_n=2, max_n=3, num_drafts=2) == [31, 7]  # after "5 9 30"
    assert propose_from_ids(ids[:-1], min_n=3, max_n=3, num_drafts=2) == []  # "8 5 9" occurs once
    misaligned = np.array([0x100, 0, 7, 1], dtype=np.int32)  # 1's bytes occur only straddling two ids
    assert propose_from_ids(misaligned, min_n=1, max_n=1, num_drafts=1) == []


def test_no_match_no_drafts(codec):
    decoder = codec.decoder()
    base = np.asarray(decoder.decode(codec.encode([1, 2, 3, 4, 5, 6])), dtype=np.int32)
    assert propose_from_base(decoder, base, min_n=2, max_n=4, num_drafts=3, max_subtokens=M) == []


def test_the_proposer_drafts_per_request_and_skips_what_sampled_nothing(codec):
    from z2z_vllm.modeling.config import HF_CONFIG_KEY, Zip2ZipConfig

    z2z = Zip2ZipConfig(initial_vocab_size=V, max_codebook_size=C, max_subtokens=M, disabled_ids=(0,))
    config = SimpleNamespace(
        speculative_config=SimpleNamespace(num_speculative_tokens=3, prompt_lookup_min=2, prompt_lookup_max=5),
        model_config=SimpleNamespace(hf_config=SimpleNamespace(**{HF_CONFIG_KEY: z2z.to_dict()}), max_model_len=64),
    )
    proposer = Zip2ZipNgramProposer(config)
    text = [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3]
    repeated = codec.encode(text)
    tokens = np.zeros((3, 64), dtype=np.int32)
    tokens[:2, : len(repeated)] = repeated
    lengths = np.array([len(repeated), len(repeated), 63])
    out = proposer.propose([[5], [], [5]], lengths, tokens)
    assert out[1] == [] and out[2] == []  # nothing sampled; at the length limit
    assert 1 <= len(out[0]) <= 3
    drafted = codec.decode(repeated + out[0])[len(text) :]
    assert drafted == [4, 5, 6, 7, 8, 9][: len(drafted)]  # what followed "1 2 3" the first time


def test_the_setting_is_checked(monkeypatch):
    monkeypatch.setenv(drafts.NGRAM_DRAFTS_ENV, "ids")
    with pytest.raises(ValueError, match="must be one of compressed, ids\+base, base"):
        drafts.ngram_drafts_setting()
