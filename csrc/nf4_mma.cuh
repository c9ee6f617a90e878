// Device helpers shared by the tensor-core kernels of csrc/ (qlora_gemv.cu, qlora_mma.cu): the
// byte-permute NF4 decode into mma.m16n8k16 operand registers, the mma itself, cp.async.
//
// Decode: 8 codes (4 bytes) -> 8 16-bit values in 21 integer instructions by byte-permute lookups
// from a 16-entry table of x's dtype held in 8 registers (built from the state's quant_map, so any
// code table is honoured).
#pragma once

#include <cstdint>
#include <type_traits>

#include "nf4.cuh"

namespace nf4lora {

__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
  uint32_t d;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
  return d;
}

__device__ __forceinline__ uint32_t select_bytes(uint32_t a, uint32_t b, uint32_t mask) {
  uint32_t d;  // per bit: mask ? b : a
  asm("lop3.b32 %0, %1, %2, %3, 0xD8;" : "=r"(d) : "r"(a), "r"(b), "r"(mask));
  return d;
}

// The 16 code values of dtype T, low bytes in lo[0..3] and high bytes in hi[0..3], entry e in
// byte e % 4 of word e / 4.
struct Table {
  uint32_t lo[4], hi[4];
};

template <typename T> __device__ __forceinline__ uint16_t bits16(float v) {
  const T h = static_cast<T>(v);
  return *reinterpret_cast<const uint16_t*>(&h);
}
template <typename T> __device__ __forceinline__ float to_float(T v) { return static_cast<float>(v); }

// For a nested absmax: stage its 256-entry second-level code into shared memory (the caller syncs).
__device__ __forceinline__ void stage_code2(const NF4State& w, float* code2, int tid, int threads) {
  if (w.nested_absmax != nullptr)
    for (int i = tid; i < 256; i += threads) code2[i] = w.nested_quant_map[i];
}

// The code values word tid (< 8) of the register decode table holds: 4·(tid % 4) .. +3 (loads only: callers issue them
// before shared-memory stores, see stage_gemv_tables).
__device__ __forceinline__ void reg_table_codes(const NF4State& w, int tid, float* q) {
#pragma unroll
  for (int b = 0; b < 4; ++b) q[b] = w.quant_map[4 * (tid % 4) + b];
}

// Word tid (< 8) of the register decode table from q = reg_table_codes: their low (tid < 4) or high bytes once rounded
// to T.
template <typename T> __device__ __forceinline__ uint32_t reg_table_word(const float* q, int tid) {
  uint32_t word = 0;
#pragma unroll
  for (int b = 0; b < 4; ++b) {
    const uint16_t v = bits16<T>(q[b]);
    word |= static_cast<uint32_t>(tid < 4 ? v & 0xFF : v >> 8) << (8 * b);
  }
  return word;
}

// Stage the decode table (8 words: entries rounded to T) and, for a nested absmax, the 256-entry
// second-level code into shared memory; the caller syncs, then load_table.
template <typename T>
__device__ __forceinline__ void stage_code_tables(const NF4State& w, uint32_t* table, float* code2, int tid,
                                                  int threads) {
  if (tid < 8) {
    float q[4];
    reg_table_codes(w, tid, q);
    table[tid] = reg_table_word<T>(q, tid);
  }
  stage_code2(w, code2, tid, threads);
}

__device__ __forceinline__ Table load_table(const uint32_t* table) {
  Table t;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    t.lo[i] = table[i];
    t.hi[i] = table[4 + i];
  }
  return t;
}

// 4 packed bytes -> 4 pairs of 16-bit values: out[j] = T(code[hi nibble of byte j]) in the low
// half (element 2j comes first in k) and T(code[lo nibble]) in the high half.
__device__ __forceinline__ void decode4(uint32_t w, const Table& t, uint32_t* out) {
  const uint32_t idx = w & 0x77777777u;  // 3-bit index of every nibble
  const uint32_t sh = w << 4;            // bit 3 of even nibbles moved to their byte's msb
#pragma unroll
  for (int h = 0; h < 2; ++h) {  // h = 0: bytes 0, 1 (nibbles 0-3); h = 1: bytes 2, 3
    const uint32_t sel = h ? idx >> 16 : idx;
    // 0xFF per output byte whose nibble has bit 3 set (codes 8-15): prmt sign-replicate mode.
    const uint32_t mask = prmt(sh, w, h ? 0xFBEAu : 0xD9C8u);
    const uint32_t lo = select_bytes(prmt(t.lo[0], t.lo[1], sel), prmt(t.lo[2], t.lo[3], sel), mask);
    const uint32_t hi = select_bytes(prmt(t.hi[0], t.hi[1], sel), prmt(t.hi[2], t.hi[3], sel), mask);
    // lo/hi byte k belongs to nibble k: nibble 1 (hi of the first byte) is the first element.
    out[2 * h] = prmt(lo, hi, 0x4051u);
    out[2 * h + 1] = prmt(lo, hi, 0x6273u);
  }
}

