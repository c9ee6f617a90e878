// Host helpers of the standalone diagnostic harnesses (bench/mma_diag.cu, bench/dx_diag.cu): device
// buffers of a constant byte, and the mean time of a launch with CUDA events.
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

// A device buffer of `bytes`, every byte 0x11 (small finite bf16 values 0x1111, NF4 codes 1, a tiny
// float absmax); exits on failure.
inline uintptr_t diag_alloc(size_t bytes) {
  void* p = nullptr;
  if (cudaMalloc(&p, bytes) != cudaSuccess) {
    fprintf(stderr, "cudaMalloc failed\n");
    exit(1);
  }
  cudaMemset(p, 0x11, bytes);
  return reinterpret_cast<uintptr_t>(p);
}

// Mean µs of launch() over 20 back-to-back calls after 3 warm-up calls (CUDA events).
template <typename Launch> double diag_time_us(Launch&& launch) {
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
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return 1e3 * ms / iters;
}
