// nf4lora::qlora_linear forward for small M (1 ... 16 rows of x): the decode / small-batch regime.
//
//   y (M, N) = x·Wᵀ + s·u·Bᵀ + bias,  u (M, r) = x̃·Aᵀ (float32, also returned for dB)
//
// Two kernels, launched back to back by one host call:
//   lora_u_kernel      u = x̃·Aᵀ: one block per (LoRA rank j, pair of rows) — or per 2^rlog ranks, on the SMs
//                      the register pipeline leaves idle — 16-byte loads, fp32 sums.
//                      (Beside the register pipeline at r >= 64, M·r <= SMs: lora_u_small_kernel, 128 threads a
//                      (rank, row), one block beside each capped GEMV block; at M = 1 u may instead be computed
//                      in the GEMV's own grid: launch_typed.)
//   qlora_gemv_rows_kernel (sm_90, M <= 4, and M <= 8 where K <= 4096; `pipeline` 3 up to M = 8) —
//                      see its comment: warps own spans of K and walk the rows of W, the codes
//                      loaded straight into registers —
//   or qlora_gemv_tma_kernel (sm_90, above) or qlora_gemv_kernel (other GPUs; `pipeline` 1 on any):
//                      W streamed once as packed NF4 codes; a block owns 16 or 32 rows of W (1 or 2
//                      mma tiles) and all of K — or one K slice (gridDim.y) when the column blocks
//                      alone leave SMs with fewer than two blocks; its 8 warps take the 64-wide chunks
//                      in turn and their partial sums meet in shared memory. On sm_90 it is launched
//                      as lora_u_kernel's programmatic dependent: it streams W while u is computed
//                      and waits for u only in its epilogue, which adds the LoRA term and the bias
//                      (done by the block that finishes a column block last when K is split). The u
//                      kernel is itself the previous grid's programmatic dependent and waits for it
//                      (allow_next_launch): back to back, the next forward's launch overlaps this one.
//
// Memory pipeline of the last two: on sm_90 the block's ring of stages of 8 chunks (one per warp), each filled by
// two TMA copies (codes, x) completing on the stage's mbarrier, the scales in registers a stage
// ahead; elsewhere each warp's own cp.async ring of one chunk per stage (codes, raw scale words
// and x; 3-4 chunks in flight per warp).
//
// Tensor cores at M ≤ 16: each warp runs mma.m16n8k16 with the decoded W tile as the A operand
// (16 rows of W × 16 k) and x as the B operand (16 k × 8 rows of x): M = 1 wastes 7/8 of the
// B columns, which costs nothing in a memory-bound kernel. The k order inside each 64-wide chunk
// is permuted identically for A and B (a dot product does not care), so that a thread reads 16
// consecutive k of a row of W (8 bytes) and the same 16 k of x (32 bytes).
//
// Decode (nf4_mma.cuh, tables built from quant_map): on sm_90 through a byte-pair table in shared
// memory (4 loads per 8 codes; at M > 8 a quarter of the bytes in registers instead; the register
// pipeline's table has 256-byte rows, 2 instructions per code byte), elsewhere the
// byte-permute lookup in registers (8 codes in 21 integer instructions). The absmax scale is applied
// once per 64-element chunk to the fp32 partial sums (exact fp32, as a dequantized W would be
// scaled), so the blocksize must be a multiple of 64.
//
// Bytes moved: N·K/2 codes + N·K/blocksize scales (×4 plain) + M·K·2 (x, once per column block
// from L2) + the LoRA weights + M·N·2 written, + S·M·N·4 ×2 of split-K partials when S > 1.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <type_traits>

#include "launchers.h"
#include "nf4.cuh"
#include "nf4_mma.cuh"
#include "tensor_map.h"
#include "wgmma.cuh"

namespace nf4lora {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
// A block owns kTiles (1 or 2) mma tiles of 16 rows of W and one K slice (all of K unless split
// over gridDim.y); its warps take the slice's 64-wide chunks in turn (warp w: chunks w, w + 8, ...),
// so every warp holds partial sums of all the block's rows, summed in shared memory at the end.
constexpr int kChunk = 64;  // k per scale step
constexpr int kXStride = 144;  // bytes per x row of a ring stage (64 k + 16 bytes: no bank conflicts)

// The per-warp cp.async ring: kRing stages of one chunk each, per stage (bytes)
//   codes [kTiles][16 rows][32 bytes] (the chunk's 64 k of each row; lane L copies row L / 2 of
//         each tile, half L % 2: one 16-byte copy per tile)
//   q     [kTiles·16 rows] uint32 (float32 bits, or the nested code byte's aligned word)
//   a2    [kTiles·16 rows] float32 (nested second-level scale)
//   x     [M][kXStride / 2] of T (the chunk's 64 k of each row of x)
// Lane L < kTiles·16 owns the scale of row L of the block: it copies q (and a2), decodes the
// absmax once per chunk and hands it to the lanes of that row by a shuffle.
template <int MT, int kTiles> struct GemvRing {
  static constexpr int kRing = MT == 1 ? 4 : 3;  // chunks in flight per warp
  static constexpr int kCodes = 0, kQ = kTiles * 16 * 32, kA2 = kQ + kTiles * 16 * 4, kX = kA2 + kTiles * 16 * 4;
  __host__ __device__ static constexpr int stage_bytes(int M) { return kX + M * kXStride; }
  __host__ __device__ static constexpr int warp_bytes(int M) { return kRing * stage_bytes(M); }
  // The warps' partial sums [kWarps][MT·8 rows of x][kTiles·16 rows of W] float32 reuse the rings.
  static constexpr int kReduceBytes = kWarps * MT * 8 * kTiles * 16 * 4;
  __host__ __device__ static constexpr size_t smem_bytes(int M) {
    const int rings = kWarps * warp_bytes(M);
    return static_cast<size_t>(rings > kReduceBytes ? rings : kReduceBytes) + 256 * 4 + 8 * 4 + 16;
  }
};

struct GemvParams {
  void* y;                 // (M, N) T
  const void* x;           // (M, K) T, contiguous, 16-byte aligned
  const void* B;           // (N, r) T, contiguous
  const void* bias;        // (N,) T or nullptr
  const float* u;          // (M, r) float32 (written by lora_u_kernel, launched just before)
  float* partial;          // (S, M, N) float32 (S > 1)
  unsigned int* arrived;   // (gridDim.x,) zeroed counters (S > 1)
  NF4State w;
  int M, N, K, r;
  float scale;
  int row_tiles;           // the register pipeline: 16-row tiles of W per block
  int slice_k;             // the register pipeline: k per K slice (gridDim.y slices; GemvRows::slice_k)
  int lora_vec;            // r % 8 == 0 and B, u 16-byte aligned: lora_dot's 16-byte loads
  // The register pipeline with u fused into its grid (qlora_gemv_rows_kernel's kFusedU): the grid's first
  // (gridDim.x - row_blocks)·gridDim.y blocks in linear order compute u = x_lora·Aᵀ as lora_u_kernel's blocks would
  // (u_blocks of them, the rest idle: u_rank_blocks per row pair, 2^u_rlog ranks each), then count themselves in
  // u_sync[0]; the row blocks wait for that count before the LoRA term; every block counts its end in u_sync[1], and
  // the last resets both (two zeroed counters).
  const void* x_lora;      // (M, K) T
  const void* A;           // (r, K) T
  float* u_out;            // u (the same memory as `u`), written by the u blocks
  unsigned int* u_sync;
  int row_blocks, u_blocks, u_rank_blocks, u_rlog;
};

constexpr int kURows = 2;
constexpr int kUSteps = 2;
template <typename T, int kThr, bool kCgX = false, int kRows = kURows, int kSteps = kUSteps>
__device__ __forceinline__ void lora_u_block(const T* __restrict__ xl, const T* __restrict__ A, float* __restrict__ u,
                                             int M, int K, int r, int rlog, int bx, int by, int gx, float* red);

// Waits for the grid launched before this one (lora_u_kernel: u) to complete and flush its
// memory, when this grid was launched as its programmatic dependent (sm_90); a no-op otherwise.
__device__ __forceinline__ void wait_for_prior_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Lets the grid launched after this one start before this one ends, where it was launched as this grid's
// programmatic dependent (sm_90; a no-op otherwise): the GEMVs call it at entry, for the next forward's
// lora_u_kernel, which waits for them before it reads or writes anything. Measured (thirty-second session run 6,
// back-to-back forwards in CUDA graphs, the same bits): 0.923-0.999x the time per forward at M 1-16 on five shapes.
__device__ __forceinline__ void allow_next_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}

// acc + Σ_e u_e·b_e over 8 ranks in order: b the 8 T of bw, u those of u0 then u1 (one step of the LoRA term's sums).
template <typename T>
__device__ __forceinline__ float fma8(const uint4& bw, const float4& u0, const float4& u1, float acc) {
  const uint32_t words[4] = {bw.x, bw.y, bw.z, bw.w};
  const float uv[8] = {u0.x, u0.y, u0.z, u0.w, u1.x, u1.y, u1.z, u1.w};
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const uint16_t bits = static_cast<uint16_t>(words[e / 2] >> (16 * (e % 2)));
    acc = fmaf(uv[e], to_float(*reinterpret_cast<const T*>(&bits)), acc);
  }
  return acc;
}

// Σ_j u[m, j]·B[n, j] in fp32, j in order (the epilogues' LoRA term before the scale s). With
// p.lora_vec, 8 ranks per 16-byte load of B (and two of u), 4 such steps in flight: one lane per
// output reads its own row of B, so each load instruction touches 32 rows, and scalar loads (one
// rank each) made the LoRA term most of the small-M forward at r = 64 (sixteenth session: M = 16,
// 4096×14336, 30 µs at r = 16, 97 µs at r = 64). u is read with plain loads: the u kernel, the
// grid this one may overlap (programmatic launch), writes it.
template <typename T, bool kCgU = false>
__device__ __forceinline__ float lora_dot(const GemvParams& p, int m, int n) {
  const T* brow = static_cast<const T*>(p.B) + static_cast<int64_t>(n) * p.r;
  const float* urow = p.u + static_cast<int64_t>(m) * p.r;
  float acc = 0.f;
  if (p.lora_vec) {
#pragma unroll 4
    for (int j = 0; j < p.r; j += 8) {
      const uint4 bw = __ldg(reinterpret_cast<const uint4*>(brow + j));
      // (kCgU: u written by this grid's u blocks, read from L2)
      const float4 u0 = kCgU ? __ldcg(reinterpret_cast<const float4*>(urow + j)) : *reinterpret_cast<const float4*>(urow + j);
      const float4 u1 =
          kCgU ? __ldcg(reinterpret_cast<const float4*>(urow + j + 4)) : *reinterpret_cast<const float4*>(urow + j + 4);
      acc = fma8<T>(bw, u0, u1, acc);
    }
  } else {
    for (int j = 0; j < p.r; ++j) acc = fmaf(kCgU ? __ldcg(urow + j) : urow[j], to_float(brow[j]), acc);
  }
  return acc;
}

// The epilogues' LoRA term with u and B's rows in shared memory. Each output's lora_dot reads its B row and u row from
// global memory, 32 ranks a round trip. At M 8-16 every thread of a block reads all of u (M x r) and each B row is
// read by every warp of the block; at r = 64 that made the LoRA term a quarter to a third of the TMA ring's time
// (bench/results/h200/s39 run 3: without the term 0.67-0.88x the time at M 8-16, without B's loads 0.84x, without
// u's 0.88x at M = 16 on 4096x14336). stage_lora copies u and, where `area` holds them too, the rows [n0, n0 + rows)
// of B once per block, 16 bytes a thread per copy; dot() then sums from shared memory in lora_dot's order (the same
// bits). u's staged rows are r + kUPad floats apart: the register GEMV's lanes read M rows of u at one k (m = idx %
// M), and rows r floats apart put them all in the same banks (an 8-way conflict at M = 8, which made its staging lose
// in s39 run 4: 1.02-1.11x). Where it pays (lora_stage_pays; every point measured had the same bits):
//  - u and B from global memory (both pipelines' u from the u kernel): r >= 32 and M·r >= 192. s40 runs 1-2 against
//    lora_dot: r = 64 register GEMV M = 8 0.884 / 0.791x (4096x4096 / 4096x14336), M = 5-6 0.88-0.99x, M = 4
//    0.964-0.985x, M = 3 0.985-1.001x, but M = 2 1.011-1.105x; r = 32 M = 8 0.953 / 0.861 / 1.014 / 0.914x (4096x4096
//    / 4096x14336 / 14336x4096 / 8192x28672), M = 16 0.975-1.005x, M = 4 0.979-1.026x; r = 16 1.00-1.04x at M 4-16
//    (one round trip an output). The TMA ring at r = 64, M = 16: 0.83-0.93x (s39 run 4).
//  - u alone from this grid's own u blocks (the register GEMV's kFusedU, M = 1, read from L2): r > 32 (s39 run 4:
//    0.947 / 0.983x on 8192x28672 / 4096x14336; from the u kernel at M = 1 it lost).
// The cp.async pipeline (not run on sm_90 by default) stages nothing: not measured. Without lora_vec (r % 8 != 0 or
// B, u misaligned), or where u alone does not fit, dot() is lora_dot.
constexpr int kUPad = 4;
template <bool kFromL2>
__device__ __forceinline__ bool lora_stage_pays(const GemvParams& p) {
  return p.lora_vec && (kFromL2 ? p.r > 32 : p.r >= 32 && p.M * p.r >= 192);
}
template <typename T, bool kCgU>
struct LoraTerm {
  const float* us = nullptr;  // u (M x r) in shared memory (row stride r + kUPad), or nullptr
  const T* bs = nullptr;      // B's rows n0 .. in shared memory (row stride r + 8), or nullptr
  int n0 = 0;
  __device__ __forceinline__ float dot(const GemvParams& p, int m, int n) const {
    if (us == nullptr) return lora_dot<T, kCgU>(p, m, n);
    const float* urow = us + m * (p.r + kUPad);
    const T* brow = bs != nullptr ? bs + (n - n0) * (p.r + 8) : static_cast<const T*>(p.B) + static_cast<int64_t>(n) * p.r;
    float acc = 0.f;
#pragma unroll 4
    for (int j = 0; j < p.r; j += 8) {
      const uint4 bw = bs != nullptr ? *reinterpret_cast<const uint4*>(brow + j) : __ldg(reinterpret_cast<const uint4*>(brow + j));
      const float4 u0 = *reinterpret_cast<const float4*>(urow + j), u1 = *reinterpret_cast<const float4*>(urow + j + 4);
      acc = fma8<T>(bw, u0, u1, acc);
    }
    return acc;
  }
};

