import sys, time
sys.path.insert(0, "/work/main/.s21")
sys.argv = ["x", "128"]
import hostlocal as H   # builds the stubs, tensors and Floor (its timing runs too; ignore)
import torch
from nf4lora import ops
x, A, B, q, s, g = H.x, H.A, H.B, H.q, H.s, H.g
y = ops.qlora_linear(x, q, A, B, s)
node = y.grad_fn
class Ctx: pass
c = Ctx()
c.saved_tensors = (x.detach(), torch.empty(128, 16), A.detach(), B.detach())
c.needs = [True, False, True, True]; c.need_bias = False
c.plan = ops._eager_plan(x, None, q, A, B, s, None); c.scale = s
fs = {"shipped": lambda: ops._EagerQLoRALinear.backward(c, g), "floor": lambda: H.Floor.backward(c, g)}
for f in fs.values():
    for _ in range(500): f()
res = {k: [] for k in fs}
for rd in range(10):
    for k, f in fs.items():
        t = time.perf_counter()
        for _ in range(1000): f()
        res[k].append((time.perf_counter() - t) / 1000 * 1e6)
print("bwd body", {k: round(min(v), 2) for k, v in res.items()})
from nf4lora import _cuda_ext, lora_grads as LG
gB = H.gb(g, B.detach())
dxp = _cuda_ext.plan_dx(g, q, 16)
A_, xs, u = A.detach(), x.detach(), torch.empty(128, 16)
zero = torch.zeros((), dtype=torch.bfloat16)
def floor_lora():
    gB16 = gB.to(torch.bfloat16)
    dA = torch.addmm(zero, gB16.t(), xs, beta=0, alpha=s)
    dB = torch.addmm(zero, g.t(), u.to(torch.bfloat16), beta=0, alpha=s)
def floor_dx():
    dx = torch.empty((128, 64), dtype=torch.bfloat16)
    _cuda_ext._C.qlora_dx(dx.data_ptr(), g.data_ptr(), gB.data_ptr(), A_.data_ptr(), 2, 1, 2, 3, 4, 5, 0.0, 64,
                              128, 64, 64, 16, s, 0, 0, 0)
fs = {"run_dx": lambda: _cuda_ext.run_dx(dxp, g, gB, A_, s, True), "floor_dx": floor_dx,
      "lora_grads": lambda: LG.lora_grads(g, gB, xs, u, A_, s, False, True, True), "floor_lora": floor_lora,
      "plan.backward": lambda: c.plan.backward(g, xs, u, A_, B.detach(), s, (True, False, True, True)),
      "cuda_backward": lambda: ops._cuda_backward(g, xs, u, q, A_, B.detach(), s, (True, False, True, True), dx_plan=dxp),
      "gb": lambda: H.gb(g, B.detach())}
for f in fs.values():
    for _ in range(500): f()
res = {k: [] for k in fs}
for rd in range(10):
    for k, f in fs.items():
        t = time.perf_counter()
        for _ in range(1000): f()
        res[k].append((time.perf_counter() - t) / 1000 * 1e6)
print({k: round(min(v), 2) for k, v in res.items()})
