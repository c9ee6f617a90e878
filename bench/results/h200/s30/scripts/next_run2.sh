#!/bin/bash
# Prepared in s30 for the next session (not run yet): branch wip-q-zfill — fetch_q_async's nested tail word by
# cp.async with src-size (zeros after the last code byte) instead of a plain byte load and a shift, so no
# instruction of the producers' loops reads a load's register (s27's ncu of the dx RS kernel: that shift, though
# predicated off on almost every call, was its most stalled instruction, 2.5% of the samples, and the consumers
# wait on the full barriers ~4%). NF4LORA_Q_ZFILL=0 runs the form before. Preparation on the CPU machine:
#   echo .s31/ >> .git/info/exclude; rm -rf .s31/zfill && mkdir -p .s31/zfill && git archive wip-q-zfill | tar -x -C .s31/zfill
#   git rev-parse --short wip-q-zfill > .s31/zfill.sha
# then `bash bench/results/h200/s30/scripts/next_run2.sh` with carry [".s31"] (~5 minutes with a cold start).
t0=$(date +%s); mkdir -p /tmp/o
cd .s31/zfill && export NF4LORA_GIT_SHA=$(cat ../zfill.sha) NODE=0 && source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
# the tail path itself (320x261: 1305 blocks) and everything else that fetches scales through cp.async, default (zfill)
timeout 200 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_mma.py tests/test_cuda_dx.py tests/test_cuda_gemv.py > /tmp/o/tests.txt 2>&1; echo "tests rc $?"; tail -1 /tmp/o/tests.txt
grep -E "FAILED|Error" /tmp/o/tests.txt | head -5
tar -czf $OUT/next_run2.tgz -C /tmp o
timeout 120 python3 bench/dx_ab.py --variants rs --env NF4LORA_Q_ZFILL=0,1 --shapes "4096,4096,14336;4096,14336,4096;4096,8192,28672;16384,4096,14336" --out /tmp/o/dx_zfill.jsonl > /tmp/o/dx_zfill.log 2>&1; echo "dx rc $?"; cat /tmp/o/dx_zfill.jsonl
timeout 120 python3 bench/rs_ab.py --env NF4LORA_Q_ZFILL=0,1 --shapes "4096,4096,14336;4096,14336,4096;4096,8192,28672;16384,4096,14336" --out /tmp/o/rs_zfill.jsonl > /tmp/o/rs_zfill.log 2>&1; echo "rs rc $?"; cat /tmp/o/rs_zfill.jsonl
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/next_run2.tgz -C /tmp o
