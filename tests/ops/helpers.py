"""Shared pieces of the kernel tests: devices, tolerances, random codebook states."""

from __future__ import annotations

import random

import pytest
import torch

from z2z_vllm.codec import reference
from z2z_vllm.ops import CodebookState

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# Triton's device: compiled on a GPU, interpreted on CPU; "cuda" also runs the GPU-marked variant.
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, needs_cuda])]

# Relative error ||out - ref|| / ||ref|| against a float64 reference (the device notes' METHOD.md:
# float32 far under 1e-3, bf16 between 1e-3 and 1e-2).
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def triton_device(device: str) -> str:
    """``device``, after checking that Triton can run there."""
    if device == "cpu":
        from triton.runtime.interpreter import InterpretedFunction

        from z2z_vllm.ops import codebook

        if not isinstance(codebook._codebook_update_kernel, InterpretedFunction):
            pytest.skip("z2z_vllm.ops was imported before TRITON_INTERPRET=1: run tests/ops on its own")
    return device


def assert_close_to(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    """``out`` (computed in ``dtype``) within that dtype's tolerance of the float64 ``ref``."""
    assert out.shape == ref.shape
    assert torch.isfinite(out).all()
    error = ((out.double() - ref).norm() / ref.norm().clamp(min=1e-30)).item()
    assert error < TOLERANCE[dtype], f"relative error {error:.2e} >= {TOLERANCE[dtype]:.0e} ({dtype})"


# -- codebook states ------------------------------------------------------------------------


def random_codec(rng: random.Random, *, max_codebook: int = 40, max_subtokens: int = 5) -> dict:
    """LZWCodec arguments; small vocabularies so that entries repeat, merge and fill up."""
    vocab_size = rng.randint(2, 12)
    return {
        "initial_vocab_size": vocab_size,
        "max_codebook_size": rng.randint(1, max_codebook),
        "max_subtokens": rng.randint(1, max_subtokens),
        "disabled_ids": tuple(rng.sample(range(vocab_size), rng.randint(0, min(2, vocab_size - 1)))),
        "pad_token_id": rng.randrange(vocab_size),
    }


def settings(codec: dict) -> reference.Settings:
    return reference.Settings(
        codec["initial_vocab_size"],
        codec["max_codebook_size"],
        codec["max_subtokens"],
        frozenset(codec["disabled_ids"]) | {codec["pad_token_id"]},
    )


def empty_state(codec: dict, num_slots: int, device: str = "cpu") -> CodebookState:
    return CodebookState.empty(
        num_slots=num_slots,
        vocab_size=codec["initial_vocab_size"],
        codebook_size=codec["max_codebook_size"],
        max_subtokens=codec["max_subtokens"],
        disabled_ids=codec["disabled_ids"],
        pad_token_id=codec["pad_token_id"],
        device=device,
    )


def valid_id(decoder: reference.Decoder, rng: random.Random) -> int:
    """Any id a valid stream may hold next: a base id, a defined hypertoken or the KwKwK id."""
    V = decoder.settings.vocab_size
    next_id = V + len(decoder.entries)
    choices = [rng.randrange(V) for _ in range(3)]
    if decoder.entries:
        choices += [V + rng.randrange(len(decoder.entries)) for _ in range(2)]
    if next_id < decoder.settings.end_id:
        try:
            decoder.copy().feed([next_id])
            choices += [next_id, next_id]
        except ValueError:
            pass
    return rng.choice(choices)


def invalid_id(decoder: reference.Decoder, rng: random.Random) -> int:
    """An id no valid stream holds next (the kernel must leave the slot untouched)."""
    s = decoder.settings
    candidates = [-1, -(2**31), s.end_id, s.end_id + 1000, 2**31 - 1]
    if len(decoder.entries) + 1 < s.codebook_size:
        candidates.append(s.vocab_size + len(decoder.entries) + 1)  # undefined hypertoken
    next_id = s.vocab_size + len(decoder.entries)
    if next_id < s.end_id:
        try:
            decoder.copy().feed([next_id])
        except ValueError:
            candidates.append(next_id)  # a KwKwK id that cannot be defined here
    return rng.choice(candidates)


def decoded_states(rng: random.Random, codec: dict, num_slots: int, device: str) -> CodebookState:
    """Every slot after a random valid stream of random length (reachable states)."""
    state = empty_state(codec, num_slots, device)
    for slot in range(num_slots):
        decoder = reference.Decoder(settings(codec))
        known_at = []
        for position in range(rng.randint(0, 80)):
            decoder.feed([valid_id(decoder, rng)])
            known_at += [position] * (len(decoder.entries) - len(known_at))
        state.load_(slot, decoder.entries, known_at, decoder._buffer)
    return state


def arbitrary_states(rng: random.Random, codec: dict, num_slots: int, device: str) -> CodebookState:
    """Random contents no decoder reaches (duplicate entries, any buffer): every implementation
    must still compute the same function on them."""
    V, C, M = codec["initial_vocab_size"], codec["max_codebook_size"], codec["max_subtokens"]
    state = empty_state(codec, num_slots, device)

    def ids(length: int) -> list[int]:
        return [rng.randrange(V) for _ in range(length)]

    for slot in range(num_slots):
        n = rng.randint(0, C)
        entries = [ids(rng.randint(min(2, M), M)) for _ in range(n)]
        state.load_(slot, entries, [rng.randrange(1000) for _ in range(n)], ids(rng.randint(0, M)))
    return state


def clone(state: CodebookState) -> CodebookState:
    return CodebookState(*(t.clone() for t in vars(state).values()))


def assert_same_state(a: CodebookState, b: CodebookState) -> None:
    for name in vars(a):
        assert torch.equal(getattr(a, name).cpu(), getattr(b, name).cpu()), name
