"""Decode-step time of zip2zip reference generation against the plain base model (HF level).

Same base weights, greedy, KV cache, side by side in one process: ``Zip2ZipForCausalLM.generate``
over LZW-compressed prompts against the base model's own ``generate`` over the base ids of the same
text. Prompts are held-out Python code from ``z2z_vllm.data`` tokenized with the SmolLM2 tokenizer.
The hyper-encoders are fresh (untrained): timing does not depend on what they learned, but the
"base tokens per emitted token" of an untrained model says little about a trained one.

    python benchmarks/hf_generate_bench.py                    # SmolLM2-135M, batch 1 and 8 (~2-3 min)
    python benchmarks/hf_generate_bench.py --tiny --json out.json   # tiny random Llama, seconds
    python benchmarks/hf_generate_bench.py --repeats 7 --new-tokens 48 --threads 1

A decode step is timed from one step's start to the next (a stopping criterion ticks once per token
in HF ``generate``; the z2z run ticks as each base forward starts), so prefill is left out; each
figure is the median over all decode steps of ``--repeats`` runs, z2z and base run alternately so
that load from other processes hits both alike. Overhead target: <= 10 %
at batch 1.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from z2z_vllm.modeling import EncoderConfig, Zip2ZipForCausalLM, expand_generated
from z2z_vllm.modeling.config import ENCODER_KINDS

TARGET_OVERHEAD_BATCH_1 = 0.10
MODEL_NAME = "smollm2-135m"
TOKENIZER_NAME = "smollm2"


@dataclass(frozen=True)
class Row:
    batch_size: int
    z2z_ms_per_step: float
    base_ms_per_step: float
    overhead: float  # z2z / base - 1
    base_tokens_per_emitted: float  # of the z2z model's generated ids (1.0 for the base)
    z2z_text_bytes_per_s: float
    base_text_bytes_per_s: float
    prompt_base_tokens: float  # mean per sequence
    prompt_z2z_tokens: float
    steps_timed: int  # decode steps behind each median (z2z; base has a few more)


def load_models(*, tiny: bool, codebook_size: int, max_subtokens: int, encoder: str):
    """(base model, z2z model over the same base object, HF tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from z2z_vllm.data import tokenizer_dir
    from z2z_vllm.data.models import base_model_dir

    if tiny:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir(TOKENIZER_NAME)))
        torch.manual_seed(0)
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=64, num_attention_heads=2, num_key_value_heads=1,
            num_hidden_layers=2, intermediate_size=128, max_position_embeddings=2048,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        )
        base = LlamaForCausalLM(config)
    else:
        folder = base_model_dir(MODEL_NAME)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        base = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    base.eval()
    torch.manual_seed(0)  # the same fresh encoders in every run
    z2z = Zip2ZipForCausalLM.from_base(
        base,
        max_codebook_size=codebook_size,
        max_subtokens=max_subtokens,
        tokenizer=tokenizer,
        input_encoder=EncoderConfig(kind=encoder, num_layers=1),
        reconstruction_weight=0.0,
    ).eval()
    return base, z2z, tokenizer


def prompt_base_ids(tokenizer, *, count: int, length: int) -> list[list[int]]:
    """``count`` prompts of ``length`` base tokens from different held-out code documents."""
    from z2z_vllm.data import corpus_documents

    prompts = []
    for document in corpus_documents("code", split="heldout"):
        text = document.text[: 16 * length]  # enough characters for `length` tokens; whole files are slow
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= length:
            prompts.append(ids[:length])
        if len(prompts) == count:
            return prompts
    raise RuntimeError(f"fewer than {count} held-out code documents of {length} tokens")


