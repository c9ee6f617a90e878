// nf4lora._node: the eager path's autograd node in C++ (libtorch), so that the backward runs no
// Python on the autograd engine's thread (bench/results/h200/s21/ run 6: the same ATen calls took
// 0.68-0.85x the step of a Python autograd.Function). It launches nf4lora._C's kernels through the
// launch table that _C exports (launch_table.h) and runs the rest (u by cuBLAS above 128 rows, g·B,
// dA, dB) as ATen calls. ops.py validates every argument and plans the launches (one _EagerPlan per
// call signature) before calling here; this file re-checks only what the raw launches rely on.
#include <torch/extension.h>

#include <string>
#include <vector>

#include "launch_table.h"

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

const Nf4loraLaunchTable* g_table = nullptr;

// The plan's constants (ops.py builds the list once per call signature), by index.
enum Cfg : int64_t {
  kLarge,       // 1: qlora_mma, 0: qlora_gemv
  kLaunch0,     // mma: variant, block_m, -; gemv: splits, tiles, pipeline
  kLaunch1,
  kLaunch2,
  kWsBytes,     // workspace bytes (split-K partial sums)
  kByCublas,    // u = x·Aᵀ by cuBLAS (float32 output) before the main kernel
  kFold,        // fold the LoRA term into the reduction (mma)
  kDxBlockM,    // dx plan: tokens per block (0: the launcher's choice), variant
  kDxVariant,
  kPacked,      // the NF4 state's pointers ...
  kAbsmax,
  kQuantMap,
  kNestedAbsmax,
  kNestedQuantMap,
  kBlocksize,
  kN,
  kK,
  kR,
  kCfgSize
};

at::Tensor aligned(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return reinterpret_cast<uintptr_t>(c.data_ptr()) % 16 == 0 ? c : c.clone();
}

int dtype_code(const at::Tensor& t) { return t.scalar_type() == at::kHalf ? 1 : 2; }

uintptr_t ptr(const at::Tensor& t) { return t.defined() ? reinterpret_cast<uintptr_t>(t.data_ptr()) : 0; }

Nf4loraState state_of(const std::vector<int64_t>& cfg, double nested_offset) {
  Nf4loraState w{};
  w.packed = static_cast<uintptr_t>(cfg[kPacked]);
  w.absmax = static_cast<uintptr_t>(cfg[kAbsmax]);
  w.quant_map = static_cast<uintptr_t>(cfg[kQuantMap]);
  w.nested_absmax = static_cast<uintptr_t>(cfg[kNestedAbsmax]);
  w.nested_quant_map = static_cast<uintptr_t>(cfg[kNestedQuantMap]);
  w.nested_offset = static_cast<float>(nested_offset);
  w.blocksize = static_cast<int>(cfg[kBlocksize]);
  return w;
}

// Every message here is one std::string (std::to_string for numbers), never TORCH_CHECK's several
// arguments: those are joined by a std::ostringstream in this module's own code, and on the H200
// machine, whose compiler links libstdc++ into the module statically, the first number written to
// such a stream crashed the process (bench/results/h200/s22/, run 2: SIGSEGV in
// ostream::_M_insert<long> inside _node.so) instead of raising.
void check(bool ok, const char* msg) { TORCH_CHECK(ok, msg); }

