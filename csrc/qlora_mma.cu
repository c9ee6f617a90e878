// nf4lora::qlora_linear forward for M > 16 rows of x on tensor cores: the prefill / training
// regime. Main kernels per GPU generation, and the u kernel they share:
//
//   y (M, N) = x·Wᵀ + s·u·Bᵀ + bias,  u (M, r) = x̃·Aᵀ (float32, also returned for dB)
//
// Launched back to back by one host call (plus one memset of the u kernel's split-K counters when
// it splits K and the caller gives no counters that are already zero: the u kernel leaves them at
// zero, so the Python wrapper keeps one zeroed buffer per stream and no memset runs). The u kernel
// runs only when the caller has not computed u itself (launch_qlora_mma's u_given: the Python
// wrapper computes u by cuBLAS above 128 rows where torch has a float32-output mm, 1.4-8x less GPU
// time on the H200, bench/results/h200/s17/; at most 128 rows host time decides, s20):
//   lora_u_part_kernel  u over S split-K slices: a block owns 128 rows of x̃ and up to 64 ranks
//                       over one K slice (mma, fp32 accumulation; A staged once per chunk in shared
//                       memory). On sm_90 the slices of a (rows, ranks) group run in clusters of
//                       up to 8 blocks whose sums meet in distributed shared memory, each block
//                       adding 1/8 of the group's outputs; with more than one cluster per group
//                       the clusters' sums go to a workspace and the last cluster to finish adds
//                       them (per stripe of 16 rows, in parallel). Elsewhere every block writes
//                       its partial sums and the last block of the group adds the S partials.
//                       Fixed orders (deterministic, no float atomics). S is chosen so that the
//                       grid fills the GPU in one wave.
//   qlora_wgmma_kernel  sm_90: two warpgroups, 128 W rows × 128 or 256 x rows per block, wgmma
//                       with x as a shared-memory operand and W decoded either into shared memory
//                       too (SS, the default) or into the register operand (RS); with few output
//                       tiles, K is split across the blocks of a thread-block cluster and rank 0
//                       sums the fp32 partial tiles in slice order through distributed shared
//                       memory (no workspace); the split tiles run the SS form. Its section below
//                       has the details.
//   qlora_wgmma_ws_kernel  sm_90, the default wherever K is not split: the SS tile warp-specialized
//                       (a producer warpgroup copies x by TMA and decodes W; two consumer
//                       warpgroups only run the wgmma), 0.78-0.82× the SS kernel's time. Where
//                       r % 8 == 0 (lora_fold_chunks) and the caller asks for it, the LoRA term
//                       runs as extra reduction chunks after W's, [x | u]·[W | s·B]ᵀ: u's
//                       columns (float32, as computed) and B's ranks copied by TMA, multiplied as
//                       tf32 with B's side converted in registers (lora_tf32_mmas): no launch
//                       and no workspace of its own.
//   qlora_mma_kernel    other GPUs (sm_80+): mma.sync m16n8k16. A block owns a BN × BM tile of yᵀ
//                       (BN rows of W × BM rows of x) over all of K. Per 64-wide k chunk, x and
//                       the packed codes of W arrive in shared memory through a STAGES-deep
//                       cp.async pipeline; each warp decodes its rows of W from shared memory
//                       straight into mma A-operand registers (the decode of nf4_mma.cuh) and
//                       multiplies them with x fragments read from shared memory as the B operand.
// A decoded W exists only in registers or shared-memory tiles, never in global memory. Epilogue
// (store_tile, shared): the LoRA term (unless folded) as extra mma steps (B rows as A operand, s·u split into a T
// part and a T residual so the term keeps ~16 mantissa bits; with float16, |s·u| must stay below
// 65504, as in any float16 LoRA), + bias, staged through shared memory for 16-byte stores of y.
//
// mma.sync k order: inside each 64-wide chunk a thread owns 16 consecutive k of its rows (8 bytes of
// codes, 32 bytes of x); mma step s uses its 4-k quad s ^ (c & 1) (c = lane % 4) for both operands
// (a dot product does not care about the order). The quad swap for odd c makes the 8-byte
// shared-memory reads of x conflict-free; x rows are stored with their 16-byte pieces XOR-swizzled
// by row % 8 (which is also the 128-byte swizzle the wgmma descriptors expect).
//
// mma.sync scales: the absmax multiplies each chunk's fp32 partial sums (exact fp32, the blocksize
// must be a multiple of 64); the nested absmax is decoded in the kernel. Raw scale data is loaded
// one chunk ahead into registers.
//
// Tile order: blocks walk GROUP_M row blocks of x across all column blocks before the next group,
// so a wave shares its x rows and W columns in L2.
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>

#include "launchers.h"
#include "nf4.cuh"
#include "nf4_mma.cuh"
#include "tensor_map.h"
#include "wgmma.cuh"

