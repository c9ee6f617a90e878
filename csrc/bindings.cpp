// The CUDA module of nf4lora (imported as nf4lora._C). It links no libtorch: Python
// passes device pointers, sizes and the CUDA stream as integers. ops.py validates every
// argument (dtypes, sizes, devices) before calling here; the launchers re-check what a kernel
// relies on for memory safety (alignment, blocksize) and report CUDA errors as RuntimeError.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "launch_table.h"
#include "launchers.h"

namespace py = pybind11;

namespace {

void check(const std::string& err) {
  if (!err.empty()) throw std::runtime_error("nf4lora._C: " + err);
}

// --- the launch table (launch_table.h) for nf4lora._node ---------------------------------------
int report(const std::string& msg, char* err, size_t errlen) {
  if (msg.empty()) return 0;
  if (err != nullptr && errlen > 0) {
    const std::string full = "nf4lora._C: " + msg;
    const size_t n = full.size() < errlen - 1 ? full.size() : errlen - 1;
    full.copy(err, n);
    err[n] = '\0';
  }
  return 1;
}

int table_gemv(const Nf4loraGemvCall* c, char* err, size_t errlen) {
  const Nf4loraState& w = c->w;
  return report(nf4lora::launch_qlora_gemv(c->y, c->x, c->x_lora, c->A, c->B, c->bias, c->u, c->workspace, c->dtype,
                                           w.packed, w.absmax, w.quant_map, w.nested_absmax, w.nested_quant_map,
                                           w.nested_offset, w.blocksize, c->M, c->N, c->K, c->r, c->scale, c->splits,
                                           c->tiles, c->pipeline, c->counters, c->n_counters, c->stream),
                err, errlen);
}

int table_mma(const Nf4loraMmaCall* c, char* err, size_t errlen) {
  const Nf4loraState& w = c->w;
  return report(nf4lora::launch_qlora_mma(c->y, c->x, c->x_lora, c->A, c->B, c->bias, c->u, c->fold_lora, c->workspace,
                                          c->workspace_bytes, c->dtype, w.packed, w.absmax, w.quant_map,
                                          w.nested_absmax, w.nested_quant_map, w.nested_offset, w.blocksize, c->M,
                                          c->N, c->K, c->r, c->scale, c->variant, c->block_m, c->u_given, c->counters,
                                          c->n_counters, c->stream),
                err, errlen);
}

int table_dx(const Nf4loraDxCall* c, char* err, size_t errlen) {
  const Nf4loraState& w = c->w;
  return report(nf4lora::launch_qlora_dx(c->dx, c->g, c->gB, c->A, c->dtype, w.packed, w.absmax, w.quant_map,
                                         w.nested_absmax, w.nested_quant_map, w.nested_offset, w.blocksize, c->M,
                                         c->N, c->K, c->r, c->scale, c->block_m, c->variant, c->stream),
                err, errlen);
}

const Nf4loraLaunchTable kLaunchTable = {kNf4loraLaunchTableVersion, table_gemv, table_mma, table_dx};

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.def(
      "launch_table",
      []() { return py::capsule(static_cast<const void*>(&kLaunchTable), kNf4loraLaunchTableName); },
      "The launchers as a table of C function pointers (launch_table.h), for nf4lora._node.");
  m.attr("LAUNCH_TABLE_VERSION") = kNf4loraLaunchTableVersion;
  m.def(
      "capture_id",
      [](uintptr_t stream) -> unsigned long long {
        cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
        unsigned long long id = 0;
        if (cudaStreamGetCaptureInfo(reinterpret_cast<cudaStream_t>(stream), &status, &id) != cudaSuccess) {
          cudaGetLastError();  // (no device, or a stream it does not know: not capturing)
          return 0;
        }
        return status == cudaStreamCaptureStatusActive ? id : 0;
      },
      py::arg("stream"),
      "The id of the CUDA graph capture under way on stream (a cudaStream_t as an integer), 0 where none is.");
  m.doc() = "nf4lora CUDA kernels (raw pointers + shapes + stream; no libtorch)";
  m.def(
      "dequantize_nf4",
      [](uintptr_t out, int out_dtype, uintptr_t packed, uintptr_t absmax, uintptr_t quant_map,
         uintptr_t nested_absmax, uintptr_t nested_quant_map, float nested_offset, int64_t n,
         int blocksize, uintptr_t stream) {
        check(nf4lora::launch_dequantize_nf4(out, out_dtype, packed, absmax, quant_map,
                                              nested_absmax, nested_quant_map, nested_offset, n,
                                              blocksize, stream));
      },
      py::arg("out"), py::arg("out_dtype"), py::arg("packed"), py::arg("absmax"),
      py::arg("quant_map"), py::arg("nested_absmax"), py::arg("nested_quant_map"),
      py::arg("nested_offset"), py::arg("n"), py::arg("blocksize"), py::arg("stream"),
      "Dequantize n NF4 elements into out (W (N, K) row-major). Pointers are device addresses; "
      "nested_absmax = 0 means absmax is float32.");
  m.def(
      "plan_qlora_gemv",
      [](int64_t M, int64_t N, int64_t K, int sm_count, int tiles, int pipeline) {
        const nf4lora::GemvPlan plan = nf4lora::plan_qlora_gemv(M, N, K, sm_count, tiles, pipeline);
        return py::make_tuple(plan.splits, plan.tiles, plan.workspace_bytes, plan.counters);
      },
      py::arg("M"), py::arg("N"), py::arg("K"), py::arg("sm_count"), py::arg("tiles") = 2, py::arg("pipeline") = 1,
      "(splits, tiles, workspace bytes, split-K counters) of the small-M forward for this shape, tiles (1 or 2; "
      "0 = the planner's choice) and pipeline (0 = auto, for the current device).");
  m.def(
      "qlora_gemv",
      [](uintptr_t y, uintptr_t x, uintptr_t x_lora, uintptr_t A, uintptr_t B, uintptr_t bias,
         uintptr_t u, uintptr_t workspace, int dtype, uintptr_t packed, uintptr_t absmax,
         uintptr_t quant_map, uintptr_t nested_absmax, uintptr_t nested_quant_map,
         float nested_offset, int blocksize, int64_t M, int64_t N, int64_t K, int64_t r,
         float scale, int splits, int tiles, int pipeline, uintptr_t counters, int64_t n_counters,
         uintptr_t stream) {
        check(nf4lora::launch_qlora_gemv(y, x, x_lora, A, B, bias, u, workspace, dtype, packed, absmax,
                                         quant_map, nested_absmax, nested_quant_map, nested_offset,
                                         blocksize, M, N, K, r, scale, splits, tiles, pipeline, counters,
                                         n_counters, stream));
      },
      "y = x·Wᵀ + scale·u·Bᵀ + bias and u = x_lora·Aᵀ for 1 <= M <= 16; pipeline 0 = auto, 1 = "
      "cp.async, 2 = TMA, 3 = registers; counters = 0: the workspace's split-K counters, zeroed by the "
      "launcher, else n_counters counters that are zero on entry (see launchers.h).");
  m.def(
      "plan_qlora_mma",
      [](int64_t M, int64_t N, int64_t K, int64_t r, int variant, int block_m) {
        const nf4lora::MmaPlan plan = nf4lora::plan_qlora_mma(M, N, K, r, variant, block_m);
        check(plan.error);
        return py::make_tuple(plan.splits, plan.k_splits, plan.block_m, plan.workspace_bytes, plan.counters);
      },
      py::arg("M"), py::arg("N"), py::arg("K"), py::arg("r"), py::arg("variant") = 0, py::arg("block_m") = 0,
      "(u K slices, tile K slices, x rows per block, workspace bytes, the u kernel's split-K counters) of the "
      "large-M forward on the current device.");
  m.def(
      "qlora_mma",
      [](uintptr_t y, uintptr_t x, uintptr_t x_lora, uintptr_t A, uintptr_t B, uintptr_t bias,
         uintptr_t u, int fold_lora, uintptr_t workspace, int64_t workspace_bytes, int dtype, uintptr_t packed,
         uintptr_t absmax, uintptr_t quant_map, uintptr_t nested_absmax, uintptr_t nested_quant_map,
         float nested_offset, int blocksize, int64_t M, int64_t N, int64_t K, int64_t r, float scale,
         int variant, int block_m, int u_given, uintptr_t zeroed_counters, int64_t n_zeroed, uintptr_t stream) {
        check(nf4lora::launch_qlora_mma(y, x, x_lora, A, B, bias, u, fold_lora, workspace, workspace_bytes, dtype,
                                        packed, absmax, quant_map, nested_absmax, nested_quant_map,
                                        nested_offset, blocksize, M, N, K, r, scale, variant, block_m,
                                        u_given, zeroed_counters, n_zeroed, stream));
      },
      "y = x·Wᵀ + scale·u·Bᵀ + bias and u = x_lora·Aᵀ on tensor cores for any M; u_given: u already "
      "holds x_lora·Aᵀ, no u kernel runs; fold_lora: fold the LoRA term into the reduction where the plan "
      "and the rank allow; zeroed_counters = 0: the u kernel's split-K counters from the workspace, zeroed by "
      "the launcher, else n_zeroed counters that are zero on entry (see launchers.h).");
  m.def("lora_fold_chunks", &nf4lora::lora_fold_chunks, py::arg("r"),
        "Extra reduction chunks (32 ranks each) of the folded LoRA term of the large-M forward and of the dx "
        "for rank r; 0: neither folds this rank (r % 8 != 0: their epilogues add the LoRA term).");
  m.def("lora_u_workspace", &nf4lora::lora_u_workspace_bytes, py::arg("M"), py::arg("K"), py::arg("r"),
        "Workspace bytes of lora_u for this shape on the current device.");
  m.def(
      "lora_u",
      [](uintptr_t u, uintptr_t x, uintptr_t A, uintptr_t workspace, int64_t workspace_bytes, int dtype, int64_t M,
         int64_t K, int64_t r, uintptr_t stream) {
        check(nf4lora::launch_lora_u(u, x, A, workspace, workspace_bytes, dtype, M, K, r, stream));
      },
      "u (M, r) float32 = x·Aᵀ (see launchers.h).");
  m.def(
      "plan_qlora_dx",
      [](int64_t M, int64_t N, int64_t K, int block_m, int variant, int64_t r) {
        const nf4lora::DxPlan plan = nf4lora::plan_qlora_dx(M, N, K, r, block_m, variant);
        check(plan.error);
        return py::make_tuple(plan.block_m, plan.splits, plan.tiles, plan.ws, plan.rs);
      },
      py::arg("M"), py::arg("N"), py::arg("K"), py::arg("block_m"), py::arg("variant") = 0, py::arg("r") = 0,
      "(block_m, splits, tiles, ws, rs) of qlora_dx for this shape on the current device (variant: 0 auto, "
      "1 ss, 2 ws, 3 ws with the LoRA term in the epilogue, 4 rs; r: the rank of the LoRA term the launch "
      "adds, 0 for none — the rs kernel folds it only where r % 8 == 0: ws then under auto, variant 4 refused).");
  m.def(
      "qlora_dx",
      [](uintptr_t dx, uintptr_t g, uintptr_t gB, uintptr_t A, int dtype, uintptr_t packed,
         uintptr_t absmax, uintptr_t quant_map, uintptr_t nested_absmax,
         uintptr_t nested_quant_map, float nested_offset, int blocksize, int64_t M, int64_t N, int64_t K, int64_t r,
         float scale, int block_m, int variant, uintptr_t stream) {
        check(nf4lora::launch_qlora_dx(dx, g, gB, A, dtype, packed, absmax, quant_map,
                                       nested_absmax, nested_quant_map, nested_offset, blocksize, M, N, K, r, scale,
                                       block_m, variant, stream));
      },
      "dx = g·W (+ scale·gB·A when gB != 0) on sm_90 (see launchers.h).");
  m.def(
      "cuda_device_count",
      []() {
        std::string err;
        const int count = nf4lora::cuda_device_count(&err);
        return py::make_tuple(count, err);
      },
      "(number of CUDA devices, error text when there are none). Never raises.");
}
