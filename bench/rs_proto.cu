// EXPERIMENT (branch wip-rs-proto): the large-M forward with the NF4 decode in the consumers' registers — RS wgmmas,
// W never in shared memory — against the shipped warp-specialized kernel (W decoded by a producer warpgroup into
// shared memory, SS wgmmas) and cuBLAS's dense bf16 GEMM, in one process (no torch):
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -o /tmp/rs_proto \
//     bench/rs_proto.cu csrc/qlora_mma.cu [-DRS_PROTO_CUBLAS -I<cublas include> -L<cublas lib> -lcublas] && \
//     /tmp/rs_proto [M N K ...]
// (bench/rs_proto.sh builds it on the H200 with the cuBLAS of the nvidia-cublas package.)
// Prints, per shape M N K: the prototype's error against a float32 reference of the same dequantized W (a small
// shape first), and µs / TFLOP/s of the W product for the prototype, the shipped kernel (variant 4, r = 16: its
// LoRA term and u kernel included) and cuBLAS. Bf16, plain float32 absmax, blocksize 64; M % 256, N % 128 and
// K % 64 must be 0 (a prototype: no tails, no LoRA term, no nested absmax, y stored straight from the fragments).
//
// Block: 128 rows of W × 256 tokens, 384 threads. Warpgroup 0 (40 registers, setmaxnreg): thread 0 copies per 64-k
// chunk the x tile (256 × 64, 128-byte swizzle: the wgmma B operand, K-major) and the tile's code bytes (128 rows ×
// 32 bytes) by TMA into a STAGES-deep ring. Warpgroups 1, 2 (232 registers): warpgroup 1 + h owns W rows 64h..+63
// as the A operand of m64n256k16 wgmmas from registers: thread (warp w, lane 4g + c) holds rows 16w + g and + 8, k
// 2c, 2c + 1, 2c + 8, 2c + 9 of each k16 step — byte c of each 4-byte word of the row's 32 chunk bytes — decoded
// with decode4 through the row's scaled table (code·absmax in float32 rounded once: the shipped kernels' bits).
// Chunk i + 1 is decoded into the other register buffer while chunk i's wgmmas run; then the stage is released.
#ifdef RS_PROTO_CUBLAS
#include <cublas_v2.h>
#endif
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../csrc/launchers.h"
#include "../csrc/nf4_mma.cuh"
#include "../csrc/tensor_map.h"
#include "../csrc/wgmma.cuh"
#include "diag_timing.h"

using namespace nf4lora;
using T = __nv_bfloat16;

namespace {

constexpr int kBN = 128, kBM = 256, kKC = 64, kStages = 5;
constexpr int kXBytes = kBM * 128, kCBytes = kBN * 32, kStageBytes = kXBytes + kCBytes;  // 36 KiB: 1024-aligned
constexpr int kSmem = kStages * kStageBytes + 16 * 4 + 2 * kStages * 8 + 1024;

struct Params {
  T* y;                 // (M, N)
  const float* absmax;  // (N, K / 64)
  const float* qmap;    // [16]
  int M, N, K;
};

__global__ void __launch_bounds__(384, 1) rs_forward(const Params p, const __grid_constant__ CUtensorMap xmap,
                                                     const __grid_constant__ CUtensorMap cmap) {
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = align_smem<1024>(smem_raw);
  float* codes = reinterpret_cast<float*>(smem + kStages * kStageBytes);
  uint64_t* full = reinterpret_cast<uint64_t*>(codes + 16);
  uint64_t* empty = full + kStages;
  const int tid = threadIdx.x, wg = tid / 128, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int tiles_n = p.N / kBN, bn = blockIdx.x % tiles_n, bm = blockIdx.x / tiles_n;
  const int n0 = bn * kBN, m0 = bm * kBM, chunks = p.K / kKC;
  if (tid < 16) codes[tid] = p.qmap[tid];
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], 8);  // the consumer warps
    }
    mbar_init_fence();
  }
  __syncthreads();
  if (wg == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
    if (tid == 0)
      for (int i = 0; i < chunks; ++i) {
        const int s = i % kStages;
        if (i >= kStages) mbar_wait(&empty[s], (i / kStages - 1) & 1);
        mbar_arrive_expect_tx(&full[s], kStageBytes);
        tma_load_2d(smem + s * kStageBytes, &xmap, &full[s], i * kKC, m0);
        tma_load_2d(smem + s * kStageBytes + kXBytes, &cmap, &full[s], i * 32, n0);
      }
    return;
  }
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
  const int r = 64 * (wg - 1) + 16 * (tid / 32 % 4) + g;  // this thread's tile rows r and r + 8
  const float* am0 = p.absmax + static_cast<int64_t>(n0 + r) * chunks;
  const float* am1 = am0 + 8 * static_cast<int64_t>(chunks);
  float acc[kBM / 2];
