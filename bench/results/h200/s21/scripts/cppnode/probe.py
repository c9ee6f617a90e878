"""Probe: a C++ autograd Function against a Python one with the same ATen calls, and dense_bf16's
layer step, interleaved in one process (fwd+bwd, x, A, B need grad)."""
import json, os, statistics, sys, time
import torch
from torch.utils.cpp_extension import load

dev = "cuda" if torch.cuda.is_available() else "cpu"
dt = torch.bfloat16 if dev == "cuda" else torch.float32
t0 = time.time()
ext = load(name="nf4lora_probe_node", sources=[os.path.join(os.path.dirname(os.path.abspath(__file__)), "node.cpp")],
           extra_cflags=["-O2"], verbose=False)
print("build s", round(time.time() - t0, 1), flush=True)


class PyStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, A, B, W, s):
        u = torch.mm(x, A.t())
        y = torch.mm(x, W.t())
        ctx.save_for_backward(x, u, A, B, W)
        ctx.s = s
        return y

    @staticmethod
    def backward(ctx, g):
        x, u, A, B, W = ctx.saved_tensors
        s = ctx.s
        g = g.contiguous()
        gB = torch.mm(g, B)
        dx = torch.mm(g, W)
        gB16 = gB.clone()
        zero = torch.zeros((), device=g.device, dtype=g.dtype)
        dA = torch.addmm(zero, gB16.t(), x, beta=0, alpha=s)
        dB = torch.addmm(zero, g.t(), u.clone(), beta=0, alpha=s)
        return dx, dA, dB, None, None


def dense(x, A, B, W, s):
    return torch.nn.functional.linear(x, W) + s * torch.nn.functional.linear(torch.nn.functional.linear(x, A), B)


shapes = [(128, 4096, 4096), (128, 14336, 4096), (1024, 4096, 4096), (16, 4096, 4096)] if dev == "cuda" else [(16, 64, 64)]
for (M, N, K) in shapes:
    x = torch.randn(M, K, device=dev, dtype=dt, requires_grad=True)
    A = (torch.randn(16, K, device=dev, dtype=dt) * 0.01).requires_grad_()
    B = (torch.randn(N, 16, device=dev, dtype=dt) * 0.01).requires_grad_()
    W = torch.randn(N, K, device=dev, dtype=dt) * 0.01
    g = torch.randn(M, N, device=dev, dtype=dt)
    fns = {"dense": lambda: dense(x, A, B, W, 0.5), "py": lambda: PyStep.apply(x, A, B, W, 0.5),
           "cpp": lambda: ext.step(x, A, B, W, 0.5)}
    grads = {k: torch.autograd.grad(f(), (x, A, B), g) for k, f in fns.items()}
    same = all(torch.equal(a, b) for a, b in zip(grads["py"], grads["cpp"]))
    steps = {k: (lambda f=f: torch.autograd.grad(f(), (x, A, B), g)) for k, f in fns.items()}
    for f in steps.values():
        for _ in range(20):
            f()
    if dev == "cuda":
        torch.cuda.synchronize()
    res = {k: [] for k in steps}
    for rd in range(6):
        items = list(steps.items())[:: 1 if rd % 2 == 0 else -1]
        for k, f in items:
            t = time.perf_counter()
            for _ in range(100):
                f()
            if dev == "cuda":
                torch.cuda.synchronize()
            res[k].append((time.perf_counter() - t) / 100 * 1e6)
    med = {k: round(statistics.median(v), 1) for k, v in res.items()}
    print(json.dumps({"M": M, "N": N, "K": K, "py_cpp_grads_equal": same, **med,
                      "py/dense": round(med["py"] / med["dense"], 3), "cpp/dense": round(med["cpp"] / med["dense"], 3),
                      "cpp/py": round(med["cpp"] / med["py"], 3)}), flush=True)
