"""Forward only (no grad): u by cuBLAS (U_KERNEL_MAX_M = 0) vs the u kernel (1024), interleaved walls."""
import json, statistics, time, torch
from nf4lora import ops, _cuda_ext
from nf4lora.benchmark import Case
for (N, K) in ((4096, 4096), (14336, 4096), (4096, 14336), (8192, 8192), (28672, 8192)):
    for M in (128, 512, 1024):
        c = Case(M, K, N, 16, "cuda")
        f = lambda: ops.qlora_linear(c.x, c.q, c.A, c.B, c.scale)
        w = {"cublas": [], "kernel": []}
        with torch.no_grad():
            for lim in (0, 1024):
                _cuda_ext.U_KERNEL_MAX_M = lim
                for _ in range(20): f()
            torch.cuda.synchronize()
            for rd in range(8):
                for name in (("cublas", "kernel") if rd % 2 == 0 else ("kernel", "cublas")):
                    _cuda_ext.U_KERNEL_MAX_M = 0 if name == "cublas" else 1024
                    t = time.perf_counter()
                    for _ in range(100): f()
                    torch.cuda.synchronize()
                    w[name].append((time.perf_counter() - t) / 100 * 1e6)
        m = {k: round(statistics.median(v), 1) for k, v in w.items()}
        print(json.dumps({"M": M, "N": N, "K": K, **m, "kernel/cublas": round(m["kernel"] / m["cublas"], 3)}), flush=True)
