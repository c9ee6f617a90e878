// nf4lora::qlora_linear_backward's dx on sm_90a:  dx (M, K) = g·W (+ s·gB·A),  gB = g·B (M, r) fp32
//
// Three kernels: qlora_dx_rs_kernel (the decode in registers, the transposed tile; the default wherever
// the reduction is not split, but for a LoRA term it cannot fold: r % 8 != 0; described at the
// kernel), qlora_dx_ws_kernel (warp-specialized, below) and qlora_dx_kernel (SS, every thread
// decodes; it keeps the split plans). The last two: a block
// owns BM (128 or 256) tokens × 128 columns k of dx and walks the reduction over n (W's rows) in
// chunks of 64, W decoded into shared memory in its stored layout as below, the same MMAs
// (dx_chunk_mmas) and epilogue (dx_epilogue).
//
// qlora_dx_kernel: per chunk, a STAGES-deep cp.async pipeline brings the g tile (BM tokens ×
// 64 n, K-major, 128-byte swizzle: wgmma's A operand by descriptor); the packed codes of W rows
// n .. n + 63, columns k .. k + 127 (64 bytes a row) and their raw scales go global -> registers one
// chunk ahead. All 256 threads decode the codes into a 64 × 128 bf16 / fp16 tile in shared memory
// in W's stored orientation (one 128-byte line = 64 k of one n row, 16-byte pieces XOR-swizzled by
// n % 8): wgmma's B operand, N-major (imm-trans-b = 1). Three W buffers: the MMAs of chunk c stay in
// flight across the barrier while chunk c + 1 is decoded (SS wgmma: no register operand to
// protect). The absmax is folded into the decode table (one rounding, as the forward's, so dx sees
// W exactly as dequantize_nf4(q).to(dtype)). Each of the two warpgroups owns BM / 2 tokens (one or
// two m64n128k16 per k16 step). Every decoded W element feeds BM tokens, so 256-token tiles halve
// the decode per flop (wgmma_rows_per_block chooses from the shape).
// Needs N and K multiples of 64 (the dispatcher keeps Triton otherwise).
//
// Reduction split (plan_qlora_dx): when the 128-token tiles alone leave SMs idle (small M), the n
// chunks of a tile are split over the S blocks of a thread-block cluster; rank 0 sums the S fp32
// partial tiles in slice order through distributed shared memory (deterministic, no workspace;
// cluster_sum_to_rank0 in wgmma.cuh) and runs the epilogue.
//
// The LoRA term s·gB·A (s·gB split into a T part and a T residual): in the warp-specialized kernel
// folded into the reduction as extra chunks after W's (gB's columns and A's rows by TMA, pipelined
// like W's chunks; s·gB split in registers into the MMAs' A fragments: lora_dx_mmas); in the SS
// kernel (and the ws kernel's variant 3, or where r % 8 != 0) added by the epilogue as mma.sync
// steps (A staged in shared memory 16 ranks at a time), which at r = 64 left 8-17% of the dx's time
// exposed after the mainloop (eighteenth session).
// Epilogue: then dx staged through shared memory for 16-byte stores.
#include <cuda_runtime.h>

#include <algorithm>

#include "launchers.h"
#include "nf4.cuh"
#include "nf4_mma.cuh"
#include "tensor_map.h"
#include "wgmma.cuh"

