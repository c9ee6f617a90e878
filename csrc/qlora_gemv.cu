// nf4lora::qlora_linear forward for small M (1 ... 16 rows of x): the decode / small-batch regime.
//
//   y (M, N) = x·Wᵀ + s·u·Bᵀ + bias,  u (M, r) = x̃·Aᵀ (float32, also returned for dB)
//
// Two kernels, launched back to back by one host call:
//   lora_u_kernel      u = x̃·Aᵀ: one block per (LoRA rank j, pair of rows), 16-byte loads, fp32 sums.
//   qlora_gemv_kernel  W streamed once as packed NF4 codes; a block owns 128 or 256 rows of W (8 warps
//                      × 1 or 2 tiles of 16 rows) and one K slice (split-K over gridDim.y when the
//                      column blocks alone cannot fill the GPU). The LoRA term and the bias are
//                      added in the epilogue by the block that finishes a column block last.
//
// Tensor cores at M ≤ 16: each warp runs mma.m16n8k16 with the decoded W tile as the A operand
// (16 rows of W × 16 k) and x as the B operand (16 k × 8 rows of x): M = 1 wastes 7/8 of the
// B columns, which costs nothing in a memory-bound kernel. The k order inside each 64-wide chunk
// is permuted identically for A and B (a dot product does not care), so that a thread reads 16
// consecutive k of a row of W (8 bytes) and the same 16 k of x (32 bytes).
//
// Decode: the byte-permute lookup of nf4_mma.cuh (8 codes in 21 integer instructions, table built
// from quant_map). The absmax scale is applied once per 64-element chunk to
// the fp32 partial sums (exact fp32, as a dequantized W would be scaled), so the blocksize must be
// a multiple of 64.
//
// Bytes moved: N·K/2 codes + N·K/blocksize scales (×4 plain) + M·K·2 (x, once per column block
// from L2) + the LoRA weights + M·N·2 written, + S·M·N·4 ×2 of split-K partials when S > 1.
#include <cuda_runtime.h>

#include "launchers.h"
#include "nf4.cuh"
#include "nf4_mma.cuh"