// Every thread of the block calls it once the block is done with `area` (area_bytes, 16-byte aligned; 0: nothing
// staged) and u is complete (after the wait for it); it returns with the block synced. kCgU: u from this grid's own
// u blocks (u alone staged; want_b is for the others).
template <typename T, bool kCgU>
__device__ __forceinline__ LoraTerm<T, kCgU> stage_lora(const GemvParams& p, void* area, int area_bytes, int n0, int rows,
                                                        bool want_b) {
  LoraTerm<T, kCgU> t;
  t.n0 = n0;
  const int u_bytes = p.M * (p.r + kUPad) * 4;  // (a multiple of 16 with lora_vec)
  if (!lora_stage_pays<kCgU>(p) || u_bytes > area_bytes) return t;
  const int nrows = min(rows, p.N - n0), per_row = p.r / 8, bstride = p.r + 8;
  const bool with_b = want_b && u_bytes + static_cast<int64_t>(rows) * bstride * sizeof(T) <= area_bytes;
  __syncthreads();  // (every thread is done with area's old contents)
  float4* us = static_cast<float4*>(area);
  const float4* ug = reinterpret_cast<const float4*>(p.u);
  const int u_row = p.r / 4, u_srow = (p.r + kUPad) / 4;  // float4s a row: global, staged
  for (int i = threadIdx.x; i < p.M * u_row; i += blockDim.x)
    us[(i / u_row) * u_srow + i % u_row] = kCgU ? __ldcg(ug + i) : ug[i];
  T* bs = reinterpret_cast<T*>(static_cast<unsigned char*>(area) + u_bytes);
  if (with_b) {
    const uint4* bg = static_cast<const uint4*>(p.B) + static_cast<int64_t>(n0) * per_row;
    for (int i = threadIdx.x; i < nrows * per_row; i += blockDim.x)
      *reinterpret_cast<uint4*>(bs + (i / per_row) * bstride + 8 * (i % per_row)) = __ldg(bg + i);
  }
  __syncthreads();
  t.us = reinterpret_cast<const float*>(us);
  t.bs = with_b ? bs : nullptr;
  return t;
}

// y[m, n] = sum + s·u·Bᵀ + bias in exact fp32, rounded once to T (both small-M epilogues; sum by
// reference, read after the LoRA term as the epilogues always did: the same PTX).
template <typename T, bool kCgU>
__device__ __forceinline__ void store_output(const GemvParams& p, int m, int n, const float& sum,
                                             const LoraTerm<T, kCgU>& term) {
  const float lora = term.dot(p, m, n);
  const float bias = p.bias ? to_float(static_cast<const T*>(p.bias)[n]) : 0.f;
  static_cast<T*>(p.y)[static_cast<int64_t>(m) * p.N + n] = static_cast<T>(sum + p.scale * lora + bias);
}

// One warp, one 64-wide chunk: part = W (the kTiles 16-row tiles) · x over the chunk's k, unscaled.
// codes: the chunk's tile 0, code_row bytes per row of W (32 bytes of the chunk at the start of
// each; tile i at 16·code_row); xs: the chunk's 64 k of x row 0, x_row bytes per row of x.
// Thread (g, c) reads k 16c .. 16c + 15 of rows g and g + 8 (8 bytes of codes) and of x row
// 8jj + g (32 bytes; zeros past M): the chunk's k order is permuted alike for W and x.
// decode: RegisterDecoder, PairTableDecoder or MixedDecoder (nf4_mma.cuh), called with each 4 bytes'
// place 0 ... 4·kTiles - 1 in the thread's share of the chunk.
template <typename T, int MT, int kTiles, typename Decoder>
__device__ __forceinline__ void chunk_partial(const unsigned char* codes, int code_row, const unsigned char* xs,
                                              int x_row, int M, const Decoder& decode, float (&part)[kTiles][MT][4],
                                              int g, int c) {
  uint32_t bx[MT][8];
#pragma unroll
  for (int jj = 0; jj < MT; ++jj) {
    const int m = 8 * jj + g;
    uint4 lo = make_uint4(0, 0, 0, 0), hi = lo;
    if (m < M) {  // (measured: reading row M - 1 instead, without the branch, is 2.5% slower at M = 1)
      const unsigned char* src = xs + m * x_row + 32 * c;
      lo = *reinterpret_cast<const uint4*>(src);
      hi = *reinterpret_cast<const uint4*>(src + 16);
    }
    bx[jj][0] = lo.x; bx[jj][1] = lo.y; bx[jj][2] = lo.z; bx[jj][3] = lo.w;
    bx[jj][4] = hi.x; bx[jj][5] = hi.y; bx[jj][6] = hi.z; bx[jj][7] = hi.w;
  }
#pragma unroll
  for (int i = 0; i < kTiles; ++i) {
    const unsigned char* tile = codes + i * 16 * code_row;
    const uint2 cw0 = *reinterpret_cast<const uint2*>(tile + g * code_row + c * 8);
    const uint2 cw1 = *reinterpret_cast<const uint2*>(tile + (g + 8) * code_row + c * 8);
    uint32_t r0[2][4], r1[2][4];  // [half of the 8 bytes][byte] pairs of rows g, g + 8
    decode(cw0.x, r0[0], 4 * i);
    decode(cw0.y, r0[1], 4 * i + 1);
    decode(cw1.x, r1[0], 4 * i + 2);
    decode(cw1.y, r1[1], 4 * i + 3);
#pragma unroll
    for (int jj = 0; jj < MT; ++jj)
#pragma unroll
      for (int e = 0; e < 4; ++e) part[i][jj][e] = 0.f;
#pragma unroll
    for (int s = 0; s < 4; ++s) {  // step s: elements 4s ... 4s + 3 of the thread's 16
      // A fragment: {row g, k 2c..}, {row g+8, k 2c..}, {row g, k 2c+8..}, {row g+8, k 2c+8..}
      // = bytes 2s and 2s + 1 of each row (elements 4s, 4s+1 and 4s+2, 4s+3).
      const uint32_t a[4] = {r0[s / 2][2 * (s % 2)], r1[s / 2][2 * (s % 2)], r0[s / 2][2 * (s % 2) + 1],
                             r1[s / 2][2 * (s % 2) + 1]};
#pragma unroll
      for (int jj = 0; jj < MT; ++jj) mma16816<T>(part[i][jj], a, bx[jj][2 * s], bx[jj][2 * s + 1]);
    }
  }
}

// acc += part · the chunk's absmax of each row: lane L holds (own) that of block row L; rows g,
// g + 8 of each tile come by shuffle. C fragment: part[i][jj][0..1] = row g of tile i (x rows
// 8jj + 2c, + 1), [2..3] = row g + 8.
template <int MT, int kTiles>
__device__ __forceinline__ void add_scaled(float (&acc)[kTiles][MT][4], const float (&part)[kTiles][MT][4], float own,
                                           int g) {
#pragma unroll
  for (int i = 0; i < kTiles; ++i) {
    const float am0 = __shfl_sync(0xFFFFFFFFu, own, i * 16 + g), am1 = __shfl_sync(0xFFFFFFFFu, own, i * 16 + g + 8);
#pragma unroll
    for (int jj = 0; jj < MT; ++jj) {
      acc[i][jj][0] = fmaf(part[i][jj][0], am0, acc[i][jj][0]);
      acc[i][jj][1] = fmaf(part[i][jj][1], am0, acc[i][jj][1]);
      acc[i][jj][2] = fmaf(part[i][jj][2], am1, acc[i][jj][2]);
      acc[i][jj][3] = fmaf(part[i][jj][3], am1, acc[i][jj][3]);
    }
  }
}

// The register kernel's end: sums[idx] (shared memory, idx = (n - row0)·M + m, items of them) holds
// this block's sums over its K slice; the K slices meet through global partials (the block that
// finishes a row block last reduces them), then y = sum + s·u·Bᵀ + bias in exact fp32 with one
// rounding to T. Every thread of the block calls it; col_block and split: the block's place in the grid
// (qlora_gemv_rows_kernel's colb, kslice).
// kFusedU: u comes from this grid's u blocks (wait_for_u) rather than the prior grid.
__device__ __forceinline__ void wait_for_u(const GemvParams& p);
template <typename T, bool kFusedU = false>
__device__ __forceinline__ void finish_outputs(const GemvParams& p, float* sums, int items, int row0, int* last,
                                               unsigned col_block, int split, void* area, int area_bytes) {
  const int M = p.M, S = gridDim.y, tid = threadIdx.x, nthr = blockDim.x;
  if (S > 1) {  // publish the partials; the last block of this row block reduces all of them
    for (int idx = tid; idx < items; idx += nthr) {
      const int n = row0 + idx / M, m = idx % M;
      if (n < p.N) p.partial[(static_cast<int64_t>(split) * M + m) * p.N + n] = sums[idx];
    }
    if (!last_to_arrive(&p.arrived[col_block], S, last)) return;  // (the last of the S slices reduces)
    for (int idx = tid; idx < items; idx += nthr) {  // (each thread its own idx, here and below)
      const int n = row0 + idx / M, m = idx % M;
      float v = 0.f;
      if (n < p.N)
        for (int sp = 0; sp < S; ++sp) v += __ldcg(p.partial + (static_cast<int64_t>(sp) * M + m) * p.N + n);
      sums[idx] = v;
    }
  }
  if constexpr (kFusedU) {
    wait_for_u(p);
  } else {
    wait_for_prior_grid();  // u
  }
  const LoraTerm<T, kFusedU> lora = stage_lora<T, kFusedU>(p, area, area_bytes, row0, items / M, !kFusedU);
  for (int idx = tid; idx < items; idx += nthr) {
    const int n = row0 + idx / M, m = idx % M;
    if (n >= p.N) continue;
    store_output(p, m, n, sums[idx], lora);
  }
}

// The fused grid's hand-off of u (kFusedU): the u blocks' count reaching u_blocks (acquire at gpu scope by thread 0,
// then the block's barrier); u is then read from L2 (store_output's kCgU).
__device__ __forceinline__ void wait_for_u(const GemvParams& p) {
  if (threadIdx.x == 0) {
    unsigned int v = 0;
    while (true) {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p.u_sync) : "memory");
      if (v >= static_cast<unsigned int>(p.u_blocks)) break;
      __nanosleep(64);
    }
  }
  __syncthreads();
}

// Every block of the fused grid at its end (every thread calls it): the last one leaves both counters at zero for
// the next launch (every row block has read the u count by then, every u block has added to it). kUBlock: a fence
// first, so that its count of u (u_sync[0]) is performed before this one (a release pattern, met by the acquiring
// count of the block that resets). A row block's read of u_sync[0] (wait_for_u's acquire) is ordered before this
// count already; a fence there would wait for the block's y stores (s36 run 4: 0.939x the time without it at
// 4096x4096, M = 1).
template <bool kUBlock>
__device__ __forceinline__ void fused_block_done(const GemvParams& p) {
  __syncthreads();
  if (threadIdx.x == 0) {
    if constexpr (kUBlock) __threadfence();
    const unsigned int total = gridDim.x * gridDim.y;
    unsigned int before;
    asm volatile("atom.acquire.gpu.global.add.u32 %0, [%1], 1;" : "=r"(before) : "l"(p.u_sync + 1) : "memory");
    if (before == total - 1) {
      p.u_sync[0] = 0;
      p.u_sync[1] = 0;
    }
  }
}

