"""Batched codebook update: the torch reference against the C++ codec, every kernel against the
torch reference (Triton, the CUDA kernel's logic on the host, the CUDA kernel on a GPU)."""

from __future__ import annotations

import ctypes
import random
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from tests.ops.helpers import (
    DEVICES,
    arbitrary_states,
    assert_same_state,
    clone,
    decoded_states,
    empty_state,
    invalid_id,
    needs_cuda,
    random_codec,
    settings,
    triton_device,
    valid_id,
)
from z2z_vllm.codec import LZWCodec, reference
from z2z_vllm.ops import CodebookState, CodebookStep, codebook_update
from z2z_vllm.ops.codebook import NEVER, codebook_update_reference

ROOT = Path(__file__).resolve().parents[2]


def stripped(row: list[int]) -> tuple[int, ...]:
    return tuple(x for x in row if x >= 0)


@pytest.mark.parametrize("seed", range(12))
def test_reference_is_the_cpp_decoder_fed_one_id_at_a_time(seed):
    """A batch of requests in lockstep, each against its own C++ decoder (created entries, known-at
    positions, expansion, KwKwK candidate) and reference decoder (buffer), with invalid ids and
    padding rows mixed in; small C fills codebooks, M = 1 .. 5."""
    rng = random.Random(seed)
    codec = random_codec(rng)
    V, M = codec["initial_vocab_size"], codec["max_subtokens"]
    cpp = LZWCodec(**codec)
    num_slots, batch = 6, 4
    state = empty_state(codec, num_slots)
    slots = rng.sample(range(num_slots), batch)
    ours = [reference.Decoder(settings(codec)) for _ in range(batch)]
    theirs = [cpp.decoder() for _ in range(batch)]
    streams: list[list[int]] = [[] for _ in range(batch)]

    for _ in range(50):
        padding = rng.random() < 0.1
        ids = [invalid_id(d, rng) if rng.random() < 0.05 else valid_id(d, rng) for d in ours]
        positions = [len(s) for s in streams]
        step_slots = slots + [-1] if padding else slots  # a padding row reads slot 0's memory only
        step = codebook_update_reference(
            state,
            torch.tensor(ids + [V] * padding, dtype=torch.int32),
            torch.tensor(step_slots, dtype=torch.int32),
            torch.tensor(positions + [0] * padding, dtype=torch.int32),
        )
        if padding:
            assert step.expansion[-1].tolist() == [-1] * M and step.created[-1] == -1
            assert step.candidate[-1].tolist() == [-1] * M
        for b, (token, decoder, native) in enumerate(zip(ids, ours, theirs)):
            slot = slots[b]
            try:
                expansion = decoder.copy().feed([token])
            except ValueError:  # invalid: nothing changes
                assert step.expansion[b].tolist() == [-1] * M and step.created[b] == -1
                expected = native.candidate
                assert stripped(step.candidate[b].tolist()) == (tuple(expected[1]) if expected else ())
                continue
            decoder.feed([token])
            streams[b].append(token)
            created = native.feed([token])
            assert stripped(step.expansion[b].tolist()) == tuple(expansion)
            assert step.created[b].item() == (created[0][0] - V if created else -1)
            n = len(decoder.entries)
            assert state.num_entries[slot].item() == n == native.num_entries
            assert [stripped(r) for r in state.entries[slot, :n].tolist()] == decoder.entries
            assert stripped(state.buffer[slot].tolist()) == decoder._buffer
            assert state.buffer_len[slot].item() == len(decoder._buffer)
            expected = native.candidate
            assert stripped(step.candidate[b].tolist()) == (tuple(expected[1]) if expected else ())

    for b, stream in enumerate(streams):
        arrays = cpp.codebook_arrays([stream])
        n = arrays["known_at"].shape[1]
        assert state.known_at[slots[b], :n].tolist() == arrays["known_at"][0].tolist()
        assert (state.known_at[slots[b], n:] == NEVER).all()


def random_step(rng: random.Random, codec: dict, state: CodebookState, batch: int, device: str):
    """ids, slots and positions of one step: mostly valid-looking ids, some invalid, some padding."""
    V, C = codec["initial_vocab_size"], codec["max_codebook_size"]
    num_entries = state.num_entries.tolist()
    slots = rng.sample(range(state.num_entries.shape[0]), batch)
    ids = []
    for slot in slots:
        n = num_entries[slot]
        ids.append(rng.choice([rng.randrange(V), V + rng.randrange(max(n, 1)), V + n, V + n, -1, V + C + 3]))
    slots = [-1 if rng.random() < 0.1 else s for s in slots]
    positions = [rng.randrange(10_000) for _ in slots]
    return tuple(torch.tensor(x, dtype=torch.int32, device=device) for x in (ids, slots, positions))


def assert_same_step(a: CodebookStep, b: CodebookStep) -> None:
    for name, x, y in zip(CodebookStep._fields, a, b):
        assert x.dtype == y.dtype == torch.int32, name
        assert torch.equal(x.cpu(), y.cpu()), name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("states", [decoded_states, arbitrary_states])
