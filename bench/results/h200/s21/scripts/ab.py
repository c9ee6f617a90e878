"""The floor of a Python autograd.Function path: the same kernels and ATen ops as the CUDA path with no
checks, dispatch or wrappers (state arguments precomputed), against the shipped step, interleaved."""
import json, statistics, sys, time, os
import torch
from nf4lora import ops, _cuda_ext
from nf4lora._cuda_ext import _C
from nf4lora.benchmark import Case, provider_fn

import nf4lora
TREE = os.environ.get('TREE', '?') + ':' + nf4lora.__file__
res_all = []
for (M, N, K) in ((128, 4096, 4096), (128, 14336, 4096), (128, 4096, 14336), (1024, 4096, 4096), (16, 4096, 4096),
                  (1, 4096, 4096)):
    c = Case(M, K, N, 16, "cuda")
    q, s, g = c.q, c.scale, c.g
    x, A, B = (t.detach().requires_grad_() for t in (c.x, c.A, c.B))
    packed, state = _cuda_ext._nf4_args(q)
    dev = x.device
    stream = _cuda_ext._stream(dev)
    r = 16
    ws_bytes = _C.plan_qlora_mma(M, N, K, r, 0, 0)[3]
    # the launcher's split-K counters: a zeroed buffer where the tree's _C takes one (f610568+)
    extra = _cuda_ext.zeroed_counters(dev, stream, 1) if len(_C.plan_qlora_mma(M, N, K, r, 0, 0)) == 5 else ()
    zero = torch.zeros((), device=dev, dtype=torch.bfloat16)

    class Floor(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, A, B):
            y = torch.empty((M, N), device=dev, dtype=torch.bfloat16)
            u = torch.empty((M, r), device=dev, dtype=torch.float32)
            ws = torch.empty(ws_bytes, device=dev, dtype=torch.uint8)
            _C.qlora_mma(y.data_ptr(), x.data_ptr(), x.data_ptr(), A.data_ptr(), B.data_ptr(), 0, u.data_ptr(), 1,
                         ws.data_ptr(), ws_bytes, 2, *state, M, N, K, r, s, 0, 0, 0, *extra, stream)
            ctx.save_for_backward(x, u, A, B)
            return y

        @staticmethod
        def backward(ctx, gy):
            x, u, A, B = ctx.saved_tensors
            gB = torch.mm(gy, B, out_dtype=torch.float32)
            dx = torch.empty((M, K), device=dev, dtype=torch.bfloat16)
            _C.qlora_dx(dx.data_ptr(), gy.data_ptr(), gB.data_ptr(), A.data_ptr(), 2, *state, M, N, K, r, s, 0, 0,
                        stream)
            gB16 = gB.to(torch.bfloat16)
            dA = torch.addmm(zero, gB16.t(), x, beta=0, alpha=s)
            dB = torch.addmm(zero, gy.t(), u.to(torch.bfloat16), beta=0, alpha=s)
            return dx, dA, dB

    dense = provider_fn("dense_bf16", c)

    def grad_of(f):
        return lambda: torch.autograd.grad(f(), (x, A, B), g)

    x0, A0, B0 = x.detach(), A.detach(), B.detach()

    def nograd(f):
        def run():
            with torch.no_grad():
                return f()
        return run

    variants = {"dense": grad_of(lambda: dense(x, A, B)),
                "shipped": grad_of(lambda: ops.qlora_linear(x, q, A, B, s)),
                "fwd_dense": nograd(lambda: dense(x0, A0, B0)),
                "fwd_shipped": nograd(lambda: ops.qlora_linear(x0, q, A0, B0, s))}
    if M > 16:
        variants["floor"] = grad_of(lambda: Floor.apply(x, A, B))
        # correctness of the floor against the shipped path (same kernels)
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
            t = time.perf_counter()
            for _ in range(100):
                f()
            torch.cuda.synchronize()
            res[k].append((time.perf_counter() - t) / 100 * 1e6)
    med = {k: round(statistics.median(v), 1) for k, v in res.items()}
    row = {"tree": TREE, "M": M, "N": N, "K": K, **med, "shipped/dense": round(med["shipped"] / med["dense"], 3),
           "fwd_shipped/dense": round(med["fwd_shipped"] / med["fwd_dense"], 3)}
    if "floor" in med:
        row["floor/dense"] = round(med["floor"] / med["dense"], 3)
        row["floor/shipped"] = round(med["floor"] / med["shipped"], 3)
    print(json.dumps(row), flush=True)
