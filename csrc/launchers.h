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

// Small-M forward (qlora_gemv.cu): how many K splits a launch uses and the workspace it needs.
// tiles (1 or 2): 16-row tiles of W per block (16 or 32 rows; its 8 warps split K), 0 for the planner's
// choice (16 rows for the TMA kernel at M > 8 where 32 would split K into short slices), any other value 2;
// the plan's tiles say which. pipeline as
// launch_qlora_gemv takes it (0 = auto, resolved for the current device as the launcher resolves
// it): 2 counts the TMA kernel's resident blocks per SM; 3 (registers) gives its own tiles (16-row
// tiles per block, up to 64) and splits (ceil(K / 4096)).
// 
struct GemvPlan {
  int splits;
  int tiles;
  int64_t workspace_bytes;
  int64_t counters;  // split-K counters the launch uses (0 when K is not split)
};
GemvPlan plan_qlora_gemv(int64_t M, int64_t N, int64_t K, int sm_count, int tiles, int pipeline);

// y (M, N) = x·Wᵀ + scale·u·Bᵀ + bias and u (M, r) = x_lora·Aᵀ (float32) for 1 <= M <= 16.
// dtype: 1 = float16, 2 = bfloat16 (x, x_lora, A, B, bias, y). All tensors contiguous; bias = 0
// for none; nested_absmax = 0 when absmax is float32; workspace as plan_qlora_gemv says.
// pipeline: 1 = per-warp cp.async rings and the register decode (any GPU from sm_80); 2 = the
// block's TMA ring of 8-chunk stages and the shared byte-pair-table decode (at M > 8 a quarter of
// the bytes decoded in registers; sm_90 only; splits at most K / 512 rounded up: its K slices are
// whole stages); 3 = W loaded straight into registers, the decode through a 64 KiB byte-pair table
// (sm_90 only; M <= 8; N·K / blocksize < 2^31; splits and tiles as the plan gives them); 0 = on sm_90 3 up
// to M = 4 and up to M = 8 where K <= 4096, 2 above, elsewhere 1.
// Split-K counters: counters = 0 takes them from the workspace and zeroes them (one memset before
// the kernels); otherwise counters points at n_counters (>= the plan's count) 4-byte counters that
// are zero on entry, and no memset runs. Either way every kernel leaves the counters it used at
// zero (the last block of each group resets its own), so one zeroed buffer serves every later
// launch on the same stream.
std::string launch_qlora_gemv(uintptr_t y, uintptr_t x, uintptr_t x_lora, uintptr_t A, uintptr_t B,
                              uintptr_t bias, uintptr_t u, uintptr_t workspace, int dtype,
                              uintptr_t packed, uintptr_t absmax, uintptr_t quant_map,
                              uintptr_t nested_absmax, uintptr_t nested_quant_map, float nested_offset,
                              int blocksize, int64_t M, int64_t N, int64_t K, int64_t r, float scale,
                              int splits, int tiles, int pipeline, uintptr_t counters, int64_t n_counters,
                              uintptr_t stream);

// Large-M forward (qlora_mma.cu): the plan of a call on the current device. variant: 0 = on sm_90
// the warp-specialized kernel with the decode in the consumers' registers (6), or the SS kernel (3)
// where K is split over a cluster, and the mma.sync kernel elsewhere; 1 = mma.sync, 2 = wgmma with
// W decoded into the register operand (RS), 3 = wgmma with W decoded into shared memory (SS), 4 =
// SS warp-specialized (a producer warpgroup: TMA copies of x and the decode), 5 = 4 with each
// decode shared by a cluster of two blocks, 6 = warp-specialized RS (the producers: TMA copies of x
// and the codes, each row's scaled table; the consumers decode into their A registers) (2-6: sm_90
// only). block_m: x rows per block of the wgmma kernel, 128 or 256 (0 = chosen from the shape).
// splits: K slices of the u kernel; k_splits: K slices per output tile (wgmma, when the tiles alone
// leave SMs idle: the blocks of one thread-block cluster, at most 8); workspace: the u kernel's
// float32 partial sums and counters (0 bytes when it does not split K). error is non-empty for
// arguments no kernel takes.
struct MmaPlan {
  int splits = 1, k_splits = 1, block_m = 0, tiles_m = 0, tiles_n = 0;
  bool wgmma = false, ss = false;  // ss: the wgmma kernel with W decoded into shared memory
  bool ws = false;                 // ss warp-specialized (a producer warpgroup: TMA + decode)
  bool ws_pair = false;            // ... with the decode shared by clusters of two blocks
  bool rs = false;                 // ... with the decode in the consumers' registers (RS wgmmas)
  int64_t workspace_bytes = 0;
  int64_t counters = 0;  // the u kernel's split-K counters (0 when it does not split K)
  std::string error;
};
MmaPlan plan_qlora_mma(int64_t M, int64_t N, int64_t K, int64_t r, int variant, int block_m);