@pytest.mark.parametrize("seed", range(6))
def test_triton_kernel_matches_reference(seed, states, device):
    device = triton_device(device)
    rng = random.Random(seed)
    codec = random_codec(rng, max_codebook=64, max_subtokens=4)
    state = states(rng, codec, 5, device)
    for _ in range(3):  # a few steps in a row: the kernel's writes must be the reference's
        ids, slots, positions = random_step(rng, codec, state, 4, device)
        expected_state = clone(state)
        expected = codebook_update_reference(expected_state, ids, slots, positions)
        got = codebook_update(state, ids, slots, positions, backend="triton")
        assert_same_step(got, expected)
        assert_same_state(state, expected_state)


@pytest.fixture(scope="module")
def host_kernel(tmp_path_factory):
    """kernels/codebook_update.cuh compiled for the host (tests/ops/codebook_update_host.cpp)."""
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    library = tmp_path_factory.mktemp("host_kernel") / "codebook_update_host.so"
    subprocess.run(
        [compiler, "-std=c++17", "-O1", "-Wall", "-Werror", "-Wno-unknown-pragmas", "-shared", "-fPIC",
         f"-I{ROOT / 'kernels'}", str(ROOT / "tests/ops/codebook_update_host.cpp"), "-o", str(library)],
        check=True,
    )  # fmt: skip
    return ctypes.CDLL(str(library)).codebook_update_host


def run_host_kernel(function, state: CodebookState, ids, slots, positions) -> CodebookStep:
    B, M = ids.shape[0], state.max_subtokens
    step = CodebookStep(
        torch.empty(B, M, dtype=torch.int32), torch.empty(B, dtype=torch.int32), torch.empty(B, M, dtype=torch.int32)
    )

    def ptr(t: torch.Tensor) -> ctypes.c_void_p:
        assert t.is_contiguous() and t.device.type == "cpu"
        return ctypes.c_void_p(t.data_ptr())

    function(
        *(ptr(t) for t in vars(state).values()),
        *(ctypes.c_int32(x) for x in (state.vocab_size, state.codebook_size, M)),
        *(ptr(t) for t in (ids, slots, positions, *step)),
        ctypes.c_int32(B),
    )
    return step


@pytest.mark.parametrize("states", [decoded_states, arbitrary_states])
@pytest.mark.parametrize("seed", range(10))
def test_cuda_kernel_logic_on_the_host_matches_reference(host_kernel, seed, states):
    """The CUDA kernel's per-request functions, run by one host thread."""
    rng = random.Random(seed)
    codec = random_codec(rng, max_codebook=64, max_subtokens=16)
    state = states(rng, codec, 6, "cpu")
    for _ in range(4):
        ids, slots, positions = random_step(rng, codec, state, 5, "cpu")
        expected_state = clone(state)
        expected = codebook_update_reference(expected_state, ids, slots, positions)
        assert_same_step(run_host_kernel(host_kernel, state, ids, slots, positions), expected)
        assert_same_state(state, expected_state)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("seed", range(4))
def test_cuda_extension_matches_reference(seed):
    from z2z_vllm.ops._cuda import extension

    if extension() is None:
        pytest.skip("z2z_vllm._cuda_ops not built (Z2Z_BUILD_CUDA=1 pip install -e .)")
    rng = random.Random(seed)
    codec = random_codec(rng, max_codebook=512, max_subtokens=8)
    state = decoded_states(rng, codec, 16, "cuda")
    for _ in range(4):
        ids, slots, positions = random_step(rng, codec, state, 12, "cuda")
        expected_state = clone(state)
        expected = codebook_update_reference(expected_state, ids, slots, positions)
        assert_same_step(codebook_update(state, ids, slots, positions, backend="cuda"), expected)
        assert_same_state(state, expected_state)


def test_padding_slots_and_reset():
    codec = {"initial_vocab_size": 5, "max_codebook_size": 4, "max_subtokens": 3, "disabled_ids": (), "pad_token_id": 0}
    state = empty_state(codec, 2)
    slots = torch.tensor([0, -1], dtype=torch.int32)
    for position, token in enumerate([1, 2, 1]):  # entries (1, 2), (2, 1) in slot 0
        step = codebook_update(state, torch.tensor([token, token]), slots, torch.tensor([position, 0]))
        assert step.created[1] == -1 and step.expansion[1].tolist() == [-1, -1, -1]
    assert state.num_entries.tolist() == [2, 0] and state.known_at[0, :2].tolist() == [1, 2]
    assert state.entries[0, :2].tolist() == [[1, 2, -1], [2, 1, -1]]
    assert state.buffer[0].tolist() == [1, -1, -1] and state.buffer_len[0] == 1
    state.reset_(torch.tensor([0]))
    assert_same_state(state, empty_state(codec, 2))
