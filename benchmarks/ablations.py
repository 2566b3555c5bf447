"""Training recipes side by side at an equal token budget: same start, data, steps and seed.

    python benchmarks/ablations.py --json results/ablations.json          # ~2-3 h on 2 CPU cores
    python benchmarks/ablations.py --steps 2 --grad-accum 1 --variants clm_recon --size quick   # smoke run

Every variant continues the shipped z2z-smollm2-135m (``configs/smollm2_z2z_kd.yaml``: its codec,
encoders, LoRA and data) for ``--steps`` optimizer steps of ``--grad-accum`` windows of 512
compressed ids, changing only what the variant names; then ``z2z pack`` and
``benchmarks/quality_report.py --size ablation`` score it against the base on held-out text. The
"shipped" row is the starting point, scored the same way. Each stage's output is kept under
``--out``: a rerun skips what is done and resumes a training run where it stopped.

Prints one table (bits per byte z2z / base per domain, next-line exact match z2z / base,
emitted / canonical on sampled output, doubled words in the chat sample) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_model, load_average, write_report

ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = ROOT / "configs" / "smollm2_z2z_kd.yaml"
# Variant -> config overrides over BASE_CONFIG (None: the shipped weights, not trained further).
VARIANTS: dict[str, dict[str, object] | None] = {
    "shipped": None,
    "clm_recon": {"distill_folded_weight": 0.0, "distill_expansion_weight": 0.0},  # today's objective
    "clm_recon_folded_expansion": {},  # the long run's recipe
    "folded_expansion": {"clm_weight": 0.0},  # distillation alone
    "clm_recon_folded": {"distill_expansion_weight": 0.0},
    "clm_recon_expansion": {"distill_folded_weight": 0.0},
}
DOMAINS = ("code", "prose", "math", "multilingual", "structured")


def run(command: list[str], log: Path) -> None:
    print(f"$ {' '.join(command)}  > {log}", flush=True)
    with log.open("a") as out:
        subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=True)


def train(name: str, overrides: dict[str, object], out: Path, args: argparse.Namespace) -> Path:
    """The variant's last checkpoint, training (or resuming) until it exists."""
    folder = out / name
    checkpoint = folder / "train" / f"checkpoint-{args.steps}"
    if checkpoint.is_dir():
        return checkpoint
    settings = {
        "output_dir": folder / "train", "cache_dir": args.cache_dir, "max_steps": args.steps,
        "grad_accum": args.grad_accum, "batch_size": 1, "warmup_steps": max(1, args.steps // 10),
        "save_every": max(1, args.steps // 4), "save_total_limit": 1, "eval_every": 10 * args.steps,
        "eval_max_sequences": 1,  # the trainer's own held-out loss at the end: quality_report scores it
        "seed": args.seed, **overrides,
    }  # fmt: skip
    command = [sys.executable, "-m", "z2z_vllm.cli", "train", "--config", str(BASE_CONFIG)]
    for key, value in settings.items():
        command += ["--set", f"{key}={value}"]
    folder.mkdir(parents=True, exist_ok=True)
    run(command, folder / "train.log")
    return checkpoint


def pack(name: str, checkpoint: Path, out: Path) -> Path:
    packed = out / name / f"z2z-ablation-{name}"
    if not (packed / "z2z_config.json").is_file():
        run([sys.executable, "-m", "z2z_vllm.cli", "pack", str(checkpoint), str(packed)], out / name / "pack.log")
    return packed


def evaluate(name: str, weights: Path | None, out: Path, args: argparse.Namespace) -> dict:
    report = out / name / "quality.json"
    if not report.is_file():
        command = [sys.executable, str(ROOT / "benchmarks" / "quality_report.py"), "--size", args.size,
                   "--dtype", "float32", "--json", str(report)]  # fmt: skip
        if weights is not None:
            command += ["--weights", str(weights)]
        (out / name).mkdir(parents=True, exist_ok=True)
        run(command, out / name / "quality.log")
    return json.loads(report.read_text())


def training_figures(checkpoint: Path | None) -> dict:
    """Compressed ids read and seconds spent, from the run's log (its last training record: the
    evaluation's follows it)."""
    if checkpoint is None:
        return {"train_compressed_tokens": 0, "train_seconds": 0.0}
    records = [json.loads(line) for line in (checkpoint.parent / "log.jsonl").read_text().splitlines() if line]
    last = [record for record in records if "compressed_tokens" in record][-1]
    return {"train_compressed_tokens": last["compressed_tokens"], "train_seconds": last["elapsed_s"]}


def summary_row(name: str, report: dict, figures: dict) -> dict:
    def by_domain(rows: list[dict]) -> dict[str, dict]:
        return {row["domain"]: row for row in rows}

    bpb, tasks, compression = (by_domain(report[part]) for part in ("bits_per_byte", "task", "compression"))
    chat = report["chat"]
    sampled = [compression[d]["sampled_emitted_over_canonical"] for d in DOMAINS if d in compression]
    return {
        "variant": name, **figures,
        **{f"bpb_ratio_{d}": bpb[d]["ratio"] for d in DOMAINS if d in bpb},
        **{f"input_side_nats_{d}": (bpb[d]["input_side_z2z_nats"], bpb[d]["input_side_base_nats"]) for d in DOMAINS if d in bpb},
        **{f"next_line_{d}": (tasks[d]["z2z_exact"], tasks[d]["plain_exact"]) for d in DOMAINS if d in tasks},
        "sampled_emitted_over_canonical": sum(sampled) / len(sampled),
        "chat_doubled": (chat["z2z_doubled"], chat["plain_doubled"]),
    }  # fmt: skip


def format_table(rows: list[dict]) -> str:
    head = (f"{'variant':<28} {'ids':>7} {'train s':>8} " + " ".join(f"{d[:6]:>7}" for d in DOMAINS)
            + f" {'NL code':>9} {'NL json':>9} {'emit/can':>8} {'doubled':>8}")  # fmt: skip
    lines = ["bits/byte z2z/base per domain; NL: next-line exact match z2z/base; emit/can: sampled "
             "emitted/canonical; doubled: chat doubled words z2z/base", head]  # fmt: skip
    for r in rows:
        nl = [r.get(f"next_line_{d}") for d in ("code", "structured")]
        lines.append(
            f"{r['variant']:<28} {r['train_compressed_tokens']:>7,} {r['train_seconds']:>8.0f} "
            + " ".join(f"{r.get(f'bpb_ratio_{d}', float('nan')):>7.3f}" for d in DOMAINS)
            + "".join(f" {z:>4.2f}/{p:.2f}" if (z, p) != (None, None) else f" {'-':>9}" for z, p in
                      (v or (None, None) for v in nl))
            + f" {r['sampled_emitted_over_canonical']:>8.2f} {r['chat_doubled'][0]:>4}/{r['chat_doubled'][1]:<3}"
        )  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per variant")
    parser.add_argument("--grad-accum", type=int, default=2, help="512-id windows per step")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--size", default="ablation", help="quality_report.py --size")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ablations")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "runs" / "smollm2_z2z_kd" / "data_cache",
                        help="compressed training windows, shared by every variant")  # fmt: skip
    parser.add_argument("--no-score", dest="score", action="store_false",
                        help="train and pack only (score later: a rerun skips what is done)")
    parser.add_argument("--json", type=Path, metavar="PATH")
    args = parser.parse_args(argv)
    conditions = {
        "base_config": str(BASE_CONFIG.relative_to(ROOT)), "steps": args.steps, "grad_accum": args.grad_accum,
        "seq_len": 512, "seed": args.seed, "quality_size": args.size, "cpu": cpu_model(),
        "load_average_at_start": load_average(),
    }  # fmt: skip
    for key, value in conditions.items():
        print(f"{key:<22} {value}")
    started = time.perf_counter()
    rows = []
    for name in args.variants:
        overrides = VARIANTS[name]
        checkpoint = None if overrides is None else train(name, overrides, args.out, args)
        weights = None if checkpoint is None else pack(name, checkpoint, args.out)
        if not args.score:
            continue
        report = evaluate(name, weights, args.out, args)
        rows.append(summary_row(name, report, training_figures(checkpoint)))
        print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    if not rows:
        return 0
    conditions.update(load_average_at_end=load_average(), seconds=round(time.perf_counter() - started, 1))
    print("\n" + format_table(rows))
    if args.json:
        write_report(args.json, {"conditions": conditions, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
