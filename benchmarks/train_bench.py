"""Training-step speed: today's trainer settings beside the new ones, on the same micro-batches.

    python benchmarks/train_bench.py --json results/train_bench.json          # ~15 min on 2 cores

For each variant (today: the shipped config; fast: entries sampled for the reconstruction loss,
no LoRA dropout; fast + distill: the same with the teacher forward and both distillation terms)
it times micro-steps (collate, forward, loss, backward; variants interleaved so that a busy
machine slows all of them alike) and reports compressed tokens/s, the ratio to today, and the
achieved TFLOP/s beside this machine's matmul peak measured in the same run. FLOPs counted: the
student's forward and input-gradient (2 x forward: the base weights are frozen, LoRA and encoder
weight gradients are ignored as small) over the compressed ids, and the teacher's forward over
the base ids; the reconstruction head's logits over V are not the model's math and not counted.
A phase table says where each variant's step goes. Precision: ``--bf16`` for every variant (auto:
bfloat16 only where this machine multiplies it fast, as the trainer's ``bf16: auto`` does); the
matmul peaks of both dtypes are printed, which is what ``bf16: auto`` gains over a config that
asks for bf16 on a machine that emulates it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from machine import cpu_model, load_average, package_version

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from z2z_vllm.training import trainer  # noqa: E402
from z2z_vllm.training.config import load_train_config  # noqa: E402
from z2z_vllm.training.data import (  # noqa: E402
    Collator,
    build_dataset,
    load_documents,
    load_text_tokenizer,
)
from z2z_vllm.training.trainer import (  # noqa: E402
    _start_id,
    build_model,
    distills,
    resolve_base_model,
    training_losses,
    use_bf16,
)

VARIANTS = {
    "today": {},
    "fast": {"reconstruction_samples": 128, "lora_dropout": 0.0},
    "fast + distill": {"reconstruction_samples": 128, "lora_dropout": 0.0,
                       "distill_folded_weight": 1.0, "distill_expansion_weight": 1.0},
}


def matmul_peak(dtype: torch.dtype, *, tokens: int = 1024, hidden: int = 576, out: int = 1536) -> float:
    """Best TFLOP/s of a model-shaped GEMM (the MLP's up projection) in ``dtype``."""
    a, b = torch.randn(tokens, hidden, dtype=dtype), torch.randn(hidden, out, dtype=dtype)
    a @ b
    best = float("inf")
    repeats = 5 if dtype == torch.float32 else 2  # bf16 may be emulated: ~100x slower
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * tokens * hidden * out / best / 1e12


def forward_flops(base: torch.nn.Module, tokens: int, context: int) -> float:
    """Matmul FLOPs of a causal forward over ``tokens`` ids at mean context ``context / 2``."""
    config = base.config
    matmul_params = sum(m.weight.numel() for m in base.modules() if isinstance(m, torch.nn.Linear))
    matmul_params -= sum(p.numel() for n, p in base.named_parameters() if "lora_" in n)
    attention = 2 * config.num_hidden_layers * context * config.hidden_size  # QK^T and AV, causal
    return tokens * (2 * matmul_params + attention)


class Phases:
    """Wall seconds per named phase, summed over micro-steps."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def hook(self, module: torch.nn.Module, name: str) -> None:
        """Times ``module``'s forwards (counted inside the enclosing forward phase)."""
        starts: list[float] = []
        module.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter()))
        module.register_forward_hook(
            lambda *_: self.seconds.__setitem__(name, self.seconds.get(name, 0.0) + time.perf_counter() - starts.pop())
        )


def _timed_inside_forward(phases_of_step: list[Phases]) -> None:
    """Times the trainer's teacher forward and distillation terms as phases of their own."""
    for function, label in ((trainer.teacher_log_probs, "  teacher forward"),
                            (trainer.distillation_losses, "  distillation terms")):
        def timed(*args, _function=function, _label=label, **kwargs):
            with phases_of_step[-1](_label):
                return _function(*args, **kwargs)

        setattr(trainer, function.__name__, timed)


