// Decode throughput probe (seventeenth session): cycles per decode4 (8 NF4 codes -> 8 bf16) for one
// warp per scheduler and for 2 / 4, with and without the 16-byte shared stores the producer does,
// and the scaled-table build of a chunk. No torch. nvcc -O3 -arch=sm_90a -I csrc
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cstdio>
#include "nf4_mma.cuh"
#include "wgmma.cuh"
using namespace nf4lora;

template <int MODE>
__global__ void __launch_bounds__(512, 1) probe(const uint32_t* in, uint32_t* out, int iters, long long* cyc) {
  extern __shared__ __align__(16) unsigned char sm[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  uint32_t w[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) w[j] = in[(blockIdx.x * blockDim.x + tid) * 8 + j];
  float* codes = reinterpret_cast<float*>(sm + 65536);
  if (tid < 16) codes[tid] = (tid - 7.5f) / 8.f;
  __syncthreads();
  Table t = scaled_table<__nv_bfloat16>(codes, 1.f + tid * 1e-3f);
  uint32_t acc = 0;
  unsigned char* row = sm + warp * 2048 + (lane % 16) * 128;
  __syncthreads();
  const long long c0 = clock64();
  for (int it = 0; it < iters; ++it) {
    if (MODE == 2) t = scaled_table<__nv_bfloat16>(codes, __uint_as_float(0x3f800000u + (w[0] & 0xffu) + it));
    if (MODE == 0) {
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        uint32_t d[4];
        decode4(w[j] ^ it, t, d);
        acc ^= d[0] ^ d[1] ^ d[2] ^ d[3];
      }
    } else {
#pragma unroll
      for (int j = 0; j < 2; ++j)
        decode32_to_row<__nv_bfloat16>(make_uint4(w[4 * j] ^ it, w[4 * j + 1] ^ it, w[4 * j + 2] ^ it, w[4 * j + 3] ^ it),
                                       t, row, lane, 4 * j);
    }
    asm volatile("" ::: "memory");  // every iteration's stores happen
  }
  const long long c1 = clock64();
  __syncthreads();
  if (MODE != 0) acc = reinterpret_cast<uint32_t*>(sm)[tid];
  out[blockIdx.x * blockDim.x + tid] = acc;
  if (lane == 0) cyc[blockIdx.x * 16 + warp] = c1 - c0;
}

int main() {
  const int blocks = 132, iters = 2048;
  uint32_t *in, *out; long long* cyc;
  cudaMalloc(&in, blocks * 512 * 8 * 4); cudaMalloc(&out, blocks * 512 * 4); cudaMalloc(&cyc, blocks * 16 * 8);
  cudaMemset(in, 0x5a, blocks * 512 * 8 * 4);
  const int smem = 65536 + 64;
  auto run = [&](auto kern, int mode, int wps) {
    cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    const int threads = 128 * wps;
    kern<<<blocks, threads, smem>>>(in, out, iters, cyc);
    kern<<<blocks, threads, smem>>>(in, out, iters, cyc);
    cudaDeviceSynchronize();
    long long h[132 * 16]; cudaMemcpy(h, cyc, sizeof(h), cudaMemcpyDeviceToHost);
    double s = 0; int n = 0;
    for (int b = 0; b < blocks; ++b) for (int wv = 0; wv < 4 * wps; ++wv) { s += h[b * 16 + wv]; ++n; }
    const double per_iter = s / n / iters;  // cycles per iteration per warp (8 decode4 = 64 codes)
    printf("{\"mode\": %d, \"warps_per_scheduler\": %d, \"cycles_per_iter_per_warp\": %.1f, "
           "\"cycles_per_decode4_per_scheduler\": %.2f, \"err\": \"%s\"}\n",
           mode, wps, per_iter, per_iter / 8 / wps, cudaGetErrorString(cudaGetLastError()));
  };
  for (int wps : {1, 2, 4}) run(probe<0>, 0, wps);
  for (int wps : {1, 2, 4}) run(probe<1>, 1, wps);
  for (int wps : {1, 2, 4}) run(probe<2>, 2, wps);
  return 0;
}
