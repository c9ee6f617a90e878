// s29: how many clusters of S blocks (one block per SM: 200 KiB of shared memory) the GPU holds at once
#include <cstdio>
#include <cuda_runtime.h>
__global__ void k(float* p) { extern __shared__ float s[]; s[threadIdx.x] = 1.f; if (p) p[0] = s[0]; }
int main() {
  const int smem = 200 * 1024;
  cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  for (int S = 1; S <= 8; ++S) {
    cudaLaunchConfig_t cfg{}; cudaLaunchAttribute a[1];
    cfg.gridDim = dim3(1, S, 1); cfg.blockDim = dim3(512); cfg.dynamicSmemBytes = smem;
    a[0].id = cudaLaunchAttributeClusterDimension; a[0].val.clusterDim.x = 1; a[0].val.clusterDim.y = S; a[0].val.clusterDim.z = 1;
    cfg.attrs = a; cfg.numAttrs = 1;
    int n = -1; cudaError_t e = cudaOccupancyMaxActiveClusters(&n, k, &cfg);
    printf("S=%d resident clusters %d (%d blocks) %s\n", S, n, n * S, cudaGetErrorString(e));
  }
}
