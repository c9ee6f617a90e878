"""Benchmark of the QLoRA layer (DESIGN.md §5): every provider, mode and shape in one run.

    python bench/bench_qlora.py --out bench/results/h200 [--quick] [--shapes 0,1,2 --tag a]
    python bench/bench_qlora.py --out bench/results/h200 --summarize-only

Writes results[-tag].jsonl (a meta line, then one row per provider × mode × shape × M × r),
then summary.md (ceilings measured in each run, times, ratios to dense_bf16, % of roof) and
roofline.png over every results*.jsonl in --out, so a grid split over several runs (one
device call each) is summarized together.
"""

import glob

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
    if os.environ.get("NF4LORA_GIT_SHA"):  # the device copy of the tree has no .git
        return os.environ["NF4LORA_GIT_SHA"]
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                       cwd=os.path.dirname(os.path.abspath(__file__)),
                                       stderr=subprocess.DEVNULL).strip()
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
    ax.set_title("QLoRA layer forward (bf16)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def summarize(out):
    metas, rows = [], []
    for path in sorted(glob.glob(os.path.join(out, "results*.jsonl"))):
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                if "meta" in rec:
                    metas.append((os.path.basename(path), rec["meta"]))
                else:
                    rows.append(rec)
    if not rows:
        sys.exit(f"no results*.jsonl rows in {out}")
    table = benchmark.markdown_table(rows)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(f"# QLoRA layer benchmark — {metas[0][1]['device']}\n\n")
        f.write("bf16 activations, NF4 W (blocksize 64, double quant), triton do_bench medians.\n\n")
        f.write("| results file | date (UTC) | git | torch | bitsandbytes | copy TB/s | bf16 GEMM TFLOP/s |\n|---|---|---|---|---|---|---|\n")
        for name, m in metas:
            c = m["ceilings"]
            f.write(f"| {name} | {m['date']} | {m['git_sha']} | {m['torch']} | {m['bitsandbytes']} | "
                    f"{c['copy_bytes_per_s'] / 1e12:.2f} | {c['bf16_flops_per_s'] / 1e12:.0f} |\n")
        f.write("\nCeilings are measured in each run (copy: bytes read + written; GEMM: 8192³). Times per call; "
                "(×) = ratio to dense_bf16 in the same run; mem = peak extra memory of one forward+backward; "
                "% of roof = max(minimal bytes / copy BW, FLOPs / GEMM rate) / time, for the best nf4lora provider.\n\n")
        f.write(table + "\n")
    roofline([r for r in rows if "tflops" in r], metas[0][1]["ceilings"], os.path.join(out, "roofline.png"))
    return table


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder, e.g. bench/results/h200")
    p.add_argument("--quick", action="store_true", help="two shapes, M in {1, 1024}, r=16")
    p.add_argument("--shapes", default=None, help="indices into SHAPES to run, e.g. 0,1,2")
    p.add_argument("--tag", default="", help="suffix of the results file: results-<tag>.jsonl")
    p.add_argument("--providers", default=None, help="comma-separated subset of providers")
    p.add_argument("--modes", default="fwd,fwdbwd,mem")
    p.add_argument("--ms", default=None, help="comma-separated M values (default: all of MS)")
    p.add_argument("--ranks", default=None, help="comma-separated LoRA ranks (default: all of RANKS)")
    p.add_argument("--summarize-only", action="store_true", help="rebuild summary.md and roofline.png")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.summarize_only:
        print(summarize(args.out))
        return
    if not torch.cuda.is_available():
        sys.exit("bench_qlora.py needs a CUDA device")
    shapes, ms, ranks = (SHAPES[:2], [1, 1024], [16]) if args.quick else (SHAPES, MS, RANKS)
    if args.shapes:
        shapes = [SHAPES[int(i)] for i in args.shapes.split(",")]
    if args.ms:
        ms = [int(m) for m in args.ms.split(",")]
    if args.ranks:
        ranks = [int(r) for r in args.ranks.split(",")]
    ceilings = benchmark.measure_ceilings("cuda")
    print(f"ceilings: copy {ceilings['copy_bytes_per_s'] / 1e12:.2f} TB/s, "
          f"bf16 GEMM {ceilings['bf16_flops_per_s'] / 1e12:.0f} TFLOP/s", flush=True)
    providers = args.providers.split(",") if args.providers else None
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git_sha": git_sha(), "device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "ceilings": ceilings, "shapes": shapes, "Ms": ms, "ranks": ranks}
    try:
        import bitsandbytes

        meta["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        meta["bitsandbytes"] = None
    path = os.path.join(args.out, f"results-{args.tag}.jsonl" if args.tag else "results.jsonl")
    with open(path, "w") as f:  # rows are written as they come, so a cut-off run keeps its part
        f.write(json.dumps({"meta": meta}) + "\n")

        def log(line):
            print(line, flush=True)

        def sink(row):
            f.write(json.dumps(row) + "\n")
            f.flush()

        benchmark.run_grid(shapes, ms, ranks, args.modes.split(","), providers, "cuda", ceilings, log=log, sink=sink)
    print(summarize(args.out))


if __name__ == "__main__":
    main()
