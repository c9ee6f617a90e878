#!/bin/bash
# Prepared in s32 for the next session (not run): main (SHA=) — nf4lora.fuse_model_ops on the GPU for the first time:
# full build (the e2e trains through the C++ node); tests/test_fused_ops.py (bf16 and the real-shape test run here
# only); bench/model_ops_time.py (the fused norm / SwiGLU fwd+bwd against PyTorch's at 8192 tokens); then the e2e
# training step at micro-batch 4, stacks nf4lora and nf4lora_fused in one call (--profile: the fused step's top
# kernels). bnb_peft for issue 6's ratio: in the same call where time allows (carry [".whl"]; add it to --stacks).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 120 python3 -m pytest -q -p no:cacheprovider -rs tests/test_fused_ops.py > /tmp/o/tests.txt 2>&1; echo "tests rc $?"; tail -1 /tmp/o/tests.txt
timeout 60 python3 bench/model_ops_time.py --out /tmp/o/model_ops.jsonl; echo "model_ops rc $?"
tar -czf $OUT/next_run3.tgz -C /tmp o
timeout 360 python3 bench/bench_e2e.py --out /tmp/o/e2e --stacks ${STACKS:-nf4lora,nf4lora_fused} --batches 4 --steps 3 \
  --decode-tokens 8 --loss-steps 0 --profile > /tmp/o/e2e.log 2>&1; echo "e2e rc $?"; grep -E "tok/s|skipping" /tmp/o/e2e.log
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/next_run3.tgz -C /tmp o