// After the main loop (every warp's copies landed, the block synced): the warps' sums meet in
// shared memory (red, reusing the rings), the K slices through global partials (the block that
// finishes a column block last reduces them), then y = sum + s·u·Bᵀ + bias in exact fp32 with one
// rounding to T.
template <typename T, int MT, int kTiles>
__device__ __forceinline__ void gemv_epilogue(const GemvParams& p, const float (&acc)[kTiles][MT][4], float* red,
                                              int area_bytes, int* last) {
  constexpr int kBlockN = kTiles * 16, kRows = MT * 8;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int M = p.M, S = gridDim.y, split = blockIdx.y, row0 = blockIdx.x * kBlockN;
#pragma unroll
  for (int i = 0; i < kTiles; ++i)
#pragma unroll
    for (int jj = 0; jj < MT; ++jj)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int m = 8 * jj + 2 * c + (e & 1), n = i * 16 + g + 8 * (e >> 1);
        red[(warp * kRows + m) * kBlockN + n] = acc[i][jj][e];
      }
  __syncthreads();

  // Outputs (m, n) = (idx / kBlockN, row0 + idx % kBlockN), idx = tid + kThreads·e: the sum over warps.
  constexpr int kItems = (kRows * kBlockN + kThreads - 1) / kThreads;
  float v[kItems];
#pragma unroll
  for (int e = 0; e < kItems; ++e) {
    const int idx = tid + kThreads * e, m = idx / kBlockN;
    v[e] = 0.f;
    if (m < M)
      for (int w = 0; w < kWarps; ++w) v[e] += red[(w * kRows + m) * kBlockN + idx % kBlockN];
  }
  if (S > 1) {  // publish the partials; the last block of this column block reduces all of them
#pragma unroll
    for (int e = 0; e < kItems; ++e) {
      const int idx = tid + kThreads * e, m = idx / kBlockN, n = row0 + idx % kBlockN;
      if (m < M && n < p.N) p.partial[(static_cast<int64_t>(split) * M + m) * p.N + n] = v[e];
    }
    if (!last_to_arrive(&p.arrived[blockIdx.x], S, last)) return;  // (the last of the S slices reduces)
#pragma unroll
    for (int e = 0; e < kItems; ++e) {
      const int idx = tid + kThreads * e, m = idx / kBlockN, n = row0 + idx % kBlockN;
      v[e] = 0.f;
      if (m < M && n < p.N)
        for (int sp = 0; sp < S; ++sp) v[e] += __ldcg(p.partial + (static_cast<int64_t>(sp) * M + m) * p.N + n);
    }
  }
  wait_for_prior_grid();  // u
  const LoraTerm<T, false> lora = stage_lora<T, false>(p, red, area_bytes, row0, kBlockN, true);
#pragma unroll
  for (int e = 0; e < kItems; ++e) {
    const int idx = tid + kThreads * e, m = idx / kBlockN, n = row0 + idx % kBlockN;
    if (m >= M || n >= p.N) continue;
    store_output(p, m, n, v[e], lora);
  }
}

