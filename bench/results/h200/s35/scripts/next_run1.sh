#!/bin/bash
# Prepared in s35 for the next session (not run): branch wip-fuse-u (SHA=) built NODE=0, run from a checkout of the
# branch (git checkout wip-fuse-u). Its u-in-the-GEMV-grid at M <= 2, after run 8's race fix (x read with
# ld.global.cg after griddepcontrol.wait: ptxas had scheduled two .nc x loads above the ACQBULK, and the
# chained-forward test failed at M 1 / 8). Run 8's steps: the GEMV / extension tests (the chained test first of all),
# then gemv_time --env NF4LORA_FUSE_U=0,1, here at M 1 / 2 on the issue shapes (run 8, before the fix and at every
# M <= 8: 0.958-0.984x at M = 1). ~3 minutes with a cold start; results in $OUT/run8.tgz. If the tests pass and it
# pays: the full suite, then land.
SPEC="4096,4096:1/2;4096,14336:1/2;14336,4096:1/2;8192,28672:1/2;28672,8192:1" exec bash "$(dirname "$0")/run8.sh"
