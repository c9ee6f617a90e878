"""Write the dispatch table the package ships (python/nf4lora/data/dispatch_<gpu>.json) from
benchmark results: per shape and M, the backend that ran the forward fastest.

    python bench/make_dispatch_table.py bench/results/h200/cuda_fwd/results-cuda-smallm.jsonl

Input: results files of bench/bench_qlora.py (first line {"meta": ...}, then one row per
provider × mode × M × shape × r). Rows of the nf4lora providers carry the path that ran
("qlora_linear=cuda"); for each (K, N, M) of the forward (mode fwd, rank --rank) measured on more
than one backend, the fastest wins. Runs of consecutive measured M with the same winner become one
rule covering M from just above the previous run up to the run's last M; a shape-agnostic rule
(K = N = null) per M range takes the backend that won on most shapes. Backends that never ran in
the results get no rule, and M beyond the largest compared M gets none (ops.py keeps its order).
See python/nf4lora/dispatch.py for how the package reads the table.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys

OUT_DIR = os.path.join(os.path.dirname(__file__), "..", "python", "nf4lora", "data")


def read(path):
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    if not lines or "meta" not in lines[0]:
        raise SystemExit(f"{path}: not a bench_qlora results file (no meta line first)")
    return lines[0]["meta"], lines[1:]


def backend_of(path: str, op: str = "qlora_linear"):
    """'cuda' from 'qlora_linear=cuda'; None for a fallback or another op."""
    for part in (path or "").split(","):
        name, _, backend = part.strip().partition("=")
        if name == op and backend and not backend.startswith("reference (fallback"):
            return backend.split()[0]
    return None


def times_by_call(rows, rank: int):
    """{(K, N, M): {backend: µs}} of the forward rows at rank ``rank`` (the fastest row per backend)."""
    out = collections.defaultdict(dict)
    for r in rows:
        if r.get("mode") != "fwd" or r.get("r") != rank or "time_us" not in r:
            continue
        backend = backend_of(r.get("path"))
        if backend is None or not str(r.get("provider", "")).startswith("nf4lora"):
            continue
        key = (r["K"], r["N"], r["M"])
        out[key][backend] = min(out[key].get(backend, float("inf")), r["time_us"])
    return {k: v for k, v in out.items() if len(v) > 1}


def _runs(winners):
    """[(m_min, m_max, backend, [Ms])] from [(M, backend)] sorted by M."""
    runs = []
    for M, backend in winners:
        if runs and runs[-1][2] == backend:
            runs[-1][1] = M
            runs[-1][3].append(M)
        else:
            runs.append([runs[-1][1] + 1 if runs else 1, M, backend, [M]])
    return runs


def rules(times):
    out = []
    shapes = sorted({(K, N) for K, N, _ in times})
    for K, N in shapes:
        ms = sorted(M for k, n, M in times if (k, n) == (K, N))
        winners = [(M, min(times[(K, N, M)], key=times[(K, N, M)].get)) for M in ms]
        for m_min, m_max, backend, run_ms in _runs(winners):
            out.append({"op": "qlora_linear", "m_min": m_min, "m_max": m_max, "K": K, "N": N, "backend": backend,
                        "times_us": {str(M): {b: round(t, 1) for b, t in sorted(times[(K, N, M)].items())}
                                     for M in run_ms}})
    all_ms = sorted({M for _, _, M in times})
    majority = []
    for M in all_ms:
        votes = collections.Counter(min(t, key=t.get) for (k, n, m), t in times.items() if m == M)
        best = max(votes.values())
        tied = sorted(b for b, v in votes.items() if v == best)
        if len(tied) > 1:  # tie: the lower total time over the shapes measured at this M
            tied.sort(key=lambda b: sum(t.get(b, float("inf")) for (k, n, m), t in times.items() if m == M))
        majority.append((M, tied[0], f"{best} of {sum(votes.values())} shapes"))
    for m_min, m_max, backend, run_ms in _runs([(M, b) for M, b, _ in majority]):
        won = {str(M): w for M, b, w in majority if M in run_ms}
        out.append({"op": "qlora_linear", "m_min": m_min, "m_max": m_max, "K": None, "N": None,
                    "backend": backend, "won": won})
    return out


def make_table(paths, rank=16, dtype="bfloat16"):
    times, sources, device = {}, [], None
    for path in paths:
        meta, rows = read(path)
        if device is not None and meta["device"] != device:
            raise SystemExit(f"{path}: measured on {meta['device']}, the other files on {device}")
        device = meta["device"]
        for key, t in times_by_call(rows, rank).items():
            times.setdefault(key, {}).update(t)
        sources.append({"file": os.path.relpath(path, os.path.join(os.path.dirname(__file__), "..")),
                        "git_sha": meta.get("git_sha"), "date": meta.get("date")})
    if not times:
        raise SystemExit("no forward call measured on more than one backend in " + ", ".join(paths))
    # The benchmark measures in nf4lora.benchmark.DTYPE (bfloat16); a table covers that dtype only.
    return {"device": device, "dtype": dtype, "rank": rank, "sources": sources, "rules": rules(times)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", help="bench_qlora results .jsonl files (one GPU model)")
    p.add_argument("--rank", type=int, default=16, help="LoRA rank whose rows decide (default 16)")
    p.add_argument("--out", default=None, help="output file (default python/nf4lora/data/dispatch_<gpu>.json)")
    a = p.parse_args(argv)
    table = make_table(a.results, a.rank)
    out = a.out or os.path.normpath(os.path.join(OUT_DIR, f"dispatch_{table['device'].split()[-1].lower()}.json"))
    with open(out, "w") as f:
        json.dump(table, f, indent=1)
        f.write("\n")
    print(f"{out}: {len(table['rules'])} rules for {table['device']}")
    return table


if __name__ == "__main__":
    sys.exit(main() and 0)
