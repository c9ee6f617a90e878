SHELL := /bin/bash
# nf4lora: the two set-up commands (README) and the GPU runner.
#   make demo       create .venv, install, run the main job (python -m nf4lora demo)
#   make test       same set-up, run the test suite
#   make gpu-check  on a CUDA machine with torch preinstalled (no network): install without deps,
#                   build the CUDA extension, run every test including `gpu` ones, run the benchmark,
#                   write everything under bench/results/<gpu>/
# Where python3 can already import torch (a GPU box), that interpreter is used as it is and the
# package is installed with --no-deps --no-build-isolation; otherwise .venv gets torch==2.13.0 (CPU).

PYTHON ?= python3
HAVE_TORCH := $(shell $(PYTHON) -c "import torch" >/dev/null 2>&1 && echo yes)
ifeq ($(HAVE_TORCH),yes)
PY := $(PYTHON)
SETUP := .setup-system
else
PY := .venv/bin/python
SETUP := .venv/.installed
endif
GPU_NAME = $(shell $(PY) -c "import torch; print(torch.cuda.get_device_name().split()[-1].lower())" 2>/dev/null)
RESULTS = bench/results/$(GPU_NAME)
SRC := $(wildcard csrc/* python/nf4lora/*.py triton_kernels/*.py) setup.py CMakeLists.txt

.PHONY: demo test gpu-check bench clean

.venv/.installed: $(SRC)
	test -x .venv/bin/python || $(PYTHON) -m venv .venv
	.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
	.venv/bin/python -m pip install -q torch==2.13.0 numpy safetensors tqdm pytest pybind11 triton transformers peft matplotlib
	.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

.setup-system: $(SRC)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

demo: $(SETUP)
	$(PY) -m nf4lora demo

test: $(SETUP)
	$(PY) -m nf4lora info
	$(PY) -m pytest -q tests

gpu-check:
	PY=$(PY) bench/gpu_check.sh $(BENCH_ARGS)

bench: $(SETUP)
	$(PY) bench/bench_qlora.py --out $(RESULTS) $(BENCH_ARGS)

clean:
	rm -rf build .venv .setup-system python/nf4lora/_C*.so *.egg-info python/*.egg-info
