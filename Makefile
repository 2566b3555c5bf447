# Quick start:  make demo   (set up, then serve a z2z SmolLM2 with vLLM and query it with curl)
#               make test   (set up, then run the test suite: what CI runs)
PYTHON ?= python3
# The CPU build that lies on these machines; a bare `torch` requirement would pull a CUDA build.
# With Z2Z_VLLM_TARGET=cuda, the CUDA build vllm 0.33.0 pins (scripts/install_vllm.sh).
TORCH  ?= $(if $(filter cuda,$(Z2Z_VLLM_TARGET)),torch==2.14.0,torch==2.13.0)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The bundled model: SmolLM2-135M-Instruct + the z2z weights shipped in z2z_vllm/weights/.
# `z2z build-model` writes it into MODELS_DIR and registers its name: the demo serves the name.
MODELS_DIR := models
DEMO_MODEL := z2z-smollm2-135m
# The CUDA vLLM release, downloaded (not installed: CUDA-only) so that tests/vllm/test_patches.py
# checks its source too; ~340 MB, ~10 s. Keep the version in step with tests/vllm/vllm_source.py.
VLLM_CUDA_VERSION := 0.33.0
VLLM_WHEEL_DIR    := .cache/vllm-wheels

.PHONY: setup demo test bench fuzz clean vllm-wheel

setup: $(STAMP)

# Reinstall when the build inputs change; the native codec is rebuilt by the editable install.
$(STAMP): pyproject.toml setup.py $(wildcard csrc/*) scripts/install_data_sources.sh scripts/install_vllm.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=70" wheel "pybind11>=2.12"
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet --no-build-isolation -e ".[data,model,train,bench,test]"
	$(BIN)/python -m pip install --quiet --no-deps zip2zip==0.2.0
	PYTHON=$(BIN)/python bash scripts/install_vllm.sh
	PYTHON=$(BIN)/python bash scripts/install_data_sources.sh
	touch $@

demo: setup
	$(BIN)/z2z build-model --out-dir $(MODELS_DIR)
	VLLM=$(BIN)/vllm bash scripts/serve_demo.sh $(DEMO_MODEL)

vllm-wheel: | $(STAMP)
	ls $(VLLM_WHEEL_DIR)/vllm-$(VLLM_CUDA_VERSION)-*.whl > /dev/null 2>&1 \
	  || $(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: "vllm==$(VLLM_CUDA_VERSION)" -d $(VLLM_WHEEL_DIR)

# CI=true: the test of the CUDA wheel's source fails (not skips) if the wheel is missing.
test: setup vllm-wheel
	CI=true $(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/codec_bench.py --json results/codec_bench.json
	$(BIN)/python benchmarks/compression_report.py --json results/compression_report.json --png results/compression_report.png
	$(BIN)/python benchmarks/slots_bench.py --json results/slots_bench.json
	$(BIN)/python benchmarks/train_bench.py --batch-size 1 --json results/train_bench.json
	$(BIN)/z2z build-model --out-dir $(MODELS_DIR)
	$(BIN)/python benchmarks/quality_report.py --json results/quality_report.json --png results/quality_report.png
	$(BIN)/python benchmarks/serve_bench.py --plain $(MODELS_DIR)/smollm2-135m --json results/serve_bench.json

fuzz: setup
	$(BIN)/python tests/codec/fuzz_codec.py -atheris_runs=1000000 -print_final_stats=1

clean:
	rm -rf build $(VENV) *.egg-info z2z_vllm/*.so
