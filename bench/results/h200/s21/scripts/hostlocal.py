from stubs import *
from stubs import _cuda_ext, _default_backend
import stubs
M, N, K, r = int(sys.argv[1]) if len(sys.argv) > 1 else 128, 64, 64, 16
dt = torch.bfloat16
q = quantize_nf4(torch.randn(N, K), 64, True)
variants_extra = {}
x = torch.randn(M, K, dtype=dt, requires_grad=True)
A = (torch.randn(r, K, dtype=dt) * .1).requires_grad_()
B = (torch.randn(N, r, dtype=dt) * .1).requires_grad_()
g = torch.randn(M, N, dtype=dt)
s = 2.0
zero = torch.zeros((), dtype=dt)
ws_bytes = 256

class Floor(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, A, B):
        y = torch.empty((M, N), dtype=dt)
        u = torch.empty((M, r), dtype=torch.float32)
        ws = torch.empty(ws_bytes, dtype=torch.uint8)
        _cuda_ext._C.qlora_mma(y.data_ptr(), x.data_ptr(), x.data_ptr(), A.data_ptr(), B.data_ptr(), 0,
                               u.data_ptr(), 1, ws.data_ptr(), ws_bytes, 2, 1, 2, 3, 4, 5, 0.0, 64, M, N, K, r, s, 0, 0,
                               0, 0)
        ctx.save_for_backward(x, u, A, B)
        return y

    @staticmethod
    def backward(ctx, gy):
        x, u, A, B = ctx.saved_tensors
        gB = gb(gy, B)
        dx = torch.empty((M, K), dtype=dt)
        _cuda_ext._C.qlora_dx(dx.data_ptr(), gy.data_ptr(), gB.data_ptr(), A.data_ptr(), 2, 1, 2, 3, 4, 5, 0.0, 64,
                              M, N, K, r, s, 0, 0, 0)
        gB16 = gB.to(dt)
        dA = torch.addmm(zero, gB16.t(), x, beta=0, alpha=s)
        dB = torch.addmm(zero, gy.t(), u.to(dt), beta=0, alpha=s)
        return dx, dA, dB

def grad_of(f):
    return lambda: torch.autograd.grad(f(), (x, A, B), g)

variants = {"floor": grad_of(lambda: Floor.apply(x, A, B)),
            "shipped": grad_of(lambda: ops.qlora_linear(x, q, A, B, s)),
            "fwd_floor": lambda: Floor.apply(x.detach(), A.detach(), B.detach()),
            "fwd_shipped": lambda: ops.qlora_linear(x.detach(), q, A.detach(), B.detach(), s),
            "fwdg_floor": lambda: Floor.apply(x, A, B),
            "fwdg_shipped": lambda: ops.qlora_linear(x, q, A, B, s)}
variants["shipped"]()
print("path:", ops.last_path)
for f in variants.values():
    for _ in range(200):
        f()
res = {k: [] for k in variants}
for rd in range(10):
    for k, f in variants.items():
        t = time.perf_counter()
        for _ in range(300):
            f()
        res[k].append((time.perf_counter() - t) / 300 * 1e6)
med = {k: round(min(v), 1) for k, v in res.items()}
print(med, "shipped-floor step", round(med["shipped"] - med["floor"], 1), "fwd",
      round(med["fwd_shipped"] - med["fwd_floor"], 1), "fwdg", round(med["fwdg_shipped"] - med["fwdg_floor"], 1))
if "-p" in sys.argv:
    import cProfile, pstats
    cProfile.run("for _ in range(2000): variants['shipped']()", "/tmp/prof")
    pstats.Stats("/tmp/prof").sort_stats("tottime").print_stats(25)
if "-pf" in sys.argv:
    import cProfile, pstats
    cProfile.run("for _ in range(2000): variants['floor']()", "/tmp/prof2")
    pstats.Stats("/tmp/prof2").sort_stats("tottime").print_stats(15)
if "-pfwd" in sys.argv:
    import cProfile, pstats
    cProfile.run("for _ in range(5000): variants['fwd_shipped']()", "/tmp/prof3")
    pstats.Stats("/tmp/prof3").sort_stats("tottime").print_stats(30)
if "-split" in sys.argv:
    fs = {"floor": lambda: Floor.apply(x, A, B), "shipped": lambda: ops.qlora_linear(x, q, A, B, s)}
    out = {}
    for rd in range(8):
        for k, f in fs.items():
            ys = []
            t0 = time.perf_counter()
            for _ in range(300):
                ys.append(f())
            t1 = time.perf_counter()
            for y in ys:
                torch.autograd.grad(y, (x, A, B), g)
            t2 = time.perf_counter()
            out.setdefault(k, []).append(((t1 - t0) / 300 * 1e6, (t2 - t1) / 300 * 1e6))
    for k, v in out.items():
        print(k, "fwd", round(min(a for a, b in v), 1), "bwd", round(min(b for a, b in v), 1))
