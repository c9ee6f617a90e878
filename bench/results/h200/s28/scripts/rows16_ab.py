"""s28: the register pipeline at M > 8 (x the A operand, branch wip-rows16xa) against the TMA ring (the auto
pipeline there), the small-M forward (u + GEMV) from CUDA graphs over distinct weights, replayed alternately."""
import json, math, os, sys
import torch
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
from gemv_time import capture, time_interleaved  # noqa
from nf4lora import _cuda_ext, quantize_nf4
from nf4lora.benchmark import copy_bandwidth, work

spec = sys.argv[1] if len(sys.argv) > 1 else "4096,4096:9/12/16;4096,14336:9/16;14336,4096:9/16;8192,28672:16;28672,8192:16;4096,6144:16;2048,4096:16"
dev, r = "cuda", 16
bw = copy_bandwidth("cuda")
print(json.dumps({"copy_TBps": round(bw / 1e12, 3), "git_sha": os.environ.get("NF4LORA_GIT_SHA", "")}), flush=True)
torch.manual_seed(0)
for part in spec.split(";"):
    kn, ms = part.split(":")
    K, N = (int(v) for v in kn.split(","))
    n_w = max(3, math.ceil(256e6 / (N * K // 2)))
    qs = [quantize_nf4(torch.randn(N, K, device=dev) * K**-0.5, 64, double_quant=True) for _ in range(n_w)]
    A = (torch.randn(r, K, device=dev) * K**-0.5).bfloat16()
    B = (torch.randn(N, r, device=dev) * r**-0.5).bfloat16()
    for M in (int(m) for m in ms.split("/")):
        x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
        graphs, outs = {}, {}
        with torch.no_grad():
            for pl in ("tma", "rows"):
                graphs[pl], outs[pl] = capture(lambda pl=pl: [_cuda_ext.qlora_forward_small(
                    x, x, qs[i], A, B, 0.5, None, pipeline=pl)[0] for i in range(n_w)])
        ms_ = time_interleaved(graphs, 10)
        row = {"K": K, "N": N, "M": M}
        for pl in graphs:
            us = ms_[pl] * 1e3 / n_w
            row[f"us[{pl}]"] = round(us, 2)
        b = work(M, K, N, r, "fwd")["bytes"]
        for pl in graphs:
            row[f"pct_copy[{pl}]"] = round(100 * b / (ms_[pl] * 1e-3 / n_w) / bw, 1)
        row["ratio[rows/tma]"] = round(ms_["rows"] / ms_["tma"], 3)
        row["maxdiff"] = max(float((a.float() - c.float()).abs().max() / c.float().abs().max()) for a, c in zip(outs["rows"], outs["tma"]))
        print(json.dumps(row), flush=True)
    del qs
    torch.cuda.empty_cache()
