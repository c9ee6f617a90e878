#!/bin/bash
# s33 run 1: main (SHA=) full build, the FULL GPU suite (first at 46f0aa6's overlapped u launch, 55615d7's launch.cuh,
# the fused model ops' GPU tests), bench/model_ops_time.py (fused norm / SwiGLU / rotary fwd+bwd vs PyTorch), then
# gemv_time --brief. carry [".whl"] (bitsandbytes for the parity tests).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 280 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/ > /tmp/o/tests.txt 2>&1; echo "tests rc $?"; tail -1 /tmp/o/tests.txt
grep -E "FAILED|Error" /tmp/o/tests.txt | head -8
echo "suite done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run1.tgz -C /tmp o
timeout 60 python3 bench/model_ops_time.py --out /tmp/o/model_ops.jsonl 2>&1 | tail -8; echo "model_ops rc $?"
tar -czf $OUT/run1.tgz -C /tmp o
timeout 90 python3 bench/gemv_time.py --brief --out /tmp/o/gemv_time.jsonl > /tmp/o/gemv_time.log 2>&1; echo "gemv rc $?"; tail -12 /tmp/o/gemv_time.log
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run1.tgz -C /tmp o
