#!/bin/bash
# Prepared in s36 for the next session (not run): branch wip-u-release (SHA=), NODE=0. The fused grid's u hand-off
# as a release by one thread (NF4LORA_U_PROTOCOL, read at launch): 0 as on main (every u-block thread
# __threadfence, then thread 0's atomicAdd; the end count after a fence); 1 thread 0's red.release.gpu after the
# block's barrier (MEMBAR.ALL.GPU + REDG in SASS), the u blocks' end count atom.acq_rel without the separate fence;
# 2 = 1 with the row blocks' wait spinning without __nanosleep; 9 the u kernel. The GEMV tests under 1 and 2, then
# gemv_time --env NF4LORA_U_PROTOCOL=9,0,1,2 at M = 1 (s36 run 4: the u blocks' work still ~5% at 4096x4096).
# ~8 minutes with a cold start (s36 run 4: ~15 s a variant and shape); results in $OUT/next2.tgz.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
for v in 1 2; do
  NF4LORA_U_PROTOCOL=$v timeout 120 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py > /tmp/o/tests_p$v.txt 2>&1
  echo "tests (protocol $v) rc $?"; tail -1 /tmp/o/tests_p$v.txt; grep -E "^FAILED|Error" /tmp/o/tests_p$v.txt | head -5
done
tar -czf $OUT/next2.tgz -C /tmp o
timeout 330 python3 bench/gemv_time.py --brief --env NF4LORA_U_PROTOCOL=9,0,1,2 \
  --spec "4096,4096:1;4096,14336:1;14336,4096:1;8192,28672:1" --out /tmp/o/protocol.jsonl 2>&1 | tail -5
echo "gemv_time rc ${PIPESTATUS[0]}; done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/next2.tgz -C /tmp o
