#!/usr/bin/env bash
# Nineteenth session, run 4: the tf32 fold branch: tests; forward A/B against main (built in .s19/main) in one process.
export NF4LORA_GIT_SHA=$(cat .s19/sha)
t0=$(date +%s)
el() { echo "$1 $(( $(date +%s) - t0 )) s"; }
(cd .s19/main && NF4LORA_CUDA_ARCHS=90a python3 setup.py -q build_ext --inplace > /tmp/mbuild.log 2>&1; echo $? > /tmp/mbuild.rc) &
python3 -m pip install --no-deps --no-build-isolation -e . > /tmp/install.log 2>&1 || { tail -40 /tmp/install.log; exit 1; }
el "install"
wait; el "main build rc=$(cat /tmp/mbuild.rc)"
timeout 200 python3 -m pytest -q -x -n 14 tests/test_cuda_mma.py tests/test_cuda_ext.py tests/test_cuda_dx.py tests/test_qlora_ops.py > $OUT/tests.txt 2>&1; el "tests rc=$?"
tail -2 $OUT/tests.txt; grep -E "^FAILED|^ERROR|Error|assert" $OUT/tests.txt | head -20
timeout 150 python3 .s19/tfab.py > $OUT/tfab.jsonl 2>/tmp/a.err; el "tfab rc=$?"; tail -3 /tmp/a.err; cut -c1-330 $OUT/tfab.jsonl
el done
