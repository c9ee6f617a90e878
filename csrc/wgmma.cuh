// wgmma helpers for the sm_90a kernels of csrc/ (qlora_mma.cu, qlora_dx.cu): the asm of
// wgmma.mma_async with A in registers (RS) or in shared memory (SS), fences, shared-memory
// descriptors, and the per-row scaled NF4 decode table. Everything compiles to nothing (or a
// trap in the kernels) off sm_90a, where the launchers never run these kernels.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "launch.cuh"
#include "nf4_mma.cuh"

namespace nf4lora {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define NF4LORA_HAS_WGMMA 1
#else
#define NF4LORA_HAS_WGMMA 0
#endif


// wgmma asm operand lists: the accumulator registers (64 for N = 128, 128 for N = 256) as the
// instruction's first operand and as "+f" constraints.
#define NF4LORA_ACC64_REGS "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}"
#define NF4LORA_ACC128_REGS "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127}"
#define NF4LORA_ACC64_OUT "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
#define NF4LORA_ACC128_OUT "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])

// RS: A (64 × k) from 4 registers, B (k × N, K-major) by descriptor. NACC accumulators; operand
// NACC .. NACC + 3 = a, NACC + 4 = descriptor, NACC + 5 = scale-d (NACC: 64 or 128, pasted). TAIL:
// the immediates after scale-a and scale-b (16-bit types: ", 0", B not transposed; tf32 takes none).
#define NF4LORA_WGMMA_RS_ASM(SHAPE, TYPE, NACC, A0, DESC, PRED, TAIL) \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " PRED ", 0;\n" \
               "wgmma.mma_async.sync.aligned." SHAPE ".f32." TYPE "." TYPE " " NF4LORA_ACC##NACC##_REGS ", " A0 ", " DESC \
               ", p, 1, 1" TAIL ";\n}\n" \
               : NF4LORA_ACC##NACC##_OUT \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(scale_d))

// d (64 × N fp32, N / 2 registers) += a (64 × 16 from registers; per warp the m16n8k16 A layout)
// · b (16 × N, descriptor; N-major when kTransB, else K-major).
template <typename T, int N, bool kTransB = false>
__device__ __forceinline__ void wgmma_m64k16(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc, int scale_d) {
  static_assert(N == 128 || N == 256, "N = 128 or 256");
#if NF4LORA_HAS_WGMMA
#define NF4LORA_RS(SHAPE, TYPE, NACC, A0, DESC, PRED)                 \
  if constexpr (kTransB) {                                            \
    NF4LORA_WGMMA_RS_ASM(SHAPE, TYPE, NACC, A0, DESC, PRED, ", 1");   \
  } else {                                                            \
    NF4LORA_WGMMA_RS_ASM(SHAPE, TYPE, NACC, A0, DESC, PRED, ", 0");   \
  }
  constexpr bool f16 = std::is_same<T, __half>::value;
  if constexpr (N == 128 && f16) {
    NF4LORA_RS("m64n128k16", "f16", 64, "{%64,%65,%66,%67}", "%68", "%69")
  } else if constexpr (N == 128) {
    NF4LORA_RS("m64n128k16", "bf16", 64, "{%64,%65,%66,%67}", "%68", "%69")
  } else if constexpr (f16) {
    NF4LORA_RS("m64n256k16", "f16", 128, "{%128,%129,%130,%131}", "%132", "%133")
  } else {
    NF4LORA_RS("m64n256k16", "bf16", 128, "{%128,%129,%130,%131}", "%132", "%133")
  }
#undef NF4LORA_RS
#endif
}

// d (64 × N fp32) += a (64 × 8 tf32 from registers) · b (8 × N tf32, K-major, descriptor). Warp w of
// the warpgroup, lane l: a = (row 16w + l / 4, k l % 4), (row + 8, k), (row, k + 4), (row + 8, k + 4).
// A k8 step of a 128-byte swizzled fp32 operand is 32 bytes, as a k16 step of a 16-bit one.
template <int N>
__device__ __forceinline__ void wgmma_tf32_m64k8(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc,
                                                 int scale_d) {
  static_assert(N == 128 || N == 256, "N = 128 or 256");
#if NF4LORA_HAS_WGMMA
  if constexpr (N == 128) {
    NF4LORA_WGMMA_RS_ASM("m64n128k8", "tf32", 64, "{%64,%65,%66,%67}", "%68", "%69", "");
  } else {
    NF4LORA_WGMMA_RS_ASM("m64n256k8", "tf32", 128, "{%128,%129,%130,%131}", "%132", "%133", "");
  }
#endif
}
#undef NF4LORA_WGMMA_RS_ASM

// v rounded to tf32 (to nearest, ties away; the result's low 13 bits zero).
__device__ __forceinline__ uint32_t to_tf32(float v) {
  uint32_t t;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(t) : "f"(v));
  return t;
}