#pragma unroll
  for (int i = 0; i < kBM / 2; ++i) acc[i] = 0.f;
  const uint64_t xdesc0 = sw128_desc(smem_addr(smem));
  const uint32_t sel = c | ((c + 4) << 4);  // byte c of each of two words
  float cur0 = __ldg(am0), cur1 = __ldg(am1);
  // Chunk i's A fragments [k16 step][4] of rows r, r + 8 (waits for its stage).
  auto decode = [&](int i, uint32_t (&frag)[4][4]) {
    const int s = i % kStages;
    mbar_wait(&full[s], (i / kStages) & 1);
    const unsigned char* cb = smem + s * kStageBytes + kXBytes;
    const uint4 r0a = *reinterpret_cast<const uint4*>(cb + r * 32), r0b = *reinterpret_cast<const uint4*>(cb + r * 32 + 16);
    const uint4 r1a = *reinterpret_cast<const uint4*>(cb + (r + 8) * 32),
                r1b = *reinterpret_cast<const uint4*>(cb + (r + 8) * 32 + 16);
    const uint32_t x0 = prmt(prmt(r0a.x, r0a.y, sel), prmt(r0a.z, r0a.w, sel), 0x5410u);  // steps 0, 1 of row r
    const uint32_t x1 = prmt(prmt(r0b.x, r0b.y, sel), prmt(r0b.z, r0b.w, sel), 0x5410u);  // steps 2, 3
    const uint32_t y0 = prmt(prmt(r1a.x, r1a.y, sel), prmt(r1a.z, r1a.w, sel), 0x5410u);  // row r + 8
    const uint32_t y1 = prmt(prmt(r1b.x, r1b.y, sel), prmt(r1b.z, r1b.w, sel), 0x5410u);
    const Table t0 = scaled_table<T>(codes, cur0), t1 = scaled_table<T>(codes, cur1);
    if (i + 1 < chunks) {  // the next chunk's absmax, a chunk of MMAs ahead
      cur0 = __ldg(am0 + i + 1);
      cur1 = __ldg(am1 + i + 1);
    }
    uint32_t p0[4], p1[4], q0[4], q1[4];
    decode4(x0, t0, p0);
    decode4(x1, t0, p1);
    decode4(y0, t1, q0);
    decode4(y1, t1, q1);
#pragma unroll
    for (int s2 = 0; s2 < 2; ++s2) {  // (row, k 2c), (row + 8, k 2c), (row, k 2c + 8), (row + 8, k 2c + 8)
      frag[s2][0] = p0[2 * s2];
      frag[s2][1] = q0[2 * s2];
      frag[s2][2] = p0[2 * s2 + 1];
      frag[s2][3] = q0[2 * s2 + 1];
      frag[2 + s2][0] = p1[2 * s2];
      frag[2 + s2][1] = q1[2 * s2];
      frag[2 + s2][2] = p1[2 * s2 + 1];
      frag[2 + s2][3] = q1[2 * s2 + 1];
    }
  };
  auto step = [&](int i, uint32_t (&cur)[4][4], uint32_t (&next)[4][4]) {
    const int s = i % kStages;
    const uint64_t xdesc = xdesc0 + static_cast<uint64_t>(s * kStageBytes >> 4);
    wgmma_fence();
#pragma unroll
    for (int k = 0; k < 4; ++k) wgmma_m64k16<T, kBM, false>(acc, cur[k], xdesc + 2 * k, 1);
    wgmma_commit();
    if (i + 1 < chunks) decode(i + 1, next);  // while chunk i's MMAs run
    wgmma_wait<0>();
    pin(acc);
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[s]);
  };
  uint32_t a[2][4][4];
  decode(0, a[0]);
  for (int i = 0; i < chunks; i += 2) {  // two chunks a trip: the register buffers indexed statically
    step(i, a[0], a[1]);
    if (i + 1 < chunks) step(i + 1, a[1], a[0]);
  }
  // y[m0 + 8j + 2c (+1)][n0 + r (+8)] = acc[4j + 0..3] (the wgmma accumulator layout)
#pragma unroll
  for (int j = 0; j < kBM / 8; ++j) {
    const int64_t t = m0 + 8 * j + 2 * c, n = n0 + r;
    p.y[t * p.N + n] = __float2bfloat16_rn(acc[4 * j]);
    p.y[(t + 1) * p.N + n] = __float2bfloat16_rn(acc[4 * j + 1]);
    p.y[t * p.N + n + 8] = __float2bfloat16_rn(acc[4 * j + 2]);
    p.y[(t + 1) * p.N + n + 8] = __float2bfloat16_rn(acc[4 * j + 3]);
  }
}