template <int MT, int kTiles> __device__ __forceinline__ void zero_acc(float (&acc)[kTiles][MT][4]) {
#pragma unroll
  for (int i = 0; i < kTiles; ++i)
#pragma unroll
    for (int j = 0; j < MT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;
}

// The cp.async pipeline (any architecture from sm_80).
template <typename T, int MT, int kTiles>
__global__ void __launch_bounds__(kThreads, MT == 1 ? 5 - kTiles : 2) qlora_gemv_kernel(GemvParams p) {
  using R = GemvRing<MT, kTiles>;
  constexpr int kBlockN = kTiles * 16;
  extern __shared__ __align__(16) unsigned char smem[];
  const int M = p.M, stage_bytes = R::stage_bytes(M);
  const size_t body = R::smem_bytes(M) - (256 * 4 + 8 * 4 + 16);
  float* code2 = reinterpret_cast<float*>(smem + body);      // [256]
  uint32_t* table = reinterpret_cast<uint32_t*>(code2 + 256);  // [8]
  int* last = reinterpret_cast<int*>(table + 8);

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const KSlice ks = k_slice(p.K / kChunk);
  const int c0 = ks.first, c1 = ks.end;
  const int nw = c1 - c0 > warp ? (c1 - c0 - warp + kWarps - 1) / kWarps : 0;  // this warp's chunks
  stage_code_tables<T>(p.w, table, code2, tid, kThreads);

  // Lane L copies row L / 2 of each tile (16 bytes of codes per chunk) and owns the scale of block
  // row L (kTiles·16 rows; lanes past them duplicate row L % 16 of tile 0 and copy nothing). It
  // decodes rows g and g + 8 of each tile (rows past N read row N - 1).
  const int row0 = blockIdx.x * kBlockN;
  allow_next_launch();
  const bool nested = p.w.nested_absmax != nullptr;
  const int64_t k0 = static_cast<int64_t>(c0) * kChunk;
  const uint8_t* codes[kTiles];
#pragma unroll
  for (int i = 0; i < kTiles; ++i) {
    const int64_t n = min(row0 + i * 16 + lane / 2, p.N - 1);
    codes[i] = p.w.packed + (n * p.K + k0) / 2 + 16 * (lane % 2);
  }
  const bool scale_lane = lane < kBlockN;
  const int64_t srow = min(row0 + lane % kBlockN, p.N - 1);
  const int64_t srow_e = srow * p.K + k0;  // element offset of this lane's scale row in the slice
  const int srow_b4 = static_cast<int>((srow * p.K) >> p.w.blocksize_log2) & 3;
  // x: lane L copies pieces L + 32t (row (L + 32t) / 8, 8 elements from (L % 8)·8) of each chunk.
  constexpr int kXCopies = MT * 2;  // 8·M <= 64·MT pieces
  const T* xsrc[kXCopies];
#pragma unroll
  for (int t = 0; t < kXCopies; ++t) {
    const int piece = lane + 32 * t, m = min(piece / 8, M - 1);
    xsrc[t] = static_cast<const T*>(p.x) + static_cast<int64_t>(m) * p.K + k0 + (piece % 8) * 8;
  }
  unsigned char* ring = smem + static_cast<size_t>(warp) * R::warp_bytes(M);

  // Chunk j of this warp (chunk c0 + warp + 8j of W) into stage j % kRing, one commit group per
  // call (empty past the end: the group count stays uniform).
  auto fetch = [&](int j) {
    if (j < nw) {
      unsigned char* st = ring + (j % R::kRing) * stage_bytes;
      const int64_t kc = static_cast<int64_t>(warp + kWarps * j) * kChunk;  // k offset within the slice
#pragma unroll
      for (int i = 0; i < kTiles; ++i) cp_async16(st + R::kCodes + i * 512 + lane * 16, codes[i] + kc / 2, true);
      if (scale_lane) {
        const int64_t b = (srow_e + kc) >> p.w.blocksize_log2;
        // (the nested code byte's word alone only where it could run past the last code byte)
        fetch_q_async(reinterpret_cast<uint32_t*>(st + R::kQ) + lane, p.w, b, block_q_tail(p.w, b));
        if (nested) cp_async4(reinterpret_cast<float*>(st + R::kA2) + lane, p.w.nested_absmax + (b >> kNestedBlockLog2));
      }
#pragma unroll
      for (int t = 0; t < kXCopies; ++t) {
        const int piece = lane + 32 * t;
        if (piece < 8 * M) cp_async16(st + R::kX + (piece / 8) * kXStride + (piece % 8) * 16, xsrc[t] + kc, true);
      }
    }
    cp_async_commit();
  };

  float acc[kTiles][MT][4];
  zero_acc(acc);
#pragma unroll
  for (int j = 0; j < R::kRing - 1; ++j) fetch(j);
  __syncthreads();  // the code tables
  const RegisterDecoder decoder{load_table(table)};

  for (int j = 0; j < nw; ++j) {
    __syncwarp();                // every lane is done with stage (j - 1) % kRing (read at j - 1)
    fetch(j + R::kRing - 1);     // into that stage
    cp_async_wait<R::kRing - 1>();  // this lane's copies of chunk j landed
    __syncwarp();                // ... and every lane's
    const unsigned char* st = ring + (j % R::kRing) * stage_bytes;

    // This lane's scale row's raw words (decoded after the MMAs, off the decode's critical path).
    const uint32_t word = reinterpret_cast<const uint32_t*>(st + R::kQ)[lane % kBlockN];
    const float a2 = nested ? reinterpret_cast<const float*>(st + R::kA2)[lane % kBlockN] : 0.f;
    float part[kTiles][MT][4];
    chunk_partial<T, MT, kTiles>(st + R::kCodes, 32, st + R::kX, kXStride, M, decoder, part, g, c);
    // The absmax of this lane's scale row for this chunk (one decode per row).
    float own = __uint_as_float(word);
    if (nested) {
      // (only b % 4 matters: the row start's block index mod 4 plus the slice's blocks)
      const int b = srow_b4 + ((static_cast<int>(k0) + (warp + kWarps * j) * kChunk) >> p.w.blocksize_log2);
      own = nested_absmax(code2, raw_q_of(p.w, word, b), a2, p.w.nested_offset);
    }
    add_scaled(acc, part, own, g);
  }
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with its ring: it becomes the partial sums
  gemv_epilogue<T, MT, kTiles>(p, acc, reinterpret_cast<float*>(smem), 0, last);  // (0: not staged, not measured)
}

// The absmax of one row of W, chunk by chunk, for the TMA kernel (lane L of a warp: block row L).
// K is a multiple of the blocksize, so row n's blocks start at n·K / blocksize and chunk j of the
// row lies in its block j·64 / blocksize. load() fetches the raw words (the float32 absmax, or the
// nested code byte and its second-level scale, from the one holding the row's first block: block b
// of the row is in (row_block % 256 + b) / 256), a stage ahead; absmax() decodes them.
struct RowScales {
  const uint32_t* q32;
  const uint8_t* q8;
  const float* a2row;
  int a2_first, chunk_shift;
  bool nested;
  __device__ __forceinline__ RowScales(const NF4State& w, int64_t row, int K) {
    const int64_t row_block = row * static_cast<int64_t>(K >> w.blocksize_log2);
    nested = w.nested_absmax != nullptr;
    q32 = static_cast<const uint32_t*>(w.absmax) + row_block;
    q8 = static_cast<const uint8_t*>(w.absmax) + row_block;
    a2row = nested ? w.nested_absmax + (row_block >> kNestedBlockLog2) : nullptr;
    a2_first = static_cast<int>(row_block & ((1 << kNestedBlockLog2) - 1));
    chunk_shift = w.blocksize_log2 - 6;
  }
  __device__ __forceinline__ void load(int chunk, uint32_t& q, float& a2) const {
    const int b = chunk >> chunk_shift;  // block of the row
    if (nested) {
      q = __ldg(q8 + b);
      a2 = __ldg(a2row + ((a2_first + b) >> kNestedBlockLog2));
    } else {
      q = __ldg(q32 + b);
      a2 = 0.f;
    }
  }
  __device__ __forceinline__ float absmax(const float* code2, uint32_t q, float a2, float offset) const {
    return nested ? nested_absmax(code2, q, a2, offset) : __uint_as_float(q);
  }
};

// The TMA pipeline (sm_90, pipeline 2): the block's ring holds kRing stages of kWarps
// consecutive chunks — chunk w of a stage is warp w's — each filled by two 3-d tensor copies (the
// codes of the block's rows for the 8 chunks, x's rows for the same k) completing on the slot's
// mbarrier `full`. No warp waits for another to refill a slot: each warp's lane 0 counts itself
// done with it (an acq_rel atomic in shared memory), and the warp that completes the count issues
// the copies of stage + kRing into it.
// Per stage (bytes): codes [kWarps][kTiles·16 rows][32], then x [kWarps][M][64] of T. K slices
// (gridDim.y) are whole stages (only K's last stage may be short; the copies read zeros past K).
// The decode reads the shared byte-pair table (lut4: 4 shared loads per 4 bytes, where decode4
// spends 21 integer instructions, the pipe that bounds the cp.async kernel).
// Measured on the H200 (bench/NOTES.md, eleventh session runs 1-3), against the per-warp TMA rings
// it replaces (one chunk per stage, a lane-0 copy per warp and chunk; run 3 on the four benchmark
// shapes): 0.88-0.91× the time at M = 16, 0.93-0.99× at M = 1, 0.95-0.99× at M = 8. The table
// decode itself took 0.77-0.80× the time of decode4 at M = 1 (ninth session).
template <int MT, int kTiles> struct GemvTma {
  // Stages in the ring and resident blocks per SM (registers <= 64 or <= 128; shared memory: 4
  // blocks of 51 KiB at M = 1, 3 of 67 KiB at M = 8, 2 of 84-105 KiB at M > 8).
  static constexpr int kRing = MT == 1 ? 2 : 3;
  static constexpr int kMinBlocks = MT == 1 ? 4 : 2;
  static constexpr int kTableBytes = kPairTableWords * 4;  // the byte-pair table leads
  static constexpr int kChunkCodeBytes = kTiles * 16 * 32;
  static constexpr int kCodeBytes = kWarps * kChunkCodeBytes;
  __host__ __device__ static constexpr int x_chunk_bytes(int M) { return M * kChunk * 2; }
  __host__ __device__ static constexpr int stage_bytes(int M) { return kCodeBytes + kWarps * x_chunk_bytes(M); }
  static constexpr int kReduceBytes = kWarps * MT * 8 * kTiles * 16 * 4;
  // From a 128-byte aligned start: the byte-pair table, the ring (or the partial sums), the nested
  // absmax's second-level code, the last-block flag.
  __host__ __device__ static constexpr int body(int M) {
    return kRing * stage_bytes(M) > kReduceBytes ? kRing * stage_bytes(M) : kReduceBytes;
  }
  __host__ __device__ static constexpr size_t smem_bytes(int M) {
    return 128 + kTableBytes + static_cast<size_t>(body(M)) + 256 * 4 + 16;
  }
};

// Adds 1 to the shared counter at addr (acquire-release at block scope: this thread's earlier
// accesses happen before the add, and the adds before it happen before what follows); returns the
// old value.
__device__ __forceinline__ uint32_t atomic_add_acq_rel_shared(uint32_t* addr) {
  uint32_t old = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("atom.acq_rel.cta.shared::cta.add.u32 %0, [%1], 1;" : "=r"(old) : "r"(smem_addr(addr)) : "memory");
#endif
  return old;
}

template <typename T, int MT, int kTiles>
__global__ void __launch_bounds__(kThreads, GemvTma<MT, kTiles>::kMinBlocks)
    qlora_gemv_tma_kernel(const GemvParams p, const __grid_constant__ CUtensorMap codes_map,
                          const __grid_constant__ CUtensorMap x_map) {
#if NF4LORA_HAS_WGMMA
  using R = GemvTma<MT, kTiles>;
  constexpr int kBlockN = kTiles * 16, kRing = R::kRing;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ __align__(8) uint64_t full[kRing];
  __shared__ uint32_t done[kRing];
  unsigned char* const table_base = align_smem<128>(smem_raw);
  unsigned char* smem = table_base + R::kTableBytes;
  const int M = p.M, stage_bytes = R::stage_bytes(M);
  float* code2 = reinterpret_cast<float*>(smem + R::body(M));  // [256]
  int* last = reinterpret_cast<int*>(code2 + 256);

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  // This block's stages [s0, s0 + n_st) of the K / 64 chunks in stages of kWarps; warp w takes
  // chunk w of each (all but K's last stage have every chunk).
  const int chunks = p.K / kChunk;
  const KSlice ks = k_slice((chunks + kWarps - 1) / kWarps);
  const int s0 = ks.first, n_st = ks.end - ks.first;
  const int c0 = s0 * kWarps + warp;  // this warp's chunk of stage i: c0 + kWarps·i
  const int nw = n_st - (c0 + kWarps * (n_st - 1) >= chunks ? 1 : 0);
  const int row0 = blockIdx.x * kBlockN;
  allow_next_launch();
  const uint32_t tx_bytes = static_cast<uint32_t>(stage_bytes);
  // One thread: stage i of the block into slot i % kRing (rows past N and k past K read as zeros).
  auto issue = [&](int i) {
    unsigned char* dst = smem + (i % kRing) * stage_bytes;
    uint64_t* bar = &full[i % kRing];
    const int chunk = (s0 + i) * kWarps;
    mbar_arrive_expect_tx(bar, tx_bytes);
    tma_load_3d(dst, &codes_map, bar, 0, row0, chunk);
    tma_load_3d(dst + R::kCodeBytes, &x_map, bar, 0, 0, chunk);
  };
  // The first stages are in flight while the tables are built (the other threads see the barriers
  // initialized after the block syncs, before any waits on them).
  if (tid == 0) {
#pragma unroll
    for (int r = 0; r < kRing; ++r) {
      mbar_init(&full[r], 1);
      done[r] = 0;
    }
    mbar_init_fence();
    for (int i = 0; i < kRing && i < n_st; ++i) issue(i);
  }
  __shared__ uint32_t reg_table[8];  // MixedDecoder's register table (M > 8)
  // Scales: lane L holds the raw words of block row L (rows past N: row N - 1), a stage ahead
  // (measured: two stages ahead is no faster, eleventh session run 3). The first stage's are loaded before the
  // tables are staged, so that the block's wait for the tables' loads overlaps theirs (with the tables' loads in one
  // wait: 0.977-0.999x the time, thirty-first session run 5).
  const RowScales scales(p.w, min(row0 + lane % kBlockN, p.N - 1), p.K);
  uint32_t q = 0;
  float a2 = 0.f;
  if (nw > 0) scales.load(c0, q, a2);
  stage_gemv_tables<T, 128>(p.w, table_base, code2, MT == 2 ? reg_table : nullptr, tid);
  float acc[kTiles][MT][4];
  zero_acc(acc);
  __syncthreads();  // the code tables, barriers and counters
  // At M > 8 the first 4 bytes of each tile's row g are decoded in registers (decode4), the rest
  // through the table: measured (twelfth session runs 1, 4), 0.93-0.98x the time of the table alone
  // on the three larger benchmark shapes at M = 16 (4096×4096: 1.02x), where the table's loads are
  // the busier pipe; at M <= 8 the table alone is faster (mixing: 1.05x at M = 1).
  using Decoder = std::conditional_t<MT == 2, MixedDecoder<0x11u>, PairTableDecoder>;
  Decoder decoder;
  decoder.lane_table = smem_addr(table_base) + 4 * lane;
  if constexpr (MT == 2) decoder.t = load_table(reg_table);

  for (int i = 0; i < nw; ++i) {
    uint32_t qn;
    float a2n;
    scales.load(min(c0 + kWarps * (i + 1), chunks - 1), qn, a2n);  // (past the warp's last: any chunk)
    const int slot = i % kRing;
    mbar_wait(&full[slot], (i / kRing) & 1);
    const unsigned char* st = smem + slot * stage_bytes;
    float part[kTiles][MT][4];
    chunk_partial<T, MT, kTiles>(st + warp * R::kChunkCodeBytes, 32, st + R::kCodeBytes + warp * R::x_chunk_bytes(M),
                                 kChunk * 2, M, decoder, part, g, c);
    add_scaled(acc, part, scales.absmax(code2, q, a2, p.w.nested_offset), g);
    // Refill the slot with stage i + kRing once every warp is done with it (stages before the last
    // one have every warp's chunk): each warp's lane 0 counts itself done, and the warp that
    // completes the count issues the copies.
    __syncwarp();  // every lane of this warp is done with the slot
    if (lane == 0 && i + kRing < n_st && atomic_add_acq_rel_shared(&done[slot]) % kWarps == kWarps - 1)
      issue(i + kRing);
    q = qn;
    a2 = a2n;
  }
  __syncthreads();  // every warp is done with the ring (all its copies were waited for)
  gemv_epilogue<T, MT, kTiles>(p, acc, reinterpret_cast<float*>(smem), R::body(M), last);
#else
  __trap();  // the launcher runs this kernel on sm_90 only
#endif
}

// The register pipeline (pipeline 3, M <= 8, sm_90: its shared memory is sized for 227 KiB per
// block; the default there up to M = 4, and up to M = 8 where K <= 4096): no shared-memory staging
// of W. Warp w of block (x, y) owns kS consecutive 128-wide spans of K (from y·slice_k + w·kS·128) and
// walks the block's rows of W 16 at a time (its row tiles), loading each tile's codes straight into
// registers with 16-byte loads (lane (g, c): bytes 16c .. 16c + 15 of each span, half c / 2, in rows
// g and g + 8), kD tiles ahead; x's share of its spans stays in registers for the whole walk. The two
// 64-k halves of a span have their own absmax (blocksize 64), so no mma may sum both halves into one
// output. Two layouts (NT, by M):
// - NT = 0 (M <= 4): the B operand keeps the halves apart: column 2m + h holds x row m on the k of
//   half h and zeros elsewhere, and the C fragment's two columns of x row m are the halves' sums.
// - NT = 1 (M <= 8): lanes c and c ^ 2 swap two code words, so that each holds 16 k of each half;
//   mma steps 0-3 then read half 0 only and steps 4-7 half 1 only, into two accumulators, and column
//   m of B is x row m: 8 rows of x for the mmas that take 4 at NT = 0, at 2 shuffles and 6 selects
//   per row and span.
// The halves' sums are scaled apart in fp32. The decode reads the wide byte-pair table (lut4_wide,
// 2 instructions per code byte). Each warp stores its scaled sums of each tile in its own slab of
// shared memory, summed over the warps in a fixed order at the end (no atomics: the result is the
// same bits on every call); the K slices (gridDim.y) meet in finish_outputs. A slice longer than the
// warps' one walk (kPasses, plan_qlora_gemv: only where a split plan's slabs would squeeze L1) is walked
// in passes of kW·kS·kSpan k, x's fragments reloaded between passes.
// Measured on the H200 (bench/NOTES.md, fifteenth session run 11), NT = 0 against the TMA ring at
// M = 1, 2 and 4 on the four benchmark shapes: 0.74-0.94x its time (8192×28672, M = 1: 53.4 against
// 59.0 µs). What bounds it: L1 wavefronts (82% of peak: the lookups, and code loads that touch 8
// rows each) with issue at 38%; more tiles in flight, L2 prefetch and a register share of the
// decode were slower (runs 6-9); code loads that skip L1 (load_codes) 0.94-0.97x (twenty-third
// session). NT = 1 (sixteenth session run 4) at M = 5 to 8: 0.76-0.82x the
// TMA ring's time at K = 4096 (4096×14336: 19.8-19.9 against 24.0-24.8 µs), 1.07-1.11x at
// 14336×4096 (K split in 4 slices, the last half empty) and 1.10x at 8192×28672 M = 5 (M = 6-8
// there: max_tiles(M) leaves two waves of blocks), so auto takes it where K <= 4096. Two 8-byte
// loads per half instead of the swap: slower (run 3); M up to 16 with two n-tiles of x and one span
// per warp: 1.5x the TMA ring's time (branch wip-rows16).
constexpr int kSpan = 128;  // k per span: 64 code bytes per row of W
struct GemvRows {
  // spans per warp, warps per block, tiles loaded ahead, resident blocks per SM (128 registers)
  static constexpr int kS = 2, kW = 16, kD = 2, kMinBlocks = 1;
  static constexpr int kThreads = kW * 32, kSliceK = kW * kS * kSpan;  // k per block, at most
  // K in S = ceil(K / kSliceK) slices (gridDim.y) of this many k each (the last one shorter): equal
  // in whole warps' spans (kS·kSpan), so that no block's warps sit idle while others walk a full slice
  // (14336: 4 slices of 3584, not 3 of 4096 and one of 2048). S - 1 such slices end before K for
  // every K that is a multiple of 64 (checked up to 2^21 in Python), so every block has a warp in K.
  // The slices of the split plan, ceil(K / kSliceK) (rows_plan may take fewer, walked in passes).
  __host__ __device__ static constexpr int64_t max_slices(int64_t K) { return (K + kSliceK - 1) / kSliceK; }
  __host__ __device__ static constexpr int slice_k(int64_t K, int64_t S) {
    return static_cast<int>((K + S * kS * kSpan - 1) / (S * kS * kSpan) * (kS * kSpan));
  }
  static constexpr int kMaxM0 = 4, kMaxM = 8;  // layout NT = 0 up to kMaxM0, NT = 1 above
  // Row tiles per block: at most 64, and the warps' slabs [kW][16·tiles][M] float32 within 160 KiB.
  __host__ __device__ static constexpr int max_tiles(int M) {
    return 160 * 1024 / (kW * 16 * M * 4) < 64 ? 160 * 1024 / (kW * 16 * M * 4) : 64;
  }
  __host__ __device__ static constexpr size_t smem_bytes(int M, int tiles) {
    return 128 + kWideTableBytes + static_cast<size_t>(kW) * tiles * 16 * M * 4 + 256 * 4 + 16;
  }
};
// sm_90's opt-in limit of dynamic shared memory per block (227 KiB) holds the largest plan at every M.
constexpr bool rows_smem_fits() {
  for (int M = 1; M <= GemvRows::kMaxM; ++M)
    if (GemvRows::smem_bytes(M, GemvRows::max_tiles(M)) > 232448) return false;
  return true;
}
static_assert(rows_smem_fits(), "the register pipeline's shared memory fits sm_90 at every M");

// A 16-byte load of packed codes. kStream: codes are read once per forward, so the load skips L1
// (ld.global.nc.L1::no_allocate), asks L2 to fetch 256 bytes around it and marks the lines
// evict-first (`policy`, from createpolicy.fractional.L2::evict_first); otherwise a plain
// ld.global.nc. Measured on the H200 (bench/results/h200/s23, interleaved CUDA graphs of the
// forward, the same bits): the streaming load takes 0.94-0.97x the plain load's time at each of
// the 25 shape / M points (M 1-8) measured where the block's shared memory is at most 161 KiB, and
// 1.04-1.06x at the two where it is 177-181 KiB (M = 4 on 8192×28672 and 28672×8192: the warps'
// sum slabs of 28-29 tiles). Shared memory is carved out of the same 256 KiB per SM as L1; the
// reading is that a kernel leaving L1 little room loses by skipping it (not profiled).
// kRowsStreamMaxSmem is the midpoint of the two measured ends (nothing measured between them).
// The L2::256B prefetch alone was neutral (0.97-1.00x): the gain is L1's, whose wavefronts bound
// this kernel. With the scales of both spans in one load (kMerged) streaming wins at those points
// too (twenty-fourth session run 3, M = 4): the plain load takes 1.08x / 1.09x the streaming one's
// time on 8192×28672 / 28672×8192 (177-181 KiB) and 1.10x on 8192×24576 (161 KiB); without kMerged
// 0.94x / 0.96x and 1.04x in the same call (s23 reproduced). So the merged kernel always streams
// and the threshold holds for the per-span one.
template <bool kStream> __device__ __forceinline__ uint4 load_codes(const uint8_t* ptr, uint64_t policy) {
  uint4 v;
  if constexpr (kStream) {
    asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(ptr), "l"(policy));
  } else {
    v = __ldg(reinterpret_cast<const uint4*>(ptr));
  }
  return v;
}

