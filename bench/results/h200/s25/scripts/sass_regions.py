"""s25 run 2: Nsight Compute source counters (ncu --page source --csv --print-source sass, gzipped) of the
small-M TMA GEMV split into the prologue (before the main loop), the main loop (instructions executed >= 0.9 x
the warp-chunk count) and the epilogue: share of warp stall samples and instructions per warp-chunk.
    python sass_regions.py FILE.csv.gz WARP_CHUNKS   (4096x14336 at M = 16: 448 blocks x 64 chunks = 28672)"""
import csv, gzip, sys
rows = list(csv.reader(gzip.open(sys.argv[1], "rt")))
hi = next(i for i, r in enumerate(rows) if r and r[0] == "Address")
h = rows[hi]; data = [r for r in rows[hi + 1:] if len(r) == len(h)]
ix = {n: i for i, n in enumerate(h)}
num = lambda s: float(s.replace(",", "") or 0) if s not in ("-", "") else 0.0
S, I = ix["Warp Stall Sampling (All Samples)"], ix["Instructions Executed"]
wc = int(sys.argv[2])
loop = [i for i, r in enumerate(data) if num(r[I]) >= wc * 0.9]
lo, hi_ = min(loop), max(loop)
f = lambda a, b, c: sum(num(r[c]) for r in data[a:b])
pre, mid, post = f(0, lo, S), f(lo, hi_ + 1, S), f(hi_ + 1, len(data), S); tot = pre + mid + post
print("samples: prologue %.1f%%, loop %.1f%%, epilogue %.1f%%" % (pre / tot * 100, mid / tot * 100, post / tot * 100))
print("loop instructions per warp-chunk %.1f" % (f(lo, hi_ + 1, I) / wc))