__device__ __forceinline__ void wgmma_fence() {
#if NF4LORA_HAS_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if NF4LORA_HAS_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
// Wait until at most N of this warpgroup's committed wgmma groups are pending.
template <int N> __device__ __forceinline__ void wgmma_wait() {
#if NF4LORA_HAS_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
__device__ __forceinline__ void fence_proxy_async() {
#if NF4LORA_HAS_WGMMA
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// Registers an in-flight wgmma reads or writes: pinned (live, unmoved) until this point.
template <int N> __device__ __forceinline__ void pin(uint32_t (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) asm volatile("" : "+r"(r[i][j])::"memory");
}
template <int N> __device__ __forceinline__ void pin(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

// Descriptor of a K-major, 128-byte-swizzled shared-memory operand at addr (1024-byte aligned):
// start >> 4, leading offset (unused by this swizzle) 1, stride between 8-row groups 1024 bytes.
__device__ __forceinline__ uint64_t sw128_desc(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (uint64_t{1} << 16) | (uint64_t{1024 >> 4} << 32) |
         (uint64_t{1} << 62);
}

// The 16 entries T(code[e] · absmax) (one rounding) of one row and chunk in order, entry e in
// half e % 2 of word e / 2; code: the 16 float32 code values in shared memory (16-byte aligned;
// broadcast reads).
template <typename T> __device__ __forceinline__ void scaled_entries(const float* code, float am, uint32_t (&e)[8]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float4 v = *reinterpret_cast<const float4*>(code + 4 * i);
    e[2 * i] = pack2<T>(v.x * am, v.y * am);
    e[2 * i + 1] = pack2<T>(v.z * am, v.w * am);
  }
}

// The same entries as decode4's table (Table: low and high bytes apart).
template <typename T> __device__ __forceinline__ Table scaled_table(const float* code, float am) {
  uint32_t e[8];
  scaled_entries<T>(code, am, e);
  Table t;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    t.lo[i] = prmt(e[2 * i], e[2 * i + 1], 0x6420u);
    t.hi[i] = prmt(e[2 * i], e[2 * i + 1], 0x7531u);
  }
  return t;
}

// 16 code bytes (32 consecutive k of one W row) decoded with the row's scaled table into pieces
// piece0 .. piece0 + 3 (8 values each) of a 128-byte shared-memory row, 16-byte pieces XOR-swizzled
// by row % 8 (the 128-byte swizzle of wgmma descriptors, K- or MN-major alike).
template <typename T>
__device__ __forceinline__ void decode32_to_row(const uint4& cw, const Table& t, unsigned char* row_ptr, int row,
                                                int piece0) {
  uint32_t d[16];
  decode4(cw.x, t, d);
  decode4(cw.y, t, d + 4);
  decode4(cw.z, t, d + 8);
  decode4(cw.w, t, d + 12);
#pragma unroll
  for (int j = 0; j < 4; ++j)
    *reinterpret_cast<uint4*>(row_ptr + (((piece0 + j) ^ (row & 7)) << 4)) =
        make_uint4(d[4 * j], d[4 * j + 1], d[4 * j + 2], d[4 * j + 3]);
}

// SS: A (64 × 16, K-major) and B (16 × N) from shared memory through descriptors; B N-major when
// TRANS_B = 1 (imm-trans-b), K-major when 0.
#define NF4LORA_WGMMA_SS_ASM(SHAPE, TYPE, NACC, DA, DB, PRED, TB) \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " PRED ", 0;\n" \
               "wgmma.mma_async.sync.aligned." SHAPE ".f32." TYPE "." TYPE " " NF4LORA_ACC##NACC##_REGS ", " DA ", " DB \
               ", p, 1, 1, 0, " TB ";\n}\n" \
               : NF4LORA_ACC##NACC##_OUT \
               : "l"(desc_a), "l"(desc_b), "r"(scale_d))

// d (64 × N fp32, N / 2 registers) += a (64 × 16, descriptor, K-major) · b (16 × N, descriptor,
// N-major when kTransB, else K-major).
template <typename T, int N, bool kTransB>
__device__ __forceinline__ void wgmma_ss_m64k16(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  static_assert(N == 128 || N == 256, "N = 128 or 256");
#if NF4LORA_HAS_WGMMA
#define NF4LORA_SS(SHAPE, TYPE, NACC, DA, DB, PRED)                  \
  if constexpr (kTransB) {                                                         \
    NF4LORA_WGMMA_SS_ASM(SHAPE, TYPE, NACC, DA, DB, PRED, "1");       \
  } else {                                                                         \
    NF4LORA_WGMMA_SS_ASM(SHAPE, TYPE, NACC, DA, DB, PRED, "0");       \
  }
  constexpr bool f16 = std::is_same<T, __half>::value;
  if constexpr (N == 128 && f16) {
    NF4LORA_SS("m64n128k16", "f16", 64, "%64", "%65", "%66")
  } else if constexpr (N == 128) {
    NF4LORA_SS("m64n128k16", "bf16", 64, "%64", "%65", "%66")
  } else if constexpr (f16) {
    NF4LORA_SS("m64n256k16", "f16", 128, "%128", "%129", "%130")
  } else {
    NF4LORA_SS("m64n256k16", "bf16", 128, "%128", "%129", "%130")
  }
#undef NF4LORA_SS
#endif
}
#undef NF4LORA_WGMMA_SS_ASM

// Descriptor of a 128-byte-swizzled shared-memory operand at addr (1024-byte aligned) with
// explicit leading / stride byte offsets (PTX ISA 9.7.15.5.1.2: for K-major the leading offset is
// unused and the stride is between 8-row groups; for MN-major the leading offset is between groups
// of 8 rows along K and the stride between 64-element groups along M/N).
__device__ __forceinline__ uint64_t sw128_desc_lbo_sbo(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>((lbo >> 4) & 0x3FFF) << 16) |
         (static_cast<uint64_t>((sbo >> 4) & 0x3FFF) << 32) | (uint64_t{1} << 62);
}

