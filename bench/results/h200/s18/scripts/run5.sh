#!/usr/bin/env bash
# Eighteenth session, run 5: dx fold vs epilogue at the grid's largest points: the dx alone and a whole fwd+bwd, interleaved.
export NF4LORA_GIT_SHA=$(cat .s18/sha)
t0=$(date +%s)
el() { echo "$1 $(( $(date +%s) - t0 )) s"; }
python3 -m pip install --no-deps --no-build-isolation -e . > /tmp/install.log 2>&1 || { tail -40 /tmp/install.log; exit 1; }
el "install"
timeout 200 python3 .s18/bwdab.py > $OUT/bwdab.jsonl 2>/tmp/d.err; el "bwdab rc=$?"; tail -3 /tmp/d.err; cat $OUT/bwdab.jsonl
nvidia-smi --query-gpu=clocks.sm,clocks.max.sm,temperature.gpu,power.draw,clocks_throttle_reasons.active --format=csv
el done
