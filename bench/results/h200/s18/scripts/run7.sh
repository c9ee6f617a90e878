#!/usr/bin/env bash
# Eighteenth session, run 7: the forward's LoRA term folded (ws, r % 8 == 0, r >= 32): tests; forward A/B fold vs epilogue.
export NF4LORA_GIT_SHA=$(cat .s18/sha)
t0=$(date +%s)
el() { echo "$1 $(( $(date +%s) - t0 )) s"; }
python3 -m pip install --no-deps --no-build-isolation -e . > /tmp/install.log 2>&1 || { tail -40 /tmp/install.log; exit 1; }
el "install"
timeout 170 python3 -m pytest -q -x -n 14 tests/test_cuda_mma.py tests/test_cuda_dx.py tests/test_cuda_ext.py tests/test_qlora_ops.py tests/test_qlora_bwd.py > $OUT/tests.txt 2>&1; el "tests rc=$?"
tail -2 $OUT/tests.txt; grep -E "^FAILED|^ERROR|Error|assert" $OUT/tests.txt | head -20
timeout 90 python3 .s18/fwdab.py > $OUT/fwdab.jsonl 2>/tmp/d.err; el "fwdab rc=$?"; tail -3 /tmp/d.err; cat $OUT/fwdab.jsonl
el done