namespace nf4lora {
namespace {

// Diagnostic builds only (bench/mma_diag.cu, never the extension): 1 = the decode replaced by the
// raw code words (wrong results: the time without the decode), 2 = the mma replaced by a cheap
// register fold (mma.sync) or dropped (wgmma) (wrong results: the time without the tensor cores),
// 3 = (wgmma) the decode table not scaled per row (wrong results: the cost of the scaling),
// 4 = (wgmma_ss) x loaded into the first pipeline stages only, later chunks reuse them (wrong
// results: the time without streaming x from L2, whose re-reads per column tile dominate the
// kernel's traffic), 5 = (wgmma_ws) the decode computed but only its XOR stored (one 16-byte store
// a thread and chunk: the decode's ALU work without the W tile's stores), 6 = (wgmma_ws) the raw code
// words stored as the W tile (the stores without the decode).
#ifndef NF4LORA_MMA_DIAG
#define NF4LORA_MMA_DIAG 0
#endif

constexpr int kChunkK = 64;  // k per pipeline stage and per scale step
constexpr int kGroupM = 8;   // row blocks of x per tile group (L2 reuse)

// WN × WM warps; a warp owns AT tiles of 16 W rows and BT tiles of 8 x rows.
template <int WN_, int WM_, int AT_, int BT_, int STAGES_>
struct TileConfig {
  static constexpr int WN = WN_, WM = WM_, AT = AT_, BT = BT_, STAGES = STAGES_;
  static constexpr int kThreads = WN * WM * 32;
  static constexpr int BN = WN * AT * 16;                // rows of W per block
  static constexpr int BM = WM * BT * 8;                 // rows of x per block
  static constexpr int kXBytes = BM * kChunkK * 2;       // x tile of one stage
  static constexpr int kCBytes = BN * kChunkK / 2;       // packed codes of one stage
  static constexpr int kOutStride = BN + 8;              // elements per staged output row
  static constexpr int kTableBytes = 256 * 4 + 8 * 4;    // nested code + decode table
  static constexpr int kPipeBytes = STAGES * (kXBytes + kCBytes);
  static constexpr int kOutBytes = BM * kOutStride * 2;
  static constexpr int kSmem = (kPipeBytes > kOutBytes ? kPipeBytes : kOutBytes) + kTableBytes;
  static_assert(BM * 8 % kThreads == 0 && BN % 8 == 0, "tile loads must divide evenly");
};
using LargeTile = TileConfig<4, 2, 2, 8, 4>;  // 128 W rows × 128 x rows, 8 warps

struct MmaParams {
  void* y;               // (M, N) T
  const void* x;         // (M, K) T, contiguous, 16-byte aligned
  const void* B;         // (N, r) T, contiguous
  const void* bias;      // (N,) T or nullptr
  const float* u;        // (M, r) float32 (written by lora_u_part_kernel)
  NF4State w;
  int M, N, K, r, tiles_m, tiles_n;
  int block_m;           // x rows per block (the wgmma kernel's BM)
  int k_splits;          // K slices per tile (wgmma kernel; 1 = none): blocks of one cluster
  float scale;
  int lora_vec;          // r % 8 == 0 and B, u 16-byte aligned: store_tile's staging in 16-byte loads
  // > 0: the warp-specialized kernel folds the LoRA term into its reduction as this many extra
  // chunks of 32 ranks (tf32 MMAs: u's columns and B's ranks by TMA, lora_fold_chunks) and
  // store_tile adds none; 0: store_tile adds it.
  int lora_chunks;
};

// The epilogue of both tensor-core kernels: y tile = acc + B·(s·u)ᵀ + bias, rounded once to T and
// staged through shared memory as [BM][BN + 8] for 16-byte stores. acc[i][j][e] is the mma C
// fragment of W rows wrow + 16i + g (+ 8 for e >= 2) and x rows xrow + 8j + 2c + (e & 1), relative
// to the block's first W row n0 and x row m0. smem must be free (pipeline drained, block synced).
// The LoRA term runs as extra mma steps into acc, 16 ranks a step: B rows as the A operand, s·u
// (fp32) split into a T part and a T residual as the B operand, so the term keeps ~16 mantissa
// bits. Each step first stages the tile's 16 ranks of B and of s·u (split) in shared memory with
// loads that are all in flight at once, then reads the fragments from there (conflict-free
// strides). (Loading u's fragments from global memory next to the mmas, as before the sixteenth
// session, left one L2 latency per 8 x rows exposed: ~15 µs per tile and 16 ranks on the H200,
// r = 64 costing 1.6× the forward of r = 16.) kFirst: the epilogue's first thread (when not 0, its
// kThreads threads sync on named barrier 1).
template <typename T, int AT, int BT, int BN, int BM, int kThreads, int kFirst = 0>
__device__ __forceinline__ void store_tile(const MmaParams& p, float (&acc)[AT][BT][4], unsigned char* smem, int n0,
                                           int m0, int wrow, int xrow) {
  const int tid = static_cast<int>(threadIdx.x) - kFirst, lane = tid % 32, g = lane / 4, c = lane % 4;
  const T* Bm = static_cast<const T*>(p.B);
  const int r = p.r, M = p.M, N = p.N;
  auto sync = [] {
    if constexpr (kFirst == 0) {
      __syncthreads();
    } else {
      named_sync(1, kThreads);
    }
  };
  // su[ml][0..7]: the T parts of s·u for x row m0 + ml, rank pairs q (ranks k0 + 2q, + 1); [8..15]
  // the residuals. bs[nl][q]: B row n0 + nl, rank pair q. Row strides 20 and 12 words: a fragment
  // load's 8 rows × 4 pairs hit 32 different banks.
  constexpr int kSu = 20, kBs = 12;
  static_assert((BM * kSu + BN * kBs) * 4 <= BM * (BN + 8) * 2, "the LoRA staging fits the output tile");
  uint32_t* const su = reinterpret_cast<uint32_t*>(smem);
  uint32_t* const bs = su + BM * kSu;
  static_assert(BM * 8 % kThreads == 0 && BN * 8 % kThreads == 0, "the staging divides evenly");
  static_assert(BM * 4 % kThreads == 0 && BN * 2 % kThreads == 0, "the 16-byte staging divides evenly");
  for (int k0 = 0; k0 < (p.lora_chunks > 0 ? 0 : r); k0 += 16) {
    if (p.lora_vec) {  // one 16-byte load per 4 ranks of u and 8 of B, all of a step's in flight at once
      float4 uq[BM * 4 / kThreads];
#pragma unroll
      for (int it = 0; it < BM * 4 / kThreads; ++it) {
        const int idx = tid + it * kThreads, m = m0 + idx / 4, k = k0 + 4 * (idx % 4);
        uq[it] = m < M && k < r ? __ldg(reinterpret_cast<const float4*>(p.u + static_cast<int64_t>(m) * r + k))
                                : make_float4(0.f, 0.f, 0.f, 0.f);
      }
      uint4 bq[BN * 2 / kThreads];
#pragma unroll
      for (int it = 0; it < BN * 2 / kThreads; ++it) {
        const int idx = tid + it * kThreads, n = n0 + idx / 2, k = k0 + 8 * (idx % 2);
        bq[it] = n < N && k < r ? __ldg(reinterpret_cast<const uint4*>(Bm + static_cast<int64_t>(n) * r + k))
                                : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int it = 0; it < BM * 4 / kThreads; ++it) {
        const int idx = tid + it * kThreads, ml = idx / 4, q = 2 * (idx % 4);
        const float v[4] = {p.scale * uq[it].x, p.scale * uq[it].y, p.scale * uq[it].z, p.scale * uq[it].w};
        float h[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) h[e] = to_float(static_cast<T>(v[e]));
        *reinterpret_cast<uint2*>(su + ml * kSu + q) = make_uint2(pack2<T>(h[0], h[1]), pack2<T>(h[2], h[3]));
        *reinterpret_cast<uint2*>(su + ml * kSu + 8 + q) =
            make_uint2(pack2<T>(v[0] - h[0], v[1] - h[1]), pack2<T>(v[2] - h[2], v[3] - h[3]));
      }
#pragma unroll
      for (int it = 0; it < BN * 2 / kThreads; ++it) {
        const int idx = tid + it * kThreads;
        *reinterpret_cast<uint4*>(bs + (idx / 2) * kBs + 4 * (idx % 2)) = bq[it];
      }
    } else {
#pragma unroll 4  // (4 rows' loads in flight: all 8 spill beside the 256-row tile's accumulators)
      for (int it = 0; it < BM * 8 / kThreads; ++it) {
        const int idx = tid + it * kThreads, ml = idx / 8, q = idx % 8, m = m0 + ml, k = k0 + 2 * q;
        const float* urow = p.u + static_cast<int64_t>(m) * r;
        const float a = m < M && k < r ? p.scale * __ldg(urow + k) : 0.f;
        const float b = m < M && k + 1 < r ? p.scale * __ldg(urow + k + 1) : 0.f;
        const float ha = to_float(static_cast<T>(a)), hb = to_float(static_cast<T>(b));
        su[ml * kSu + q] = pack2<T>(ha, hb);
        su[ml * kSu + 8 + q] = pack2<T>(a - ha, b - hb);
      }
#pragma unroll
      for (int it = 0; it < BN * 8 / kThreads; ++it) {
        const int idx = tid + it * kThreads, nl = idx / 8, q = idx % 8, n = n0 + nl, k = k0 + 2 * q;
        const T* brow = Bm + static_cast<int64_t>(n) * r;
        const float a = n < N && k < r ? to_float(brow[k]) : 0.f;
        const float b = n < N && k + 1 < r ? to_float(brow[k + 1]) : 0.f;
        bs[nl * kBs + q] = pack2<T>(a, b);
      }
    }
    sync();
    uint32_t la[AT][4];
#pragma unroll
    for (int i = 0; i < AT; ++i) {
      const uint32_t* b0 = bs + (wrow + i * 16 + g) * kBs + c;
      la[i][0] = b0[0];
      la[i][1] = b0[8 * kBs];
      la[i][2] = b0[4];
      la[i][3] = b0[8 * kBs + 4];
    }
#pragma unroll
    for (int j = 0; j < BT; ++j) {
      const uint32_t* u0 = su + (xrow + j * 8 + g) * kSu + c;
      const uint32_t bh0 = u0[0], bh1 = u0[4], bl0 = u0[8], bl1 = u0[12];
#pragma unroll
      for (int i = 0; i < AT; ++i) {
        mma16816<T>(acc[i][j], la[i], bh0, bh1);
        mma16816<T>(acc[i][j], la[i], bl0, bl1);
      }
    }
    sync();  // (the staging is free for the next step, or for the output tile)
  }

  store_out_tile<T, AT, BT, BN, BM, kThreads, kFirst>(static_cast<T*>(p.y), static_cast<const T*>(p.bias), M, N, acc,
                                                      smem, n0, m0, wrow, xrow);
}

// Grouped tile order: kGroupM row blocks of x × all column blocks of W, then the next group.
__device__ __forceinline__ void tile_of_block(const MmaParams& p, int tile, int& bm, int& bn) {
  const int per_group = kGroupM * p.tiles_n;
  const int first_m = tile / per_group * kGroupM;
  const int group_size = min(p.tiles_m - first_m, kGroupM);
  const int in_group = tile % per_group;
  bm = first_m + in_group % group_size;
  bn = in_group / group_size;
}

// One pipeline stage: x rows m0 .. m0 + BM (k chunk ch, rows past M as zeros) into xdst as 128-byte
// rows with 16-byte pieces XOR-swizzled by row % 8 (the 128-byte swizzle of wgmma descriptors),
// and the packed codes of W rows n0 .. n0 + BN (rows past N read row N - 1) into cdst, 32 bytes a row.
template <typename T, int BM, int kThreads>
__device__ __forceinline__ void load_x_stage(const MmaParams& p, unsigned char* xdst, int m0, int ch) {
  load_rows_sw128<T, BM, kThreads>(xdst, static_cast<const T*>(p.x), p.K, m0, p.M, static_cast<int64_t>(ch) * kChunkK);
}
template <typename T, int BM, int BN, int kThreads>
__device__ __forceinline__ void load_stage(const MmaParams& p, unsigned char* xdst, unsigned char* cdst, int m0, int n0,
                                           int ch) {
  load_x_stage<T, BM, kThreads>(p, xdst, m0, ch);
  const int tid = threadIdx.x;
#pragma unroll
  for (int i = 0; i < (BN * 2 + kThreads - 1) / kThreads; ++i) {
    const int idx = tid + i * kThreads;
    if (idx < BN * 2) {
      const int row = idx / 2, half = idx % 2;
      const int n = min(n0 + row, p.N - 1);
      cp_async16(cdst + row * 32 + half * 16,
                 p.w.packed + static_cast<int64_t>(n) * (p.K / 2) + ch * (kChunkK / 2) + half * 16, true);
    }
  }
}

template <int ROWS>
__device__ __forceinline__ void load_scales(const NF4State& w, const int64_t (&elem)[ROWS], int ch, RawScales<ROWS>& r) {
#pragma unroll
  for (int i = 0; i < ROWS; ++i) load_raw_scale(w, elem[i] + static_cast<int64_t>(ch) * kChunkK, r, i);
}

template <typename T, typename C>
__global__ void __launch_bounds__(C::kThreads, 1) qlora_mma_kernel(MmaParams p) {
  extern __shared__ __align__(128) unsigned char smem[];
  unsigned char* xs = smem;                                   // [STAGES][BM][128 bytes], swizzled
  unsigned char* cs = smem + C::STAGES * C::kXBytes;          // [STAGES][BN][32 bytes]
  float* code2 = reinterpret_cast<float*>(smem + C::kSmem - C::kTableBytes);  // [256]
  uint32_t* table = reinterpret_cast<uint32_t*>(code2 + 256);                 // [8]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int wn = warp % C::WN, wm = warp / C::WN;
  int bm, bn;
  tile_of_block(p, static_cast<int>(blockIdx.x), bm, bn);
  const int m0 = bm * C::BM, n0 = bn * C::BN;
  const int chunks = p.K / kChunkK;

  stage_code_tables<T>(p.w, table, code2, tid, C::kThreads);
  auto load = [&](int ch, int st) {
    load_stage<T, C::BM, C::BN, C::kThreads>(p, xs + st * C::kXBytes, cs + st * C::kCBytes, m0, n0, ch);
  };

  // This thread's W rows: tile i, rows g and g + 8 (index 2i + h); their scale data one chunk ahead.
  using Raw = RawScales<2 * C::AT>;
  int64_t elem[2 * C::AT];
#pragma unroll
  for (int i = 0; i < 2 * C::AT; ++i)
    elem[i] = static_cast<int64_t>(min(n0 + wn * C::AT * 16 + (i / 2) * 16 + g + 8 * (i % 2), p.N - 1)) * p.K;

#pragma unroll
  for (int s = 0; s < C::STAGES - 1; ++s) {
    if (s < chunks) load(s, s);
    cp_async_commit();
  }
  Raw cur;
  load_scales(p.w, elem, 0, cur);
  __syncthreads();  // tables staged
  const Table t = load_table(table);

  // Per-thread shared-memory offsets: codes of row g (tile 0), x row g of tile 0 per quad pair.
  const uint32_t quad_swap = (c & 1) ? 0x1032u : 0x3210u;  // swaps the two 4-k quads of a word
  const int code_off = (wn * C::AT * 16 + g) * 32 + 8 * c;
  const int xrow_off = (wm * C::BT * 8 + g) * 128;
  const int xq_off[2] = {((2 * c) ^ g) << 4, ((2 * c + 1) ^ g) << 4};
  const int xhalf[2] = {(c & 1) << 3, ((c & 1) ^ 1) << 3};

  float acc[C::AT][C::BT][4];
#pragma unroll
  for (int i = 0; i < C::AT; ++i)
#pragma unroll
    for (int j = 0; j < C::BT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;
  float part[C::AT][C::BT][4];

  for (int ch = 0; ch < chunks; ++ch) {
    cp_async_wait<C::STAGES - 2>();
    __syncthreads();  // chunk ch landed for every thread; stage (ch - 1) % STAGES is free
    {
      const int next = ch + C::STAGES - 1;
      if (next < chunks) load(next, next % C::STAGES);
      cp_async_commit();
    }
    Raw nxt;
    if (ch + 1 < chunks) load_scales(p.w, elem, ch + 1, nxt);
    const unsigned char* xt = xs + (ch % C::STAGES) * C::kXBytes + xrow_off;
    const unsigned char* ct = cs + (ch % C::STAGES) * C::kCBytes + code_off;

    uint32_t a[C::AT][2][8];  // [tile][row g / g + 8][k pair]: the chunk's 16 k of each row
#pragma unroll
    for (int i = 0; i < C::AT; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint2 w = *reinterpret_cast<const uint2*>(ct + (i * 16 + 8 * h) * 32);
#if NF4LORA_MMA_DIAG == 1
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          a[i][h][e] = prmt(w.x, w.x, quad_swap) + e;
          a[i][h][4 + e] = prmt(w.y, w.y, quad_swap) + e;
        }
#else
        decode4(prmt(w.x, w.x, quad_swap), t, &a[i][h][0]);
        decode4(prmt(w.y, w.y, quad_swap), t, &a[i][h][4]);
#endif
      }
#pragma unroll
    for (int i = 0; i < C::AT; ++i)
#pragma unroll
      for (int j = 0; j < C::BT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) part[i][j][e] = 0.f;
#pragma unroll
    for (int s = 0; s < 4; ++s) {
#pragma unroll
      for (int j = 0; j < C::BT; ++j) {
        const uint2 b = *reinterpret_cast<const uint2*>(xt + j * 8 * 128 + xq_off[s / 2] + xhalf[s % 2]);
#pragma unroll
        for (int i = 0; i < C::AT; ++i) {
          const uint32_t af[4] = {a[i][0][2 * s], a[i][1][2 * s], a[i][0][2 * s + 1], a[i][1][2 * s + 1]};
#if NF4LORA_MMA_DIAG == 2
          part[i][j][s] += __uint_as_float((af[0] ^ af[1] ^ af[2] ^ af[3] ^ b.x ^ b.y) & 0x3F800000u);
#else
          mma16816<T>(part[i][j], af, b.x, b.y);
#endif
        }
      }
    }
#pragma unroll
    for (int i = 0; i < C::AT; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float am = scale_of(p.w, code2, cur, 2 * i + h);
#pragma unroll
        for (int j = 0; j < C::BT; ++j) {
          acc[i][j][2 * h] = fmaf(part[i][j][2 * h], am, acc[i][j][2 * h]);
          acc[i][j][2 * h + 1] = fmaf(part[i][j][2 * h + 1], am, acc[i][j][2 * h + 1]);
        }
      }
    if (ch + 1 < chunks) cur = nxt;
  }
  cp_async_wait<0>();
  __syncthreads();  // the pipeline buffers become the output tile

  store_tile<T, C::AT, C::BT, C::BN, C::BM, C::kThreads>(p, acc, smem, n0, m0, wn * C::AT * 16, wm * C::BT * 8);
}

// ---------------------------------------------------------------------------------------------
// sm_90a: the same tile computed with wgmma (two consumer warpgroups). The register form (RS) first:
//
// A block owns 128 W rows × 128 x rows; warpgroup wg runs wgmma.m64n128k16 on W rows 64·wg ... + 63
// with A = W decoded into registers (per warp the m16n8k16 A layout: rows g, g + 8 of its 16 and
// k 2c, 2c + 1, 2c + 8, 2c + 9 of each 16-k step) and B = the x tile read by the tensor cores from
// shared memory through a descriptor (K-major, 128-byte swizzle: the layout load_stage writes).
// Natural k order (the descriptor fixes it): a thread reads its rows' 32 code bytes of the chunk and
// picks byte c of every 4 with byte permutes. The absmax is folded into the decode table: per row
// and chunk the 16 code values times the absmax, rounded once to T (bit-identical to dequantizing W
// to T first), so the accumulators need no per-chunk rescaling. Decode of chunk k + 1 runs while
// the tensor cores work on chunk k (double-buffered A registers; the MMAs of chunk k stay in flight
// until those of k + 1 are issued: wgmma.wait_group 1).
// kSS (variant 3, wgmma_ss; the default on sm_90 where K is split, elsewhere wgmma_ws below; 4-12%
// faster than RS at M >= 1024 on the H200, equal at M = 128, bench/NOTES.md sixth session): W
// decoded by all threads into shared memory instead
// (K-major, swizzled like the x tile) and read by the tensor cores through a descriptor too (SS
// wgmma), three W buffers, codes and scales fetched global -> registers a chunk ahead — the dx
// kernel's structure (qlora_dx.cu). No register A fragments: no byte-permute gather into the
// fragment layout, and 256-row tiles without spills. The register form stays as variant 2.
// Split-K (kSplitK, 128-row tiles only): the k_splits blocks of a tile form one cluster; see
// cluster_sum_to_rank0 (wgmma.cuh).
#ifndef NF4LORA_WG_STAGES
#define NF4LORA_WG_STAGES 4
#endif
template <int BM_, bool kSS_ = false> struct WgTile {  // BM_ = 128 or 256 x rows (the wgmma N)
  static constexpr int kThreads = 256, BN = 128, BM = BM_, STAGES = NF4LORA_WG_STAGES;
  static constexpr int kXBytes = BM * 128, kCBytes = BN * 32;
  static constexpr int kWBytes = BN * 128;  // SS: one decoded W tile (BN rows × 64 k), three of them
  static constexpr int kPipeBytes = kSS_ ? STAGES * kXBytes + 3 * kWBytes : STAGES * (kXBytes + kCBytes);
  static constexpr int kOutBytes = BM * (BN + 8) * 2;
  static constexpr int kTableBytes = code_tables_bytes();  // nested code, code values
  static constexpr int kBody = (kPipeBytes > kOutBytes ? kPipeBytes : kOutBytes) + kTableBytes;
  static constexpr int kSmem = kBody + 1024;  // + alignment of the x tiles to 1024 bytes
};

template <typename T, int BM, bool kSplitK, bool kSS>
__global__ void __launch_bounds__(256, 1) qlora_wgmma_kernel(MmaParams p) {
#if NF4LORA_HAS_WGMMA
  using C = WgTile<BM, kSS>;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = align_smem<1024>(smem_raw);
  unsigned char* xs = smem;                                    // [STAGES][BM][128 bytes], swizzled
  unsigned char* cs = smem + C::STAGES * C::kXBytes;           // [STAGES][BN][32 bytes]
  float* code2 = reinterpret_cast<float*>(smem + C::kBody - C::kTableBytes);  // [256]
  float* codes = code2 + 256;                                                 // [16]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int wrow = warp * 16;  // this warp's 16 W rows (warpgroup warp / 4 owns 64)
  // Block = (tile, K slice) with kSplitK: the k_splits slices of a tile are consecutive blocks,
  // one cluster (the slice is the block's rank in it).
  const int tile = kSplitK ? static_cast<int>(blockIdx.x) / p.k_splits : static_cast<int>(blockIdx.x);
  const int split = kSplitK ? static_cast<int>(blockIdx.x) % p.k_splits : 0;
  int bm, bn;
  tile_of_block(p, tile, bm, bn);
  const int m0 = bm * C::BM, n0 = bn * C::BN;
  const int all_chunks = p.K / kChunkK;
  const int k_first = kSplitK ? static_cast<int>(static_cast<int64_t>(split) * all_chunks / p.k_splits) : 0;
  const int chunks =
      kSplitK ? static_cast<int>(static_cast<int64_t>(split + 1) * all_chunks / p.k_splits) - k_first : all_chunks;

  stage_float_code_tables<C::kThreads>(code2, p.w);
  float acc[BM / 2];
#pragma unroll
  for (int i = 0; i < BM / 2; ++i) acc[i] = 0.f;
  if constexpr (kSS) {
    // SS: all 256 threads decode the chunk's BN × 64 W tile into shared memory (K-major, 128-byte
    // rows swizzled like the x tile: wgmma's A operand by descriptor); thread t owns W row t / 2,
    // k 32·(t % 2) .. + 31 (one absmax block), its 16 code bytes and raw scale fetched global ->
    // registers one chunk ahead. Three W buffers: the MMAs of chunk i stay in flight across the
    // barrier while chunk i + 1 is decoded (as the dx kernel, qlora_dx.cu).
    unsigned char* wsb = smem + C::STAGES * C::kXBytes;  // [3][BN][128 bytes], swizzled
    const int dr = tid / 2, dh = tid % 2;
    const int64_t row_elem = static_cast<int64_t>(min(n0 + dr, p.N - 1)) * p.K + 32 * dh;
    using Raw1 = RawScales<1>;
    auto load_x = [&](int i) {
#if NF4LORA_MMA_DIAG == 4
      if (i >= C::STAGES - 1) return;  // diagnostic: x loaded for the first stages only (L2 traffic)
#endif
      load_x_stage<T, C::BM, C::kThreads>(p, xs + (i % C::STAGES) * C::kXBytes, m0, k_first + i);
    };
    auto load_codes = [&](int i, uint4& cw, Raw1& r) {
      const int64_t e = row_elem + static_cast<int64_t>(k_first + i) * kChunkK;
      cw = __ldg(reinterpret_cast<const uint4*>(p.w.packed + e / 2));
      load_raw_scale(p.w, e, r, 0);
    };
    auto decode = [&](int i, const uint4& cw, const Raw1& raw) {
#if NF4LORA_MMA_DIAG == 1
      return;  // diagnostic: no decode (the MMAs read stale shared memory)
#endif
#if NF4LORA_MMA_DIAG == 3
      const Table t = scaled_table<T>(codes, 1.f);
#else
      const Table t = scaled_table<T>(codes, scale_of(p.w, code2, raw, 0));
#endif
      decode32_to_row<T>(cw, t, wsb + (i % 3) * C::kWBytes + dr * 128, dr, dh * 4);
    };
    uint4 cw;
    Raw1 raw;
    ss_prologue<C::STAGES>(chunks, load_x, load_codes, decode, cw, raw);
    const uint64_t xdesc0 = sw128_desc(smem_addr(xs));
    const uint32_t w_addr = smem_addr(wsb) + (warp / 4) * 64 * 128;
    for (int i = 0; i < chunks; ++i) {
      pin(acc);
      wgmma_fence();
      const uint64_t xdesc = xdesc0 + static_cast<uint64_t>((i % C::STAGES) * C::kXBytes >> 4);
#if NF4LORA_MMA_DIAG != 2
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        const uint64_t wdesc = sw128_desc_lbo_sbo(w_addr + (i % 3) * C::kWBytes + 32 * s, 16, 1024);
        wgmma_ss_m64k16<T, BM, false>(acc, wdesc, xdesc + 2 * s, i > 0 || s > 0);
      }
#endif
      wgmma_commit();
      ss_finish_chunk<C::STAGES>(i, chunks, load_x, load_codes, decode, [&] { pin(acc); }, cw, raw);
    }
    wgmma_wait<0>();
    pin(acc);
  } else {
    // Chunk indices below are relative to the slice (k_first).
    auto load = [&](int ch) {
      const int st = ch % C::STAGES;
      load_stage<T, C::BM, C::BN, C::kThreads>(p, xs + st * C::kXBytes, cs + st * C::kCBytes, m0, n0, k_first + ch);
    };
    using Raw = RawScales<2>;  // rows g, g + 8
    int64_t elem[2];
#pragma unroll
    for (int h = 0; h < 2; ++h)
      elem[h] = static_cast<int64_t>(min(n0 + wrow + g + 8 * h, p.N - 1)) * p.K + static_cast<int64_t>(k_first) * kChunkK;

#pragma unroll
    for (int s = 0; s < C::STAGES - 1; ++s) {
      if (s < chunks) load(s);
      cp_async_commit();
    }
    Raw raw0, raw1;  // scale data of chunks 2i and 2i + 1
    load_scales(p.w, elem, 0, raw0);
    if (chunks > 1) load_scales(p.w, elem, 1, raw1);
    cp_async_wait<C::STAGES - 2>();  // chunk 0 landed
    fence_proxy_async();
    __syncthreads();
    const uint32_t pick = static_cast<uint32_t>(c) | static_cast<uint32_t>(c + 4) << 4;  // byte c of two words
    const uint64_t desc0 = sw128_desc(smem_addr(xs));

    // A fragments of chunk ch: a[s] = {row g k-lo, row g+8 k-lo, row g k-hi, row g+8 k-hi} of step s.
    auto decode = [&](int ch, const Raw& raw, uint32_t (&a)[4][4]) {
      const unsigned char* ct = cs + (ch % C::STAGES) * C::kCBytes + (wrow + g) * 32;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint4 lo = *reinterpret_cast<const uint4*>(ct + h * 8 * 32);
        const uint4 hi = *reinterpret_cast<const uint4*>(ct + h * 8 * 32 + 16);
        // Byte c of words 0..3 (then 4..7): k 2c.. and 2c + 8.. of steps 0, 1 (then 2, 3).
        const uint32_t g0 = prmt(prmt(lo.x, lo.y, pick), prmt(lo.z, lo.w, pick), 0x5410u);
        const uint32_t g1 = prmt(prmt(hi.x, hi.y, pick), prmt(hi.z, hi.w, pick), 0x5410u);
        uint32_t d[8];
#if NF4LORA_MMA_DIAG == 1
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          d[e] = g0 + e;
          d[4 + e] = g1 + e;
        }
#else
#if NF4LORA_MMA_DIAG == 3
        const Table t = scaled_table<T>(codes, 1.f);
#else
        const Table t = scaled_table<T>(codes, scale_of(p.w, code2, raw, h));
#endif
        decode4(g0, t, d);
        decode4(g1, t, d + 4);
#endif
#pragma unroll
        for (int s = 0; s < 4; ++s) {
          a[s][h] = d[2 * s];
          a[s][2 + h] = d[2 * s + 1];
        }
      }
    };

