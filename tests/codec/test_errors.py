"""Bad input raises a catchable ValueError / TypeError naming the value and position.

zip2zip-compression 0.3.4 panics (PanicException, not an Exception) or returns garbage on
several of these; we diverge from it on purpose, only on invalid input.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from z2z_vllm.codec import LZWCodec
from z2z_vllm.codec import reference

V, C, M = 10, 6, 3
DISABLED = (9,)


@pytest.fixture
def codec() -> LZWCodec:
    return LZWCodec(initial_vocab_size=V, max_codebook_size=C, max_subtokens=M, disabled_ids=DISABLED)


SETTINGS = reference.Settings(V, C, M, frozenset(DISABLED))

# [1, 2] defines 10 = (1, 2) while reading 2; the next id to be defined is 11.
BAD_STREAMS = [
    pytest.param([10], "id 10 at position 0", id="hyper id first"),
    pytest.param([1, 2, 9, 11], "id 11 at position 3", id="undefined after disabled"),
    pytest.param([1, 9, 11], "id 11 at position 2", id="kwkwk right after disabled"),
    pytest.param([1, 2, 13], "id 13 at position 2", id="skips ahead of next id"),
    pytest.param([1, 2, 16], "id 16 at position 2", id="id >= V+C"),
    pytest.param([1, 2, 10**6], "id 1000000 at position 2", id="far out of range"),
    pytest.param([1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 16], "id 16 at position", id="beyond a full codebook"),
]


@pytest.mark.parametrize("stream, message", BAD_STREAMS)
def test_decode_rejects_undefined_hypertokens(codec, stream, message):
    with pytest.raises(ValueError, match=message):
        codec.decode(stream)
    with pytest.raises(ValueError, match=message):
        codec.codebook(stream)
    with pytest.raises(ValueError, match=message):
        reference.decode(stream, SETTINGS)


def test_kwkwk_is_refused_where_it_cannot_occur(codec):
    # [1, 2, 10, 11] defines 10=(1,2), 11=(2,1), 12=(1,2,2). After the disabled 9, the M-long 12
    # starts afresh and defines nothing, so the next id, 13, cannot be used yet.
    assert codec.codebook([1, 2, 10, 11])[12] == (1, 2, 2)
    stream = [1, 2, 10, 11, 9, 12, 13]
    with pytest.raises(ValueError, match="id 13 at position 6 .*max_subtokens"):
        codec.decode(stream)
    with pytest.raises(ValueError, match="id 13 at position 6 .*max_subtokens"):
        reference.decode(stream, SETTINGS)
    # Whereas after a shorter id, the id being defined is valid (KwKwK): 13 = (2,1) + (2,).
    assert codec.decode([1, 2, 10, 11, 9, 11, 13]) == [1, 2, 1, 2, 2, 1, 9, 2, 1, 2, 1, 2]


def test_negative_ids(codec):
    with pytest.raises(ValueError, match="id -1 at position 2 is negative"):
        codec.decode([1, 2, -1])
    with pytest.raises(ValueError, match="id -5 at position 0 is negative"):
        codec.encode([-5])


def test_encode_rejects_hypertoken_ids(codec):
    with pytest.raises(ValueError, match="id 11 at position 1 is not a base token id.*cannot be encoded"):
        codec.encode([1, 11])
    with pytest.raises(ValueError, match="id 11 at position 1"):
        reference.encode([1, 11], SETTINGS)


@pytest.mark.parametrize("bad", [[1.0], [1, "2"], [None], [True], "abc", b"ab", 3.5, [[1, 2]]])
def test_non_integer_input_is_a_type_error(codec, bad):
    with pytest.raises(TypeError):
        codec.encode(bad)
    with pytest.raises(TypeError):
        codec.decode(bad)


def test_non_integer_arrays_are_type_errors(codec):
    np = pytest.importorskip("numpy")
    with pytest.raises(TypeError, match="integer"):
        codec.encode(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="1-D"):
        codec.encode(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="id -3 at position 1 is negative"):
        codec.encode(np.array([1, -3]))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(max_subtokens=0), ValueError, "max_subtokens must be >= 1, got 0"),
        (dict(max_codebook_size=-1), ValueError, "max_codebook_size must be >= 0, got -1"),
        (dict(initial_vocab_size=0), ValueError, "initial_vocab_size must be >= 1, got 0"),
        (dict(initial_vocab_size=2**31), ValueError, "2\\*\\*31"),
        (dict(pad_token_id=12), ValueError, "pad_token_id 12 .*hypertoken range"),
        (dict(pad_token_id=-1), ValueError, "pad_token_id -1"),
        (dict(pad_token_id=1.5), TypeError, "pad_token_id"),
        (dict(disabled_ids=[3, 10]), ValueError, "disabled id 10 at position 1"),
        (dict(disabled_ids=[-2]), ValueError, "disabled_ids: id -2 at position 0 is negative"),
        (dict(max_subtokens=2.0), TypeError, None),
    ],
)
def test_bad_configurations(kwargs, error, message):
    config = dict(initial_vocab_size=V, max_codebook_size=C, max_subtokens=M) | kwargs
    with pytest.raises(error, match=message):
        LZWCodec(**config)


def test_constructor_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        LZWCodec(V, C, M)


def test_bad_num_threads(codec):
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        codec.encode_batch([[1, 2]], num_threads=0)


def test_batch_errors_name_the_sequence(codec):
    with pytest.raises(ValueError, match="sequence 2: id 15 at position 1"):
        codec.decode_batch([[1], [2], [3, 15], [4, 15]], num_threads=2)
    with pytest.raises(TypeError, match="sequence 1: id at position 0 has type float"):
        codec.encode_batch([[1], [2.0]])


def test_failed_feed_changes_nothing(codec):
    decoder = codec.decoder()
    decoder.feed([1, 2, 10])
    before = (decoder.position, decoder.codebook)
    for bad in ([1, 2, 3, 16], [1, 9, 14], [16], [1, -1]):
        with pytest.raises(ValueError):
            decoder.feed(bad)
        assert (decoder.position, decoder.codebook) == before
    # ...and it goes on exactly as a fresh decoder fed the same valid ids would.
    assert decoder.decode([11, 1]) == codec.decoder().decode([1, 2, 10, 11, 1])[4:]
    assert decoder.codebook == codec.codebook([1, 2, 10, 11, 1])


def test_pad_id_is_disabled_like_the_reference():
    codec = LZWCodec(initial_vocab_size=V, max_codebook_size=C, max_subtokens=M, pad_token_id=0)
    assert codec.encode([1, 2, 0, 1, 2]) == [1, 2, 0, 10]
    assert codec.disabled_ids == () and codec.pad_token_id == 0


def test_fitting_suffix_start_rejects_what_encode_rejects(codec):
    with pytest.raises(ValueError, match="id 11 at position 1 is not a base token id"):
        codec.fitting_suffix_start([1, 11, 2], 1)
    with pytest.raises(ValueError, match="max_length must be >= 0, got -1"):
        codec.fitting_suffix_start([1, 2], -1)


# Run in a child with its address space capped: each KwKwK id defines an entry one base id
# longer than the last, so decoding 200,000 of them needs ~80 GB and the allocator fails in
# whichever worker thread holds the longest sequences.
_OUT_OF_MEMORY_IN_WORKERS = """
import resource
from z2z_vllm.codec import LZWCodec
with open("/proc/self/status") as status:
    in_use = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (in_use + (1 << 30), in_use + (1 << 30)))
n = 200_000
codec = LZWCodec(initial_vocab_size=2, max_codebook_size=n, max_subtokens=n)
stream = [1] + list(range(2, n + 2))
try:
    codec.decode_batch([[1, 0], [0, 1], stream, stream], num_threads=4)
except MemoryError:
    print("MemoryError")
print(codec.decode_batch([[1, 0], [1, 2]], num_threads=2))  # the pool still works
"""


def test_out_of_memory_in_a_worker_thread_is_a_memory_error():
    # An exception other than a codec error escaped the worker thread and ended the process.
    child = subprocess.run(
        [sys.executable, "-c", _OUT_OF_MEMORY_IN_WORKERS], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.split("\n")[:2] == ["MemoryError", "[[1, 0], [1, 1, 1]]"]
