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


def test_batch_calls_from_many_threads_at_once():
    batches = [random_batch(seed) for seed in range(8)]
    expected = [[CODEC.encode(ids) for ids in batch] for batch in batches]
    results: dict[int, list] = {}

    def work(index: int) -> None:
        for _ in range(20):
            compressed = CODEC.encode_batch(batches[index], num_threads=2)
            assert CODEC.decode_batch(compressed, num_threads=3) == batches[index]
        results[index] = compressed

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(len(batches))] == expected


def test_one_decoder_fed_from_two_threads_stays_consistent():
    ids = random_batch(1, size=1)[0]
    compressed = CODEC.encode(ids)
    decoder = CODEC.decoder()
    lock = threading.Lock()
    cursor = iter(range(len(compressed)))
    out: list[int] = []

    def work() -> None:
        while True:
            with lock:  # ids must arrive in order; the decoder itself serializes its calls
                position = next(cursor, None)
                if position is None:
                    return
                out.extend(decoder.decode(compressed[position]))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert out == ids


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