// The byte-pair table in shared memory, an alternative to decode4 that moves the lookup from the
// integer pipe to shared-memory loads: entry b (a packed byte: two codes) = the pair of T values
// (code b >> 4 in the low half, b & 15 in the high half, as decode4 orders them), stored 32 times
// — word b·32 + L for lane L — so a warp's 32 lookups hit 32 different banks whatever the bytes.
// stage_gemv_tables builds it (thread t: entry t); the caller syncs before use.
constexpr int kPairTableWords = 256 * 32;
// Entry b of the byte-pair tables, four times (one 16-byte store's worth).
template <typename T> __device__ __forceinline__ uint4 pair_entry4(const NF4State& w, int b) {
  const uint32_t v = static_cast<uint32_t>(bits16<T>(w.quant_map[b >> 4])) |
                     static_cast<uint32_t>(bits16<T>(w.quant_map[b & 15])) << 16;
  return make_uint4(v, v, v, v);
}
// 4 packed bytes -> the 4 pairs decode4 gives, by 4 shared-memory loads; lane_table: the shared
// address of the table plus 4·lane.
__device__ __forceinline__ void lut4(uint32_t w, uint32_t lane_table, uint32_t* out) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t addr = prmt(w, 0, 0x4440u + j) * 128u + lane_table;  // byte j, zero-extended
    asm("ld.shared.b32 %0, [%1];" : "=r"(out[j]) : "r"(addr));
  }
}

// The byte-pair table with 256-byte rows (64 KiB): entry b's 32 copies at b·256 + 4·lane, so that
// one prmt forms a lookup's offset (byte b in bits 8-15, 4·lane in bits 0-7) and the table's base,
// warp-uniform, folds into the load (LDS [R + UR]): 2 instructions per code byte where lut4 takes
// 3 (measured in the register small-M pipeline, fifteenth session: 152 instructions per KiB of
// codes against 180, 0.98x the time at 8192×28672, M = 1). The fold needs the loop of lookups to be uniform
// control flow for ptxas: a loop conditioned on a per-warp value that ptxas cannot prove warp-uniform (as the
// register kernel's `active` was from e1a21c6, s24, to s30) gets an IMAD before each LDS, 3 instructions again;
// check the SASS for LDS [R+UR]. The upper 128 bytes of each row are unused. stage_gemv_tables
// builds it (thread t: entry t); the caller syncs before use.
constexpr int kWideTableBytes = 256 * 256;

// A small-M GEMV block's shared decode tables at once (thread tid < 256; the caller syncs): the byte-pair table's row
// tid (rows kRowBytes apart: 128, or 256 for the wide table), code2[tid] for a nested absmax, and, given reg_table,
// word tid < 8 of the register table (stage_code_tables'). Every global load is issued before the first shared
// store, so the block waits for memory once, not once per table (a load after a store to shared memory through a
// generic pointer stays after it). Where a kernel calls it matters (bench/results/h200/s31): after the TMA
// GEMV's first scale loads, 0.977-0.999x the time at M 1-16 (with the one wait); in the register GEMV after its
// first code loads, 1.02-1.10x at M 1-8 (the stores then wait for the code loads, and the block's barrier for its
// slowest warp: s32 timeline), so that kernel stages the tables first.
template <typename T, int kRowBytes>
__device__ __forceinline__ void stage_gemv_tables(const NF4State& w, unsigned char* pair, float* code2, uint32_t* reg_table,
                                                  int tid) {
  if (tid >= 256) return;
  const bool nested = w.nested_absmax != nullptr;
  const float c2 = nested ? w.nested_quant_map[tid] : 0.f;
  const uint4 v4 = pair_entry4<T>(w, tid);
  float q[4] = {};
  const bool reg = reg_table != nullptr && tid < 8;
  if (reg) reg_table_codes(w, tid, q);
  if (nested) code2[tid] = c2;
#pragma unroll
  for (int j = 0; j < 8; ++j)  // entry tid's 32 copies, 16-byte pieces in an order rotated by thread: no bank conflicts
    reinterpret_cast<uint4*>(pair + tid * kRowBytes)[(j + tid) & 7] = v4;
  if (reg) reg_table[tid] = reg_table_word<T>(q, tid);
}
// lut4 from the wide table: lane4 = 4·lane, base = the table's shared address (warp-uniform).
__device__ __forceinline__ void lut4_wide(uint32_t w, uint32_t lane4, uint32_t base, uint32_t* out) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t off = prmt(w, lane4, 0x7604u | (j << 4));  // byte j in bits 8-15, lane4 in bits 0-7
    asm("ld.shared.b32 %0, [%1];" : "=r"(out[j]) : "r"(off + base));
  }
}

