"""How much LZW hypertokens shorten real text: tokenizers x domains, beside the paper's figures.

For each tokenizer (llama3, qwen2.5, gpt2, smollm2) and domain (code, prose, math, multilingual,
structured, biomedical) of ``z2z_vllm.data``: the held-out documents are tokenized (no special
tokens added), laid back to back and cut into 2048-token windows; each window is compressed on
its own (fresh codebook, the tokenizer's special tokens disabled), as a 2048-token training
sample or prompt would be. Reported per cell: bytes per base token, and per (M, C) the bytes per
z2z token and the sequence-length reduction 1 - compressed/base.

    python benchmarks/compression_report.py                       # ~1 min on 2 quiet cores
    python benchmarks/compression_report.py --json out.json --png out.png
    python benchmarks/compression_report.py --quick               # smoke run, ~10 s
    python benchmarks/compression_report.py --max-subtokens 2 3 4 5 --max-bytes 4000000

The paper (Geng et al. 2025, Table 9, M=3) measured other corpora (its code / math / chat /
multilingual / web mix) with an unstated codebook size; its figures are printed beside ours for
orientation, matched by domain where one exists (our "prose", the Brown corpus, stands next to its
"web"; "chat" has no counterpart here). Its Qwen-2 tokenizer is Qwen2.5's.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from z2z_vllm.codec import LZWCodec

TOKENIZERS = ("llama3", "qwen2.5", "gpt2", "smollm2")
DOMAINS = ("code", "prose", "math", "multilingual", "structured", "biomedical")
WINDOW = 2048
DEFAULT_MAX_BYTES = 2_000_000  # per domain; prose and multilingual hold less held-out text than this
QUICK_MAX_BYTES = 20_000

# Paper Table 9: sequence-length reduction (%) at M=3, keyed by *our* domain where one matches.
PAPER_REDUCTION_M3 = {
    "llama3": {"code": 34.9, "math": 32.5, "multilingual": 19.1, "prose": 14.8},
    "qwen2.5": {"code": 35.5, "math": 37.8, "multilingual": 19.6, "prose": 15.4},
}
PAPER_REDUCTION_CHAT_M3 = {"llama3": 20.3, "qwen2.5": 20.3}  # no counterpart domain here
PAPER_DOMAIN_NAME = {"code": "code", "math": "math", "multilingual": "multilingual", "prose": "web"}
# Paper ablation: compressed/base (%) at 2048 context, by M.
PAPER_COMPRESSED_OVER_BASE_BY_M = {2: 75.3, 3: 71.2, 4: 68.9, 5: 68.4}


@dataclass
class ConfigResult:
    max_subtokens: int
    codebook_size: int
    compressed_tokens: int
    window_base_tokens: int
    compressed_over_base: float
    reduction_pct: float
    bytes_per_z2z_token: float


@dataclass
class Cell:
    tokenizer: str
    domain: str
    documents: int = 0
    bytes: int = 0
    base_tokens: int = 0
    windows: int = 0
    bytes_per_base_token: float = 0.0
    configs: list[ConfigResult] = field(default_factory=list)
    skipped: str | None = None  # why, when a source is missing

    def config(self, max_subtokens: int, codebook_size: int) -> ConfigResult:
        return next(c for c in self.configs if (c.max_subtokens, c.codebook_size) == (max_subtokens, codebook_size))


# ---------------------------------------------------------------------------------------------
# Measuring


def windows_of(ids: np.ndarray, window: int) -> list[np.ndarray]:
    """Full windows only (a short tail would understate compression), or the whole stream if shorter."""
    full = len(ids) // window
    if full == 0:
        return [ids] if len(ids) else []
    return list(ids[: full * window].reshape(full, window))


def measure_cell(name: str, tokenizer, vocab_size: int, special_ids: tuple[int, ...], domain: str, args) -> Cell:
    from z2z_vllm.data import corpus_documents

    texts = [doc.text for doc in corpus_documents(domain, split="heldout", max_bytes=args.max_bytes)]
    encodings = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    ids = np.concatenate([np.zeros(0, np.int32), *(np.asarray(encoding.ids, dtype=np.int32) for encoding in encodings)])
    cell = Cell(name, domain, documents=len(texts), bytes=sum(len(text.encode("utf-8")) for text in texts))
    cell.base_tokens = len(ids)
    cell.bytes_per_base_token = cell.bytes / cell.base_tokens if cell.base_tokens else 0.0
    windows = windows_of(ids, args.window)
    cell.windows = len(windows)
    window_tokens = sum(map(len, windows))
    for max_subtokens, codebook_size in itertools.product(args.max_subtokens, args.codebook_sizes):
        codec = LZWCodec(
            initial_vocab_size=vocab_size,
            max_codebook_size=codebook_size,
            max_subtokens=max_subtokens,
            disabled_ids=special_ids,
        )
        compressed = sum(map(len, codec.encode_batch(windows, num_threads=args.threads, as_numpy=True)))
        ratio = compressed / window_tokens if window_tokens else 1.0
        cell.configs.append(
            ConfigResult(
                max_subtokens=max_subtokens,
                codebook_size=codebook_size,
                compressed_tokens=compressed,
                window_base_tokens=window_tokens,
                compressed_over_base=ratio,
                reduction_pct=100.0 * (1.0 - ratio),
                # Bytes per base token times base tokens per z2z token, over the same text.
                bytes_per_z2z_token=cell.bytes_per_base_token / ratio if ratio else 0.0,
            )
        )
    return cell


def measure_tokenizer(name: str, args) -> list[Cell]:
    from z2z_vllm.data import DataSourceMissing, load_tokenizer, special_token_ids, vocab_size

    try:
        tokenizer, vocab, specials = load_tokenizer(name), vocab_size(name), special_token_ids(name)
    except DataSourceMissing as missing:
        return [Cell(name, domain, skipped=str(missing)) for domain in args.domains]
    cells = []
    for domain in args.domains:
        try:
            cell = measure_cell(name, tokenizer, vocab, specials, domain, args)
        except DataSourceMissing as missing:
            cell = Cell(name, domain, skipped=str(missing))
        cells.append(cell)
        print(f"  {name:<8} {domain:<13} {cell.base_tokens:>9,} base tokens", file=sys.stderr, flush=True)
    return cells


# ---------------------------------------------------------------------------------------------
# Report


def _configs(args) -> list[tuple[int, int]]:
    return list(itertools.product(args.max_subtokens, args.codebook_sizes))


def format_main_table(cells: list[Cell], args) -> str:
    """bytes/base token, then per (M, C): bytes/z2z token and reduction %."""
    configs = _configs(args)
    head1 = f"{'tokenizer':<9} {'domain':<13} {'base tok':>9} {'B/tok':>6}"
    head1 += "".join(f" | {f'M={m} C={c}':^14}" for m, c in configs)
    head2 = f"{'':<9} {'':<13} {'':>9} {'base':>6}" + " | B/z2z  red.%" * len(configs)
    lines = [head1, head2, "-" * len(head1)]
    for cell in cells:
        if cell.skipped:
            lines.append(f"{cell.tokenizer:<9} {cell.domain:<13} skipped: {cell.skipped}")
            continue
        line = f"{cell.tokenizer:<9} {cell.domain:<13} {cell.base_tokens:>9,} {cell.bytes_per_base_token:>6.2f}"
        for m, c in configs:
            result = cell.config(m, c)
            line += f" | {result.bytes_per_z2z_token:>5.2f} {result.reduction_pct:>6.1f}"
        lines.append(line)
    return "\n".join(lines)


def format_paper_comparison(cells: list[Cell], args) -> str:
    """Our M=3 reductions next to paper Table 9, for the tokenizers and domains it covers."""
    if 3 not in args.max_subtokens:
        return "(paper Table 9 is at M=3: add 3 to --max-subtokens to compare)"
    by_key = {(cell.tokenizer, cell.domain): cell for cell in cells if not cell.skipped}
    ours_heads = "".join(f" {f'ours C={c}':>11}" for c in args.codebook_sizes)
    head = f"{'tokenizer':<9} {'ours':<13} {'paper':<13}{ours_heads} {'paper M=3':>10}"
    lines = ["sequence-length reduction %, M=3: ours vs paper Table 9 (different corpora)", head, "-" * len(head)]
    for tokenizer, paper in PAPER_REDUCTION_M3.items():
        for domain, paper_value in paper.items():
            cell = by_key.get((tokenizer, domain))
            if cell is None:
                continue
            ours = "".join(f" {cell.config(3, c).reduction_pct:>11.1f}" for c in args.codebook_sizes)
            lines.append(f"{tokenizer:<9} {domain:<13} {PAPER_DOMAIN_NAME[domain]:<13}{ours} {paper_value:>10.1f}")
        if any(cell.tokenizer == tokenizer for cell in cells):
            chat = PAPER_REDUCTION_CHAT_M3[tokenizer]
            no_ours = " " * 12 * len(args.codebook_sizes)
            lines.append(f"{tokenizer:<9} {'-':<13} {'chat':<13}{no_ours} {chat:>10.1f}")
    return "\n".join(lines)


def mean_compressed_over_base(
    cells: list[Cell], tokenizer: str, max_subtokens: int, codebook_size: int
) -> float | None:
    ratios = [
        cell.config(max_subtokens, codebook_size).compressed_over_base
        for cell in cells
        if cell.tokenizer == tokenizer and not cell.skipped and cell.windows
    ]
    return 100.0 * statistics.mean(ratios) if ratios else None


def format_m_ablation(cells: list[Cell], args) -> str:
    """Mean over domains of compressed/base, per tokenizer and M, beside the paper's M ablation."""
    columns = [(m, c) for c in args.codebook_sizes for m in args.max_subtokens]
    head = f"{'tokenizer':<9}" + "".join(f" {f'M={m} C={c}':>12}" for m, c in columns)
    lines = ["compressed/base %, mean over domains (paper ablation: one mix, 2048 context)", head, "-" * len(head)]
    for tokenizer in dict.fromkeys(cell.tokenizer for cell in cells):
        values = [mean_compressed_over_base(cells, tokenizer, m, c) for m, c in columns]
        lines.append(f"{tokenizer:<9}" + "".join(f" {v:>12.1f}" if v is not None else f" {'-':>12}" for v in values))
    paper = [PAPER_COMPRESSED_OVER_BASE_BY_M.get(m) for m, _ in columns]
    lines.append(f"{'paper':<9}" + "".join(f" {v:>12.1f}" if v is not None else f" {'-':>12}" for v in paper))
    return "\n".join(lines)


