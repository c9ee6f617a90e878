#!/usr/bin/env bash
# EXPERIMENT (branch wip-rs-proto): builds bench/rs_proto.cu on the H200 (its CUDA 13.0 toolkit has cuBLAS) and
# runs it (arguments: M N K triples; default four shapes).
set -euo pipefail
cd "$(dirname "$0")/.."
nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -DRS_PROTO_CUBLAS \
  -o /tmp/rs_proto bench/rs_proto.cu csrc/qlora_mma.cu -lcublas
timeout 120 /tmp/rs_proto "$@"
