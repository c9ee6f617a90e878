"""s28 knockout: the RS forward's / dx's decode skipped on odd chunks (1) or all chunks (2), NF4LORA_RS_DIAG,
against the shipped decode (0), interleaved CUDA graphs over distinct weights (results wrong by design)."""
import json, math, os, sys
import torch
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
from gemv_time import capture, time_interleaved  # noqa
from nf4lora import _cuda_ext, quantize_nf4

shapes = sys.argv[1] if len(sys.argv) > 1 else "4096,4096,14336;4096,14336,4096;8192,4096,14336;4096,8192,28672"
vals = ["0", "1", "2"]
dev, r = "cuda", 16
torch.manual_seed(0)
for part in shapes.split(";"):
    M, K, N = (int(v) for v in part.split(","))
    n_w = max(2, min(8, math.ceil(256e6 / (N * K // 2))))
    qs = [quantize_nf4(torch.randn(N, K, device=dev) * K**-0.5, 64, double_quant=True) for _ in range(n_w)]
    A = (torch.randn(r, K, device=dev) * K**-0.5).bfloat16()
    B = (torch.randn(N, r, device=dev) * r**-0.5).bfloat16()
    x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
    g = torch.randn(M, N, device=dev, dtype=torch.bfloat16)
    gB = g.float() @ B.float()
    for op in ("fwd", "dx"):
        graphs = {}
        with torch.no_grad():
            for v in vals:
                os.environ["NF4LORA_RS_DIAG"] = v
                if op == "fwd":
                    fn = lambda: [_cuda_ext.qlora_forward_large(x, x, qs[i], A, B, 2.0, None, variant="wgmma_rs",
                                  block_m=256, u_by="cublas", fold_lora=True)[0] for i in range(n_w)]
                else:
                    fn = lambda: [_cuda_ext.qlora_dx(g, qs[i], gB, A, 2.0, True, 0, "rs") for i in range(n_w)]
                graphs[v], _ = capture(fn)
        os.environ["NF4LORA_RS_DIAG"] = "0"
        ms = time_interleaved(graphs, 8)
        row = {"op": op, "M": M, "K": K, "N": N, "git_sha": os.environ.get("NF4LORA_GIT_SHA", "")}
        for v in vals:
            us = ms[v] * 1e3 / n_w
            row[f"us[{v}]"] = round(us, 1)
            row[f"tflops[{v}]"] = round(2 * M * N * K / (us * 1e-6) / 1e12, 1)
            row[f"ratio[{v}/0]"] = round(ms[v] / ms["0"], 3)
        print(json.dumps(row), flush=True)
    del qs
    torch.cuda.empty_cache()
