"""The LZW hypertoken codec in plain Python, written to be read.

Same results as the native codec (``z2z_vllm.codec.LZWCodec``) and as zip2zip-compression 0.3.4
on valid input, same ``ValueError`` on invalid input; about 100x slower. Tests compare the three.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Settings:
    vocab_size: int  # V: base ids are 0 .. V-1
    codebook_size: int  # C: hypertoken ids are V .. V+C-1
    max_subtokens: int  # M: longest entry, in base tokens
    disabled: frozenset[int] = frozenset()  # emitted alone, never merged

    @property
    def end_id(self) -> int:
        return self.vocab_size + self.codebook_size


def encode(ids: Iterable[int], settings: Settings) -> list[int]:
    """Greedy longest-match LZW over base ids."""
    codebook: dict[tuple[int, ...], int] = {}
    out: list[int] = []
    buffer: tuple[int, ...] = ()

    def code(entry: tuple[int, ...]) -> int:
        return entry[0] if len(entry) == 1 else codebook[entry]

    for position, token in enumerate(ids):
        if not 0 <= token < settings.vocab_size:
            raise ValueError(
                f"id {token} at position {position} is not a base token id "
                f"(expected 0 <= id < {settings.vocab_size}); hypertoken ids cannot be encoded"
            )
        if token in settings.disabled:
            out.extend([code(buffer)] if buffer else [])
            out.append(token)
            buffer = ()
            continue
        extended = buffer + (token,)
        if len(extended) == 1 or extended in codebook:
            buffer = extended
        else:
            if len(codebook) < settings.codebook_size:
                codebook[extended] = settings.vocab_size + len(codebook)
            out.append(code(buffer))
            buffer = (token,)
        if len(buffer) == settings.max_subtokens:
            out.append(code(buffer))
            buffer = ()
    if buffer:
        out.append(code(buffer))
    return out


@dataclass
class Decoder:
    """Rebuilds the encoder's codebook from compressed ids, one id behind it.

    Streams that are valid but not what the encoder would emit (base ids where a hypertoken
    existed, say) decode too: the codebook then follows from replaying the encoder's rules over
    the decoded base ids, as zip2zip-compression does.
    """

    settings: Settings
    entries: list[tuple[int, ...]] = field(default_factory=list)
    position: int = 0
    _buffer: tuple[int, ...] = ()
    _known: set[tuple[int, ...]] = field(default_factory=set)

    def feed(self, ids: Iterable[int]) -> list[int]:
        """Decodes ids into base ids; on ValueError, the decoder is left as it was."""
        snapshot = (list(self.entries), self.position, self._buffer, set(self._known))
        out: list[int] = []
        try:
            for token in ids:
                out.extend(self._step(token))
                self.position += 1
        except ValueError:
            self.entries, self.position, self._buffer, self._known = snapshot
            raise
        return out

    def copy(self) -> Decoder:
        return Decoder(self.settings, list(self.entries), self.position, self._buffer, set(self._known))

    def codebook(self) -> dict[int, tuple[int, ...]]:
        return {self.settings.vocab_size + i: entry for i, entry in enumerate(self.entries)}

    def _add(self, entry: tuple[int, ...]) -> None:
        self.entries.append(entry)
        self._known.add(entry)

    def _fail(self, token: int, why: str) -> None:
        raise ValueError(f"id {token} at position {self.position} {why}")

    def _step(self, token: int) -> tuple[int, ...]:
        s = self.settings
        if token in s.disabled:
            self._buffer = ()
            return (token,)
        if not 0 <= token < s.end_id:
            self._fail(token, f"is out of range (expected 0 <= id < {s.end_id})")
        next_id = s.vocab_size + len(self.entries)
        if token < s.vocab_size:
            decoded = (token,)
        elif token < next_id:
            decoded = self.entries[token - s.vocab_size]
        else:
            # KwKwK: the id names the entry it creates, previous expansion + its first token.
            if token != next_id:
                self._fail(token, f"is not a defined hypertoken (the next id to be defined is {next_id})")
            if not self._buffer:
                self._fail(token, "is not a defined hypertoken and cannot be defined here: no previous token to extend")
            if len(self._buffer) >= s.max_subtokens:
                self._fail(token, "is not a defined hypertoken and cannot be defined here: the previous token already holds max_subtokens base ids")
            entry = self._buffer + self._buffer[:1]
            if entry in self._known:
                self._fail(token, "is not a defined hypertoken: the entry it would define already exists")
            self._add(entry)
            self._buffer = entry
            return entry

        # Replay the encoder: extend the previous expansion with the decoded ids until the
        # extension is new (that is the entry the encoder created) or reaches M.
        if len(self.entries) == s.codebook_size:
            self._buffer = ()
        elif not self._buffer or len(self._buffer) == s.max_subtokens:
            self._buffer = decoded
        else:
            for i, base in enumerate(decoded):
                self._buffer += (base,)
                if self._buffer not in self._known:
                    self._add(self._buffer)
                    self._buffer = decoded[i:]
                    break
                if len(self._buffer) == s.max_subtokens:
                    self._buffer = decoded[i + 1 :]
                    break
        return decoded


def decode(ids: Sequence[int], settings: Settings) -> tuple[list[int], dict[int, tuple[int, ...]]]:
    """Base ids and the codebook known after reading all of ``ids``."""
    decoder = Decoder(settings)
    return decoder.feed(ids), decoder.codebook()