// The register pipeline streams its code loads (load_codes) where its block's shared memory is at
// most this (GemvRows::smem_bytes of the plan's M and tiles per block), and always with kMerged
// (rows_merged_scales): see load_codes.
constexpr size_t kRowsStreamMaxSmem = 168 * 1024;

// Whether the register pipeline can load both spans' raw scales at once (kMerged): blocksize 64,
// K % 256 == 0 (rows of absmax blocks a multiple of 4), absmax aligned for the 4- or 16-byte load.
inline bool rows_merged_scales(const GemvParams& p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p.w.absmax);
  return p.w.blocksize_log2 == 6 && p.K % 256 == 0 && a % (p.w.nested_absmax != nullptr ? 4 : 16) == 0;
}

// kMerged: one load brings the raw scales of both spans (blocksize 64, K % 256 == 0, absmax aligned:
// rows_merged_scales): a warp's 256 k of a row are absmax blocks 4j .. 4j + 3, one 4-byte word of
// nested codes and one nested absmax: two loads a tile instead of four (float scales: the two this lane
// uses, two 4-byte loads; since s30 no longer one 16-byte float4 and a select, see load).
// Interleaved CUDA graphs of the forward (bench/results/h200/s24, the same bits): where both forms
// stream, the merged one takes 0.97-0.99x the per-span one's time at the 10 register-pipeline points
// of run 2 (M 1-8, five shapes) and 0.91-0.98x at the 6 of run 3 (M 1-3 on 8192×28672, M = 4 on
// 28672×8192, 8192×24576 and 14336×4096; M = 1 on 8192×28672: 0.98x in run 2, 0.94x in run 3);
// with plain loads (M = 4 on 8192×28672) 1.03x, which is why it always streams.
// 16 bytes of x. kCoherent (x read after griddepcontrol.wait, where the previous kernel may have written it):
// ld.global.cg — a read-only (.nc) load may legally be scheduled above the wait by ptxas, and was (wip-fuse-u's first
// build, s35 run 8: two of load_x's LDG.E.128.CONSTANT above the ACQBULK; the chained-forward test caught it).
template <bool kCoherent> __device__ __forceinline__ uint4 load_x16(const uint4* p) {
  if constexpr (kCoherent) return __ldcg(p);
  return __ldg(p);
}

// kFusedU: the grid also holds the u blocks (GemvParams' x_lora .. u_rlog): one launch a forward, launched as the
// previous kernel's programmatic dependent; the row blocks stage their tables and issue their first tiles' loads
// before they wait for it, then load x.
template <typename T, int NT, bool kStream, bool kMerged, bool kPasses, bool kFusedU = false>
__device__ __forceinline__ void gemv_rows_body(const GemvParams& p) {
  using C = GemvRows;
  constexpr int kS = C::kS, kW = C::kW, kD = C::kD, kThr = C::kThreads, kPass = C::kSliceK;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* const table_base = align_smem<128>(smem_raw);
  const int M = p.M, G = p.row_tiles, R = 16 * G;
  float* rows = reinterpret_cast<float*>(table_base + kWideTableBytes);  // [kW][R][M] the warps' sums
  float* code2 = rows + kW * R * M;                                     // [256]
  int* last = reinterpret_cast<int*>(code2 + 256);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  // This block's column block (16·G rows from row0) and K slice. kFusedU: the grid's first (gridDim.x - row_blocks)·
  // gridDim.y blocks in linear order are the u blocks, the rest the row blocks in the unfused grid's order. A row
  // block waits (wait_for_u) only for blocks before it, which the hardware starts no later (the forward-progress
  // assumption of a decoupled look-back): no hang where the grid is not resident all at once (SMs held by another
  // stream's kernel, an SM-limited context).
  unsigned colb = blockIdx.x, kslice = blockIdx.y;
  int row0 = colb * R;
  allow_next_launch();
  if constexpr (kFusedU) {
    const int lin = static_cast<int>(blockIdx.y * gridDim.x + blockIdx.x);
    const int u_slots = (static_cast<int>(gridDim.x) - p.row_blocks) * static_cast<int>(gridDim.y);
    if (lin < u_slots) {  // a u block (or a spare one): u block lin
      // x_lora may be the previous kernel's output, and a previous fused grid may still use the counters (every block
      // of this grid touches them only after this wait)
      wait_for_prior_grid();
      if (lin < p.u_blocks) {
        lora_u_block<T, kThr, true>(static_cast<const T*>(p.x_lora), static_cast<const T*>(p.A), p.u_out, p.M, p.K, p.r,
                              p.u_rlog, lin % p.u_rank_blocks, lin / p.u_rank_blocks, p.u_rank_blocks,
                              reinterpret_cast<float*>(table_base));
        __threadfence();  // this thread's u before the count
        __syncthreads();
        if (tid == 0) atomicAdd(p.u_sync, 1u);
      }
      fused_block_done<true>(p);
      return;
    }
    colb = (lin - u_slots) % p.row_blocks;
    kslice = (lin - u_slots) / p.row_blocks;
    row0 = colb * R;
  }
  // This block's K slice [kbeg, kend) and this warp's first span in it (K < 2^30); warps whose spans
  // start past the slice (active = false) load nothing and add nothing (the sums read aw slabs).
  // `active` goes through a vote so that ptxas sees it warp-uniform (VOTEU): the loop conditioned on
  // it stays uniform control flow and the pair table's base folds into its LDS [R + UR] (128 a kernel
  // instead of an IMAD before each; s30 run 2: 0.96-0.98x the time on the large shapes, 0.99-1.01x
  // elsewhere, the same bits). Every lane of the block is here: the full mask is right.
  const int kbeg = kslice * p.slice_k, kend = min(p.K, kbeg + p.slice_k);
  const int k0 = kbeg + warp * kS * kSpan;
  const bool active = __all_sync(0xffffffffu, k0 < kend);
  const int aw = min(kW, (kend - kbeg + kS * kSpan - 1) / (kS * kSpan));  // active warps (>= 1)
  float* const my_rows = rows + warp * R * M;
  // kPasses: the slice is longer than one walk of the warps (kPass = kW·kS·kSpan k): warp w walks its row tiles
  // once per pass j, on k0 + j·kPass (the passes with k0 + j·kPass < kend; the launcher gives K % 256 == 0, so a
  // pass's spans are whole), its x fragments reloaded between passes and its sums added into its slab. The tile
  // loads run on across the passes (kD ahead, counters li / lk), so a pass's start is not a pipeline refill.
  // (Shuffled from lane 0 so that ptxas sees the trip count warp-uniform, as `active`.)
  const int n_tiles = kPasses ? __shfl_sync(0xffffffffu, active ? (kend - k0 + kPass - 1) / kPass * G : 0, 0) : G;

  // The tables first (one wait for their loads), then x and the first tiles. Staged after every warp's first loads
  // are issued, the forward took 1.02-1.10x the time at M 1-8 (thirty-first session runs 3-4): the tables' stores
  // then wait for those code loads, and every warp waits at the tables' barrier for the slowest (thirty-second
  // session timeline: past the barrier at ~4.5 µs instead of 1.3).
  stage_gemv_tables<T, 256>(p.w, table_base, code2, nullptr, tid);

  // Which of this lane's 64-k halves exist (K % 128 == 64: a span's second half may not; spans
  // past K: neither). Lane (g, c) reads half c / 2 of each span's codes and owns the scale of row
  // g + 8·(c / 2), half c % 2.
  bool code_ok[kS], scale_ok[kS];
#pragma unroll
  for (int s = 0; s < kS; ++s) {
    code_ok[s] = k0 + s * kSpan + 64 * (c >> 1) < kend;
    scale_ok[s] = k0 + s * kSpan + 64 * (c & 1) < kend;
  }
  // x: words 2·st, 2·st + 1 of bx[s] are the B fragment of mma step st. NT = 0: column g = 2m + h:
  // row m = g / 2 on half h = g % 2, which lanes c = 2h, 2h + 1 hold (their 32 k of each span: k
  // 32c .. 32c + 31); zeros elsewhere. NT = 1: column g is x row g; words 0-7 the 16 k of half 0 the
  // lane holds after the swap (from kb0), words 8-15 those of half 1 (from 64 + kb0).
  uint32_t bx[kS][16];
  auto load_x = [&](int kx0) {  // (kx0: k0, or a later pass's k0 + j·kPass, where every span is whole)
    if constexpr (NT == 0) {
#pragma unroll
      for (int s = 0; s < kS; ++s) {
        const int m = g / 2;
        const bool mine = m < M && (c >> 1) == (g & 1) && code_ok[s];
        const uint4* src = reinterpret_cast<const uint4*>(static_cast<const T*>(p.x) + static_cast<int64_t>(mine ? m : 0) * p.K +
                                                          (mine ? kx0 + s * kSpan + 32 * c : 0));
#pragma unroll
        for (int v = 0; v < 4; ++v) {
          const uint4 q = mine ? load_x16<kFusedU>(src + v) : make_uint4(0, 0, 0, 0);
          bx[s][4 * v] = q.x; bx[s][4 * v + 1] = q.y; bx[s][4 * v + 2] = q.z; bx[s][4 * v + 3] = q.w;
        }
      }
    } else {
      const int kb0 = c < 2 ? 32 * c : 32 * (c - 2) + 16;  // words 0-1 kept (c < 2) or got from lane c - 2
#pragma unroll
      for (int s = 0; s < kS; ++s)
#pragma unroll
        for (int v = 0; v < 4; ++v) {
          const int kx = kx0 + s * kSpan + 64 * (v / 2) + kb0 + 8 * (v % 2);
          const bool mine = g < M && kx0 + s * kSpan + 64 * (v / 2) < kend;
          const uint4 q = mine ? load_x16<kFusedU>(reinterpret_cast<const uint4*>(static_cast<const T*>(p.x) + static_cast<int64_t>(g) * p.K + kx))
                               : make_uint4(0, 0, 0, 0);
          bx[s][4 * v] = q.x; bx[s][4 * v + 1] = q.y; bx[s][4 * v + 2] = q.z; bx[s][4 * v + 3] = q.w;
        }
    }
  };
  if constexpr (!kFusedU) load_x(k0);  // (kFusedU: after the wait for the prior grid, below)

  // Tile i's loads: every lane loads from a valid address (rows past N: row N - 1; a missing half
  // or span: the row's first bytes and block, multiplied by x's zeros and a zero scale), so no load
  // is predicated. Scale block indices fit 32 bits (the launcher checks N·K / blocksize < 2^31).
  const bool nested = p.w.nested_absmax != nullptr;
  const int kb = p.K >> p.w.blocksize_log2;  // absmax blocks per row
  const int code_off = k0 / 2 + 16 * c, srow_off = 8 * (c >> 1);
  int sk[kS];  // this lane's scale block within its row, per span
#pragma unroll
  for (int s = 0; s < kS; ++s) sk[s] = scale_ok[s] ? (k0 + s * kSpan + 64 * (c & 1)) >> p.w.blocksize_log2 : 0;
  const int kq = k0 < kend ? k0 >> 6 : 0;  // kMerged: the warp's first absmax block in its row
  uint64_t policy = 0;  // L2 evict-first for the streamed code loads
  if constexpr (kStream) asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  struct Tile {
    uint4 cw[kS][2];  // codes of rows g, g + 8 per span
    uint32_t q[kS];   // raw scales (float32 bits, or the nested code byte; kMerged nested: q[0] the 4 bytes)
    float a2[kS];
  };
  auto load = [&](int i, int koff, Tile& t) {  // tile i of the pass at k offset koff (0, or j·kPass: kPasses)
    const int ra = min(row0 + 16 * i + g, p.N - 1), rb = min(row0 + 16 * i + g + 8, p.N - 1);
    const uint8_t* pa = p.w.packed + static_cast<int64_t>(ra) * (p.K / 2);
    const uint8_t* pb = p.w.packed + static_cast<int64_t>(rb) * (p.K / 2);
#pragma unroll
    for (int s = 0; s < kS; ++s) {
      const int o = code_ok[s] ? code_off + koff / 2 + s * (kSpan / 2) : 0;
      t.cw[s][0] = load_codes<kStream>(pa + o, policy);
      t.cw[s][1] = load_codes<kStream>(pb + o, policy);
    }
    const int sb = min(row0 + 16 * i + g + srow_off, p.N - 1) * kb;
    if constexpr (kMerged) {
      static_assert(kS == 2, "two spans: four absmax blocks of 64");
      const int b = sb + kq + (koff >> 6);  // a multiple of 4 (kb, kq and koff / 64 are)
      // Nothing here may read a loaded value (not even a move joining the two formats' registers): the
      // warp would wait for the load, in order, where it should go on with the tiles already loaded (s30
      // run 4: a shift right after the load held 16-22% of the kernel's stall samples at M = 1; run 5, this
      // form: 0.917-0.972x the time at M = 1-8, 1.00x at M = 4 on 8192x28672 / 28672x8192). So nested:
      // q[0] = the 4-byte word of codes, its bytes picked where they are used; float: q[0], q[1] = the two
      // spans' scales, block kq + (c & 1) and kq + 2 + (c & 1), two 4-byte loads.
      const uint32_t* f = nested ? reinterpret_cast<const uint32_t*>(static_cast<const uint8_t*>(p.w.absmax) + b)
                                 : static_cast<const uint32_t*>(p.w.absmax) + b + (c & 1);
      t.q[0] = __ldg(f);
      t.q[1] = nested ? 0u : __ldg(f + 2);
      t.a2[0] = t.a2[1] = nested ? __ldg(p.w.nested_absmax + (b >> kNestedBlockLog2)) : 0.f;  // one for all four
    } else {
#pragma unroll
      for (int s = 0; s < kS; ++s) {
        const int b = sb + sk[s] + (koff >> p.w.blocksize_log2);
        if (nested) {
          t.q[s] = __ldg(static_cast<const uint8_t*>(p.w.absmax) + b);
          t.a2[s] = __ldg(p.w.nested_absmax + (b >> kNestedBlockLog2));
        } else {
          t.q[s] = __ldg(static_cast<const uint32_t*>(p.w.absmax) + b);
          t.a2[s] = 0.f;
        }
      }
    }
  };
  Tile tl[kD];
  // kPasses: the next load's tile li and pass offset lk, the computed tile's ci and pass offset ck
  int li = 0, lk = 0, ci = 0, ck = 0;
  if constexpr (kPasses) {
#pragma unroll
    for (int d = 0; d < kD; ++d) {
      if (d < n_tiles) {
        load(li, lk, tl[d]);
        if (++li == G) li = 0, lk += kPass;
      }
    }
  } else if (active) {
#pragma unroll
    for (int d = 0; d < kD; ++d) load(min(d, G - 1), 0, tl[d]);
  }
  if constexpr (kFusedU) {  // x may be the previous kernel's output: only once that grid is complete
    wait_for_prior_grid();
    load_x(k0);
  }
  __syncthreads();  // tables
  const uint32_t tbase = smem_addr(table_base), lane4 = 4 * lane;

  for (int i0 = 0; (kPasses || active) && i0 < n_tiles; i0 += kD) {
#pragma unroll
    for (int d = 0; d < kD; ++d) {
      const int i = kPasses ? ci : i0 + d;
      if (i0 + d >= n_tiles) break;
      // NT = 0: acc[0..1] rows g, g + 8 of the tile for x row c (C columns 2c, 2c + 1); NT = 1: the C
      // fragment (rows g, g + 8; x rows 2c, 2c + 1)
      float acc[NT == 0 ? 2 : 4] = {};
#pragma unroll
      for (int s = 0; s < kS; ++s) {
        // (kMerged nested: byte 2s + (c & 1) of the word, absmax block kq + 2s + (c & 1))
        const uint32_t q = kMerged && nested ? (tl[d].q[0] >> (16 * s + 8 * (c & 1))) & 0xFFu : tl[d].q[s];
        const float own = !scale_ok[s] ? 0.f
                          : nested     ? nested_absmax(code2, q, tl[d].a2[s], p.w.nested_offset)
                                       : __uint_as_float(q);
        uint32_t cw[2][4];  // the code words of rows g, g + 8 (NT = 1: words 0-1 half 0, 2-3 half 1)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const uint4 w = tl[d].cw[s][j];
          if constexpr (NT == 0) {
            cw[j][0] = w.x; cw[j][1] = w.y; cw[j][2] = w.z; cw[j][3] = w.w;
          } else {  // keep the two words of my half, swap the other two with lane c ^ 2 (the other half)
            const bool lo = c < 2;
            const uint32_t r0 = __shfl_xor_sync(0xFFFFFFFFu, lo ? w.z : w.x, 2);
            const uint32_t r1 = __shfl_xor_sync(0xFFFFFFFFu, lo ? w.w : w.y, 2);
            cw[j][0] = lo ? w.x : r0; cw[j][1] = lo ? w.y : r1; cw[j][2] = lo ? r0 : w.z; cw[j][3] = lo ? r1 : w.w;
          }
        }
        float part[NT + 1][4] = {};  // NT = 0: both halves' columns; NT = 1: one C fragment per half
#pragma unroll
        for (int wd = 0; wd < 4; ++wd) {  // code word wd: steps 2wd, 2wd + 1
          uint32_t ra[4], rb[4];
          lut4_wide(cw[0][wd], lane4, tbase, ra);
          lut4_wide(cw[1][wd], lane4, tbase, rb);
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int st = 2 * wd + h;
            const uint32_t a[4] = {ra[2 * h], rb[2 * h], ra[2 * h + 1], rb[2 * h + 1]};
            mma16816<T>(part[NT * (wd / 2)], a, bx[s][2 * st], bx[s][2 * st + 1]);
          }
        }
        // The absmax of rows g (halves 0, 1) and g + 8 (halves 0, 1) from lanes 4g + 0..3.
        const int l0 = lane & ~3;
        const float s_a0 = __shfl_sync(0xFFFFFFFFu, own, l0), s_a1 = __shfl_sync(0xFFFFFFFFu, own, l0 | 1);
        const float s_b0 = __shfl_sync(0xFFFFFFFFu, own, l0 | 2), s_b1 = __shfl_sync(0xFFFFFFFFu, own, l0 | 3);
        if constexpr (NT == 0) {  // part[0]: [0..1] row g, halves 0 and 1; [2..3] row g + 8
          acc[0] = fmaf(part[0][1], s_a1, fmaf(part[0][0], s_a0, acc[0]));
          acc[1] = fmaf(part[0][3], s_b1, fmaf(part[0][2], s_b0, acc[1]));
        } else {  // part[h]: [0..1] row g, [2..3] row g + 8 on half h
#pragma unroll
          for (int e = 0; e < 4; ++e)
            acc[e] = fmaf(part[NT][e], e < 2 ? s_a1 : s_b1, fmaf(part[0][e], e < 2 ? s_a0 : s_b0, acc[e]));
        }
      }
      if constexpr (kPasses) {
        if (i0 + d + kD < n_tiles) {
          load(li, lk, tl[d]);
          if (++li == G) li = 0, lk += kPass;
        }
      } else if (i + kD < G) {
        load(i + kD, 0, tl[d]);
      }
      const int nl = 16 * i + g;
      const bool add = kPasses && ck > 0;  // a later pass: onto the slab's sums
      auto put = [&](int idx, float v) {
        if (add) v += my_rows[idx];
        my_rows[idx] = v;
      };
      if constexpr (NT == 0) {
        if (c < M) {
          put(nl * M + c, acc[0]);
          put((nl + 8) * M + c, acc[1]);
        }
      } else {
#pragma unroll
        for (int e = 0; e < 2; ++e)
          if (2 * c + e < M) {
            put(nl * M + 2 * c + e, acc[e]);
            put((nl + 8) * M + 2 * c + e, acc[2 + e]);
          }
      }
      if constexpr (kPasses) {
        if (++ci == G) {  // the pass is done: the next one's x
          ci = 0;
          ck += kPass;
          if (i0 + d + 1 < n_tiles) load_x(k0 + ck);
        }
      }
    }
  }
  __syncthreads();
  for (int idx = tid; idx < R * M; idx += kThr) {  // the active warps' sums in a fixed order, into warp 0's slab
    float v = rows[idx];
    for (int w = 1; w < aw; ++w) v += rows[w * R * M + idx];
    rows[idx] = v;
  }
  __syncthreads();
  // (the slabs of warps 1 .. kW - 1 are free now: the LoRA term's staging area)
  finish_outputs<T, kFusedU>(p, rows, R * M, row0, last, colb, kslice, rows + R * M, (kW - 1) * R * M * 4);
  if constexpr (kFusedU) fused_block_done<false>(p);
}
template <typename T, int NT, bool kStream, bool kMerged, bool kPasses, bool kFusedU = false>
__global__ void __launch_bounds__(GemvRows::kThreads, GemvRows::kMinBlocks) qlora_gemv_rows_kernel(const GemvParams p) {
  gemv_rows_body<T, NT, kStream, kMerged, kPasses, kFusedU>(p);
}
// The register pipeline beside lora_u_small_kernel: at most 120 registers a thread, so that a 128-thread u block of 32
// registers fits beside the block on its SM (a quarter of the SM's registers: 4 warps x 120 + 1 warp x 32, x 32 lanes
// = 16384; with __launch_bounds__ of more than 512 threads ptxas allots 5 warps a quarter and caps at 96 registers).
template <typename T, int NT, bool kStream, bool kMerged, bool kPasses>
__global__ void __maxnreg__(120) qlora_gemv_rows_co_kernel(const GemvParams p) {
  gemv_rows_body<T, NT, kStream, kMerged, kPasses, false>(p);
}
// The register pipeline's kernel without u in its grid: capped (kCo, beside lora_u_small_kernel) or not.
template <typename T, int NT, bool kStream, bool kMerged, bool kPasses, bool kCo>
constexpr void (*rows_kernel())(GemvParams) {
  if constexpr (kCo) return qlora_gemv_rows_co_kernel<T, NT, kStream, kMerged, kPasses>;
  else return qlora_gemv_rows_kernel<T, NT, kStream, kMerged, kPasses>;
}