struct QLoRANode : public torch::autograd::Function<QLoRANode> {
  // x (M, K), x_lora (M, K) = dropout(x) or undefined (x itself), A (r, K), B (N, r), bias (N,) or
  // undefined: validated by ops.py (dtype float16 or bfloat16, the devices and shapes of the plan).
  // counters / n_counters: the zeroed split-K counters of this stream (_cuda_ext.zeroed_counters);
  // stream: the current CUDA stream, recorded for the backward's dx launch (the engine runs a node's
  // backward on its forward's stream).
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const c10::optional<at::Tensor>& x_lora,
                            const at::Tensor& A, const at::Tensor& B, const c10::optional<at::Tensor>& bias,
                            double scale, const std::vector<int64_t>& cfg, double nested_offset,
                            const std::vector<at::Tensor>& weight, int64_t counters, int64_t n_counters,
                            int64_t stream) {
    TORCH_CHECK(g_table != nullptr, "nf4lora._node: no launch table (set_launch_table was not called)");
    if (static_cast<int64_t>(cfg.size()) != kCfgSize) {
      const std::string msg = "nf4lora._node: cfg must have " + std::to_string(static_cast<int64_t>(kCfgSize)) +
                              " entries, got " + std::to_string(cfg.size());
      check(false, msg.c_str());
    }
    const at::Tensor xa = aligned(x), Aa = aligned(A), Ba = aligned(B);
    const bool has_xl = x_lora.has_value() && x_lora->defined();
    const at::Tensor xla = has_xl ? aligned(*x_lora) : xa;  // the LoRA branch's input
    const bool has_bias = bias.has_value() && bias->defined();
    const at::Tensor bc = has_bias ? bias->contiguous() : at::Tensor();
    const int64_t M = xa.size(0), N = cfg[kN], K = cfg[kK], r = cfg[kR];
    at::Tensor y = at::empty({M, N}, xa.options());
    const bool by_cublas = cfg[kByCublas] != 0;
    at::Tensor u = by_cublas ? at::mm(xla, Aa.t(), at::kFloat) : at::empty({M, r}, xa.options().dtype(at::kFloat));
    at::Tensor ws;
    if (cfg[kWsBytes] > 0) ws = at::empty({cfg[kWsBytes]}, xa.options().dtype(at::kByte));
    char err[512] = {0};
    const Nf4loraState w = state_of(cfg, nested_offset);
    if (cfg[kLarge]) {
      Nf4loraMmaCall c{};
      c.y = ptr(y), c.x = ptr(xa), c.x_lora = ptr(xla), c.A = ptr(Aa), c.B = ptr(Ba), c.bias = ptr(bc), c.u = ptr(u);
      c.fold_lora = static_cast<int>(cfg[kFold]);
      c.workspace = ptr(ws), c.workspace_bytes = cfg[kWsBytes], c.dtype = dtype_code(xa), c.w = w;
      c.M = M, c.N = N, c.K = K, c.r = r, c.scale = static_cast<float>(scale);
      c.variant = static_cast<int>(cfg[kLaunch0]), c.block_m = static_cast<int>(cfg[kLaunch1]);
      c.u_given = by_cublas ? 1 : 0;
      c.counters = static_cast<uintptr_t>(counters), c.n_counters = n_counters;
      c.stream = static_cast<uintptr_t>(stream);
      check(g_table->qlora_mma(&c, err, sizeof(err)) == 0, err);
    } else {
      Nf4loraGemvCall c{};
      c.y = ptr(y), c.x = ptr(xa), c.x_lora = ptr(xla), c.A = ptr(Aa), c.B = ptr(Ba), c.bias = ptr(bc), c.u = ptr(u);
      c.workspace = ptr(ws), c.dtype = dtype_code(xa), c.w = w;
      c.M = M, c.N = N, c.K = K, c.r = r, c.scale = static_cast<float>(scale);
      c.splits = static_cast<int>(cfg[kLaunch0]), c.tiles = static_cast<int>(cfg[kLaunch1]);
      c.pipeline = static_cast<int>(cfg[kLaunch2]);
      c.counters = static_cast<uintptr_t>(counters), c.n_counters = n_counters;
      c.stream = static_cast<uintptr_t>(stream);
      check(g_table->qlora_gemv(&c, err, sizeof(err)) == 0, err);
    }
    // Only what the needed gradients read: x̃ for dA, u for dB, A for dx, B for g·B.
    ctx->save_for_backward({A.requires_grad() ? xla : at::Tensor(), B.requires_grad() ? u : at::Tensor(), Aa, Ba});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["cfg"] = cfg;
    ctx->saved_data["nested_offset"] = nested_offset;
    ctx->saved_data["stream"] = stream;
    ctx->saved_data["has_bias"] = has_bias;
    ctx->saved_data["has_x_lora"] = has_xl;
    // cfg holds raw pointers to the NF4 state: its tensors stay alive until the backward has run
    // (the layer may be gone or its buffers replaced by then)
    ctx->saved_data["weight"] = weight;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // The engine runs a backward with grad mode on exactly when create_graph=True (double backward,
    // gradient penalties): the kernels' gradients carry no graph, so refuse (ops._NO_DOUBLE_BACKWARD).
    check(!at::GradMode::is_enabled(),
          "nf4lora::qlora_linear: a differentiable backward (create_graph=True: double backward, gradient "
          "penalties) is not supported on the cuda backend, whose gradients are kernel outputs without a graph; "
          "NF4LORA_BACKEND=reference computes a differentiable one");
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &xs = saved[0], &u = saved[1], &A = saved[2], &B = saved[3];
    const double scale = ctx->saved_data["scale"].toDouble();
    const std::vector<int64_t> cfg = ctx->saved_data["cfg"].toIntVector();
    // The edges are the variable inputs: x, x_lora when given, A, B, and the bias when given.
    const bool has_xl = ctx->saved_data["has_x_lora"].toBool();
    const size_t e = has_xl ? 1 : 0;
    const bool need_dx = ctx->needs_input_grad(0), need_dxl = has_xl && ctx->needs_input_grad(1);
    const bool need_dA = ctx->needs_input_grad(1 + e), need_dB = ctx->needs_input_grad(2 + e);
    const bool need_bias = ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(3 + e);
    const at::Tensor g = aligned(grads[0]);
    at::Tensor dx, dxl, dA, dB, dbias;
    // dx = g·W + s·(g·B)·A where x̃ is x; with x̃ = dropout(x) the LoRA term is x̃'s gradient, dx_lora
    const bool lora_in_dx = need_dx && !has_xl;
    at::Tensor gB;
    if (lora_in_dx || need_dxl || need_dA) gB = at::mm(g, B, at::kFloat);  // (M, r) float32
    if (need_dx) {
      const int64_t M = g.size(0), N = cfg[kN], K = cfg[kK], r = cfg[kR];
      dx = at::empty({M, K}, g.options());
      Nf4loraDxCall c{};
      c.dx = ptr(dx), c.g = ptr(g), c.gB = lora_in_dx ? ptr(gB) : 0, c.A = ptr(A), c.dtype = dtype_code(g);
      c.w = state_of(cfg, ctx->saved_data["nested_offset"].toDouble());
      c.M = M, c.N = N, c.K = K, c.r = r, c.scale = static_cast<float>(scale);
      c.block_m = static_cast<int>(cfg[kDxBlockM]), c.variant = static_cast<int>(cfg[kDxVariant]);
      c.stream = static_cast<uintptr_t>(ctx->saved_data["stream"].toInt());
      char err[512] = {0};
      check(g_table->qlora_dx(&c, err, sizeof(err)) == 0, err);
    }
    const at::Tensor zero = at::empty({}, g.options());  // beta = 0: never read
    const at::Tensor gB16 = need_dxl || need_dA ? gB.to(g.scalar_type()) : at::Tensor();
    if (need_dxl) dxl = at::addmm(zero, gB16, A, 0, scale);
    if (need_dA) dA = at::addmm(zero, gB16.t(), xs, 0, scale);
    if (need_dB) dB = at::addmm(zero, g.t(), u.to(g.scalar_type()), 0, scale);
    if (need_bias) dbias = g.sum(0);
    return {dx,          dxl,         dA,          dB,          dbias,       at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor qlora_apply(const at::Tensor& x, const c10::optional<at::Tensor>& x_lora, const at::Tensor& A,
                       const at::Tensor& B, const c10::optional<at::Tensor>& bias,
                       double scale, const std::vector<int64_t>& cfg, double nested_offset,
                       const std::vector<at::Tensor>& weight, int64_t counters, int64_t n_counters, int64_t stream) {
  return QLoRANode::apply(x, x_lora, A, B, bias, scale, cfg, nested_offset, weight, counters, n_counters, stream);
}

void set_launch_table(pybind11::capsule table, int version) {
  // only _C's own capsule (checked by its name): any other pointer would be called as launchers
  check(PyCapsule_IsValid(table.ptr(), kNf4loraLaunchTableName) != 0,
        "nf4lora._node: set_launch_table takes the capsule of nf4lora._C.launch_table()");
  const auto* tbl =
      static_cast<const Nf4loraLaunchTable*>(PyCapsule_GetPointer(table.ptr(), kNf4loraLaunchTableName));
  if (version != kNf4loraLaunchTableVersion || tbl->version != kNf4loraLaunchTableVersion) {
    const std::string msg = "nf4lora._node: launch table version " + std::to_string(version) + " from _C (table " +
                            std::to_string(tbl->version) + "), this module takes " +
                            std::to_string(kNf4loraLaunchTableVersion) + " (rebuild both)";
    check(false, msg.c_str());
  }
  g_table = tbl;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "nf4lora's eager autograd node in C++ (launches nf4lora._C's kernels through its launch table)";
  m.def("set_launch_table", &set_launch_table, pybind11::arg("table"), pybind11::arg("version"),
        "Take nf4lora._C.launch_table() (a capsule) of the given version.");
  m.def("qlora_apply", &qlora_apply,
        "y = x·Wᵀ + scale·(x̃·Aᵀ)·Bᵀ + bias (x̃ = x_lora, or x where None) through a C++ autograd node "
        "(see node.cpp); cfg: the plan's constants, weight: the NF4 state's tensors its pointers point into "
        "(kept alive for the backward)");
  m.attr("CFG_SIZE") = static_cast<int64_t>(kCfgSize);
}
