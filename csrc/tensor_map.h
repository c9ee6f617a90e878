// Host helper of the TMA kernels (qlora_mma.cu, qlora_dx.cu, qlora_gemv.cu): tiled tensor maps encoded by the
// driver's cuTensorMapEncodeTiled, found through the runtime (nothing links libcuda).
#pragma once

#include <cuda.h>  // CUtensorMap (the type and enums only)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

namespace nf4lora {

using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                   const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                   CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// The tensor-map element type of T: an activation type (__half, __nv_bfloat16), float32, or uint8_t (bytes:
// W's packed NF4 codes).
template <typename T> constexpr CUtensorMapDataType tensor_map_dtype() {
  static_assert(std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value ||
                    std::is_same<T, float>::value || std::is_same<T, uint8_t>::value,
                "T must be __half, __nv_bfloat16, float or uint8_t");
  if constexpr (std::is_same<T, __half>::value) return CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  else if constexpr (std::is_same<T, __nv_bfloat16>::value) return CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  else if constexpr (std::is_same<T, float>::value) return CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
  else return CU_TENSOR_MAP_DATA_TYPE_UINT8;
}

// A tiled map of `rank` dimensions over global memory at base: dims[i] elements of `type` in
// dimension i (0 innermost), strides[i - 1] bytes between consecutive indices of dimension i >= 1
// (any order: a dimension may step by less than the one before it), boxes of box[i] elements; no
// interleave, elements outside dims read as zeros. `what` names the map in the error.
inline std::string encode_tensor_map(CUtensorMap* map, CUtensorMapDataType type, int rank, const void* base,
                                     const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box,
                                     CUtensorMapSwizzle swizzle, const char* what) {
  static const EncodeTiledFn encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return static_cast<EncodeTiledFn>(nullptr);
    }
    return reinterpret_cast<EncodeTiledFn>(fn);
  }();
  if (encode == nullptr) return "cuTensorMapEncodeTiled is not available from the CUDA driver";
  const cuuint32_t steps[5] = {1, 1, 1, 1, 1};
  const CUresult r = encode(map, type, static_cast<cuuint32_t>(rank), const_cast<void*>(base), dims, strides, box,
                            steps, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? ""
                           : std::string("cuTensorMapEncodeTiled (") + what + " tensor map) failed with CUresult " +
                                 std::to_string(r);
}

// The map of a row-major (rows, cols) matrix of E (__half, __nv_bfloat16, float, or uint8_t: W's packed
// NF4 codes as (N rows, K / 2 bytes)) at base for boxes of box_cols × box_rows; elements past `rows` or
// `cols` read as zeros.
template <typename E>
std::string matrix_tensor_map(CUtensorMap* map, const void* base, int64_t rows, int64_t cols, int box_cols,
                              int box_rows, CUtensorMapSwizzle swizzle, const char* what) {
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(cols), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(cols) * sizeof(E)};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(box_cols), static_cast<cuuint32_t>(box_rows)};
  return encode_tensor_map(map, tensor_map_dtype<E>(), 2, base, dims, strides, box, swizzle, what);
}

// The map of a row-major (rows, cols) T matrix at base for boxes of 64 columns × box_rows rows in
// the 128-byte swizzle of the wgmma descriptors (one 128-byte line a row); rows past `rows` read
// as zeros. (x for the forward, g for the dx.)
template <typename T>
std::string rows_tensor_map(CUtensorMap* map, const void* base, int64_t rows, int64_t cols, int box_rows,
                            const char* what) {
  return matrix_tensor_map<T>(map, base, rows, cols, 64, box_rows, CU_TENSOR_MAP_SWIZZLE_128B, what);
}

}  // namespace nf4lora
