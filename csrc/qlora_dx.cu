// DRAFT (branch wip-cuda-dx): built and bound, never run on a GPU. First GPU step: the identity-
// matrix test of tests/test_cuda_dx.py checks the N-major descriptor (swap LBO and SBO if wrong).
//
// nf4lora::qlora_linear_backward's dx on sm_90a:  dx (M, K) = g·W (+ s·gB·A),  gB = g·B (M, r) fp32
//
// A block owns 128 tokens × 128 columns k of dx and walks the reduction over n (W's rows) in
// chunks of 64. Per chunk, a STAGES-deep cp.async pipeline brings the g tile (128 tokens × 64 n,
// K-major, 128-byte swizzle: wgmma's A operand by descriptor) and the packed codes of W rows
// n .. n + 63, columns k .. k + 127 (64 bytes a row). All 256 threads decode the codes into a
// 64 × 128 bf16 tile in shared memory in W's stored orientation (one 128-byte line = 64 k of one
// n row, 16-byte pieces XOR-swizzled by n % 8): wgmma's B operand, N-major (imm-trans-b = 1).
// The decode of chunk c + 1 writes the other W buffer while the tensor cores read chunk c (SS
// wgmma: no register operand to protect). The absmax is folded into the decode table (one
// rounding, as the forward). Needs N and K multiples of 64 (the dispatcher keeps Triton otherwise).
//
// Epilogue: the LoRA term s·gB·A as mma.sync steps (s·gB split into a T part and a T residual),
// then dx staged through shared memory for 16-byte stores.
#include <cuda_runtime.h>

#include <cstdlib>
#include <utility>

#include "launchers.h"
#include "nf4.cuh"
#include "nf4_mma.cuh"
#include "wgmma.cuh"

