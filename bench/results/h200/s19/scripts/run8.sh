#!/usr/bin/env bash
# Nineteenth session, run 8 (grouped dx tile order): dx + mma tests; dx A/B against main at M 4096/16384; layer grid fwd+bwd (nf4lora, dense_bf16) at M 4096/16384.
export NF4LORA_GIT_SHA=$(cat .s19/sha)
t0=$(date +%s)
el() { echo "$1 $(( $(date +%s) - t0 )) s"; }
(cd .s19/main && NF4LORA_CUDA_ARCHS=90a python3 setup.py -q build_ext --inplace > /tmp/mbuild.log 2>&1; echo $? > /tmp/mbuild.rc) &
python3 -m pip install --no-deps --no-build-isolation -e . > /tmp/install.log 2>&1 || { tail -40 /tmp/install.log; exit 1; }
el "install"
wait; el "main build rc=$(cat /tmp/mbuild.rc)"
timeout 120 python3 -m pytest -q -x -n 14 tests/test_cuda_dx.py tests/test_cuda_mma.py tests/test_qlora_bwd.py > $OUT/tests.txt 2>&1; el "tests rc=$?"
tail -2 $OUT/tests.txt; grep -E "^FAILED|^ERROR|Error|assert" $OUT/tests.txt | head -20
timeout 100 python3 .s19/dxab2.py > $OUT/dxab2.jsonl 2>/tmp/a.err; el "dxab2 rc=$?"; tail -3 /tmp/a.err; cut -c1-300 $OUT/dxab2.jsonl
timeout 150 python3 bench/bench_qlora.py --out $OUT/grid --shapes 4,2,1,0,3 --ranks 16,64 --ms 4096,16384 --modes fwdbwd --providers nf4lora,dense_bf16 --tag s19bwd > /tmp/g.log 2>&1; el "grid rc=$?"; tail -2 /tmp/g.log
grep -E "fwdbwd" $OUT/grid/summary.md | cut -c1-120
el done