// The pipeline prologue of the SS kernels (the forward's wgmma_ss and the dx): the first
// kStages - 1 stages of the streamed tile (x or g) in flight, chunk 0's codes decoded into W buffer
// 0 and chunk 1's fetched into registers, then chunk 0's tile landed and every thread's decode
// visible to the tensor cores. load_tile(i), load_codes(i, cw, raw), decode(i, cw, raw): the
// kernel's own.
template <int kStages, typename LoadTile, typename LoadCodes, typename Decode, typename Raw>
__device__ __forceinline__ void ss_prologue(int chunks, LoadTile&& load_tile, LoadCodes&& load_codes, Decode&& decode,
                                            uint4& cw, Raw& raw) {
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < chunks) load_tile(s);
    cp_async_commit();
  }
  load_codes(0, cw, raw);
  __syncthreads();  // the code tables
  decode(0, cw, raw);
  if (chunks > 1) load_codes(1, cw, raw);
  cp_async_wait<kStages - 2>();  // the tile of chunk 0 (this thread's copies)
  fence_proxy_async();
  __syncthreads();
}

// The rest of an SS kernel's chunk i once its MMAs are committed: decode chunk i + 1 into the next
// W buffer (and fetch chunk i + 2's codes) while they run, wait for this warpgroup's MMAs of chunk
// i - 1 only (those of i stay in flight across the barrier), then, once every thread's tile of
// chunk i + 1 has landed and its decode is visible to the tensor cores, refill the stage chunk
// i - 1 used. pin_acc() pins the accumulators (an in-flight wgmma writes them).
template <int kStages, typename LoadTile, typename LoadCodes, typename Decode, typename PinAcc, typename Raw>
__device__ __forceinline__ void ss_finish_chunk(int i, int chunks, LoadTile&& load_tile, LoadCodes&& load_codes,
                                                Decode&& decode, PinAcc&& pin_acc, uint4& cw, Raw& raw) {
  if (i + 1 < chunks) {
    decode(i + 1, cw, raw);
    if (i + 2 < chunks) load_codes(i + 2, cw, raw);
  }
  wgmma_wait<1>();  // this warpgroup's MMAs of chunk i - 1 are done
  pin_acc();
  cp_async_wait<kStages - 3>();  // the tile of chunk i + 1 landed (this thread's copies)
  fence_proxy_async();  // the decoded W, written by the generic proxy, read by the tensor cores
  __syncthreads();      // everyone's: chunk i + 1 ready, chunk i - 1's MMAs done in both warpgroups
  if (i + kStages - 1 < chunks) load_tile(i + kStages - 1);  // into chunk i - 1's stage
  cp_async_commit();
}

// --- split-K through a thread-block cluster ----------------------------------------------------
// The S blocks of a cluster (cluster rank = K slice) each hold fp32 partial sums of one output tile
// in the same register layout. No global workspace: the partials meet in distributed shared memory.

// (this block's rank in its cluster, the cluster's number of blocks)
__device__ __forceinline__ uint2 cluster_rank_and_blocks() {
  uint2 v = make_uint2(0, 1);
#if NF4LORA_HAS_WGMMA
  asm volatile("mov.u32 %0, %%cluster_ctarank;\nmov.u32 %1, %%cluster_nctarank;\n" : "=r"(v.x), "=r"(v.y));
#endif
  return v;
}
// Barrier of every thread of the cluster; shared-memory writes before it are visible to the
// cluster's reads after it (release / acquire).
__device__ __forceinline__ void cluster_sync() {
#if NF4LORA_HAS_WGMMA
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#endif
}
// The shared::cluster address of shared-memory address addr (of this block) in cluster block rank.
__device__ __forceinline__ uint32_t cluster_map(uint32_t addr, uint32_t rank) {
  uint32_t remote = addr;
#if NF4LORA_HAS_WGMMA
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(addr), "r"(rank));
#endif
  return remote;
}
// 16 bytes at shared-memory address addr (of this block) in the shared memory of cluster block rank.
__device__ __forceinline__ float4 load_cluster_f4(uint32_t addr, uint32_t rank) {
  float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
#if NF4LORA_HAS_WGMMA
  const uint32_t remote = cluster_map(addr, rank);
  asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];\n"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
               : "r"(remote)
               : "memory");
