"""Properties of the codec that hold for every configuration and input."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.codec.strategies import base_ids, cases, examples, valid_streams


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


@settings(max_examples=examples(150), deadline=None)
@given(st.data())
def test_candidate_is_exactly_the_self_defining_id(data):
    case = data.draw(cases())
    stream = data.draw(valid_streams(case))
    decoder = case.ours().decoder()
    for token in [None, *stream]:
        if token is not None:
            decoder.feed(token)
        next_id = case.vocab_size + decoder.num_entries
        trial = decoder.copy()
        try:
            created = trial.feed(next_id)
        except ValueError:
            created = None
        expected = created[0] if created else None
        assert decoder.candidate == expected


@settings(max_examples=examples(100), deadline=None)
@given(st.data())
def test_codebook_arrays_agree_with_the_incremental_decoder(data):
    case = data.draw(cases())
    batch = [data.draw(valid_streams(case, max_size=60)) for _ in range(data.draw(st.integers(1, 4)))]
    arrays = case.ours().codebook_arrays(batch, num_threads=2)
    entries, known_at, candidates = arrays["entries"], arrays["known_at"], arrays["candidates"]
    assert entries.shape[:2] == known_at.shape and candidates.shape[:2] == (len(batch), max(map(len, batch)))
    for row, stream in enumerate(batch):
        decoder = case.ours().decoder()
        for position, token in enumerate(stream):
            for hyper_id, content in decoder.feed(token):
                e = hyper_id - case.vocab_size
                assert known_at[row, e] == position
                assert tuple(t for t in entries[row, e] if t >= 0) == content
            expected = decoder.candidate[1] if decoder.candidate else ()
            assert tuple(t for t in candidates[row, position] if t >= 0) == expected
        assert (known_at[row, decoder.num_entries :] == 2**31 - 1).all()
        assert (candidates[row, len(stream) :] == -1).all()


@settings(max_examples=examples(100), deadline=None)
@given(st.data())
def test_decoder_buffer_and_known_at_follow_the_reference(data):
    from z2z_vllm.codec import reference

    case = data.draw(cases())
    stream = data.draw(valid_streams(case))
    ours, theirs = case.ours().decoder(), reference.Decoder(case.reference())
    known_at = []
    for position, token in enumerate(stream):
        known_at += [position] * len(ours.feed(token))
        theirs.feed([token])
        assert ours.buffer == theirs._buffer
        assert ours.known_at == tuple(known_at)


@settings(max_examples=examples(300), deadline=None)
@given(st.data())
def test_fitting_suffix_start_keeps_the_most_base_ids_that_fit(data):
    case = data.draw(cases())
    ids = data.draw(base_ids(case, max_size=120))
    max_length = data.draw(st.integers(0, len(ids) + 2))
    codec = case.ours()
    fits = [start for start in range(len(ids) + 1) if len(codec.encode(ids[start:])) <= max_length]
    assert codec.fitting_suffix_start(ids, max_length) == fits[0]
