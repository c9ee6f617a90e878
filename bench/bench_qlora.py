"""Benchmark of the QLoRA layer (DESIGN.md §5): every provider, mode and shape in one run.

    python bench/bench_qlora.py --out bench/results/h200 [--quick]

Writes results.jsonl (one row per provider × mode × shape × M × r), summary.md (ceilings
measured in the same run, then times, ratios to dense_bf16 and % of roof) and roofline.png.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys

import torch

from nf4lora import benchmark

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 8192), (8192, 28672)]  # (K, N)
MS = [1, 16, 128, 1024, 4096, 16384]
RANKS = [16, 64]


def git_sha():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                       cwd=os.path.dirname(os.path.abspath(__file__))).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def roofline(rows, ceilings, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bw, peak = ceilings["copy_bytes_per_s"], ceilings["bf16_flops_per_s"]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    xs = [2**i for i in range(-2, 14)]
    ax.plot(xs, [min(peak, bw * x) / 1e12 for x in xs], "k-", lw=1, label="roof (copy BW, bf16 GEMM)")
    for prov in sorted({r["provider"] for r in rows}):
        pts = [r for r in rows if r["provider"] == prov and r["mode"] == "fwd"]
        if pts:
            ax.scatter([r["tflops"] * 1e12 / (r["gbps"] * 1e9) for r in pts], [r["tflops"] for r in pts],
                       s=14, label=prov)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / minimal byte)")
    ax.set_ylabel("TFLOP/s")
    ax.set_title("QLoRA layer forward on " + torch.cuda.get_device_name())
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder, e.g. bench/results/h200")
    p.add_argument("--quick", action="store_true", help="two shapes, M in {1, 1024}, r=16")
    p.add_argument("--providers", default=None, help="comma-separated subset of providers")
    p.add_argument("--modes", default="fwd,fwdbwd,mem")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_qlora.py needs a CUDA device")
    os.makedirs(args.out, exist_ok=True)
    shapes, ms, ranks = (SHAPES[:2], [1, 1024], [16]) if args.quick else (SHAPES, MS, RANKS)
    ceilings = benchmark.measure_ceilings("cuda")
    print(f"ceilings: copy {ceilings['copy_bytes_per_s'] / 1e12:.2f} TB/s, "
          f"bf16 GEMM {ceilings['bf16_flops_per_s'] / 1e12:.0f} TFLOP/s", flush=True)
    providers = args.providers.split(",") if args.providers else None
    rows = benchmark.run_grid(shapes, ms, ranks, args.modes.split(","), providers, "cuda", ceilings,
                              log=lambda s: print(s, flush=True))
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git_sha": git_sha(), "device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "ceilings": ceilings}
    try:
        import bitsandbytes

        meta["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        meta["bitsandbytes"] = None
    with open(os.path.join(args.out, "results.jsonl"), "w") as f:
        f.write(json.dumps({"meta": meta}) + "\n")
        for r in rows:
            f.write(json.dumps(r) + "\n")
    table = benchmark.markdown_table(rows)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(f"# QLoRA layer benchmark — {meta['device']}\n\n")
        f.write(f"date {meta['date']}, git {meta['git_sha']}, torch {meta['torch']}, "
                f"bitsandbytes {meta['bitsandbytes']}, bf16, do_bench medians.\n\n")
        f.write(f"Ceilings measured in this run: copy {ceilings['copy_bytes_per_s'] / 1e12:.2f} TB/s "
                f"(bytes read + written), bf16 GEMM {ceilings['bf16_flops_per_s'] / 1e12:.0f} TFLOP/s (8192³).\n\n")
        f.write("Times per call; (×) = ratio to dense_bf16 in the same run; mem = peak extra memory of one "
                "forward+backward; % of roof = max(minimal bytes / copy BW, FLOPs / GEMM rate) / time.\n\n")
        f.write(table + "\n")
    roofline([r for r in rows if "tflops" in r], ceilings, os.path.join(args.out, "roofline.png"))
    print(table)


if __name__ == "__main__":
    main()
