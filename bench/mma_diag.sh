#!/usr/bin/env bash
# Builds bench/mma_diag.cu against csrc/qlora_mma.cu with NF4LORA_MMA_DIAG = 0 (as shipped),
# 1 (no decode), 2 (no mma), for each tile configuration NF4LORA_MMA_TILE in $TILES (default 0,
# the shipped one), and times each on the given shapes ("M,N,K" arguments).
#   TILES="0 1 2 3" VARIANT=1 bench/mma_diag.sh 4096,14336,4096 4096,4096,14336
# (VARIANT as launch_qlora_mma: 0 auto, 1 mma.sync, 2 wgmma; the diag switches touch mma.sync only)
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
for t in ${TILES:-0}; do
  for d in 0 1 2; do
    nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Xptxas=-v \
      -DNF4LORA_MMA_DIAG=$d -DNF4LORA_MMA_TILE=$t -o "$tmp/diag$t$d" bench/mma_diag.cu csrc/qlora_mma.cu \
      > "$tmp/build$t$d.log" 2>&1 &
  done
done
wait
for t in ${TILES:-0}; do
  echo "tile $t: $(grep -A2 'qlora_mma_kernel' "$tmp/build${t}0.log" | grep -o 'Used [0-9]* registers' | head -1)," \
       "$(grep -o '[0-9]* bytes spill stores' "$tmp/build${t}0.log" | sort -u | tr '\n' ' ')"
done
for shape in "${@:-4096,14336,4096}"; do
  for t in ${TILES:-0}; do
    for d in 0 1 2; do echo -n "tile=$t "; "$tmp/diag$t$d" ${shape//,/ } ${VARIANT:-0}; done
  done
done