namespace nf4lora {
namespace {

// Diagnostic builds of the warp-specialized kernel (bench/dx_diag.sh; wrong results): 1 = no decode
// (the W tile left as it is), 6 = the raw code words stored as the W tile (the stores without the decode).
#ifndef NF4LORA_DX_DIAG
#define NF4LORA_DX_DIAG 0
#endif

constexpr int kChunkN = 64;  // reduction rows of W per stage
constexpr int kDxBK = 128;   // dx columns per block
constexpr int kAtomCol = kChunkN * 128;  // bytes of one 64-k column of the decoded W tile
// dx_epilogue's LoRA staging, inside the output tile's region (the LoRA steps end before the tile is
// written): s·gB of the tile's BM tokens for 16 ranks split into T parts and residuals ([BM][kSu]
// words), then A's 16 ranks × 128 columns row-major ([16][kAs] T).
constexpr int kSu = 20;         // words per token row of the s·gB staging (16 used: conflict-free fragment reads)
constexpr int kAs = kDxBK + 8;  // T per rank row of the A staging (272 bytes: conflict-free ldmatrix rows)

struct DxParams {
  void* dx;          // (M, K) T
  const void* g;     // (M, N) T, contiguous, 16-byte aligned
  const float* gB;   // (M, r) float32 = g·B, or nullptr: no LoRA term in dx
  const void* A;     // (r, K) T
  NF4State w;
  int M, N, K, r, tiles_m, tiles, splits;
  float scale;
  int a_vec;   // A 16-byte aligned: dx_epilogue stages A's ranks with 16-byte loads
  int gb_vec;  // r % 4 == 0 and gB 16-byte aligned: dx_epilogue stages s·gB with 16-byte loads
  // > 0: the warp-specialized kernel folds the LoRA term into the reduction as this many extra
  // chunks of 32 ranks (lora_fold_chunks, below) and dx_epilogue adds none; 0: dx_epilogue adds it.
  int lora_chunks;
};

template <int BM_> struct DxTile {
  static constexpr int kThreads = 256, BM = BM_, BK = kDxBK, MT = BM / 128;  // MT: m64 tiles per warpgroup
  static constexpr int STAGES = 4;
  static constexpr int kGBytes = BM * 128;                // g tile of one stage (64 n × 2 bytes a row)
  static constexpr int kWBytes = kAtomCol * (BK / 64);    // decoded W tile (bf16 / fp16)
  static constexpr int kPipeBytes = STAGES * kGBytes + 3 * kWBytes;
  static constexpr int kOutBytes = BM * (BK + 8) * 2;  // the dx tile (dx_epilogue's LoRA staging fits inside)
  static_assert(BM * kSu * 4 + 16 * kAs * 2 <= kOutBytes, "the LoRA staging fits the output tile");
  static constexpr int kTableBytes = code_tables_bytes();
  static constexpr int kBody = (kPipeBytes > kOutBytes ? kPipeBytes : kOutBytes) + kTableBytes;
  static constexpr int kSmem = kBody + 1024;
};

// The MMAs of one 64-row reduction chunk on one warpgroup: acc[t] (+)= g · W for its MT m64 token
// tiles. g_tile: the warpgroup's first token row in the stage's g tile; w_tile: the stage's decoded W
// tile. Descriptors: A = 64 tokens (K-major, 128-byte swizzle; a k16 step = 32 bytes), B = the W
// tile (N-major, 128-byte swizzle: leading offset = the next 64 k (one atom column, kAtomCol
// bytes), stride offset = the next 8 n rows (1024 bytes); a k16 step of the reduction = 16 n rows =
// 2048 bytes). Both layouts verified bit for bit by the identity test. first: overwrite acc.
template <typename T, int MT>
__device__ __forceinline__ void dx_chunk_mmas(float (&acc)[MT][64], uint32_t g_tile, uint32_t w_tile, bool first) {
#pragma unroll
  for (int s = 0; s < 4; ++s) {
    const uint64_t db = sw128_desc_lbo_sbo(w_tile + 16 * 128 * s, kAtomCol, 1024);
#pragma unroll
    for (int t = 0; t < MT; ++t) {
      const uint64_t da = sw128_desc_lbo_sbo(g_tile + t * 64 * 128 + 32 * s, 16, 1024);
      wgmma_ss_m64k16<T, 128, true>(acc[t], da, db, !first || s > 0);
    }
  }
}

// The dx tile's epilogue on the 256 threads of two warpgroups (ctid 0 .. 255; warpgroup ctid / 128
// holds tokens (ctid / 128)·BM / 2 .. + BM / 2 - 1 of the tile in acc, MT = BM / 128 m64 tiles),
// once every MMA of the tile is done and the pipeline buffers are free (they become the output
// tile): the LoRA term, then dx staged through shared memory for 16-byte stores. Accumulator
// layout (m64nNk16 D, per warp 16 tokens): acc[t][4·jt + e] is token trow + 64·t + g + 8·(e / 2),
// column k0 + 8·jt + 2c + e % 2.
template <typename T, int BM>
__device__ __forceinline__ void dx_epilogue(const DxParams& p, float (&acc)[BM / 128][64], unsigned char* smem,
                                            int ctid, int m0, int k0) {
  constexpr int MT = BM / 128;
  const int warp = ctid / 32, lane = ctid % 32, g = lane / 4, c = lane % 4;
  const int M = p.M, K = p.K, r = p.r;
  const int trow = (warp / 4) * (BM / 2) + (warp % 4) * 16;
  // LoRA: acc += (s·gB)·A over r in steps of 16 ranks (mma.sync on the accumulator fragments: per
  // 8 columns, rows g and g + 8 of this warp's 16 tokens — the m16n8 C layout). Each step first
  // stages, with loads that are all in flight at once, s·gB of the tile's tokens (split into T
  // parts and T residuals, [BM][kSu] words) and A's 16 ranks × 128 columns (row-major, [16][kAs])
  // in the output tile's shared memory, then reads the A fragments (conflict-free stride) and the B
  // fragments by ldmatrix.trans from there. (Loading gB next to the mmas and A one 2-byte element
  // per load, as before, left L2 latencies exposed per step: the forward's store_tile measured
  // ~15 µs per tile and 16 ranks with that pattern, sixteenth session.) Same products summed in
  // the same order as before: the same bits.
  if (p.gB != nullptr && p.lora_chunks == 0) {
    const T* Am = static_cast<const T*>(p.A);
    uint32_t* const su = reinterpret_cast<uint32_t*>(smem);
    T* const As = reinterpret_cast<T*>(smem + BM * kSu * 4);
    const float* const gB = p.gB;
    for (int kr0 = 0; kr0 < r; kr0 += 16) {
      named_sync(1, 256);  // the previous step's reads of the staging are done
      // (The staging's index arithmetic is redone every step from an opaque copy of ctid: hoisted
      // out of the loop, its addresses spilled beside the 256-token tile's 128 accumulators.)
      int ct = ctid;
      asm volatile("" : "+r"(ct));
      if (p.a_vec) {  // one 16-byte load per thread: rank ct / 16, columns 8·(ct % 16) ...
        const int j = ct / 16, kc = 8 * (ct % 16);
        const bool ok = kr0 + j < r && k0 + kc < K;
        const uint4 v = ok ? __ldg(reinterpret_cast<const uint4*>(Am + static_cast<int64_t>(kr0 + j) * K + k0 + kc))
                           : make_uint4(0, 0, 0, 0);
        *reinterpret_cast<uint4*>(As + j * kAs + kc) = v;
      } else {
#pragma unroll 1
        for (int idx = ct; idx < 16 * kDxBK; idx += 256) {
          const int j = idx / kDxBK, kl = idx % kDxBK;
          As[j * kAs + kl] = k0 + kl < K && kr0 + j < r ? Am[static_cast<int64_t>(kr0 + j) * K + k0 + kl] : T(0.f);
        }
      }
      auto put_su = [&](int ml, int q, float a, float b) {  // token ml, rank pair q: s·gB split
        const float ha = to_float(static_cast<T>(a)), hb = to_float(static_cast<T>(b));
        su[ml * kSu + q] = pack2<T>(ha, hb);
        su[ml * kSu + 8 + q] = pack2<T>(a - ha, b - hb);
      };
      if (p.gb_vec) {  // 4 ranks of one token per 16-byte load, two loads per thread in flight at a time
#pragma unroll 1
        for (int it0 = 0; it0 < BM * 4 / 256; it0 += 2) {
          float4 gq[2];
#pragma unroll
          for (int it = 0; it < 2; ++it) {
            const int idx = ct + (it0 + it) * 256, m = m0 + idx / 4, j = kr0 + 4 * (idx % 4);
            gq[it] = m < M && j < r ? __ldg(reinterpret_cast<const float4*>(gB + static_cast<int64_t>(m) * r + j))
                                    : make_float4(0.f, 0.f, 0.f, 0.f);
          }
#pragma unroll
          for (int it = 0; it < 2; ++it) {
            const int idx = ct + (it0 + it) * 256, ml = idx / 4, q = 2 * (idx % 4);
            put_su(ml, q, p.scale * gq[it].x, p.scale * gq[it].y);
            put_su(ml, q + 1, p.scale * gq[it].z, p.scale * gq[it].w);
          }
        }
      } else {
#pragma unroll 1
        for (int idx = ct; idx < BM * 8; idx += 256) {
          const int ml = idx / 8, q = idx % 8, m = m0 + ml, j = kr0 + 2 * q;
          const float a = m < M && j < r ? p.scale * __ldg(gB + static_cast<int64_t>(m) * r + j) : 0.f;
          const float b = m < M && j + 1 < r ? p.scale * __ldg(gB + static_cast<int64_t>(m) * r + j + 1) : 0.f;
          put_su(ml, q, a, b);
        }
      }
      named_sync(1, 256);
      // Fragment addresses, also from the opaque ct (hoisted, they spilled too).
      const int ln = ct % 32, rows = (ct / 128) * (BM / 2) + (ct / 32 % 4) * 16 + ln / 4;
      const uint32_t as_lane = smem_addr(As + (ln % 8 + 8 * (ln / 8 % 2)) * kAs + 8 * (ln / 16));
#pragma unroll
      for (int t = 0; t < MT; ++t) {
        // A fragments (s·gB): rows g, g + 8 of the warp's 16 tokens, rank pairs c and c + 4.
        const uint32_t* const s0 = su + (rows + 64 * t) * kSu + ln % 4;
        const uint32_t hi[4] = {s0[0], s0[8 * kSu], s0[4], s0[8 * kSu + 4]};
        const uint32_t lo[4] = {s0[8], s0[8 * kSu + 8], s0[12], s0[8 * kSu + 12]};
#pragma unroll
        for (int jt = 0; jt < 16; jt += 2) {
          // B fragments of columns 8·jt .. + 15: four 8×8 matrices (ranks 0-7 / 8-15 × two column
          // blocks), transposed on load: lane l gives the row address of matrix l / 8.
          uint32_t b[4];
          ldmatrix_x4_trans(b, as_lane + 16 * jt);  // (8·jt columns of T: 16·jt bytes)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            float(&d)[4] = *reinterpret_cast<float(*)[4]>(acc[t] + 4 * (jt + h));
            mma16816<T>(d, hi, b[2 * h], b[2 * h + 1]);
            mma16816<T>(d, lo, b[2 * h], b[2 * h + 1]);
          }
        }
      }
    }
    named_sync(1, 256);  // the staging's last reads are done before the dx tile overwrites it
  }

