"""Host time per step of the serving bookkeeping alone: :class:`z2z_vllm.vllm.slots.HyperSlots`
without a model, Python host path and native host path side by side in one process.

Each round gives ``requests`` new requests a prompt of ``prompt_len`` compressed ids (one
``begin_step`` over all of them: prefill), then ``decode_steps`` steps of one new id each
(decode). The streams are LZW-compressed code (the SmolLM2 tokenizer over held-out code from
``z2z_vllm.data``; raw bytes if that is missing); V=49,152, C=1,024, M=4. The encoders return
zeros (no model): what is timed is the codebook work, the row look-ups and the tensor writes.
Torch runs on one thread by default: the row tensors live on the CPU here (on the model's
device in serving), and idle OpenMP workers spinning after each small op took the main
thread's core on a loaded 2-core machine, up to 40 ms a step.

    python benchmarks/slots_bench.py --json out.json
    python benchmarks/slots_bench.py --quick

Targets (issue 14): decode <= 2 us per request per step, prefill <= 1 us per prompt token.

Memory: the peak rows of the shared row table (:class:`z2z_vllm.vllm.slots.RowTable`: rows
referenced by some slot's index, i.e. distinct entries in flight, and the table's capacity after
doubling), against the ``S x C`` rows per table of one-row-per-slot-entry tensors, and what
both come to for SmolLM2-135M (H=576) and Llama-3-8B (H=4096) in bf16: 2 tables (output and
input rows) x rows x H x 2 bytes, plus the index (S x C int32) for the shared table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from z2z_vllm.codec import LZWCodec
from z2z_vllm.vllm.slots import HyperSlots, StepBatch

from machine import cpu_model, load_average, package_version, write_report

V, C, M = 49_152, 1_024, 4
HIDDEN = 8  # small H keeps the tables small; writes are not the cost
MODEL_HIDDEN = {"smollm2_135m": 576, "llama3_8b": 4096}  # for the bytes the tables would take, bf16
HOST_PATHS = {"python": False, "native": True}  # HyperSlots(native_host=...)
DECODE_TARGET_US, PREFILL_TARGET_US = 2.0, 1.0


@dataclass(frozen=True)
class Settings:
    request_counts: tuple[int, ...]
    prompt_len: int
    decode_steps: int
    rounds: int
    corpus_bytes: int


FULL = Settings(request_counts=(32, 256, 1024), prompt_len=512, decode_steps=20, rounds=2, corpus_bytes=1_500_000)
QUICK = Settings(request_counts=(4,), prompt_len=32, decode_steps=3, rounds=1, corpus_bytes=20_000)


def load_base_ids(corpus_bytes: int) -> tuple[np.ndarray, tuple[int, ...], dict]:
    """Base ids of held-out code (SmolLM2), or UTF-8 bytes where the data sources are missing."""
    try:
        from z2z_vllm.data import corpus_documents, load_tokenizer, special_token_ids

        texts = [doc.text for doc in corpus_documents("code", split="heldout", max_bytes=corpus_bytes)]
        encodings = load_tokenizer("smollm2").encode_batch_fast(texts, add_special_tokens=False)
        ids = np.concatenate([np.asarray(encoding.ids, dtype=np.int32) for encoding in encodings])
        print(f"{len(ids):,} base ids of held-out code; each request reads {M} x (prompt + decode steps) of them")
        return ids, tuple(special_token_ids("smollm2")), {"tokens": "smollm2 over z2z_vllm.data code, held-out"}
    except Exception as error:  # any missing source: measure on bytes, and say so
        print(f"WARNING: SmolLM2 / held-out code unavailable ({error}); using UTF-8 bytes", file=sys.stderr)
        text = Path(np.__file__).parent.joinpath("__init__.py").read_bytes() * 64
        return np.frombuffer(text[:corpus_bytes], dtype=np.uint8).astype(np.int32), (), {"tokens": "FALLBACK bytes"}


def compressed_streams(codec: LZWCodec, base_ids: np.ndarray, count: int, length: int) -> list[list[int]]:
    """``count`` compressed streams of ``length`` ids, from consecutive windows of the base ids
    (the base ids repeated if too short; M base ids per compressed id at most)."""
    window = M * length
    base = np.resize(base_ids, window * count).reshape(count, window)
    streams = codec.encode_batch(list(base))
    short = [len(s) for s in streams if len(s) < length]
    if short:
        raise ValueError(f"a window compressed to {min(short)} ids, fewer than {length}")
    return [s[:length] for s in streams]


def zero_encoder(ids: torch.Tensor) -> torch.Tensor:
    return torch.zeros(len(ids), HIDDEN)


def make_slots(codec: LZWCodec, num_slots: int, native_host: bool) -> HyperSlots:
    return HyperSlots(
        codec=codec, num_slots=num_slots, hidden_size=HIDDEN, encode_inputs=zero_encoder,
        encode_outputs=zero_encoder, device=torch.device("cpu"), dtype=torch.float32, native_host=native_host,
    )  # fmt: skip


def measure(
    slots: HyperSlots, streams: list[list[int]], settings: Settings, round_index: int
) -> tuple[float, list[float], int]:
    """Seconds of the prefill step and of each decode step of one round of requests, and the
    most table rows referenced after a step (distinct entries in flight). The requests' token
    lists are rows of one array, as in vLLM's input batch; building a step's arrays is timed."""
    P, R = settings.prompt_len, len(streams)
    names = [f"round{round_index}-{i}" for i in range(R)]
    token_ids = np.array(streams, dtype=np.int32)  # ids past a step's range are not read

    def step_batch(begin: int, end: int) -> StepBatch:
        return StepBatch(names, token_ids, np.full(R, max(end, P)), np.full(R, begin), np.full(R, end))

    started = time.perf_counter()
    slots.begin_step(step_batch(0, P))
    prefill_s = time.perf_counter() - started
    peak_rows = slots.table.index.num_referenced
    decode_s = []
    for step in range(settings.decode_steps):
        started = time.perf_counter()
        slots.begin_step(step_batch(P + step, P + step + 1))
        decode_s.append(time.perf_counter() - started)
        peak_rows = max(peak_rows, slots.table.index.num_referenced)
    for name in names:
        slots.release(name)
    return prefill_s, decode_s, peak_rows


def table_memory(requests: int, peak_rows: int, capacity: int) -> dict:
    """Rows and bf16 bytes of the shared table against S x C rows per table (S = requests)."""
    old_rows = requests * C
    memory = {"table_peak_rows": peak_rows, "table_capacity": capacity, "rows_before": old_rows,
              "peak_fraction": peak_rows / old_rows}  # fmt: skip
    for model, hidden in MODEL_HIDDEN.items():
        memory[f"bytes_before_{model}"] = 2 * old_rows * hidden * 2
        memory[f"bytes_peak_{model}"] = 2 * peak_rows * hidden * 2 + old_rows * 4
        memory[f"bytes_capacity_{model}"] = 2 * capacity * hidden * 2 + old_rows * 4
    return memory


def run(settings: Settings, codec: LZWCodec, base_ids: np.ndarray) -> list[dict]:
    rows = []
    for count in settings.request_counts:
        streams = compressed_streams(codec, base_ids, count, settings.prompt_len + settings.decode_steps)
        samples = {path: ([], []) for path in HOST_PATHS}
        slots = {path: make_slots(codec, count, native) for path, native in HOST_PATHS.items()}
        peak_rows = 0
        for round_index in range(settings.rounds):
            for path in HOST_PATHS:  # interleaved, so that load changes hit both paths alike
                prefill_s, decode_s, peak = measure(slots[path], streams, settings, round_index)
                samples[path][0].append(prefill_s)
                samples[path][1].extend(decode_s)
                peak_rows = max(peak_rows, peak)
        memory = table_memory(count, peak_rows, slots["native"].table.index.capacity)
        del slots
        for path, (prefill_s, decode_s) in samples.items():
            prefill, decode = statistics.median(prefill_s), statistics.median(decode_s)
            rows.append({
                "requests": count, "host_path": path,
                "decode_ms_per_step": 1e3 * decode, "decode_us_per_request": 1e6 * decode / count,
                "prefill_ms_per_step": 1e3 * prefill,
                "prefill_us_per_prompt_token": 1e6 * prefill / (count * settings.prompt_len),
                "decode_samples_s": decode_s, "prefill_samples_s": prefill_s, **memory,
            })  # fmt: skip
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\nmedians; targets: decode <= {DECODE_TARGET_US} us/request, prefill <= {PREFILL_TARGET_US} us/prompt token")
    print(f"{'requests':>8} {'host path':>9} | {'decode ms/step':>14} {'us/request':>10} | {'prefill ms/step':>15} {'us/token':>8}")
    for row in rows:
        print(
            f"{row['requests']:>8} {row['host_path']:>9} | {row['decode_ms_per_step']:>14.3f} "
            f"{row['decode_us_per_request']:>10.2f} | {row['prefill_ms_per_step']:>15.1f} "
            f"{row['prefill_us_per_prompt_token']:>8.3f}"
        )
    print("\nshared row table: peak rows referenced (distinct entries in flight) vs S x C; bf16 bytes of")
    print("output + input rows (+ index) for SmolLM2-135M (H=576) / Llama-3-8B (H=4096), before -> peak (capacity)")
    for row in rows:
        if row["host_path"] != "native":
            continue
        sizes = "; ".join(
            f"{model} {_gb(row[f'bytes_before_{model}'])} -> {_gb(row[f'bytes_peak_{model}'])} "
            f"({_gb(row[f'bytes_capacity_{model}'])})"
            for model in MODEL_HIDDEN
        )
        print(
            f"{row['requests']:>8} requests: {row['table_peak_rows']:,} rows of {row['rows_before']:,} "
            f"({100 * row['peak_fraction']:.1f} %), capacity {row['table_capacity']:,}; {sizes}"
        )
    by_key = {(row["requests"], row["host_path"]): row for row in rows}
    for count in sorted({row["requests"] for row in rows}):
        python, native = by_key[count, "python"], by_key[count, "native"]
        print(
            f"{count:>8} requests: native is {python['decode_ms_per_step'] / native['decode_ms_per_step']:.1f}x "
            f"faster in decode, {python['prefill_ms_per_step'] / native['prefill_ms_per_step']:.1f}x in prefill"
        )


def _gb(n: int) -> str:
    return f"{n / 1e9:.3f} GB"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny knobs: a smoke run of a few seconds")
    parser.add_argument("--requests", type=int, nargs="+", help="request counts (default 32 256 1024)")
    parser.add_argument("--rounds", type=int, help="rounds of prefill + decode steps per path (default 2)")
    parser.add_argument("--corpus-bytes", type=int, help="held-out code to read (default 1.5 MB; windows repeat past it)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write conditions and every sample here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.requests:
        settings = Settings(**{**settings.__dict__, "request_counts": tuple(args.requests)})
    if args.rounds:
        settings = Settings(**{**settings.__dict__, "rounds": args.rounds})
    if args.corpus_bytes:
        settings = Settings(**{**settings.__dict__, "corpus_bytes": args.corpus_bytes})
    torch.set_num_threads(args.torch_threads)
    base_ids, special_ids, source = load_base_ids(settings.corpus_bytes)
    codec = LZWCodec(initial_vocab_size=V, max_codebook_size=C, max_subtokens=M, disabled_ids=special_ids)
    conditions = {
        "machine": platform.platform(), "cpu": cpu_model(), "load_average_at_start": load_average(),
        "torch": package_version("torch"), "torch_threads": torch.get_num_threads(),
        "V": V, "C": C, "M": M, "hidden_size": HIDDEN, **source, **settings.__dict__,
    }  # fmt: skip
    for key, value in conditions.items():
        print(f"{key:<24} {value}")
    started = time.perf_counter()
    rows = run(settings, codec, base_ids)
    conditions["load_average_at_end"] = load_average()
    conditions["seconds"] = round(time.perf_counter() - started, 1)
    print(f"load average at end: {conditions['load_average_at_end']}, {conditions['seconds']} s")
    print_table(rows)
    if args.json:
        write_report(args.json, {"conditions": conditions, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