// u[m, j] = Σ_k x̃[m, k]·A[j, k]: block (b, y) of a grid (ceil(r / 2^rlog), ceil(M / 2)) takes rows 2·y, 2·y + 1
// and the 2^rlog ranks j = b + q·gridDim.x, q = threadIdx.x / G: one group of G = 1024 / 2^rlog threads per
// rank, 16-byte loads, kUSteps k steps per thread and loop trip, fp32 sums reduced across the group (rlog 0:
// one rank per block; K <= 16384: one trip). With only r blocks per row pair the kernel is latency-bound: its
// time grows with the trips through memory (K = 14336: 5.9 µs with 512 threads, about a fifth of the forward
// at 14336×4096, M = 1).
constexpr int kUThreads = 1024;
constexpr int kUMaxRanksLog2 = 3;  // (launch_typed's rule; the kernel takes up to 5: 32 threads a rank)

// One block of u = x̃·Aᵀ (kThr threads): rank block bx of gx, row group by (lora_u_kernel's blockIdx.x, gridDim.x and
// blockIdx.y: rows kRows·by ..), its warps' sums in red (kThr / 32 · kRows floats of shared memory), kSteps 16-byte
// loads of A a thread per trip. Every thread calls it.
template <typename T, int kThr, bool kCgX, int kRows, int kSteps>
__device__ __forceinline__ void lora_u_block(const T* __restrict__ xl, const T* __restrict__ A, float* __restrict__ u,
                                             int M, int K, int r, int rlog, int bx, int by, int gx, float* red) {
  const int G = kThr >> rlog, q = threadIdx.x / G, t = threadIdx.x % G;
  const int j = bx + q * gx, m0 = by * kRows;
  float part[kRows] = {};
  if (j < r) {
    for (int k0 = t * 8; k0 < K; k0 += G * 8 * kSteps) {
      uint4 av[kSteps], xv[kSteps][kRows];
#pragma unroll
      for (int st = 0; st < kSteps; ++st) {  // unpredicated loads from valid addresses, so that they issue together
        const int k = min(k0 + st * G * 8, K - 8);
        av[st] = __ldg(reinterpret_cast<const uint4*>(A + static_cast<int64_t>(j) * K + k));
#pragma unroll
        for (int m = 0; m < kRows; ++m)
          xv[st][m] = load_x16<kCgX>(reinterpret_cast<const uint4*>(xl + static_cast<int64_t>(min(m0 + m, M - 1)) * K + k));
      }
#pragma unroll
      for (int st = 0; st < kSteps; ++st)  // (steps past K and rows past M: zeros)
#pragma unroll
        for (int m = 0; m < kRows; ++m)
          if (k0 + st * G * 8 >= K || m0 + m >= M) xv[st][m] = make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int st = 0; st < kSteps; ++st) {
        const T* a = reinterpret_cast<const T*>(&av[st]);
#pragma unroll
        for (int m = 0; m < kRows; ++m) {
          const T* xe = reinterpret_cast<const T*>(&xv[st][m]);
#pragma unroll
          for (int e = 0; e < 8; ++e) part[m] = fmaf(to_float(xe[e]), to_float(a[e]), part[m]);
        }
      }
    }
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
    float v = part[m];
#pragma unroll
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
    if (lane == 0) red[warp * kRows + m] = v;
  }
  __syncthreads();
  if (threadIdx.x < (kRows << rlog)) {  // (rank group qq's sums: its G / 32 warps, in order)
    const int qq = threadIdx.x / kRows, m = threadIdx.x % kRows, jj = bx + qq * gx;
    if (jj < r && m0 + m < M) {
      float v = 0.f;
      for (int w = qq * (G / 32); w < (qq + 1) * (G / 32); ++w) v += red[w * kRows + m];
      u[(m0 + m) * r + jj] = v;
    }
  }
}


template <typename T>
__global__ void __launch_bounds__(kUThreads) lora_u_kernel(const T* __restrict__ xl, const T* __restrict__ A,
                                                           float* __restrict__ u, int M, int K, int r, int rlog) {
  // Launched as the previous grid's programmatic dependent (sm_90), this kernel may start while that grid runs: nothing
  // is read or written before it is complete and its memory visible (x may be its output, u's memory its input), and
  // the GEMV (which reads x before it waits for u) may start only then.
  wait_for_prior_grid();
  allow_next_launch();  // the GEMV kernel may start now (it waits for u)
  __shared__ float red[kUThreads / 32 * kURows];
  lora_u_block<T, kUThreads>(xl, A, u, M, K, r, rlog, blockIdx.x, blockIdx.y, gridDim.x, red);
}

