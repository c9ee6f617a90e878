"""A/B of the host path: fwd+bwd step wall time (host-bound at small M) and do_bench, for the
python tree on sys.path (old or new), and the gB options alone. Prints JSON lines."""
import json, os, sys, time
import torch
tag = sys.argv[1]
from nf4lora import ops
from nf4lora.benchmark import Case, provider_fn, forced_backend, _do_bench
from nf4lora import _cuda_ext
print("nf4lora from", ops.__file__, flush=True)
modes = ["-"] if tag == "old" else ["mm", "u_kernel"]
for M in (128, 1024, 4096):
  for K, N in ((4096, 4096), (4096, 14336), (14336, 4096)):
    c = Case(M, K, N, 16, "cuda")
    row = {"tag": tag, "M": M, "K": K, "N": N}
    names = ("dense_bf16", "nf4lora") if M == 128 else ("nf4lora",)
    for name in names:
      for mode in (modes if name == "nf4lora" else ["-"]):
        if mode != "-": ops.CUDA_GB = mode
        fn = provider_fn(name, c)
        x, A, B = (t.detach().requires_grad_() for t in (c.x, c.A, c.B))
        def step():
            with forced_backend(getattr(fn, "backend", None)):
                y = fn(x, A, B)
                return torch.autograd.grad(y, (x, A, B), c.g)
        for _ in range(20): step()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(200): step()
        torch.cuda.synchronize()
        key = name + ("" if mode == "-" else "_" + mode)
        row[key + "_wall_us"] = round((time.perf_counter() - t) / 200 * 1e6, 1)
        row[key + "_bench_us"] = round(_do_bench(step) * 1e3, 1)
    if tag != "old":
      g, Bm = c.g, c.B
      ref = g.double() @ Bm.double()
      a = torch.mm(g, Bm, out_dtype=torch.float32); b = _cuda_ext.lora_u(g, Bm.t())
      row["gB_mm_us"] = round(_do_bench(lambda: torch.mm(g, Bm, out_dtype=torch.float32)) * 1e3, 2)
      row["gB_u_us"] = round(_do_bench(lambda: _cuda_ext.lora_u(g, Bm.t())) * 1e3, 2)
      row["gB_mm_err"] = float((a.double() - ref).abs().max()); row["gB_u_err"] = float((b.double() - ref).abs().max())
    print(json.dumps(row), flush=True)
    del c
