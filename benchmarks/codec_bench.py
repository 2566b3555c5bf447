"""Our LZW codec (z2z_vllm.codec, C++) against the anchor (zip2zip-compression 0.3.4, Rust/PyO3).

Both run in this one process on the same real token streams: the SmolLM2 tokenizer over held-out
Python code from ``z2z_vllm.data`` (raw UTF-8 bytes of this Python's standard library when that
is unavailable, said loudly). Every condition is checked for identical output before it is timed.

    python benchmarks/codec_bench.py                     # full run (~1.5-2 min on 2 cores)
    python benchmarks/codec_bench.py --quick             # smoke run, a few seconds
    python benchmarks/codec_bench.py --json out.json --repeats 7

Figures are base tokens per second (the uncompressed length, so encode and decode rows compare
the same work), each the median of ``--repeats`` samples; a sample times back-to-back calls for at
least ``--min-time`` seconds. Ours and the anchor are sampled alternately so that load from other
processes hits both alike. Run it on a quiet machine: the 2-thread rows need two idle cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import zip2zip_compression as anchor

from z2z_vllm.codec import LZWCodec

from machine import cpu_model, load_average, package_version

BATCH_SIZE = 32
TOKENIZER = "smollm2"
DOMAIN = "code"
MIN_REPEATS = 3  # the report is a median: fewer samples than this is not one

# Targets printed beside the figures (what the native codec was built to reach).
TARGET_SPEEDUP_VS_ANCHOR = 10.0  # single-sequence encode and decode
TARGET_THREAD_SCALING = 1.7  # encode_batch / decode_batch, 2 threads over 1
TARGET_FEED_US_PER_ID = 0.5  # incremental decoder, one id per call


@dataclass(frozen=True)
class Settings:
    lengths: tuple[int, ...]
    codebook_configs: tuple[tuple[int, int], ...]  # (C, M)
    repeats: int
    min_time: float  # seconds per sample
    corpus_bytes: int  # held-out code read for the token stream


CODEBOOK_CONFIGS = ((1024, 4), (2048, 8))
# 32 x 8192 tokens need ~1 MB of code; the stream repeats itself if the corpus comes up short.
FULL = Settings(
    lengths=(512, 2048, 8192), codebook_configs=CODEBOOK_CONFIGS, repeats=5, min_time=0.1, corpus_bytes=1_500_000
)
QUICK = Settings(lengths=(512,), codebook_configs=CODEBOOK_CONFIGS, repeats=3, min_time=0.002, corpus_bytes=100_000)


@dataclass(frozen=True)
class TokenStream:
    ids: np.ndarray  # int32, documents' tokens back to back
    vocab_size: int
    special_ids: tuple[int, ...]
    source: dict  # what the stream is, for the report


# ---------------------------------------------------------------------------------------------
# Token streams


def _smollm2_code_stream(corpus_bytes: int) -> TokenStream:
    from z2z_vllm.data import corpus_documents, load_tokenizer, special_token_ids, vocab_size

    texts = [doc.text for doc in corpus_documents(DOMAIN, split="heldout", max_bytes=corpus_bytes)]
    encodings = load_tokenizer(TOKENIZER).encode_batch_fast(texts, add_special_tokens=False)
    ids = np.concatenate([np.asarray(encoding.ids, dtype=np.int32) for encoding in encodings])
    source = {
        "tokenizer": TOKENIZER,
        "corpus": f"z2z_vllm.data {DOMAIN}, held-out split",
        "documents": len(texts),
        "corpus_bytes": sum(len(text.encode("utf-8")) for text in texts),
    }
    return TokenStream(ids, vocab_size(TOKENIZER), special_token_ids(TOKENIZER), source)


def _stdlib_bytes_stream(corpus_bytes: int, reason: str) -> TokenStream:
    """Fallback: UTF-8 bytes of the standard library's sources as base ids (V = 256 + one pad id)."""
    chunks, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        if total >= corpus_bytes:
            break
        chunk = path.read_bytes()[: corpus_bytes - total]
        chunks.append(chunk)
        total += len(chunk)
    ids = np.frombuffer(b"".join(chunks), dtype=np.uint8).astype(np.int32)
    source = {
        "tokenizer": "FALLBACK raw UTF-8 bytes (V=257)",
        "corpus": "standard library *.py (FALLBACK)",
        "fallback_reason": reason,
        "documents": len(chunks),
        "corpus_bytes": total,
    }
    return TokenStream(ids, 257, (256,), source)


def load_token_stream(corpus_bytes: int) -> TokenStream:
    try:
        return _smollm2_code_stream(corpus_bytes)
    except Exception as error:  # any failure of the data module: measure on bytes, and say so
        reason = f"{type(error).__name__}: {error}"
        print(f"WARNING: SmolLM2 / held-out code unavailable ({reason}); falling back to raw bytes.", file=sys.stderr)
        return _stdlib_bytes_stream(corpus_bytes, reason)


