// Probe (s21): the same ATen calls as a Python autograd.Function, from a C++ autograd Function
// (the backward runs without Python on the engine's thread). Stand-ins for nf4lora's kernels:
// main forward kernel = mm(x, Wᵀ), u kernel = mm(x, Aᵀ), dx kernel = mm(g, W).
#include <torch/extension.h>
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct Step : public torch::autograd::Function<Step> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor A, torch::Tensor B,
                               torch::Tensor W, double s) {
    auto u = at::mm(x, A.t());
    auto y = at::mm(x, W.t());
    ctx->save_for_backward({x, u, A, B, W});
    ctx->saved_data["s"] = s;
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto v = ctx->get_saved_variables();
    const auto &x = v[0], &u = v[1], &A = v[2], &B = v[3], &W = v[4];
    const double s = ctx->saved_data["s"].toDouble();
    auto g = grads[0].contiguous();
    auto gB = at::mm(g, B);
    auto dx = at::mm(g, W);
    auto gB16 = gB.clone();
    auto zero = at::zeros({}, g.options());
    auto dA = at::addmm(zero, gB16.t(), x, 0, s);
    auto dB = at::addmm(zero, g.t(), u.clone(), 0, s);
    return {dx, dA, dB, torch::Tensor(), torch::Tensor()};
  }
};

torch::Tensor step(torch::Tensor x, torch::Tensor A, torch::Tensor B, torch::Tensor W, double s) {
  return Step::apply(x, A, B, W, s);
}
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("step", &step); }