def plot(cells: list[Cell], args, path: Path) -> None:
    """One panel per tokenizer: reduction % per domain, a bar per (M, C); paper M=3 marked."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    tokenizers = list(dict.fromkeys(cell.tokenizer for cell in cells))
    configs = _configs(args)
    columns = 2 if len(tokenizers) > 1 else 1
    rows = -(-len(tokenizers) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(7 * columns, 3.6 * rows), squeeze=False, sharey=True)
    width = 0.8 / len(configs)
    for axis, tokenizer in zip(axes.flat, tokenizers, strict=False):  # a grid may have a spare panel
        by_domain = {cell.domain: cell for cell in cells if cell.tokenizer == tokenizer and not cell.skipped}
        positions = np.arange(len(args.domains))
        for index, (m, c) in enumerate(configs):
            heights = [by_domain[d].config(m, c).reduction_pct if d in by_domain else 0.0 for d in args.domains]
            axis.bar(positions + (index - (len(configs) - 1) / 2) * width, heights, width, label=f"M={m} C={c}")
        paper = PAPER_REDUCTION_M3.get(tokenizer, {})
        marked = [(i, paper[d]) for i, d in enumerate(args.domains) if d in paper]
        if marked:
            xs, ys = zip(*marked, strict=True)
            axis.scatter(xs, ys, marker="_", s=600, color="black", zorder=3, label="paper M=3 (prose: its web)")
        axis.set_title(tokenizer)
        axis.set_xticks(positions, args.domains, rotation=20)
        axis.set_ylabel("length reduction %")
        axis.grid(axis="y", alpha=0.3)
    for axis in list(axes.flat)[len(tokenizers) :]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    figure.suptitle(f"LZW hypertokens: sequence-length reduction, {args.window}-token windows, held-out text")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


# ---------------------------------------------------------------------------------------------
# Entry point


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizers", nargs="+", default=list(TOKENIZERS), metavar="NAME")
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=DOMAINS, metavar="DOMAIN")
    parser.add_argument("--max-bytes", type=int, help=f"held-out bytes per domain (default {DEFAULT_MAX_BYTES:,})")
    parser.add_argument("--max-subtokens", type=int, nargs="+", default=[3, 4], metavar="M")
    parser.add_argument("--codebook-sizes", type=int, nargs="+", default=[1024, 2048], metavar="C")
    parser.add_argument("--window", type=int, default=WINDOW, help=f"base tokens per window (default {WINDOW})")
    parser.add_argument("--threads", type=int, default=None, help="codec threads (default: all cores)")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_MAX_BYTES:,} bytes per domain")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every figure here")
    parser.add_argument("--png", type=Path, metavar="PATH", help="write a bar chart here (matplotlib)")
    args = parser.parse_args(argv)
    if args.max_bytes is None:
        args.max_bytes = QUICK_MAX_BYTES if args.quick else DEFAULT_MAX_BYTES
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    cells = [cell for name in args.tokenizers for cell in measure_tokenizer(name, args)]
    conditions = {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "split": "heldout",
        "max_bytes_per_domain": args.max_bytes,
        "window": args.window,
        "special_tokens": "disabled (never merged)",
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"held-out text, {args.max_bytes:,} bytes max per domain, {args.window}-token windows, each compressed alone")
    print("B/tok = UTF-8 bytes per token; red.% = 1 - compressed/base\n")
    print(format_main_table(cells, args))
    print()
    print(format_paper_comparison(cells, args))
    print()
    print(format_m_ablation(cells, args))
    print(f"\n({conditions['seconds']} s)")

    if args.json:
        report = {
            "conditions": conditions,
            "cells": [asdict(cell) for cell in cells],
            "paper": {
                "reduction_pct_m3": PAPER_REDUCTION_M3,
                "reduction_pct_m3_chat": PAPER_REDUCTION_CHAT_M3,
                "domain_matched_to_paper": PAPER_DOMAIN_NAME,
                "compressed_over_base_pct_by_m": PAPER_COMPRESSED_OVER_BASE_BY_M,
            },
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.png:
        plot(cells, args, args.png)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
