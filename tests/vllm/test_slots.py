"""HyperSlots without an engine: per-request codebooks advanced over token lists, replays,
slot reuse, and logits / embeddings against the HF-level model's building blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.modeling.helpers import C, M, V, base_stream, tiny_model
from tests.training.checkpoint_helpers import randomize_
from z2z_vllm.vllm.slots import HyperSlots, ScheduledRequest, StepBatch

H = 64


@pytest.fixture(scope="module")
def model():
    model = tiny_model("llama", seed=0)
    randomize_(model.output_encoder, seed=1)
    randomize_(model.input_encoder, seed=2)
    return model


def make_slots(
    model, num_slots: int = 4, *, use_kernels: bool = False, device_codebooks: bool = False, native_host: bool = True
) -> HyperSlots:
    return HyperSlots(
        use_kernels=use_kernels,
        device_codebooks=device_codebooks,
        native_host=native_host,
        codec=model.codec,
        num_slots=num_slots,
        hidden_size=H,
        encode_inputs=model.encode_inputs,
        encode_outputs=model.encode_outputs,
        device=torch.device("cpu"),
        dtype=torch.float32,
    )


def request(req_id: str, tokens: list[int], begin: int, end: int, *, prompt_len: int | None = None) -> ScheduledRequest:
    split = len(tokens) if prompt_len is None else prompt_len
    return ScheduledRequest(req_id, tokens[:split], tokens[split:], begin, end)


def stream(model, seed: int, length: int = 60) -> list[int]:
    return model.codec.encode(base_stream(length, seed=seed))


def as_row(subtokens) -> torch.Tensor:
    """[1, M] base ids of one entry, -1 padded."""
    subtokens = list(subtokens)
    return torch.tensor([subtokens + [-1] * (M - len(subtokens))])


def expected_logits(model, tokens: list[int], hidden: torch.Tensor, base_logits: torch.Tensor) -> torch.Tensor:
    """Logits after reading ``tokens``, built from a fresh decoder with the model's own code."""
    decoder = model.codec.decoder()
    entries = [subtokens for _, subtokens in decoder.feed(tokens)]
    hyper = torch.full((C,), float("-inf"))
    if entries:
        rows = model.encode_outputs(torch.cat([as_row(e) for e in entries]))
        hyper[: len(entries)] = rows @ hidden
    if decoder.candidate is not None:
        hyper[len(entries)] = model.encode_outputs(as_row(decoder.candidate[1]))[0] @ hidden
    return torch.cat([base_logits, hyper])


def test_a_step_batch_lays_out_requests_as_vllms_input_batch():
    batch = StepBatch.of([
        ScheduledRequest("a", [5, 6, 7], [8], 3, 4),  # decode
        ScheduledRequest("b", [1, 2], [], 0, 2),  # prefill
        ScheduledRequest("c", [3], [4], 1, 5, drafts=(9, 9, 9)),  # decode with 3 drafts
    ])  # fmt: skip
    assert batch.req_ids == ["a", "b", "c"]
    assert batch.token_ids.dtype == np.int32
    assert batch.token_ids.tolist() == [[5, 6, 7, 8, 0], [1, 2, 0, 0, 0], [3, 4, 9, 9, 9]]
    assert batch.num_verified.tolist() == [4, 2, 2] and batch.num_logits_rows.tolist() == [1, 1, 4]
    assert (batch.begins.tolist(), batch.ends.tolist()) == ([3, 0, 1], [4, 2, 5])
    with pytest.raises(ValueError, match="request 'a': scheduled range 3 .. 5 is not within its 4 ids"):
        StepBatch.of([ScheduledRequest("a", [5, 6, 7], [8], 3, 5)])


@torch.no_grad()
def test_logits_match_a_fresh_decoder_for_each_request(model):
    slots = make_slots(model)
    streams = [stream(model, seed) for seed in range(3)]
    slots.begin_step(StepBatch.of([request(f"r{i}", s, 0, len(s)) for i, s in enumerate(streams)]))
    hidden = torch.randn(3, H)
    base = torch.randn(3, V)
    logits = slots.logits(hidden, base)
    assert logits.shape == (3, V + C)
    for row, tokens in enumerate(streams):
        torch.testing.assert_close(logits[row], expected_logits(model, tokens, hidden[row], base[row]))