#endif
  return v;
}

// Sums the cluster's partial tiles into rank 0's acc in rank order (deterministic: the same order
// for every run and every tile). Ranks 1 .. S - 1 publish their N values per thread in their own
// shared memory at buf (N · kThreads · 4 bytes, free: call after the block's last read of it);
// rank 0 reads them there. Returns true in rank 0, which then owns the whole tile; the other
// ranks are done (their shared memory stays until rank 0 has read it).
template <int kThreads, int N>
__device__ __forceinline__ bool cluster_sum_to_rank0(float (&acc)[N], unsigned char* buf) {
  static_assert(N % 4 == 0, "N a multiple of 4");
  const uint2 cluster = cluster_rank_and_blocks();
  const uint32_t rank = cluster.x, blocks = cluster.y;
  float4* mine = reinterpret_cast<float4*>(buf) + threadIdx.x;
  if (rank != 0) {
#pragma unroll
    for (int j = 0; j < N / 4; ++j) mine[j * kThreads] = make_float4(acc[4 * j], acc[4 * j + 1], acc[4 * j + 2], acc[4 * j + 3]);
  }
  cluster_sync();
  if (rank == 0) {
    const uint32_t addr = smem_addr(mine);
    for (uint32_t s = 1; s < blocks; ++s) {
#pragma unroll
      for (int j = 0; j < N / 4; ++j) {
        const float4 v = load_cluster_f4(addr + 16u * j * kThreads, s);
        acc[4 * j] += v.x;
        acc[4 * j + 1] += v.y;
        acc[4 * j + 2] += v.z;
        acc[4 * j + 3] += v.w;
      }
    }
  }
  cluster_sync();
  return rank == 0;
}

// Host: how many clusters of `cluster` blocks of the kernel (threads, smem bytes of dynamic shared
// memory; its attribute set here) fit on the current device at once, cached per device, kernel and
// cluster size. A cluster lives inside one GPC, so with one block per SM this is below
// SMs / cluster wherever the GPCs' SM counts are not multiples of it. 0 when the query fails.
template <auto kernel>
int resident_clusters(unsigned threads, int smem, int cluster) {
  static int cache[64][9] = {};  // per kernel: [device][cluster size] = count + 1, 0 = not asked yet
  int dev = 0;
  if (cluster < 1 || cluster > 8 || cudaGetDevice(&dev) != cudaSuccess || dev < 0) return 0;
  if (dev < 64 && cache[dev][cluster] != 0) return cache[dev][cluster] - 1;
  int n = 0;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err == cudaSuccess) {
    cudaLaunchAttribute attr[2];
    const cudaLaunchConfig_t cfg = launch_config(attr, dim3(static_cast<unsigned>(cluster)), threads,
                                                 static_cast<size_t>(smem), nullptr, cluster, false);
    err = cudaOccupancyMaxActiveClusters(&n, kernel, &cfg);
  }
  if (err != cudaSuccess) {  // e.g. a GPU without clusters: no split; the next launch must not see it
    n = 0;
    cudaGetLastError();
  }
  if (dev < 64) cache[dev][cluster] = n + 1;
  return n;
}

// Host: K slices per tile of a split-K launch with `tiles` output tiles (fewer than the SMs) and
// `chunks` reduction chunks: as many as fill the idle SMs (at least 4 chunks per slice, at most 8
// slices: the portable cluster size), lowered until every tile's cluster is resident at once
// (resident(S): resident_clusters of the kernel), so the launch is one wave.
template <typename Resident>
int split_k_slices(int64_t tiles, int64_t chunks, int sm_count, Resident resident) {
  int64_t s = std::min<int64_t>({sm_count / std::max<int64_t>(tiles, 1), chunks / 4, 8});
  while (s > 1 && tiles > resident(static_cast<int>(s))) --s;
  return static_cast<int>(std::max<int64_t>(1, s));
}

// Host: 128 or 256 rows (x rows / tokens) per block of a wgmma kernel whose other dimension has
// col_tiles tiles: whichever finishes its waves of blocks sooner, a 256-row tile taking ~1.5× the
// time of a 128-row one (half the decode per flop; measured on the H200: 1.41-1.51×).
inline int wgmma_rows_per_block(int64_t M, int64_t col_tiles, int sm_count) {
  auto waves = [&](int64_t rows) { return ((M + rows - 1) / rows * col_tiles + sm_count - 1) / sm_count; };
  return 3 * waves(256) <= 2 * waves(128) ? 256 : 128;
}

// --- warp specialization: mbarriers, TMA, named barriers (sm_90a) ------------------------------
// A producer warpgroup fills stage s (a TMA copy of the streamed tile plus the decoded W) and
// arrives on full[s]; the consumer warpgroups wait on full[s], run their MMAs and, once those are
// done, arrive on empty[s], which the producer waits on before refilling the stage.