class StepClock:
    """Timestamps taken once per decode step; their differences are the step times."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def tick(self) -> None:
        self.stamps.append(time.perf_counter())

    def step_seconds(self, *, skip: int) -> list[float]:
        """Differences of consecutive stamps, the first ``skip`` left out."""
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])][skip:]


def bench_batch(base, z2z, tokenizer, base_prompts, *, new_tokens: int, repeats: int) -> Row:
    from transformers import StoppingCriteria, StoppingCriteriaList

    compressed = [z2z.codec.encode(ids) for ids in base_prompts]
    width = max(len(p) for p in base_prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    base_ids = torch.tensor([[pad] * (width - len(p)) + p for p in base_prompts])
    base_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in base_prompts])

    class TickEachStep(StoppingCriteria):  # HF calls it once per generated token, never stops
        def __init__(self, clock: StepClock) -> None:
            self.clock = clock

        def __call__(self, input_ids, scores, **kwargs):
            self.clock.tick()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    def run_base(clock: StepClock):
        return base.generate(
            input_ids=base_ids, attention_mask=base_mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
            do_sample=False, use_cache=True, pad_token_id=pad, stopping_criteria=StoppingCriteriaList([TickEachStep(clock)]),
        )

    def run_z2z(clock: StepClock):
        # A tick as each base forward starts: the prefill, then one per decode step.
        def timed_run_base(*args, **kwargs):
            clock.tick()
            return forward(*args, **kwargs)

        forward = z2z.run_base
        z2z.run_base = timed_run_base
        try:
            return z2z.generate(compressed, max_new_tokens=new_tokens)
        finally:
            del z2z.run_base

    step_seconds: dict[str, list[float]] = {"z2z": [], "base": []}
    with torch.inference_mode():
        base_out, z2z_out = run_base(StepClock()), run_z2z(StepClock())  # warm-up, and the texts
        for _ in range(repeats):  # alternate, so that outside load hits both
            clock = StepClock()
            run_z2z(clock)
            step_seconds["z2z"] += clock.step_seconds(skip=1)  # the first difference spans the prefill
            clock = StepClock()
            run_base(clock)
            step_seconds["base"] += clock.step_seconds(skip=0)  # ticks start after the first token
    z2z_step, base_step = (statistics.median(step_seconds[name]) for name in ("z2z", "base"))

    z2z_base_ids = [expand_generated(z2z.codec, p, g) for p, g in zip(compressed, z2z_out.sequences)]
    z2z_bytes = sum(len(tokenizer.decode(ids).encode()) for ids in z2z_base_ids)
    base_bytes = sum(len(tokenizer.decode(row[width:]).encode()) for row in base_out.tolist())
    emitted = sum(len(s) for s in z2z_out.sequences)
    return Row(
        batch_size=len(base_prompts),
        z2z_ms_per_step=1e3 * z2z_step,
        base_ms_per_step=1e3 * base_step,
        overhead=z2z_step / base_step - 1,
        base_tokens_per_emitted=sum(len(ids) for ids in z2z_base_ids) / emitted,
        z2z_text_bytes_per_s=z2z_bytes / (new_tokens * z2z_step),
        base_text_bytes_per_s=base_bytes / (new_tokens * base_step),
        prompt_base_tokens=statistics.mean(len(p) for p in base_prompts),
        prompt_z2z_tokens=statistics.mean(len(p) for p in compressed),
        steps_timed=len(step_seconds["z2z"]),
    )


def print_table(conditions: dict, rows: list[Row]) -> None:
    print("conditions: " + ", ".join(f"{k}={v}" for k, v in conditions.items()))
    header = (
        f"{'batch':>5}  {'z2z ms/step':>11}  {'base ms/step':>12}  {'overhead':>8}  "
        f"{'base tok/emitted':>16}  {'z2z text B/s':>12}  {'base text B/s':>13}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.batch_size:>5}  {row.z2z_ms_per_step:>11.2f}  {row.base_ms_per_step:>12.2f}  "
            f"{100 * row.overhead:>7.1f}%  {row.base_tokens_per_emitted:>16.2f}  "
            f"{row.z2z_text_bytes_per_s:>12.0f}  {row.base_text_bytes_per_s:>13.0f}"
        )
    batch_1 = [row for row in rows if row.batch_size == 1]
    if batch_1:
        met = batch_1[0].overhead <= TARGET_OVERHEAD_BATCH_1
        print(f"target: overhead <= {100 * TARGET_OVERHEAD_BATCH_1:.0f}% at batch 1: {'met' if met else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random Llama (smoke run) instead of SmolLM2-135M")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt-tokens", type=int, default=None, help="base tokens per prompt (default 256; tiny 64)")
    parser.add_argument("--new-tokens", type=int, default=None, help="decode steps per run (default 32; tiny 8)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per model and batch (default 3; tiny 2)")
    parser.add_argument("--codebook-size", type=int, default=1024, metavar="C")
    parser.add_argument("--max-subtokens", type=int, default=4, metavar="M")
    parser.add_argument(
        "--encoder", choices=ENCODER_KINDS, default="transformer",
        help="hyper-encoder kind, 1 layer (default transformer: the default model; mean isolates the rest)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write conditions and rows here")
    args = parser.parse_args(argv)
    prompt_tokens = args.prompt_tokens or (64 if args.tiny else 256)
    new_tokens = args.new_tokens or (8 if args.tiny else 32)
    repeats = args.repeats or (2 if args.tiny else 3)
    if new_tokens < 3:
        parser.error("--new-tokens must be >= 3 (the first step's time includes the prefill)")
    if args.threads:
        torch.set_num_threads(args.threads)

    base, z2z, tokenizer = load_models(
        tiny=args.tiny, codebook_size=args.codebook_size, max_subtokens=args.max_subtokens, encoder=args.encoder
    )
    prompts = prompt_base_ids(tokenizer, count=max(args.batch_sizes), length=prompt_tokens)
    rows = [
        bench_batch(base, z2z, tokenizer, prompts[:batch], new_tokens=new_tokens, repeats=repeats)
        for batch in args.batch_sizes
    ]
    conditions = {
        "model": "tiny random Llama" if args.tiny else MODEL_NAME,
        "encoders": f"fresh {args.encoder} x1 (untrained)",
        "C": args.codebook_size,
        "M": args.max_subtokens,
        "prompt_base_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "repeats": repeats,
        "dtype": str(next(base.parameters()).dtype).removeprefix("torch."),
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print_table(conditions, rows)
    if args.json:
        args.json.write_text(json.dumps({"conditions": conditions, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
