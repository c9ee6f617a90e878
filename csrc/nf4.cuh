// NF4 device helpers shared by every kernel in csrc/.
//
// Format (bitsandbytes-compatible, DESIGN.md §2): W (N, K) flattened row-major; element i has a
// 4-bit code in byte i/2 (even i: high nibble, odd i: low nibble) and a float32 absmax for block
// i / blocksize. Double-quantized ("nested") absmax: absmax[b] = code2[q[b]] * absmax2[b / 256] + offset,
// two float32 roundings (multiply, then add), exactly as bitsandbytes reconstructs it.
#pragma once

#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace nf4lora {

constexpr int kNestedBlockLog2 = 8;  // 256 absmax values per nested block

// The NF4 state of one weight as the kernels see it (all device pointers).
struct NF4State {
  const uint8_t* packed;          // (ceil(n/2),) two codes per byte
  const void* absmax;             // float32 (n_blocks,), or uint8 codes when nested
  const float* quant_map;         // (16,) NF4 code values
  const float* nested_absmax;     // (ceil(n_blocks/256),) or nullptr
  const float* nested_quant_map;  // (256,) or nullptr
  float nested_offset;
  int64_t n;                      // N * K elements
  int blocksize_log2;             // blocksize = 1 << blocksize_log2 (32 ... 4096)
};

// A double-quantized absmax from its parts: code2[q] * absmax2 + offset, two float32 roundings.
__device__ __forceinline__ float nested_absmax(const float* code2, uint32_t q, float absmax2, float offset) {
  return __fadd_rn(__fmul_rn(code2[q], absmax2), offset);
}

// log2 of a power of two, -1 for anything else (host and device).
__host__ __device__ inline int log2_exact(int v) {
  int l = 0;
  while (l < 30 && (1 << l) < v) ++l;
  return (1 << l) == v ? l : -1;
}

// The state from the launchers' raw device addresses (nested_absmax = 0: absmax is float32).
inline NF4State make_state(uintptr_t packed, uintptr_t absmax, uintptr_t quant_map, uintptr_t nested_absmax,
                           uintptr_t nested_quant_map, float nested_offset, int64_t n, int blocksize_log2) {
  return NF4State{reinterpret_cast<const uint8_t*>(packed), reinterpret_cast<const void*>(absmax),
                  reinterpret_cast<const float*>(quant_map), reinterpret_cast<const float*>(nested_absmax),
                  reinterpret_cast<const float*>(nested_quant_map), nested_offset, n, blocksize_log2};
}

// Absmax of block b; code2 is the nested table staged in shared memory (or nullptr).
__device__ __forceinline__ float block_absmax(const NF4State& s, const float* code2, int64_t b) {
  if (s.nested_absmax == nullptr) return static_cast<const float*>(s.absmax)[b];
  return nested_absmax(code2, static_cast<const uint8_t*>(s.absmax)[b], s.nested_absmax[b >> kNestedBlockLog2],
                       s.nested_offset);
}

template <typename T> struct Pair;
template <> struct Pair<float> {
  using type = float2;
  __device__ static type make(float a, float b) { return make_float2(a, b); }
};
template <> struct Pair<__half> {
  using type = __half2;
  __device__ static type make(float a, float b) { return __floats2half2_rn(a, b); }
};
template <> struct Pair<__nv_bfloat16> {
  using type = __nv_bfloat162;
  __device__ static type make(float a, float b) { return __floats2bfloat162_rn(a, b); }
};

}  // namespace nf4lora
