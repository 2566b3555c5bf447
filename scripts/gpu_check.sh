#!/usr/bin/env bash
# The GPU checks in one command, for a lent GPU host (H100 / H200) that has PyTorch with CUDA,
# Triton and transformers, but no vLLM and no package registry. Under 8 minutes on an H200:
#
#   1. builds the codec and the CUDA extension in place (Z2Z_BUILD_CUDA=1, setup.py, kernels/);
#   2. pytest -m gpu tests/ops tests/gpu: kernels against their references, the serving slots'
#      device path against the host path with CUDA tensors, greedy decoding through the slots
#      with kernels on == off == the HF-level generation on CUDA;
#   3. benchmarks/gpu_kernels.py: each kernel checked, then timed (the table it prints).
#
#   bash scripts/gpu_check.sh --prepare   # here, with the registry: fetch the pure-Python wheels
#                                         # the GPU host may lack (pybind11, pytest) into
#                                         # .cache/gpu-check/wheels (~2 MB; carry .cache/gpu-check)
#   bash scripts/gpu_check.sh             # on the GPU host; results under ${OUT:-results}/
#   bash scripts/gpu_check.sh --dry-run   # anywhere (CI): prints the plan and checks that every
#                                         # file it uses exists and that the gpu tests collect
#
# The vLLM plugin itself cannot run there (no vLLM): tests/vllm covers it on CPU, with CUDA's
# defaults simulated (tests/vllm/test_cuda_defaults.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-results}
DEPS=.cache/gpu-check
WHEELS="pybind11 pytest pluggy iniconfig packaging exceptiongroup tomli"
GPU_TESTS="tests/ops tests/gpu"
FILES="setup.py kernels/codebook_update.cu kernels/codebook_update_binding.cpp kernels/codebook_update.cuh
csrc/lzw.cpp csrc/bindings.cpp tests/ops tests/gpu/test_cuda_paths.py benchmarks/gpu_kernels.py"
MODE=${1:-run}

step() { printf '\n== %s\n' "$*"; }

plan() {
  step "plan"
  echo "1. build: Z2Z_BUILD_CUDA=1 $PYTHON setup.py -q build_ext --inplace  (codec + z2z_vllm._cuda_ops)"
  echo "2. tests: $PYTHON -m pytest -q -m gpu $GPU_TESTS"
  echo "3. bench: $PYTHON benchmarks/gpu_kernels.py --no-build --json $OUT/gpu_kernels.json"
  for path in $FILES; do
    [ -e "$path" ] || { echo "missing: $path" >&2; exit 1; }
  done
  echo "files present: $FILES" | tr '\n' ' '; echo
}

case "$MODE" in
  --prepare)
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$DEPS/wheels" $WHEELS
    du -sh "$DEPS/wheels"
    ;;
  --dry-run)
    plan
    step "gpu tests collected (run on a GPU, skipped here)"
    collected=$("$PYTHON" -m pytest -q -m gpu --collect-only $GPU_TESTS -p no:cacheprovider | tail -n 1)
    echo "$collected"
    case "$collected" in
      [1-9]*" tests collected"*) ;;
      *) echo "no gpu-marked tests collected in $GPU_TESTS" >&2; exit 1 ;;
    esac
    "$PYTHON" benchmarks/gpu_kernels.py --help > /dev/null
    echo "dry run ok"
    ;;
  run)
    plan
    "$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())"
    missing=$("$PYTHON" - <<'PY'
import importlib.util
print(" ".join(m for m in ("pybind11", "pytest") if importlib.util.find_spec(m) is None))
PY
)
    if [ -n "$missing" ]; then
      step "installing $missing from $DEPS/wheels (no registry)"
      "$PYTHON" -m pip install --quiet --no-index --find-links "$DEPS/wheels" --target "$DEPS/site" $missing
      export PYTHONPATH="$PWD/$DEPS/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    mkdir -p "$OUT"
    step "1. build"
    SECONDS=0
    Z2Z_BUILD_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} timeout 240 "$PYTHON" setup.py -q build_ext --inplace
    "$PYTHON" -c "import z2z_vllm._cuda_ops, z2z_vllm._codec"
    echo "built in ${SECONDS} s"
    step "2. tests"
    SECONDS=0
    timeout 120 "$PYTHON" -m pytest -q -m gpu $GPU_TESTS -p no:cacheprovider | tee "$OUT/gpu_tests.txt"
    echo "tests in ${SECONDS} s"
    step "3. bench"
    SECONDS=0
    timeout 120 "$PYTHON" benchmarks/gpu_kernels.py --no-build --json "$OUT/gpu_kernels.json" | tee "$OUT/gpu_kernels.txt"
    echo "bench in ${SECONDS} s"
    ;;
  *)
    echo "usage: $0 [--prepare | --dry-run]" >&2
    exit 2
    ;;
esac