namespace nf4lora {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
// A warp owns TILES (1 or 2) mma tiles of 16 rows of W; a block owns kWarps·TILES·16 rows.
constexpr int kChunk = 64;                       // k per scale step
constexpr int kMaxSlice = 1024;                  // k per block at most (x slice staged in smem)
constexpr int kPad = 8;                          // elements of padding per staged x row (16 bytes)
constexpr int kStages = 3;                       // chunks of W in flight per warp (register pipeline)

struct GemvParams {
  void* y;                 // (M, N) T
  const void* x;           // (M, K) T, contiguous, 16-byte aligned
  const void* B;           // (N, r) T, contiguous
  const void* bias;        // (N,) T or nullptr
  const float* u;          // (M, r) float32
  float* partial;          // (S, M, N) float32 (S > 1)
  unsigned int* arrived;   // (gridDim.x,) zeroed counters (S > 1)
  NF4State w;
  int M, N, K, r;
  int slice_max;           // k of the longest slice (a multiple of kChunk)
  float scale;
};

template <typename T, int MT, int kTiles>
__global__ void __launch_bounds__(kThreads) qlora_gemv_kernel(GemvParams p) {
  constexpr int kRows = MT * 8;  // rows of x handled (M <= kRows)
  constexpr int kBlockN = kWarps * kTiles * 16;
  extern __shared__ __align__(16) unsigned char smem[];
  const int xs_stride = p.slice_max + kPad;
  T* xs = reinterpret_cast<T*>(smem);                                          // [kRows][xs_stride]
  float* tile = reinterpret_cast<float*>(smem + sizeof(T) * kRows * xs_stride);  // [kRows][kBlockN]
  float* code2 = tile + kRows * kBlockN;                                       // [256]
  uint32_t* table = reinterpret_cast<uint32_t*>(code2 + 256);                  // [8]
  int* last = reinterpret_cast<int*>(table + 8);

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int S = gridDim.y, split = blockIdx.y;
  const int chunks = p.K / kChunk;
  const int c0 = static_cast<int>(static_cast<int64_t>(split) * chunks / S);
  const int c1 = static_cast<int>(static_cast<int64_t>(split + 1) * chunks / S);
  const int k0 = c0 * kChunk, slice = (c1 - c0) * kChunk;

  // Stage x[:, k0 : k0 + slice] (rows >= M as zeros), the code tables and the nested code.
  for (int i = tid; i < kRows * (slice / 8); i += kThreads) {
    const int m = i / (slice / 8), k = (i % (slice / 8)) * 8;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (m < p.M)
      v = *reinterpret_cast<const uint4*>(static_cast<const T*>(p.x) + static_cast<int64_t>(m) * p.K + k0 + k);
    *reinterpret_cast<uint4*>(xs + m * xs_stride + k) = v;
  }
  stage_code_tables<T>(p.w, table, code2, tid, kThreads);
  __syncthreads();
  const Table t = load_table(table);

  // This thread's rows of W: tile i, rows g and g + 8 (out-of-range rows read row N - 1).
  const int row0 = blockIdx.x * kBlockN + warp * kTiles * 16;
  const uint8_t* codes[kTiles][2];
  int64_t blk[kTiles][2];  // absmax index of chunk c0 (element offset >> log2 blocksize)
#pragma unroll
  for (int i = 0; i < kTiles; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int n = min(row0 + i * 16 + g + 8 * h, p.N - 1);
      codes[i][h] = p.w.packed + static_cast<int64_t>(n) * (p.K / 2) + k0 / 2 + 8 * c;
      blk[i][h] = static_cast<int64_t>(n) * p.K + k0;
    }

  float acc[kTiles][MT][4];
#pragma unroll
  for (int i = 0; i < kTiles; ++i)
#pragma unroll
    for (int j = 0; j < MT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

  // A chunk's loads: the codes (8 bytes per row) and the raw scale data — the float32 absmax, or
  // the nested uint8 index and its float32 block scale. Nothing here depends on a load, so
  // kStages - 1 chunks are in flight while one is computed; the nested absmax is decoded at use.
  struct Stage {
    uint2 codes[kTiles][2];
    uint32_t q[kTiles][2];  // float32 bits (plain) or the uint8 index (nested)
    float a2[kTiles][2];    // nested block scale (unused when plain)
  };
  const bool nested = p.w.nested_absmax != nullptr;
  auto load = [&](int ch, Stage& st) {
#pragma unroll
    for (int i = 0; i < kTiles; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        st.codes[i][h] = __ldg(reinterpret_cast<const uint2*>(codes[i][h] + (ch - c0) * (kChunk / 2)));
        const int64_t b = (blk[i][h] + static_cast<int64_t>(ch - c0) * kChunk) >> p.w.blocksize_log2;
        if (nested) {
          st.q[i][h] = __ldg(static_cast<const uint8_t*>(p.w.absmax) + b);
          st.a2[i][h] = __ldg(p.w.nested_absmax + (b >> kNestedBlockLog2));
        } else {
          st.q[i][h] = __ldg(static_cast<const uint32_t*>(p.w.absmax) + b);
        }
      }
  };
  auto absmax = [&](const Stage& st, int i, int h) {
    return nested ? nested_absmax(code2, st.q[i][h], st.a2[i][h], p.w.nested_offset) : __uint_as_float(st.q[i][h]);
  };

  auto compute = [&](int ch, const Stage& st) {
    // x fragments: row m = 8j + g, k = 16c ... 16c + 15 of the chunk (32 bytes).
    uint32_t bx[MT][8];
#pragma unroll
    for (int j = 0; j < MT; ++j) {
      const T* src = xs + (8 * j + g) * xs_stride + (ch - c0) * kChunk + 16 * c;
      const uint4 lo = *reinterpret_cast<const uint4*>(src);
      const uint4 hi = *reinterpret_cast<const uint4*>(src + 8);
      bx[j][0] = lo.x; bx[j][1] = lo.y; bx[j][2] = lo.z; bx[j][3] = lo.w;
      bx[j][4] = hi.x; bx[j][5] = hi.y; bx[j][6] = hi.z; bx[j][7] = hi.w;
    }
#pragma unroll
    for (int i = 0; i < kTiles; ++i) {
      uint32_t r0[2][4], r1[2][4];  // [half of the 8 bytes][byte] pairs of rows g, g + 8
      decode4(st.codes[i][0].x, t, r0[0]);
      decode4(st.codes[i][0].y, t, r0[1]);
      decode4(st.codes[i][1].x, t, r1[0]);
      decode4(st.codes[i][1].y, t, r1[1]);
      float part[MT][4];
#pragma unroll
      for (int j = 0; j < MT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) part[j][e] = 0.f;
#pragma unroll
      for (int s = 0; s < 4; ++s) {  // step s: elements 4s ... 4s + 3 of the thread's 16
        // A fragment: {row g, k 2c..}, {row g+8, k 2c..}, {row g, k 2c+8..}, {row g+8, k 2c+8..}
        // = bytes 2s and 2s + 1 of each row (elements 4s, 4s+1 and 4s+2, 4s+3).
        const uint32_t a[4] = {r0[s / 2][2 * (s % 2)], r1[s / 2][2 * (s % 2)], r0[s / 2][2 * (s % 2) + 1],
                               r1[s / 2][2 * (s % 2) + 1]};
#pragma unroll
        for (int j = 0; j < MT; ++j) mma16816<T>(part[j], a, bx[j][2 * s], bx[j][2 * s + 1]);
      }
      // C fragment: part[j][0..1] = rows of W g (cols of x 2c, 2c+1), part[j][2..3] = row g + 8.
      const float am0 = absmax(st, i, 0), am1 = absmax(st, i, 1);
#pragma unroll
      for (int j = 0; j < MT; ++j) {
        acc[i][j][0] = fmaf(part[j][0], am0, acc[i][j][0]);
        acc[i][j][1] = fmaf(part[j][1], am0, acc[i][j][1]);
        acc[i][j][2] = fmaf(part[j][2], am1, acc[i][j][2]);
        acc[i][j][3] = fmaf(part[j][3], am1, acc[i][j][3]);
      }
    }
  };

  // kStages-deep register pipeline; stage indices are compile-time constants (unrolled d).
  Stage stage[kStages];
#pragma unroll
  for (int d = 0; d < kStages - 1; ++d)
    if (c0 + d < c1) load(c0 + d, stage[d]);
  for (int ch = c0; ch < c1; ch += kStages) {
#pragma unroll
    for (int d = 0; d < kStages; ++d) {
      if (ch + d >= c1) break;
      if (ch + d + kStages - 1 < c1) load(ch + d + kStages - 1, stage[(d + kStages - 1) % kStages]);
      compute(ch + d, stage[d]);
    }
  }

  // Partial sums of this K slice -> tile[m][n - first row of the block].
#pragma unroll
  for (int i = 0; i < kTiles; ++i)
#pragma unroll
    for (int j = 0; j < MT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int m = 8 * j + 2 * c + (e & 1), n = warp * kTiles * 16 + i * 16 + g + 8 * (e >> 1);
        tile[m * kBlockN + n] = acc[i][j][e];
      }
  __syncthreads();

  // Thread tid < kBlockN finishes column n of y.
  const int n = blockIdx.x * kBlockN + tid;
  const bool owner = tid < kBlockN && n < p.N;
  const int M = p.M;
  if (S > 1) {  // publish the partial; the last block of this column block reduces all of them
    if (owner)
      for (int m = 0; m < M; ++m)
        p.partial[(static_cast<int64_t>(split) * M + m) * p.N + n] = tile[m * kBlockN + tid];
    __threadfence();
    __syncthreads();
    if (tid == 0) *last = atomicAdd(&p.arrived[blockIdx.x], 1u) == static_cast<unsigned>(S - 1);
    __syncthreads();
    if (!*last) return;
    __threadfence();
  }
  if (!owner) return;
  float v[kRows];
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
    if (m >= M) break;
    if (S > 1) {
      float sum = 0.f;
      for (int sp = 0; sp < S; ++sp) sum += __ldcg(p.partial + (static_cast<int64_t>(sp) * M + m) * p.N + n);
      v[m] = sum;
    } else {
      v[m] = tile[m * kBlockN + tid];
    }
  }
  // + s·u·Bᵀ + bias, exact fp32, one rounding to T.
  float lora[kRows];
#pragma unroll
  for (int m = 0; m < kRows; ++m) lora[m] = 0.f;
  const T* brow = static_cast<const T*>(p.B) + static_cast<int64_t>(n) * p.r;
  for (int j = 0; j < p.r; ++j) {
    const float b = to_float(brow[j]);
#pragma unroll
    for (int m = 0; m < kRows; ++m)
      if (m < M) lora[m] = fmaf(p.u[m * p.r + j], b, lora[m]);
  }
  const float bias = p.bias ? to_float(static_cast<const T*>(p.bias)[n]) : 0.f;
  T* y = static_cast<T*>(p.y);
#pragma unroll
  for (int m = 0; m < kRows; ++m)
    if (m < M) y[static_cast<int64_t>(m) * p.N + n] = static_cast<T>(v[m] + p.scale * lora[m] + bias);
}

// u[m, j] = Σ_k x̃[m, k]·A[j, k]: block (j, rows 2·y, 2·y + 1), 512 threads, 16-byte loads, two
// k steps in flight per thread; fp32 sums reduced across the block.
constexpr int kUThreads = 512;
constexpr int kURows = 2;

template <typename T>
__global__ void __launch_bounds__(kUThreads) lora_u_kernel(const T* __restrict__ xl, const T* __restrict__ A,
                                                           float* __restrict__ u, int M, int K, int r) {
  __shared__ float red[kUThreads / 32][kURows];
  const int j = blockIdx.x, m0 = blockIdx.y * kURows;
  float part[kURows] = {};
#pragma unroll 2
  for (int k = threadIdx.x * 8; k < K; k += kUThreads * 8) {
    const uint4 av = __ldg(reinterpret_cast<const uint4*>(A + static_cast<int64_t>(j) * K + k));
    uint4 xv[kURows];
#pragma unroll
    for (int m = 0; m < kURows; ++m)
      xv[m] = m0 + m < M ? __ldg(reinterpret_cast<const uint4*>(xl + static_cast<int64_t>(m0 + m) * K + k))
                         : make_uint4(0, 0, 0, 0);
    const T* a = reinterpret_cast<const T*>(&av);
#pragma unroll
    for (int m = 0; m < kURows; ++m) {
      const T* xe = reinterpret_cast<const T*>(&xv[m]);
#pragma unroll
      for (int e = 0; e < 8; ++e) part[m] = fmaf(to_float(xe[e]), to_float(a[e]), part[m]);
    }
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int m = 0; m < kURows; ++m) {
    float v = part[m];
#pragma unroll
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
    if (lane == 0) red[warp][m] = v;
  }
  __syncthreads();
  if (threadIdx.x < kURows && m0 + threadIdx.x < M) {
    float v = 0.f;
    for (int w = 0; w < kUThreads / 32; ++w) v += red[w][threadIdx.x];
    u[(m0 + threadIdx.x) * r + j] = v;
  }
}

size_t gemv_smem_bytes(int MT, int tiles, int slice_max, size_t elem) {
  return elem * MT * 8 * (slice_max + kPad) + sizeof(float) * (MT * 8 * kWarps * tiles * 16 + 256) + 8 * 4 + 16;
}

template <typename T, int MT, int kTiles>
std::string launch_gemv(const GemvParams& p, int splits, cudaStream_t stream) {
  const size_t smem = gemv_smem_bytes(MT, kTiles, p.slice_max, sizeof(T));
  // Opt in to more than 48 KiB of shared memory (per device, so on every launch: it is cheap).
  cudaError_t err = cudaFuncSetAttribute(qlora_gemv_kernel<T, MT, kTiles>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (err != cudaSuccess) return std::string("qlora_gemv_kernel attributes: ") + cudaGetErrorString(err);
  const int block_n = kWarps * kTiles * 16;
  const dim3 grid((p.N + block_n - 1) / block_n, splits);
  qlora_gemv_kernel<T, MT, kTiles><<<grid, kThreads, smem, stream>>>(p);
  err = cudaGetLastError();
  return err == cudaSuccess ? "" : std::string("qlora_gemv_kernel: ") + cudaGetErrorString(err);
}

template <typename T, int MT>
std::string launch_typed(const GemvParams& p, const void* x_lora, const void* A, float* u, int splits, int tiles,
                         cudaStream_t stream) {
  const dim3 ugrid(p.r, (p.M + kURows - 1) / kURows);
  lora_u_kernel<T><<<ugrid, kUThreads, 0, stream>>>(static_cast<const T*>(x_lora), static_cast<const T*>(A), u,
                                                    p.M, p.K, p.r);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return std::string("lora_u_kernel: ") + cudaGetErrorString(err);
  return tiles == 1 ? launch_gemv<T, MT, 1>(p, splits, stream) : launch_gemv<T, MT, 2>(p, splits, stream);
}

}  // namespace

GemvPlan plan_qlora_gemv(int64_t M, int64_t N, int64_t K, int sm_count, int tiles) {
  GemvPlan plan{};
  if (tiles != 1 && tiles != 2) tiles = 2;
  const int64_t block_n = kWarps * tiles * 16;
  const int64_t col_blocks = (N + block_n - 1) / block_n;
  const int64_t chunks = K / kChunk;
  int64_t splits = (K + kMaxSlice - 1) / kMaxSlice;           // x slice fits shared memory
  const int64_t fill = (3 * static_cast<int64_t>(sm_count) + col_blocks - 1) / col_blocks;  // ~3 blocks per SM
  if (fill > splits) splits = fill;
  if (splits > chunks) splits = chunks;
  if (splits < 1) splits = 1;
  plan.splits = static_cast<int>(splits);
  plan.tiles = tiles;
  plan.workspace_bytes = splits > 1 ? static_cast<int64_t>(sizeof(float)) * splits * M * N + 4 * col_blocks : 0;
  return plan;
}

std::string launch_qlora_gemv(uintptr_t y, uintptr_t x, uintptr_t x_lora, uintptr_t A, uintptr_t B, uintptr_t bias,
                              uintptr_t u, uintptr_t workspace, int dtype, uintptr_t packed, uintptr_t absmax,
                              uintptr_t quant_map, uintptr_t nested_absmax, uintptr_t nested_quant_map,
                              float nested_offset, int blocksize, int64_t M, int64_t N, int64_t K, int64_t r,
                              float scale, int splits, int tiles, uintptr_t stream) {
  const int lg = log2_exact(blocksize);
  if (lg < 6 || lg > 12) return "blocksize must be a power of two in [64, 4096]";
  if (M < 1 || M > 16) return "M must be in [1, 16]";
  if (N < 1 || r < 1 || K < kChunk || K % blocksize != 0 || K % kChunk != 0)
    return "need N >= 1, r >= 1 and K a positive multiple of 64 and of the blocksize";
  if (N >= (int64_t{1} << 30) || K >= (int64_t{1} << 30) || N * K > (int64_t{1} << 40) ||
      M * N > (int64_t{1} << 31) || r > (1 << 16))
    return "shape too large (N, K < 2^30, N·K <= 2^40, r <= 65536)";
  for (uintptr_t ptr : {packed, x, x_lora, A, workspace})
    if (ptr % 16 != 0) return "packed, x, x_lora, A and workspace must be 16-byte aligned";
  const int64_t chunks = K / kChunk;
  if (splits < 1 || splits > chunks) return "splits must be in [1, K / 64]";
  if (splits > 1 && workspace == 0) return "splits > 1 needs the workspace plan_qlora_gemv sizes";
  const int slice_max = static_cast<int>((chunks + splits - 1) / splits) * kChunk;
  if (slice_max > kMaxSlice) return "splits too small: a K slice must be at most 1024";
  if (tiles != 1 && tiles != 2) return "tiles must be 1 or 2";
  const int64_t col_blocks = (N + kWarps * tiles * 16 - 1) / (kWarps * tiles * 16);
  GemvParams p{};
  p.y = reinterpret_cast<void*>(y);
  p.x = reinterpret_cast<const void*>(x);
  p.B = reinterpret_cast<const void*>(B);
  p.bias = reinterpret_cast<const void*>(bias);
  p.u = reinterpret_cast<const float*>(u);
  p.partial = reinterpret_cast<float*>(workspace);
  p.arrived = splits > 1 ? reinterpret_cast<unsigned int*>(workspace + sizeof(float) * splits * M * N) : nullptr;
  p.w = make_state(packed, absmax, quant_map, nested_absmax, nested_quant_map, nested_offset, N * K, lg);
  p.M = static_cast<int>(M);
  p.N = static_cast<int>(N);
  p.K = static_cast<int>(K);
  p.r = static_cast<int>(r);
  p.slice_max = slice_max;
  p.scale = scale;
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  if (splits > 1) {
    const cudaError_t err = cudaMemsetAsync(p.arrived, 0, 4 * col_blocks, st);
    if (err != cudaSuccess) return std::string("cudaMemsetAsync: ") + cudaGetErrorString(err);
  }
  const void* xl = reinterpret_cast<const void*>(x_lora);
  const void* a = reinterpret_cast<const void*>(A);
  float* uu = reinterpret_cast<float*>(u);
  if (dtype == 1) return M <= 8 ? launch_typed<__half, 1>(p, xl, a, uu, splits, tiles, st)
                                : launch_typed<__half, 2>(p, xl, a, uu, splits, tiles, st);
  if (dtype == 2) return M <= 8 ? launch_typed<__nv_bfloat16, 1>(p, xl, a, uu, splits, tiles, st)
                                : launch_typed<__nv_bfloat16, 2>(p, xl, a, uu, splits, tiles, st);
  return "dtype must be 1 (float16) or 2 (bfloat16)";
}

}  // namespace nf4lora
