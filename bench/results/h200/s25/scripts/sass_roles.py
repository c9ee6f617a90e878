"""s25 run 5: an ncu SASS source export of the warp-specialized forward split by role, by instructions executed
(the producer warps execute their per-chunk instructions 458752 times at M 4096, 4096x14336 — 1792 blocks x 64 chunks x
4 warps; the consumers 917504): stall samples, stall reasons, and the producer's instruction mix per warp-chunk.
    python sass_roles.py FILE.csv.gz"""
import csv, gzip, collections, sys
rows = list(csv.reader(gzip.open(sys.argv[1],"rt")))
hi = next(i for i,r in enumerate(rows) if r and r[0]=="Address")
h = rows[hi]; data = [r for r in rows[hi+1:] if len(r)==len(h)]
ix = {n:i for i,n in enumerate(h)}
num=lambda s: float(s.replace(",","") or 0) if s not in ("-","") else 0.0
S=ix["Warp Stall Sampling (All Samples)"]; I=ix["Instructions Executed"]
stalls=[n for n in h if n.startswith("stall_") and "Not Issued" not in n]
tot=sum(num(r[S]) for r in data)
groups=collections.defaultdict(lambda: [0,0,collections.Counter(),collections.Counter()])
for r in data:
    e=num(r[I]); key = "prod" if 400000<=e<=460000 else ("cons" if 900000<=e<=920000 else "other")
    g=groups[key]; g[0]+=num(r[S]); g[1]+=e
    for s in stalls: g[2][s[6:]]+=num(r[ix[s]])
    op=r[1].strip().split(); op=(op[1] if op and op[0].startswith("@") else (op[0] if op else "?")).split(".")[0]
    g[3][op]+=e
for k,(s,e,st,ops) in groups.items():
    print(k, "samples %.1f%%"%(s/tot*100), "instr", int(e), {a:round(b/s*100,1) for a,b in st.most_common(7)})
    if k=="prod": print("   prod instr per warp-chunk:", round(e/458752*1,1) if False else "", {a:round(b/458752,1) for a,b in ops.most_common(14)})
