// Host helpers that launch the csrc/ kernels: the cluster launch attribute, the launch configuration (cluster and
// programmatic-dependent attributes; also the occupancy queries') and one launch_kernel (shared-memory opt-in, the
// launch and its error text) for every kernel of the extension.
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

// Host: the launch configuration of `grid` blocks of `threads` with smem bytes of dynamic shared memory on `stream`, in
// clusters of `cluster` consecutive blocks along x (at most 8, the portable size; grid.x a multiple of it; 0 = no
// cluster attribute; 1 sets it, as the kernels that take a cluster size at run time are launched), as the
// programmatic dependent of the stream's previous kernel when `dependent` (sm_90: it may start before that one ends;
// it waits with griddepcontrol.wait). It points at attr, which the caller keeps alive while it uses it.
inline cudaLaunchConfig_t launch_config(cudaLaunchAttribute (&attr)[2], dim3 grid, unsigned threads, size_t smem,
                                        cudaStream_t stream, int cluster, bool dependent) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(threads, 1, 1);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = attr;
  if (cluster > 0) attr[cfg.numAttrs++] = cluster_attribute(cluster);
  if (dependent) {
    attr[cfg.numAttrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[cfg.numAttrs].val.programmaticStreamSerializationAllowed = 1;
    ++cfg.numAttrs;
  }
  return cfg;
}

// Host: one launch of kernel as launch_config describes it; where smem > 0 the kernel opts in to that much dynamic
// shared memory first (per device, so on every launch, which is cheap). Returns "" or the CUDA error after the
// kernel's name ("NAME attributes: ..." when the opt-in failed).
template <typename... Params, typename... Args>
std::string launch_kernel(void (*kernel)(Params...), const char* name, dim3 grid, unsigned threads, size_t smem,
                          cudaStream_t stream, int cluster, bool dependent, const Args&... args) {
  if (smem > 0) {  // (none: nothing to opt in to, and one host call fewer per launch)
    const cudaError_t err =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return std::string(name) + " attributes: " + cudaGetErrorString(err);
  }
  cudaLaunchAttribute attr[2];
  const cudaLaunchConfig_t cfg = launch_config(attr, grid, threads, smem, stream, cluster, dependent);
  const cudaError_t err = cudaLaunchKernelEx(&cfg, kernel, args...);
  return err == cudaSuccess ? "" : std::string(name) + ": " + cudaGetErrorString(err);
}

}  // namespace nf4lora
