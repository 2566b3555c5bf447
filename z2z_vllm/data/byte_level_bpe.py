"""Building Hugging Face byte-level BPE tokenizers from raw vocabularies (tiktoken ranks, merges).

Byte-level BPE spells every byte as one printable character (GPT-2's alphabet), so a vocabulary
of byte strings becomes an ordinary string vocabulary that ``tokenizers`` can hold.
"""

from __future__ import annotations

from typing import NamedTuple

from tokenizers import AddedToken, Tokenizer, decoders, models


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> character map: printable bytes map to themselves, the rest to U+0100 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    alphabet = {byte: chr(byte) for byte in printable}
    shifted = 0
    for byte in range(256):
        if byte not in alphabet:
            alphabet[byte] = chr(256 + shifted)
            shifted += 1
    return alphabet


BYTE_TO_CHAR: dict[int, str] = _byte_alphabet()
CHAR_TO_BYTE: dict[str, int] = {char: byte for byte, char in BYTE_TO_CHAR.items()}


def spell(token: bytes) -> str:
    """A byte string in the byte-level alphabet."""
    return "".join(BYTE_TO_CHAR[byte] for byte in token)


def unspell(token: str) -> bytes:
    """The bytes behind a byte-level spelling."""
    return bytes(CHAR_TO_BYTE[char] for char in token)


class AddedTokenSpec(NamedTuple):
    """A token matched whole in the text, never built by merges, at a fixed id."""

    id: int
    content: str
    special: bool = True


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[str, str]]:
    """The merge list equivalent to tiktoken's rank-driven BPE.

    tiktoken repeatedly joins the adjacent pair whose concatenation has the lowest rank; a merge
    list ordered by the rank of each merge's result does the same. Every split of a token into two
    tokens is a merge (ties broken by the parts' ranks), as in ``transformers``' converter.
    """
    merges = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    return [(spell(left), spell(right)) for _, _, _, left, right in merges]


def byte_level_bpe(
    vocab: dict[str, int],
    merges: list[tuple[str, str]],
    *,
    pre_tokenizer,
    normalizer=None,
    ignore_merges: bool = False,
    added_tokens: tuple[AddedTokenSpec, ...] = (),
) -> Tokenizer:
    """A byte-level BPE ``Tokenizer`` whose added tokens sit exactly at their given ids.

    Added tokens already in ``vocab`` keep their id there. The others are appended in id order;
    any id gap before one of them is filled with a placeholder special token so that every
    official id is kept (tiktoken vocabularies may have holes).
    """
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges, fuse_unk=False))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()

    def add(token_id: int, content: str, special: bool) -> None:
        token = AddedToken(content, special=special, normalized=False)
        (tokenizer.add_special_tokens if special else tokenizer.add_tokens)([token])
        if tokenizer.token_to_id(content) != token_id:
            raise ValueError(f"added token {content!r} landed at {tokenizer.token_to_id(content)}, not {token_id}")

    for spec in sorted(added_tokens):
        if vocab.get(spec.content) not in (None, spec.id):
            raise ValueError(f"{spec.content!r} is in the vocabulary at {vocab[spec.content]}, not {spec.id}")
        if spec.content not in vocab:
            for hole in range(tokenizer.get_vocab_size(with_added_tokens=True), spec.id):
                add(hole, f"<|z2z_placeholder_{hole}|>", special=True)
        add(spec.id, spec.content, spec.special)
    return tokenizer
