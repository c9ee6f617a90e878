"""s35 run 6: per-block spreads from the register GEMV's raw per-warp timeline records (archive/timeline2's
gemv_timeline.py with TIMELINE_RAW; block-major lists of 18 integers per warp: events 0-7 as (globaltimer ns,
clock64), then the SM id). Usage: python timeline_blocks.py run6/o/raw_*.json.gz"""
import gzip
import json
import statistics as st
import sys


def q(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def blocks(w):
    """Per block: (max - mean of its active warps' loop ends, loop max, sums - loop max, end - sums, end, loop
    duration from the barrier, SM id), in µs from the grid's first entry."""
    t0 = min(r[0] for r in w)
    out = []
    for b in range(len(w) // 16):
        ws = w[16 * b:16 * b + 16]
        act = [r for r in ws if r[8]]  # warps with a first tile (the others skip the loop)
        le = [(r[10] - t0) / 1000 for r in act]
        s = max((r[12] - t0) / 1000 for r in ws)
        e = max((r[14] - t0) / 1000 for r in ws)
        dur = max((r[10] - r[6]) / 1000 for r in act)
        out.append((max(le) - st.mean(le), max(le), s - max(le), e - s, e, dur, ws[0][16]))
    return out


for f in sys.argv[1:]:
    bl = blocks(json.load(gzip.open(f) if f.endswith(".gz") else open(f)))
    col = list(zip(*bl))
    print(f.split("/")[-1], "blocks", len(bl),
          "| in-block loop-end max-mean p50 %.2f p90 %.2f" % (q(col[0], 50), q(col[0], 90)),
          "| loop max p0 %.2f p50 %.2f p100 %.2f" % (min(col[1]), q(col[1], 50), max(col[1])),
          "| loop max -> sums p50 %.2f | sums -> end p50 %.2f" % (q(col[2], 50), q(col[3], 50)),
          "| block end p0 %.2f p50 %.2f p100 %.2f" % (min(col[4]), q(col[4], 50), max(col[4])),
          "| loop duration %.2f-%.2f" % (min(col[5]), max(col[5])))
