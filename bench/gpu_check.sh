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
# The host-bound fwd+bwd step (M <= 1024): the C++ autograd node, the Python Function and dense_bf16
# interleaved in one process (do_bench walls of separate runs drift ±10-30% there), with LoRA
# dropout off and at 0.1.
{ "$PY" bench/step_ab.py && "$PY" bench/step_ab.py --dropout 0.1 --shapes 128x4096x4096,1024x4096x4096; } \
    > "$out/step_ab.jsonl" || echo "bench/step_ab.py failed (see above); $out/step_ab.jsonl is incomplete"
# The small-M forward's GPU time against the copy bandwidth (issues 3 and 5), from CUDA graphs over
# distinct weights: the kernels' time, where the grid's do_bench walls are host time.
"$PY" bench/gemv_time.py --roof --out "$out/gemv_time.jsonl" > /dev/null \
    || echo "bench/gemv_time.py failed (see above); $out/gemv_time.jsonl is incomplete"
# Issue 5's dispatch table: the forward on every backend that can run it, side by side (the rows
# join the summary), then the table of the fastest per shape and M. The package ships a copy
# (python/nf4lora/data/, checked against its sources by tests/test_dispatch.py).
"$PY" bench/bench_qlora.py --out "$out" --ranks 16 --modes fwd --providers nf4lora_cuda,nf4lora_triton \
    --tag dispatch
"$PY" bench/make_dispatch_table.py "$out/results-dispatch.jsonl" --out "$out/dispatch_$gpu.json" \
    || echo "no dispatch table written (fewer than two backends ran the forward here)"
exit "$status"
