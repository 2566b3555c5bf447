"""Coverage-guided fuzz target for the codec (atheris).

Arbitrary configurations and ids, valid or not, through encode / decode / codebook / batch /
incremental feed. Every call must either return what the Python reference returns (and, for
input we accept, what zip2zip-compression returns) or raise ValueError / TypeError exactly where
the reference does. A crash, a hang or any other exception is a finding.

    python tests/codec/fuzz_codec.py -atheris_runs=1000000      # the long run
    pytest tests/codec/test_fuzz.py                             # a short run in CI
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import numpy as np
    import zip2zip_compression

    from z2z_vllm.codec import LZWCodec
    from z2z_vllm.codec import reference


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except (ValueError, TypeError) as error:
        return ("error", type(error).__name__)


def check(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    vocab = fdp.ConsumeIntInRange(-1, 40)
    size = fdp.ConsumeIntInRange(-1, 40)
    max_len = fdp.ConsumeIntInRange(-1, 6)
    disabled = [fdp.ConsumeIntInRange(-2, max(vocab, 0) + 2) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    pad = fdp.ConsumeIntInRange(-2, max(vocab, 0) + max(size, 0) + 2) if fdp.ConsumeBool() else None
    ids = [fdp.ConsumeIntInRange(-3, max(vocab, 0) + max(size, 0) + 3) for _ in range(fdp.ConsumeIntInRange(0, 80))]
    cuts = sorted(fdp.ConsumeIntInRange(0, len(ids)) for _ in range(fdp.ConsumeIntInRange(0, 4)))
    as_array = fdp.ConsumeBool()

    valid_config = vocab >= 1 and size >= 0 and max_len >= 1 and all(0 <= d < vocab for d in disabled)
    valid_config = valid_config and (pad is None or 0 <= pad < vocab)
    try:
        codec = LZWCodec(initial_vocab_size=vocab, max_codebook_size=size, max_subtokens=max_len,
                         disabled_ids=disabled, pad_token_id=pad)
    except ValueError:
        assert not valid_config, (vocab, size, max_len, disabled, pad)
        return
    assert valid_config, (vocab, size, max_len, disabled, pad)

    all_disabled = frozenset(disabled) | ({pad} if pad is not None else set())
    settings = reference.Settings(vocab, size, max_len, all_disabled)
    given = np.array(ids, dtype=np.int64) if as_array else ids

    encoded = outcome(codec.encode, given)
    assert encoded == outcome(reference.encode, ids, settings), (encoded, ids)
    if encoded[0] == "ok":
        assert codec.decode(encoded[1]) == ids
        assert codec.encode_batch([ids, ids], num_threads=2) == [encoded[1]] * 2

    decoded = outcome(codec.decode, given)
    expected = outcome(reference.decode, ids, settings)
    assert decoded[0] == expected[0], (decoded, expected, ids)
    if decoded[0] == "ok":
        assert decoded[1] == expected[1][0]
        assert codec.codebook(ids) == expected[1][1]
        anchor = zip2zip_compression.LZWCompressor(vocab, size, max_len, pad if pad is not None else 0,
                                                   sorted(all_disabled) if pad is not None else disabled)
        if pad is not None or 0 in all_disabled or 0 not in ids:  # anchor's pad 0 would be disabled
            anchor_ids, anchor_book = anchor.decode(ids)
            assert decoded[1] == anchor_ids
            assert codec.codebook(ids) == {k: tuple(v) for k, v in anchor_book.to_dict().items()}

    # Incremental: chunks give the one-shot result; a failing chunk leaves the decoder as it was.
    decoder = codec.decoder()
    out: list[int] = []
    for start, stop in zip([0, *cuts], [*cuts, len(ids)]):
        before = (decoder.position, decoder.codebook)
        try:
            out += decoder.decode(ids[start:stop])
        except ValueError:
            assert (decoder.position, decoder.codebook) == before
            assert decoded[0] == "error"
            return
    assert decoded == ("ok", out)


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
