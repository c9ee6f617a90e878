"""Host-time A/B for branch wip-host-u (NOT RUN YET): the fwd+bwd step (the grid's nf4lora fwdbwd) with u and g·B by
cuBLAS (U_KERNEL_MAX_M = 0, main's behaviour) against the u kernel up to M = 1024, interleaved in one process: host
wall per step over blocks of 100 steps in alternating order (medians), then do_bench of each. Run from the repository
root on the GPU machine: python3 bench/results/h200/s19/scripts/hostab.py"""
import json, statistics, sys, time
import torch
sys.path.insert(0, "bench")
from nf4lora import _cuda_ext
from nf4lora.benchmark import Case, provider_fn, _do_bench

for (N, K) in ((4096, 4096), (14336, 4096), (4096, 14336)):
    for M in (16, 128, 1024):
        c = Case(M, K, N, 16, "cuda")
        fn = provider_fn("nf4lora", c)
        x, A, B = (t.detach().requires_grad_() for t in (c.x, c.A, c.B))

        def step():
            y = fn(x, A, B)
            return torch.autograd.grad(y, (x, A, B), c.g)

        walls = {"cublas": [], "kernel": []}
        for limit in (0, 1024):
            _cuda_ext.U_KERNEL_MAX_M = limit
            for _ in range(20):
                step()
        torch.cuda.synchronize()
        for rd in range(8):
            for name in (("cublas", "kernel") if rd % 2 == 0 else ("kernel", "cublas")):
                _cuda_ext.U_KERNEL_MAX_M = 0 if name == "cublas" else 1024
                t = time.perf_counter()
                for _ in range(100):
                    step()
                torch.cuda.synchronize()
                walls[name].append((time.perf_counter() - t) / 100 * 1e6)
        row = {"M": M, "N": N, "K": K, **{f"{k}_wall_us": round(statistics.median(v), 1) for k, v in walls.items()}}
        for name, limit in (("cublas", 0), ("kernel", 1024)):
            _cuda_ext.U_KERNEL_MAX_M = limit
            row[f"{name}_bench_us"] = round(_do_bench(step) * 1e3, 1)
        row["kernel/cublas_wall"] = round(row["kernel_wall_us"] / row["cublas_wall_us"], 3)
        print(json.dumps(row), flush=True)