  // dx tile staged as [BM][BK + 8] (rows = tokens), then 16-byte stores.
  T* out = reinterpret_cast<T*>(smem);
#pragma unroll
  for (int t = 0; t < MT; ++t)
#pragma unroll
    for (int jt = 0; jt < 16; ++jt)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        *reinterpret_cast<uint32_t*>(out + (trow + 64 * t + g + 8 * h) * (kDxBK + 8) + 8 * jt + 2 * c) =
            pack2<T>(acc[t][4 * jt + 2 * h], acc[t][4 * jt + 2 * h + 1]);
  named_sync(1, 256);
  T* dx = static_cast<T*>(p.dx);
  constexpr int kVecs = kDxBK / 8;
  for (int idx = ctid; idx < BM * kVecs; idx += 256) {
    const int row = idx / kVecs, col = idx % kVecs * 8;
    const int m = m0 + row, k = k0 + col;
    if (m < M && k < K)
      *reinterpret_cast<uint4*>(dx + static_cast<int64_t>(m) * K + k) =
          *reinterpret_cast<const uint4*>(out + row * (kDxBK + 8) + col);
  }
}

template <typename T, int BM, bool kSplit>
__global__ void __launch_bounds__(256, 1) qlora_dx_kernel(DxParams p) {
#if NF4LORA_HAS_WGMMA
  using C = DxTile<BM>;
  constexpr int MT = C::MT;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = align_smem<1024>(smem_raw);
  unsigned char* gs = smem;                                          // [STAGES][BM][128], swizzled
  unsigned char* ws = smem + C::STAGES * C::kGBytes;                 // [3][BK / 64][64 n][128], swizzled
  float* code2 = reinterpret_cast<float*>(smem + C::kBody - C::kTableBytes);
  float* codes = code2 + 256;

  const int tid = threadIdx.x, warp = tid / 32;
  // Block = (tile, slice): the splits slices of a tile are consecutive blocks, one cluster (the
  // slice is the block's rank in it).
  const int tile = kSplit ? static_cast<int>(blockIdx.x) / p.splits : static_cast<int>(blockIdx.x);
  const int split = kSplit ? static_cast<int>(blockIdx.x) % p.splits : 0;
  const int bm = tile % p.tiles_m, bk = tile / p.tiles_m;
  const int m0 = bm * C::BM, k0 = bk * C::BK;
  const int all_chunks = p.N / kChunkN;
  const int c_first = kSplit ? static_cast<int>(static_cast<int64_t>(split) * all_chunks / p.splits) : 0;
  const int chunks =
      kSplit ? static_cast<int>(static_cast<int64_t>(split + 1) * all_chunks / p.splits) - c_first : all_chunks;
  const T* gm = static_cast<const T*>(p.g);

  stage_float_code_tables<C::kThreads>(code2, p.w);

  // Stage i % STAGES of the g pipeline holds chunk c_first + i (i: the block's own chunk count).
  auto load_g = [&](int i) {
    load_rows_sw128<T, C::BM, C::kThreads>(gs + (i % C::STAGES) * C::kGBytes, gm, p.N, m0, p.M,
                                           static_cast<int64_t>(c_first + i) * kChunkN);
  };


  // Decode: thread t owns W row n = t / 4 of the chunk and 32 columns k = 32·(t % 4) of the tile
  // (one absmax block: the blocksize is >= 64). Its 16 code bytes and raw scale go straight from
  // global memory to registers one chunk ahead of their decode (columns past K: zero codes,
  // decoded and never stored).
  const int dn = tid / 4, dq = tid % 4;
  const int kq = k0 + 32 * dq;
  using Raw = RawScales<1>;
  auto load_codes = [&](int i, uint4& cw, Raw& r) {
    const int64_t n = static_cast<int64_t>(c_first + i) * kChunkN + dn;
    const int64_t e = n * p.K + min(kq, p.K - 32);
    cw = kq < p.K ? __ldg(reinterpret_cast<const uint4*>(p.w.packed + e / 2)) : make_uint4(0, 0, 0, 0);
    load_raw_scale(p.w, e, r, 0);
  };
  // W buffer i % 3: chunk i's decoded tile (three: the MMAs of chunks i - 1 and i may still read
  // theirs while chunk i + 1 is decoded).
  auto decode = [&](int i, const uint4& cw, const Raw& raw) {
    decode32_to_row<T>(cw, scaled_table<T>(codes, scale_of(p.w, code2, raw, 0)),
                       ws + (i % 3) * C::kWBytes + (dq / 2) * kAtomCol + dn * 128, dn, (dq % 2) * 4);
  };

  uint4 cw;
  Raw raw;
  ss_prologue<C::STAGES>(chunks, load_g, load_codes, decode, cw, raw);

  const int wg = warp / 4;
  const uint32_t g_addr = smem_addr(gs) + wg * (C::BM / 2) * 128;
  const uint32_t w_addr = smem_addr(ws);
  float acc[MT][64];
#pragma unroll
  for (int t = 0; t < MT; ++t)
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[t][i] = 0.f;

  // Per chunk i: issue its MMAs, decode chunk i + 1 while they run, wait for the MMAs of chunk
  // i - 1 only (those of i stay in flight across the barrier, so the tensor cores get chunk
  // i + 1's right after it), then refill the g stage chunk i - 1 used.
  for (int i = 0; i < chunks; ++i) {
#pragma unroll
    for (int t = 0; t < MT; ++t) pin(acc[t]);
    wgmma_fence();
    dx_chunk_mmas<T>(acc, g_addr + (i % C::STAGES) * C::kGBytes, w_addr + (i % 3) * C::kWBytes, i == 0);
    wgmma_commit();
    ss_finish_chunk<C::STAGES>(i, chunks, load_g, load_codes, decode, [&] {
#pragma unroll
      for (int t = 0; t < MT; ++t) pin(acc[t]);
    }, cw, raw);
  }
  wgmma_wait<0>();
#pragma unroll
  for (int t = 0; t < MT; ++t) pin(acc[t]);
  cp_async_wait<0>();

  if constexpr (kSplit) {
    // The splits blocks of this tile are one cluster: rank 0 sums the slices' tiles in slice order
    // (deterministic) through distributed shared memory and runs the epilogue.
    static_assert(MT == 1 && 64 * C::kThreads * 4 <= C::kBody - C::kTableBytes, "partial tile fits the pipeline");
    __syncthreads();  // both warpgroups' MMAs done: the pipeline buffers are free
    if (!cluster_sum_to_rank0<C::kThreads>(acc[0], smem)) return;
  }
  __syncthreads();  // the pipeline buffers become the output tile

  dx_epilogue<T, BM>(p, acc, smem, tid, m0, k0);
#else
  __trap();  // launched only on sm_90 (launch_qlora_dx checks the device)
#endif
}

// qlora_dx_ws_kernel (sm_90a): the dx warp-specialized as the forward's qlora_wgmma_ws_kernel (the
// SS kernel above has every thread decode, copy and issue MMAs in turn; there the forward's
// warp-specialized kernel took 0.78-0.82× the SS kernel's time). Warpgroup 0 produces through
// ws_produce: thread 0 copies the chunk's g tile (BM tokens × 64 n) with one TMA (rows past M zero);
// thread t decodes the 64 k (two code words, one absmax block) of W row n = t % 64 of the chunk at
// columns k0 + 64·(t / 64) into the stage's W tile (the SS kernel's layout; columns past K read the
// row's last 64 codes instead: decoded, never stored). Warpgroups 1 and 2 consume: warpgroup 1 + h
// owns tokens h·BM / 2 .. + BM / 2 - 1, waits full[s], issues the chunk's MMAs and releases the
// previous chunk's stage once its own MMAs of it are done; then the shared epilogue. No reduction
// split (plan_qlora_dx keeps the SS kernel where it splits).
constexpr int kDxWsStages = 4;
template <int BM_> struct DxWsTile {
  static constexpr int kProducers = 128, kThreads = kProducers + 256, kWords = 2;
  static constexpr int BM = BM_, BK = kDxBK, MT = BM / 128, STAGES = kDxWsStages;
  static constexpr int kGBytes = BM * 128, kWBytes = kAtomCol * (BK / 64), kStageBytes = kGBytes + kWBytes;
  static constexpr int kPipeBytes = STAGES * kStageBytes + ws_ring_bytes<STAGES, kWords>();
  static constexpr int kOutBytes = BM * (BK + 8) * 2;  // the dx tile (dx_epilogue's LoRA staging fits inside)
  static_assert(BM * kSu * 4 + 16 * kAs * 2 <= kOutBytes, "the LoRA staging fits the output tile");
  static constexpr int kBody = (kPipeBytes > kOutBytes ? kPipeBytes : kOutBytes) + code_tables_bytes() +
                               ws_barrier_bytes<STAGES>();
  static constexpr int kSmem = kBody + 1024;  // + alignment of the stages to 1024 bytes
};

// The folded LoRA term of the warp-specialized dx (lora_fold_chunks): extra chunk e multiplies gB's
// columns 32e .. 32e + 31 (float32 in the stage's g buffer, 128-byte swizzled rows of 128 bytes as
// TMA writes them; zeros past r and M) by A's rows 32e .. (the stage's W tile, its first 32 rows of
// each atom column; zeros past r) over two k16 steps. The A fragments are s·gB split in registers
// into a T part and a T residual (the epilogue's split: ~16 mantissa bits), one MMA each (RS, the
// W tile N-major as in dx_chunk_mmas). row: this thread's first token of the tile (the warpgroup's,
// its warp's 16, lane / 4), c = lane % 4. With 128 accumulators (MT = 2) two MMAs at a time (a k16
// step's T part and residual), waited for: four A fragments in flight make ptxas serialize every
// wgmma of the kernel (C7512).
template <typename T, int MT>
__device__ __forceinline__ void lora_dx_mmas(float (&acc)[MT][64], const unsigned char* gbt, int row, int c,
                                             float scale, uint32_t w_tile) {
  constexpr bool kWaitEach = MT > 1;
#pragma unroll
  for (int t = 0; t < MT; ++t)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      uint32_t part[2][4];  // T parts, residuals: (row, k), (row + 8, k), (row, k + 8), (row + 8, k + 8); k = 16j + 2c
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int rr = row + 64 * t + 8 * (q & 1), k = 16 * j + 2 * c + 8 * (q >> 1);
        const float2 v = *reinterpret_cast<const float2*>(gbt + rr * 128 + (((k / 4) ^ (rr & 7)) << 4) + (k % 4) * 4);
        const float a = scale * v.x, b = scale * v.y;
        const float ha = to_float(static_cast<T>(a)), hb = to_float(static_cast<T>(b));
        part[0][q] = pack2<T>(ha, hb);
        part[1][q] = pack2<T>(a - ha, b - hb);
      }
      const uint64_t db = sw128_desc_lbo_sbo(w_tile + 16 * 128 * j, kAtomCol, 1024);
      wgmma_fence();  // the A registers just written are read by the MMAs
#pragma unroll
      for (int h = 0; h < 2; ++h) wgmma_m64k16<T, 128, true>(acc[t], part[h], db, 1);
      if (kWaitEach) {
        wgmma_commit();
        wgmma_wait<0>();
        pin(acc[t]);
      }
    }
}

