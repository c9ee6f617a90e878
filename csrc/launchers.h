// Host launchers of the csrc/ kernels: plain C++ (no CUDA or torch types), so bindings.cpp
// compiles with any C++ compiler. Each returns an empty string on success, else the CUDA error.
#pragma once

#include <cstdint>
#include <string>

namespace nf4lora {

// out_dtype: 0 = float32, 1 = float16, 2 = bfloat16.
std::string launch_dequantize_nf4(uintptr_t out, int out_dtype, uintptr_t packed, uintptr_t absmax,
                                  uintptr_t quant_map, uintptr_t nested_absmax,
                                  uintptr_t nested_quant_map, float nested_offset, int64_t n,
                                  int blocksize, uintptr_t stream);

// Number of CUDA devices, and the error text when it is 0.
int cuda_device_count(std::string* error);

}  // namespace nf4lora
