// nf4lora::dequantize: NF4 state -> dense W (N, K) in float32 / float16 / bfloat16.
//
// Bytes moved for n elements: n/2 (codes) + 4·n/blocksize (absmax) read, n·sizeof(T) written.
// One thread handles 4 packed bytes (8 elements, always inside one absmax block because
// blocksize >= 32) with one 4-byte load and four paired stores; the tail that is not a whole
// group of 8 elements is done a byte at a time by the first threads.
#include <cuda_runtime.h>

#include "launch.cuh"
#include "launchers.h"
#include "nf4.cuh"

namespace nf4lora {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void dequantize_nf4_kernel(T* __restrict__ out, NF4State s) {
  __shared__ float code[16];
  __shared__ float code2[256];
  for (int i = threadIdx.x; i < 16; i += blockDim.x) code[i] = s.quant_map[i];
  if (s.nested_absmax != nullptr)
    for (int i = threadIdx.x; i < 256; i += blockDim.x) code2[i] = s.nested_quant_map[i];
  __syncthreads();

  using P = Pair<T>;
  const int64_t groups = s.n / 8;  // whole groups of 8 elements (4 bytes)
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const uint32_t* packed4 = reinterpret_cast<const uint32_t*>(s.packed);
  for (int64_t g = tid; g < groups; g += stride) {
    const uint32_t word = packed4[g];
    const float am = block_absmax(s, code2, (g * 8) >> s.blocksize_log2);
    typename P::type* dst = reinterpret_cast<typename P::type*>(out + g * 8);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint32_t byte = (word >> (8 * j)) & 0xFFu;  // little endian: byte j of the group
      dst[j] = P::make(__fmul_rn(code[byte >> 4], am), __fmul_rn(code[byte & 0xF], am));
    }
  }
  // Tail: elements [groups*8, n), fewer than 8.
  for (int64_t e = groups * 8 + tid; e < s.n; e += stride) {
    const uint8_t byte = s.packed[e >> 1];
    const int nib = (e & 1) ? (byte & 0xF) : (byte >> 4);
    const float v = __fmul_rn(code[nib], block_absmax(s, code2, e >> s.blocksize_log2));
    out[e] = static_cast<T>(v);
  }
}

template <typename T>
std::string launch(void* out, const NF4State& s, cudaStream_t stream) {
  const int64_t work = s.n / 8 > 0 ? s.n / 8 : 1;
  const int64_t blocks = (work + kThreads - 1) / kThreads;
  const unsigned grid = static_cast<unsigned>(blocks < 65535 ? blocks : 65535);
  return launch_kernel(dequantize_nf4_kernel<T>, "dequantize_nf4_kernel", dim3(grid), kThreads, 0, stream, 0, false,
                       static_cast<T*>(out), s);
}

}  // namespace

std::string launch_dequantize_nf4(uintptr_t out, int out_dtype, uintptr_t packed, uintptr_t absmax,
                                  uintptr_t quant_map, uintptr_t nested_absmax,
                                  uintptr_t nested_quant_map, float nested_offset, int64_t n,
                                  int blocksize, uintptr_t stream) {
  const int lg = log2_exact(blocksize);
  if (lg < 5 || lg > 12) return "blocksize must be a power of two in [32, 4096]";
  if (packed % 4 != 0) return "packed must be 4-byte aligned";
  const size_t out_elem = out_dtype == 0 ? 4 : 2;
  if (out % (2 * out_elem) != 0) return "out must be aligned to two elements";
  if (n <= 0) return "";
  const NF4State s = make_state(packed, absmax, quant_map, nested_absmax, nested_quant_map, nested_offset, n, lg);
  void* dst = reinterpret_cast<void*>(out);
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  switch (out_dtype) {
    case 0: return launch<float>(dst, s, st);
    case 1: return launch<__half>(dst, s, st);
    case 2: return launch<__nv_bfloat16>(dst, s, st);
    default: return "out_dtype must be 0 (float32), 1 (float16) or 2 (bfloat16)";
  }
}

int cuda_device_count(std::string* error) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    *error = cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return 0;
  }
  return count;
}

}  // namespace nf4lora