template <typename T, int BM>
__global__ void __launch_bounds__(DxWsTile<BM>::kThreads, 1)
    qlora_dx_ws_kernel(const DxParams p, const __grid_constant__ CUtensorMap gmap,
                       const __grid_constant__ CUtensorMap bmap, const __grid_constant__ CUtensorMap amap) {
#if NF4LORA_HAS_WGMMA
  using C = DxWsTile<BM>;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = align_smem<1024>(smem_raw);
  const int tid = threadIdx.x, wg = tid / 128;
  const int tile = static_cast<int>(blockIdx.x), bm = tile % p.tiles_m, bk = tile / p.tiles_m;
  const int m0 = bm * C::BM, k0 = bk * C::BK;
  const int chunks = p.N / kChunkN;
  // Stage s: the g tile at s·kStageBytes (1024-aligned), its W tile right after.
  const WsShared sh = ws_setup<C::STAGES, C::kThreads>(smem + C::kBody, p.w, 8);  // empty: the consumer warps
  const float *code2 = sh.code2, *codes = sh.codes;
  uint64_t *full = sh.full, *empty = sh.empty;

  if (wg == 0) {
    // Threads 0-63 own the tile's first 64 columns, 64-127 the next: the 8 threads of each 16-byte
    // store phase write 8 different rows, so different swizzled pieces (no bank conflict).
    const int dn = tid % 64, dh = tid / 64;
    const int kq = min(k0 + 64 * dh, p.K - 64);
    ws_produce<C::STAGES, C::kWords, false>(
        p.w, smem + C::STAGES * C::kStageBytes, chunks, tid, full, empty,
        [&](int i) { return (static_cast<int64_t>(i) * kChunkN + dn) * p.K + kq; },
        [&](int64_t b) { return block_q_tail(p.w, b); },
        [&](int i, int s) {
          if (tid != 0) return;
          mbar_arrive_expect_tx(&full[s], C::kGBytes);
          tma_load_2d(smem + s * C::kStageBytes, &gmap, &full[s], i * kChunkN, m0);
        },
        [&](int s, const uint4(&cw)[C::kWords], const RawScales<1>& raw) {
#if NF4LORA_DX_DIAG == 6
          unsigned char* row = smem + s * C::kStageBytes + C::kGBytes + dh * kAtomCol + dn * 128;
#pragma unroll
          for (int w = 0; w < C::kWords; ++w)
#pragma unroll
            for (int j = 0; j < 4; ++j) *reinterpret_cast<uint4*>(row + (((4 * w + j) ^ (dn & 7)) << 4)) = cw[w];
#elif NF4LORA_DX_DIAG != 1
          const Table t = scaled_table<T>(codes, scale_of(p.w, code2, raw, 0));
          unsigned char* row = smem + s * C::kStageBytes + C::kGBytes + dh * kAtomCol + dn * 128;
#pragma unroll
          for (int w = 0; w < C::kWords; ++w) decode32_to_row<T>(cw[w], t, row, dn, 4 * w);
#endif
        },
        [](int) {}, p.lora_chunks,
        [&](int e, int s) {  // the folded LoRA term's chunk e: gB's columns 32e.. (float32) and A's rows, by TMA
          if (tid != 0) return;
          unsigned char* st = smem + s * C::kStageBytes;
          mbar_arrive_expect_tx(&full[s], C::kGBytes + (C::BK / 64) * kLoraRanks * 128);
          tma_load_2d(st, &bmap, &full[s], kLoraRanks * e, m0);
#pragma unroll
          for (int d = 0; d < C::BK / 64; ++d)  // (past K: the last 64 columns, as the decode's)
            tma_load_2d(st + C::kGBytes + d * kAtomCol, &amap, &full[s], min(k0 + 64 * d, p.K - 64), kLoraRanks * e);
        });
  } else {
    const int h = wg - 1;
    float acc[C::MT][64];
#pragma unroll
    for (int t = 0; t < C::MT; ++t)
#pragma unroll
      for (int i = 0; i < 64; ++i) acc[t][i] = 0.f;
    const uint32_t g_addr = smem_addr(smem) + h * (C::BM / 2) * 128, w_addr = smem_addr(smem) + C::kGBytes;
    ws_consume<C::STAGES>(
        chunks, p.lora_chunks, full,
        [&] {
#pragma unroll
          for (int t = 0; t < C::MT; ++t) pin(acc[t]);
        },
        [&](int i, int s) {
          dx_chunk_mmas<T>(acc, g_addr + s * C::kStageBytes, w_addr + s * C::kStageBytes, i == 0);
        },
        [&](int, int s) {
          // (indices from an opaque copy of tid: hoisted out of the loop, they spilled beside the
          // 256-token tile's 128 accumulators)
          int ct = tid;
          asm volatile("" : "+r"(ct));
          lora_dx_mmas<T, C::MT>(acc, smem + s * C::kStageBytes, (ct / 128 - 1) * (C::BM / 2) + (ct / 32 % 4) * 16 +
                                 ct % 32 / 4, ct % 4, p.scale, smem_addr(smem) + C::kGBytes + s * C::kStageBytes);
        },
        [&](int sp) { mbar_arrive(&empty[sp]); });
    dx_epilogue<T, BM>(p, acc, smem, tid - C::kProducers, m0, k0);
  }
#else
  __trap();  // launched only on sm_90 (launch_qlora_dx checks the device)
#endif
}

