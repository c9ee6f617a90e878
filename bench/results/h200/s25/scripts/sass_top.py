"""s25 runs 2 and 5: the top instructions of an ncu SASS source export by warp stall samples, with their main stall reasons.
    python sass_top.py FILE.csv.gz [N]"""
import csv, gzip, collections, sys
rows = list(csv.reader(gzip.open(sys.argv[1],"rt")))
hi = next(i for i,r in enumerate(rows) if r and r[0]=="Address")
h = rows[hi]; data = [r for r in rows[hi+1:] if len(r)==len(h)]
ix = {n:i for i,n in enumerate(h)}
num=lambda s: float(s.replace(",","") or 0) if s not in ("-","") else 0.0
S=ix["Warp Stall Sampling (All Samples)"]; I=ix["Instructions Executed"]
stalls=[n for n in h if n.startswith("stall_") and "Not Issued" not in n]
tot=sum(num(r[S]) for r in data); toti=sum(num(r[I]) for r in data)
print("samples",tot,"instr",toti)
top = sorted(range(len(data)), key=lambda i: -num(data[i][S]))[:int(sys.argv[2]) if len(sys.argv)>2 else 15]
for i in top:
    r=data[i]
    ss = {s[6:]:int(num(r[ix[s]])) for s in stalls if num(r[ix[s]])>=0.05*num(r[S])}
    print(i, r[0][-5:], "%.1f%%"%(num(r[S])/tot*100), int(num(r[I])), r[1].strip()[:55], ss)
