"""GPU time of the small-M forward against the copy bandwidth (issues 3 and 5), from CUDA graphs.

    python bench/gemv_time.py [--out FILE] [--spec "K,N:M1/M2;K,N:M..."] [--env VAR=v1,v2,... |
                              --attr NAME=v1,v2,...] [--brief]

Per shape and M: the forward (its u and GEMV kernels, bf16, r = 16, NF4 blocksize 64 with double
quantization) under no_grad through nf4lora.qlora_linear on the default backend, L calls over n_w
distinct weights, each with its own A and B (at least 256 MB of NF4 per pass, so that no call finds
its weight or adapter in L2; until the thirty-second session one A, B served all of them) captured
in one CUDA graph; the graph replayed 12 times, timed by CUDA events; the median per forward and
its effective bandwidth (nf4lora.benchmark.work's bytes: codes, absmax, x, y, A, B) as a percent
of a 1 GiB copy's, measured in the same process. Do_bench walls through the layer are host time
at these sizes (bench/results/h200/s22); these are the kernels' time.

--roof: per shape also the time of a bare read of each weight's packed codes (a Triton kernel: 16-byte loads, one
int32 sum per program), captured and replayed the same way: ``read_us`` and ``read_pct_copy`` (the codes' bytes over
that time, a percent of the copy bandwidth) are what any kernel reading that many bytes per call reaches here (its
launch, ramp and tail included), and ``pct_of_read`` = pct_copy / read_pct_copy.

--env VAR=v1,v2: an A/B of variants a launcher or planner reads from the environment (switches that exist
on experiment branches only; the weights' cached plans are dropped before each variant's capture): one
graph per value, captured with VAR set to it, the graphs replayed alternately; the rows carry each
value's time and its ratio to the first's, and whether the outputs are the same bits. --attr NAME=v1,v2:
the same with nf4lora._cuda_ext.NAME set to each value (e.g. GEMV_PIPELINE=tma,auto). One JSON line per
row (stdout, and FILE, rewritten, with --out; --brief: stdout gets a short line per row instead, for a
run's log).

Each row also carries ``sm_MHz``: the SM clock nvidia-smi reads while the GPU works through ~0.3 s
more replays of the first graph (null without nvidia-smi). These kernels are bound by the SM, not by
DRAM, and the same code measured up to ~7% apart in different processes (bench/results/h200/s24), at
the same clock too (s25: the slow end at 1980 MHz): compare variants inside one process.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys

import torch

from nf4lora import ops, quantize_nf4
from nf4lora.benchmark import copy_bandwidth, work

# Issue 3's and 5's shapes (K, N) and M; 28672×8192 is the dx-side orientation of the largest one.
DEFAULT_SPEC = "4096,4096:1/4/8/16;4096,14336:1/4/8/16;14336,4096:1/4/8/16;8192,28672:1/4/8/16;28672,8192:1/16"


def parse_spec(spec: str):
    """{(K, N): (M, ...)} from "K,N:M1/M2;..." (a shape named twice gets the M of both, in order)."""
    out = {}
    for part in spec.split(";"):
        kn, ms = part.split(":")
        K, N = (int(v) for v in kn.split(","))
        out[(K, N)] = tuple(dict.fromkeys(out.get((K, N), ()) + tuple(int(m) for m in ms.split("/"))))
    return out


def sm_clock_mhz():
    """The current SM clock of this process's GPU by nvidia-smi (MHz), or None where it cannot be read
    (no nvidia-smi, or CUDA_VISIBLE_DEVICES set, which renumbers the devices)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "-i", str(torch.cuda.current_device()), "--query-gpu=clocks.sm",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
        return int(out.stdout.split()[0])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def clock_while_busy(graph, seconds_per_replay, busy_s=0.3):
    """The SM clock read while the GPU replays `graph` for about busy_s seconds (queued first)."""
    for _ in range(max(1, int(busy_s / max(seconds_per_replay, 1e-6)))):
        graph.replay()
    mhz = sm_clock_mhz()
    torch.cuda.synchronize()
    return mhz


