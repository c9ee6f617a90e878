"""EXPERIMENT (branch wip-gemv-hint): the register GEMV's code-load cache qualifiers, interleaved.
Per shape and M: one CUDA graph per hint (NF4LORA_GEMV_HINT read by the launcher at capture) of L
forwards over n_w distinct weights (>= 256 MB of NF4 per pass: no L2 reuse between calls); graphs
replayed alternately, CUDA events, median per forward (u + GEMV kernels). Outputs compared bitwise."""
import json, math, os, statistics, sys
import torch
from nf4lora import ops
from nf4lora.nf4 import quantize_nf4
from nf4lora.benchmark import work

dev = "cuda"
torch.manual_seed(0)
src = torch.randn(2**28, device=dev); dst = torch.empty_like(src)
for _ in range(3): dst.copy_(src)
torch.cuda.synchronize()
ts = []
for _ in range(10):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); dst.copy_(src); e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e) * 1e-3)
copy_bw = 2 * 2**28 * 4 / statistics.median(ts)
del src, dst
print(json.dumps({"copy_TBps": round(copy_bw / 1e12, 3)}), flush=True)
hints = [int(h) for h in os.environ.get("HINTS", "0,3").split(",")]
SPEC = {(8192, 28672): (1, 2, 3, 4), (4096, 14336): (1, 2, 3, 4, 6, 8), (14336, 4096): (1, 2, 4), (4096, 4096): (1, 4, 8),
        (28672, 8192): (1, 2, 4), (8192, 8192): (1, 2, 4)}
if os.environ.get("SPEC"):  # "K,N:M1/M2;K,N:M..."
    SPEC = {tuple(int(v) for v in kn.split(",")): tuple(int(m) for m in ms.split("/"))
            for kn, ms in (part.split(":") for part in os.environ["SPEC"].split(";"))}
for (K, N), Ms in SPEC.items():
    nbytes = N * K // 2
    n_w = min(32, math.ceil(256e6 / nbytes))
    qs = [quantize_nf4(torch.randn(N, K, device=dev) * K**-0.5, 64, double_quant=True) for _ in range(n_w)]
    A = (torch.randn(16, K, device=dev) * K**-0.5).bfloat16(); B = (torch.randn(N, 16, device=dev) * 0.25).bfloat16()
    for M in Ms:
        x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
        L = max(n_w, 8)
        graphs, outs = {}, {}
        with torch.no_grad():
            for h in hints:
                os.environ["NF4LORA_GEMV_HINT"] = str(h)
                st = torch.cuda.Stream(); st.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(st):
                    for i in range(n_w): ops.qlora_linear(x, qs[i], A, B, 2.0)
                torch.cuda.current_stream().wait_stream(st)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    ys = [ops.qlora_linear(x, qs[i % n_w], A, B, 2.0) for i in range(L)]
                graphs[h], outs[h] = g, ys
        os.environ.pop("NF4LORA_GEMV_HINT", None)
        for h in hints: graphs[h].replay()
        torch.cuda.synchronize()
        same = all(torch.equal(outs[h][i], outs[hints[0]][i]) for h in hints for i in range(L))
        ev = {h: [] for h in hints}
        for rd in range(12):
            for h in (hints if rd % 2 == 0 else hints[::-1]):
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record(); graphs[h].replay(); e.record(); ev[h].append((s, e))
        torch.cuda.synchronize()
        row = {"K": K, "N": N, "M": M, "smem_KiB": None, "n_w": n_w, "calls": L, "bitwise_same": same, "path": ops.last_path.get("qlora_linear")}
        by = work(M, K, N, 16, "fwd")["bytes"]
        for h in hints:
            us = statistics.median(s.elapsed_time(e) for s, e in ev[h]) * 1e3 / L
            row[f"hint{h}_us"] = round(us, 2)
            row[f"hint{h}_pct_copy"] = round(100 * by / (us * 1e-6) / copy_bw, 1)
        for h in hints[1:]:
            row[f"hint{h}/hint0"] = round(row[f"hint{h}_us"] / row["hint0_us"], 3)
        print(json.dumps(row), flush=True)
        del graphs, outs
    del qs
    torch.cuda.empty_cache()
