#!/bin/bash
# For the GPU machine, after `source bench/device_build.sh` (its PYTHONPATH): the full test suite as the device recipe
# runs it (14 workers, ~215 s on the H200), its log to DIR/tests.txt; prints the exit status, pytest's summary line and
# the first failures. Usage: bash bench/device_suite.sh DIR [TIMEOUT_S (280)]
d=${1:?usage: device_suite.sh DIR [TIMEOUT_S]}
timeout "${2:-280}" python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/ > "$d/tests.txt" 2>&1
echo "tests rc $?"
tail -1 "$d/tests.txt"
grep -E "FAILED|Error" "$d/tests.txt" | head -8
