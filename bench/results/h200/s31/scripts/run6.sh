#!/bin/bash
# s31 run 6: main (SHA=): the host launchers through one launch_kernel. NODE=0 build; every launch path's tests
# (test_cuda_mma / _dx / _gemv / _ext: small-M, large-M forward variants, dx variants, cluster and dependent launches).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 120 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/test_cuda_mma.py tests/test_cuda_dx.py tests/test_cuda_gemv.py tests/test_cuda_ext.py > /tmp/o/tests.txt 2>&1; echo "tests rc $?"; tail -1 /tmp/o/tests.txt
grep -E "FAILED|Error" /tmp/o/tests.txt | head -5
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run6.tgz -C /tmp o