    uint32_t a0[4][4], a1[4][4];
    decode(0, raw0, a0);
    if (chunks > 2) load_scales(p.w, elem, 2, raw0);

    // One chunk: issue the MMAs of ch on acur, wait for those of ch - 1 only (the MMAs of ch stay
    // in flight, so the tensor cores never drain at a chunk boundary), then, while they run, the
    // next stage streams into ch - 1's x stage and ch + 1 is decoded into anext (ch - 1's registers).
    auto step = [&](int ch, uint32_t (&acur)[4][4], uint32_t (&anext)[4][4], Raw& raw_next) {
      wgmma_fence();
      const uint64_t desc = desc0 + static_cast<uint64_t>((ch % C::STAGES) * C::kXBytes >> 4);
#if NF4LORA_MMA_DIAG != 2
#pragma unroll
      for (int s = 0; s < 4; ++s) wgmma_m64k16<T, BM>(acc, acur[s], desc + 2 * s, ch > 0 || s > 0);
#endif
      wgmma_commit();
      wgmma_wait<1>();  // this warpgroup's MMAs of ch - 1 are done: anext is free
      pin(anext);       // (kept live until here: an in-flight wgmma read them)
      pin(acc);
      cp_async_wait<C::STAGES - 3>();  // chunk ch + 1 landed (this thread's copies)
      fence_proxy_async();
      __syncthreads();  // ... everyone's; and every warpgroup finished chunk ch - 1: its stage is free
      if (ch + C::STAGES - 1 < chunks) load(ch + C::STAGES - 1);
      cp_async_commit();
      if (ch + 1 < chunks) {
        decode(ch + 1, raw_next, anext);
        if (ch + 3 < chunks) load_scales(p.w, elem, ch + 3, raw_next);
      }
    };
    for (int ch = 0; ch < chunks; ch += 2) {
      step(ch, a0, a1, raw1);
      if (ch + 1 < chunks) step(ch + 1, a1, a0, raw0);
    }
    wgmma_wait<0>();
    pin(a0);
    pin(a1);
    pin(acc);
  }
  cp_async_wait<0>();
  if constexpr (kSplitK) {
    // The k_splits blocks of this tile are one cluster: rank 0 sums the slices' tiles in slice
    // order (deterministic) through distributed shared memory and runs the epilogue.
    static_assert(BM / 2 * C::kThreads * 4 <= C::kBody - C::kTableBytes, "partial tile fits the pipeline buffers");
    __syncthreads();  // both warpgroups' MMAs done: the pipeline buffers are free
    if (!cluster_sum_to_rank0<C::kThreads>(acc, smem)) return;
  }
  __syncthreads();  // the pipeline buffers become the output tile
  store_tile<T, 1, BM / 8, C::BN, C::BM, C::kThreads>(p, reinterpret_cast<float(&)[1][BM / 8][4]>(acc), smem, n0,
                                                       m0, wrow, 0);
