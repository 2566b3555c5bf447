"""Hypothesis strategies and oracles shared by the codec tests."""

from __future__ import annotations

import os
from dataclasses import dataclass

from hypothesis import strategies as st

from z2z_vllm.codec import LZWCodec
from z2z_vllm.codec import reference

# Size knob: Z2Z_TEST_SCALE=10 runs ten times the examples of a normal run.
SCALE = float(os.environ.get("Z2Z_TEST_SCALE", "1"))


def examples(n: int) -> int:
    return max(1, int(n * SCALE))


@dataclass(frozen=True)
class Case:
    vocab_size: int
    codebook_size: int
    max_subtokens: int
    disabled: tuple[int, ...]
    pad: int

    def ours(self) -> LZWCodec:
        return LZWCodec(
            initial_vocab_size=self.vocab_size,
            max_codebook_size=self.codebook_size,
            max_subtokens=self.max_subtokens,
            disabled_ids=self.disabled,
            pad_token_id=self.pad,
        )

    def anchor(self):
        import zip2zip_compression

        return zip2zip_compression.LZWCompressor(
            initial_vocab_size=self.vocab_size,
            max_codebook_size=self.codebook_size,
            max_subtokens=self.max_subtokens,
            pad_token_id=self.pad,
            disabled_ids=list(self.disabled),
        )

    def reference(self) -> reference.Settings:
        return reference.Settings(
            self.vocab_size, self.codebook_size, self.max_subtokens, frozenset(self.disabled) | {self.pad}
        )


@st.composite
def cases(draw, *, max_vocab: int = 24) -> Case:
    vocab_size = draw(st.integers(2, max_vocab))
    disabled = draw(st.lists(st.integers(0, vocab_size - 1), max_size=3, unique=True))
    return Case(
        vocab_size=vocab_size,
        codebook_size=draw(st.integers(0, 40)),
        max_subtokens=draw(st.integers(1, 6)),
        disabled=tuple(disabled),
        pad=draw(st.integers(0, vocab_size - 1)),
    )


@st.composite
def base_ids(draw, case: Case, *, max_size: int = 300) -> list[int]:
    # A small alphabet makes repeats, hence long entries and a full codebook, likely.
    alphabet = draw(st.integers(1, min(case.vocab_size, 6)))
    common = st.integers(0, alphabet - 1)
    anything = st.integers(0, case.vocab_size - 1)
    return draw(st.lists(st.one_of(common, common, common, anything), max_size=max_size))


@st.composite
def valid_streams(draw, case: Case, *, max_size: int = 200) -> list[int]:
    """Compressed streams that decode, not only canonical ones: at each step any base id, any
    defined hypertoken, or the id being defined (KwKwK) where it may appear."""
    decoder = reference.Decoder(case.reference())
    stream: list[int] = []
    for _ in range(draw(st.integers(0, max_size))):
        next_id = case.vocab_size + len(decoder.entries)
        choices = [st.integers(0, case.vocab_size - 1)]
        if next_id > case.vocab_size:
            choices.append(st.integers(case.vocab_size, next_id - 1))
        if next_id < case.vocab_size + case.codebook_size and _accepts(decoder, next_id):
            choices.append(st.just(next_id))
        token = draw(st.one_of(choices))
        decoder.feed([token])
        stream.append(token)
    return stream


def _accepts(decoder: reference.Decoder, token: int) -> bool:
    try:
        decoder.copy().feed([token])
    except ValueError:
        return False
    return True