// u by blocks of 128 threads and at most 32 registers, one rank and one row each (grid (r, M)): one fits on an SM
// beside a qlora_gemv_rows_co_kernel block (120 registers x 512 threads), so that u runs beside the GEMV's blocks.
// lora_u_kernel's blocks (1024 threads) take an SM each before the GEMV's block there can start: at r = 64 that held
// 64 of the GEMV's SMs back (launch_typed's rule).
constexpr int kUSmallThreads = 128;
template <typename T>
__global__ void __launch_bounds__(kUSmallThreads, 16) lora_u_small_kernel(const T* __restrict__ xl,
                                                                          const T* __restrict__ A, float* __restrict__ u,
                                                                          int M, int K, int r) {
  wait_for_prior_grid();
  allow_next_launch();
  __shared__ float red[kUSmallThreads / 32];
  lora_u_block<T, kUSmallThreads, false, 1, 2>(xl, A, u, M, K, r, 0, blockIdx.x, blockIdx.y, gridDim.x, red);
}

// The 3-d TMA maps of qlora_gemv_tma_kernel: the codes as (32 bytes of a chunk, N rows, K / 64
// chunks) in boxes of (32, the block's rows, kWarps chunks); x as (64 k, M rows, K / 64 chunks) in
// boxes of (64, M, kWarps): each lands as kWarps consecutive per-chunk tiles.
template <typename T, int kTiles>
std::string gemv_tensor_maps(const GemvParams& p, CUtensorMap* codes_map, CUtensorMap* x_map) {
  const cuuint64_t chunks = static_cast<cuuint64_t>(p.K / kChunk);
  const cuuint64_t cdims[3] = {kChunk / 2, static_cast<cuuint64_t>(p.N), chunks};
  const cuuint64_t cstrides[2] = {static_cast<cuuint64_t>(p.K / 2), kChunk / 2};
  const cuuint32_t cbox[3] = {kChunk / 2, kTiles * 16, kWarps};
  std::string err = encode_tensor_map(codes_map, tensor_map_dtype<uint8_t>(), 3, p.w.packed, cdims, cstrides, cbox,
                                      CU_TENSOR_MAP_SWIZZLE_NONE, "codes");
  if (!err.empty()) return err;
  const cuuint64_t xdims[3] = {kChunk, static_cast<cuuint64_t>(p.M), chunks};
  const cuuint64_t xstrides[2] = {static_cast<cuuint64_t>(p.K) * sizeof(T), kChunk * sizeof(T)};
  const cuuint32_t xbox[3] = {kChunk, static_cast<cuuint32_t>(p.M), kWarps};
  return encode_tensor_map(x_map, tensor_map_dtype<T>(), 3, p.x, xdims, xstrides, xbox, CU_TENSOR_MAP_SWIZZLE_NONE, "x");
}

template <typename T, int MT, int kTiles>
std::string launch_gemv(const GemvParams& p, int splits, int pipeline, bool dependent, cudaStream_t stream) {
  const dim3 grid((p.N + kTiles * 16 - 1) / (kTiles * 16), splits);
  if (pipeline == 1)
    return launch_kernel(qlora_gemv_kernel<T, MT, kTiles>, "qlora_gemv_kernel", grid, kThreads,
                         GemvRing<MT, kTiles>::smem_bytes(p.M), stream, 0, dependent, p);
  CUtensorMap codes_map, x_map;
  const std::string err = gemv_tensor_maps<T, kTiles>(p, &codes_map, &x_map);
  if (!err.empty()) return err;
  return launch_kernel(qlora_gemv_tma_kernel<T, MT, kTiles>, "qlora_gemv_tma_kernel", grid, kThreads,
                       GemvTma<MT, kTiles>::smem_bytes(p.M), stream, 0, dependent, p, codes_map, x_map);
}

// NF4LORA_FUSE_U=0 keeps the u kernel (lora_u_kernel) where the register GEMV would compute u in its own grid
// (launch_typed): a switch for A/B timing (bench/gemv_time.py --env) and for ruling the fused grid out; read at
// every launch.
static bool fuse_u_enabled() {
  const char* e = std::getenv("NF4LORA_FUSE_U");
  return e == nullptr || e[0] != '0';
}

template <typename T, int MT>
std::string launch_typed(const GemvParams& p, const void* x_lora, const void* A, float* u, int splits, int tiles,
                         int pipeline, bool dependent, int sm_count, cudaStream_t stream) {
  const int row_pairs = (p.M + kURows - 1) / kURows;
  // The register pipeline runs one block per SM and plans at most one wave: where its grid leaves SMs idle, the u
  // kernel's blocks go there, 2^rlog ranks each (at most 8: 128 threads a rank), so that every GEMV block starts
  // at once rather than after a u block on its SM (s28: 0.95-0.99x the forward's time at M <= 4; with 16 ranks a
  // block at M = 8, 1.00-1.03x: kUMaxRanksLog2).
  auto rank_blocks = [&](int rlog) { return (p.r + (1 << rlog) - 1) >> rlog; };  // u blocks per row pair
  // (the register pipeline's column blocks: its grid's x)
  const int row_blocks = pipeline == 3 ? static_cast<int>((p.N + 16 * p.row_tiles - 1) / (16 * p.row_tiles)) : 0;
  int rlog = 0;
  // The other pipelines: 2^rlog ranks a block, as many as keep each thread's k to one trip through K (K <= 16384 >>
  // rlog), at most 4. Measured (bench/results/h200/s38, runs 5-6, M = 9 and 16 on the TMA ring, against one rank a
  // block): r = 64 0.90-0.94x the forward's time at K = 4096 (4 ranks), 0.976x on 8192×28672 (2 ranks; 4 ranks with 4
  // trips: 1.07x on 14336×4096); r = 16 0.98-1.02x (where one rank a block needs no more blocks than SMs).
  if (pipeline != 3)
    while (rlog < 2 && p.K <= (16384 >> (rlog + 1))) ++rlog;
  if (pipeline == 3) {
    const int spare = sm_count - row_blocks * splits;
    while (rlog < kUMaxRanksLog2 && rank_blocks(rlog) * row_pairs > spare) ++rlog;
    if (rank_blocks(rlog) * row_pairs > spare) rlog = 0;  // (no room: one block per rank)
  }
  // (M = 1 only. s36 run 5: 0.947-0.979x the forward's time at M = 1 on the issue shapes, 0.962x on 4096x4096; run 2
  // (before the end count lost its fence): 0.977-1.021x at M = 2; s35 run 8 (u blocks last): 1.01-1.28x at M 4-8,
  // where the u blocks' dependent loads queue behind the row blocks' streaming from the start)
  const bool fuse_u = fuse_u_enabled();
  if (pipeline == 3 && p.M == 1 && p.u_sync != nullptr && rows_merged_scales(p) && fuse_u) {
    // u fused into the register GEMV's grid (kFusedU): extra columns' worth of u blocks (512 threads, 2^rlog ranks
    // each, at least a warp a rank; first in the grid's linear order, so a row block never waits for a block that
    // cannot start) where the row blocks and they fit one wave of one block per SM (u then runs beside the rows).
    for (int fl = 0; fl <= 4; ++fl) {
      const int n_u = rank_blocks(fl) * row_pairs, extra = (n_u + splits - 1) / splits;
      if ((row_blocks + extra) * splits > sm_count) continue;
      // A u block walks 2^fl ranks over all of K. Where that is more than a quarter of a row block's W elements
      // (16·row_tiles rows x slice_k), the row blocks would wait for u: the u kernel instead (bench/results/h200/s39
      // run 2, r = 64 at M = 1: 0.76x the fused grid's time on 4096x4096 and 8192x2048, 0.83x on 14336x4096; the
      // fused grid kept where the rule keeps it, 0.997-1.005x; r = 16 fused on all six shapes as before).
      if ((int64_t{4} << fl) * p.K > int64_t{16} * p.row_tiles * p.slice_k) break;
      GemvParams q = p;
      q.row_blocks = row_blocks;
      q.u_blocks = n_u;
      q.u_rank_blocks = rank_blocks(fl);
      q.u_rlog = fl;
      q.x_lora = x_lora;
      q.A = A;
      q.u_out = u;
      const dim3 grid(row_blocks + extra, splits);
      const auto kernel = p.slice_k > GemvRows::kSliceK  // (M = 1: layout NT = 0, merged scales, streamed codes)
                              ? qlora_gemv_rows_kernel<T, 0, true, true, true, true>
                              : qlora_gemv_rows_kernel<T, 0, true, true, false, true>;
      return launch_kernel(kernel, "qlora_gemv_rows_kernel", grid, GemvRows::kThreads,
                           GemvRows::smem_bytes(p.M, p.row_tiles), stream, 0, dependent, q);
    }
  }
  // Where the u kernel would run beside the register pipeline with r >= 64 and one u block per SM is enough (M·r <=
  // SMs): lora_u_small_kernel beside the capped GEMV blocks (NF4LORA_FUSE_U=0: the u kernel). Measured (bench/results/
  // h200/s40 run 5, against the u kernel or main's fused grid, same process): r = 64 M = 1 0.913 / 0.940 / 0.899 /
  // 0.975x on 14336x4096 / 28672x8192 / 8192x2048 / 4096x4096 (where the fused grid declines), M = 2 0.931-0.982x on
  // four shapes; where the fused grid runs (4096x14336, 8192x28672) it stays faster (the small blocks 1.019 / 1.027x);
  // r = 16 no gain (against the u kernel, whose 16 blocks hold 16 SMs: 1.003-1.027x).
  const bool co = pipeline == 3 && p.M <= GemvRows::kMaxM0 && p.r >= 64 && p.M * p.r <= sm_count && fuse_u;
  // (dependent, sm_90: the u kernel too is a programmatic dependent, of whatever grid precedes it; see allow_next_launch)
  const std::string uerr =
      co ? launch_kernel(lora_u_small_kernel<T>, "lora_u_small_kernel", dim3(p.r, p.M), kUSmallThreads, 0, stream, 0,
                         dependent, static_cast<const T*>(x_lora), static_cast<const T*>(A), u, p.M, p.K, p.r)
         : launch_kernel(lora_u_kernel<T>, "lora_u_kernel", dim3(rank_blocks(rlog), row_pairs), kUThreads, 0, stream, 0,
                         dependent, static_cast<const T*>(x_lora), static_cast<const T*>(A), u, p.M, p.K, p.r, rlog);
  if (!uerr.empty()) return uerr;
  if (pipeline == 3) {
    const dim3 grid(row_blocks, splits);
    const size_t smem = GemvRows::smem_bytes(p.M, p.row_tiles);
    const bool merged = rows_merged_scales(p);  // (the merged kernel always streams its code loads: see load_codes)
    const bool passes = p.slice_k > GemvRows::kSliceK;  // (plan_qlora_gemv's fewer slices: K % 256 == 0)
    auto pick = [&](auto nt, auto capped) {
      constexpr int NT = decltype(nt)::value;
      constexpr bool kCo = decltype(capped)::value;
      if (passes)
        return merged ? rows_kernel<T, NT, true, true, true, kCo>()
                      : (smem <= kRowsStreamMaxSmem ? rows_kernel<T, NT, true, false, true, kCo>()
                                                    : rows_kernel<T, NT, false, false, true, kCo>());
      return merged ? rows_kernel<T, NT, true, true, false, kCo>()
                    : (smem <= kRowsStreamMaxSmem ? rows_kernel<T, NT, true, false, false, kCo>()
                                                  : rows_kernel<T, NT, false, false, false, kCo>());
    };
    using Nt0 = std::integral_constant<int, 0>;
    using Nt1 = std::integral_constant<int, 1>;
    using Co = std::true_type;
    using NoCo = std::false_type;
    const auto kernel = co ? pick(Nt0{}, Co{}) : p.M <= GemvRows::kMaxM0 ? pick(Nt0{}, NoCo{}) : pick(Nt1{}, NoCo{});
    return launch_kernel(kernel, co ? "qlora_gemv_rows_co_kernel" : "qlora_gemv_rows_kernel", grid, GemvRows::kThreads,
                         smem, stream, 0, dependent, p);
  }
  return tiles == 1 ? launch_gemv<T, MT, 1>(p, splits, pipeline, dependent, stream)
                    : launch_gemv<T, MT, 2>(p, splits, pipeline, dependent, stream);
}

}  // namespace

// Blocks of the TMA kernel resident per SM: its register bound, or fewer where the shared memory
// (228 KiB per SM, 1 KiB of it reserved per block) holds fewer (M = 8: 3 blocks of 65 KiB).
static int tma_blocks_per_sm(int64_t M, int tiles) {
  constexpr int64_t kSmPerSm = 228 * 1024, kReserved = 1024;
  const int mt = M <= 8 ? 1 : 2;
  const int64_t smem = (mt == 1 ? (tiles == 1 ? GemvTma<1, 1>::smem_bytes(M) : GemvTma<1, 2>::smem_bytes(M))
                                : (tiles == 1 ? GemvTma<2, 1>::smem_bytes(M) : GemvTma<2, 2>::smem_bytes(M))) +
                       kReserved;
  const int64_t by_smem = kSmPerSm / smem;
  const int64_t by_regs = mt == 1 ? GemvTma<1, 2>::kMinBlocks : GemvTma<2, 2>::kMinBlocks;
  return static_cast<int>(std::max<int64_t>(1, std::min(by_smem, by_regs)));
}

