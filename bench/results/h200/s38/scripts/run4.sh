#!/bin/bash
# s38 run 4 (SHA=, full build, carry [".whl"]): the u kernel's slices summed in clusters (sm_90) — the full GPU suite,
# then rank_prof.py (the forward's kernels at r = 16 / 64, M 1 / 16 / 128: run 3 had the u kernel at 15-56 us at
# M = 128) and u_ab.py (the u kernel against cuBLAS, M 17-2048).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
bash bench/device_suite.sh /tmp/o 300
echo "suite at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/run4.tgz -C /tmp o
timeout 100 python3 bench/results/h200/s38/scripts/rank_prof.py > /tmp/o/rank_prof.jsonl 2> /tmp/o/rank_prof.err
echo "rank_prof rc $?"; python3 -c "
import json
for l in open('/tmp/o/rank_prof.jsonl'):
    d = json.loads(l); print(d['K'], d['N'], d['M'], d['r'], d['graph_us'], {k[:40]: v for k, v in d['kernels_us_per_call'].items()})"
tar -czf $OUT/run4.tgz -C /tmp o
timeout 120 python3 bench/results/h200/s38/scripts/u_ab.py > /tmp/o/u_ab.jsonl 2> /tmp/o/u_ab.err; echo "u_ab rc $?"
tail -2 /tmp/o/u_ab.err; cat /tmp/o/u_ab.jsonl
echo "done at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/run4.tgz -C /tmp o