__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
#if NF4LORA_HAS_WGMMA
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
#endif
}
// Makes the initialized barriers visible to the async proxy (TMA) before the block syncs.
__device__ __forceinline__ void mbar_init_fence() {
#if NF4LORA_HAS_WGMMA
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
#if NF4LORA_HAS_WGMMA
  asm volatile("mbarrier.arrive.release.cta.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
#endif
}
// One arrival that also announces `bytes` of asynchronous (TMA) writes the phase must wait for.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
#if NF4LORA_HAS_WGMMA
  asm volatile("mbarrier.arrive.expect_tx.release.cta.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)),
               "r"(bytes)
               : "memory");
#endif
}
// Waits until the phase of the given parity has completed (a fresh barrier counts phase "1" as done);
// kCluster: acquire at cluster scope (arrivals from other blocks of the cluster released there).
template <bool kCluster = false> __device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
#if NF4LORA_HAS_WGMMA
#define NF4LORA_TRY_WAIT(SCOPE)                                                                       \
  asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.acquire." SCOPE ".shared::cta.b64 p, [%1], %2;\n" \
               "selp.u32 %0, 1, 0, p;\n}\n"                                                              \
               : "=r"(done)                                                                             \
               : "r"(smem_addr(bar)), "r"(parity)                                                       \
               : "memory")
  uint32_t done = 0;
  do {
    if constexpr (kCluster) {
      NF4LORA_TRY_WAIT("cluster");
    } else {
      NF4LORA_TRY_WAIT("cta");
    }
  } while (!done);
#undef NF4LORA_TRY_WAIT
#endif
}
// One arrival (release at cluster scope) on the barrier at shared::cluster address bar (cluster_map).
__device__ __forceinline__ void mbar_arrive_remote(uint32_t bar) {
#if NF4LORA_HAS_WGMMA
  asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];\n" ::"r"(bar) : "memory");
#endif
}
// Bulk copy (async proxy) of `bytes` (a multiple of 16) from this block's shared memory at src to
// the shared::cluster address dst of another block, completing on that block's barrier bar
// (shared::cluster address). The writes of src must be fenced (fence_proxy_async) and synced first.
__device__ __forceinline__ void bulk_copy_to_cluster(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
#if NF4LORA_HAS_WGMMA
  asm volatile("cp.async.bulk.shared::cluster.shared::cta.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
               "r"(smem_addr(src)), "r"(bytes), "r"(bar)
               : "memory");
#endif
}
// TMA: the box at (c0 = innermost coordinate, c1) of the tensor map into dst (shared, aligned as
// the map's swizzle needs); its bytes complete the transaction count bar expects.
__device__ __forceinline__ void tma_load_2d(void* dst, const void* tensor_map, uint64_t* bar, int c0, int c1) {
#if NF4LORA_HAS_WGMMA
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];\n" ::
          "r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(tensor_map)), "r"(smem_addr(bar)), "r"(c0), "r"(c1)
      : "memory");
#endif
}
// TMA: the box at (c0, c1, c2) (c0 innermost) of a 3-dimensional tensor map into dst.
__device__ __forceinline__ void tma_load_3d(void* dst, const void* tensor_map, uint64_t* bar, int c0, int c1, int c2) {
#if NF4LORA_HAS_WGMMA
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5}], [%2];\n" ::
          "r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(tensor_map)), "r"(smem_addr(bar)), "r"(c0), "r"(c1), "r"(c2)
      : "memory");
#endif
}
// Barrier of `threads` threads (a multiple of 32) on hardware barrier `id` (1..15; 0 is __syncthreads).
__device__ __forceinline__ void named_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// The float code tables of the wgmma kernels (SS and warp-specialized, qlora_mma.cu and qlora_dx.cu)
// in shared memory: the nested absmax code [256] (stage_code2: filled only for a nested absmax),
// then the 16 NF4 code values, code_tables_bytes in all. stage_float_code_tables fills them from
// kThreads threads (no sync: the caller's next block barrier publishes them).
constexpr int code_tables_bytes() { return (256 + 16) * 4; }
template <int kThreads> __device__ __forceinline__ void stage_float_code_tables(float* code2, const NF4State& w) {
  const int tid = threadIdx.x;
  if (tid < 16) code2[256 + tid] = w.quant_map[tid];
  stage_code2(w, code2, tid, kThreads);
}