namespace nf4lora {
namespace {

constexpr int kChunkN = 64;  // reduction rows of W per stage

struct DxParams {
  void* dx;          // (M, K) T
  const void* g;     // (M, N) T, contiguous, 16-byte aligned
  const float* gB;   // (M, r) float32 = g·B, or nullptr: no LoRA term in dx
  const void* A;     // (r, K) T
  NF4State w;
  int M, N, K, r, tiles_m, tiles_k;
  float scale;
  uint32_t w_lbo, w_sbo;  // the W tile's descriptor offsets (DIAGNOSTIC swap: NF4LORA_DX_DESC_SWAP=1)
};

struct DxTile {
  static constexpr int kThreads = 256, BM = 128, BK = 128, STAGES = 4;
  static constexpr int kGBytes = BM * 128;                // g tile of one stage (64 n × 2 bytes a row)
  static constexpr int kCBytes = kChunkN * BK / 2;        // packed codes of one stage
  static constexpr int kAtomCol = kChunkN * 128;          // one 64-k column of the decoded W tile
  static constexpr int kWBytes = kAtomCol * (BK / 64);    // decoded W tile (bf16 / fp16)
  static constexpr int kPipeBytes = STAGES * (kGBytes + kCBytes) + 2 * kWBytes;
  static constexpr int kOutBytes = BM * (BK + 8) * 2;
  static constexpr int kTableBytes = (256 + 16) * 4;
  static constexpr int kBody = (kPipeBytes > kOutBytes ? kPipeBytes : kOutBytes) + kTableBytes;
  static constexpr int kSmem = kBody + 1024;
};

template <typename T>
__global__ void __launch_bounds__(DxTile::kThreads, 1) qlora_dx_kernel(DxParams p) {
#if NF4LORA_HAS_WGMMA
  using C = DxTile;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t raw_addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  unsigned char* smem = smem_raw + ((1024u - (raw_addr & 1023u)) & 1023u);
  unsigned char* gs = smem;                                          // [STAGES][BM][128], swizzled
  unsigned char* ws = smem + C::STAGES * C::kGBytes;                 // [2][BK / 64][64 n][128], swizzled
  unsigned char* cs = ws + 2 * C::kWBytes;                           // [STAGES][64 n][64 bytes]
  float* code2 = reinterpret_cast<float*>(smem + C::kBody - C::kTableBytes);
  float* codes = code2 + 256;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
  const int bm = static_cast<int>(blockIdx.x) % p.tiles_m, bk = static_cast<int>(blockIdx.x) / p.tiles_m;
  const int m0 = bm * C::BM, k0 = bk * C::BK;
  const int chunks = p.N / kChunkN;
  const T* gm = static_cast<const T*>(p.g);

  if (tid < 16) codes[tid] = p.w.quant_map[tid];
  if (p.w.nested_absmax != nullptr)
    for (int i = tid; i < 256; i += C::kThreads) code2[i] = p.w.nested_quant_map[i];

  auto load = [&](int ch) {
    const int st = ch % C::STAGES;
    unsigned char* gdst = gs + st * C::kGBytes;
#pragma unroll
    for (int i = 0; i < C::BM * 8 / C::kThreads; ++i) {
      const int idx = tid + i * C::kThreads, row = idx / 8, piece = idx % 8;
      const int m = m0 + row;
      const bool ok = m < p.M;
      cp_async16(gdst + row * 128 + ((piece ^ (row & 7)) << 4),
                 gm + static_cast<int64_t>(ok ? m : m0) * p.N + ch * kChunkN + piece * 8, ok);
    }
    unsigned char* cdst = cs + st * C::kCBytes;
#pragma unroll
    for (int i = 0; i < kChunkN * (C::BK / 32) / C::kThreads; ++i) {
      const int idx = tid + i * C::kThreads, row = idx / (C::BK / 32), piece = idx % (C::BK / 32);
      const int k = k0 + piece * 32;  // first k of the 16 code bytes
      const bool ok = k < p.K;        // columns past K: zeros (never stored)
      const int64_t n = static_cast<int64_t>(ch) * kChunkN + row;
      cp_async16(cdst + row * (C::BK / 2) + piece * 16, p.w.packed + (n * p.K + (ok ? k : 0)) / 2, ok);
    }
  };

  // Decode: thread t owns W row n = t / 4 of the chunk and 32 columns k = 32·(t % 4) of the tile.
  const int dn = tid / 4, dq = tid % 4;
  using Raw = RawScales<1>;
  auto load_raw = [&](int ch, Raw& r) {
    const int64_t e = (static_cast<int64_t>(ch) * kChunkN + dn) * p.K + min(k0 + 32 * dq, p.K - 1);
    const int64_t b = e >> p.w.blocksize_log2;
    if (p.w.nested_absmax != nullptr) {
      r.q[0] = __ldg(static_cast<const uint8_t*>(p.w.absmax) + b);
      r.a2[0] = __ldg(p.w.nested_absmax + (b >> kNestedBlockLog2));
    } else {
      r.q[0] = __ldg(static_cast<const uint32_t*>(p.w.absmax) + b);
      r.a2[0] = 0.f;
    }
  };
  auto decode = [&](int ch, const Raw& raw) {
    const uint4 cw = *reinterpret_cast<const uint4*>(cs + (ch % C::STAGES) * C::kCBytes + dn * (C::BK / 2) + dq * 16);
    const Table t = scaled_table<T>(codes, scale_of(p.w, code2, raw, 0));
    uint32_t d[16];
    decode4(cw.x, t, d);
    decode4(cw.y, t, d + 4);
    decode4(cw.z, t, d + 8);
    decode4(cw.w, t, d + 12);
    unsigned char* wdst = ws + (ch & 1) * C::kWBytes + (dq / 2) * C::kAtomCol + dn * 128;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int piece = (dq % 2) * 4 + i;
      *reinterpret_cast<uint4*>(wdst + ((piece ^ (dn & 7)) << 4)) =
          make_uint4(d[4 * i], d[4 * i + 1], d[4 * i + 2], d[4 * i + 3]);
    }
  };

#pragma unroll
  for (int s = 0; s < C::STAGES - 1; ++s) {
    if (s < chunks) load(s);
    cp_async_commit();
  }
  Raw raw_cur, raw_next;
  load_raw(0, raw_cur);
  if (chunks > 1) load_raw(1, raw_next);
  cp_async_wait<C::STAGES - 2>();
  __syncthreads();
  decode(0, raw_cur);
  fence_proxy_async();
  __syncthreads();

  // Descriptors: A = this warpgroup's 64 tokens of the g tile (K-major), B = the W tile (N-major,
  // 128-byte swizzle: leading offset = the next 64 k (one atom column, kAtomCol bytes), stride
  // offset = the next 8 n rows (1024 bytes); a k16 step of the reduction = 16 n rows = 2048 bytes).
  const int wg = warp / 4;
  const uint32_t g_addr = static_cast<uint32_t>(__cvta_generic_to_shared(gs)) + wg * 64 * 128;
  const uint32_t w_addr = static_cast<uint32_t>(__cvta_generic_to_shared(ws));
  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.f;

  for (int ch = 0; ch < chunks; ++ch) {
    wgmma_fence();
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const uint64_t da = sw128_desc_lbo_sbo(g_addr + (ch % C::STAGES) * C::kGBytes + 32 * s, 16, 1024);
      const uint64_t db = sw128_desc_lbo_sbo(w_addr + (ch & 1) * C::kWBytes + 16 * 128 * s, p.w_lbo, p.w_sbo);
      wgmma_ss_m64n128k16_tb<T>(acc, da, db, ch > 0 || s > 0);
    }
    wgmma_commit();
    cp_async_wait<C::STAGES - 3>();  // chunk ch + 1 landed (this thread's copies)
    __syncthreads();                 // ... everyone's; every warpgroup finished chunk ch - 1
    if (ch + C::STAGES - 1 < chunks) load(ch + C::STAGES - 1);
    cp_async_commit();
    if (ch + 1 < chunks) {
      raw_cur = raw_next;
      decode(ch + 1, raw_cur);
      if (ch + 2 < chunks) load_raw(ch + 2, raw_next);
    }
    fence_proxy_async();  // the decoded tile, written by the generic proxy, read by the tensor cores
    wgmma_wait_all();
    pin(acc);
    __syncthreads();  // the next W tile is complete before anyone issues its MMAs
  }
  cp_async_wait<0>();
  __syncthreads();