def make_windows(stream: TokenStream, length: int, count: int) -> list[np.ndarray]:
    """``count`` consecutive windows of ``length`` ids (the stream repeated if too short)."""
    needed = length * count
    repeated = np.resize(stream.ids, needed) if len(stream.ids) < needed else stream.ids[:needed]
    return [np.ascontiguousarray(window) for window in repeated.reshape(count, length)]


# ---------------------------------------------------------------------------------------------
# Timing


def _calls_for(call: Callable[[], object], min_time: float) -> int:
    """How many back-to-back calls of ``call`` last at least ``min_time`` seconds."""
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            call()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return calls
        calls = max(calls * 2, int(calls * 1.2 * min_time / max(elapsed, 1e-9)))


def time_interleaved(calls: dict[str, Callable[[], object]], repeats: int, min_time: float) -> dict[str, list[float]]:
    """Seconds per call of each callable, ``repeats`` samples each, the callables alternating."""
    counts = {name: _calls_for(call, min_time) for name, call in calls.items()}  # also warms up
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(counts[name]):
                call()
            samples[name].append((time.perf_counter() - start) / counts[name])
    return samples


# ---------------------------------------------------------------------------------------------
# Rows


@dataclass
class Row:
    """One line of the table: an operation under one (L, C, M), with every sample kept."""

    op: str
    length: int
    codebook_size: int
    max_subtokens: int
    base_tokens_per_call: int
    ours_s: list[float]  # seconds per call, one per repeat
    anchor_s: list[float]
    ids_per_call: int = 0  # compressed ids fed per call (feed rows)
    ours_1thread_s: list[float] = field(default_factory=list)  # 2-thread rows: our 1-thread samples
    target: str = ""
    met: bool | None = None

    @property
    def ours_tokens_per_s(self) -> float:
        return self.base_tokens_per_call / statistics.median(self.ours_s)

    @property
    def anchor_tokens_per_s(self) -> float:
        return self.base_tokens_per_call / statistics.median(self.anchor_s)

    @property
    def speedup(self) -> float:
        return self.ours_tokens_per_s / self.anchor_tokens_per_s

    @property
    def thread_scaling(self) -> float | None:
        if not self.ours_1thread_s:
            return None
        return statistics.median(self.ours_1thread_s) / statistics.median(self.ours_s)

    def us_per_id(self, samples: list[float]) -> float | None:
        return 1e6 * statistics.median(samples) / self.ids_per_call if self.ids_per_call else None

    def summary(self) -> dict:
        return {
            **asdict(self),
            "ours_tokens_per_s": self.ours_tokens_per_s,
            "anchor_tokens_per_s": self.anchor_tokens_per_s,
            "ours_over_anchor": self.speedup,
            "threads_2_over_1": self.thread_scaling,
            "ours_us_per_id": self.us_per_id(self.ours_s),
            "anchor_us_per_id": self.us_per_id(self.anchor_s),
        }


def _with_speedup_target(row: Row) -> Row:
    row.target = f"ours/anchor >= {TARGET_SPEEDUP_VS_ANCHOR:g}x"
    row.met = row.speedup >= TARGET_SPEEDUP_VS_ANCHOR
    return row


def _feed_ours(codec: LZWCodec, compressed: list[int]) -> Callable[[], None]:
    def feed_all() -> None:
        decoder = codec.decoder()
        for token in compressed:
            decoder.feed(token)

    return feed_all


def _feed_anchor(config: anchor.CompressionConfig, compressed: list[int]) -> Callable[[], None]:
    def feed_all() -> None:
        manager = anchor.CodebookManager(config)
        for token in compressed:
            manager.update_codebooks([[token]])

    return feed_all


def _check_same_output(ours: LZWCodec, theirs: anchor.LZWCompressor, windows: list[np.ndarray]) -> None:
    """Time nothing that does not give the anchor's answer."""
    lists = [window.tolist() for window in windows]
    ours_batch = ours.encode_batch(lists)
    if ours_batch != theirs.batch_encode(lists, False, False, None)[0]:
        raise RuntimeError("encode_batch differs from the anchor")
    if not ours.decode(ours_batch[0]) == theirs.decode(ours_batch[0])[0] == lists[0]:
        raise RuntimeError("decode differs from the anchor or from the input")