// The decoders of 4 packed bytes into the 4 pairs of T an mma operand takes (decode4's order), as
// the chunk loops take them: by value, one call per 4 bytes (idx: the call's place in the chunk).
struct RegisterDecoder {  // decode4 from the 8-word table in registers
  Table t;
  __device__ __forceinline__ void operator()(uint32_t w, uint32_t* out, int) const { decode4(w, t, out); }
};
struct PairTableDecoder {  // lut4 from the shared byte-pair table; lane_table: its address + 4·lane
  uint32_t lane_table;
  __device__ __forceinline__ void operator()(uint32_t w, uint32_t* out, int) const { lut4(w, lane_table, out); }
};
// MixedDecoder: the calls whose bit of kRegMask is set (idx, a constant once unrolled) decode in
// registers (decode4), the others through the shared table (lut4): the integer pipe takes a share of
// the table loads' work.
template <unsigned kRegMask> struct MixedDecoder {
  Table t;
  uint32_t lane_table;
  __device__ __forceinline__ void operator()(uint32_t w, uint32_t* out, int idx) const {
    if ((kRegMask >> idx) & 1u) {
      decode4(w, t, out);
    } else {
      lut4(w, lane_table, out);
    }
  }
};

// d += a·b, mma.m16n8k16 with fp32 accumulation; a: 4 registers (16×16 row-major fragment),
// b: 2 registers (16×8 column-major fragment) of T (float16 or bfloat16) pairs.
#define NF4LORA_MMA_ASM(TYPE)                                                                     \
  asm("mma.sync.aligned.m16n8k16.row.col.f32." TYPE "." TYPE ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, " \
      "{%8,%9}, {%0,%1,%2,%3};"                                                                   \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                            \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))
template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  static_assert(std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value, "float16 or bfloat16");
  if constexpr (std::is_same<T, __half>::value) {
    NF4LORA_MMA_ASM("f16");
  } else {
    NF4LORA_MMA_ASM("bf16");
  }
}
#undef NF4LORA_MMA_ASM

// Four 8×8 matrices of 16-bit values from shared memory, transposed on the way (ldmatrix .trans):
// lanes 8i .. 8i + 7 give the 16-byte row addresses of matrix i; d[i] of lane l holds matrix i's
// elements (2·(l % 4), l / 4) and (2·(l % 4) + 1, l / 4) (row, column), first in the low half —
// an mma.m16n8k16 B fragment when the matrices' rows are its k.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&d)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
               : "r"(addr)
               : "memory");
}

// Two floats -> one register of T pair (first in the low half).
template <typename T> __device__ __forceinline__ uint32_t pack2(float a, float b) {
  const typename Pair<T>::type v = Pair<T>::make(a, b);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Raw scale data of ROWS rows for one chunk: float32 bits (plain) or the uint8 index and its
// float32 block scale (nested), loaded ahead and decoded at use.
template <int ROWS> struct RawScales {
  uint32_t q[ROWS];
  float a2[ROWS];
};
// Raw scale data i of the absmax block holding element e of W (the nested form: code byte and
// second-level absmax; plain: the float32 bits).
template <int ROWS>
__device__ __forceinline__ void load_raw_scale(const NF4State& w, int64_t e, RawScales<ROWS>& r, int i) {
  const int64_t b = e >> w.blocksize_log2;
  if (w.nested_absmax != nullptr) {
    r.q[i] = __ldg(static_cast<const uint8_t*>(w.absmax) + b);
    r.a2[i] = __ldg(w.nested_absmax + (b >> kNestedBlockLog2));
  } else {
    r.q[i] = __ldg(static_cast<const uint32_t*>(w.absmax) + b);
    r.a2[i] = 0.f;
  }
}
template <int ROWS>
__device__ __forceinline__ float scale_of(const NF4State& w, const float* code2, const RawScales<ROWS>& r, int i) {
  return w.nested_absmax != nullptr ? nested_absmax(code2, r.q[i], r.a2[i], w.nested_offset) : __uint_as_float(r.q[i]);
}

// Slice `split` [first, end) of `units` units of K (chunks, or stages of chunks) split S ways; by
// default this block's, S = gridDim.y ways: slice blockIdx.y.
struct KSlice {
  int first, end;
};
__device__ __forceinline__ KSlice k_slice(int units, int split, int S) {
  return {static_cast<int>(static_cast<int64_t>(split) * units / S),
          static_cast<int>(static_cast<int64_t>(split + 1) * units / S)};
}
__device__ __forceinline__ KSlice k_slice(int units) { return k_slice(units, blockIdx.y, gridDim.y); }

// Split K through global partials: after this block's stores of its partial sums (every thread calls it; last: a
// shared int), whether it is the last of n blocks to count on *count, and then every other one's stores are visible
// to it. The last one leaves the count at zero for the next launch.
__device__ __forceinline__ bool last_to_arrive(unsigned int* count, int n, int* last) {
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    *last = atomicAdd(count, 1u) == static_cast<unsigned>(n - 1);
    if (*last) *count = 0;  // every block has counted: left at zero for the next launch
  }
  __syncthreads();
  if (!*last) return false;
  __threadfence();
  return true;
}

