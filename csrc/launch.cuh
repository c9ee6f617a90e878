// Host helpers that launch the csrc/ kernels: the cluster launch attribute and one launch_kernel (shared-memory opt-in,
// cluster and programmatic-dependent attributes, the launch and its error text) for every kernel of the extension.
#pragma once

#include <cuda_runtime.h>

#include <string>

namespace nf4lora {

// Host: the launch attribute of clusters of `cluster` consecutive blocks along x.
inline cudaLaunchAttribute cluster_attribute(int cluster) {
  cudaLaunchAttribute a{};
  a.id = cudaLaunchAttributeClusterDimension;
  a.val.clusterDim.x = static_cast<unsigned>(cluster);
  a.val.clusterDim.y = 1;
  a.val.clusterDim.z = 1;
  return a;
}

// Host: one launch of kernel on `grid` blocks of `threads`, with smem bytes of dynamic shared memory (where smem > 0
// the kernel opts in to them first: per device, so on every launch, which is cheap), in clusters of `cluster` consecutive blocks along
// x (at most 8, the portable size; grid.x a multiple of it; 0 = no cluster attribute, a plain launch; 1 sets the
// attribute, as the kernels that take a cluster size at run time are launched), as the programmatic dependent of the
// stream's previous kernel when `dependent` (sm_90: it may start before that one ends; it waits with
// griddepcontrol.wait). Returns "" or the CUDA error after the kernel's name ("NAME attributes: ..." when the opt-in
// failed).
template <typename... Params, typename... Args>
std::string launch_kernel(void (*kernel)(Params...), const char* name, dim3 grid, unsigned threads, size_t smem,
                          cudaStream_t stream, int cluster, bool dependent, const Args&... args) {
  cudaError_t err = cudaSuccess;
  if (smem > 0) {  // (none: nothing to opt in to, and one host call fewer per launch)
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return std::string(name) + " attributes: " + cudaGetErrorString(err);
  }
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(threads, 1, 1);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[2];
  cfg.attrs = attr;
  if (cluster > 0) attr[cfg.numAttrs++] = cluster_attribute(cluster);
  if (dependent) {
    attr[cfg.numAttrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[cfg.numAttrs].val.programmaticStreamSerializationAllowed = 1;
    ++cfg.numAttrs;
  }
  err = cudaLaunchKernelEx(&cfg, kernel, args...);
  return err == cudaSuccess ? "" : std::string(name) + ": " + cudaGetErrorString(err);
}

}  // namespace nf4lora
