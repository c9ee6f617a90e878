#!/usr/bin/env bash
# The GPU runner behind `make gpu-check`: on a CUDA machine where python3 imports torch (no
# network needed) install nf4lora without deps, build the CUDA extension, run every test
# including the `gpu` ones, run the benchmark, and write it all under bench/results/<gpu>/.
#   bench/gpu_check.sh [extra bench_qlora.py arguments, e.g. --quick]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
gpu=$("$PY" -c "import torch; print(torch.cuda.get_device_name().split()[-1].lower())")
out="bench/results/$gpu"
mkdir -p "$out"
"$PY" -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -n 20
{ "$PY" -m nf4lora info; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv; } | tee "$out/info.txt"
# Triton compiles a kernel per constexpr combination; spread the tests over processes when
# pytest-xdist is there (they share Triton's on-disk cache).
par=""
"$PY" -c "import xdist" 2>/dev/null && par="-n ${NF4LORA_TEST_WORKERS:-8}"
set +e
"$PY" -m pytest -q -rs $par tests 2>&1 | tee "$out/tests.txt"
status=${PIPESTATUS[0]}
set -e
"$PY" bench/bench_qlora.py --out "$out" "$@"
exit "$status"
