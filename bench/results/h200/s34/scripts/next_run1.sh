#!/bin/bash
# Prepared in s34 for the next session (not run): main (SHA=) — run 5's steps (full build, the full GPU suite, gemv_time
# on the default spec) at main: the first full suite with the landed wip-rows58 plan (auto's register pipeline at M
# 5-8 where rows_plan walks K in passes; run 6 ran the GEMV / extension test files only). carry [".whl"]; ~6 minutes
# with a cold start; the results come back as $OUT/run5.tgz.
exec bash "$(dirname "$0")/run5.sh"
