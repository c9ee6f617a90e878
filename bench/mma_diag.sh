#!/usr/bin/env bash
# Times csrc/qlora_mma.cu through bench/mma_diag.cu (no torch) in diagnostic builds: for each
# NF4LORA_MMA_DIAG in $DIAGS (default "0 1 2": as shipped, no decode, no mma; 3 unscaled table, 4 no
# x streaming (wgmma_ss): see csrc/qlora_mma.cu) and each extra define
# set in $DEFS (e.g. "-DNF4LORA_WG_STAGES=5"), on the given shapes ("M,N,K" arguments), with the
# kernel chosen by $VARIANT as launch_qlora_mma's (0 auto, 1 mma.sync, 2 wgmma, 3 wgmma with W
# decoded into shared memory, 4 the same warp-specialized; a list, e.g. VARIANT="3 4", runs each),
# $BLOCK_M x rows per block (launch_qlora_mma's block_m; default 0: the launcher's choice).
#   VARIANT=2 DIAGS="0 1 2 3" bench/mma_diag.sh 4096,14336,4096 4096,4096,14336
#   VARIANT=3 DIAGS="0 1 2 4" bench/mma_diag.sh 4096,14336,4096
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
IFS=';' read -ra defs <<< "${DEFS:-}"
[ ${#defs[@]} -eq 0 ] && defs=("")
for d in ${DIAGS:-0 1 2}; do
  for i in "${!defs[@]}"; do
    nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Xptxas=-v \
      -DNF4LORA_MMA_DIAG=$d ${defs[$i]} -o "$tmp/diag-$d-$i" bench/mma_diag.cu csrc/qlora_mma.cu \
      > "$tmp/build-$d-$i.log" 2>&1 &
  done
done
wait
for shape in "${@:-4096,14336,4096}"; do
  for d in ${DIAGS:-0 1 2}; do
    for i in "${!defs[@]}"; do
      for v in ${VARIANT:-0}; do
        echo -n "defs='${defs[$i]}' "
        "$tmp/diag-$d-$i" ${shape//,/ } "$v" "${BLOCK_M:-0}"
      done
    done
  done
done