// qlora_dx_rs_kernel (sm_90a; variant 4, "rs"): the dx as the forward's wgmma_rs — the decode in the
// consumer warpgroups' registers feeding RS wgmmas, W never in shared memory — computing the
// transposed tile dxᵀ (128 k × BM tokens) = Wᵀ·gᵀ: W's columns are the wgmma's M, its rows n the
// reduction, g (TMA, BM tokens × 64 n, as the ws kernel's) the K-major B operand. Producers
// (warpgroup 0, 40 registers by setmaxnreg): thread 0 copies per chunk the g tile and the codes of W
// rows n .. n + 63, columns k0 .. k0 + 127 (64 bytes a row, 64-byte swizzle; past K zeros) by TMA;
// thread t builds the scaled table (code·absmax rounded once: the shipped bits) of table slot t —
// one W row of the chunk × one group of 64 columns (one absmax block at blocksize 64; its raw scale
// through ws_produce's cp.async ring) — into the stage. Consumers (warpgroups 1, 2; 232 registers):
// warpgroup 1 + h owns columns k0 + 64h .. + 63 as the wgmma's M rows, in pairs: thread (warp w,
// lane 4g + c) holds rows 16w + g and + 8 of its m64 tile = columns 64h + 16w + 2g and + 1 — both
// nibbles of byte cb = 32h + 8w + g of each W row (store_out_tile's kPairRows) — and the reduction
// rows 2c, 2c + 1, 2c + 8, 2c + 9 of each k16 step: per chunk 16 code bytes, each nibble looked up
// in its row's table (one 16-bit shared load), pairs packed into the A fragments (the 64-byte
// swizzle of the codes and the tables' slot order make both kinds of load conflict-free); chunk
// i + 1 decoded while chunk i's wgmmas run. The folded LoRA term: extra chunks of gB's 32 ranks
// (float32, the B operand, tf32) and A's (from registers: lora_tf32_mmas). Same W values as the ws
// kernel's, summed in another order.
template <int BM_> struct DxRsTile {
  static constexpr int kProducers = 128, kThreads = kProducers + 256;
  static constexpr int BM = BM_, BK = kDxBK, STAGES = 5;
  // Per stage: the g tile (gB's ranks, float32, for a LoRA chunk), the codes, the tables ([64 rows ×
  // 2 column groups] slots of 32 bytes, rdx_table_slot); A's ranks (two 64-k atoms) there for a LoRA chunk
  static constexpr int kGBytes = BM * 128, kCodeBytes = kChunkN * BK / 2, kTableBytes = kChunkN * (BK / 64) * 32;
  static constexpr int kCodeOffset = kGBytes, kTableOffset = kGBytes + kCodeBytes;
  static constexpr int kStageBytes = kGBytes + kCodeBytes + kTableBytes, kLoraAtom = kLoraRanks * 128;
  static_assert((BK / 64) * kLoraAtom <= kCodeBytes + kTableBytes && kStageBytes % 1024 == 0, "stage layout");
  static constexpr int kPipeBytes = STAGES * kStageBytes + ws_ring_bytes<STAGES, 0>();
  static constexpr int kOutBytes = BM * (BK + 8) * 2;
  static constexpr int kBody = (kPipeBytes > kOutBytes ? kPipeBytes : kOutBytes) + code_tables_bytes() +
                               ws_barrier_bytes<STAGES>();
  static constexpr int kSmem = kBody + 1024;
  static_assert(kSmem <= 232448, "sm_90's opt-in shared memory per block (227 KiB)");
  static_assert(kBody % 16 == 0, "the float code tables after the body are read as float4");
};