// --- the shared state of a warp-specialized block (qlora_wgmma_ws_kernel, qlora_dx_ws_kernel) ---
// At the end of the block's shared-memory body (at `end`): the code tables (code_tables_bytes),
// then the full and empty barriers of the STAGES stages (ws_barrier_bytes). ws_setup fills the
// tables, initializes the barriers (full: the 128 producers plus thread 0's TMA arrival; empty:
// empty_arrivals consumer warps) and syncs the block.
template <int STAGES> constexpr int ws_barrier_bytes() { return 2 * STAGES * 8; }
struct WsShared {
  float* code2;     // [256]
  float* codes;     // [16]
  uint64_t* full;   // [STAGES]
  uint64_t* empty;  // [STAGES]
};
template <int STAGES, int kThreads>
__device__ __forceinline__ WsShared ws_setup(unsigned char* end, const NF4State& w, uint32_t empty_arrivals) {
  WsShared sh;
  sh.code2 = reinterpret_cast<float*>(end - ws_barrier_bytes<STAGES>() - code_tables_bytes());
  sh.codes = sh.code2 + 256;
  sh.full = reinterpret_cast<uint64_t*>(end - ws_barrier_bytes<STAGES>());
  sh.empty = sh.full + STAGES;
  stage_float_code_tables<kThreads>(sh.code2, w);
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(&sh.full[s], 128 + 1);
      mbar_init(&sh.empty[s], empty_arrivals);
    }
    mbar_init_fence();
  }
  __syncthreads();
  return sh;
}

// --- the producer warpgroup of the warp-specialized kernels (qlora_wgmma_ws_kernel, qlora_dx_ws_kernel)
// Threads ptid = 0 .. 127 each decode kWords 16-byte code words of W a chunk (32 consecutive
// elements a word, all in one absmax block). Codes and raw scale come through a ring in shared
// memory, copied with cp.async STAGES - 1 chunks ahead (each thread reads back only its own copies:
// no barrier). Not into registers: a plain load still in flight holds up the stage's fence and
// arrival (both wait for the thread's loads), which Nsight showed as the producer's main stall.
// Per chunk i, stage s = i % STAGES: wait until the consumers released s (empty[s], cluster scope
// when kClusterWait); issue(i, s) (thread 0: its arrival with the TMA's byte count, and the TMA);
// fetch chunk i + STAGES - 1 into the ring slot chunk i - 1 used; wait for chunk i's copies;
// decode(s, cw, raw); fence the generic-proxy writes for the tensor cores; share(s); arrive on
// full[s]. elem(i): the first W element of the thread's words in chunk i; q_tail(b):
// fetch_q_async's tail flag for absmax block b (nested_q_tail). Then `extra` chunks without NF4
// codes (the folded LoRA term of qlora_dx and of the forward): per extra chunk e, at i = chunks + e, stage s: wait for
// empty[s] as above; fill_extra(e, s) (thread 0: its arrival with the byte count and the TMA copies
// of the whole stage); arrive on full[s].
// Ring (ws_ring_bytes): [STAGES][kWords][128][16] code words, [STAGES][128] raw scale words,
// [STAGES][128] nested scales.
template <int STAGES, int kWords> constexpr int ws_ring_bytes() { return STAGES * 128 * (16 * kWords + 8); }

template <int STAGES, int kWords, bool kClusterWait, typename Elem, typename QTail, typename Issue, typename Decode,
          typename Share, typename FillExtra>
__device__ __forceinline__ void ws_produce(const NF4State& w, unsigned char* ring, int chunks, int ptid, uint64_t* full,
                                           uint64_t* empty, Elem&& elem, QTail&& q_tail, Issue&& issue,
                                           Decode&& decode, Share&& share, int extra, FillExtra&& fill_extra) {
  uint32_t* ring_q = reinterpret_cast<uint32_t*>(ring + STAGES * kWords * 128 * 16);
  float* ring_a2 = reinterpret_cast<float*>(ring_q + STAGES * 128);
  const bool nested = w.nested_absmax != nullptr;
  auto fetch = [&](int i) {
    if (i < chunks) {
      const int slot = i % STAGES;
      const int64_t e = elem(i), b = e >> w.blocksize_log2;
      const unsigned char* src = w.packed + e / 2;
#pragma unroll
      for (int k = 0; k < kWords; ++k) cp_async16(ring + ((slot * kWords + k) * 128 + ptid) * 16, src + 16 * k, true);
      fetch_q_async(ring_q + slot * 128 + ptid, w, b, q_tail(b));
      if (nested) cp_async4(ring_a2 + slot * 128 + ptid, w.nested_absmax + (b >> kNestedBlockLog2));
    }
    cp_async_commit();  // (empty groups past the end keep the count uniform)
  };
  for (int i = 0; i < STAGES - 1; ++i) fetch(i);
  for (int i = 0; i < chunks; ++i) {
    const int s = i % STAGES;
    if (i >= STAGES) mbar_wait<kClusterWait>(&empty[s], (i / STAGES - 1) & 1);
    issue(i, s);
    fetch(i + STAGES - 1);        // into the ring slot chunk i - 1 used
    cp_async_wait<STAGES - 1>();  // chunk i's copies (this thread's) landed
    uint4 cw[kWords > 0 ? kWords : 1];  // (kWords 0: the raw scales alone, wgmma_rs)
#pragma unroll
    for (int k = 0; k < kWords; ++k) cw[k] = *reinterpret_cast<const uint4*>(ring + ((s * kWords + k) * 128 + ptid) * 16);
    RawScales<1> raw;
    raw.q[0] = ring_q[s * 128 + ptid];
    raw.a2[0] = 0.f;
    if (nested) {
      raw.q[0] = raw_q_of(w, raw.q[0], elem(i) >> w.blocksize_log2);
      raw.a2[0] = ring_a2[s * 128 + ptid];
    }
    decode(s, cw, raw);
    fence_proxy_async();  // the decoded W, written by the generic proxy, read by the tensor cores
    share(s);
    mbar_arrive(&full[s]);
  }
  cp_async_wait<0>();
  for (int e = 0; e < extra; ++e) {
    const int i = chunks + e, s = i % STAGES;
    if (i >= STAGES) mbar_wait<kClusterWait>(&empty[s], (i / STAGES - 1) & 1);
    fill_extra(e, s);
    mbar_arrive(&full[s]);
  }
}

