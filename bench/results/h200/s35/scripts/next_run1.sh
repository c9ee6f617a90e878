#!/bin/bash
# Prepared in s35 for the next session (not run): branch wip-fuse-u (SHA=) built NODE=0, run from a checkout of the
# branch (git checkout wip-fuse-u). Its u-in-the-GEMV-grid at M <= 2, after run 8's race fix (x read with
# ld.global.cg after griddepcontrol.wait: ptxas had scheduled two .nc x loads above the ACQBULK, and the
# chained-forward test failed at M 1 / 8). The GEMV / extension tests (the chained test first of all), then
# gemv_time --env NF4LORA_FUSE_U=0,1 at M 1 / 2 on the issue shapes (run 8, before the fix and at every M <= 8:
# 0.958-0.984x at M = 1). ~3 minutes with a cold start. If the tests pass and it pays: the full suite, then land.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 120 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py tests/test_cuda_ext.py > /tmp/o/tests.txt 2>&1
echo "tests rc $?"; tail -1 /tmp/o/tests.txt; grep -E "^FAILED|Error" /tmp/o/tests.txt | head -8
tar -czf $OUT/run1.tgz -C /tmp o
timeout 120 python3 bench/gemv_time.py --brief --env NF4LORA_FUSE_U=0,1 \
  --spec "4096,4096:1/2;4096,14336:1/2;14336,4096:1/2;8192,28672:1/2;28672,8192:1" \
  --out /tmp/o/fuseu.jsonl 2>&1 | tail -10; echo "gemv_time rc ${PIPESTATUS[0]}"
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run1.tgz -C /tmp o
