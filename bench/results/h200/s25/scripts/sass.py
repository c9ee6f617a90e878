"""s25 runs 2 and 5: Nsight Compute source counters (ncu --import R --page source --csv --print-source sass, gzipped).
    python sass.py top FILE.csv.gz [N]          the N top instructions by warp stall samples, with their main stall reasons
    python sass.py roles FILE.csv.gz            the warp-specialized forward by role, by instructions executed (at M 4096,
                                                4096x14336 the producer warps execute their per-chunk instructions 458752
                                                times: 1792 blocks x 64 chunks x 4 warps; the consumers 917504): stall
                                                samples, stall reasons, the producer's instruction mix per warp-chunk
    python sass.py regions FILE.csv.gz CHUNKS   the small-M GEMV's prologue / main loop (instructions executed >= 0.9 x
                                                CHUNKS warp-chunks: 28672 at M 16 on 4096x14336) / epilogue: share of
                                                stall samples, loop instructions per warp-chunk"""
import collections
import csv
import gzip
import sys


def load(path):
    rows = list(csv.reader(gzip.open(path, "rt")))
    hi = next(i for i, r in enumerate(rows) if r and r[0] == "Address")
    h = rows[hi]
    return h, [r for r in rows[hi + 1:] if len(r) == len(h)]


def num(s):
    return float(s.replace(",", "") or 0) if s not in ("-", "") else 0.0


def opcode(src):
    parts = src.strip().split()
    op = parts[1] if parts and parts[0].startswith("@") else (parts[0] if parts else "?")
    return op.split(".")[0]


def main(mode, path, arg=None):
    h, data = load(path)
    ix = {n: i for i, n in enumerate(h)}
    S, I = ix["Warp Stall Sampling (All Samples)"], ix["Instructions Executed"]
    stalls = [n for n in h if n.startswith("stall_") and "Not Issued" not in n]
    tot = sum(num(r[S]) for r in data)
    if mode == "top":
        print("samples", tot, "instr", sum(num(r[I]) for r in data))
        for i in sorted(range(len(data)), key=lambda i: -num(data[i][S]))[:int(arg or 15)]:
            r = data[i]
            ss = {s[6:]: int(num(r[ix[s]])) for s in stalls if num(r[ix[s]]) >= 0.05 * num(r[S])}
            print(i, r[0][-5:], "%.1f%%" % (num(r[S]) / tot * 100), int(num(r[I])), r[1].strip()[:55], ss)
    elif mode == "roles":
        groups = collections.defaultdict(lambda: [0, 0, collections.Counter(), collections.Counter()])
        for r in data:
            e = num(r[I])
            g = groups["prod" if 400000 <= e <= 460000 else ("cons" if 900000 <= e <= 920000 else "other")]
            g[0] += num(r[S]); g[1] += e
            for s in stalls:
                g[2][s[6:]] += num(r[ix[s]])
            g[3][opcode(r[1])] += e
        for k, (s, e, st, ops) in groups.items():
            print(k, "samples %.1f%%" % (s / tot * 100), "instr", int(e), {a: round(b / s * 100, 1) for a, b in st.most_common(7)})
            if k == "prod":
                print("   per warp-chunk:", {a: round(b / 458752, 1) for a, b in ops.most_common(14)})
    elif mode == "regions":
        wc = int(arg)
        loop = [i for i, r in enumerate(data) if num(r[I]) >= wc * 0.9]
        lo, hi = min(loop), max(loop)
        f = lambda a, b, c: sum(num(r[c]) for r in data[a:b])
        pre, mid, post = f(0, lo, S), f(lo, hi + 1, S), f(hi + 1, len(data), S)
        t = pre + mid + post
        print("samples: prologue %.1f%%, loop %.1f%%, epilogue %.1f%%" % (pre / t * 100, mid / t * 100, post / t * 100))
        print("loop instructions per warp-chunk %.1f" % (f(lo, hi + 1, I) / wc))


if __name__ == "__main__":
    main(*sys.argv[1:])