@torch.no_grad()
def test_chunks_and_decode_steps_equal_one_pass(model):
    tokens = stream(model, seed=4)
    whole, chunked = make_slots(model), make_slots(model)
    whole.begin_step(StepBatch.of([request("a", tokens, 0, len(tokens))]))
    # Chunked prefill of the prompt, then one decode step per remaining token.
    prompt_len = len(tokens) - 5
    for begin, end in [(0, 7), (7, 20), (20, prompt_len)] + [(t, t + 1) for t in range(prompt_len, len(tokens))]:
        chunked.begin_step(StepBatch.of([request("a", tokens[:end], begin, end, prompt_len=min(prompt_len, end))]))
    hidden, base = torch.randn(1, H), torch.randn(1, V)
    torch.testing.assert_close(chunked.logits(hidden, base), whole.logits(hidden, base))


@torch.no_grad()
def test_recompute_from_zero_replays_the_codebook(model):
    """Preemption with recompute: the request comes back at position 0 after its decoder had read
    further, possibly with a different continuation (discarded tokens)."""
    tokens = stream(model, seed=5)
    other = tokens[:30] + stream(model, seed=6)[:20]
    slots = make_slots(model)
    slots.begin_step(StepBatch.of([request("a", tokens, 0, len(tokens))]))
    slots.logits(torch.randn(1, H), torch.randn(1, V))
    slots.begin_step(StepBatch.of([request("a", other, 0, len(other))]))
    fresh = make_slots(model)
    fresh.begin_step(StepBatch.of([request("a", other, 0, len(other))]))
    hidden, base = torch.randn(1, H), torch.randn(1, V)
    torch.testing.assert_close(slots.logits(hidden, base), fresh.logits(hidden, base))


@torch.no_grad()
def test_embeddings_of_hypertokens_come_from_their_own_request(model):
    a, b = stream(model, seed=7), stream(model, seed=8)
    slots = make_slots(model)
    slots.begin_step(StepBatch.of([request("a", a, 0, len(a)), request("b", b, 0, len(b))]))
    ids = torch.tensor(a + b)
    embeds = slots.embed(ids, lambda base_ids: torch.nn.functional.embedding(base_ids, model.input_table()))
    for offset, tokens in ((0, a), (len(a), b)):
        decoder = model.codec.decoder()
        entries = {hyper_id: subtokens for hyper_id, subtokens in decoder.feed(tokens)}
        for position, token in enumerate(tokens):
            if token >= V:
                row = model.encode_inputs(as_row(entries[token]))[0]
            else:
                row = model.input_table()[token]
            torch.testing.assert_close(embeds[offset + position], row)
    slots.logits(torch.randn(2, H), torch.randn(2, V))  # the step's own logits
    # Outside a step (vLLM's dummy runs) ids embed as base ids and hyper columns stay -inf.
    base_ids = ids.clamp(max=V - 1)
    outside = slots.embed(base_ids, lambda base_ids: torch.nn.functional.embedding(base_ids, model.input_table()))
    torch.testing.assert_close(outside, model.input_table()[base_ids])
    assert torch.isinf(slots.logits(torch.randn(2, H), torch.randn(2, V))[:, V:]).all()


def test_slots_are_reused_after_release(model):
    slots = make_slots(model, num_slots=2)
    tokens = stream(model, seed=9)
    slots.begin_step(StepBatch.of([request("a", tokens, 0, len(tokens)), request("b", tokens, 0, 10)]))
    slots.release("a")
    slots.release("unknown")  # ignored
    assert slots.num_active == 1
    # "c" takes a's old slot and starts from an empty codebook.
    slots.begin_step(StepBatch.of([request("c", tokens[:3], 0, 3)]))
    hidden, base = torch.randn(1, H), torch.randn(1, V)
    fresh = make_slots(model)
    fresh.begin_step(StepBatch.of([request("c", tokens[:3], 0, 3)]))
    torch.testing.assert_close(slots.logits(hidden, base), fresh.logits(hidden, base))


