"""The codec releases the GIL and runs batches on a persistent worker pool: check that this is
safe from many Python threads at once and after fork()."""

from __future__ import annotations

import os
import random
import sys
import threading

import pytest

from z2z_vllm.codec import LZWCodec

CODEC = LZWCodec(initial_vocab_size=300, max_codebook_size=256, max_subtokens=4, disabled_ids=(0,))


def random_batch(seed: int, size: int = 16) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.choice([1, 2, 3, rng.randrange(300)]) for _ in range(rng.randrange(1, 800))] for _ in range(size)]


def _run_threads(work, count: int) -> None:
    """work(i) on `count` threads at once; re-raises the first error a thread raised."""
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            work(index)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def test_batch_calls_from_many_threads_at_once():
    batches = [random_batch(seed) for seed in range(8)]
    expected = [[CODEC.encode(ids) for ids in batch] for batch in batches]
    results: dict[int, list] = {}

    def work(index: int) -> None:
        for _ in range(20):
            compressed = CODEC.encode_batch(batches[index], num_threads=2)
            assert CODEC.decode_batch(compressed, num_threads=3) == batches[index]
        results[index] = compressed

    _run_threads(work, len(batches))
    assert [results[i] for i in range(len(batches))] == expected


# Base ids only (disabled id 0 among them): they decode to themselves whatever the codebook, so
# each call's result is known in any interleaving. Chunks grow to 20,000 ids, so that a call's
# input is converted (and its buffer reallocated) while another thread's call is decoding.
def _chunks(seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(300) for _ in range(size)] for size in [1, 5000, 3, 20000, 2, 12000, 7, 20000]]


def test_one_decoder_shared_by_threads_without_a_lock():
    decoder = LZWCodec(initial_vocab_size=300, max_codebook_size=10**6, max_subtokens=4, disabled_ids=(0,)).decoder()
    chunks = [_chunks(seed) for seed in range(4)]
    mismatches: list[int] = []

    def work(index: int) -> None:
        for _ in range(3):
            for chunk in chunks[index]:
                if decoder.decode(chunk) != chunk:
                    mismatches.append(index)

    _run_threads(work, len(chunks))
    assert mismatches == []
    assert decoder.position == 3 * sum(len(chunk) for thread in chunks for chunk in thread)


def test_entries_created_by_concurrent_feeds_go_to_the_caller_that_made_them():
    codec = LZWCodec(initial_vocab_size=300, max_codebook_size=10**6, max_subtokens=4, disabled_ids=(0,))
    decoder = codec.decoder()
    chunks = [_chunks(seed) for seed in range(4)]
    created: list[tuple[int, tuple[int, ...]]] = []

    def work(index: int) -> None:
        for chunk in chunks[index]:
            created.extend(decoder.feed(chunk))  # list.extend is atomic under the GIL

    _run_threads(work, len(chunks))
    # Every entry reported exactly once, with the content the decoder holds for it.
    assert sorted(created) == sorted(decoder.codebook.items())
    assert len(created) == decoder.num_entries


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform != "linux", reason="needs fork")
def test_worker_pool_works_in_a_forked_child():
    batch = random_batch(2)
    expected = CODEC.encode_batch(batch, num_threads=2)  # the parent's pool now has threads
    pid = os.fork()
    if pid == 0:  # child: the parent's worker threads do not exist here
        ok = CODEC.encode_batch(batch, num_threads=2) == expected
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
