#!/bin/bash
# s32 run 2: branch wip-timeline (7110c32; gemv_timeline.py's buffer fixed to a multiple of 18 words: 93dee03 on the branch) built NODE=0
# from a git-archive copy in .s32/timeline (carry [".s32"]): the register GEMV's per-warp timeline, NF4LORA_LATE=0 / 1.
# (The first call ran ../s31/scripts/next_run1.sh: its test_cuda_gemv and gemv_time --env NF4LORA_LATE rows are
# late.jsonl; its timeline failed on the buffer size.)
t0=$(date +%s); mkdir -p /tmp/o
cd .s32/timeline && export NF4LORA_GIT_SHA=$(cat ../timeline.sha) NODE=0 && source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 200 python3 bench/gemv_timeline.py --env NF4LORA_LATE=0,1 --out /tmp/o/timeline.jsonl > /tmp/o/timeline.log 2>&1; echo "timeline rc $?"; tail -3 /tmp/o/timeline.log
cat /tmp/o/timeline.jsonl
tar -czf $OUT/t.tgz -C /tmp o
