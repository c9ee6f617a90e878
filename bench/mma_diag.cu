// Where the time of the tensor-core forward goes (csrc/qlora_mma.cu), without torch: the same
// launcher built three times by bench/mma_diag.sh with NF4LORA_MMA_DIAG = 0 (as shipped), 1 (no
// decode) and 2 (no mma); each build times one shape with CUDA events and prints TFLOP/s.
//   mma_diag M N K [variant [block_m]]   (as launch_qlora_mma's; bf16, plain absmax, blocksize 64, r 16; inputs are arbitrary bytes)
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../csrc/launchers.h"
#include "diag_timing.h"

#ifndef NF4LORA_MMA_DIAG
#define NF4LORA_MMA_DIAG 0
#endif

int main(int argc, char** argv) {
  const int64_t M = argc > 1 ? atoll(argv[1]) : 4096, N = argc > 2 ? atoll(argv[2]) : 14336,
                K = argc > 3 ? atoll(argv[3]) : 4096, r = 16;
  const int variant = argc > 4 ? atoi(argv[4]) : 0, block_m = argc > 5 ? atoi(argv[5]) : 0;
  const auto alloc = diag_alloc;
  const uintptr_t x = alloc(M * K * 2), A = alloc(r * K * 2), B = alloc(N * r * 2), y = alloc(M * N * 2),
                  u = alloc(M * r * 4), packed = alloc(N * K / 2), absmax = alloc(N * K / 64 * 4),
                  qmap = alloc(16 * 4);
  const nf4lora::MmaPlan plan = nf4lora::plan_qlora_mma(M, N, K, r, variant, block_m);
  if (!plan.error.empty()) { fprintf(stderr, "%s\n", plan.error.c_str()); return 1; }
  const uintptr_t ws = plan.workspace_bytes ? alloc(plan.workspace_bytes) : 0;
  auto launch = [&]() {
    const std::string err = nf4lora::launch_qlora_mma(y, x, x, A, B, 0, u, 0, ws, plan.workspace_bytes, 2, packed,
                                                      absmax, qmap, 0, 0, 0.f, 64, M, N, K, r, 1.f, variant,
                                                      block_m, /*u_given*/ 0, /*zeroed_counters*/ 0, 0, /*stream*/ 0);
    if (!err.empty()) { fprintf(stderr, "%s\n", err.c_str()); exit(1); }
  };
  const double us = diag_time_us(launch);
  printf("variant=%d block_m=%d diag=%d M=%lld N=%lld K=%lld time_us=%.1f tflops=%.1f\n", variant, block_m, NF4LORA_MMA_DIAG, (long long)M, (long long)N,
         (long long)K, us, 2.0 * M * N * K / us * 1e-6);
  return cudaGetLastError() == cudaSuccess ? 0 : 1;
}
