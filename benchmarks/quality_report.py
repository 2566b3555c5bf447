"""Quality of a z2z model against its base model, on held-out text of every domain.

    python benchmarks/quality_report.py                  # shipped z2z-smollm2-135m vs SmolLM2-135M (~30 min)
    python benchmarks/quality_report.py --quick          # small knobs, a few minutes
    python benchmarks/quality_report.py --weights /tmp/step300 --json results/q300.json   # a `z2z pack` folder

Held-out text of every ``z2z_vllm.data`` domain (the training run never read it; a domain absent
from the run's training mix is marked "not trained"). Three parts:

1. Bits per byte, Hugging Face level (LoRA merged), both models under bf16 autocast where the
   machine multiplies bf16 fast (float32 elsewhere), windows of ``--window`` tokens (compressed ids
   for z2z, base ids for the base). The z2z figure scores the canonical LZW path only: an UPPER
   BOUND on its true bits per byte (SPEC.md section 5). Beside it the input-side diagnostic: the
   next base token after the same text, z2z reading compressed ids with its hyper columns masked
   vs the base reading base ids; the rest of the gap is on the output side.
2. Compression. Input: compressed / base tokens of the held-out prompts. Output: both models
   continue the same prompts in vLLM, greedy and sampled; per z2z continuation, base tokens per
   emitted token (hypertokens expanded with the request's own codebook) and emitted / canonical
   (emitted ids over the LZW encoding of the same text after the same prompt: 1.0 means the model
   writes the canonical path, above 1 it spells out what it could have merged). Greedy decoding
   of a small model loops, and loops compress well: the sampled column is the steadier figure.
3. A task a user would recognise: next-line completion, on every domain. The prompt is held-out
   text up to the end of a line (without its newline: tokenizers merge a newline with the next
   line's indentation), the answer the next line (Python for code, JSON for structured, any file
   elsewhere); greedy, scored by exact match of the first line the model starts (trailing
   whitespace ignored), base vs z2z.
4. Chat: greedy answers to 20 fixed prompts through each model's chat template; doubled words
   and phrases ("part part of of") counted, base vs z2z.

Prints a table per part and writes JSON (``--json``) and a PNG (``--png``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from machine import cpu_model, load_average, package_version
from serve_bench import corpus_prompts

MODELS = ("plain", "z2z")
# Next-line task: domain -> names of the held-out files it draws from (None: every file).
TASK_DOMAINS = {"code": (".py",), "structured": (".json", ".json.gz"), "prose": None, "math": None,
                "multilingual": None}
CHAT_MAX_TOKENS = 96
# Fixed chat prompts for the doubled-word count (a user would notice "part part of of").
CHAT_PROMPTS = (
    "What is the capital of France? Answer in two sentences.",
    "Explain what a hash table is to a beginner.",
    "Write a short poem about the sea.",
    "Give me three tips for learning a new language.",
    "What causes the seasons on Earth?",
    "Summarize the plot of Romeo and Juliet in a few sentences.",
    "How do I reverse a list in Python?",
    "What is the difference between weather and climate?",
    "Describe a healthy breakfast.",
    "Why is the sky blue?",
    "What is photosynthesis?",
    "Write a polite email declining a meeting invitation.",
    "List the planets of the solar system in order.",
    "What does a compiler do?",
    "Give a short definition of democracy.",
    "How can I improve my sleep?",
    "What is the Pythagorean theorem?",
    "Tell me a fun fact about octopuses.",
    "What is the role of the heart in the human body?",
    "Suggest a name for a small bakery and explain why.",
)
DOUBLED = re.compile(r"\b(\w+(?:\s+\w+){0,2})(?:\s+\1\b)+", re.IGNORECASE)
TASK_MAX_TOKENS = 64  # a newline and a line of up to 120 characters, in base tokens


@dataclass(frozen=True)
class Knobs:
    bpb_bytes: int  # held-out UTF-8 bytes per domain for bits per byte
    window: int
    prompts: int  # generation prompts per domain
    prompt_chars: int
    max_tokens: int  # per continuation, each model's own tokens
    task_items: int  # next-line items per task domain
    task_context_chars: int


FULL = Knobs(bpb_bytes=60_000, window=512, prompts=16, prompt_chars=1024, max_tokens=128, task_items=100,
             task_context_chars=1500)
QUICK = Knobs(bpb_bytes=3_000, window=256, prompts=2, prompt_chars=512, max_tokens=16, task_items=4,
              task_context_chars=600)
# Comparing training recipes (benchmarks/ablations.py): bits per byte on enough text to separate
# them, the generation parts smaller.
ABLATION = Knobs(bpb_bytes=20_000, window=512, prompts=4, prompt_chars=1024, max_tokens=64, task_items=20,
                 task_context_chars=1500)
SIZES = {"quick": QUICK, "ablation": ABLATION, "full": FULL}


# ---------------------------------------------------------------------------------------------
# 1. Bits per byte


def bits_per_byte_rows(weights: Path, domains: list[str], knobs: Knobs, *, bf16: bool) -> list[dict]:
    from z2z_vllm.training.data import load_documents
    from z2z_vllm.training.evaluate import compare_bits_per_byte_by_source

    documents = {d: load_documents(domain=d, split="heldout", max_bytes=knobs.bpb_bytes) for d in domains}
    pairs = compare_bits_per_byte_by_source(weights, documents, window=knobs.window, batch_size=4, bf16=bf16,
                                            progress=False)
    input_side = input_side_losses(weights, documents, knobs, bf16=bf16)
    return [
        {
            "domain": domain, "bytes": z2z.num_bytes, "base_tokens": base.scored_tokens,
            "z2z_tokens": z2z.scored_tokens, "base_bpb": base.bits_per_byte, "z2z_bpb": z2z.bits_per_byte,
            "ratio": z2z.bits_per_byte / base.bits_per_byte,
            "input_side_base_nats": input_side[domain].base_nats, "input_side_z2z_nats": input_side[domain].z2z_nats,
        }
        for domain, (z2z, base) in pairs.items()
    ]  # fmt: skip


def input_side_losses(weights: Path, documents: dict[str, list], knobs: Knobs, *, bf16: bool) -> dict:
    """Per domain, ``training.evaluate.input_side_loss``: the next base token after the same text,
    z2z reading compressed ids (hyper columns masked) vs the base reading base ids."""
    from z2z_vllm.training.data import build_dataset, load_text_tokenizer
    from z2z_vllm.training.evaluate import input_side_loss
    from z2z_vllm.training.trainer import _load_base, _start_id, load_trained_model, resolve_base_model

    model, cfg = load_trained_model(weights)
    base = _load_base(resolve_base_model(cfg.base_model)).eval()
    tokenizer = load_text_tokenizer(resolve_base_model(cfg.base_model))
    losses = {}
    for domain, docs in documents.items():
        data = build_dataset(docs, tokenizer=tokenizer, codec=model.codec, length=knobs.window,
                             start_id=_start_id(model))
        losses[domain] = input_side_loss(model, base, data, batch_size=4, bf16=bf16)
    return losses


# ---------------------------------------------------------------------------------------------
# 3. Next-line task items


@dataclass(frozen=True)
class NextLine:
    document: str
    line: int
    prompt: str  # ends where a line ends, before its newline
    answer: str


def next_line_items(domain: str, suffixes: tuple[str, ...] | None, *, count: int, context_chars: int,
                    seed: int = 0) -> list[NextLine]:
    """``count`` next-line items from held-out ``domain`` files ending in ``suffixes``, spread over
    the files by a seeded draw. A line qualifies when it has 8..120 characters after stripping, is
    not a comment, and follows at least 5 lines of context; the prompt is the preceding text cut to
    whole lines within ``context_chars``."""
    from z2z_vllm.data import corpus_documents

    candidates = []
    for doc in corpus_documents(domain, split="heldout"):
        if suffixes is not None and not doc.name.endswith(suffixes):
            continue
        lines = doc.text.split("\n")
        offset = 0
        for index, line in enumerate(lines):
            stripped = line.strip()
            if index >= 5 and 8 <= len(stripped) <= 120 and not stripped.startswith("#"):
                start = 0
                if offset > context_chars:  # whole lines only: from the first line start in reach
                    start = doc.text.find("\n", offset - context_chars, offset - 1) + 1
                if start > 0 or offset <= context_chars:
                    candidates.append(NextLine(doc.name, index, doc.text[start : offset - 1], line))
            offset += len(line) + 1
    if len(candidates) < count:
        raise ValueError(f"only {len(candidates)} next-line items in held-out {domain}")
    return sorted(random.Random(seed).sample(candidates, count), key=lambda item: (item.document, item.line))


def exact_match(continuation: str, answer: str) -> bool:
    """Whether the line ``continuation`` starts (after ending the prompt's line) is ``answer``."""
    if not continuation.startswith("\n"):
        return False  # the model went on with the prompt's last line
    return continuation[1:].split("\n", 1)[0].rstrip() == answer.rstrip()


# ---------------------------------------------------------------------------------------------
# vLLM runs


def engine_env() -> dict[str, str]:
    return {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # one engine at a time, in this process
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
    }


@dataclass(frozen=True)
class Continuation:
    prompt_ids: list[int]
    output_ids: list[int]
    text: str


def doubled_phrases(text: str) -> int:
    """Immediate repeats of a word or a phrase of up to three words ("of of", "the cat the cat")."""
    return sum(1 for _ in DOUBLED.finditer(text))


def run_model(model_dir: Path, *, dtype: str, prompts: dict[str, list[str]], tasks: dict[str, list[NextLine]],
              max_tokens: int, max_model_len: int) -> dict[str, dict[str, list[Continuation]]]:
    """One engine: ``{"greedy" | "sampled" | "task": {domain: [Continuation]}, "chat": {"chat": [...]}}``."""
    from vllm import LLM, SamplingParams

    engine = LLM(model=str(model_dir), dtype=dtype, enforce_eager=True, max_model_len=max_model_len, max_num_seqs=16,
                 distributed_executor_backend="uni", seed=0)
    settings = {
        "greedy": SamplingParams(max_tokens=max_tokens, temperature=0.0),
        "sampled": SamplingParams(max_tokens=max_tokens, temperature=0.8, top_p=0.95, seed=0),
    }
    task_params = SamplingParams(max_tokens=TASK_MAX_TOKENS, temperature=0.0)
    # A prompt longer than the context (multilingual text can take several tokens per character)
    # keeps its end, which the continuation follows.
    keep_end = {"truncate_prompt_tokens": max_model_len - max(max_tokens, TASK_MAX_TOKENS), "truncation_side": "left"}

    def run(texts: list[str], params) -> list[Continuation]:
        outputs = engine.generate(texts, params, use_tqdm=False, tokenization_kwargs=keep_end)
        return [Continuation(list(o.prompt_token_ids), list(o.outputs[0].token_ids), o.outputs[0].text) for o in outputs]

    try:
        out = {name: {d: run(texts, params) for d, texts in prompts.items()} for name, params in settings.items()}
        out["task"] = {d: run([item.prompt for item in items], task_params) for d, items in tasks.items()}
        chats = engine.chat([[{"role": "user", "content": p}] for p in CHAT_PROMPTS],
                            SamplingParams(max_tokens=CHAT_MAX_TOKENS, temperature=0.0), use_tqdm=False)
        out["chat"] = {"chat": [Continuation(list(o.prompt_token_ids), list(o.outputs[0].token_ids), o.outputs[0].text)
                                for o in chats]}
    finally:
        engine.llm_engine.engine_core.shutdown()
    return out


# ---------------------------------------------------------------------------------------------
# 2. Compression figures


def output_figures(results: list[Continuation], codec) -> dict[str, float]:
    """Base tokens per emitted token and emitted / canonical length over ``results`` (z2z)."""
    emitted = sum(len(r.output_ids) for r in results)
    base = canonical = 0
    for r in results:
        decoder = codec.decoder()
        prompt_base = decoder.decode(r.prompt_ids)
        output_base = decoder.decode(r.output_ids)
        base += len(output_base)
        canonical += len(codec.encode(prompt_base + output_base)) - len(codec.encode(prompt_base))
    return {"base_per_emitted": base / emitted, "emitted_over_canonical": emitted / max(canonical, 1)}


def compression_rows(runs: dict[str, dict], codec, domains: list[str]) -> list[dict]:
    rows = []
    for domain in domains:
        plain_greedy, z2z_greedy = runs["plain"]["greedy"][domain], runs["z2z"]["greedy"][domain]
        row = {
            "domain": domain,
            "prompt_base_tokens": sum(len(r.prompt_ids) for r in plain_greedy) / len(plain_greedy),
            "prompt_z2z_tokens": sum(len(r.prompt_ids) for r in z2z_greedy) / len(z2z_greedy),
        }
        row["input_ratio"] = row["prompt_z2z_tokens"] / row["prompt_base_tokens"]
        for mode in ("greedy", "sampled"):
            for model in MODELS:
                results = runs[model][mode][domain]
                row[f"{mode}_{model}_bytes_per_token"] = (
                    sum(len(r.text.encode()) for r in results) / max(sum(len(r.output_ids) for r in results), 1)
                )
            row.update({f"{mode}_{k}": v for k, v in output_figures(runs["z2z"][mode][domain], codec).items()})
        rows.append(row)
    return rows


def task_rows(runs: dict[str, dict], tasks: dict[str, list[NextLine]]) -> list[dict]:
    rows = []
    for domain, items in tasks.items():
        row = {"domain": domain, "items": len(items)}
        for model in MODELS:
            hits = [exact_match(r.text, item.answer) for r, item in zip(runs[model]["task"][domain], items)]
            rate = sum(hits) / len(hits)
            row[f"{model}_exact"] = rate
            row[f"{model}_stderr"] = math.sqrt(rate * (1 - rate) / len(hits))
        row["both"] = sum(
            exact_match(p.text, item.answer) and exact_match(z.text, item.answer)
            for p, z, item in zip(runs["plain"]["task"][domain], runs["z2z"]["task"][domain], items)
        ) / len(items)
        row["example"] = {"answer": items[0].answer, **{m: runs[m]["task"][domain][0].text for m in MODELS}}
        rows.append(row)
    return rows


def chat_rows(runs: dict[str, dict]) -> dict:
    """Doubled words / phrases in the greedy answers to the fixed chat prompts, per model."""
    row = {"prompts": len(CHAT_PROMPTS)}
    for model in MODELS:
        answers = [r.text for r in runs[model]["chat"]["chat"]]
        row[f"{model}_doubled"] = sum(doubled_phrases(a) for a in answers)
        row[f"{model}_answers_with_doubles"] = sum(doubled_phrases(a) > 0 for a in answers)
        row[f"{model}_example"] = answers[0]
    return row


# ---------------------------------------------------------------------------------------------
# Output


def format_tables(report: dict) -> str:
    trained = set(report["conditions"]["trained_domains"])
    lines = [
        f"\n1. bits per byte on held-out text (z2z: canonical path, an upper bound), windows of "
        f"{report['conditions']['window']} tokens, bf16 autocast: {report['conditions']['bits_per_byte_bf16']}"
    ]
    lines.append("   input side: nats of the next base token after the same text, z2z reading compressed ids "
                 "with hyper columns masked vs the base")
    lines.append(f"{'domain':<13} {'bytes':>8} {'base tok':>9} {'z2z tok':>8} {'base bpb':>9} {'z2z bpb':>8} "
                 f"{'z2z/base':>9} {'input base':>11} {'input z2z':>10}")
    for r in report["bits_per_byte"]:
        note = "" if r["domain"] in trained else "  (not trained)"
        lines.append(f"{r['domain']:<13} {r['bytes']:>8,} {r['base_tokens']:>9,} {r['z2z_tokens']:>8,} "
                     f"{r['base_bpb']:>9.4f} {r['z2z_bpb']:>8.4f} {r['ratio']:>9.4f} "
                     f"{r['input_side_base_nats']:>11.3f} {r['input_side_z2z_nats']:>10.3f}{note}")
    lines.append(f"\n2. compression: prompts of {report['conditions']['prompt_chars']} chars; continuations of "
                 f"{report['conditions']['max_tokens']} tokens (greedy | sampled T=0.8 top-p 0.95)")
    lines.append(f"{'domain':<13} {'in z2z/base':>11} {'base/emitted':>13} {'emit/canon':>11} {'B/tok plain':>12} "
                 f"{'B/tok z2z':>10}   {'base/emitted':>13} {'emit/canon':>11} {'B/tok plain':>12} {'B/tok z2z':>10}")
    for r in report["compression"]:
        cells = "".join(
            f"{r[f'{m}_base_per_emitted']:>13.3f} {r[f'{m}_emitted_over_canonical']:>11.3f} "
            f"{r[f'{m}_plain_bytes_per_token']:>12.2f} {r[f'{m}_z2z_bytes_per_token']:>10.2f}   "
            for m in ("greedy", "sampled")
        )
        lines.append(f"{r['domain']:<13} {r['input_ratio']:>11.3f} {cells}")
    lines.append("\n3. next-line completion, greedy, exact match (± standard error)")
    lines.append(f"{'task':<13} {'items':>6} {'plain':>14} {'z2z':>14} {'both':>6}")
    for r in report["task"]:
        lines.append(f"{r['domain']:<13} {r['items']:>6} {r['plain_exact']:>7.3f} ±{r['plain_stderr']:.3f} "
                     f"{r['z2z_exact']:>7.3f} ±{r['z2z_stderr']:.3f} {r['both']:>6.3f}")
    chat = report["chat"]
    lines.append(f"\n4. chat, {chat['prompts']} fixed prompts, greedy, {CHAT_MAX_TOKENS} tokens: doubled words or "
                 "phrases (answers with any)")
    lines.append(f"{'plain':>8} {chat['plain_doubled']:>4} ({chat['plain_answers_with_doubles']})   "
                 f"{'z2z':>4} {chat['z2z_doubled']:>4} ({chat['z2z_answers_with_doubles']})")
    return "\n".join(lines)


def write_png(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    bpb = report["bits_per_byte"]
    x = range(len(bpb))
    axes[0].bar([i - 0.2 for i in x], [r["base_bpb"] for r in bpb], 0.4, label="base")
    axes[0].bar([i + 0.2 for i in x], [r["z2z_bpb"] for r in bpb], 0.4, label="z2z (upper bound)")
    axes[0].set_xticks(list(x), [r["domain"] for r in bpb], rotation=20)
    axes[0].set_ylabel("bits per byte (held-out)")
    axes[0].legend()
    comp = report["compression"]
    x = range(len(comp))
    axes[1].bar([i - 0.2 for i in x], [1 / r["input_ratio"] for r in comp], 0.4, label="input: base / z2z tokens")
    axes[1].bar([i + 0.2 for i in x], [r["sampled_base_per_emitted"] for r in comp], 0.4,
                label="output: base tokens per emitted (sampled)")
    axes[1].axhline(1.0, color="grey", linewidth=0.8)
    axes[1].set_xticks(list(x), [r["domain"] for r in comp], rotation=20)
    axes[1].set_ylabel("base tokens per z2z token")
    axes[1].legend(fontsize=8)
    task = report["task"]
    x = range(len(task))
    for offset, model in ((-0.2, "plain"), (0.2, "z2z")):
        axes[2].bar([i + offset for i in x], [r[f"{model}_exact"] for r in task], 0.4,
                    yerr=[r[f"{model}_stderr"] for r in task], label=model, capsize=3)
    axes[2].set_xticks(list(x), [f"next line: {r['domain']}" for r in task])
    axes[2].set_ylabel("exact match")
    axes[2].legend()
    fig.suptitle(f"{Path(report['conditions']['z2z_weights']).name} vs {report['conditions']['base_model']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Knobs]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, help="a `z2z pack` folder (default: the shipped z2z-smollm2-135m)")
    parser.add_argument("--models-dir", type=Path, default=Path("models"), help="where `z2z build-model` writes")
    parser.add_argument("--size", choices=SIZES, default="full", help="knobs: quick (a smoke run of a few minutes), "
                        "ablation (~10 min, for comparing recipes) or full (~30 min)")
    parser.add_argument("--quick", action="store_true", help="the same as --size quick")
    parser.add_argument("--domains", nargs="+", help="z2z_vllm.data domains (default: all)")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16", help="vLLM engines' dtype")
    parser.add_argument("--threads", type=int, default=2, help="OMP/torch threads")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write conditions and all rows here")
    parser.add_argument("--png", type=Path, metavar="PATH", help="write the three charts here")
    args = parser.parse_args(argv)
    return args, SIZES["quick" if args.quick else args.size]


def main(argv: list[str] | None = None) -> int:
    args, knobs = parse_args(argv)
    os.environ.update({**engine_env(), "OMP_NUM_THREADS": str(args.threads)})  # before torch loads
    from z2z_vllm.data import DOMAINS
    from z2z_vllm.modeling.config import Zip2ZipConfig
    from z2z_vllm.weights import build_model, shipped_weights_dir

    weights = (args.weights or shipped_weights_dir()).resolve()
    built = build_model(args.models_dir, weights=weights)
    train_config = json.loads((weights / "train_config.json").read_text())
    domains = list(args.domains or DOMAINS)
    config = Zip2ZipConfig.load(weights)
    conditions = {
        "z2z_weights": str(weights), "base_model": train_config["base_model"],
        "z2z_codec": f"V={config.initial_vocab_size} C={config.max_codebook_size} M={config.max_subtokens}",
        "trained_domains": sorted(train_config.get("domains") or [train_config.get("domain")]),
        **asdict(knobs), "vllm_dtype": args.dtype, "threads": args.threads,
        "task_sampling": f"greedy, max {TASK_MAX_TOKENS} tokens",
        "machine": platform.platform(), "cpu": cpu_model(), "load_average_at_start": load_average(),
        "vllm": package_version("vllm-cpu") if package_version("vllm") == "not installed" else package_version("vllm"),
        "torch": package_version("torch"), "z2z-vllm": package_version("z2z-vllm"),
    }  # fmt: skip
    for key, value in conditions.items():
        print(f"{key:<22} {value}")
    sys.stdout.flush()
    started = time.perf_counter()

    import torch

    from z2z_vllm.training.trainer import use_bf16

    torch.set_num_threads(args.threads)
    conditions["bits_per_byte_bf16"] = use_bf16("auto", torch.device("cpu"))  # float32 where bf16 is emulated
    bpb = bits_per_byte_rows(weights, domains, knobs, bf16=conditions["bits_per_byte_bf16"])
    print(f"bits per byte done ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    prompts = {d: corpus_prompts(d, count=knobs.prompts, chars=knobs.prompt_chars) for d in domains}
    tasks = {
        d: next_line_items(d, suffixes, count=knobs.task_items, context_chars=knobs.task_context_chars)
        for d, suffixes in TASK_DOMAINS.items() if d in domains
    }  # fmt: skip
    max_model_len = 2048
    runs = {
        name: run_model(folder, dtype=args.dtype, prompts=prompts, tasks=tasks, max_tokens=knobs.max_tokens,
                        max_model_len=max_model_len)
        for name, folder in (("plain", built.plain), ("z2z", built.z2z))
    }  # fmt: skip
    conditions["load_average_at_end"] = load_average()
    conditions["seconds"] = round(time.perf_counter() - started, 1)
    report = {
        "conditions": conditions,
        "bits_per_byte": bpb,
        "compression": compression_rows(runs, config.codec(), domains),
        "task": task_rows(runs, tasks),
        "chat": chat_rows(runs),
    }
    print(format_tables(report))
    print(f"\nload average at end: {conditions['load_average_at_end']}, {conditions['seconds']} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.png:
        write_png(report, args.png)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
