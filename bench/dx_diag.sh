#!/usr/bin/env bash
# Times the warp-specialized dx of csrc/qlora_dx.cu through bench/dx_diag.cu (no torch) in diagnostic
# builds: NF4LORA_DX_DIAG in $DIAGS (default "0 1 6": as shipped, no decode, raw codes stored; see
# csrc/qlora_dx.cu) on the given shapes ("M,N,K": dx (M, K) = g (M, N) · W (N, K)); DATA=rand fills
# the inputs with hashed bytes instead of a constant (measured: no difference); ABSMAX=nested uses a
# double-quantized absmax.
#   bench/dx_diag.sh 4096,14336,4096 4096,4096,14336
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
for d in ${DIAGS:-0 1 6}; do
  nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr \
    -DNF4LORA_DX_DIAG=$d -o "$tmp/dx-$d" bench/dx_diag.cu csrc/qlora_dx.cu csrc/qlora_mma.cu > "$tmp/build-$d.log" 2>&1 &
done
wait
for shape in "${@:-4096,14336,4096}"; do
  for d in ${DIAGS:-0 1 6}; do
    "$tmp/dx-$d" ${shape//,/ } ${DATA:-const} ${ABSMAX:-plain} || cat "$tmp/build-$d.log"
  done
done