#else
  __trap();  // launched only on sm_90 (launch_qlora_mma checks the device)
#endif
}

// Variant 4 (wgmma_ws; sm_90a): the SS kernel warp-specialized. Nsight Compute on variant 3
// (bench/results/h200/cuda_ws/) found its two warpgroups latency-bound on their own instruction
// stream: per 64-k chunk each warp issued ~370 instructions (x-tile cp.async address arithmetic,
// decode, descriptors, barriers) at one per ~6.5 cycles with two warps per scheduler: ~2400 cycles
// a chunk against ~1024 of MMAs. Here a third warpgroup produces and two only consume:
// - producer (warpgroup 0): thread 0 copies the chunk's x tile with one TMA (the
//   128-byte-swizzled layout of the descriptors, rows past M zero-filled); thread t decodes W row t
//   of the tile (64 k: one absmax, one scaled table) into the stage's W buffer; all 128 arrive on
//   full[s] (thread 0 once more, first, with the TMA's byte count).
// - consumers (warpgroups 1, 2): warpgroup 1 + h owns W rows 64·h .. + 63 against
//   all BM x rows: wait full[s], four wgmma, then release the previous chunk's stage (empty[s])
//   once its MMAs are done; the epilogue (store_tile) runs on the consumers alone.
// kWsStages stages of (x tile, W tile); no split-K (the auto plan picks this kernel wherever it
// plans no K split; the split tiles run the SS kernel).
#ifndef NF4LORA_WS_STAGES
#define NF4LORA_WS_STAGES 4
#endif
constexpr int kWsStages = NF4LORA_WS_STAGES;
// One producer warpgroup: with a second, ptxas would compile every thread under the launch bound's
// 128 registers (setmaxnreg.inc does not raise its cap), too few for the consumers' 128
// accumulators. With one, all threads fit in 168 and no register reallocation is needed.
// kPair (variant 5, wgmma_ws_pair): the blocks of x row tiles 2t and 2t + 1 with the same W rows form
// a cluster of two and share the decode: each producer decodes 64 of the tile's 128 W rows (thread
// t: row 64·rank + t / 2, k half t % 2) into its own stage and copies them (bulk copy, async proxy)
// into the partner's, which expects those bytes on its full barrier; a stage is refilled only when
// the consumers of both blocks have released it (each consumer warp arrives on both empty barriers).
template <int BM_, bool kPair_> struct WsTile {
  static constexpr bool kPair = kPair_;
  static constexpr int kProducers = 128, kThreads = kProducers + 256;
  static constexpr int kWords = kPair ? 1 : 2;  // 16-byte code words a producer decodes per chunk
  static constexpr int BN = 128, BM = BM_, STAGES = kWsStages;
  static constexpr int kXBytes = BM * 128, kWBytes = BN * 128, kStageBytes = kXBytes + kWBytes;
  static constexpr int kShareBytes = kPair ? kWBytes / 2 : 0;  // W bytes the partner copies in
  // + the producer's code ring (ws_produce)
  static constexpr int kPipeBytes = STAGES * kStageBytes + ws_ring_bytes<STAGES, kWords>();
  static constexpr int kOutBytes = BM * (BN + 8) * 2;
  static constexpr int kBody = (kPipeBytes > kOutBytes ? kPipeBytes : kOutBytes) + code_tables_bytes() +
                               ws_barrier_bytes<STAGES>();
  static constexpr int kSmem = kBody + 1024;  // + alignment of the stages to 1024 bytes
  static constexpr int kEmptyArrivals = (kPair ? 2 : 1) * 8;  // consumer warps of the block(s)
};

// The folded LoRA term of the warp-specialized forward (lora_fold_chunks): extra chunk e multiplies
// u's columns 32e .. 32e + 31 (float32 in the stage's x buffer: the 128-byte swizzled K-major layout
// of the x tile, one 128-byte line a row, zeros past r and M) by s·B's ranks 32e .. (the stage's W
// buffer: [BN][32] T, rows of 64 bytes, no swizzle, zeros past r and N) as tf32 MMAs of 8 ranks, B's
// side converted in registers (RS). u enters with tf32's precision (the tensor cores read 10 of its
// 23 mantissa bits: relative error < 2^-10, half that of u rounded to bf16 as plain torch bf16 math
// has it); s·B is rounded to the nearest tf32 (relative error <= 2^-11; exact when s is a power of
// two). The epilogue's split of s·u keeps ~16 bits instead (fold_lora = 0).
template <typename C> constexpr int kLoraBBytes = C::BN * kLoraRanks * 2;

// The folded LoRA chunk's A operand in the forward: B's ranks of the tile's W rows, staged by TMA as
// [BN rows][kLoraRanks] T; element (row + 8·h8, rank k) for lora_tf32_mmas.
template <typename T> __device__ __forceinline__ auto b_rows(const unsigned char* stage_b, int row) {
  const T* bt = reinterpret_cast<const T*>(stage_b);
  return [bt, row](int h8, int k) { return to_float(bt[(row + 8 * h8) * kLoraRanks + k]); };
}

