"""Exact parity with zip2zip-compression 0.3.4 (the anchor) and with our Python reference."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.codec.strategies import Case, base_ids, cases, examples, valid_streams
from z2z_vllm.codec import reference

zip2zip_compression = pytest.importorskip("zip2zip_compression")


def anchor_codebook(codebook) -> dict[int, tuple[int, ...]]:
    return {k: tuple(v) for k, v in codebook.to_dict().items()}


@settings(max_examples=examples(400), deadline=None)
@given(st.data())
def test_encode_matches_anchor_and_reference(data):
    case = data.draw(cases())
    ids = data.draw(base_ids(case))
    anchor_ids, _, anchor_book = case.anchor().encode(ids)
    ours = case.ours()
    compressed = ours.encode(ids)
    assert compressed == anchor_ids
    assert compressed == reference.encode(ids, case.reference())
    assert ours.codebook(compressed) == anchor_codebook(anchor_book)
    assert ours.decode(compressed) == ids


@settings(max_examples=examples(400), deadline=None)
@given(st.data())
def test_decode_of_any_valid_stream_matches_anchor(data):
    case = data.draw(cases())
    stream = data.draw(valid_streams(case))
    anchor_ids, anchor_book = case.anchor().decode(stream)
    ours = case.ours()
    assert ours.decode(stream) == anchor_ids
    assert ours.codebook(stream) == anchor_codebook(anchor_book)
    assert reference.decode(stream, case.reference()) == (anchor_ids, anchor_codebook(anchor_book))


@settings(max_examples=examples(200), deadline=None)
@given(st.data())
def test_incremental_feed_matches_one_shot_decode_and_anchor_manager(data):
    case = data.draw(cases())
    stream = data.draw(valid_streams(case))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]

    ours = case.ours()
    decoder = ours.decoder()
    manager = zip2zip_compression.CodebookManager(
        zip2zip_compression.CompressionConfig(
            case.vocab_size, case.codebook_size, case.max_subtokens, case.pad, list(case.disabled)
        )
    )
    created = []
    held: list[int] = []  # ids the anchor's manager has not read yet
    held_new = []  # entries our decoder created from them
    for chunk in chunks:
        new = decoder.feed(chunk)
        created += new
        held, held_new = held + chunk, held_new + new
        if held == [case.pad]:
            continue  # the anchor's manager ignores a lone pad id: it reads it with the next chunk
        flat, indices = manager.update_codebooks([held])
        entries = [tuple(t for t in flat[0][i * case.max_subtokens : (i + 1) * case.max_subtokens] if t != case.pad) for i in range(len(indices[0]))]
        assert [(case.vocab_size + i, e) for i, e in zip(indices[0], entries)] == [
            (hid, tuple(t for t in e if t != case.pad)) for hid, e in held_new
        ]
        held, held_new = [], []
    assert decoder.position == len(stream)
    assert decoder.codebook == ours.codebook(stream) == dict(created)


def test_batch_calls_equal_single_calls_on_any_thread_count():
    rng = random.Random(0)
    case = Case(vocab_size=50, codebook_size=64, max_subtokens=4, disabled=(0, 7), pad=1)
    codec = case.ours()
    batch = [[rng.choice([2, 3, 4, 5, rng.randrange(50)]) for _ in range(rng.randrange(0, 3000))] for _ in range(37)]
    expected = [codec.encode(ids) for ids in batch]
    for threads in (None, 1, 2, 5, 64):
        compressed = codec.encode_batch(batch, num_threads=threads)
        assert compressed == expected
        assert codec.decode_batch(compressed, num_threads=threads) == batch
    assert [list(a) for a in codec.encode_batch(batch, as_numpy=True)] == expected


def test_numpy_inputs_of_any_integer_dtype():
    np = pytest.importorskip("numpy")
    codec = Case(vocab_size=120, codebook_size=32, max_subtokens=3, disabled=(), pad=0).ours()
    ids = [5, 6, 5, 6, 5, 6, 7, 100, 7, 100]
    expected = codec.encode(ids)
    for dtype in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64):
        array = np.array(ids, dtype=dtype)
        assert codec.encode(array) == expected
        assert codec.encode(array[::-1][::-1]) == expected  # strided view
    out = codec.encode(np.array(ids), as_numpy=True)
    assert out.dtype == np.int64 and out.tolist() == expected
    assert codec.decode(out) == ids


@pytest.mark.parametrize("max_subtokens", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("codebook_size", [0, 1, 16, 2048])
def test_byte_streams_of_real_text(max_subtokens, codebook_size):
    """Real text as byte ids (V=256): long, repetitive, natural streams."""
    import inspect
    import json

    text = (inspect.getsource(json) + inspect.getsource(random)).encode()[:60_000]
    ids = list(text)
    case = Case(vocab_size=256, codebook_size=codebook_size, max_subtokens=max_subtokens, disabled=(10,), pad=0)
    anchor_ids, _, anchor_book = case.anchor().encode(ids)
    codec = case.ours()
    compressed = codec.encode(ids)
    assert compressed == anchor_ids
    assert codec.codebook(compressed) == anchor_codebook(anchor_book)
    assert codec.decode(compressed) == ids == case.anchor().decode(compressed)[0]
    if max_subtokens == 1 or codebook_size == 0:
        assert compressed == ids
    elif codebook_size == 2048:
        assert len(compressed) < 0.9 * len(ids)
