"""benchmarks/ablations.py: the runs it asks for, and its table read from quality_report's own report shape."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import ablations  # noqa: E402
import quality_report  # noqa: E402

DOMAINS = ablations.DOMAINS


def _report(z2z_bpb: float) -> dict:
    """A report as quality_report writes it (its own formatter reads every field used here)."""
    return {
        "conditions": {"trained_domains": list(DOMAINS), "window": 512, "bits_per_byte_bf16": False,
                       "prompt_chars": 1024, "max_tokens": 64},
        "bits_per_byte": [
            {"domain": d, "bytes": 20_000, "base_tokens": 5_000, "z2z_tokens": 4_000, "base_bpb": 1.0,
             "z2z_bpb": z2z_bpb, "ratio": z2z_bpb, "input_side_base_nats": 2.0, "input_side_z2z_nats": 2.5}
            for d in DOMAINS
        ],
        "compression": [
            {"domain": d, "input_ratio": 0.8,
             **{f"{m}_{k}": 1.5 for m in ("greedy", "sampled")
                for k in ("base_per_emitted", "plain_bytes_per_token", "z2z_bytes_per_token")},
             "greedy_emitted_over_canonical": 1.2, "sampled_emitted_over_canonical": 1.1 if d == "code" else 1.3}
            for d in DOMAINS
        ],
        "task": [
            {"domain": d, "items": 20, "plain_exact": 0.25, "plain_stderr": 0.1, "z2z_exact": 0.2, "z2z_stderr": 0.09,
             "both": 0.15}
            for d in DOMAINS
        ],
        "chat": {"prompts": 20, "plain_doubled": 1, "z2z_doubled": 3, "plain_answers_with_doubles": 1,
                 "z2z_answers_with_doubles": 2},
    }  # fmt: skip


def test_a_quality_report_becomes_one_table_row():
    report = _report(1.07)
    assert "next-line completion" in quality_report.format_tables(report)  # the shape is quality_report's
    row = ablations.summary_row("clm_recon", report, {"train_compressed_tokens": 26_305, "train_seconds": 2698.0})
    assert row["bpb_ratio_code"] == pytest.approx(1.07)
    assert row["next_line_structured"] == (0.2, 0.25)
    assert row["sampled_emitted_over_canonical"] == pytest.approx((1.1 + 4 * 1.3) / 5)
    assert row["chat_doubled"] == (3, 1)
    table = ablations.format_table([row]).splitlines()
    assert table[-1].startswith("clm_recon") and "26,305" in table[-1] and " 1.070" in table[-1]
    assert "0.20/0.25" in table[-1] and "3/1" in table[-1]


def _args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(steps=30, grad_accum=2, seed=2, cache_dir=tmp_path / "cache")


def test_each_variant_trains_from_the_same_settings_with_its_own_overrides(tmp_path, monkeypatch):
    commands = []
    monkeypatch.setattr(ablations, "run", lambda command, log: commands.append(command))
    for name in ("clm_recon", "folded_expansion"):
        ablations.train(name, ablations.VARIANTS[name], tmp_path, _args(tmp_path))
    settings = [dict(arg.split("=", 1) for arg in command if "=" in arg) for command in commands]
    shared = ("max_steps", "grad_accum", "batch_size", "seed", "cache_dir", "warmup_steps")
    assert [{k: s[k] for k in shared} for s in settings][0] == [{k: s[k] for k in shared} for s in settings][1]
    assert settings[0]["max_steps"] == "30" and settings[0]["seed"] == "2"
    assert settings[0]["distill_folded_weight"] == "0.0" and "distill_folded_weight" not in settings[1]
    assert settings[1]["clm_weight"] == "0.0"
    assert settings[0]["output_dir"] != settings[1]["output_dir"]


def test_a_trained_variant_is_not_trained_again(tmp_path, monkeypatch):
    monkeypatch.setattr(ablations, "run", lambda command, log: pytest.fail("trained again"))
    checkpoint = tmp_path / "clm_recon" / "train" / "checkpoint-30"
    checkpoint.mkdir(parents=True)
    (checkpoint.parent / "log.jsonl").write_text(json.dumps({"compressed_tokens": 10, "elapsed_s": 1.5}) + "\n")
    assert ablations.train("clm_recon", ablations.VARIANTS["clm_recon"], tmp_path, _args(tmp_path)) == checkpoint
    assert ablations.training_figures(checkpoint) == {"train_compressed_tokens": 10, "train_seconds": 1.5}


def test_training_figures_come_from_the_last_training_record(tmp_path):
    checkpoint = tmp_path / "train" / "checkpoint-30"
    checkpoint.mkdir(parents=True)
    records = [
        {"step": 29, "compressed_tokens": 25_286, "elapsed_s": 2605.0},
        {"step": 30, "compressed_tokens": 26_305, "elapsed_s": 2697.9},
        {"step": 30, "eval_clm_loss": 3.795},  # the trainer's evaluation follows the last step
    ]
    (checkpoint.parent / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert ablations.training_figures(checkpoint) == {"train_compressed_tokens": 26_305, "train_seconds": 2697.9}
    assert ablations.training_figures(None) == {"train_compressed_tokens": 0, "train_seconds": 0.0}