template <typename T, int BM, bool kPair>
__global__ void __launch_bounds__(WsTile<BM, kPair>::kThreads, 1)
    qlora_wgmma_ws_kernel(const MmaParams p, const __grid_constant__ CUtensorMap xmap,
                          const __grid_constant__ CUtensorMap umap, const __grid_constant__ CUtensorMap bmap) {
#if NF4LORA_HAS_WGMMA
  using C = WsTile<BM, kPair>;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = align_smem<1024>(smem_raw);
  const int tid = threadIdx.x, wg = tid / 128, lane = tid % 32;
  const uint32_t rank = kPair ? cluster_rank_and_blocks().x : 0, partner = rank ^ 1;
  int bm, bn;
  tile_of_block(p, static_cast<int>(blockIdx.x) / (kPair ? 2 : 1), bm, bn);
  const int m0 = (kPair ? 2 * bm + static_cast<int>(rank) : bm) * C::BM, n0 = bn * C::BN;
  const int chunks = p.K / kChunkK;
  // Stage s: the x tile at s·kStageBytes (1024-aligned), its W tile right after.
  const WsShared sh = ws_setup<C::STAGES, C::kThreads>(smem + C::kBody, p.w, C::kEmptyArrivals);
  const float *code2 = sh.code2, *codes = sh.codes;
  uint64_t *full = sh.full, *empty = sh.empty;
  if constexpr (kPair) cluster_sync();  // the partner's barriers are initialized before any remote use

  if (wg == 0) {
    // Thread tid decodes W row dr of the tile, 16-byte code words dp .. dp + kWords - 1 of the row's
    // chunk (k 32·dp ...; one absmax block, one scaled table), through ws_produce's ring.
    const int dr = kPair ? 64 * static_cast<int>(rank) + tid / 2 : tid, dp = kPair ? tid % 2 : 0;
    const int64_t row_elem = static_cast<int64_t>(min(n0 + dr, p.N - 1)) * p.K + 32 * dp;
    // Nested: the code byte comes as its aligned 4-byte word, except in the last rows of W, whose
    // last word may run past the last code byte (fetch_q_async).
    const bool q_tail = nested_q_tail(p.w, min(n0 + dr, p.N - 1), p.K);
    ws_produce<C::STAGES, C::kWords, kPair>(
        p.w, smem + C::STAGES * C::kStageBytes, chunks, tid, full, empty,
        [&](int i) { return row_elem + static_cast<int64_t>(i) * kChunkK; }, [&](int64_t) { return q_tail; },
        [&](int i, int s) {
          if (tid != 0) return;
#if NF4LORA_MMA_DIAG == 4
          if (i >= C::STAGES) {  // diagnostic: x copied for the first stages only (no L2 traffic after)
            mbar_arrive_expect_tx(&full[s], C::kShareBytes);
            return;
          }
#endif
          mbar_arrive_expect_tx(&full[s], C::kXBytes + C::kShareBytes);
          tma_load_2d(smem + s * C::kStageBytes, &xmap, &full[s], i * kChunkK, m0);
        },
        [&](int s, const uint4(&cw)[C::kWords], const RawScales<1>& raw) {
#if NF4LORA_MMA_DIAG == 5
          const Table t = scaled_table<T>(codes, scale_of(p.w, code2, raw, 0));
          uint4 sink = make_uint4(0, 0, 0, 0);
#pragma unroll
          for (int w = 0; w < C::kWords; ++w) {
            const uint32_t c4[4] = {cw[w].x, cw[w].y, cw[w].z, cw[w].w};
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              uint32_t d[4];
              decode4(c4[j], t, d);
              sink.x ^= d[0]; sink.y ^= d[1]; sink.z ^= d[2]; sink.w ^= d[3];
            }
          }
          *reinterpret_cast<uint4*>(smem + s * C::kStageBytes + C::kXBytes + dr * 128) = sink;
#elif NF4LORA_MMA_DIAG == 6
#pragma unroll
          for (int w = 0; w < C::kWords; ++w)
#pragma unroll
            for (int j = 0; j < 4; ++j)
              *reinterpret_cast<uint4*>(smem + s * C::kStageBytes + C::kXBytes + dr * 128 +
                                        (((4 * (dp + w) + j) ^ (dr & 7)) << 4)) = cw[w];
#elif NF4LORA_MMA_DIAG != 1
#if NF4LORA_MMA_DIAG == 3
          const Table t = scaled_table<T>(codes, 1.f);
#else
          const Table t = scaled_table<T>(codes, scale_of(p.w, code2, raw, 0));
#endif
#pragma unroll
          for (int w = 0; w < C::kWords; ++w)
            decode32_to_row<T>(cw[w], t, smem + s * C::kStageBytes + C::kXBytes + dr * 128, dr, 4 * (dp + w));
#endif
        },
        [&](int s) {
          if constexpr (kPair) {
            // This warp's 16 decoded rows (2 KB, contiguous) into the partner's stage, once every
            // lane's writes are fenced; the bytes complete on the partner's full barrier.
            __syncwarp();
            if (lane == 0) {
              unsigned char* rows = smem + s * C::kStageBytes + C::kXBytes + (64 * rank + 16 * (tid / 32)) * 128;
              bulk_copy_to_cluster(cluster_map(smem_addr(rows), partner), rows, 16 * 128,
                                   cluster_map(smem_addr(&full[s]), partner));
            }
          }
        },
        p.lora_chunks,
        [&](int e, int s) {  // the folded LoRA term's chunk e: u's columns 32e.. (fp32) and B's ranks, by TMA
          if (tid != 0) return;
          unsigned char* st = smem + s * C::kStageBytes;
          mbar_arrive_expect_tx(&full[s], C::kXBytes + kLoraBBytes<C>);  // (all 128 W rows here, even in pairs)
          tma_load_2d(st, &umap, &full[s], kLoraRanks * e, m0);
          // (the tile's first W row recomputed: n0 kept live through the main loop cost the 256-row
          // kernel a spill)
          int tm, tn;
          tile_of_block(p, static_cast<int>(blockIdx.x) / (kPair ? 2 : 1), tm, tn);
          tma_load_2d(st + C::kXBytes, &bmap, &full[s], kLoraRanks * e, tn * C::BN);
        });
  } else {
    const int h = wg - 1;  // this warpgroup's 64 W rows of the tile
    float acc[BM / 2];
#pragma unroll
    for (int i = 0; i < BM / 2; ++i) acc[i] = 0.f;
    const uint64_t xdesc0 = sw128_desc(smem_addr(smem));
    const uint64_t wdesc0 = sw128_desc_lbo_sbo(smem_addr(smem + C::kXBytes) + h * 64 * 128, 16, 1024);
    ws_consume<C::STAGES>(
        chunks, p.lora_chunks, full, [&] { pin(acc); },
        [&](int i, int s) {
#if NF4LORA_MMA_DIAG != 2
          const uint64_t off = static_cast<uint64_t>(s * C::kStageBytes >> 4);
#pragma unroll
          for (int k = 0; k < 4; ++k)
            wgmma_ss_m64k16<T, BM, false>(acc, wdesc0 + off + 2 * k, xdesc0 + off + 2 * k, i > 0 || k > 0);
#endif
        },
        [&](int, int s) {  // the folded LoRA term: (s·B's ranks, tf32 from registers) · (u's columns in the x buffer)
          lora_tf32_mmas<BM>(acc, b_rows<T>(smem + s * C::kStageBytes + C::kXBytes, h * 64 + (tid / 32 % 4) * 16 + lane / 4),
                             lane % 4, p.scale, xdesc0 + static_cast<uint64_t>(s * C::kStageBytes >> 4));
        },
        [&](int sp) {
          mbar_arrive(&empty[sp]);
          if constexpr (kPair) mbar_arrive_remote(cluster_map(smem_addr(&empty[sp]), partner));
        });
    store_tile<T, 1, BM / 8, C::BN, C::BM, 256, C::kProducers>(p, reinterpret_cast<float(&)[1][BM / 8][4]>(acc), smem,
                                                               n0, m0, h * 64 + (tid / 32 % 4) * 16, 0);
  }
  // Neither block may exit while its partner can still copy into it or arrive on its barriers.
  if constexpr (kPair) cluster_sync();
#else
  __trap();  // launched only on sm_90 (launch_qlora_mma checks the device)
#endif
}

// Variant 6 (wgmma_rs; sm_90a; auto on sm_90 wherever no K split): the warp-specialized kernel with the decode in
// the consumers' registers — W never in shared memory. Producers (warpgroup 0, 40 registers by setmaxnreg): thread
// 0 copies per chunk the x tile (as wgmma_ws) and the tile's code bytes (128 rows × 32 bytes, rows past N zero) by
// TMA; thread t builds W row t's scaled table of the chunk (code·absmax rounded once: the shipped bits; its raw
// scale through ws_produce's cp.async ring) into the stage. Consumers (warpgroups 1, 2; 232 registers):
// warpgroup 1 + h owns W rows 64h .. + 63 as the A operand of RS wgmmas; thread (warp w, lane 4g + c) decodes
// rows 16w + g and + 8 of the chunk — byte c of each 4-byte code word: k 2c, 2c + 1, 2c + 8, 2c + 9 of each k16
// step — with decode4 through the two rows' tables, chunk i + 1 while chunk i's wgmmas run. The folded LoRA term,
// the epilogue and the tile order are wgmma_ws's (the accumulators have the same layout: the same bits).
// Measured (s26 runs 3-5, bench/rs_ab.py): 0.85-0.92x wgmma_ws's time on 6 shapes at M 1024-8192 (the consumers
// building the tables themselves, 267 instructions per warp-chunk, were latency-bound at 1.0x; issuing chunk
// i + 1's MMAs before waiting for chunk i's: 0.86-0.92x; the producers also laying the codes out per consumer
// thread: 1.09-1.16x, the producers then the bound).
template <int BM_> struct RsTile {
  static constexpr int kProducers = 128, kThreads = kProducers + 256;
  static constexpr int BN = 128, BM = BM_, STAGES = 5;
  // Per stage: the x tile (or u's 32 ranks, float32), then the codes (BN × 32 bytes) and the rows' scaled tables
  // (BN × 32 bytes: Table's 8 words); s·B's ranks there for a LoRA chunk
  static constexpr int kXBytes = BM * 128, kCBytes = kLoraBBytes<WsTile<BM, false>>, kStageBytes = kXBytes + kCBytes;
  static constexpr int kTableOffset = kXBytes + BN * 32;
  static_assert(kCBytes >= BN * 64 && kStageBytes % 1024 == 0, "a stage holds codes and tables; stages 1024-aligned");
  static constexpr int kPipeBytes = STAGES * kStageBytes + ws_ring_bytes<STAGES, 0>();
  static constexpr int kOutBytes = BM * (BN + 8) * 2;
  static constexpr int kBody = (kPipeBytes > kOutBytes ? kPipeBytes : kOutBytes) + code_tables_bytes() +
                               ws_barrier_bytes<STAGES>();
  static constexpr int kSmem = kBody + 1024;
  static_assert(kSmem <= 232448, "sm_90's opt-in shared memory per block (227 KiB)");
  static_assert(kBody % 16 == 0, "the float code tables after the body are read as float4");
};

