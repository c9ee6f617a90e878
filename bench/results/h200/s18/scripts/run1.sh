#!/usr/bin/env bash
# Eighteenth session, run 1: wip-dx-lora tests + dx timing vs main; main's nested dx_diag; wip-ws512 tests + mma_diag 512 vs 256.
export NF4LORA_GIT_SHA=$(cat .s18/sha)
R=$PWD
t0=$(date +%s)
el() { echo "$1 $(( $(date +%s) - t0 )) s"; }
# dx-lora branch
cd $R/.s18/dx-lora && python3 -m pip install --no-deps --no-build-isolation -e . > /tmp/install.log 2>&1 || { tail -40 /tmp/install.log; exit 1; }
el "install dx-lora"
timeout 120 python3 -m pytest -q -x -n 14 tests/test_cuda_dx.py > $OUT/tests-dxlora.txt 2>&1; el "tests rc=$?"
tail -2 $OUT/tests-dxlora.txt; grep -E "^FAILED|^ERROR" $OUT/tests-dxlora.txt | head -10
timeout 100 python3 $R/.s18/dxtime.py dxlora > $OUT/dxtime-dxlora.jsonl 2>/tmp/d.err; el "dxtime rc=$?"; tail -3 /tmp/d.err
# ws512 branch: standalone diag first (no install needed)
cd $R/.s18/ws512
for bm in 256 512; do VARIANT=4 BLOCK_M=$bm DIAGS="0 1" timeout 120 bench/mma_diag.sh 4096,14336,4096 4096,4096,14336 8192,28672,8192 > $OUT/mma-ws512-bm$bm.txt 2>&1; el "mma_diag bm$bm rc=$?"; cat $OUT/mma-ws512-bm$bm.txt | tail -12; done
# main
cd $R && python3 -m pip install --no-deps --no-build-isolation -e . > /tmp/install.log 2>&1 || { tail -40 /tmp/install.log; exit 1; }
el "install main"
timeout 100 python3 .s18/dxtime.py main > $OUT/dxtime-main.jsonl 2>/tmp/d.err; el "dxtime rc=$?"; tail -3 /tmp/d.err
paste -d'\n' $OUT/dxtime-dxlora.jsonl $OUT/dxtime-main.jsonl | cut -c1-400
DATA=rand ABSMAX=nested DIAGS="0 1" timeout 90 bench/dx_diag.sh 4096,14336,4096 4096,4096,14336 > $OUT/dxdiag-nested.txt 2>&1; el "dx_diag nested rc=$?"; cat $OUT/dxdiag-nested.txt | tail -8
el done
