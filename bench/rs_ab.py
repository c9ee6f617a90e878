"""The large-M forward's kernels wgmma_rs (the decode in the consumers' registers)
and wgmma_ws (shipped) in one process, from CUDA graphs replayed alternately.

    python bench/rs_ab.py [--shapes "M,K,N;..."] [--r 16] [--rounds 10] [--out FILE]

Per shape: qlora_forward_large (bf16, r, NF4 blocksize 64 with double quant, u by cuBLAS, the LoRA term folded)
over distinct weights (>= 256 MB of NF4 per pass, so no call finds W in L2), one CUDA graph per variant and
block_m 256 (--block-m); median time per call, TFLOP/s of the W product, the ratio rs / ws, and whether the outputs are the
same bits. One JSON line per shape.
"""

import argparse
import json
import math
import os
import sys

import torch

from nf4lora import _cuda_ext, quantize_nf4

sys.path.insert(0, os.path.dirname(__file__))
from gemv_time import capture, clock_while_busy, time_interleaved  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="4096,4096,14336;4096,14336,4096;4096,8192,28672;8192,4096,14336;8192,4096,1024;1024,4096,14336")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--block-m", type=int, default=256, help="x rows per block (0: the plan's choice)")
    p.add_argument("--weights", type=int, default=0, help="weights per pass (0: >= 256 MB of NF4, none L2-resident)")
    p.add_argument("--plain", action="store_true", help="float32 absmax (default: nested double quant)")
    p.add_argument("--no-fold", action="store_true", help="the LoRA term in the epilogue instead of folded")
    p.add_argument("--out")
    args = p.parse_args(argv)
    sink = open(args.out, "w") if args.out else None
    dev, r = "cuda", args.r
    variants = ["wgmma_ws", "wgmma_rs"]
    torch.manual_seed(0)
    for part in args.shapes.split(";"):
        M, K, N = (int(v) for v in part.split(","))
        n_w = args.weights or max(2, min(8, math.ceil(256e6 / (N * K // 2))))
        qs = [quantize_nf4(torch.randn(N, K, device=dev) * K**-0.5, 64, double_quant=not args.plain) for _ in range(n_w)]
        A = (torch.randn(r, K, device=dev) * K**-0.5).bfloat16()
        B = (torch.randn(N, r, device=dev) * r**-0.5).bfloat16()
        x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
        graphs, outs = {}, {}
        with torch.no_grad():
            for v in variants:
                graphs[v], outs[v] = capture(lambda v=v: [_cuda_ext.qlora_forward_large(
                    x, x, qs[i], A, B, 2.0, None, variant=v, block_m=args.block_m, u_by="cublas", fold_lora=not args.no_fold)[0]
                    for i in range(n_w)])
        ms = time_interleaved(graphs, args.rounds)
        row = {"M": M, "K": K, "N": N, "r": r, "weights": n_w, "nested": not args.plain, "fold": not args.no_fold, "git_sha": os.environ.get("NF4LORA_GIT_SHA", "")}
        row["sm_MHz"] = clock_while_busy(graphs[variants[0]], ms[variants[0]] * 1e-3)
        for v in variants:
            us = ms[v] * 1e3 / n_w
            row[f"us[{v}]"] = round(us, 1)
            row[f"tflops[{v}]"] = round(2 * M * N * K / (us * 1e-6) / 1e12, 1)
        row["ratio[rs/ws]"] = round(row["us[wgmma_rs]"] / row["us[wgmma_ws]"], 3)
        row["same_bits"] = all(torch.equal(a, b) for a, b in zip(outs["wgmma_rs"], outs["wgmma_ws"]))
        line = json.dumps(row)
        print(line, flush=True)
        if sink:
            sink.write(line + "\n")
        del graphs, outs, qs
        torch.cuda.empty_cache()
    if sink:
        sink.close()


if __name__ == "__main__":
    main()