def micro_step(model, collator, windows, cfg, bf16: bool, phases: Phases) -> None:
    with phases("data (collate, codebooks, base ids)"):
        batch = collator(windows)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        with phases("forward (student, teacher, losses)"):
            loss = training_losses(model, batch, cfg)["loss"]
    with phases("backward"):
        loss.backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs/smollm2_z2z.yaml"))
    parser.add_argument("--domain", default="code", help="training windows from this domain's train split")
    parser.add_argument("--micro-steps", type=int, default=3, help="timed micro-steps per variant")
    parser.add_argument("--batch-size", type=int, default=None, help="windows per micro-step (config's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--bf16", choices=("auto", "true", "false"), default="auto",
        help="autocast for every variant (default auto: bf16 only where this machine multiplies it fast; "
        "the config's own setting may be slow here, see the printed peaks)",
    )  # fmt: skip
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    base_cfg = load_train_config(args.config)
    batch_size = args.batch_size or base_cfg.batch_size
    tokenizer = load_text_tokenizer(resolve_base_model(base_cfg.base_model))
    models = {}
    for name, changes in VARIANTS.items():
        cfg = load_train_config(args.config, overrides=changes)
        models[name] = (build_model(cfg, tokenizer=tokenizer).train(), cfg)
    any_model = next(iter(models.values()))[0]
    documents = load_documents(domain=args.domain, split="train", max_bytes=400_000)
    data = build_dataset(documents, tokenizer=tokenizer, codec=any_model.codec, length=base_cfg.seq_len,
                         start_id=_start_id(any_model))
    full = [w for w in data.sequences if len(w) == base_cfg.seq_len]
    batches = [full[i * batch_size : (i + 1) * batch_size] for i in range(args.micro_steps + 1)]
    bf16 = use_bf16({"auto": "auto", "true": True, "false": False}[args.bf16], torch.device("cpu"))

    phases = {name: Phases() for name in models}
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for name, (model, _) in models.items():
        phases[name].hook(model.input_encoder, "  hyper-encoders (forward)")
        phases[name].hook(model.output_encoder, "  hyper-encoders (forward)")
        if model.reconstruction is not None:
            phases[name].hook(model.reconstruction, "  reconstruction head (forward)")
    active: list[Phases] = []
    _timed_inside_forward(active)
    for step, windows in enumerate(batches):  # step 0 warms up every variant
        for name, (model, cfg) in models.items():
            collator = Collator(codec=model.codec, base_ids=distills(cfg))
            timer = phases[name] if step else Phases()
            active.append(timer)
            start = time.perf_counter()
            micro_step(model, collator, windows, cfg, bf16, timer)
            model.zero_grad(set_to_none=True)
            if step:
                seconds[name].append(time.perf_counter() - start)
    optimizer_s = time_optimizer_step(any_model)

    compressed = sum(len(w) for w in batches[1])
    base_tokens = sum(len(any_model.codec.decode(w)) for w in batches[1])
    base = any_model.base_model.get_base_model()
    student = 2 * forward_flops(base, compressed, base_cfg.seq_len)
    teacher = forward_flops(base, base_tokens, int(base_cfg.seq_len * base_tokens / compressed))
    peaks = {"float32": matmul_peak(torch.float32), "bfloat16": matmul_peak(torch.bfloat16)}
    peak = peaks["bfloat16" if bf16 else "float32"]

    rows = []
    today = statistics.median(seconds["today"])
    for name, (_, cfg) in models.items():
        median = statistics.median(seconds[name])
        flops = student + (teacher if distills(cfg) else 0)
        rows.append({
            "variant": name, "settings": VARIANTS[name], "s_per_micro_step": median,
            "compressed_tokens_per_s": compressed / median, "speedup_vs_today": today / median,
            "model_tflop_per_s": flops / median / 1e12, "fraction_of_peak": flops / median / 1e12 / peak,
            "phases_s": {k: v / args.micro_steps for k, v in phases[name].seconds.items()},
        })
    conditions = {
        "cpu": cpu_model(), "threads": args.threads, "load_average": load_average(),
        "torch": package_version("torch"), "config": args.config, "domain": args.domain,
        "micro_batch": f"{batch_size} x {base_cfg.seq_len} compressed ids ({compressed} ids, {base_tokens} base tokens)",
        "micro_steps": args.micro_steps, "bf16": bf16, "config_bf16": base_cfg.bf16,
        "matmul_peak_tflop_per_s": peaks,
        "optimizer_step_s": optimizer_s,
    }
    print_report(conditions, rows)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"conditions": conditions, "rows": rows}, indent=2) + "\n")


def time_optimizer_step(model) -> float:
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.grad = torch.zeros_like(p)
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    optimizer.step()
    start = time.perf_counter()
    optimizer.step()
    return time.perf_counter() - start


def print_report(conditions: dict, rows: list[dict]) -> None:
    for key, value in conditions.items():
        print(f"{key:>24}: {value}")
    print()
    print(f"{'variant':<16} {'s/micro-step':>12} {'ids/s':>8} {'vs today':>9} {'TFLOP/s':>8} {'of peak':>8}")
    for r in rows:
        print(f"{r['variant']:<16} {r['s_per_micro_step']:>12.2f} {r['compressed_tokens_per_s']:>8.1f} "
              f"{r['speedup_vs_today']:>8.2f}x {r['model_tflop_per_s']:>8.4f} {r['fraction_of_peak']:>8.1%}")
    print("\nwhere a micro-step goes (s):")
    names = sorted({k for r in rows for k in r["phases_s"]}, key=lambda k: (k.startswith(" "), k))
    print(f"{'phase':<40}" + "".join(f"{r['variant']:>16}" for r in rows))
    for phase in names:
        print(f"{phase:<40}" + "".join(f"{r['phases_s'].get(phase, 0.0):>16.2f}" for r in rows))


if __name__ == "__main__":
    main()