@torch.no_grad()
def test_idle_slots_are_taken_over_and_replayed_later(model):
    """More live requests than slots (preempted ones keep theirs): a request outside the step
    loses its slot and rebuilds its codebook from its tokens when it comes back."""
    a, b, c = (stream(model, seed=s) for s in (11, 12, 13))
    slots = make_slots(model, num_slots=2)
    slots.begin_step(StepBatch.of([request("a", a, 0, 40), request("b", b, 0, 40)]))
    slots.begin_step(StepBatch.of([request("b", b, 40, 41), request("c", c, 0, 30)]))  # "a" is preempted
    slots.logits(torch.randn(2, H), torch.randn(2, V))
    slots.begin_step(StepBatch.of([request("a", a, 40, len(a))]))  # "a" resumes where it was
    fresh = make_slots(model)
    fresh.begin_step(StepBatch.of([request("a", a, 0, len(a))]))
    hidden, base = torch.randn(1, H), torch.randn(1, V)
    torch.testing.assert_close(slots.logits(hidden, base), fresh.logits(hidden, base))
    with pytest.raises(RuntimeError, match="all 2 are in this step"):
        slots.begin_step(StepBatch.of([request(name, a, 0, 5) for name in ("x", "y", "z")]))


@torch.no_grad()
def test_rows_are_encoded_anew_after_a_weight_change():
    """Weights reloaded in place (load_weights, reload_weights): rows cached by content and each
    request's rows were encoded with the old weights."""
    model = tiny_model("llama", seed=0)  # its own: its weights change below
    tokens = stream(model, seed=14)
    split = next(p for p in range(30, len(tokens)) if tokens[p] >= V)  # a hypertoken read next
    slots, stale = make_slots(model), make_slots(model)
    for before in (slots, stale):
        before.begin_step(StepBatch.of([request("a", tokens, 0, split)]))
        before.logits(torch.randn(1, H), torch.randn(1, V))
    randomize_(model.output_encoder, seed=21)
    randomize_(model.input_encoder, seed=22)

    def after_split(slots: HyperSlots) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedding and logits of the decode step that reads tokens[split]."""
        slots.begin_step(StepBatch.of([request("a", tokens[: split + 1], split, split + 1)]))
        embeds = slots.embed(torch.tensor(tokens[split : split + 1]), lambda ids: model.input_table()[ids])
        return embeds, slots.logits(hidden, base)

    hidden, base = torch.randn(1, H), torch.randn(1, V)
    fresh = make_slots(model)
    fresh.begin_step(StepBatch.of([request("a", tokens, 0, split)]))
    expected = after_split(fresh)
    assert not torch.allclose(after_split(stale)[1], expected[1]), "rows encoded before the change differ"
    slots.invalidate_rows()
    for got, want in zip(after_split(slots), expected):
        torch.testing.assert_close(got, want)


def test_logits_rows_must_match_the_scheduled_requests(model):
    slots = make_slots(model)
    tokens = stream(model, seed=10)
    slots.begin_step(StepBatch.of([request("a", tokens, 0, len(tokens))]))
    with pytest.raises(RuntimeError, match="2 logits rows where the step scheduled 1"):
        slots.logits(torch.randn(2, H), torch.randn(2, V))


@torch.no_grad()
def test_the_kernel_path_gives_the_same_logits(model):
    """The GPU path (z2z_vllm.ops.hyper_logits; its torch reference on CPU) equals the CPU path."""
    streams = [stream(model, seed) for seed in (14, 15)] + [[1, 2]]
    hidden, base = torch.randn(3, H), torch.randn(3, V)
    results = []
    for use_kernels in (False, True):
        slots = make_slots(model, use_kernels=use_kernels)
        slots.begin_step(StepBatch.of([request(f"r{i}", s, 0, len(s)) for i, s in enumerate(streams)]))
        results.append((slots.logits(hidden, base), slots.logits(hidden, base)))  # in a step, then outside
    torch.testing.assert_close(results[1][0], results[0][0])
    torch.testing.assert_close(results[1][1], results[0][1])


def embed_base(model):
    return lambda base_ids: torch.nn.functional.embedding(base_ids, model.input_table())


@torch.no_grad()
def test_decode_steps_on_device_match_the_host_path(model):
    """Device codebooks (the GPU path; the update kernel's torch reference on CPU): decode steps
    advance on the device while prefill chunks, a chunk after decode steps, a replay from 0 and a
    slot taken over go through the host; embeddings and logits equal the host-only path's at
    every step."""
    a, b, c = (stream(model, seed=s, length=200) for s in (16, 17, 18))  # 136+ ids each
    schedule = [
        [("a", a, 0, 20), ("b", b, 0, 30)],  # prefill chunks
        [("a", a, 20, 40), ("b", b, 30, 31)],  # a chunk beside a first decode step
        *[[("a", a, t, t + 1), ("b", b, t - 10 + 1, t - 10 + 2)] for t in range(40, 52)],  # decode steps
        [("a", a, 52, 58), ("b", b, 42, 43)],  # a chunk after device steps: the host catches up
        *[[("a", a, t, t + 1)] for t in range(58, 62)],  # "b" idle
        [("c", c, 0, 25), ("a", a, 62, 63)],  # "c" takes over b's slot (2 slots)
        *[[("c", c, t, t + 1), ("a", a, t + 38, t + 39)] for t in range(25, 35)],
        [("b", b, 43, 44)],  # "b" comes back without its codebook: replayed from 0
        [("a", a, 0, 5)],  # recompute from 0 after preemption
        *[[("b", b, t, t + 1), ("a", a, t - 39, t - 38)] for t in range(44, 60)],
    ]
    host, on_device = make_slots(model, num_slots=2), make_slots(model, num_slots=2, device_codebooks=True)
    gen = torch.Generator().manual_seed(0)
    for step in schedule:
        requests = [request(name, tokens[:end], begin, end) for name, tokens, begin, end in step]
        ids = torch.tensor([t for name, tokens, begin, end in step for t in tokens[begin:end]])
        hidden, base = torch.randn(len(step), H, generator=gen), torch.randn(len(step), V, generator=gen)
        results = []
        for slots in (host, on_device):
            slots.begin_step(StepBatch.of(requests))
            results.append((slots.embed(ids, embed_base(model)), slots.logits(hidden, base)))
        torch.testing.assert_close(results[1][0], results[0][0])
        torch.testing.assert_close(results[1][1], results[0][1])
    assert on_device._device_position.max() > 0, "some steps ran on the device"


def entry_rows(slots: HyperSlots, slot: int) -> list[int]:
    """Table rows of the slot's entries (the host's index)."""
    return slots._index_host[slot, : slots._num_known_host[slot]].tolist()


def references(slots: HyperSlots, rows) -> list[int]:
    return slots.table.index.references(np.asarray(rows, dtype=np.int64)).tolist()


@torch.no_grad()
def test_requests_with_the_same_entries_share_their_rows(model):
    encoded = []

    def encode_outputs(ids: torch.Tensor) -> torch.Tensor:
        encoded.extend(tuple(t for t in row if t >= 0) for row in ids.tolist())
        return model.encode_outputs(ids)

    slots = make_slots(model)
    slots.table.encode_outputs = encode_outputs
    tokens = stream(model, seed=3)
    slots.begin_step(StepBatch.of([request("a", tokens, 0, len(tokens)), request("b", tokens, 0, len(tokens))]))
    a, b = entry_rows(slots, 0), entry_rows(slots, 1)
    assert a == b and len(set(a)) == len(a)  # one row per entry, shared by both requests
    assert references(slots, a) == [2] * len(a)
    entries = list(model.codec.codebook(tokens).values())
    assert all(encoded.count(entry) == 1 for entry in entries)  # each entry encoded once
    assert torch.equal(slots.index[0, : len(a)], torch.tensor(a, dtype=torch.int32))
    hidden, base = torch.randn(2, H), torch.randn(2, V)
    logits = slots.logits(hidden, base)
    for row in range(2):
        torch.testing.assert_close(logits[row], expected_logits(model, tokens, hidden[row], base[row]))


@torch.no_grad()
def test_the_table_grows_when_full_and_never_reuses_a_referenced_row(model):
    slots = HyperSlots(
        codec=model.codec, num_slots=3, hidden_size=H, encode_inputs=model.encode_inputs,
        encode_outputs=model.encode_outputs, device=torch.device("cpu"), dtype=torch.float32, initial_rows=4,
    )  # fmt: skip
    a, b = stream(model, seed=20), stream(model, seed=21)
    slots.begin_step(StepBatch.of([request("a", a, 0, len(a))]))
    capacity = slots.table.index.capacity
    assert capacity >= len(entry_rows(slots, 0)) > 4  # grew (doubling) past its 4 rows
    held = slots.table.output_rows[entry_rows(slots, 0)].clone()
    slots.begin_step(StepBatch.of([request("b", b, 0, len(b))]))  # every row but cached candidates is a's
    content_of = {}  # a row shared by both holds the same entry for both
    for slot, tokens in ((0, a), (1, b)):
        for row, content in zip(entry_rows(slots, slot), model.codec.codebook(tokens).values()):
            assert content_of.setdefault(row, content) == content
    torch.testing.assert_close(slots.table.output_rows[entry_rows(slots, 0)], held)  # a's rows untouched
    slots.begin_step(StepBatch.of([request("a", a, len(a), len(a)), request("b", b, len(b), len(b))]))
    hidden, base = torch.randn(2, H), torch.randn(2, V)
    logits = slots.logits(hidden, base)
    for row, tokens in enumerate((a, b)):
        torch.testing.assert_close(logits[row], expected_logits(model, tokens, hidden[row], base[row]))


@torch.no_grad()
def test_released_rows_stay_cached_and_are_reused_before_the_table_grows(model):
    encoded = []
    slots = make_slots(model, num_slots=2)
    slots.table.encode_outputs = lambda ids: encoded.append(len(ids)) or model.encode_outputs(ids)
    a = stream(model, seed=22)
    slots.begin_step(StepBatch.of([request("a", a, 0, len(a))]))
    rows_of_a = entry_rows(slots, 0)
    slots.release("a")
    assert references(slots, rows_of_a) == [0] * len(rows_of_a) and slots.table.index.num_referenced == 0
    before = len(encoded)
    slots.begin_step(StepBatch.of([request("a2", a, 0, len(a))]))  # the same entries: found by content, not encoded
    assert entry_rows(slots, 0) == rows_of_a and len(encoded) == before
    slots.release("a2")
    capacity = slots.table.index.capacity
    for step in range(capacity // len(rows_of_a) + 2):  # more distinct entries in total than rows
        tokens = stream(model, seed=100 + step)
        slots.begin_step(StepBatch.of([request(f"c{step}", tokens, 0, len(tokens))]))
        slots.release(f"c{step}")
    assert slots.table.index.capacity == capacity  # released rows were reused: no growth


@torch.no_grad()
def test_a_device_step_writes_the_new_entry_into_the_row_its_index_names(model):
    tokens = stream(model, seed=24, length=120)
    slots = make_slots(model, num_slots=2, device_codebooks=True)
    prompt = 8
    slots.begin_step(StepBatch.of([request("a", tokens[:prompt], 0, prompt)]))
    known = slots._num_known_host[0]
    assert known + 6 < C
    for t in range(prompt, prompt + 6):  # decode steps on the device
        slots.begin_step(StepBatch.of([request("a", tokens[: t + 1], t, t + 1, prompt_len=prompt)]))
    assert slots._num_reserved[0] == 6 and slots._num_known_host[0] == known  # the host did not follow
    book = list(model.codec.codebook(tokens[: prompt + 6]).values())
    made = int(slots.num_known[0])
    assert made == len(book) > known  # the device created entries
    for e in range(known, made):  # each in a row reserved for it, named by the index
        row = int(slots.index[0, e])
        assert row == slots._index_host[0, e] and references(slots, [row]) == [1]
        torch.testing.assert_close(slots.table.output_rows[row], model.encode_outputs(as_row(book[e]))[0])
    reserved = slots._index_host[0, known : known + 6].tolist()
    slots.begin_step(StepBatch.of([request("a", tokens[: prompt + 10], prompt + 6, prompt + 10, prompt_len=prompt)]))  # a chunk
    assert slots._num_reserved[0] == 0 and references(slots, reserved).count(0) >= 6 - (made - known)
    assert torch.equal(slots.index[0, :made], torch.from_numpy(slots._index_host[0, :made]))  # named by content


PARITY_SCHEDULE = [  # (request, stream seed, begin, end) per step, 2 slots
    [("a", 16, 0, 20), ("b", 17, 0, 30)],  # prefill chunks
    [("a", 16, 20, 40), ("b", 17, 30, 31)],  # a chunk beside a decode step
    *[[("a", 16, t, t + 1), ("b", 17, t - 9, t - 8)] for t in range(40, 50)],  # decode steps
    [("c", 18, 0, 25), ("a", 16, 50, 51)],  # "c" takes over b's slot
    [("b", 17, 41, 42), ("c", 18, 25, 26)],  # "b" back without its codebook: replayed from 0
    [("a", 16, 0, 5), ("b", 17, 42, 43)],  # recompute from 0 after preemption
    *[[("a", 16, t, t + 1), ("b", 17, t + 38, t + 39)] for t in range(5, 12)],
]


@torch.no_grad()
@pytest.mark.parametrize("device_codebooks", [False, True])
def test_the_native_host_path_matches_the_python_one(model, device_codebooks):
    """The one native call per step (LZWCodec.advance_requests, RowIndex) leaves the same rows,
    masks, embeddings and logits as the Python loop per request, entry and token, through
    chunks, decode steps, slot takeover, replay and recompute."""
    streams = {seed: stream(model, seed=seed, length=200) for seed in (16, 17, 18)}
    python = make_slots(model, num_slots=2, native_host=False, device_codebooks=device_codebooks)
    native = make_slots(model, num_slots=2, device_codebooks=device_codebooks)
    gen = torch.Generator().manual_seed(0)
    for step in PARITY_SCHEDULE:
        requests = [request(name, streams[seed][:end], begin, end) for name, seed, begin, end in step]
        ids = torch.tensor([t for name, seed, begin, end in step for t in streams[seed][begin:end]])
        hidden, base = torch.randn(len(step), H, generator=gen), torch.randn(len(step), V, generator=gen)
        results = []
        for slots in (python, native):
            slots.begin_step(StepBatch.of(requests))
            results.append((
                slots.embed(ids, embed_base(model)), slots.logits(hidden, base), slots.table.output_rows.clone(),
                slots.table.input_rows.clone(), slots.index.clone(), slots._index_host.copy(),
                slots.candidate_rows.clone(), slots.num_known.clone(), slots.has_candidate.clone(),
                slots.table.input_ready.copy(),
            ))  # fmt: skip
        for got, want in zip(results[1], results[0]):
            torch.testing.assert_close(torch.as_tensor(got), torch.as_tensor(want))


@pytest.mark.parametrize("native_host", [False, True])
def test_invalid_ids_raise_and_the_step_replays_later(model, native_host):
    tokens = stream(model, seed=19)
    slots, fresh = make_slots(model, native_host=native_host), make_slots(model)
    slots.begin_step(StepBatch.of([request("a", tokens, 0, 20)]))
    bad = tokens[:20] + [V + C - 1]  # a hypertoken id not defined yet
    with pytest.raises(ValueError, match="not a defined hypertoken"):
        slots.begin_step(StepBatch.of([request("b", tokens, 0, 10), request("a", bad, 20, 21)]))
    slots.begin_step(StepBatch.of([request("a", tokens, 20, 30)]))
    fresh.begin_step(StepBatch.of([request("a", tokens, 0, 30)]))
    hidden, base = torch.randn(1, H), torch.randn(1, V)
    torch.testing.assert_close(slots.logits(hidden, base), fresh.logits(hidden, base))


# -- speculative decoding: draft rows, rewinds -----------------------------------------------------


def speculative_request(req_id: str, verified: list[int], drafts: list[int], *, prompt_len: int = 10) -> ScheduledRequest:
    """A decode step with drafts: the last verified token and the drafts are scheduled."""
    return ScheduledRequest(
        req_id, verified[:prompt_len], verified[prompt_len:], len(verified) - 1, len(verified) + len(drafts),
        tuple(drafts),
    )  # fmt: skip


def expected_rows(model, verified: list[int], drafts: list[int], hidden: torch.Tensor, base: torch.Tensor):
    """Row j: the logits after the verified tokens and the first j drafts."""
    return torch.stack([
        expected_logits(model, verified + drafts[:j], hidden[j], base[j]) for j in range(len(drafts) + 1)
    ])  # fmt: skip


@torch.no_grad()
@pytest.mark.parametrize("native_host", [False, True])
@pytest.mark.parametrize("use_kernels", [False, True])
def test_draft_rows_see_the_entries_known_at_their_position(model, native_host, use_kernels):
    """Each logits row of a request with drafts is masked by the entries defined after its own
    position (entries the drafts create included, the KwKwK candidate of each position), and the
    rows of other requests in the step are unchanged."""
    slots = make_slots(model, native_host=native_host, use_kernels=use_kernels)
    tokens, other = stream(model, seed=30, length=120), stream(model, seed=31)
    verified, drafts = tokens[:30], tokens[30:35]
    slots.begin_step(StepBatch.of([request("a", verified, 0, 29), request("b", other, 0, len(other))]))
    slots.begin_step(StepBatch.of([speculative_request("a", verified, drafts), request("b", other, len(other), len(other))]))
    hidden, base = torch.randn(7, H), torch.randn(7, V)
    logits = slots.logits(hidden, base)
    torch.testing.assert_close(logits[:6], expected_rows(model, verified, drafts, hidden[:6], base[:6]))
    torch.testing.assert_close(logits[6], expected_logits(model, other, hidden[6], base[6]))


@torch.no_grad()
@pytest.mark.parametrize("native_host", [False, True])
def test_rejected_drafts_leave_no_trace(model, native_host):
    """Random drafts (a correct prefix, then other base ids) and random acceptance, step after
    step: every row equals a fresh decoder's over the accepted tokens plus that row's drafts, the
    decoder rewinds instead of replaying, and the rows the rejected drafts' entries took are
    released (the references equal those of a run without drafts)."""
    slots, plain = make_slots(model, native_host=native_host), make_slots(model)
    advance, replays = slots.host.advance, []
    slots.host.advance = lambda *args: replays.append((step := advance(*args)).replayed.any()) or step
    tokens = stream(model, seed=32, length=400)
    rng = np.random.default_rng(0)
    position = 12
    slots.begin_step(StepBatch.of([request("a", tokens[:position], 0, position - 1)]))
    while position + 6 < len(tokens):
        k, correct = int(rng.integers(0, 5)), int(rng.integers(0, 5))
        drafts = tokens[position : position + min(k, correct)] + rng.integers(1, 7, max(k - correct, 0)).tolist()
        verified = tokens[:position]
        slots.begin_step(StepBatch.of([speculative_request("a", verified, drafts)]))
        hidden, base = torch.randn(k + 1, H), torch.randn(k + 1, V)
        torch.testing.assert_close(slots.logits(hidden, base), expected_rows(model, verified, drafts, hidden, base))
        matching = next((j for j, (d, t) in enumerate(zip(drafts, tokens[position:])) if d != t), len(drafts))
        position += int(rng.integers(0, matching + 1)) + 1  # accepted drafts, then the bonus token
    plain.begin_step(StepBatch.of([request("a", tokens[:position], 0, position - 1)]))
    slots.begin_step(StepBatch.of([request("a", tokens[:position], position - 1, position - 1)]))
    assert not any(replays)  # rewound to before the drafts every time, never replayed from 0
    decoder = model.codec.decoder()
    decoder.feed(tokens[: position - 1])
    assert slots._num_known_host[0] == plain._num_known_host[0] == decoder.num_entries
    for held in (slots, plain):  # one reference per entry held: none left by rejected drafts
        all_rows = np.arange(held.table.index.capacity, dtype=np.int32)
        assert held.table.index.references(all_rows).sum() == decoder.num_entries


@torch.no_grad()
@pytest.mark.parametrize("native_host", [False, True])
def test_a_draft_that_cannot_come_next_is_masked_not_raised(model, native_host):
    slots = make_slots(model, native_host=native_host)
    tokens = stream(model, seed=33)
    verified = tokens[:20]
    slots.begin_step(StepBatch.of([request("a", verified, 0, 19)]))
    drafts = [tokens[20], V + C - 1, tokens[21]]  # an undefined hypertoken, then anything
    slots.begin_step(StepBatch.of([speculative_request("a", verified, drafts)]))
    hidden, base = torch.randn(4, H), torch.randn(4, V)
    logits = slots.logits(hidden, base)
    torch.testing.assert_close(logits[:2], expected_rows(model, verified, drafts[:1], hidden[:2], base[:2]))
    assert logits[1, V + C - 1] == float("-inf")  # the draft gets probability 0: rejected
    slots.begin_step(StepBatch.of([speculative_request("a", verified + drafts[:1], [])]))  # one draft accepted
    torch.testing.assert_close(slots.logits(hidden[:1], base[:1])[0], expected_logits(model, verified + drafts[:1], hidden[0], base[0]))
