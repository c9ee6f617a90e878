// nf4lora::qlora_linear_backward's dx on sm_90a:  dx (M, K) = g·W (+ s·gB·A),  gB = g·B (M, r) fp32
//
// A block owns BM (128 or 256) tokens × 128 columns k of dx and walks the reduction over n (W's
// rows) in chunks of 64. Per chunk, a STAGES-deep cp.async pipeline brings the g tile (BM tokens ×
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
// Epilogue: the LoRA term s·gB·A as mma.sync steps (s·gB split into a T part and a T residual),
// then dx staged through shared memory for 16-byte stores.
#include <cuda_runtime.h>

#include <algorithm>

#include "launchers.h"
#include "nf4.cuh"
#include "nf4_mma.cuh"
#include "wgmma.cuh"

namespace nf4lora {
namespace {

constexpr int kChunkN = 64;  // reduction rows of W per stage
constexpr int kDxBK = 128;   // dx columns per block

struct DxParams {
  void* dx;          // (M, K) T
  const void* g;     // (M, N) T, contiguous, 16-byte aligned
  const float* gB;   // (M, r) float32 = g·B, or nullptr: no LoRA term in dx
  const void* A;     // (r, K) T
  NF4State w;
  int M, N, K, r, tiles_m, tiles, splits;
  float scale;
};

template <int BM_> struct DxTile {
  static constexpr int kThreads = 256, BM = BM_, BK = kDxBK, MT = BM / 128;  // MT: m64 tiles per warpgroup
  static constexpr int STAGES = 4;
  static constexpr int kGBytes = BM * 128;                // g tile of one stage (64 n × 2 bytes a row)
  static constexpr int kAtomCol = kChunkN * 128;          // one 64-k column of the decoded W tile
  static constexpr int kWBytes = kAtomCol * (BK / 64);    // decoded W tile (bf16 / fp16)
  static constexpr int kPipeBytes = STAGES * kGBytes + 3 * kWBytes;
  static constexpr int kOutBytes = BM * (BK + 8) * 2;
  static constexpr int kTableBytes = (256 + 16) * 4;
  static constexpr int kBody = (kPipeBytes > kOutBytes ? kPipeBytes : kOutBytes) + kTableBytes;
  static constexpr int kSmem = kBody + 1024;
};

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

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
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

  if (tid < 16) codes[tid] = p.w.quant_map[tid];
  if (p.w.nested_absmax != nullptr)
    for (int i = tid; i < 256; i += C::kThreads) code2[i] = p.w.nested_quant_map[i];

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
                       ws + (i % 3) * C::kWBytes + (dq / 2) * C::kAtomCol + dn * 128, dn, (dq % 2) * 4);
  };

  uint4 cw;
  Raw raw;
  ss_prologue<C::STAGES>(chunks, load_g, load_codes, decode, cw, raw);

  // Descriptors: A = 64 tokens of this warpgroup's BM / 2 in the g tile (K-major; a k16 step =
  // 32 bytes), B = the W tile (N-major, 128-byte swizzle: leading offset = the next 64 k (one atom
  // column, kAtomCol bytes), stride offset = the next 8 n rows (1024 bytes); a k16 step of the
  // reduction = 16 n rows = 2048 bytes). Both layouts verified bit for bit by the identity test.
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
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const uint64_t db = sw128_desc_lbo_sbo(w_addr + (i % 3) * C::kWBytes + 16 * 128 * s, C::kAtomCol, 1024);
#pragma unroll
      for (int t = 0; t < MT; ++t) {
        const uint64_t da = sw128_desc_lbo_sbo(g_addr + (i % C::STAGES) * C::kGBytes + t * 64 * 128 + 32 * s, 16, 1024);
        wgmma_ss_m64k16<T, 128, true>(acc[t], da, db, i > 0 || s > 0);
      }
    }
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

  // Accumulator layout (m64nNk16 D, per warp 16 tokens): acc[t][4·jt + e] is token
  // trow + 64·t + g + 8·(e / 2), column k0 + 8·jt + 2c + e % 2.
  const int M = p.M, K = p.K, r = p.r;
  const int trow = wg * (C::BM / 2) + (warp % 4) * 16;
  if constexpr (kSplit) {
    // The splits blocks of this tile are one cluster: rank 0 sums the slices' tiles in slice order
    // (deterministic) through distributed shared memory and runs the epilogue.
    static_assert(MT == 1 && 64 * C::kThreads * 4 <= C::kBody - C::kTableBytes, "partial tile fits the pipeline");
    __syncthreads();  // both warpgroups' MMAs done: the pipeline buffers are free
    if (!cluster_sum_to_rank0<C::kThreads>(acc[0], smem)) return;
  }
  __syncthreads();  // the pipeline buffers become the output tile

  // LoRA: acc += (s·gB)·A over r in steps of 16 (mma.sync on the accumulator fragments: per 8
  // columns, rows g and g + 8 of this warp's 16 tokens — the m16n8 C layout).
  if (p.gB != nullptr) {
    const T* Am = static_cast<const T*>(p.A);
    for (int kr = 2 * c; kr < r + 2 * c; kr += 16) {
      uint32_t hi[MT][4], lo[MT][4];
#pragma unroll
      for (int t = 0; t < MT; ++t) {
        float v[2][4];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int m = m0 + trow + 64 * t + g + 8 * h;
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int j = kr + (e & 1) + 8 * (e >> 1);
            v[h][e] = m < M && j < r ? p.scale * p.gB[static_cast<int64_t>(m) * r + j] : 0.f;
          }
        }
#pragma unroll
        for (int q = 0; q < 4; ++q) {  // fragment q: rows g (q even) / g + 8 (q odd), ranks kr (q < 2) / kr + 8
          const float a = v[q & 1][2 * (q >> 1)], b = v[q & 1][2 * (q >> 1) + 1];
          const float ha = to_float(static_cast<T>(a)), hb = to_float(static_cast<T>(b));
          hi[t][q] = pack2<T>(ha, hb);
          lo[t][q] = pack2<T>(a - ha, b - hb);
        }
      }