template <typename T, int BM>
__global__ void __launch_bounds__(RsTile<BM>::kThreads, 1)
    qlora_wgmma_rs_kernel(const MmaParams p, const __grid_constant__ CUtensorMap xmap,
                          const __grid_constant__ CUtensorMap cmap, const __grid_constant__ CUtensorMap umap,
                          const __grid_constant__ CUtensorMap bmap) {
#if NF4LORA_HAS_WGMMA
  using C = RsTile<BM>;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = align_smem<1024>(smem_raw);
  const int tid = threadIdx.x, wg = tid / 128, lane = tid % 32;
  int bm, bn;
  tile_of_block(p, static_cast<int>(blockIdx.x), bm, bn);
  const int m0 = bm * C::BM, n0 = bn * C::BN;
  const int chunks = p.K / kChunkK;
  // full: the 128 producers (tables) and thread 0's arrival with the TMA bytes; empty: the 8 consumer warps
  const WsShared sh = ws_setup<C::STAGES, C::kThreads>(smem + C::kBody, p.w, 8);
  const float *code2 = sh.code2, *codes = sh.codes;
  uint64_t *full = sh.full, *empty = sh.empty;

  if (wg == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
    // Thread tid: W row tid's scaled table per chunk (its raw scale through ws_produce's cp.async ring, STAGES - 1
    // chunks ahead) into the stage after the codes; thread 0 also the TMA copies of x and the codes.
    const int64_t row_elem = static_cast<int64_t>(min(n0 + tid, p.N - 1)) * p.K;
    const bool q_tail = nested_q_tail(p.w, min(n0 + tid, p.N - 1), p.K);
    ws_produce<C::STAGES, 0, false>(
        p.w, smem + C::STAGES * C::kStageBytes, chunks, tid, full, empty,
        [&](int i) { return row_elem + static_cast<int64_t>(i) * kChunkK; }, [&](int64_t) { return q_tail; },
        [&](int i, int s) {
          if (tid != 0) return;
          unsigned char* st = smem + s * C::kStageBytes;
          mbar_arrive_expect_tx(&full[s], C::kXBytes + C::BN * 32);
          tma_load_2d(st, &xmap, &full[s], i * kChunkK, m0);
          tma_load_2d(st + C::kXBytes, &cmap, &full[s], i * (kChunkK / 2), n0);
        },
        [&](int s, const auto&, const RawScales<1>& raw) {
          const Table t = scaled_table<T>(codes, scale_of(p.w, code2, raw, 0));
          uint4* dst = reinterpret_cast<uint4*>(smem + s * C::kStageBytes + C::kTableOffset + tid * 32);
          dst[0] = make_uint4(t.lo[0], t.lo[1], t.lo[2], t.lo[3]);
          dst[1] = make_uint4(t.hi[0], t.hi[1], t.hi[2], t.hi[3]);
        },
        [](int) {}, p.lora_chunks,
        [&](int e, int s) {  // the folded LoRA term's chunk e: u's columns 32e.. (float32) and B's ranks
          if (tid != 0) return;
          unsigned char* st = smem + s * C::kStageBytes;
          mbar_arrive_expect_tx(&full[s], C::kXBytes + kLoraBBytes<WsTile<BM, false>>);
          tma_load_2d(st, &umap, &full[s], kLoraRanks * e, m0);
          tma_load_2d(st + C::kXBytes, &bmap, &full[s], kLoraRanks * e, n0);
        });
    return;
  }
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
  const int h = wg - 1, g = lane / 4, c = lane % 4;
  const int rt = h * 64 + (tid / 32 % 4) * 16 + g;  // this thread's tile rows rt and rt + 8
  // (rows past N: their codes are TMA's zeros, their tables those of row N - 1; no output is stored)
  float acc[BM / 2];  // (zeroed by rs_consume)
  const uint64_t xdesc0 = sw128_desc(smem_addr(smem));
  const uint32_t sel = c | ((c + 4) << 4);  // byte c of each of two words
  // Chunk i's A fragments [k16 step][4] of rows rt, rt + 8 (after its stage landed).
  auto decode = [&](int i, uint32_t (&frag)[4][4]) {
    const int s = i % C::STAGES;
    mbar_wait(&full[s], (i / C::STAGES) & 1);
    const unsigned char* cb = smem + s * C::kStageBytes + C::kXBytes;
    const uint4 r0a = *reinterpret_cast<const uint4*>(cb + rt * 32), r0b = *reinterpret_cast<const uint4*>(cb + rt * 32 + 16);
    const uint4 r1a = *reinterpret_cast<const uint4*>(cb + (rt + 8) * 32),
                r1b = *reinterpret_cast<const uint4*>(cb + (rt + 8) * 32 + 16);
    const uint32_t x0 = prmt(prmt(r0a.x, r0a.y, sel), prmt(r0a.z, r0a.w, sel), 0x5410u);  // steps 0, 1 of row rt
    const uint32_t x1 = prmt(prmt(r0b.x, r0b.y, sel), prmt(r0b.z, r0b.w, sel), 0x5410u);  // steps 2, 3
    const uint32_t y0 = prmt(prmt(r1a.x, r1a.y, sel), prmt(r1a.z, r1a.w, sel), 0x5410u);  // row rt + 8
    const uint32_t y1 = prmt(prmt(r1b.x, r1b.y, sel), prmt(r1b.z, r1b.w, sel), 0x5410u);
    const uint4* tb = reinterpret_cast<const uint4*>(smem + s * C::kStageBytes + C::kTableOffset);
    const uint4 t0l = tb[2 * rt], t0h = tb[2 * rt + 1], t1l = tb[2 * rt + 16], t1h = tb[2 * rt + 17];
    const Table t0{{t0l.x, t0l.y, t0l.z, t0l.w}, {t0h.x, t0h.y, t0h.z, t0h.w}};
    const Table t1{{t1l.x, t1l.y, t1l.z, t1l.w}, {t1h.x, t1h.y, t1h.z, t1h.w}};
    uint32_t p0[4], p1[4], q0[4], q1[4];
    decode4(x0, t0, p0);
    decode4(x1, t0, p1);
    decode4(y0, t1, q0);
    decode4(y1, t1, q1);
#pragma unroll
    for (int j = 0; j < 2; ++j) {  // (row, k 2c), (row + 8, k 2c), (row, k 2c + 8), (row + 8, k 2c + 8)
      frag[j][0] = p0[2 * j];
      frag[j][1] = q0[2 * j];
      frag[j][2] = p0[2 * j + 1];
      frag[j][3] = q0[2 * j + 1];
      frag[2 + j][0] = p1[2 * j];
      frag[2 + j][1] = q1[2 * j];
      frag[2 + j][2] = p1[2 * j + 1];
      frag[2 + j][3] = q1[2 * j + 1];
    }
  };
  rs_consume<T, BM, C::STAGES>(acc, chunks, p.lora_chunks, full, empty, xdesc0, C::kStageBytes, decode, [&](int s) {
    return b_rows<T>(smem + s * C::kStageBytes + C::kXBytes, rt);  // the folded LoRA term (wgmma_ws's MMAs)
  }, p.scale);
  store_tile<T, 1, BM / 8, C::BN, C::BM, 256, C::kProducers>(p, reinterpret_cast<float(&)[1][BM / 8][4]>(acc), smem,
                                                             n0, m0, h * 64 + (tid / 32 % 4) * 16, 0);
#else
  __trap();  // launched only on sm_90 (launch_qlora_mma checks the device)
#endif
}

// part[split] (M, r) = x̃[:, slice]·A[:, slice]ᵀ: block = kUWarps warps × 16 rows of x̃, up to 64
// ranks (blockIdx.z picks the group of 64), one K slice (blockIdx.y). Same k order trick as above:
// lane c owns k 16·c .. + 15 of each 64-wide chunk in both operands. Per chunk the block stages
// A's 64 ranks × 64 k once in shared memory (cp.async, double-buffered, rows padded to 144 bytes:
// a quarter-warp's 16-byte fragment reads hit 32 different banks) and every warp reads its A
// fragments from there: A comes from L2 once per 128 rows of x̃ instead of once per 16 (at
// M = 4096, r = 64, K = 4096: 16 MB instead of 134).
constexpr int kUWarps = 8;
constexpr int kUARow = 144;  // bytes per staged A row (128 + 16 of padding)

__device__ __forceinline__ void words8(const uint4& lo, const uint4& hi, uint32_t (&w)[8]) {
  w[0] = lo.x; w[1] = lo.y; w[2] = lo.z; w[3] = lo.w;
  w[4] = hi.x; w[5] = hi.y; w[6] = hi.z; w[7] = hi.w;
}

// lora_u_part_kernel's reduction on sm_90 (kCluster, S > 1; every thread calls it after the main loop): the C blocks
// of a cluster hold consecutive K slices of one group (128 rows, up to 64 ranks). Each publishes its sums in its own
// shared memory (red: [warp][rank tile][lane] float4s, 32 KiB), and block b of the cluster adds the 16-row stripes of
// warps b, b + C, ... over the cluster's blocks in rank order (distributed shared memory). With one cluster per group
// (S == C) it writes u; otherwise it stores its stripes' cluster sums in `part`, and per (group, b) the last cluster
// to count adds the S / C of them in cluster order. The same order on every call: the same bits.
// m0, r0: the group's first row and rank; tiles: its rank tiles of 8.
__device__ __forceinline__ void u_cluster_sum(const float (&acc)[8][4], float4* red, float* part, unsigned int* arrived,
                                              float* u, int M, int r, int S, int group, int tiles, int m0, int r0) {
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
#pragma unroll
  for (int t = 0; t < 8; ++t)
    if (t < tiles) red[(warp * 8 + t) * 32 + lane] = make_float4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]);
  cluster_sync();
  const uint2 cl = cluster_rank_and_blocks();
  const int b = static_cast<int>(cl.x), C = static_cast<int>(cl.y), n_cl = S / C, cl_idx = blockIdx.x / C;
  const int t = tid / 32, ln = tid % 32, groups = gridDim.y * gridDim.z;
  // this thread's float4 of stripe w: rank tile t of lane ln of warp w (rows g, g + 8 and ranks 2c, 2c + 1 of it)
  auto slot = [&](int cluster, int w) {
    return reinterpret_cast<float4*>(part) + ((static_cast<int64_t>(cluster) * groups + group) * kUWarps + w) * 256 + tid;
  };
  auto store_u = [&](int w, const float4& v) {
    const int g = ln / 4, c = ln % 4;
    const float e4[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int m = m0 + w * 16 + g + 8 * (e >> 1), j = r0 + t * 8 + 2 * c + (e & 1);
      if (m < M && j < r) u[static_cast<int64_t>(m) * r + j] = e4[e];
    }
  };
  for (int w = b; w < kUWarps; w += C) {
    if (t >= tiles) continue;
    const uint32_t addr = smem_addr(red + (w * 8 + t) * 32 + ln);
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int s = 0; s < C; ++s) {
      const float4 d = load_cluster_f4(addr, static_cast<uint32_t>(s));
      v.x += d.x; v.y += d.y; v.z += d.z; v.w += d.w;
    }
    if (n_cl == 1) {
      store_u(w, v);
    } else {
      __stcg(slot(cl_idx, w), v);
    }
  }
  cluster_sync();  // (every block's shared memory read: it may exit)
  if (n_cl == 1) return;
  __shared__ int last;
  if (!last_to_arrive(&arrived[group * C + b], n_cl, &last)) return;
  for (int w = b; w < kUWarps; w += C) {
    if (t >= tiles) continue;
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int k = 0; k < n_cl; ++k) {
      const float4 d = __ldcg(slot(k, w));
      v.x += d.x; v.y += d.y; v.z += d.z; v.w += d.w;
    }
    store_u(w, v);
  }
}

// kCluster (sm_90): the grid's S slices of a group come in clusters of C = min(8, S) consecutive blocks along x,
// whose partials meet in distributed shared memory (u_cluster_sum); otherwise through global partials, the last block
// of the S adding them all.
template <typename T, bool kCluster>
__global__ void __launch_bounds__(kUWarps * 32) lora_u_part_kernel(const T* __restrict__ xl, const T* __restrict__ A,
                                                                 float* __restrict__ part, unsigned int* arrived,
                                                                 float* __restrict__ u, int M, int K, int r) {
  constexpr int kStageBytes = 2 * 64 * kUARow, kRedBytes = kUWarps * 8 * 32 * 16;  // (red: kCluster, after the loop)
  __shared__ __align__(16) unsigned char smem[kCluster && kRedBytes > kStageBytes ? kRedBytes : kStageBytes];
  auto as = reinterpret_cast<unsigned char (*)[64 * kUARow]>(smem);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int mb = blockIdx.y * kUWarps * 16 + warp * 16, r0 = blockIdx.z * 64;
  const int S = gridDim.x, split = blockIdx.x, group = blockIdx.z * gridDim.y + blockIdx.y;
  const KSlice ks = k_slice(K / kChunkK, split, S);
  const int c0 = ks.first, c1 = ks.end;
  const int tiles = min(8, (r - r0 + 7) / 8);  // rank tiles of 8 in this block
  const bool ok0 = mb + g < M, ok1 = mb + g + 8 < M;
  const T* x0 = xl + static_cast<int64_t>(ok0 ? mb + g : 0) * K + 16 * c;
  const T* x1 = xl + static_cast<int64_t>(ok1 ? mb + g + 8 : 0) * K + 16 * c;
  const uint4 zero = make_uint4(0, 0, 0, 0);
  // A rows r0 .. r0 + 8·tiles of chunk ch into buffer b (ranks past r as zeros), one commit group.
  auto stage = [&](int ch, int b) {
    for (int i = tid; i < tiles * 8 * 8; i += kUWarps * 32) {
      const int row = i / 8, piece = i % 8, j = r0 + row;
      cp_async16(&as[b][row * kUARow + piece * 16],
                 A + static_cast<int64_t>(j < r ? j : 0) * K + static_cast<int64_t>(ch) * kChunkK + 8 * piece, j < r);
    }
    cp_async_commit();
  };
  float acc[8][4];
#pragma unroll
  for (int t = 0; t < 8; ++t)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[t][e] = 0.f;
  if (c0 < c1) stage(c0, 0);
  for (int ch = c0; ch < c1; ++ch) {
    const int b = (ch - c0) & 1;
    if (ch + 1 < c1) {
      stage(ch + 1, b ^ 1);
    } else {
      cp_async_commit();  // (an empty group keeps the wait count uniform)
    }
    const int k = ch * kChunkK;
    uint32_t w0[8], w1[8];
    words8(ok0 ? __ldg(reinterpret_cast<const uint4*>(x0 + k)) : zero,
           ok0 ? __ldg(reinterpret_cast<const uint4*>(x0 + k + 8)) : zero, w0);
    words8(ok1 ? __ldg(reinterpret_cast<const uint4*>(x1 + k)) : zero,
           ok1 ? __ldg(reinterpret_cast<const uint4*>(x1 + k + 8)) : zero, w1);
    cp_async_wait<1>();  // chunk ch's A (this thread's copies) ...
    __syncthreads();     // ... and everyone's
#pragma unroll
    for (int t = 0; t < 8; ++t) {
      if (t >= tiles) break;
      const unsigned char* arow = &as[b][(t * 8 + g) * kUARow + 32 * c];
      uint32_t aw[8];
      words8(*reinterpret_cast<const uint4*>(arow), *reinterpret_cast<const uint4*>(arow + 16), aw);
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        const uint32_t af[4] = {w0[2 * s], w1[2 * s], w0[2 * s + 1], w1[2 * s + 1]};
        mma16816<T>(acc[t], af, aw[2 * s], aw[2 * s + 1]);
      }
    }
    __syncthreads();  // buffer b is refilled (chunk ch + 2) in the next iteration
  }
  cp_async_wait<0>();
  if constexpr (kCluster) {
    if (S > 1) {
      __syncthreads();  // (every warp's last reads of the A stages: red reuses them)
      u_cluster_sum(acc, reinterpret_cast<float4*>(smem), part, arrived, u, M, r, S, group, tiles,
                    blockIdx.y * kUWarps * 16, r0);
      return;
    }
  }
  float* dst = S == 1 ? u : part + static_cast<int64_t>(split) * M * r;