// The LoRA term folded into the warp-specialized kernels' reductions (qlora_mma.cu's forward,
// qlora_dx.cu's dx): lora_fold_chunks(r) extra chunks of kLoraRanks ranks after W's, u's (forward)
// or gB's (dx) float32 columns and B's (forward) or A's (dx) ranks copied by TMA straight from those
// tensors (16-byte aligned; r % 8 == 0 keeps every row stride a multiple of 16 bytes); other ranks:
// the epilogue adds the term. No launch and no workspace of its own.
constexpr int kLoraRanks = 32;
inline int64_t lora_fold_chunks(int64_t r) { return r % 8 == 0 ? (r + kLoraRanks - 1) / kLoraRanks : 0; }

// y (M, N) = x·Wᵀ + scale·u·Bᵀ + bias and u (M, r) = x_lora·Aᵀ (float32) on tensor cores, any
// M >= 1 (meant for M > 16). Same argument conventions as launch_qlora_gemv; packed, x, x_lora,
// A, y and the workspace 16-byte aligned, the workspace at least the plan's bytes (checked).
// u_given != 0: u already holds x_lora·Aᵀ (the caller computed it, e.g. by cuBLAS); no u kernel
// runs, x_lora and A are not read and no workspace is needed. fold_lora != 0: where the plan is
// warp-specialized and lora_fold_chunks(r) > 0 (r % 8 == 0), the LoRA term is folded into the
// reduction as that many extra chunks of 32 ranks (tf32 MMAs of u's columns and s·B's ranks, both
// by TMA from u and B: B and u 16-byte aligned); fold_lora = 0, or any other plan: the epilogue adds
// it. Either way one launch after u (two with the u kernel). zeroed_counters / n_zeroed: the u
// kernel's split-K counters as launch_qlora_gemv's counters / n_counters (0: from the workspace,
// after a memset).
std::string launch_qlora_mma(uintptr_t y, uintptr_t x, uintptr_t x_lora, uintptr_t A, uintptr_t B,
                             uintptr_t bias, uintptr_t u, int fold_lora, uintptr_t workspace, int64_t workspace_bytes,
                             int dtype, uintptr_t packed, uintptr_t absmax, uintptr_t quant_map,
                             uintptr_t nested_absmax, uintptr_t nested_quant_map, float nested_offset,
                             int blocksize, int64_t M, int64_t N, int64_t K, int64_t r, float scale,
                             int variant, int block_m, int u_given, uintptr_t zeroed_counters, int64_t n_zeroed,
                             uintptr_t stream);

// u (M, r) float32 = x·Aᵀ alone (the forward's u kernel; e.g. g·B for the backward with A = Bᵀ):
// K a multiple of 64, x, A and the workspace 16-byte aligned, the workspace as
// lora_u_workspace_bytes says for the current device (0 bytes when K is not split; its counters are
// the workspace's, zeroed by a memset before the kernel).
int64_t lora_u_workspace_bytes(int64_t M, int64_t K, int64_t r);
std::string launch_lora_u(uintptr_t u, uintptr_t x, uintptr_t A, uintptr_t workspace, int64_t workspace_bytes,
                          int dtype, int64_t M, int64_t K, int64_t r, uintptr_t stream);

// dx (M, K) = g·W (+ scale·gB·A when gB != 0; gB (M, r) float32 = g·B) on sm_90 (qlora_dx.cu).
// Plan of a call: tokens per block (block_m: 0 = choose, 128 or 256), the reduction split over
// the blocks of a thread-block cluster when few tiles (splits <= 8, 128-token tiles only; no
// workspace), and the kernel: rs (the decode in registers, never split), ws (the warp-specialized
// one, never split) or the SS one. variant: 0 = auto (rs wherever there is no split, ws where the
// call's LoRA term cannot be folded: r % 8 != 0), 1 = ss, 2 = ws, 3 = ws with the LoRA term added
// in the epilogue (as the SS kernel does) instead of folded into the reduction (for comparison),
// 4 = rs (refused when the call's LoRA term cannot be folded). For the current device.
struct DxPlan {
  int block_m = 0, tiles_m = 0, splits = 1;
  int64_t tiles = 0;
  bool ws = false;  // a warp-specialized kernel, ws or rs (never split; the LoRA term folded where it can be)
  bool rs = false;  // qlora_dx_rs_kernel
  std::string error;
};
// lora_r: the rank of the LoRA term the launch folds (r where gB is given, else 0): the rs kernel only where
// it folds that term (r % 8 == 0); under auto the ws kernel otherwise, variant 4 refused.
DxPlan plan_qlora_dx(int64_t M, int64_t N, int64_t K, int64_t lora_r, int block_m, int variant);
// N and K multiples of 64, K of the blocksize (>= 64); dx, g and packed 16-byte aligned (A and gB
// too when folding).
std::string launch_qlora_dx(uintptr_t dx, uintptr_t g, uintptr_t gB, uintptr_t A, int dtype, uintptr_t packed,
                            uintptr_t absmax,
                            uintptr_t quant_map, uintptr_t nested_absmax, uintptr_t nested_quant_map,
                            float nested_offset, int blocksize, int64_t M, int64_t N, int64_t K, int64_t r,
                            float scale, int block_m, int variant, uintptr_t stream);

// Compute capability major and SM count of the current device (cached per device; 0 and 1 when
// there is none).
void current_device(int* major, int* sm_count);

// Number of CUDA devices, and the error text when it is 0.
int cuda_device_count(std::string* error);

}  // namespace nf4lora