#pragma unroll
      for (int jt = 0; jt < 16; ++jt) {
        const int k = k0 + 8 * jt + g;
        float bv[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int j = kr + (e & 1) + 8 * (e >> 1);
          bv[e] = k < K && j < r ? to_float(Am[static_cast<int64_t>(j) * K + k]) : 0.f;
        }
        const uint32_t b0 = pack2<T>(bv[0], bv[1]), b1 = pack2<T>(bv[2], bv[3]);
#pragma unroll
        for (int t = 0; t < MT; ++t) {
          float(&d)[4] = *reinterpret_cast<float(*)[4]>(acc[t] + 4 * jt);
          mma16816<T>(d, hi[t], b0, b1);
          mma16816<T>(d, lo[t], b0, b1);
        }
      }
    }
  }

  // dx tile staged as [BM][BK + 8] (rows = tokens), then 16-byte stores.
  T* out = reinterpret_cast<T*>(smem);
#pragma unroll
  for (int t = 0; t < MT; ++t)
#pragma unroll
    for (int jt = 0; jt < 16; ++jt)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        *reinterpret_cast<uint32_t*>(out + (trow + 64 * t + g + 8 * h) * (C::BK + 8) + 8 * jt + 2 * c) =
            pack2<T>(acc[t][4 * jt + 2 * h], acc[t][4 * jt + 2 * h + 1]);
  __syncthreads();
  T* dx = static_cast<T*>(p.dx);
  constexpr int kVecs = C::BK / 8;
  for (int idx = tid; idx < C::BM * kVecs; idx += C::kThreads) {
    const int row = idx / kVecs, col = idx % kVecs * 8;
    const int m = m0 + row, k = k0 + col;
    if (m < M && k < K)
      *reinterpret_cast<uint4*>(dx + static_cast<int64_t>(m) * K + k) =
          *reinterpret_cast<const uint4*>(out + row * (C::BK + 8) + col);
  }
#else
  __trap();  // launched only on sm_90 (launch_qlora_dx checks the device)
#endif
}

template <typename T, int BM, bool kSplit>
std::string launch_dx(const DxParams& p, unsigned blocks, cudaStream_t stream) {
  using C = DxTile<BM>;
  cudaError_t err = cudaFuncSetAttribute(qlora_dx_kernel<T, BM, kSplit>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         C::kSmem);
  if (err != cudaSuccess) return std::string("qlora_dx_kernel attributes: ") + cudaGetErrorString(err);
  err = launch_in_clusters(qlora_dx_kernel<T, BM, kSplit>, blocks, C::kThreads, C::kSmem, kSplit ? p.splits : 1, stream,
                           p);
  return err == cudaSuccess ? "" : std::string("qlora_dx_kernel: ") + cudaGetErrorString(err);
}

template <typename T>
std::string launch_dx_typed(const DxParams& p, const DxPlan& plan, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(plan.tiles * plan.splits);
  if (plan.splits > 1) return launch_dx<T, 128, true>(p, blocks, stream);
  return plan.block_m == 256 ? launch_dx<T, 256, false>(p, blocks, stream) : launch_dx<T, 128, false>(p, blocks, stream);
}

}  // namespace

DxPlan plan_qlora_dx(int64_t M, int64_t N, int64_t K, int block_m) {
  DxPlan plan;
  if (block_m != 0 && block_m != 128 && block_m != 256) {
    plan.error = "block_m must be 0 (choose), 128 or 256, got " + std::to_string(block_m);
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
  if (plan.block_m == 128 && plan.tiles < sm_count)
    plan.splits = split_k_slices(plan.tiles, chunks, sm_count, [](int s) {
      return resident_clusters<qlora_dx_kernel<__nv_bfloat16, 128, true>>(DxTile<128>::kThreads, DxTile<128>::kSmem, s);
    });
  return plan;
}

std::string launch_qlora_dx(uintptr_t dx, uintptr_t g, uintptr_t gB, uintptr_t A, int dtype, uintptr_t packed,
                            uintptr_t absmax,
                            uintptr_t quant_map, uintptr_t nested_absmax, uintptr_t nested_quant_map,
                            float nested_offset, int blocksize, int64_t M, int64_t N, int64_t K, int64_t r,
                            float scale, int block_m, uintptr_t stream) {
  const int lg = log2_exact(blocksize);
  if (lg < 6 || lg > 12) return "blocksize must be a power of two in [64, 4096]";
  if (K % blocksize) return "K must be a multiple of the blocksize";
  if (r < 1 || r > (1 << 16)) return "need 1 <= r <= 65536";
  const DxPlan plan = plan_qlora_dx(M, N, K, block_m);
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
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  if (dtype == 2) return launch_dx_typed<__nv_bfloat16>(p, plan, st);
  if (dtype == 1) return launch_dx_typed<__half>(p, plan, st);
  return "dtype must be 1 (float16) or 2 (bfloat16)";
}

}  // namespace nf4lora