// The consumer warpgroups' side of the same pipeline: per chunk i, stage s = i % STAGES: wait for
// full[s]; mmas(i, s) between the wgmma fence and commit; wait for this warpgroup's MMAs of chunk
// i - 1 only (those of i stay in flight) and let lane 0 of each warp release that stage
// (release(stage): the empty barrier arrivals). The `extra` chunks after them the same way with
// extra_mmas(e, s) (a loop of its own: MMAs of another kind in a branch of the main loop make ptxas
// serialize every wgmma of the kernel). Then every MMA done and both consumer warpgroups synced on
// barrier 1 (256 threads): the stages are free for the epilogue. pin_acc() pins the accumulators
// (an in-flight wgmma writes them).
template <int STAGES, typename PinAcc, typename Mmas, typename ExtraMmas, typename Release>
__device__ __forceinline__ void ws_consume(int chunks, int extra, uint64_t* full, PinAcc&& pin_acc, Mmas&& mmas,
                                           ExtraMmas&& extra_mmas, Release&& release) {
  const int lane = threadIdx.x % 32;
  auto step = [&](int i, auto&& issue) {
    const int s = i % STAGES;
    mbar_wait(&full[s], (i / STAGES) & 1);
    pin_acc();
    wgmma_fence();
    issue(s);
    wgmma_commit();
    wgmma_wait<1>();  // this warpgroup's MMAs of chunk i - 1 are done: release its stage
    pin_acc();
    __syncwarp();
    if (i > 0 && lane == 0) release((i - 1) % STAGES);
  };
  for (int i = 0; i < chunks; ++i) step(i, [&](int s) { mmas(i, s); });
  for (int e = 0; e < extra; ++e) step(chunks + e, [&](int s) { extra_mmas(e, s); });
  wgmma_wait<0>();
  pin_acc();
  named_sync(1, 256);
}

// The MMAs of one folded LoRA chunk (kLoraRanks ranks) on one consumer warpgroup whose accumulators
// are the transposed output tile (64 output columns — W's rows in the forward, W's columns in the dx's
// rs kernel — × BM tokens, acc as the RS/ws wgmmas leave it): acc += (s·L) · Uᵀ, L's ranks tf32 from registers, U (the tokens' float32 ranks: u of
// the forward, gB of the dx) by descriptor udesc (K-major, 128-byte swizzle). elem(h8, k): L's
// element (this thread's row + 8·h8, rank k) as float (row = the warpgroup's, its warp's 16 rows,
// lane / 4), c = lane % 4. All four steps of 8 ranks run (ranks past r are zeros on both sides);
// with 128 accumulators (BM = 256) one step at a time, each waited for: more A fragments in flight
// exceed the kernel's 168 registers and ptxas then serializes every wgmma of the kernel, the main
// loop's included (C7512; two steps at a time still did).
template <int BM, typename Elem>
__device__ __forceinline__ void lora_tf32_mmas(float (&acc)[BM / 2], Elem&& elem, int c, float scale, uint64_t udesc) {
  constexpr int kBatches = BM == 256 ? 4 : 1, kSteps = 4 / kBatches;  // batches of kSteps steps of 8 ranks
#pragma unroll
  for (int batch = 0; batch < kBatches; ++batch) {
    uint32_t a[kSteps][4];
#pragma unroll
    for (int j = 0; j < kSteps; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q)  // (row, k), (row + 8, k), (row, k + 4), (row + 8, k + 4); k = 8·step + c
        a[j][q] = to_tf32(scale * elem(q & 1, 8 * (batch * kSteps + j) + c + 4 * (q >> 1)));
    wgmma_fence();  // the A registers just written are read by the MMAs
#pragma unroll
    for (int j = 0; j < kSteps; ++j) wgmma_tf32_m64k8<BM>(acc, a[j], udesc + 2 * (batch * kSteps + j), 1);
    if (batch + 1 < kBatches) {
      wgmma_commit();
      wgmma_wait<0>();
      pin(acc);
    }
  }
}

