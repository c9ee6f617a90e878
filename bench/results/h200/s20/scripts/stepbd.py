"""Where the M = 128 step's host time goes beyond its parts (real µs, interleaved variants)."""
import statistics, sys, time, os, threading
import torch
from nf4lora import ops, _cuda_ext
from nf4lora.benchmark import Case, provider_fn

M, N, K = int(os.environ.get("BM", 128)), 4096, 4096
c = Case(M, K, N, 16, "cuda")
q, s, g = c.q, c.scale, c.g
x, A, B = (t.detach().requires_grad_() for t in (c.x, c.A, c.B))
xd, Ad, Bd = c.x, c.A, c.B
needs = [True, False, True, True]
with torch.no_grad():
    y0, u0 = ops._forward(xd, None, q, Ad, Bd, s, None)
dx0, _, dA0, dB0 = ops._backward_body(g, xd, u0, q, Ad, Bd, s, needs)
dense = provider_fn("dense_bf16", c)
T = {"fwd_in": 0.0, "bwd_in": 0.0, "n": 0}
orig_fwd, orig_bwd = ops._EagerQLoRALinear.forward, ops._EagerQLoRALinear.backward


class Timed(ops._EagerQLoRALinear):
    @staticmethod
    def forward(ctx, *a):
        t = time.perf_counter()
        r = orig_fwd(ctx, *a)
        T["fwd_in"] += time.perf_counter() - t
        return r

    @staticmethod
    def backward(ctx, gy):
        t = time.perf_counter()
        r = orig_bwd(ctx, gy)
        T["bwd_in"] += time.perf_counter() - t
        T["n"] += 1
        return r


class FwdOnly(torch.autograd.Function):  # the real forward, a backward returning precomputed grads
    @staticmethod
    def forward(ctx, x, A, B):
        y, u = ops._eager_forward(x, None, q, A, B, s, None)
        ctx.save_for_backward(x, u, A, B)
        return y

    @staticmethod
    def backward(ctx, gy):
        ctx.saved_tensors
        return dx0, dA0, dB0


class BwdOnly(torch.autograd.Function):  # precomputed y, the real backward body
    @staticmethod
    def forward(ctx, x, A, B):
        ctx.save_for_backward(x, u0, A, B)
        return y0.clone()

    @staticmethod
    def backward(ctx, gy):
        xs, u, A_, B_ = ctx.saved_tensors
        dx, _, dA, dB = ops._backward_body(gy.contiguous(), xs, u, q, A_, B_, s, needs)
        return dx, dA, dB


def grad_of(f):
    return lambda: torch.autograd.grad(f(), (x, A, B), g)


variants = {
    "dense step": grad_of(lambda: dense(x, A, B)),
    "nf4lora step": grad_of(lambda: ops.qlora_linear(x, q, A, B, s)),
    "parts: _forward no_grad + _backward_body": None,
    "FwdOnly (real fwd, canned bwd)": grad_of(lambda: FwdOnly.apply(x, A, B)),
    "BwdOnly (canned fwd, real bwd)": grad_of(lambda: BwdOnly.apply(x, A, B)),
    "Timed eager Function step": grad_of(lambda: Timed.apply(x, None, A, B, None, q, s)),
}


def parts():
    with torch.no_grad():
        y, u = ops._forward(xd, None, q, Ad, Bd, s, None)
    return ops._backward_body(g, xd, u, q, Ad, Bd, s, needs)


variants["parts: _forward no_grad + _backward_body"] = parts


def nomt(f):
    def run():
        with torch.autograd.set_multithreading_enabled(False):
            return f()
    return run


variants["nf4lora step, engine multithreading off"] = nomt(variants["nf4lora step"])
variants["dense step, engine multithreading off"] = nomt(variants["dense step"])
variants["BwdOnly, multithreading off"] = nomt(variants["BwdOnly (canned fwd, real bwd)"])

for f in variants.values():
    for _ in range(20):
        f()
torch.cuda.synchronize()
res = {k: [] for k in variants}
for rd in range(6):
    items = list(variants.items())
    if rd % 2:
        items = items[::-1]
    for k, f in items:
        if k.startswith("Timed"):
            T.update(fwd_in=0.0, bwd_in=0.0, n=0)
        t = time.perf_counter()
        for _ in range(100):
            f()
        torch.cuda.synchronize()
        res[k].append((time.perf_counter() - t) / 100 * 1e6)
        if k.startswith("Timed"):
            res.setdefault("  (inside Timed forward)", []).append(T["fwd_in"] / 100 * 1e6)
            res.setdefault("  (inside Timed backward)", []).append(T["bwd_in"] / 100 * 1e6)
print(f"M={M} N={N} K={K} r=16, threads={threading.active_count()}, switchinterval={sys.getswitchinterval()}")
for k, v in res.items():
    print(f"{k:48s} {statistics.median(v):8.1f} us  (min {min(v):.1f}, max {max(v):.1f})", flush=True)