#pragma unroll
  for (int t = 0; t < 8; ++t) {
    if (t >= tiles) break;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int m = mb + g + 8 * (e >> 1), j = r0 + t * 8 + 2 * c + (e & 1);
      if (m < M && j < r) dst[static_cast<int64_t>(m) * r + j] = acc[t][e];
    }
  }
  if (S == 1) return;
  // The last of the S blocks of this (rows, ranks) group sums the partials in slice order.
  __shared__ int last;
  if (!last_to_arrive(&arrived[group], S, &last)) return;
  const int m_first = blockIdx.y * kUWarps * 16, ranks = min(64, r - r0);
  for (int i = threadIdx.x; i < kUWarps * 16 * ranks; i += kUWarps * 32) {
    const int m = m_first + i / ranks, j = r0 + i % ranks;
    if (m >= M) break;
    float sum = 0.f;
    for (int sp = 0; sp < S; ++sp) sum += __ldcg(part + (static_cast<int64_t>(sp) * M + m) * r + j);
    u[static_cast<int64_t>(m) * r + j] = sum;
  }
}

template <typename T, int BM, bool kSplitK, bool kSS>
std::string launch_wgmma_bm(const MmaParams& p, int64_t blocks, cudaStream_t stream) {
  using C = WgTile<BM, kSS>;
  return launch_kernel(qlora_wgmma_kernel<T, BM, kSplitK, kSS>, "qlora_wgmma_kernel",
                       dim3(static_cast<unsigned>(blocks)), C::kThreads, C::kSmem, stream, kSplitK ? p.k_splits : 1,
                       false, p);
}

// The folded LoRA term's maps of the warp-specialized forward kernels (ws, rs; when p.lora_chunks > 0, else
// untouched): u's 32-rank columns (float32, 128-byte swizzle) for BM tokens and B's 32 ranks for BN rows of W.
template <typename T, int BM, int BN>
std::string fwd_lora_maps(const MmaParams& p, CUtensorMap* umap, CUtensorMap* bmap) {
  if (p.lora_chunks == 0) return "";
  std::string err = matrix_tensor_map<float>(umap, p.u, p.M, p.r, kLoraRanks, BM, CU_TENSOR_MAP_SWIZZLE_128B, "u");
  return err.empty() ? matrix_tensor_map<T>(bmap, p.B, p.N, p.r, kLoraRanks, BN, CU_TENSOR_MAP_SWIZZLE_NONE, "B") : err;
}

template <typename T, int BM, bool kPair>
std::string launch_wgmma_ws_bm(const MmaParams& p, int64_t blocks, cudaStream_t stream) {
  using C = WsTile<BM, kPair>;
  CUtensorMap xmap{}, umap{}, bmap{};
  std::string map_err = rows_tensor_map<T>(&xmap, p.x, p.M, p.K, BM, "x");
  if (map_err.empty()) map_err = fwd_lora_maps<T, BM, C::BN>(p, &umap, &bmap);
  if (!map_err.empty()) return map_err;
  MmaParams q = p;
  if (kPair) {  // pairs of x row tiles: tiles_m counts the pairs, two blocks (one cluster) each
    q.tiles_m = (p.tiles_m + 1) / 2;
    blocks = int64_t{2} * q.tiles_m * q.tiles_n;
  }
  return launch_kernel(qlora_wgmma_ws_kernel<T, BM, kPair>, "qlora_wgmma_ws_kernel",
                       dim3(static_cast<unsigned>(blocks)), C::kThreads, C::kSmem, stream, kPair ? 2 : 0, false, q,
                       xmap, umap, bmap);
}
template <typename T>
std::string launch_wgmma_ws(const MmaParams& p, int64_t blocks, bool pair, cudaStream_t stream) {
  if (pair)
    return p.block_m == 256 ? launch_wgmma_ws_bm<T, 256, true>(p, blocks, stream)
                            : launch_wgmma_ws_bm<T, 128, true>(p, blocks, stream);
  return p.block_m == 256 ? launch_wgmma_ws_bm<T, 256, false>(p, blocks, stream)
                          : launch_wgmma_ws_bm<T, 128, false>(p, blocks, stream);
}

template <typename T, int BM>
std::string launch_wgmma_rs_bm(const MmaParams& p, int64_t blocks, cudaStream_t stream) {
  using C = RsTile<BM>;
  CUtensorMap xmap{}, cmap{}, umap{}, bmap{};
  std::string map_err = rows_tensor_map<T>(&xmap, p.x, p.M, p.K, BM, "x");
  if (map_err.empty())  // the codes, boxes of 32 bytes × 128 rows
    map_err = matrix_tensor_map<uint8_t>(&cmap, p.w.packed, p.N, p.K / 2, kChunkK / 2, C::BN, CU_TENSOR_MAP_SWIZZLE_NONE,
                                         "codes");
  if (map_err.empty()) map_err = fwd_lora_maps<T, BM, C::BN>(p, &umap, &bmap);
  if (!map_err.empty()) return map_err;
  return launch_kernel(qlora_wgmma_rs_kernel<T, BM>, "qlora_wgmma_rs_kernel", dim3(static_cast<unsigned>(blocks)),
                       C::kThreads, C::kSmem, stream, 0, false, p, xmap, cmap, umap, bmap);
}

// K slices per tile only with 128 x rows per block (plan_qlora_mma never splits 256-row tiles).
template <typename T, bool kSS> std::string launch_wgmma(const MmaParams& p, int64_t blocks, cudaStream_t stream) {
  if (p.block_m == 256) return launch_wgmma_bm<T, 256, false, kSS>(p, blocks, stream);
  return p.k_splits > 1 ? launch_wgmma_bm<T, 128, true, kSS>(p, blocks, stream)
                        : launch_wgmma_bm<T, 128, false, kSS>(p, blocks, stream);
}

int64_t u_groups(int64_t M, int64_t r) { return (M + kUWarps * 16 - 1) / (kUWarps * 16) * ((r + 63) / 64); }

// K slices of the u kernel: as many blocks as fit the GPU at once (2 per SM: 16 warps; rounded down,
// so that they run in one wave), at most K / 64 and 64; above 8 a multiple of 8 (whole clusters: u_cluster).
int u_splits(int64_t M, int64_t K, int64_t r, int sm_count) {
  const int64_t groups = u_groups(M, r);
  const int64_t splits = std::max<int64_t>(1, std::min<int64_t>({2 * static_cast<int64_t>(sm_count) / groups,
                                                                 K / kChunkK, 64}));
  return static_cast<int>(splits > 8 ? splits / 8 * 8 : splits);
}

// The u kernel's cluster size for S slices on the current device: min(8, S) on sm_90, where the slices' partials meet
// in distributed shared memory (u_cluster_sum); 0 elsewhere or without a split (global partials, the last block adding
// all S). Measured (bench/results/h200/s38, run 3): the last block's sum of S = 64 partials made the kernel 15-18 µs
// at M = 128, r = 16 and 50-56 µs at r = 64 (K 4096-14336), 36-62% of the forward's time on 4096×4096.
int u_cluster(int S) {
  int major = 0, sm_count = 0;
  current_device(&major, &sm_count);
  return major == 9 && S > 1 ? std::min(8, S) : 0;
}

// The u kernel's split-K workspace for S slices: float32 partials (bytes, a multiple of 16), then counters, zero on
// entry (the kernel leaves them at zero). Clusters (u_cluster): one 32 KiB set of stripe sums per cluster and group
// where a group has more than one cluster, and a counter per group and cluster rank; otherwise S·M·r partials and a
// counter per group.
struct UWork {
  int64_t part_bytes, n_counters;  // (the counters start at part_bytes)
  int64_t bytes() const { return part_bytes + 4 * n_counters; }
};
UWork u_work(int64_t M, int64_t r, int S) {
  if (S <= 1) return UWork{0, 0};
  const int C = u_cluster(S);
  const int64_t groups = u_groups(M, r);
  if (C == 0) return UWork{(4 * S * M * r + 15) / 16 * 16, groups};
  const int64_t clusters = S / C;
  if (clusters == 1) return UWork{0, 0};
  return UWork{clusters * groups * kUWarps * 256 * 16, groups * C};
}

// u (M, r) = x̃·Aᵀ: the u kernel over `splits` K slices (part and arrived: the split-K workspace, u_work's).
template <typename T>
std::string launch_u(const void* x_lora, const void* A, float* part, unsigned int* arrived, float* u, int M, int K,
                     int r, int splits, cudaStream_t stream) {
  const dim3 ugrid(splits, (M + kUWarps * 16 - 1) / (kUWarps * 16), (r + 63) / 64);
  const int cluster = u_cluster(splits);
  const auto args = [&](auto kernel, const char* name) {
    return launch_kernel(kernel, name, ugrid, kUWarps * 32, 0, stream, cluster, false, static_cast<const T*>(x_lora),
                         static_cast<const T*>(A), part, arrived, u, M, K, r);
  };
  return cluster > 0 ? args(lora_u_part_kernel<T, true>, "lora_u_part_kernel") :
                       args(lora_u_part_kernel<T, false>, "lora_u_part_kernel");
}

template <typename T>
std::string launch_typed(const MmaParams& p, const MmaPlan& plan, bool u_given, const void* x_lora, const void* A,
                         float* u_part, unsigned int* u_arrived, unsigned int* counters, int64_t n_counters,
                         cudaStream_t stream) {
  // n_counters > 0: the workspace's counters, zeroed here; 0: none, or the caller's (zero on entry)
  cudaError_t err;
  if (!u_given) {
    if (n_counters > 0) {  // the u kernel's split-K counters
      err = cudaMemsetAsync(counters, 0, sizeof(unsigned int) * n_counters, stream);
      if (err != cudaSuccess) return std::string("cudaMemsetAsync: ") + cudaGetErrorString(err);
    }
    const std::string u_err = launch_u<T>(x_lora, A, u_part, u_arrived, const_cast<float*>(p.u), p.M, p.K, p.r,
                                          plan.splits, stream);
    if (!u_err.empty()) return u_err;
  }
  const int64_t blocks = static_cast<int64_t>(p.tiles_m) * p.tiles_n * p.k_splits;
  if (plan.rs)
    return p.block_m == 256 ? launch_wgmma_rs_bm<T, 256>(p, blocks, stream) : launch_wgmma_rs_bm<T, 128>(p, blocks, stream);
  if (plan.ws)
    return launch_wgmma_ws<T>(p, blocks, plan.ws_pair, stream);
  if (plan.wgmma) return plan.ss ? launch_wgmma<T, true>(p, blocks, stream) : launch_wgmma<T, false>(p, blocks, stream);
  using C = LargeTile;
  return launch_kernel(qlora_mma_kernel<T, C>, "qlora_mma_kernel", dim3(static_cast<unsigned>(blocks)), C::kThreads,
                       C::kSmem, stream, 0, false, p);
}

}  // namespace

