#!/bin/bash
# Nsight Compute of one kernel launch on the GPU machine (bench/NOTES.md's recipe), for session run scripts:
#     bench/ncu_kernel.sh KERNEL_REGEX NAME OUTDIR COMMAND...
# profiles the third launch matching KERNEL_REGEX in COMMAND (clocks left alone: --clock-control none) with the
# speed-of-light, warp-state, scheduler, occupancy, launch, source-counter and memory sections; writes
# OUTDIR/NAME-details.txt and OUTDIR/NAME-sass.csv.gz (per-instruction counters: read them with
# bench/results/h200/s25/scripts/sass.py), drops the report, and prints the headline rows and the top stalls.
set -u
regex=$1 name=$2 out=$3; shift 3
mkdir -p "$out"
timeout 150 ncu --clock-control none --kernel-name "regex:$regex" --launch-skip 2 --launch-count 1 \
  --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats \
  --section SourceCounters --section MemoryWorkloadAnalysis -o "$out/$name" "$@" > "$out/$name.log" 2>&1
echo "ncu rc $? $name"
ncu --import "$out/$name.ncu-rep" --page details > "$out/$name-details.txt" 2>&1
ncu --import "$out/$name.ncu-rep" --page source --csv --print-source sass 2>&1 | gzip > "$out/$name-sass.csv.gz"
rm -f "$out/$name.ncu-rep"
grep -E "Duration|DRAM Throughput|Issued Warp|Eligible Warps|No Eligible|Registers Per" "$out/$name-details.txt" | head -6
python3 "$(dirname "$0")/results/h200/s25/scripts/sass.py" top "$out/$name-sass.csv.gz" 8 | cut -c1-160