// K slices of the cp.async or TMA kernel (tiles 1 or 2). Split K over blocks only where the column blocks leave
// SMs idle (at most 8 slices, at least two chunks per warp). Measured (bench/NOTES.md, eighth session runs 4-6):
// splitting the large shapes to fill whole waves of resident blocks was slower (8192×28672, M = 1: 91 µs in 3
// slices against 85 in one) — a shorter K loop per block costs more than the partial last wave. cp.async: at
// least two blocks per SM (14336×4096, 128 column blocks: 3 slices, faster than 2). TMA: as many slices as the
// resident blocks take in one wave, floor(blocks per SM · SMs / column blocks) (twelfth session run 4, 128
// column blocks: M = 1 4 slices 0.94-0.95x the time of 3; M = 16 2 slices 0.78-0.80x the time of 3, which took
// 1.45 waves of 2 blocks per SM).
static int64_t gemv_splits(int64_t M, int64_t N, int64_t K, int sm_count, int tiles, bool tma) {
  const int64_t col_blocks = (N + tiles * 16 - 1) / (tiles * 16);
  int64_t splits = (2 * static_cast<int64_t>(sm_count) + col_blocks - 1) / col_blocks;
  if (tma) splits = static_cast<int64_t>(tma_blocks_per_sm(M, tiles)) * sm_count / col_blocks;
  const int64_t most = std::min<int64_t>(8, K / kChunk / (2 * kWarps));
  return std::max<int64_t>(1, std::min(splits, most));
}

// K in S slices (GemvRows::slice_k); the rows cut into as many blocks as one wave of resident blocks takes
// (whole tiles of 16 rows, at most max_tiles(M) per block). S = ceil(K / kSliceK), but where the warps' slabs
// would leave L1 less than (GemvRows::smem_bytes above kRowsStreamMaxSmem) and K % 256 == 0: the fewest slices
// whose blocks use the SMs as well (blocks over the SM slots of the waves they take), each walked in passes of
// kSliceK (more blocks of fewer tiles, smaller slabs).
// Measured (bench/results/h200/s34, runs 3-4, interleaved CUDA graphs): M = 4 on 8192×28672 (177 KiB a
// block: 2 slices of 28 tiles -> 1 of 14) 0.935-0.938x the time, on 28672×8192 (182 KiB: 7 slices of 29 -> 1
// of 4) 0.888-0.896x; where the slabs are smaller, passes took 1.00-1.07x (M 1-3 on those two shapes, M 1-4 on
// 14336×4096, M = 1 on 14336×1024; M = 1 on 8192×28672 1.05-1.07x) but for 14336×2048 at M 1-2 (0.98-1.01x).
struct RowsPlan {
  int64_t slices, tiles;  // K slices (gridDim.y), row tiles per block
};
static RowsPlan rows_plan(int64_t M, int64_t N, int64_t K, int sm_count) {
  const int64_t S0 = GemvRows::max_slices(K), row_tiles = (N + 15) / 16;
  const int64_t sms = int64_t{GemvRows::kMinBlocks} * sm_count;
  auto tiles_per = [&](int64_t s) {
    const int64_t want = std::max<int64_t>(1, sms / s);
    return std::min<int64_t>(GemvRows::max_tiles(static_cast<int>(M)), (row_tiles + want - 1) / want);
  };
  auto use = [&](int64_t s) {  // blocks over the SM slots of the waves they take
    const int64_t blocks = (row_tiles + tiles_per(s) - 1) / tiles_per(s) * s;
    return static_cast<double>(blocks) / static_cast<double>((blocks + sms - 1) / sms * sms);
  };
  int64_t S = S0;
  if (K % (GemvRows::kS * kSpan) == 0 &&
      GemvRows::smem_bytes(static_cast<int>(M), static_cast<int>(tiles_per(S0))) > kRowsStreamMaxSmem)
    for (int64_t s = 1; s < S0; ++s)
      if (use(s) >= use(S0)) {
        S = s;
        break;
      }
  return {S, tiles_per(S)};
}

// Pipeline 0 (auto) on a device of compute capability `major`: measured on sm_90 (fifteenth and
// sixteenth sessions) the register pipeline up to M = 4, and up to M = 8 where K is one K slice
// (K <= 4096; on longer K split over blocks the TMA ring was faster at M = 5-8: 1.07-1.11x on 14336×4096,
// 1.10x on 8192×28672 at M = 5) or where rows_plan walks K in passes (thirty-fourth session run 6, the same
// process: 0.84-0.86x the TMA ring's time at M 5 / 6 / 8 on 8192×28672, 0.69-0.71x at M 5 / 8 on
// 28672×8192), the TMA ring above; cp.async elsewhere.
static int resolve_pipeline(int pipeline, int64_t M, int64_t N, int64_t K, int major, int sm_count) {
  if (pipeline != 0) return pipeline;
  if (major != 9) return 1;
  if (M <= GemvRows::kMaxM0) return 3;
  if (M > GemvRows::kMaxM) return 2;
  return K <= GemvRows::kSliceK || rows_plan(M, N, K, sm_count).slices < GemvRows::max_slices(K) ? 3 : 2;
}

GemvPlan plan_qlora_gemv(int64_t M, int64_t N, int64_t K, int sm_count, int tiles, int pipeline) {
  GemvPlan plan{};
  if (pipeline == 0) {
    int major = 0, sms = 0;
    current_device(&major, &sms);
    pipeline = resolve_pipeline(0, M, N, K, major, sm_count);
  }
  if (pipeline == 3) {
    const RowsPlan rp = rows_plan(M, N, K, sm_count);
    const int64_t S = rp.slices, per = rp.tiles, row_tiles = (N + 15) / 16;
    const int64_t blocks = (row_tiles + per - 1) / per;
    plan.splits = static_cast<int>(S);
    plan.tiles = static_cast<int>(per);
    // (+ 2 counters: the fused u's, launch_typed; where K is split, in the workspace too, for a launch without the
    // caller's counters: without either, u runs as its own kernel)
    plan.workspace_bytes = S > 1 ? static_cast<int64_t>(sizeof(float)) * S * M * N + 4 * blocks + 8 : 0;
    plan.counters = (S > 1 ? blocks : 0) + 2;
    return plan;
  }
  const bool tma = pipeline == 2;
  // tiles 0 (auto): 16-row blocks for the TMA kernel at M > 8 where 32-row ones would split K into slices
  // of at most 3072 k, else 32-row blocks. Measured (bench/results/h200/s25, run 7: M 9-16 on 13 shapes, the
  // two tile widths in one process): there 16-row blocks over all of K took 0.82-0.98x the time (4096×4096
  // 0.87-0.90x, 1024 rows at K 4096 0.86x): a block's fixed costs (its pair table, its epilogue) and the
  // split's partials weigh on short slices; on longer slices 1.02-1.16x (4096 rows, K 8192-14336), and
  // where 32-row blocks need no split 1.28-1.35x. Other pipelines and M: 32 rows (not measured otherwise).
  int64_t splits = 0;  // (0: not yet planned)
  if (tiles == 0) {
    const int64_t s2 = tma && M > 8 ? gemv_splits(M, N, K, sm_count, 2, true) : 0;
    tiles = s2 > 1 && K / s2 <= 3072 ? 1 : 2;
    if (tiles == 2) splits = s2;
  }
  if (tiles != 1 && tiles != 2) tiles = 2;
  const int64_t col_blocks = (N + tiles * 16 - 1) / (tiles * 16);
  if (splits == 0) splits = gemv_splits(M, N, K, sm_count, tiles, tma);
  plan.splits = static_cast<int>(splits);
  plan.tiles = tiles;
  plan.workspace_bytes = splits > 1 ? static_cast<int64_t>(sizeof(float)) * splits * M * N + 4 * col_blocks : 0;
  plan.counters = splits > 1 ? col_blocks : 0;
  return plan;
}

std::string launch_qlora_gemv(uintptr_t y, uintptr_t x, uintptr_t x_lora, uintptr_t A, uintptr_t B, uintptr_t bias,
                              uintptr_t u, uintptr_t workspace, int dtype, uintptr_t packed, uintptr_t absmax,
                              uintptr_t quant_map, uintptr_t nested_absmax, uintptr_t nested_quant_map,
                              float nested_offset, int blocksize, int64_t M, int64_t N, int64_t K, int64_t r,
                              float scale, int splits, int tiles, int pipeline, uintptr_t counters,
                              int64_t n_counters, uintptr_t stream) {
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
  if (pipeline < 0 || pipeline > 3) return "pipeline must be 0 (auto), 1 (cp.async), 2 (TMA) or 3 (registers)";
  int major = 0, sm_count = 0;
  current_device(&major, &sm_count);
  if (pipeline == 2 && major != 9) return "pipeline 2 (TMA) runs on sm_90 only";
  if (pipeline == 3 && major != 9) return "pipeline 3 (registers) runs on sm_90 only (its shared memory is sized for it)";
  pipeline = resolve_pipeline(pipeline, M, N, K, major, sm_count);
  if (pipeline == 3) {
    if (M > GemvRows::kMaxM) return "the register pipeline (3) takes M <= 8, got M = " + std::to_string(M);
    if (N * K / blocksize >= (int64_t{1} << 31)) return "the register pipeline (3) needs N·K / blocksize < 2^31";
    const int64_t most = GemvRows::max_slices(K);
    if (splits > most || (splits < most && K % (GemvRows::kS * kSpan) != 0))
      return "the register pipeline (3) needs splits = ceil(K / 4096), or fewer where K % 256 == 0, as plan_qlora_gemv "
             "gives; got " + std::to_string(splits) + " for K = " + std::to_string(K);
    if (tiles < 1 || tiles > GemvRows::max_tiles(static_cast<int>(M)))
      return "the register pipeline (3) needs tiles in [1, max_tiles(M)] (64 up to M = 2, 40 at M = 4, 20 at M = 8)";
  } else if (tiles != 1 && tiles != 2) {
    return "tiles must be 1 or 2";
  }
  if (splits > 1 && workspace == 0) return "splits > 1 needs the workspace plan_qlora_gemv sizes";
  if (pipeline == 2 && splits > (chunks + kWarps - 1) / kWarps)
    return "the TMA pipeline needs splits <= K / 512 (rounded up): its K slices are stages of 8 chunks";
  const bool dependent = major >= 9;  // the gemv kernel overlaps the u kernel (PDL, sm_90)
  const int64_t col_blocks = (N + tiles * 16 - 1) / (tiles * 16);
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
  p.row_tiles = tiles;
  p.slice_k = GemvRows::slice_k(K, splits);
  p.lora_vec = r % 8 == 0 && B % 16 == 0 && u % 16 == 0;
  p.scale = scale;
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  // The register pipeline's fused u (launch_typed): two more zeroed counters after the split-K ones, in the caller's
  // buffer (zero on entry, like them) or, where K is split, in the workspace right after its split-K counters (both
  // zeroed here by one memset); without either u runs as its own kernel (plan_qlora_gemv sizes both).
  const int64_t split_counters = splits > 1 ? col_blocks : 0;
  if (pipeline == 3 && counters != 0 && counters % 4 == 0 && n_counters >= split_counters + 2)
    p.u_sync = reinterpret_cast<unsigned int*>(counters) + split_counters;
  if (splits > 1 && counters != 0) {  // the caller's counters, zero on entry: no memset
    if (counters % 4 != 0 || n_counters < col_blocks)
      return "counters must be 4-byte aligned and hold at least " + std::to_string(col_blocks) +
             " counters (plan_qlora_gemv's count), got " + std::to_string(n_counters);
    p.arrived = reinterpret_cast<unsigned int*>(counters);
  } else if (splits > 1) {
    if (pipeline == 3) p.u_sync = p.arrived + col_blocks;  // (the plan sizes these 8 bytes only where K is split)
    const cudaError_t err = cudaMemsetAsync(p.arrived, 0, 4 * (col_blocks + (pipeline == 3 ? 2 : 0)), st);
    if (err != cudaSuccess) return std::string("cudaMemsetAsync: ") + cudaGetErrorString(err);
  }
  const void* xl = reinterpret_cast<const void*>(x_lora);
  const void* a = reinterpret_cast<const void*>(A);
  float* uu = reinterpret_cast<float*>(u);
  auto launch = [&](auto t, auto mt) {
    using T = decltype(t);
    return launch_typed<T, decltype(mt)::value>(p, xl, a, uu, splits, tiles, pipeline, dependent, sm_count, st);
  };
  using One = std::integral_constant<int, 1>;
  using Two = std::integral_constant<int, 2>;
  if (dtype == 1) return M <= 8 ? launch(__half{}, One{}) : launch(__half{}, Two{});
  if (dtype == 2) return M <= 8 ? launch(__nv_bfloat16{}, One{}) : launch(__nv_bfloat16{}, Two{});
  return "dtype must be 1 (float16) or 2 (bfloat16)";
}

}  // namespace nf4lora