// launchers.h
void current_device(int* major, int* sm_count) {
  static int cache[64][2] = {};
  int dev = 0;
  *major = 0;
  *sm_count = 1;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0) return;
  if (dev < 64 && cache[dev][0] != 0) {
    *major = cache[dev][0];
    *sm_count = cache[dev][1];
    return;
  }
  cudaDeviceGetAttribute(major, cudaDevAttrComputeCapabilityMajor, dev);
  cudaDeviceGetAttribute(sm_count, cudaDevAttrMultiProcessorCount, dev);
  if (dev < 64) {
    cache[dev][0] = *major;
    cache[dev][1] = *sm_count;
  }
}

MmaPlan plan_qlora_mma(int64_t M, int64_t N, int64_t K, int64_t r, int variant, int block_m) {
  MmaPlan plan{};
  int major = 0, sm_count = 1;
  current_device(&major, &sm_count);
  if (variant < 0 || variant > 6) {
    plan.error = "variant must be 0 (auto), 1 (mma.sync), 2 (wgmma), 3 (wgmma, W through shared memory), 4 (3 "
                 "warp-specialized), 5 (4 with the decode shared by pairs of blocks) or 6 (4 with the decode in "
                 "the consumers' registers), got " + std::to_string(variant);
    return plan;
  }
  if (variant >= 2 && major != 9) {
    plan.error = "variants 2 to 6 (wgmma) need an sm_90 GPU";
    return plan;
  }
  if (block_m != 0 && block_m != 128 && block_m != 256) {
    plan.error = "block_m must be 0 (auto), 128 or 256";
    return plan;
  }
  if (M < 1 || N < 1 || r < 1 || K < kChunkK) {
    plan.error = "need M, N, r >= 1 and K >= 64";
    return plan;
  }
  plan.wgmma = variant >= 2 || (variant == 0 && major == 9);
  plan.ss = variant >= 3 || (variant == 0 && major == 9);
  plan.ws = variant >= 4;
  plan.ws_pair = variant == 5;
  plan.rs = variant == 6;
  const int64_t chunks = K / kChunkK;
  // u kernel: K slices so that its grid fills the GPU (~4 blocks per SM).
  plan.splits = u_splits(M, K, r, sm_count);
  // Main kernel: the tile, and K slices when the tiles alone leave SMs idle (one wave at most).
  const int BN = plan.wgmma ? WgTile<128>::BN : LargeTile::BN;
  plan.block_m = !plan.wgmma ? LargeTile::BM
                 : block_m > 0 ? block_m
                               : wgmma_rows_per_block(M, (N + BN - 1) / BN, sm_count);
  plan.tiles_m = static_cast<int>((M + plan.block_m - 1) / plan.block_m);
  plan.tiles_n = static_cast<int>((N + BN - 1) / BN);
  const int64_t tiles = static_cast<int64_t>(plan.tiles_m) * plan.tiles_n;
  plan.k_splits = 1;
  if (plan.wgmma && !plan.ws && plan.block_m == 128 && tiles < sm_count)
    plan.k_splits = split_k_slices(tiles, chunks, sm_count, [&](int s) {
      using SS = WgTile<128, true>;
      using RS = WgTile<128, false>;
      return plan.ss ? resident_clusters<qlora_wgmma_kernel<__nv_bfloat16, 128, true, true>>(SS::kThreads, SS::kSmem, s)
                     : resident_clusters<qlora_wgmma_kernel<__nv_bfloat16, 128, true, false>>(RS::kThreads, RS::kSmem, s);
    });
  // Auto on sm_90: the warp-specialized kernel with the decode in the consumers' registers wherever the
  // tiles run without a K split (wgmma_ws: 0.78-0.82× the SS kernel's time at M >= 1024 on the H200,
  // bench/results/h200/cuda_ws/; wgmma_rs: 0.85-0.92× wgmma_ws's, s26); the split tiles (clusters) stay
  // on the SS kernel.
  if (variant == 0 && major == 9 && plan.k_splits == 1) plan.ws = plan.rs = true;
  const UWork sec = u_work(M, r, plan.splits);  // (the workspace: the u kernel's K split only)
  plan.workspace_bytes = sec.bytes();
  plan.counters = sec.n_counters;
  return plan;
}

std::string launch_qlora_mma(uintptr_t y, uintptr_t x, uintptr_t x_lora, uintptr_t A, uintptr_t B, uintptr_t bias,
                             uintptr_t u, int fold_lora, uintptr_t workspace, int64_t workspace_bytes, int dtype,
                             uintptr_t packed,
                             uintptr_t absmax, uintptr_t quant_map, uintptr_t nested_absmax,
                             uintptr_t nested_quant_map, float nested_offset, int blocksize, int64_t M, int64_t N,
                             int64_t K, int64_t r, float scale, int variant, int block_m, int u_given,
                             uintptr_t zeroed_counters, int64_t n_zeroed, uintptr_t stream) {
  const int lg = log2_exact(blocksize);
  if (lg < 6 || lg > 12) return "blocksize must be a power of two in [64, 4096]";
  if (M < 1 || N < 1 || r < 1 || K < kChunkK || K % blocksize != 0)
    return "need M, N, r >= 1 and K a positive multiple of the blocksize (>= 64)";
  if (N >= (int64_t{1} << 30) || K >= (int64_t{1} << 30) || M >= (int64_t{1} << 30) || N * K > (int64_t{1} << 40) ||
      r > (1 << 16))
    return "shape too large (M, N, K < 2^30, N·K <= 2^40, r <= 65536)";
  for (uintptr_t ptr : {packed, x, x_lora, A, y, workspace})
    if (ptr % 16 != 0) return "packed, x, x_lora, A, y and workspace must be 16-byte aligned";
  const MmaPlan plan = plan_qlora_mma(M, N, K, r, variant, block_m);
  if (!plan.error.empty()) return plan.error;
  if (!u_given && (workspace_bytes < plan.workspace_bytes || (plan.workspace_bytes > 0 && workspace == 0)))
    return "the workspace is smaller than plan_qlora_mma says (" + std::to_string(plan.workspace_bytes) + " bytes)";
  const UWork sec = u_work(M, r, plan.splits);
  unsigned char* ws = reinterpret_cast<unsigned char*>(workspace);
  unsigned int* counters = reinterpret_cast<unsigned int*>(ws + sec.part_bytes);
  MmaParams p{};
  p.y = reinterpret_cast<void*>(y);
  p.x = reinterpret_cast<const void*>(x);
  p.B = reinterpret_cast<const void*>(B);
  p.bias = reinterpret_cast<const void*>(bias);
  p.u = reinterpret_cast<const float*>(u);
  p.w = make_state(packed, absmax, quant_map, nested_absmax, nested_quant_map, nested_offset, N * K, lg);
  p.M = static_cast<int>(M);
  p.N = static_cast<int>(N);
  p.K = static_cast<int>(K);
  p.r = static_cast<int>(r);
  p.block_m = plan.block_m;
  p.tiles_m = plan.tiles_m;
  p.tiles_n = plan.tiles_n;
  p.k_splits = plan.k_splits;
  p.scale = scale;
  p.lora_vec = r % 8 == 0 && B % 16 == 0 && u % 16 == 0;
  p.lora_chunks = plan.ws && fold_lora ? static_cast<int>(lora_fold_chunks(r)) : 0;
  if (p.lora_chunks > 0 && (B % 16 != 0 || u % 16 != 0))
    return "the folded LoRA term needs B and u 16-byte aligned";
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  const void* xl = reinterpret_cast<const void*>(x_lora);
  const void* a = reinterpret_cast<const void*>(A);
  float* u_part = reinterpret_cast<float*>(ws);
  int64_t to_zero = sec.n_counters;  // the workspace's counters, zeroed by one memset ...
  if (!u_given && sec.n_counters > 0 && zeroed_counters != 0) {  // ... or the caller's, zero on entry
    if (zeroed_counters % 4 != 0 || n_zeroed < sec.n_counters)
      return "zeroed_counters must be 4-byte aligned and hold at least " + std::to_string(sec.n_counters) +
             " counters (plan_qlora_mma's count), got " + std::to_string(n_zeroed);
    counters = reinterpret_cast<unsigned int*>(zeroed_counters);
    to_zero = 0;
  }
  unsigned int* u_arrived = sec.n_counters > 0 ? counters : nullptr;
  if (dtype == 1) return launch_typed<__half>(p, plan, u_given != 0, xl, a, u_part, u_arrived, counters, to_zero, st);
  if (dtype == 2)
    return launch_typed<__nv_bfloat16>(p, plan, u_given != 0, xl, a, u_part, u_arrived, counters, to_zero, st);
  return "dtype must be 1 (float16) or 2 (bfloat16)";
}

int64_t lora_u_workspace_bytes(int64_t M, int64_t K, int64_t r) {
  int major = 0, sm_count = 1;
  current_device(&major, &sm_count);
  return u_work(M, r, u_splits(M, K, r, sm_count)).bytes();
}

std::string launch_lora_u(uintptr_t u, uintptr_t x, uintptr_t A, uintptr_t workspace, int64_t workspace_bytes,
                          int dtype, int64_t M, int64_t K, int64_t r, uintptr_t stream) {
  if (M < 1 || r < 1 || K < kChunkK || K % kChunkK) return "need M, r >= 1 and K a positive multiple of 64";
  if (M >= (int64_t{1} << 30) || K >= (int64_t{1} << 30) || r > (1 << 16)) return "shape too large";
  for (uintptr_t ptr : {x, A, workspace})
    if (ptr % 16 != 0) return "x, A and the workspace must be 16-byte aligned";
  int major = 0, sm_count = 1;
  current_device(&major, &sm_count);
  const int splits = u_splits(M, K, r, sm_count);
  const UWork w = u_work(M, r, splits);
  const int64_t need = w.bytes();
  if (workspace_bytes < need || (need > 0 && workspace == 0))
    return "the workspace is smaller than lora_u_workspace_bytes says (" + std::to_string(need) + " bytes)";
  float* part = reinterpret_cast<float*>(workspace);
  unsigned int* arrived = w.n_counters > 0 ? reinterpret_cast<unsigned int*>(workspace + w.part_bytes) : nullptr;
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  if (w.n_counters > 0) {
    const cudaError_t err = cudaMemsetAsync(arrived, 0, sizeof(unsigned int) * w.n_counters, st);
    if (err != cudaSuccess) return std::string("cudaMemsetAsync: ") + cudaGetErrorString(err);
  }
  float* out = reinterpret_cast<float*>(u);
  const void* xp = reinterpret_cast<const void*>(x);
  const void* ap = reinterpret_cast<const void*>(A);
  const int m = static_cast<int>(M), k = static_cast<int>(K), rr = static_cast<int>(r);
  if (dtype == 1) return launch_u<__half>(xp, ap, part, arrived, out, m, k, rr, splits, st);
  if (dtype == 2) return launch_u<__nv_bfloat16>(xp, ap, part, arrived, out, m, k, rr, splits, st);
  return "dtype must be 1 (float16) or 2 (bfloat16)";
}

}  // namespace nf4lora