def _codecs(stream: TokenStream, codebook_size: int, max_subtokens: int):
    """Ours, the anchor's compressor and the anchor's incremental config, for the same (V, C, M)."""
    pad = stream.special_ids[0]  # the anchor insists on a pad id (and disables it); ours gets the same
    disabled = list(stream.special_ids)
    ours = LZWCodec(
        initial_vocab_size=stream.vocab_size,
        max_codebook_size=codebook_size,
        max_subtokens=max_subtokens,
        disabled_ids=disabled,
        pad_token_id=pad,
    )
    theirs = anchor.LZWCompressor(stream.vocab_size, codebook_size, max_subtokens, pad, disabled)
    config = anchor.CompressionConfig(stream.vocab_size, codebook_size, max_subtokens, pad, disabled)
    return ours, theirs, config


def measure_condition(
    stream: TokenStream, length: int, codebook_size: int, max_subtokens: int, settings: Settings
) -> tuple[list[Row], float]:
    """All rows for one (L, C, M), and the compressed/base ratio of its batch."""
    ours, theirs, config = _codecs(stream, codebook_size, max_subtokens)
    windows = make_windows(stream, length, BATCH_SIZE)
    _check_same_output(ours, theirs, windows)
    batch = [window.tolist() for window in windows]
    compressed_batch = ours.encode_batch(batch)
    sequence, sequence_np = batch[0], windows[0]
    compressed = compressed_batch[0]
    compressed_np = np.asarray(compressed, dtype=np.int32)
    ratio = sum(map(len, compressed_batch)) / (length * BATCH_SIZE)

    def timed(calls):
        return time_interleaved(calls, settings.repeats, settings.min_time)

    def row(op, samples, ours_key="ours", per_call=length, **extra):
        return Row(op, length, codebook_size, max_subtokens, per_call, samples[ours_key], samples["anchor"], **extra)

    rows = []
    # The anchor takes lists only: its numpy-row figure is its list call, its best case.
    for op, ours_call, anchor_call in (
        ("encode", lambda: ours.encode(sequence), lambda: theirs.encode(sequence)),
        ("encode numpy int32", lambda: ours.encode(sequence_np, as_numpy=True), lambda: theirs.encode(sequence)),
        ("decode", lambda: ours.decode(compressed), lambda: theirs.decode(compressed)),
        ("decode numpy int32", lambda: ours.decode(compressed_np, as_numpy=True), lambda: theirs.decode(compressed)),
    ):
        rows.append(_with_speedup_target(row(op, timed({"ours": ours_call, "anchor": anchor_call}))))

    compressed_batch_np = [np.asarray(ids, dtype=np.int32) for ids in compressed_batch]
    # Lists in and out cost a serial Python-object conversion per id; the numpy rows show how
    # the native work itself scales with threads.
    for op, ours_batch_call, anchor_batch_call in (
        (
            "encode_batch",
            lambda threads: ours.encode_batch(batch, num_threads=threads),
            lambda: theirs.batch_encode(batch, False, False, None),
        ),
        (
            "encode_batch numpy",
            lambda threads: ours.encode_batch(windows, num_threads=threads, as_numpy=True),
            lambda: theirs.batch_encode(batch, False, False, None),
        ),
        (
            "decode_batch",
            lambda threads: ours.decode_batch(compressed_batch, num_threads=threads),
            lambda: theirs.batch_decode(compressed_batch),
        ),
        (
            "decode_batch numpy",
            lambda threads: ours.decode_batch(compressed_batch_np, num_threads=threads, as_numpy=True),
            lambda: theirs.batch_decode(compressed_batch),
        ),
    ):
        samples = timed(
            {"1": partial(ours_batch_call, 1), "2": partial(ours_batch_call, 2), "anchor": anchor_batch_call}
        )
        per_call = length * BATCH_SIZE
        rows.append(row(f"{op} {BATCH_SIZE} x1 thread", samples, "1", per_call))
        two = row(f"{op} {BATCH_SIZE} x2 threads", samples, "2", per_call, ours_1thread_s=samples["1"])
        two.target, two.met = f"2t/1t >= {TARGET_THREAD_SCALING:g}x", two.thread_scaling >= TARGET_THREAD_SCALING
        rows.append(two)

    samples = timed({"ours": _feed_ours(ours, compressed), "anchor": _feed_anchor(config, compressed)})
    feed = row("feed 1 id/step", samples, ids_per_call=len(compressed))
    feed.target = f"<= {TARGET_FEED_US_PER_ID:g} us/id"
    feed.met = feed.us_per_id(feed.ours_s) <= TARGET_FEED_US_PER_ID
    rows.append(feed)
    return rows, ratio


# ---------------------------------------------------------------------------------------------
# Report





