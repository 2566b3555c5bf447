"""The kernels of ``z2z_vllm.ops`` against their torch references: correctness, then time and
bandwidth, at serving sizes on a GPU (or tiny sizes on CPU under Triton's interpreter).

    python benchmarks/gpu_kernels.py --json results/gpu_kernels.json   # GPU, builds what it needs
    python benchmarks/gpu_kernels.py --cpu-interpret                    # CPU (also without CUDA)

GPU sizes: a decode step of 256 requests, codebooks of C = 2048 entries of M = 4 ids, hidden
size 4096, bf16, base vocabulary 32000. Without the CUDA extension (``z2z_vllm._cuda_ops``) or
the codec for this Python, it first runs ``Z2Z_BUILD_CUDA=1 setup.py build_ext --inplace``.

Each kernel is checked on fresh random inputs before it is timed (integers exactly, floats by
||out - ref|| / ||ref|| against a float64 reference). Times are medians of device-event
intervals around CUDA-graph replays of several calls (launch gaps out; inputs rotate through
sets larger than L2 where a kernel only reads); the torch codebook reference synchronises with
the host, so it is timed call by call. Bytes are each kernel's minimum (inputs read once,
outputs written once, undefined entries not read); bandwidth is compared with a device-to-device
copy measured in the same run. On CPU the same script runs end to end with wall-clock times,
which say nothing about GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Sizes:
    requests: int  # B: one id / one logits row / one new entry per request
    slots: int  # S
    codebook: int  # C
    subtokens: int  # M
    hidden: int  # H
    vocab: int  # V
    dtype: str


GPU_SIZES = Sizes(requests=256, slots=256, codebook=2048, subtokens=4, hidden=4096, vocab=32000, dtype="bfloat16")
CPU_SIZES = Sizes(requests=4, slots=6, codebook=64, subtokens=4, hidden=64, vocab=100, dtype="bfloat16")


@dataclass
class Row:
    kernel: str
    impl: str
    time_us: float
    bytes: int
    check: str  # "exact", "rel 1.2e-03", or "reference"

    @property
    def gbps(self) -> float:
        return self.bytes / self.time_us / 1e3


# -- setup ----------------------------------------------------------------------------------


def build_if_needed() -> None:
    """Builds the codec for this Python and the CUDA extension, unless both are there."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    have = [(ROOT / "z2z_vllm" / f"{name}{suffix}").exists() for name in ("_codec", "_cuda_ops")]
    if all(have):
        return
    print("building z2z_vllm._codec and z2z_vllm._cuda_ops ...", flush=True)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=ROOT, env=dict(os.environ, Z2Z_BUILD_CUDA="1"), check=True,
    )  # fmt: skip
    print(f"built in {time.perf_counter() - start:.0f} s", flush=True)


def copy_bandwidth(device: str) -> float:
    """GB/s of a large device-to-device copy (bytes read + written)."""
    n = (1 << 28) if device == "cuda" else (1 << 24)  # 1 GiB / 64 MiB of float32
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    seconds = statistics.median(wall_or_event_times(lambda: dst.copy_(src), device, reps=10))
    return 2 * src.numel() * 4 / seconds / 1e9


