"""Host cost of one fwd+bwd at M = 128 (bench_one's step): wall per step, cProfile, torch profiler."""
import cProfile, io, os, pstats, sys, time
import torch
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
from nf4lora.benchmark import Case, provider_fn, forced_backend, _do_bench
out = os.environ.get("OUT", "/tmp")
res = {}
for M in (128, 4):
  c = Case(M, 4096, 4096, 16, "cuda")
  for name in ("dense_bf16", "nf4lora"):
    fn = provider_fn(name, c)
    x, A, B = (t.detach().requires_grad_() for t in (c.x, c.A, c.B))
    def step():
        with forced_backend(getattr(fn, "backend", None)):
            y = fn(x, A, B)
            return torch.autograd.grad(y, (x, A, B), c.g)
    def fwd():
        with torch.no_grad():
            return fn(x, A, B)
    for _ in range(30): step()
    torch.cuda.synchronize()
    for label, f in (("step", step), ("fwd_nograd", fwd)):
        t = time.perf_counter()
        for _ in range(300): f()
        host = (time.perf_counter() - t) / 300 * 1e6
        torch.cuda.synchronize(); wall = (time.perf_counter() - t) / 300 * 1e6
        print(f"M={M} {name} {label}: host {host:.1f} us/iter, wall {wall:.1f} us/iter, do_bench {_do_bench(f)*1e3:.1f} us", flush=True)
    if name == "nf4lora" and M == 128:
        pr = cProfile.Profile(); pr.enable()
        for _ in range(300): step()
        pr.disable(); torch.cuda.synchronize()
        s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(45); print(s.getvalue()[:9000])
        s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(45); open(f"{out}/cprof_cum.txt", "w").write(s.getvalue())
    if M == 128:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as p:
            for _ in range(20): step()
            torch.cuda.synchronize()
        open(f"{out}/prof_{name}.txt", "w").write(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=40))
