#!/bin/bash
# s39 run 3 (branch wip-epi SHA=, NODE=0): why the LoRA term costs M 8-16 so much at r = 64. epi_prof.py (kernel
# times under the profiler, graph time) for EPI 0 (main), 3 (no LoRA term), 4 (main's term, the GEMV without
# allow_next_launch: the next forward's u blocks do not sit waiting on its SMs), 5 (lora_dots without B loads),
# 6 (without u loads); then gemv_time for the same variants on the issue shapes at r = 64.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
NODE=0 source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 200 python3 bench/results/h200/s39/scripts/epi_prof.py > /tmp/o/epi_prof.jsonl 2>&1; echo "prof rc $?"
python3 -c "
import json
for l in open('/tmp/o/epi_prof.jsonl'):
    if not l.startswith('{'): print(l.strip()[:200]); continue
    d = json.loads(l); print(d['K'], d['N'], d['M'], d['r'], d['epi'], d['graph_us'], {k[:22]: v for k, v in d['kernels_us_per_call'].items()})
"
tar -czf $OUT/run3.tgz -C /tmp o
timeout 120 python3 bench/gemv_time.py --brief --r 64 --env NF4LORA_GEMV_EPI=0,1,3,4,5,6 \
  --spec "4096,4096:8/16;4096,14336:8/16;14336,4096:8/16;8192,28672:8/16" --out /tmp/o/epi_r64.jsonl 2>&1 | tail -9
echo "done at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/run3.tgz -C /tmp o