// The shared-state-space address of a pointer into shared memory.
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// The first kAlign-byte aligned byte at or after the dynamic shared memory base (kAlign a power of
// two; the kernel asks kAlign bytes extra). The 128-byte swizzle of TMA and wgmma descriptors needs
// 1024-byte aligned tiles.
template <unsigned kAlign> __device__ __forceinline__ unsigned char* align_smem(unsigned char* base) {
  static_assert((kAlign & (kAlign - 1)) == 0, "kAlign must be a power of two");
  return base + ((kAlign - (smem_addr(base) & (kAlign - 1))) & (kAlign - 1));
}

// 16-byte global -> shared copy, asynchronous (cp.async.cg: L2 only); pred false writes zeros.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool pred) {
  const uint32_t s = smem_addr(smem);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(gmem), "r"(pred ? 16 : 0));
}
// 4-byte global -> shared copy, asynchronous (cp.async.ca); both addresses 4-byte aligned.
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem) {
  const uint32_t s = smem_addr(smem);
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }

// Raw scale data through shared memory (the cp.async pipelines): the word holding absmax block b
// copied asynchronously to dst — the float32 bits (plain), or for a nested absmax the aligned
// 4-byte word holding code byte b. q_tail (nested_q_tail): that word could run past the last code
// byte, so the byte alone is loaded (a plain load) and stored in its place in the word.
// raw_q_of(word) gives back RawScales' q: the bits, or the code byte.
// block_q_tail(w, b): q_tail for absmax block b (nested only: the word's last byte, b | 3, is past
// the last block); nested_q_tail: the same for the last block of W's row `row` (K per row), which
// covers every block of that row.
__device__ __forceinline__ bool block_q_tail(const NF4State& w, int64_t b) {
  return w.nested_absmax != nullptr && (b | 3) >= (w.n >> w.blocksize_log2);
}
__device__ __forceinline__ bool nested_q_tail(const NF4State& w, int64_t row, int64_t K) {
  return block_q_tail(w, ((row + 1) * K - 1) >> w.blocksize_log2);
}
__device__ __forceinline__ void fetch_q_async(uint32_t* dst, const NF4State& w, int64_t b, bool q_tail) {
  if (w.nested_absmax == nullptr) {
    cp_async4(dst, static_cast<const uint32_t*>(w.absmax) + b);
  } else {
    const uint8_t* q8 = static_cast<const uint8_t*>(w.absmax);
    if (!q_tail) {
      cp_async4(dst, q8 + (b & ~int64_t{3}));
    } else {
      *dst = static_cast<uint32_t>(__ldg(q8 + b)) << (8 * (b & 3));
    }
  }
}
__device__ __forceinline__ uint32_t raw_q_of(const NF4State& w, uint32_t word, int64_t b) {
  return w.nested_absmax == nullptr ? word : (word >> (8 * (b & 3))) & 0xFFu;
}

// Rows row0 .. row0 + ROWS of a row-major matrix src (leading dimension ld elements), 64 columns
// from col0, into dst as 128-byte rows with 16-byte pieces XOR-swizzled by row % 8 (the 128-byte
// swizzle of wgmma descriptors); rows >= limit as zeros (row0 < limit: a valid address to skip).
// All kThreads threads of the block take part.
template <typename T, int ROWS, int kThreads>
__device__ __forceinline__ void load_rows_sw128(unsigned char* dst, const T* src, int64_t ld, int row0, int limit,
                                                int64_t col0) {
  const int tid = threadIdx.x;
#pragma unroll
  for (int i = 0; i < ROWS * 8 / kThreads; ++i) {
    const int idx = tid + i * kThreads, row = idx / 8, piece = idx % 8;
    const int m = row0 + row;
    const bool ok = m < limit;
    cp_async16(dst + row * 128 + ((piece ^ (row & 7)) << 4), src + static_cast<int64_t>(ok ? m : row0) * ld + col0 + piece * 8,
               ok);
  }
}
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

}  // namespace nf4lora
