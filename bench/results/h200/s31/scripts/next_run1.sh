#!/bin/bash
# Prepared in s31 for the next session (not run): branch wip-timeline — the register GEMV's warps record
# %globaltimer / clock64 at 8 events (entry, tables staged, first loads issued, the tables' barrier, first tile done,
# loop done, sums added, end), read by bench/gemv_timeline.py: where the M = 1 forward's fixed ~4 µs go, and why
# issuing every warp's first loads at once (NF4LORA_LATE=1, s31 runs 3-4) costs 2-10% at M 1-8. Preparation on the CPU
# machine:
#   echo .s32/ >> .git/info/exclude; rm -rf .s32/timeline && mkdir -p .s32/timeline && git archive wip-timeline | tar -x -C .s32/timeline
#   git rev-parse --short wip-timeline > .s32/timeline.sha
# then `bash bench/results/h200/s31/scripts/next_run1.sh` with carry [".s32"] (~4 minutes with a cold start).
# (The marks add ~150 instructions and a branch per tile-0; NT = 1 instantiations spill 8 bytes: compare its
# gemv_time to main's before reading absolute times.)
t0=$(date +%s); mkdir -p /tmp/o
cd .s32/timeline && export NF4LORA_GIT_SHA=$(cat ../timeline.sha) NODE=0 && source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 100 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py > /tmp/o/tests.txt 2>&1; echo "tests rc $?"; tail -1 /tmp/o/tests.txt
timeout 200 python3 bench/gemv_timeline.py --env NF4LORA_LATE=0,1 --out /tmp/o/timeline.jsonl > /tmp/o/timeline.log 2>&1; echo "timeline rc $?"
cut -c1-700 /tmp/o/timeline.jsonl
tar -czf $OUT/next_run1.tgz -C /tmp o
timeout 90 python3 bench/gemv_time.py --rounds 6 --env NF4LORA_LATE=0,1 --spec "4096,14336:1/4;14336,4096:1;8192,28672:1" --out /tmp/o/late.jsonl > /tmp/o/late.log 2>&1; echo "gemv_time rc $?"
cut -c1-300 /tmp/o/late.jsonl
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/next_run1.tgz -C /tmp o