// The table slot of W row n (of the chunk) and column group h: slot (2n + h) with its low two bits
// XORed by (n / 2) % 4, so that the 4 rows 2c + e (c = 0 .. 3) a warp's lanes read at once fall in
// 4 different 8-bank groups.
__device__ __forceinline__ int rdx_table_slot(int n, int h) { return (2 * n + h) ^ ((n >> 1) & 3); }

__device__ __forceinline__ uint32_t lds_u8(uint32_t addr) {
  uint32_t v;
  asm volatile("ld.shared.u8 %0, [%1];" : "=r"(v) : "r"(addr));
  return v;
}
__device__ __forceinline__ uint32_t lds_u16(uint32_t addr) {
  uint32_t v;
  asm volatile("ld.shared.u16 %0, [%1];" : "=r"(v) : "r"(addr));
  return v;
}

template <typename T, int BM>
__global__ void __launch_bounds__(DxRsTile<BM>::kThreads, 1)
    qlora_dx_rs_kernel(const DxParams p, const __grid_constant__ CUtensorMap gmap,
                       const __grid_constant__ CUtensorMap cmap, const __grid_constant__ CUtensorMap bmap,
                       const __grid_constant__ CUtensorMap amap) {
#if NF4LORA_HAS_WGMMA
  using C = DxRsTile<BM>;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = align_smem<1024>(smem_raw);
  const int tid = threadIdx.x, wg = tid / 128, lane = tid % 32;
  const int tile = static_cast<int>(blockIdx.x), bm = tile % p.tiles_m, bk = tile / p.tiles_m;
  const int m0 = bm * C::BM, k0 = bk * C::BK;
  const int chunks = p.N / kChunkN;
  // full: the 128 producers (tables) and thread 0's arrival with the TMA bytes; empty: the 8 consumer warps
  const WsShared sh = ws_setup<C::STAGES, C::kThreads>(smem + C::kBody, p.w, 8);
  const float *code2 = sh.code2, *codes = sh.codes;
  uint64_t *full = sh.full, *empty = sh.empty;

  if (wg == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
    // Thread tid builds table slot tid: row tn, column group th (rdx_table_slot inverted), so that a warp's table
    // stores fill 1 KiB contiguously (no bank conflicts) and its 4 lanes of a slot quad fetch two rows' scales of
    // adjacent absmax blocks.
    const int quad = tid >> 2, low = (tid & 3) ^ (quad & 3);
    const int tn = 2 * quad + (low >> 1), th = low & 1;
    const int kq = min(k0 + 64 * th, p.K - 64);  // (past K: the last 64 columns' scale; never stored)
    const int slot = rdx_table_slot(tn, th);  // = tid
    ws_produce<C::STAGES, 0, false>(
        p.w, smem + C::STAGES * C::kStageBytes, chunks, tid, full, empty,
        [&](int i) { return (static_cast<int64_t>(i) * kChunkN + tn) * p.K + kq; },
        [&](int64_t b) { return block_q_tail(p.w, b); },
        [&](int i, int s) {
          if (tid != 0) return;
          unsigned char* st = smem + s * C::kStageBytes;
          mbar_arrive_expect_tx(&full[s], C::kGBytes + C::kCodeBytes);
          tma_load_2d(st, &gmap, &full[s], i * kChunkN, m0);
          tma_load_2d(st + C::kCodeOffset, &cmap, &full[s], k0 / 2, i * kChunkN);
        },
        [&](int s, const auto&, const RawScales<1>& raw) {
          uint32_t t[8];  // (the 16 entries in order: the consumers load one 16-bit entry per code)
          scaled_entries<T>(codes, scale_of(p.w, code2, raw, 0), t);
          uint4* dst = reinterpret_cast<uint4*>(smem + s * C::kStageBytes + C::kTableOffset + slot * 32);
          dst[0] = make_uint4(t[0], t[1], t[2], t[3]);
          dst[1] = make_uint4(t[4], t[5], t[6], t[7]);
        },
        [](int) {}, p.lora_chunks,
        [&](int e, int s) {  // the folded LoRA term's chunk e: gB's columns 32e.. (float32) and A's rows
          if (tid != 0) return;
          unsigned char* st = smem + s * C::kStageBytes;
          mbar_arrive_expect_tx(&full[s], C::kGBytes + (C::BK / 64) * C::kLoraAtom);
          tma_load_2d(st, &bmap, &full[s], kLoraRanks * e, m0);
#pragma unroll
          for (int d = 0; d < C::BK / 64; ++d)  // (past K: the last 64 columns; never stored)
            tma_load_2d(st + C::kCodeOffset + d * C::kLoraAtom, &amap, &full[s], min(k0 + 64 * d, p.K - 64),
                        kLoraRanks * e);
        });
    return;
  }
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
  const int h = wg - 1, w4 = tid / 32 % 4, g = lane / 4, c = lane % 4;
  float acc[BM / 2];  // (zeroed by rs_consume)
  const uint32_t base = smem_addr(smem);
  const uint64_t gdesc0 = sw128_desc(base);
  // This thread's code byte in each W row (64-byte swizzle: 16-byte piece ^= (row / 2) % 4, = c for
  // every row 2c + e + 8d + 16j it reads) and its two table slots' offsets (e = 0, 1), relative to
  // row 16j + 8d of the chunk (rows 2c + e of the k16 step's 16 rows)
  const int cb = 32 * h + 8 * w4 + g;
  const uint32_t code_off = C::kCodeOffset + 128 * c + (((cb >> 4) ^ c) << 4) + (cb & 15);
  const uint32_t tab_off[2] = {static_cast<uint32_t>(C::kTableOffset + 32 * rdx_table_slot(2 * c, h)),
                               static_cast<uint32_t>(C::kTableOffset + 32 * rdx_table_slot(2 * c + 1, h))};
  // Chunk i's A fragments [k16 step][4] (after its stage landed).
  auto decode = [&](int i, uint32_t (&frag)[4][4]) {
    const int s = i % C::STAGES;
    mbar_wait(&full[s], (i / C::STAGES) & 1);
    const uint32_t st = base + s * C::kStageBytes, cbase = st + code_off;
    const uint32_t tb[2] = {st + tab_off[0], st + tab_off[1]};
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int d = 0; d < 2; ++d) {
        uint32_t hi[2], lo[2];  // rows 16j + 8d + 2c + e: (k 2cb, k 2cb + 1)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const uint32_t row = 16 * j + 8 * d + e;  // (+ 2c in the bases)
          const uint32_t b = lds_u8(cbase + 64 * row);
          // (row 2c + row's slot = row 2c + e's + 2·(row - e); tb 32-byte aligned: | = + for the entry's offset)
          hi[e] = lds_u16((((b >> 3) & 0x1Eu) | tb[e]) + 64 * (row - e));
          lo[e] = lds_u16((((b << 1) & 0x1Eu) | tb[e]) + 64 * (row - e));
        }
        frag[j][2 * d] = prmt(hi[0], hi[1], 0x5410u);
        frag[j][2 * d + 1] = prmt(lo[0], lo[1], 0x5410u);
      }
  };
  const int kl = 16 * w4 + 2 * g;  // this thread's first column in a 64-k atom of A (128-byte swizzled rank rows)
  rs_consume<T, BM, C::STAGES>(acc, chunks, p.lora_chunks, full, empty, gdesc0, C::kStageBytes, decode, [&](int s) {
    const T* at = reinterpret_cast<const T*>(smem + s * C::kStageBytes + C::kCodeOffset + h * C::kLoraAtom);
    return [at, kl](int h8, int rank) {  // (s·A's ranks, tf32) · (gB's columns at the stage's start)
      const int k = kl + h8;
      return to_float(at[rank * 64 + (((k >> 3) ^ (rank & 7)) << 3) + (k & 7)]);
    };
  }, p.scale);
  store_out_tile<T, 1, BM / 8, C::BK, C::BM, 256, C::kProducers, true>(
      static_cast<T*>(p.dx), nullptr, p.M, p.K, reinterpret_cast<float(&)[1][BM / 8][4]>(acc), smem, k0, m0,
      h * 64 + w4 * 16, 0);
