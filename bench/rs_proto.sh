#!/usr/bin/env bash
# EXPERIMENT (branch wip-rs-proto): builds bench/rs_proto.cu on the H200 with the cuBLAS of the image's
# nvidia-cublas package and runs it (arguments: M N K triples; default four shapes).
set -euo pipefail
cd "$(dirname "$0")/.."
P=$(python3 -c "import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__) if nvidia.cublas.__file__ else list(nvidia.cublas.__path__)[0])")
LIB=$(ls "$P"/lib/libcublas.so* | head -1)
nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -DRS_PROTO_CUBLAS -I"$P/include" \
  -o /tmp/rs_proto bench/rs_proto.cu csrc/qlora_mma.cu "$LIB" -Xlinker -rpath="$P/lib"
timeout 120 /tmp/rs_proto "$@"