// The consumer warpgroups of the RS kernels (qlora_wgmma_rs_kernel, qlora_dx_rs_kernel): acc (64 rows × BM tokens)
// += the chunks' RS MMAs, A decoded into registers by decode(i, frag) (which waits for chunk i's stage), B the
// stage's token tile by descriptor desc0 + the stage's offset (stage_bytes apart); chunk i + 1 decoded while chunk
// i's MMAs run (two chunks a trip: the register buffers indexed statically); each stage released (lane 0 of each
// warp on empty[s]) once this warpgroup's MMAs of it are done. Then the folded LoRA term's chunks: lora_elem(s) =
// the A element functor of lora_tf32_mmas for stage s, the tokens' float32 ranks at the stage's start. Ends with
// both consumer warpgroups synced on barrier 1 (256 threads): the stages are free for the epilogue.
template <typename T, int BM, int STAGES, typename Decode, typename LoraElem>
__device__ __forceinline__ void rs_consume(float (&acc)[BM / 2], int chunks, int lora_chunks, uint64_t* full,
                                           uint64_t* empty, uint64_t desc0, int stage_bytes, Decode&& decode,
                                           LoraElem&& lora_elem, float scale) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int i = 0; i < BM / 2; ++i) acc[i] = 0.f;
  auto release = [&](int s) {
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[s]);
  };
  auto step = [&](int i, uint32_t (&cur)[4][4], uint32_t (&next)[4][4]) {
    const int s = i % STAGES;
    const uint64_t desc = desc0 + static_cast<uint64_t>(s * stage_bytes >> 4);
    wgmma_fence();  // the A registers just written are read by the MMAs
#pragma unroll
    for (int k = 0; k < 4; ++k) wgmma_m64k16<T, BM, false>(acc, cur[k], desc + 2 * k, 1);
    wgmma_commit();
    if (i + 1 < chunks) decode(i + 1, next);  // while chunk i's MMAs run
    wgmma_wait<0>();
    pin(acc);
    release(s);
  };
  uint32_t a[2][4][4];
  decode(0, a[0]);
  for (int i = 0; i < chunks; i += 2) {
    step(i, a[0], a[1]);
    if (i + 1 < chunks) step(i + 1, a[1], a[0]);
  }
  for (int e = 0; e < lora_chunks; ++e) {
    const int i = chunks + e, s = i % STAGES;
    mbar_wait(&full[s], (i / STAGES) & 1);
    pin(acc);
    wgmma_fence();
    lora_tf32_mmas<BM>(acc, lora_elem(s), lane % 4, scale, desc0 + static_cast<uint64_t>(s * stage_bytes >> 4));
    wgmma_commit();
    wgmma_wait<0>();
    pin(acc);
    release(s);
  }
  named_sync(1, 256);
}

// The output tile of the tensor-core kernels whose accumulators hold it transposed (rows = output
// columns: W's rows in the forward, k in the dx's RS kernel): acc[i][j][e] is output column
// n0 + wrow + 16i + g + 8·(e >= 2) (kPairRows: n0 + wrow + 16i + 2g + (e >= 2), the dx RS kernel's
// order) of output row m0 + xrow + 8j + 2c + (e & 1). + bias (when not null), rounded once to T,
// staged as [BM][BN + 8] in smem (free: pipeline drained, threads synced) for 16-byte stores into
// y (M, N) row-major. kFirst: the first of the kThreads threads (when not 0, they sync on named
// barrier 1).
template <typename T, int AT, int BT, int BN, int BM, int kThreads, int kFirst = 0, bool kPairRows = false>
__device__ __forceinline__ void store_out_tile(T* y, const T* bias, int M, int N, float (&acc)[AT][BT][4],
                                               unsigned char* smem, int n0, int m0, int wrow, int xrow) {
  const int tid = static_cast<int>(threadIdx.x) - kFirst, lane = tid % 32, g = lane / 4, c = lane % 4;
  T* out = reinterpret_cast<T*>(smem);
#pragma unroll
  for (int i = 0; i < AT; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int nl = wrow + i * 16 + (kPairRows ? 2 * g + h : g + 8 * h);
      const float bv = bias != nullptr && n0 + nl < N ? to_float(bias[n0 + nl]) : 0.f;
#pragma unroll
      for (int j = 0; j < BT; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int ml = xrow + j * 8 + 2 * c + e;
          out[ml * (BN + 8) + nl] = static_cast<T>(acc[i][j][2 * h + e] + bv);
        }
    }
  if constexpr (kFirst == 0) {
    __syncthreads();
  } else {
    named_sync(1, kThreads);
  }
  const bool vec = N % 8 == 0;
  constexpr int kVecs = BN / 8;
  for (int idx = tid; idx < BM * kVecs; idx += kThreads) {
    const int row = idx / kVecs, col = idx % kVecs * 8;
    const int m = m0 + row, n = n0 + col;
    if (m >= M || n >= N) continue;
    const T* src = out + row * (BN + 8) + col;
    T* dst = y + static_cast<int64_t>(m) * N + n;
    if (vec) {
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
    } else {
      for (int e = 0; e < 8 && n + e < N; ++e) dst[e] = src[e];
    }
  }
}

}  // namespace nf4lora
