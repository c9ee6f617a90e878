// Where the time of the warp-specialized dx goes (csrc/qlora_dx.cu), without torch: the same launcher
// built by bench/dx_diag.sh with NF4LORA_DX_DIAG = 0 (as shipped), 1 (no decode) and 6 (raw codes
// stored, no decode); each build times dx = g·W (no LoRA term) for one shape with CUDA events.
//   dx_diag M N K   (bf16, plain absmax, blocksize 64; inputs are arbitrary bytes)
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "../csrc/launchers.h"

#ifndef NF4LORA_DX_DIAG
#define NF4LORA_DX_DIAG 0
#endif

int main(int argc, char** argv) {
  const int64_t M = argc > 1 ? atoll(argv[1]) : 4096, N = argc > 2 ? atoll(argv[2]) : 14336,
                K = argc > 3 ? atoll(argv[3]) : 4096, r = 16;
  auto alloc = [](size_t bytes) {
    void* p = nullptr;
    if (cudaMalloc(&p, bytes) != cudaSuccess) { fprintf(stderr, "cudaMalloc failed\n"); exit(1); }
    cudaMemset(p, 0x11, bytes);  // small finite bf16 values (0x1111), codes 1, absmax ~1e-28
    return reinterpret_cast<uintptr_t>(p);
  };
  const uintptr_t dx = alloc(M * K * 2), g = alloc(M * N * 2), A = alloc(r * K * 2), packed = alloc(N * K / 2),
                  absmax = alloc(N * K / 64 * 4), qmap = alloc(16 * 4);
  auto launch = [&]() {
    const std::string err = nf4lora::launch_qlora_dx(dx, g, 0, A, 2, packed, absmax, qmap, 0, 0, 0.f, 64, M, N, K, r,
                                                     1.f, 0, 0, 0);
    if (!err.empty()) { fprintf(stderr, "%s\n", err.c_str()); exit(1); }
  };
  for (int i = 0; i < 3; ++i) launch();
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  const int iters = 20;
  cudaEventRecord(e0);
  for (int i = 0; i < iters; ++i) launch();
  cudaEventRecord(e1);
  cudaEventSynchronize(e1);
  float ms = 0.f;
  cudaEventElapsedTime(&ms, e0, e1);
  const double us = 1e3 * ms / iters;
  printf("diag=%d M=%lld N=%lld K=%lld time_us=%.1f tflops=%.1f\n", NF4LORA_DX_DIAG, (long long)M, (long long)N,
         (long long)K, us, 2.0 * M * N * K / us * 1e-6);
  return cudaGetLastError() == cudaSuccess ? 0 : 1;
}
