#!/bin/bash
# s37 run 4: branch wip-graph-counters (SHA=), NODE=0: zeroed_counters keeps (pointer, length) with its buffer (no
# tensor calls per launch). test_cuda_gemv + test_cuda_ext, and zeroed_counters' host cost per call (run 3: 1.794 us).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o4
source bench/device_build.sh > /tmp/o4/build.txt || { cat /tmp/o4/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 240 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py tests/test_cuda_ext.py > /tmp/o4/tests.txt 2>&1
echo "tests rc $?"; tail -1 /tmp/o4/tests.txt; grep -E "^FAILED" /tmp/o4/tests.txt | head -5
python3 - <<'P' 2>&1 | tee /tmp/o4/host_cost.txt
import timeit, torch, nf4lora._cuda_ext as ce
s = torch.cuda.current_stream().cuda_stream; dev = torch.device("cuda")
ce.zeroed_counters(dev, s, 64)
print("zeroed_counters us/call", round(min(timeit.repeat(lambda: ce.zeroed_counters(dev, s, 64), number=20000, repeat=5)) / 20000 * 1e6, 3))
P
echo "done at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/run4.tgz -C /tmp o4
