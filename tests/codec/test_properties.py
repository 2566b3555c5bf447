"""Properties of the codec that hold for every configuration and input."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.codec.strategies import base_ids, cases, examples


@settings(max_examples=examples(300), deadline=None)
@given(st.data())
def test_round_trip_and_codebook_invariants(data):
    case = data.draw(cases(max_vocab=5000))
    ids = data.draw(base_ids(case, max_size=1000))
    codec = case.ours()
    compressed = codec.encode(ids)
    assert codec.decode(compressed) == ids
    assert len(compressed) <= len(ids)

    codebook = codec.codebook(compressed)
    disabled = set(case.disabled) | {case.pad}
    assert list(codebook) == list(range(case.vocab_size, case.vocab_size + len(codebook)))
    assert len(codebook) <= case.codebook_size
    contents = set(codebook.values())
    assert len(contents) == len(codebook), "an entry was defined twice"
    for entry in contents:
        assert 2 <= len(entry) <= case.max_subtokens
        assert not disabled & set(entry)
        # The encoder only extends known codes by one id, so prefixes are entries too.
        assert len(entry) == 2 or entry[:-1] in contents
    # Every hypertoken emitted was defined before it was read (or by reading it: KwKwK).
    decoder = codec.decoder()
    for position, token in enumerate(compressed):
        decoder.feed(token)
        assert token < case.vocab_size or token in decoder.codebook


@settings(max_examples=examples(100), deadline=None)
@given(st.data())
def test_incremental_decoder_copy_is_independent(data):
    case = data.draw(cases())
    compressed = case.ours().encode(data.draw(base_ids(case)))
    split = data.draw(st.integers(0, len(compressed)))
    decoder = case.ours().decoder()
    decoder.feed(compressed[:split])
    twin = decoder.copy()
    rest = decoder.decode(compressed[split:])
    assert twin.position == split
    assert twin.decode(compressed[split:]) == rest
    assert twin.codebook == decoder.codebook
    decoder.reset()
    assert decoder.position == 0 and decoder.codebook == {}