def describe_conditions(stream: TokenStream, settings: Settings) -> dict:
    return {
        "machine": platform.platform(),
        "cpu": cpu_model(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cores_total": os.cpu_count(),
        "load_average_at_start": load_average(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tokenizers": package_version("tokenizers"),
        "z2z-vllm": package_version("z2z-vllm"),
        "zip2zip-compression (anchor)": package_version("zip2zip-compression"),
        **stream.source,
        "vocab_size": stream.vocab_size,
        "disabled_ids": len(stream.special_ids),
        "stream_tokens": int(len(stream.ids)),
        "batch_size": BATCH_SIZE,
        "repeats": settings.repeats,
        "min_time_per_sample_s": settings.min_time,
    }


def _fmt_rate(tokens_per_s: float) -> str:
    return f"{tokens_per_s / 1e6:.2f}"


def _extra_column(row: Row) -> str:
    if row.thread_scaling is not None:
        return f"2t/1t {row.thread_scaling:.2f}x"
    if row.ids_per_call:
        return f"{row.us_per_id(row.ours_s):.3f} vs {row.us_per_id(row.anchor_s):.2f} us/id"
    return ""


def format_table(rows: list[Row]) -> str:
    header = (
        f"{'operation':<26} {'L':>5} {'C/M':>7} {'ours Mtok/s':>11} {'anchor':>9} {'ours/anc':>8}  "
        f"{'':<26} {'target':<22} met"
    )
    lines = [header, "-" * len(header)]
    ordered = sorted(rows, key=lambda row: (_OP_ORDER.index(row.op), row.codebook_size, row.length))
    for row in ordered:
        met = "" if row.met is None else ("ok" if row.met else "MISS")
        lines.append(
            f"{row.op:<26} {row.length:>5} {row.codebook_size:>4}/{row.max_subtokens:<2} "
            f"{_fmt_rate(row.ours_tokens_per_s):>11} {_fmt_rate(row.anchor_tokens_per_s):>9} {row.speedup:>7.1f}x  "
            f"{_extra_column(row):<26} {row.target:<22} {met}"
        )
    return "\n".join(lines)


_OP_ORDER = [
    "encode", "encode numpy int32", "decode", "decode numpy int32",
    f"encode_batch {BATCH_SIZE} x1 thread", f"encode_batch {BATCH_SIZE} x2 threads",
    f"encode_batch numpy {BATCH_SIZE} x1 thread", f"encode_batch numpy {BATCH_SIZE} x2 threads",
    f"decode_batch {BATCH_SIZE} x1 thread", f"decode_batch {BATCH_SIZE} x2 threads",
    f"decode_batch numpy {BATCH_SIZE} x1 thread", f"decode_batch numpy {BATCH_SIZE} x2 threads",
    "feed 1 id/step",
]  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (L=512, short samples)")
    parser.add_argument(
        "--repeats", type=int, help=f"samples per figure, median taken (default {FULL.repeats}, >= {MIN_REPEATS})"
    )
    parser.add_argument("--min-time", type=float, help=f"seconds per sample (default {FULL.min_time})")
    parser.add_argument(
        "--lengths", type=int, nargs="+", metavar="L", help=f"sequence lengths (default {FULL.lengths})"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write conditions and every sample here")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < MIN_REPEATS:
        parser.error(f"--repeats must be >= {MIN_REPEATS}: the figures are medians")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = QUICK if args.quick else FULL
    settings = Settings(
        lengths=tuple(args.lengths or base.lengths),
        codebook_configs=base.codebook_configs,
        repeats=args.repeats or base.repeats,
        min_time=args.min_time or base.min_time,
        corpus_bytes=base.corpus_bytes,
    )
    stream = load_token_stream(settings.corpus_bytes)
    conditions = describe_conditions(stream, settings)
    for key, value in conditions.items():
        print(f"{key:<30} {value}")

    started, rows, ratios = time.perf_counter(), [], {}
    for codebook_size, max_subtokens in settings.codebook_configs:
        for length in settings.lengths:
            condition_rows, ratio = measure_condition(stream, length, codebook_size, max_subtokens, settings)
            rows += condition_rows
            ratios[f"L={length} C={codebook_size} M={max_subtokens}"] = ratio
    conditions["load_average_at_end"] = load_average()
    conditions["seconds"] = round(time.perf_counter() - started, 1)
    print(f"load average at end: {conditions['load_average_at_end']}, {conditions['seconds']} s")
    print("compressed/base of the batches: " + ", ".join(f"{key}: {ratio:.3f}" for key, ratio in ratios.items()))
    print(f"\nmillions of base tokens per second, median of {settings.repeats} samples;")
    print("anchor figure of the batch rows: its batch call (it has no thread knob); of numpy rows: its list call")
    print(format_table(rows))
    missed = [row for row in rows if row.met is False]
    print(f"\ntargets: {sum(row.met is True for row in rows)} met, {len(missed)} missed")

    if args.json:
        report = {"conditions": conditions, "compressed_over_base": ratios, "rows": [row.summary() for row in rows]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
