// Where the time of the warp-specialized dx goes (csrc/qlora_dx.cu), without torch: the same launcher
// built by bench/dx_diag.sh with NF4LORA_DX_DIAG = 0 (as shipped), 1 (no decode) and 6 (raw codes
// stored, no decode); each build times dx = g·W (no LoRA term) for one shape with CUDA events.
//   dx_diag M N K [rand]   (bf16, plain absmax, blocksize 64; inputs are the constant byte 0x11, or
//   with "rand" hashed bytes: g and W codes random, absmax positive and finite)
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "../csrc/launchers.h"
#include "diag_timing.h"

#ifndef NF4LORA_DX_DIAG
#define NF4LORA_DX_DIAG 0
#endif

// Hashed bytes into p (n 32-bit words); mask / bias shape them (e.g. finite positive floats).
__global__ void fill_hash(uint32_t* p, size_t n, uint32_t mask, uint32_t bias) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = (h & mask) | bias;
  }
}

int main(int argc, char** argv) {
  const int64_t M = argc > 1 ? atoll(argv[1]) : 4096, N = argc > 2 ? atoll(argv[2]) : 14336,
                K = argc > 3 ? atoll(argv[3]) : 4096, r = 16;
  const auto alloc = diag_alloc;
  const uintptr_t dx = alloc(M * K * 2), g = alloc(M * N * 2), A = alloc(r * K * 2), packed = alloc(N * K / 2),
                  absmax = alloc(N * K / 64 * 4), qmap = alloc(16 * 4);
  const bool rand = argc > 4 && std::string(argv[4]) == "rand";
  // "nested" (5th argument): double-quantized absmax (uint8 codes, a 256-entry float code, one float
  // scale per 256 blocks), as the benchmark's weights.
  const bool nested = argc > 5 && std::string(argv[5]) == "nested";
  const uintptr_t code2 = alloc(256 * 4), scale2 = alloc((N * K / 64 / 256 + 1) * 4);
  if (rand) {
    // g: bf16 pairs with exponents in [2^-8, 2^0) (sign, 3 exponent bits, mantissa random); codes
    // random; absmax floats in [2^-8, 2^-7) (positive, finite).
    fill_hash<<<1024, 256>>>(reinterpret_cast<uint32_t*>(g), M * N / 2, 0x83FF83FFu, 0x3B803B80u);
    fill_hash<<<1024, 256>>>(reinterpret_cast<uint32_t*>(packed), N * K / 8, 0xFFFFFFFFu, 0u);
    fill_hash<<<1024, 256>>>(reinterpret_cast<uint32_t*>(absmax), N * K / 64, 0x007FFFFFu, 0x3B800000u);
    fill_hash<<<1, 256>>>(reinterpret_cast<uint32_t*>(code2), 256, 0x007FFFFFu, 0x3F000000u);
    fill_hash<<<64, 256>>>(reinterpret_cast<uint32_t*>(scale2), N * K / 64 / 256 + 1, 0x007FFFFFu, 0x3B800000u);
    cudaDeviceSynchronize();
  }
  auto launch = [&]() {
    const std::string err = nf4lora::launch_qlora_dx(dx, g, 0, A, 2, packed, absmax, qmap, nested ? scale2 : 0,
                                                     nested ? code2 : 0, 0.01f, 64, M, N, K, r, 1.f, 0, 0, 0);
    if (!err.empty()) { fprintf(stderr, "%s\n", err.c_str()); exit(1); }
  };
  const double us = diag_time_us(launch);
  printf("diag=%d M=%lld N=%lld K=%lld data=%s absmax=%s time_us=%.1f tflops=%.1f\n", NF4LORA_DX_DIAG, (long long)M,
         (long long)N, (long long)K, rand ? "rand" : "const", nested ? "nested" : "plain", us, 2.0 * M * N * K / us * 1e-6);
  return cudaGetLastError() == cudaSuccess ? 0 : 1;
}