  // LoRA: acc += (s·gB)·A over r in steps of 16 (mma.sync on the accumulator fragments: per 8
  // columns j, rows g and g + 8 of this warp's 16 tokens — the m16n8 C layout).
  const int M = p.M, K = p.K, r = p.r;
  const int trow = warp * 16;  // this warp's tokens in the tile
  if (p.gB != nullptr) {
    const T* Am = static_cast<const T*>(p.A);
    for (int kr = 2 * c; kr < r + 2 * c; kr += 16) {
      float v[2][4];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int m = m0 + trow + g + 8 * h;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int j = kr + (e & 1) + 8 * (e >> 1);
          v[h][e] = m < M && j < r ? p.scale * p.gB[static_cast<int64_t>(m) * r + j] : 0.f;
        }
      }
      uint32_t hi[4], lo[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) {  // fragment q: rows g (q even) / g + 8 (q odd), ranks kr (q < 2) / kr + 8
        const float a = v[q & 1][2 * (q >> 1)], b = v[q & 1][2 * (q >> 1) + 1];
        const float ha = to_float(static_cast<T>(a)), hb = to_float(static_cast<T>(b));
        hi[q] = pack2<T>(ha, hb);
        lo[q] = pack2<T>(a - ha, b - hb);
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
        float(&d)[4] = *reinterpret_cast<float(*)[4]>(acc + 4 * jt);
        mma16816<T>(d, hi, b0, b1);
        mma16816<T>(d, lo, b0, b1);
      }
    }
  }

  // dx tile staged as [BM][BK + 8] (rows = tokens), then 16-byte stores.
  T* out = reinterpret_cast<T*>(smem);
#pragma unroll
  for (int jt = 0; jt < 16; ++jt)
#pragma unroll
    for (int h = 0; h < 2; ++h)
      *reinterpret_cast<uint32_t*>(out + (trow + g + 8 * h) * (C::BK + 8) + 8 * jt + 2 * c) =
          pack2<T>(acc[4 * jt + 2 * h], acc[4 * jt + 2 * h + 1]);
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
  __trap();
#endif
}

}  // namespace

std::string launch_qlora_dx(uintptr_t dx, uintptr_t g, uintptr_t gB, uintptr_t A, int dtype, uintptr_t packed,
                            uintptr_t absmax, uintptr_t quant_map, uintptr_t nested_absmax,
                            uintptr_t nested_quant_map, float nested_offset, int blocksize, int64_t M, int64_t N,
                            int64_t K, int64_t r, float scale, uintptr_t stream) {
  const int lg = log2_exact(blocksize);
  if (lg < 6 || lg > 12) return "blocksize must be a power of two in [64, 4096]";
  if (M < 1 || N < kChunkN || K < 64 || N % kChunkN || K % 64 || K % blocksize)
    return "need M >= 1, N and K multiples of 64, K a multiple of the blocksize";
  for (uintptr_t ptr : {dx, g, packed})
    if (ptr % 16 != 0) return "dx, g and packed must be 16-byte aligned";
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) == cudaSuccess) cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  if (major != 9) return "the CUDA dx kernel needs an sm_90 GPU (wgmma)";
  using C = DxTile;
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
  p.tiles_m = static_cast<int>((M + C::BM - 1) / C::BM);
  p.tiles_k = static_cast<int>((K + C::BK - 1) / C::BK);
  p.scale = scale;
  p.w_lbo = C::kAtomCol;
  p.w_sbo = 1024;
  if (const char* e = std::getenv("NF4LORA_DX_DESC_SWAP"); e != nullptr && e[0] == '1') std::swap(p.w_lbo, p.w_sbo);
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  const unsigned blocks = static_cast<unsigned>(p.tiles_m) * p.tiles_k;
  cudaError_t err;
  if (dtype == 2) {
    err = cudaFuncSetAttribute(qlora_dx_kernel<__nv_bfloat16>, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem);
    if (err == cudaSuccess) qlora_dx_kernel<__nv_bfloat16><<<blocks, C::kThreads, C::kSmem, st>>>(p);
  } else if (dtype == 1) {
    err = cudaFuncSetAttribute(qlora_dx_kernel<__half>, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem);
    if (err == cudaSuccess) qlora_dx_kernel<__half><<<blocks, C::kThreads, C::kSmem, st>>>(p);
  } else {
    return "dtype must be 1 (float16) or 2 (bfloat16)";
  }
  if (err == cudaSuccess) err = cudaGetLastError();
  return err == cudaSuccess ? "" : std::string("qlora_dx_kernel: ") + cudaGetErrorString(err);
}

}  // namespace nf4lora