// The float32 reference: y[m][n] = sum_k x[m][k] · T(code · absmax) (W dequantized as the kernels do).
__global__ void reference(float* y, const T* x, const uint8_t* packed, const float* absmax, const float* qmap, int M,
                          int N, int K) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x, m = blockIdx.y;
  if (n >= N) return;
  float s = 0.f;
  for (int k = 0; k < K; ++k) {
    const uint8_t b = packed[(static_cast<int64_t>(n) * K + k) / 2];
    const int code = k % 2 == 0 ? b >> 4 : b & 15;
    const float w = __bfloat162float(__float2bfloat16_rn(qmap[code] * absmax[(static_cast<int64_t>(n) * K + k) / 64]));
    s += __bfloat162float(x[static_cast<int64_t>(m) * K + k]) * w;
  }
  y[static_cast<int64_t>(m) * N + n] = s;
}

__global__ void fill(T* x, uint8_t* packed, float* absmax, int64_t nx, int64_t np, int64_t na, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < nx || i < np || i < na;
       i += int64_t{gridDim.x} * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    if (i < nx) x[i] = __float2bfloat16_rn((h & 0xFFFF) / 32768.f - 1.f);
    if (i < np) packed[i] = static_cast<uint8_t>(h >> 16);
    if (i < na) absmax[i] = 0.5f + (h >> 24) / 256.f;
  }
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    exit(1);
  }
}

struct Bufs {
  T *x = nullptr, *y = nullptr, *wd = nullptr;
  uint8_t* packed = nullptr;
  float *absmax = nullptr, *qmap = nullptr;
};

Bufs make(int M, int N, int K) {
  Bufs b;
  check(cudaMalloc(&b.x, int64_t{M} * K * 2), "x");
  check(cudaMalloc(&b.y, int64_t{M} * N * 2), "y");
  check(cudaMalloc(&b.packed, int64_t{N} * K / 2), "packed");
  check(cudaMalloc(&b.absmax, int64_t{N} * K / 64 * 4), "absmax");
  check(cudaMalloc(&b.qmap, 16 * 4), "qmap");
  const float nf4[16] = {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
                         -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
                         0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
                         0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};
  check(cudaMemcpy(b.qmap, nf4, sizeof(nf4), cudaMemcpyHostToDevice), "qmap copy");
  fill<<<1024, 256>>>(b.x, b.packed, b.absmax, int64_t{M} * K, int64_t{N} * K / 2, int64_t{N} * K / 64, 12345u);
  check(cudaDeviceSynchronize(), "fill");
  return b;
}