def time_interleaved(graphs, rounds):
    """Replays the CUDA graphs of dict `graphs` alternately, `rounds` times (the order reversed every other round, so
    that no graph always runs first); the median milliseconds of one replay per key."""
    keys = list(graphs)
    events = {k: [] for k in keys}
    for rd in range(rounds):
        for k in (keys if rd % 2 == 0 else keys[::-1]):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            graphs[k].replay()
            e.record()
            events[k].append((s, e))
    torch.cuda.synchronize()
    return {k: statistics.median(s.elapsed_time(e) for s, e in events[k]) for k in keys}


def capture(fn):
    """fn() captured in a CUDA graph after one warm-up call on a side stream; (graph, fn's outputs)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = fn()
    return graph, outs


def read_kernel():
    """A Triton kernel reading BLOCK int32 of src per program and storing their sum in out[program]: a bare read
    of the bytes (the sums keep the loads), for --roof. Imported on first use (Triton only on a CUDA machine)."""
    import triton
    import triton.language as tl

    @triton.jit
    def _read(src, out, n, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        v = tl.load(src + offs, mask=offs < n, other=0)
        tl.store(out + pid, tl.sum(v, axis=0))

    def run(src, out, block=8192):
        n = src.numel()
        _read[(triton.cdiv(n, block),)](src, out, n, BLOCK=block, num_warps=8)
        return out
    return run


def brief(row):
    """One row as a short line for a run's log (the JSON lines keep everything): K N M, then µs per variant, the
    ratios to the first, same_bits and the SM clock; the first row (copy bandwidth) as it is."""
    if "M" not in row:
        return json.dumps(row)
    parts = [str(row[k]) for k in ("K", "N", "M")]
    parts += [f"{k[2:]}={v}" if k != "us" else str(v) for k, v in row.items() if k.startswith("us")]
    parts += [f"{k[5:]}={v}" for k, v in row.items() if k.startswith("ratio")]
    if "same_bits" in row:
        parts.append(f"same_bits={row['same_bits']}")
    if "read_us" in row:
        parts.append(f"read={row['read_us']}us ({row['read_pct_copy']}% of copy; this {row['pct_of_read']}% of it)")
    parts.append(f"{row.get('sm_MHz')} MHz")
    return " ".join(parts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="also write the JSON lines here")
    p.add_argument("--spec", default=DEFAULT_SPEC, help='shapes and M: "K,N:M1/M2;K,N:M..."')
    p.add_argument("--env", help="VAR=v1,v2,...: variants by an environment variable (experiment branches)")
    p.add_argument("--attr", help="NAME=v1,v2,...: variants by an attribute of nf4lora._cuda_ext (e.g. GEMV_PIPELINE)")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--brief", action="store_true", help="stdout: one short line per row (brief()), not the JSON")
    p.add_argument("--roof", action="store_true", help="also time a bare read of the codes (read_us, read_pct_copy)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("gemv_time.py needs a CUDA device")
    var, values = None, [None]
    if args.env and args.attr:
        sys.exit("--env and --attr: one at a time")
    if args.env or args.attr:
        var, vals = (args.env or args.attr).split("=", 1)
        values = vals.split(",")
    if args.attr:
        from nf4lora import _cuda_ext

        if not hasattr(_cuda_ext, var):
            sys.exit(f"--attr: nf4lora._cuda_ext has no {var}")
        attr_before = getattr(_cuda_ext, var)

    def typed(v):  # (an --attr value as the attribute's type: bool "1"/"true"/"0"/"false", int, else the string)
        if isinstance(attr_before, bool):
            return v.lower() in ("1", "true")
        return int(v) if isinstance(attr_before, int) else v

    def set_variant(v):
        if args.attr:  # (the values of a bool or int attribute, e.g. FOLD_LORA or GEMV_TILES, as such)
            setattr(_cuda_ext, var, attr_before if v is None else typed(v))
        elif v is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = v
    def variant_key(v):  # (a row's key suffix for variant v: "" without variants)
        return "" if v is None else f"[{var}={v}]"
    sink = open(args.out, "w") if args.out else None

    def emit(row):
        line = json.dumps(row)
        print(brief(row) if args.brief else line, flush=True)
        if sink:
            sink.write(line + "\n")
            sink.flush()  # (rows kept where a timeout kills the run: s36 run 4 lost its file)

    dev = "cuda"
    copy_bw = copy_bandwidth(dev)
    emit({"copy_TBps": round(copy_bw / 1e12, 3), "device": torch.cuda.get_device_name(),
          "git_sha": os.environ.get("NF4LORA_GIT_SHA", "")})
    torch.manual_seed(0)
    for (K, N), Ms in parse_spec(args.spec).items():
        n_w = min(32, math.ceil(256e6 / (N * K // 2)))
        qs = [quantize_nf4(torch.randn(N, K, device=dev) * K**-0.5, 64, double_quant=True) for _ in range(n_w)]
        # Each weight its own adapter, as each layer of a model has: one shared A, B would sit in L2 for every call
        # (the epilogue's B loads hit L2 here and went to DRAM in a model; before the thirty-second session they
        # were shared).
        As = [(torch.randn(args.r, K, device=dev) * K**-0.5).bfloat16() for _ in range(n_w)]
        Bs = [(torch.randn(N, args.r, device=dev) * args.r**-0.5).bfloat16() for _ in range(n_w)]
        L, read = max(n_w, 8), None  # (calls per graph: the forwards' and the read's)
        if args.roof:  # (the weights' own code buffers, the same n_w and L as the forwards below)
            words = [q.packed[: q.packed.numel() // 4 * 4].view(torch.int32) for q in qs]
            sums = torch.empty((words[0].numel() + 8191) // 8192, device=dev, dtype=torch.int32)
            run = read_kernel()
            graph, _ = capture(lambda: [run(words[i % n_w], sums) for i in range(L)])
            want = int(words[0].sum())  # (the kernel's sums checked once, modulo 2^32: its int32 sums wrap)
            run(words[0], sums)
            if (int(sums.sum()) - want) % 2**32:
                sys.exit("--roof: the read kernel's sums are wrong")
            read_us = time_interleaved({0: graph}, args.rounds)[0] * 1e3 / L
            code_bytes = words[0].numel() * 4
            read = {"read_us": round(read_us, 2), "read_pct_copy": round(100 * code_bytes / (read_us * 1e-6) / copy_bw, 1)}
            del graph
        for M in Ms:
            x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
            graphs, outs = {}, {}
            with torch.no_grad():
                for v in values:
                    if var is not None:
                        set_variant(v)
                        for q in qs:  # (a planner's switch too: each variant plans its calls afresh)
                            q.plans.clear()
                    graphs[v], outs[v] = capture(lambda: [ops.qlora_linear(x, qs[i % n_w], As[i % n_w], Bs[i % n_w], 2.0) for i in range(L)])
            if var is not None:
                set_variant(None)
            path = ops.last_path.get("qlora_linear")
            ms = time_interleaved(graphs, args.rounds)
            nbytes = work(M, K, N, args.r, "fwd")["bytes"]
            row = {"K": K, "N": N, "M": M, "r": args.r, "weights": n_w, "calls": L, "path": path}
            first_s = ms[values[0]] * 1e-3
            row["sm_MHz"] = clock_while_busy(graphs[values[0]], first_s)
            for v in values:
                us = ms[v] * 1e3 / L
                row["us" + variant_key(v)] = round(us, 2)
                row["pct_copy" + variant_key(v)] = round(100 * nbytes / (us * 1e-6) / copy_bw, 1)
            if read is not None:  # (against the first variant's time)
                row.update(read)
                row["pct_of_read"] = round(100 * row["pct_copy" + variant_key(values[0])] / read["read_pct_copy"], 1)
            if var is not None:
                first = values[0]
                row["same_bits"] = all(torch.equal(a, b) for v in values[1:] for a, b in zip(outs[v], outs[first]))
                for v in values[1:]:
                    row[f"ratio[{var}={v}/{first}]"] = round(row["us" + variant_key(v)] / row["us" + variant_key(first)], 3)
            emit(row)
            del graphs, outs
        del qs, As, Bs
        torch.cuda.empty_cache()
    if sink:
        sink.close()


if __name__ == "__main__":
    main()
