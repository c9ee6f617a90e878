"""Host-time breakdown of the M = 128 fwd+bwd step (real µs, no profiler): each piece alone in a loop."""
import json, statistics, sys, time, os
import torch
from nf4lora import ops, _cuda_ext
from nf4lora._cuda_ext import _C
from nf4lora.benchmark import Case, provider_fn

out = os.environ.get("OUT", "/tmp")
rows = []


def host_us(fn, n=200, reps=7):
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    hs, ws = [], []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        h = time.perf_counter()
        torch.cuda.synchronize()
        w = time.perf_counter()
        hs.append((h - t) / n * 1e6)
        ws.append((w - t) / n * 1e6)
    return round(statistics.median(hs), 1), round(statistics.median(ws), 1)


def rec(label, fn, **kw):
    try:
        h, w = host_us(fn, **kw)
        rows.append({"piece": label, "host_us": h, "wall_us": w})
        print(f"{label:48s} host {h:8.1f}  wall {w:8.1f}", flush=True)
    except Exception as e:  # noqa
        print(f"{label:48s} FAILED {type(e).__name__}: {e}", flush=True)


for (M, N, K) in ((128, 4096, 4096), (16, 4096, 4096), (1024, 4096, 4096)):
    print(f"== M={M} N={N} K={K} r=16", flush=True)
    c = Case(M, K, N, 16, "cuda")
    q, s = c.q, c.scale
    x, A, B = (t.detach().requires_grad_() for t in (c.x, c.A, c.B))
    g = c.g
    dense = provider_fn("dense_bf16", c)
    nf = provider_fn("nf4lora", c)

    def step(fn):
        def f():
            y = fn(x, A, B)
            return torch.autograd.grad(y, (x, A, B), g)
        return f

    rec("dense step", step(dense))
    rec("nf4lora step (benchmark provider)", step(nf))
    rec("nf4lora step (ops.qlora_linear direct)", step(lambda x, A, B: ops.qlora_linear(x, q, A, B, s)))

    def fwd_grad():
        return ops.qlora_linear(x, q, A, B, s)
    rec("nf4lora fwd with grad (no backward)", fwd_grad)
    with torch.no_grad():
        rec("nf4lora fwd no_grad", lambda: ops.qlora_linear(c.x, q, c.A, c.B, s))
        rec("dense fwd no_grad", lambda: dense(c.x, c.A, c.B))
    xd, Ad, Bd = c.x, c.A, c.B
    args = (xd, None, q, Ad, Bd, s, None)
    rec("ops._forward", lambda: ops._forward(*args))
    rec("check_linear_inputs", lambda: ops.check_linear_inputs(xd, None, q, Ad, Bd, None))
    rec("select_backend fwd", lambda: ops.select_backend("qlora_linear", q.device, args))
    rec("q.validate_cached", lambda: q.validate_cached())
    if M > _cuda_ext.GEMV_MAX_M:
        rec("qlora_forward_large cublas", lambda: _cuda_ext.qlora_forward_large(xd, None, q, Ad, Bd, s, None, u_by="cublas"))
        rec("qlora_forward_large kernel", lambda: _cuda_ext.qlora_forward_large(xd, None, q, Ad, Bd, s, None, u_by="kernel"))
        rec("_launch_args cublas", lambda: _cuda_ext._launch_args(xd, None, q, Ad, Bd, None, True))
        rec("_launch_args no u", lambda: _cuda_ext._launch_args(xd, None, q, Ad, Bd, None, False))
        keep, y, u, operands, state = _cuda_ext._launch_args(xd, None, q, Ad, Bd, None, True)
        dev = xd.device
        rec("_C.qlora_mma direct (fold, u given)", lambda: _C.qlora_mma(*operands, 1, 0, 0, 2, *state, M, N, K, 16, s, 0, 0, 1, _cuda_ext._stream(dev)))
        rec("_C.plan_qlora_mma", lambda: _C.plan_qlora_mma(M, N, K, 16, 0, 0))
    rec("torch.mm out_dtype f32 (x, A.t())", lambda: torch.mm(xd, Ad.t(), out_dtype=torch.float32))
    rec("torch.mm bf16 (x, A.t())", lambda: torch.mm(xd, Ad.t()))
    rec("torch.mm bf16 (g, B)", lambda: torch.mm(g, Bd))
    rec("torch.mm out_dtype f32 (g, B)", lambda: torch.mm(g, Bd, out_dtype=torch.float32))
    rec("_cuda_ext.lora_u(g, B.t())", lambda: _cuda_ext.lora_u(g, Bd.t()))
    rec("torch.empty (M, N) bf16", lambda: torch.empty((M, N), device="cuda", dtype=torch.bfloat16))
    rec("torch.empty (M, K) bf16", lambda: torch.empty((M, K), device="cuda", dtype=torch.bfloat16))
    uu = torch.mm(xd, Ad.t(), out_dtype=torch.float32)
    gB = torch.mm(g, Bd, out_dtype=torch.float32)
    rec("u.to(bf16)", lambda: uu.to(torch.bfloat16))
    from nf4lora.triton_kernels import qlora_bwd
    gB16 = gB.to(torch.bfloat16)
    rec("_alpha_mm dA (gB16.t(), x)", lambda: qlora_bwd._alpha_mm(gB16.t(), xd, s))
    rec("_alpha_mm dB (g.t(), u16)", lambda: qlora_bwd._alpha_mm(g.t(), gB16, s))
    rec("torch.mm dA plain (gB16.t(), x)", lambda: torch.mm(gB16.t(), xd))
    rec("g.t()", lambda: g.t())
    rec("qlora_dx wrapper", lambda: _cuda_ext.qlora_dx(g, q, gB, Ad, s, True))
    needs = [True, False, True, True]
    rec("ops._backward_body", lambda: ops._backward_body(g, xd, uu, q, Ad, Bd, s, needs))
    rec("ops._check_backward", lambda: ops._check_backward(g, xd, uu, q, Ad, Bd, needs))
    bargs = (g, xd, uu, q, Ad, Bd, s, needs)
    rec("select_backend bwd", lambda: ops.select_backend("qlora_linear_backward", q.device, bargs))
    rec("_cuda_backward", lambda: ops._cuda_backward(g, xd, uu, q, Ad, Bd, s, tuple(needs)))

    class Ident(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, A, B):
            ctx.save_for_backward(A, B)
            return x.view_as(x)

        @staticmethod
        def backward(ctx, gy):
            return gy, None, None
    xs = torch.randn(M, N, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    rec("autograd.Function identity fwd+grad", lambda: torch.autograd.grad(Ident.apply(xs, A, B), (xs,), g))
    rec("x*1 fwd+grad (C++ node)", lambda: torch.autograd.grad(xs * 1, (xs,), g))

json.dump(rows, open(f"{out}/hostbd.json", "w"), indent=0)

# wip-host-u on main by monkeypatching: u by the u kernel (U_BY) and g·B by the u kernel (_GB_FN)
print("== interleaved step A/B: cublas (main) vs u kernel for u and g·B", flush=True)
for (N, K) in ((4096, 4096), (14336, 4096), (4096, 14336)):
    for M in (128, 1024):
        c = Case(M, K, N, 16, "cuda")
        x, A, B = (t.detach().requires_grad_() for t in (c.x, c.A, c.B))

        def st():
            y = ops.qlora_linear(x, c.q, A, B, c.scale)
            return torch.autograd.grad(y, (x, A, B), c.g)

        def setv(name):
            _cuda_ext.U_BY = "cublas" if name in ("cublas",) else "kernel"
            ops._GB_FN = ops._gB_cublas if name in ("cublas", "ukern_fwd") else ops._gB_u_kernel
        names = ("cublas", "ukern_fwd", "ukern_both")
        for nm in names:
            setv(nm)
            for _ in range(20):
                st()
        torch.cuda.synchronize()
        walls = {k: [] for k in names}
        for rd in range(8):
            order = names if rd % 2 == 0 else names[::-1]
            for nm in order:
                setv(nm)
                t = time.perf_counter()
                for _ in range(100):
                    st()
                torch.cuda.synchronize()
                walls[nm].append((time.perf_counter() - t) / 100 * 1e6)
        med = {k: round(statistics.median(v), 1) for k, v in walls.items()}
        print(json.dumps({"M": M, "N": N, "K": K, **med,
                          "ukern_fwd/cublas": round(med["ukern_fwd"] / med["cublas"], 3),
                          "ukern_both/cublas": round(med["ukern_both"] / med["cublas"], 3)}), flush=True)
        setv("cublas")