std::string launch_rs(const Bufs& b, int M, int N, int K) {
  CUtensorMap xmap{}, cmap{};
  std::string err = rows_tensor_map<T>(&xmap, b.x, M, K, kBM, "x");
  if (err.empty()) {  // the codes as (K / 2 bytes, N rows), boxes of 32 bytes × 128 rows
    const cuuint64_t dims[2] = {static_cast<cuuint64_t>(K / 2), static_cast<cuuint64_t>(N)};
    const cuuint64_t strides[1] = {static_cast<cuuint64_t>(K / 2)};
    const cuuint32_t box[2] = {32, kBN};
    err = encode_tensor_map(&cmap, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, b.packed, dims, strides, box,
                            CU_TENSOR_MAP_SWIZZLE_NONE, "codes");
  }
  if (!err.empty()) return err;
  static bool attr = false;
  if (!attr) {
    check(cudaFuncSetAttribute(rs_forward, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem), "smem attribute");
    attr = true;
  }
  const Params p{b.y, b.absmax, b.qmap, M, N, K};
  rs_forward<<<(M / kBM) * (N / kBN), 384, kSmem>>>(p, xmap, cmap);
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? "" : std::string("rs_forward: ") + cudaGetErrorString(e);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> shapes = {4096, 14336, 4096, 4096, 4096, 14336, 4096, 28672, 8192};
  if (argc > 3) {
    shapes.clear();
    for (int i = 1; i + 2 < argc; i += 3)
      for (int j = 0; j < 3; ++j) shapes.push_back(atoi(argv[i + j]));
  }
  {  // correctness on a small shape (several tiles in both directions, K of 9 chunks: odd, past the ring)
    const int M = 512, N = 256, K = 576;
    Bufs b = make(M, N, K);
    float* ref = nullptr;
    check(cudaMalloc(&ref, int64_t{M} * N * 4), "ref");
    check(cudaMemset(b.y, 0xFF, int64_t{M} * N * 2), "poison");  // NaNs where the kernel writes nothing
    const std::string err = launch_rs(b, M, N, K);
    if (!err.empty()) { fprintf(stderr, "%s\n", err.c_str()); return 1; }
    reference<<<dim3((N + 127) / 128, M), 128>>>(ref, b.x, b.packed, b.absmax, b.qmap, M, N, K);
    check(cudaDeviceSynchronize(), "small case");
    std::vector<float> hr(int64_t{M} * N);
    std::vector<__nv_bfloat16> hy(int64_t{M} * N);
    cudaMemcpy(hr.data(), ref, hr.size() * 4, cudaMemcpyDeviceToHost);
    cudaMemcpy(hy.data(), b.y, hy.size() * 2, cudaMemcpyDeviceToHost);
    double num = 0, den = 0, worst = 0;
    int bad = 0;
    for (size_t i = 0; i < hr.size(); ++i) {
      const double v = __bfloat162float(hy[i]), d = v - hr[i];
      if (!std::isfinite(v)) ++bad;
      num += d * d;
      den += double(hr[i]) * hr[i];
      worst = std::max(worst, std::fabs(d) / (std::fabs(hr[i]) + 1.0));
    }
    printf("check M=%d N=%d K=%d rel_err=%.3e worst=%.3e nonfinite=%d %s\n", M, N, K, std::sqrt(num / den), worst,
           bad, bad == 0 && std::sqrt(num / den) < 1e-2 ? "OK" : "FAIL");
  }
#ifdef RS_PROTO_CUBLAS
  cublasHandle_t handle;
  cublasCreate(&handle);
#endif
  for (size_t s = 0; s + 2 < shapes.size(); s += 3) {
    const int M = shapes[s], N = shapes[s + 1], K = shapes[s + 2], r = 16;
    Bufs b = make(M, N, K);
    const double flop = 2.0 * M * N * K;
    const double us_rs = diag_time_us([&] {
      const std::string err = launch_rs(b, M, N, K);
      if (!err.empty()) { fprintf(stderr, "%s\n", err.c_str()); exit(1); }
    });
    // the shipped warp-specialized kernel (variant 4) on the same codes, absmax and x
    const uintptr_t A = diag_alloc(int64_t{r} * K * 2), B = diag_alloc(int64_t{N} * r * 2), u = diag_alloc(int64_t{M} * r * 4);
    const MmaPlan plan = plan_qlora_mma(M, N, K, r, 4, 256);
    const uintptr_t ws = plan.workspace_bytes ? diag_alloc(plan.workspace_bytes) : 0;
    const auto P = [](const void* q) { return reinterpret_cast<uintptr_t>(q); };
    const double us_ws = diag_time_us([&] {
      const std::string err = launch_qlora_mma(P(b.y), P(b.x), P(b.x), A, B, 0, u, 0, ws, plan.workspace_bytes, 2,
                                               P(b.packed), P(b.absmax), P(b.qmap), 0, 0, 0.f, 64, M, N, K, r, 1.f, 4,
                                               256, 0, 0, 0, 0);
      if (!err.empty()) { fprintf(stderr, "%s\n", err.c_str()); exit(1); }
    });
    double us_cublas = NAN;
#ifdef RS_PROTO_CUBLAS
    // cuBLAS, dense bf16: yᵀ (N × M, column-major) = W (N × K) · xᵀ
    check(cudaMalloc(&b.wd, int64_t{N} * K * 2), "dense W");
    check(cudaMemset(b.wd, 0x11, int64_t{N} * K * 2), "dense W fill");
    const float one = 1.f, zero = 0.f;
    us_cublas = diag_time_us([&] {
      cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, b.wd, CUDA_R_16BF, K, b.x, CUDA_R_16BF, K, &zero,
                   b.y, CUDA_R_16BF, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    });
#endif
    check(cudaDeviceSynchronize(), "timing");
    printf("M=%d N=%d K=%d rs_us=%.1f rs_tflops=%.1f ws_us=%.1f ws_tflops=%.1f cublas_us=%.1f cublas_tflops=%.1f "
           "rs/ws=%.3f rs/cublas=%.3f\n",
           M, N, K, us_rs, flop / us_rs * 1e-6, us_ws, flop / us_ws * 1e-6, us_cublas, flop / us_cublas * 1e-6,
           us_rs / us_ws, us_rs / us_cublas);
    cudaFree(b.x); cudaFree(b.y); cudaFree(b.wd); cudaFree(b.packed); cudaFree(b.absmax); cudaFree(b.qmap);
    cudaFree(reinterpret_cast<void*>(A)); cudaFree(reinterpret_cast<void*>(B)); cudaFree(reinterpret_cast<void*>(u));
    if (ws) cudaFree(reinterpret_cast<void*>(ws));
  }
  return 0;
}