#else
  __trap();  // launched only on sm_90 (launch_qlora_dx checks the device)
#endif
}

template <typename T, int BM, bool kSplit>
std::string launch_dx(const DxParams& p, unsigned blocks, cudaStream_t stream) {
  using C = DxTile<BM>;
  return launch_kernel(qlora_dx_kernel<T, BM, kSplit>, "qlora_dx_kernel", dim3(blocks), C::kThreads, C::kSmem, stream,
                       kSplit ? p.splits : 1, false, p);
}

// The folded LoRA term's maps of the warp-specialized dx kernels (when p.lora_chunks > 0; else untouched): gB's
// 32-rank columns (float32) for BM tokens and A's 32 ranks × 64 columns, both in the 128-byte swizzle.
template <typename T, int BM>
std::string dx_lora_maps(const DxParams& p, CUtensorMap* bmap, CUtensorMap* amap) {
  if (p.lora_chunks == 0) return "";
  std::string err = matrix_tensor_map<float>(bmap, p.gB, p.M, p.r, kLoraRanks, BM, CU_TENSOR_MAP_SWIZZLE_128B, "gB");
  return err.empty() ? matrix_tensor_map<T>(amap, p.A, p.r, p.K, 64, kLoraRanks, CU_TENSOR_MAP_SWIZZLE_128B, "A") : err;
}

template <typename T, int BM>
std::string launch_dx_ws(const DxParams& p, unsigned blocks, cudaStream_t stream) {
  using C = DxWsTile<BM>;
  CUtensorMap gmap{}, bmap{}, amap{};
  std::string map_err = rows_tensor_map<T>(&gmap, p.g, p.M, p.N, BM, "g");
  if (map_err.empty()) map_err = dx_lora_maps<T, BM>(p, &bmap, &amap);
  if (!map_err.empty()) return map_err;
  return launch_kernel(qlora_dx_ws_kernel<T, BM>, "qlora_dx_ws_kernel", dim3(blocks), C::kThreads, C::kSmem, stream, 0,
                       false, p, gmap, bmap, amap);
}

template <typename T, int BM>
std::string launch_dx_rs(const DxParams& p, unsigned blocks, cudaStream_t stream) {
  using C = DxRsTile<BM>;
  CUtensorMap gmap{}, cmap{}, bmap{}, amap{};
  std::string map_err = rows_tensor_map<T>(&gmap, p.g, p.M, p.N, BM, "g");
  if (map_err.empty())  // the codes, boxes of 64 bytes × 64 rows, 64-byte swizzle
    map_err = matrix_tensor_map<uint8_t>(&cmap, p.w.packed, p.N, p.K / 2, C::BK / 2, kChunkN,
                                         CU_TENSOR_MAP_SWIZZLE_64B, "codes");
  if (map_err.empty()) map_err = dx_lora_maps<T, BM>(p, &bmap, &amap);
  if (!map_err.empty()) return map_err;
  return launch_kernel(qlora_dx_rs_kernel<T, BM>, "qlora_dx_rs_kernel", dim3(blocks), C::kThreads, C::kSmem, stream, 0,
                       false, p, gmap, cmap, bmap, amap);
}