def wall_or_event_times(fn: Callable[[], object], device: str, *, reps: int, reset=None) -> list[float]:
    """Seconds per call, call by call (events on CUDA, wall clock on CPU), after a warm-up."""
    if reset:
        reset()
    fn()
    times = []
    for _ in range(reps):
        if reset:
            reset()
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def graph_time_us(fn: Callable[[int], object], *, calls: int, reps: int = 20, reset=None) -> float:
    """Median device time of one call, from event-timed replays of a CUDA graph holding
    ``fn(0) .. fn(calls - 1)``; ``reset`` runs before each replay, outside the timing."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up (and Triton compilation) off the capture
        for i in range(min(calls, 3)):
            if reset:
                reset()
            fn(i)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    if reset:
        reset()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(calls):
            fn(i)
    times = []
    for _ in range(reps):
        if reset:
            reset()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / calls)
    return statistics.median(times)


def time_us(fn: Callable[[int], object], device: str, *, calls: int, reset=None, graph: bool = True) -> float:
    if device == "cuda" and graph:
        return graph_time_us(fn, calls=calls, reset=reset)
    times = wall_or_event_times(lambda: fn(0), device, reps=5 if device == "cpu" else 20, reset=reset)
    return statistics.median(times) * 1e6


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out.double() - ref).norm() / ref.norm()).item()


def float_check(out: torch.Tensor, ref64: torch.Tensor, tolerance: float) -> str:
    error = relative_error(out, ref64)
    if error >= tolerance:
        raise AssertionError(f"relative error {error:.2e} >= {tolerance:.0e}")
    return f"rel {error:.1e}"


# -- kernels --------------------------------------------------------------------------------


def bench_compose(sizes: Sizes, device: str, dtype: torch.dtype, tolerance: float) -> list[Row]:
    from z2z_vllm.ops import compose

    N, M, H, V = sizes.requests, sizes.subtokens, sizes.hidden, sizes.vocab
    g = torch.Generator(device=device).manual_seed(0)
    table = torch.randn(V, H, device=device, generator=g).to(dtype)
    positions = torch.randn(M, H, device=device, generator=g).to(dtype)
    delta = torch.randn(N, H, device=device, generator=g).to(dtype)
    sets = 24 if device == "cuda" else 1  # 24 x 256 x 4 x 4096 x 2 B = 200 MB of rows > L2

    def entries() -> torch.Tensor:  # lengths 1..M, left-aligned, -1 padded
        ids = torch.randint(0, V, (N, M), device=device, generator=g)
        lengths = torch.randint(1, M + 1, (N,), device=device, generator=g)
        return ids.masked_fill(torch.arange(M, device=device) >= lengths[:, None], -1)

    id_sets = [entries() for _ in range(sets)]
    ids = id_sets[0]
    element = table.element_size()
    real_rows = int((ids >= 0).sum()) * H * element
    id_bytes = ids.numel() * ids.element_size()

    def gather(ids, table, positions, **backend):
        return compose.gather_subtokens(ids, table, positions=positions, **backend)[0]

    def gather_reference(ids, table, positions):
        return compose.gather_subtokens_reference(ids, table, positions=positions)[0]

    # kernel, op, its reference, arguments after ids, minimum bytes
    cases = [
        ("gather+positions", gather, gather_reference, (table, positions),
         id_bytes + real_rows + M * H * element + N * M * (H * element + 1)),
        ("mean encoder", compose.mean_encode, compose.mean_encode_reference, (table,),
         id_bytes + real_rows + N * H * element),
        ("residual combine", compose.residual_combine, compose.residual_combine_reference, (table, delta),
         id_bytes + 3 * N * H * element),  # first rows, delta, output
    ]  # fmt: skip
    rows = []
    for kernel, op, reference, operands, min_bytes in cases:
        out = op(ids, *operands, backend="triton")
        if torch.equal(out, reference(ids, *operands)):
            check = "exact"
        else:
            check = float_check(out, reference(ids, *(t.double() for t in operands)), tolerance)
        triton_us = time_us(lambda i: op(id_sets[i], *operands, backend="triton"), device, calls=sets)
        torch_us = time_us(lambda i: reference(id_sets[i], *operands), device, calls=sets)
        rows += [Row(kernel, "triton", triton_us, min_bytes, check)]
        rows += [Row(kernel, "torch", torch_us, min_bytes, "reference")]
    return rows


def random_codebooks(sizes: Sizes, device: str, g: torch.Generator):
    """A CodebookState whose slots hold C/2 .. C-64 distinct entries and a non-empty buffer."""
    from z2z_vllm.ops import CodebookState

    S, C, M, V = sizes.slots, sizes.codebook, sizes.subtokens, sizes.vocab
    state = CodebookState.empty(
        num_slots=S, vocab_size=V, codebook_size=C, max_subtokens=M, disabled_ids=(0, 1), device=device
    )
    low, high = (C // 2, C - 64) if C > 128 else (C // 4, C // 2)
    n = torch.randint(low, high + 1, (S,), device=device, generator=g)
    lengths = torch.randint(2, M + 1, (S, C), device=device, generator=g)
    entries = torch.randint(2, V, (S, C, M), device=device, generator=g)
    used = torch.arange(C, device=device)[None, :] < n[:, None]
    entries = entries.masked_fill((torch.arange(M, device=device) >= lengths[..., None]) | ~used[..., None], -1)
    state.entries.copy_(entries)
    state.num_entries.copy_(n)
    state.known_at.copy_(torch.where(used, torch.arange(C, device=device), state.known_at))
    buffer_len = torch.randint(1, M, (S,), device=device, generator=g)
    buffer = torch.randint(2, V, (S, M), device=device, generator=g)
    state.buffer.copy_(buffer.masked_fill(torch.arange(M, device=device) >= buffer_len[:, None], -1))
    state.buffer_len.copy_(buffer_len)
    return state


def step_ids(state, sizes: Sizes, device: str, g: torch.Generator, *, every_kind: bool):
    """ids, slots, positions of a step: base ids and defined entries (plus, with ``every_kind``,
    KwKwK ids, disabled, invalid ids and padding rows, for the checks)."""
    B, V, C = sizes.requests, sizes.vocab, sizes.codebook
    slots = torch.randperm(state.num_entries.shape[0], device=device, generator=g)[:B]
    n = state.num_entries[slots].long()
    base = torch.randint(0, V, (B,), device=device, generator=g)
    entry = V + (torch.rand(B, device=device, generator=g) * n).long()
    kinds = torch.randint(0, 6 if every_kind else 2, (B,), device=device, generator=g)
    choices = torch.stack([base, entry, V + n, torch.zeros_like(n), torch.full_like(n, V + C), torch.full_like(n, -1)])
    ids = choices.gather(0, kinds[None])[0]
    if every_kind:
        slots = torch.where(torch.rand(B, device=device, generator=g) < 0.05, -1, slots)
    positions = torch.randint(0, 1 << 20, (B,), device=device, generator=g)
    return ids.int(), slots.int(), positions.int()


def bench_codebook(sizes: Sizes, device: str) -> list[Row]:
    from z2z_vllm.ops import CodebookState, codebook_update
    from z2z_vllm.ops._cuda import extension
    from z2z_vllm.ops.codebook import codebook_update_reference

    g = torch.Generator(device=device).manual_seed(1)
    snapshot = random_codebooks(sizes, device, g)
    impls = ["triton"] + (["cuda"] if device == "cuda" and extension() is not None else [])

    def copy_state(dst, src) -> None:
        for a, b in zip(vars(dst).values(), vars(src).values()):
            a.copy_(b)

    def fresh() -> CodebookState:
        return CodebookState(*(t.clone() for t in vars(snapshot).values()))

    checks = {}
    for impl in impls:  # three steps in a row, each checked, every kind of id
        state, expected = fresh(), fresh()
        for _ in range(3):
            ids, slots, positions = step_ids(expected, sizes, device, g, every_kind=True)
            want = codebook_update_reference(expected, ids, slots, positions)
            got = codebook_update(state, ids, slots, positions, backend=impl)
            for name, a, b in zip(want._fields, got, want):
                assert torch.equal(a, b), f"{impl}: {name} differs from the reference"
            for name in vars(state):
                assert torch.equal(getattr(state, name), getattr(expected, name)), f"{impl}: state.{name} differs"
        checks[impl] = "exact"

    # Timing: consecutive decode steps, each on its own copy of the state (no L2 reuse between
    # calls), all copies reset from the snapshot before each replay.
    calls = 16 if device == "cuda" else 1
    states = [fresh() for _ in range(calls)]
    steps = [step_ids(snapshot, sizes, device, g, every_kind=False) for _ in range(calls)]

    def reset() -> None:
        for state in states:
            copy_state(state, snapshot)

    ids, slots, _ = steps[0]
    scanned = int(snapshot.num_entries[slots.long()].sum())
    B, M = sizes.requests, sizes.subtokens
    # Reads: each request's entries once, its id, slot, position, count, buffer (+ length), the
    # entry its id names and a disabled flag; writes: an entry, its position, count, buffer and
    # length, then expansion, created and candidate.
    reads = 4 * scanned * M + B * (4 * 5 + 4 * M * 2 + 1)
    writes = B * (4 * M * 2 + 4 * 3) + B * (4 * M * 2 + 4)
    min_bytes = reads + writes
    rows = []
    for impl in impls:
        t = time_us(
            lambda i, impl=impl: codebook_update(states[i], *steps[i], backend=impl), device, calls=calls, reset=reset
        )
        rows.append(Row("codebook update", impl, t, min_bytes, checks[impl]))
    # The reference synchronises with the host (boolean indexing): timed call by call.
    t = time_us(lambda i: codebook_update_reference(states[0], *steps[0]), device, calls=1, reset=reset, graph=False)
    rows.append(Row("codebook update", "torch", t, min_bytes, "reference"))
    return rows


def bench_logits(sizes: Sizes, device: str, dtype: torch.dtype, tolerance: float) -> list[Row]:
    from z2z_vllm.ops import hyper_logits
    from z2z_vllm.ops.logits import hyper_logits_reference

    N, S, C, H, V = sizes.requests, sizes.slots, sizes.codebook, sizes.hidden, sizes.vocab
    g = torch.Generator(device=device).manual_seed(2)
    # The row table without sharing (S x C distinct rows): the most bytes a step can read.
    rows = (torch.randn(S * C, H, device=device, generator=g) * 0.05).to(dtype)
    index = torch.randperm(S * C, device=device, generator=g).view(S, C).int()
    hidden = torch.randn(N, H, device=device, generator=g).to(dtype)
    candidate_rows = (torch.randn(S, H, device=device, generator=g) * 0.05).to(dtype)
    num_entries = torch.randint(0, C + 1, (S,), device=device, generator=g).int()
    has_candidate = torch.rand(S, device=device, generator=g) < 0.5
    row_slots = torch.randperm(S, device=device, generator=g)[:N].int()
    logits = torch.randn(N, V + C, device=device, generator=g).to(dtype)
    of_row = row_slots.long()  # the kernel reads mask state per logits row
    args = (hidden, rows, index, row_slots, num_entries[of_row], candidate_rows[of_row], has_candidate[of_row])

    base = logits[:, :V].clone()
    logits[:, V:] = float("nan")  # poison: every hyper column must be written
    hyper_logits(*args, logits, backend="triton")
    assert torch.equal(logits[:, :V], base), "base columns changed"
    k = min(N, 16)  # the float64 reference on a subset of rows (all of them would be 17 GB)
    picked = row_slots[:k].long()
    ref = hyper_logits_reference(
        hidden[:k].double(), rows[index[picked].long()].view(k * C, H).double(),
        torch.arange(k * C, device=device).view(k, C).int(), torch.arange(k, device=device), num_entries[picked],
        candidate_rows[picked].double(), has_candidate[picked],
        torch.zeros(k, V + C, dtype=torch.float64, device=device),
    )[:, V:]  # fmt: skip
    got = logits[:k, V:]
    defined = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(got), defined) and (got[~defined] == float("-inf")).all(), "mask differs"
    check = float_check(got[defined], ref[defined], tolerance)

    slot = row_slots.long()
    used = num_entries[slot].long() + (has_candidate[slot] & (num_entries[slot] < C)).long()
    element = rows.element_size()
    # Rows of defined entries (and their index entries) and candidates, hidden, the hyper columns;
    # slot, count, flag per row.
    min_bytes = (int(used.sum()) + N) * H * element + int(used.sum()) * 4 + N * C * logits.element_size() + N * 9
    calls = 4 if device == "cuda" else 1  # rows: 256 x ~1024 x 4096 x 2 B = 2 GB a call, far over L2
    triton_us = time_us(lambda i: hyper_logits(*args, logits, backend="triton"), device, calls=calls)
    torch_us = time_us(lambda i: hyper_logits_reference(*args, logits), device, calls=1)
    return [
        Row("hyper logits", "triton", triton_us, min_bytes, check),
        Row("hyper logits", "torch", torch_us, min_bytes, "reference"),
    ]


# -- report ---------------------------------------------------------------------------------


def _si(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g} {unit}"
        n /= 1000


def table(rows: list[Row], copy_gbps: float) -> str:
    reference = {r.kernel: r.time_us for r in rows if r.impl == "torch"}
    lines = [
        f"{'kernel':<18} {'impl':<7} {'time us':>10} {'min bytes':>10} {'GB/s':>8} {'% copy':>7} "
        f"{'vs torch':>9}  check",
    ]
    for r in rows:
        speedup = reference[r.kernel] / r.time_us
        lines.append(
            f"{r.kernel:<18} {r.impl:<7} {r.time_us:>10.1f} {_si(r.bytes):>10} {r.gbps:>8.2f} "
            f"{100 * r.gbps / copy_gbps:>6.1f}% {speedup:>8.2f}x  {r.check}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-interpret", action="store_true", help="CPU, Triton interpreter, tiny sizes")
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "gpu_kernels.json")
    parser.add_argument("--no-build", action="store_true", help="do not build missing extensions")
    args = parser.parse_args()

    device = "cpu" if args.cpu_interpret or not torch.cuda.is_available() else "cuda"
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (by z2z_vllm.ops)
    elif not args.no_build:
        build_if_needed()
    sys.path.insert(0, str(ROOT))

    sizes = GPU_SIZES if device == "cuda" else CPU_SIZES
    dtype = getattr(torch, sizes.dtype)
    tolerance = 1e-2 if dtype == torch.bfloat16 else 1e-5
    torch.manual_seed(0)
    copy_gbps = copy_bandwidth(device)
    rows = bench_compose(sizes, device, dtype, tolerance)
    rows += bench_codebook(sizes, device)
    rows += bench_logits(sizes, device, dtype, tolerance)

    import triton

    from z2z_vllm.ops._cuda import extension

    report = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (Triton interpreter)",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda_extension": extension() is not None,
        "sizes": asdict(sizes),
        "copy_gbps": copy_gbps,
        "rows": [dict(asdict(r), gbps=r.gbps) for r in rows],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\n{report['device']}, torch {torch.__version__}, triton {triton.__version__}; sizes {asdict(sizes)}")
    print(f"device copy bandwidth: {copy_gbps:.0f} GB/s (read + write); JSON: {args.json}")
    if device == "cpu":
        print("CPU interpreter run: times are wall clock of the interpreter, not kernel speed")
    print(table(rows, copy_gbps))


if __name__ == "__main__":
    main()
