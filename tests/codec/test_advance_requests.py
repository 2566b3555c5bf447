"""LZWCodec.advance_requests (one serving step over many decoders) and RowIndex (table rows by
entry content, with reference counts): results against the incremental decoder, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from z2z_vllm._codec import lookup
from z2z_vllm.codec import LZWCodec, RowIndex

V, C, M = 20, 8, 3


@pytest.fixture
def codec():
    return LZWCodec(initial_vocab_size=V, max_codebook_size=C, max_subtokens=M)


def advance(codec, decoders, slots, requests, host):
    """codec.advance_requests over (token list, begin, end) requests, laid out as vLLM does:
    one row of token ids per request, every id verified (no drafts)."""
    token_ids = np.zeros((len(requests), max(len(tokens) for tokens, _, _ in requests)), dtype=np.int32)
    for row, (tokens, _, _) in enumerate(requests):
        token_ids[row, : len(tokens)] = tokens
    num_verified, begins, ends = (np.array([r[i] if i else len(r[0]) for r in requests]) for i in range(3))
    return codec.advance_requests(decoders, np.array(slots), token_ids, num_verified, begins, ends, np.array(host))


def padded(rows):
    width = max([1] + [len(r) for r in rows])
    return [list(r) + [-1] * (width - len(r)) for r in rows]


def test_a_step_matches_feeding_each_decoder(codec):
    a, b = codec.encode([1, 2, 1, 2, 1, 2, 3, 1, 2, 3]), codec.encode([4, 5, 4, 5, 4, 5, 4])
    decoders = [codec.decoder() for _ in range(3)]
    step = advance(codec, decoders, [2, 0], [(a, 0, 4), (b, 0, len(b))], [True, True])
    expected = [codec.decoder(), codec.decoder()]
    created = [e.feed(tokens) for e, tokens in zip(expected, (a[:4], b))]
    assert step["created_slot"].tolist() == [2] * len(created[0]) + [0] * len(created[1])
    assert step["created_index"].tolist() == [h - V for c in created for h, _ in c]
    width = step["created_content"].shape[1]
    assert step["created_content"].tolist() == [r + [-1] * (width - len(r)) for r in padded([s for c in created for _, s in c])]
    assert step["num_entries"].tolist() == [e.num_entries for e in expected]
    candidates = [e.candidate for e in expected]
    assert step["has_candidate"].tolist() == [c is not None for c in candidates]
    for row, candidate in zip(step["candidate"].tolist(), candidates):
        assert [t for t in row if t >= 0] == (list(candidate[1]) if candidate else [])
    reads = [(slot, t - V) for slot, tokens in ((2, a[:4]), (0, b)) for t in tokens if t >= V]
    assert list(zip(step["read_slot"].tolist(), step["read_index"].tolist())) == reads
    assert step["first_token"].tolist() == [a[0], b[0]] and not step["replayed"].any()
    assert decoders[2].position == 4 and decoders[0].position == len(b) and decoders[1].position == 0


def test_decoders_catch_up_replay_and_skip(codec):
    tokens = codec.encode([1, 2, 1, 2, 1, 2, 3, 1, 2, 3])
    decoders = [codec.decoder(), codec.decoder()]
    decoders[0].feed(tokens[:6])  # read past begin: replayed from 0
    decoders[1].feed(tokens[:1])  # behind begin: catches up
    step = advance(codec, decoders, [0, 1], [(tokens, 2, 3), (tokens, 3, 4)], [True, True])
    assert step["replayed"].tolist() == [True, False]
    assert [d.position for d in decoders] == [3, 4]
    assert decoders[0].codebook == codec.codebook(tokens[:3])
    skipped = advance(codec, decoders, [1], [(tokens, 4, 5)], [False])
    assert decoders[1].position == 4 and skipped["first_token"].tolist() == [tokens[4]]
    assert skipped["candidate"].tolist() == [[-1]] and len(skipped["created_slot"]) == 0


def test_bad_input_raises_clear_errors(codec):
    decoders = [codec.decoder(), codec.decoder()]
    ok = ([1, 2], 0, 2)
    with pytest.raises(ValueError, match="request 1: id 27 at position 0 is not a defined hypertoken"):
        advance(codec, decoders, [0, 1], [ok, ([V + C - 1], 0, 1)], [True, True])
    assert decoders[1].position == 0  # the failing request's decoder is unchanged
    with pytest.raises(ValueError, match="slot 0 appears twice"):
        advance(codec, decoders, [0, 0], [ok, ok], [True, True])
    with pytest.raises(ValueError, match="slot 5 is not one of the 2 decoders"):
        advance(codec, decoders, [5], [ok], [True])
    with pytest.raises(ValueError, match="host needs one value per request"):
        advance(codec, decoders, [0, 1], [ok, ok], [True])
    with pytest.raises(ValueError, match="a row per request"):
        codec.advance_requests(decoders, np.array([0, 1]), np.zeros((1, 2), np.int32), *([np.array([2, 2])] * 3), np.array([True, True]))
    with pytest.raises(ValueError, match="request 0: scheduled range 1 .. 3 and 2 verified ids must lie within its 2 token_ids"):
        advance(codec, decoders, [0], [([1, 2], 1, 3)], [True])
    with pytest.raises(ValueError, match="request 0: the range 2 .. 3 holds only drafts"):
        codec.advance_requests(decoders, np.array([0]), np.ones((1, 3), np.int32), np.array([2]), np.array([2]), np.array([3]), np.array([True]))
    other = LZWCodec(initial_vocab_size=V, max_codebook_size=C, max_subtokens=M).decoder()
    with pytest.raises(ValueError, match="belongs to another codec"):
        advance(codec, [other], [0], [ok], [True])
    with pytest.raises(ValueError, match="id -3 at position 1 is out of range"):
        advance(codec, decoders, [0], [([1, -3], 0, 2)], [True])


def test_lookup_gives_each_keys_value_or_missing():
    slot_of = {"a": 3, "b": 0}
    assert lookup(slot_of, ["b", "x", "a", "a"]).tolist() == [0, -1, 3, 3]
    assert lookup(slot_of, [], missing=-2).dtype == np.int64
    with pytest.raises(TypeError):
        lookup(slot_of, [["unhashable"]])


def contents(*entries) -> np.ndarray:
    """[N, 3] base ids, -1 padded."""
    return np.array([list(e) + [-1] * (3 - len(e)) for e in entries], dtype=np.int32)


def test_row_index_shares_rows_by_content_and_counts_references():
    index = RowIndex(3, 2)
    rows, fresh = index.acquire(contents((1, 2), (3,), (1, 2)))
    assert rows.tolist() == [0, 1, 0] and fresh.tolist() == [0, 1]  # duplicates share a row
    assert index.references(np.array([0, 1, 2])).tolist() == [2, 1, 0]
    rows, fresh = index.acquire(np.array([[3, -1], [1, 2]], dtype=np.int32))  # padding ignored
    assert rows.tolist() == [1, 0] and len(fresh) == 0
    assert index.find(contents((1, 2), (9,))).tolist() == [0, -1] and index.num_referenced == 2
    assert len(index) == 2 and index.capacity == 3


def test_row_index_reuses_unreferenced_rows_least_recently_released_first():
    index = RowIndex(4, 2)
    index.acquire(contents((1,), (2,), (3,)))  # rows 0, 1, 2; row 3 empty
    index.release(np.array([1, -1]))  # -1 ignored
    index.release(np.array([0]))
    assert index.find(contents((1,), (2,))).tolist() == [0, 1]  # unreferenced, still found
    assert index.acquire(contents((4,)))[0].tolist() == [3]  # the empty row goes first
    assert index.acquire(contents((5,)))[0].tolist() == [1]  # then the least recently released
    assert index.find(contents((2,))).tolist() == [-1]  # its content forgotten
    assert index.acquire(contents((1,)))[0].tolist() == [0]  # found again: referenced, not reused
    assert index.reserve(1).tolist() != [0] and index.capacity == 8  # every row referenced: doubled
    assert index.acquire(contents((3,), (6,)))[0].tolist()[0] == 2  # contents found after growth


def test_row_index_step_acquires_entries_and_looks_candidates_up():
    index = RowIndex(8, 3)
    index.acquire(contents((5, 6)))  # row 0, held elsewhere
    entries = contents((1, 2), (5, 6), (1, 2, 3))
    candidates = contents((1, 2, 3), (9,), (5, 6), (7, 7))
    rows, fresh_rows, to_encode, cached, cached_rows, missing = index.acquire_step(
        entries, candidates, np.array([True, True, True, False])
    )
    assert rows.dtype == np.int32 and rows.tolist() == [1, 0, 2] and fresh_rows.tolist() == [1, 2]
    assert cached.tolist() == [0, 2] and cached_rows.tolist() == [2, 0]  # one a new entry's row
    assert missing.tolist() == [1]  # request 3 has no candidate
    assert to_encode.tolist() == [[1, 2, -1], [1, 2, 3], [9, -1, -1]]  # fresh rows, then missing
    assert index.find(contents((9,))).tolist() == [-1]  # candidates are not stored
    assert index.references(np.array([0, 1, 2])).tolist() == [2, 1, 1]
    with pytest.raises(ValueError, match="one flag per candidate row"):
        index.acquire_step(entries, candidates, np.array([True]))


def test_row_index_refuses_what_would_corrupt_it():
    index = RowIndex(2, 2)
    index.acquire(contents((1,)))
    with pytest.raises(ValueError, match="row 1 is not referenced"):
        index.release(np.array([0, 1]))
    assert index.references(np.array([0])).tolist() == [1]  # nothing released
    with pytest.raises(ValueError, match="row 5 is out of range"):
        index.release(np.array([5]))
    with pytest.raises(ValueError, match="longer than the index's width 2"):
        index.acquire(contents((7,), (1, 2, 3)))
    assert index.find(contents((7,))).tolist() == [-1]  # all or nothing
    index.clear()
    assert len(index) == 0 and index.find(contents((1,))).tolist() == [-1]
    assert index.references(np.array([0])).tolist() == [1]  # references stay
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        RowIndex(0, 2)
    with pytest.raises(ValueError, match=r"shape \[N, W\]"):
        index.find(np.array([1, 2], dtype=np.int32))


def test_a_step_over_many_requests_keeps_request_order(codec):
    """Enough work for several threads: the joined outputs are in request order all the same."""
    rng = np.random.default_rng(0)
    streams = [codec.encode(rng.integers(0, 4, 40).tolist()) for _ in range(800)]
    decoders = [codec.decoder() for _ in streams]
    step = advance(codec, decoders, np.arange(len(streams)), [(s, 0, len(s)) for s in streams], [True] * len(streams))
    created = [(slot, h - V, list(sub)) for slot, s in enumerate(streams) for h, sub in codec.decoder().feed(s)]
    assert list(zip(step["created_slot"].tolist(), step["created_index"].tolist())) == [(s, i) for s, i, _ in created]
    assert [[t for t in row if t >= 0] for row in step["created_content"].tolist()] == [c for _, _, c in created]
    reads = [(slot, t - V) for slot, s in enumerate(streams) for t in s if t >= V]
    assert list(zip(step["read_slot"].tolist(), step["read_index"].tolist())) == reads
    assert step["num_entries"].tolist() == [len(codec.codebook(s)) for s in streams]