template <typename T>
std::string launch_dx_typed(const DxParams& p, const DxPlan& plan, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(plan.tiles * plan.splits);
  if (plan.rs)
    return plan.block_m == 256 ? launch_dx_rs<T, 256>(p, blocks, stream) : launch_dx_rs<T, 128>(p, blocks, stream);
  if (plan.ws)
    return plan.block_m == 256 ? launch_dx_ws<T, 256>(p, blocks, stream) : launch_dx_ws<T, 128>(p, blocks, stream);
  if (plan.splits > 1) return launch_dx<T, 128, true>(p, blocks, stream);
  return plan.block_m == 256 ? launch_dx<T, 256, false>(p, blocks, stream) : launch_dx<T, 128, false>(p, blocks, stream);
}

}  // namespace

DxPlan plan_qlora_dx(int64_t M, int64_t N, int64_t K, int64_t lora_r, int block_m, int variant) {
  DxPlan plan;
  if (block_m != 0 && block_m != 128 && block_m != 256) {
    plan.error = "block_m must be 0 (choose), 128 or 256, got " + std::to_string(block_m);
    return plan;
  }
  if (variant < 0 || variant > 4) {
    plan.error = "variant must be 0 (auto), 1 (ss), 2 (ws), 3 (ws, LoRA in the epilogue) or 4 (rs), got " +
                 std::to_string(variant);
    return plan;
  }
  if (M < 1 || N < kChunkN || K < 64 || N % kChunkN || K % 64) {
    plan.error = "need M >= 1 and N, K positive multiples of 64";
    return plan;
  }
  if (M >= (int64_t{1} << 30) || N >= (int64_t{1} << 30) || K >= (int64_t{1} << 30)) {
    plan.error = "shape too large";
    return plan;
  }
  int major = 0, sm_count = 1;
  current_device(&major, &sm_count);
  const int64_t tiles_k = (K + kDxBK - 1) / kDxBK;
  plan.block_m = block_m > 0 ? block_m : wgmma_rows_per_block(M, tiles_k, sm_count);
  plan.tiles_m = static_cast<int>((M + plan.block_m - 1) / plan.block_m);
  plan.tiles = plan.tiles_m * tiles_k;
  // The reduction split over blocks when the 128-token tiles leave SMs idle (one wave at most).
  const int64_t chunks = N / kChunkN;
  plan.splits = 1;
  if ((variant == 0 || variant == 1) && plan.block_m == 128 && plan.tiles < sm_count)
    plan.splits = split_k_slices(plan.tiles, chunks, sm_count, [](int s) {
      return resident_clusters<qlora_dx_kernel<__nv_bfloat16, 128, true>>(DxTile<128>::kThreads, DxTile<128>::kSmem, s);
    });
  // The warp-specialized kernel wherever the reduction is not split (auto), or when asked (never split).
  plan.ws = variant >= 2 || (variant == 0 && plan.splits == 1);
  // The rs kernel where the auto plan takes a warp-specialized one (0.90-0.95x the ws kernel's time at M 256-8192,
  // bench/results/h200/s27), or when asked — but not where it cannot fold the call's LoRA term (below).
  plan.rs = variant == 4 || (variant == 0 && plan.ws);
  if (plan.rs && lora_r > 0 && lora_fold_chunks(lora_r) == 0) {  // (the rs kernel has no epilogue LoRA term)
    if (variant == 4) {
      plan.error = "the rs dx kernel folds the LoRA term into its reduction: it needs r % 8 == 0, got r = " +
                   std::to_string(lora_r);
      return plan;
    }
    plan.rs = false;  // auto: the ws kernel, its epilogue adding the term
  }
  return plan;
}

std::string launch_qlora_dx(uintptr_t dx, uintptr_t g, uintptr_t gB, uintptr_t A, int dtype, uintptr_t packed,
                            uintptr_t absmax,
                            uintptr_t quant_map, uintptr_t nested_absmax, uintptr_t nested_quant_map,
                            float nested_offset, int blocksize, int64_t M, int64_t N, int64_t K, int64_t r,
                            float scale, int block_m, int variant, uintptr_t stream) {
  const int lg = log2_exact(blocksize);
  if (lg < 6 || lg > 12) return "blocksize must be a power of two in [64, 4096]";
  if (K % blocksize) return "K must be a multiple of the blocksize";
  if (r < 1 || r > (1 << 16)) return "need 1 <= r <= 65536";
  const DxPlan plan = plan_qlora_dx(M, N, K, gB != 0 ? r : 0, block_m, variant);
  if (!plan.error.empty()) return plan.error;
  for (uintptr_t ptr : {dx, g, packed})
    if (ptr % 16 != 0) return "dx, g and packed must be 16-byte aligned";
  int major = 0, sm_count = 1;
  current_device(&major, &sm_count);
  if (major != 9) return "the CUDA dx kernel needs an sm_90 GPU (wgmma)";
  DxParams p{};
  p.dx = reinterpret_cast<void*>(dx);
  p.g = reinterpret_cast<const void*>(g);
  p.gB = reinterpret_cast<const float*>(gB);
  p.A = reinterpret_cast<const void*>(A);
  p.w = make_state(packed, absmax, quant_map, nested_absmax, nested_quant_map, nested_offset, N * K, lg);
  p.M = static_cast<int>(M);
  p.N = static_cast<int>(N);
  p.K = static_cast<int>(K);
  p.r = static_cast<int>(r);
  p.tiles_m = plan.tiles_m;
  p.tiles = static_cast<int>(plan.tiles);
  p.splits = plan.splits;
  p.scale = scale;
  p.a_vec = A % 16 == 0;
  p.gb_vec = r % 4 == 0 && gB % 16 == 0;
  p.lora_chunks = plan.ws && gB != 0 && variant != 3 ? static_cast<int>(lora_fold_chunks(r)) : 0;
  if (p.lora_chunks > 0 && (A % 16 != 0 || gB % 16 != 0))
    return "the ws kernel's folded LoRA term needs A and gB 16-byte aligned";
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  if (dtype == 2) return launch_dx_typed<__nv_bfloat16>(p, plan, st);
  if (dtype == 1) return launch_dx_typed<__half>(p, plan, st);
  return "dtype must be 1 (float16) or 2 (bfloat16)";
}

}  // namespace nf4lora
