"""Global loads whose register is read soon after them, in the SASS of a cubin (CPU only).

    cuobjdump -sass FILE.cubin > FILE.sass
    python bench/sass_load_use.py FILE.sass [--within N] [--kernel SUBSTRING]

A warp issues in order: an instruction that reads a load's destination register waits there for the load's
whole latency, and nothing after it issues meanwhile. In a hand-pipelined loop (loads for later tiles issued
before the work on earlier ones) such a reader next to its load undoes the pipeline — even when its predicate
is off for every lane (s30: a shift picking the nested scale byte right after its load held 16-22% of the
register GEMV's stall samples at M = 1; an @P shift of fetch_q_async's tail path, predicated off on nearly every
call, was the dx RS kernel's most stalled instruction). This lists, per kernel, each LDG whose first reader comes
within N instructions (default 12) before any branch, barrier or exit; a load in a prologue or an end that is
read at once is expected, one inside a main loop is a finding. cuobjdump ships with Triton
(triton/backends/nvidia/bin/cuobjdump); build the cubin with nvcc -cubin -gencode=arch=compute_90a,code=sm_90a.
"""

import argparse
import re
import sys

_STOP = ("BRA", "EXIT", "BSYNC", "BAR", "RET", "WARPSYNC")


def kernels(lines):
    """{kernel name: [(address, instruction text)]} from cuobjdump -sass output."""
    out, cur = {}, None
    for line in lines:
        m = re.search(r"Function : (\S+)", line)
        if m:
            cur = out.setdefault(m.group(1), [])
            continue
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
        if m and cur is not None:
            cur.append((m.group(1), m.group(2).strip()))
    return out


def _split(ins):
    s = re.sub(r"^@!?U?P\w+\s+", "", ins)  # the guard predicate
    op = s.split()[0]
    rest = s[len(op):].strip()
    return op, [o.strip() for o in rest.split(",")] if rest else []


def _regs(operand, width):
    """The vector registers an operand names (R8.64: R8, R9), none for RZ and uniform registers."""
    regs = set()
    for t in re.findall(r"(?<![A-Z])R(\d+)(\.64)?", operand):
        n = 2 if t[1] else width
        regs |= {int(t[0]) + i for i in range(n)}
    return regs


def early_reads(code, within=12):
    """[(load address, distance, load, reader)] for the loads of one kernel read within `within` instructions."""
    found = []
    for i, (addr, ins) in enumerate(code):
        op, ops = _split(ins)
        if not op.startswith("LDG") or not ops or not re.match(r"R\d+", ops[0]):
            continue
        dst = _regs(ops[0], 4 if ".128" in op else 2 if ".64" in op else 1)
        for j in range(i + 1, min(i + 1 + within, len(code))):
            op2, ops2 = _split(code[j][1])
            sources = ops2 if op2.startswith(("ST", "RED", "ATOM")) else ops2[1:]
            if any(_regs(o, 1) & dst for o in sources):
                found.append((addr, j - i, ins, code[j][1]))
                break
            if op2.startswith(_STOP):
                break
    return found


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sass")
    p.add_argument("--within", type=int, default=12)
    p.add_argument("--kernel", default="", help="only kernels whose (mangled) name contains this")
    args = p.parse_args(argv)
    with open(args.sass) as f:
        ks = kernels(f)
    for name, code in ks.items():
        if args.kernel not in name:
            continue
        found = early_reads(code, args.within)
        if found:
            print(f"== {name[:110]}: {len(found)} loads read within {args.within}")
            for addr, d, load, reader in found:
                print(f"   {addr} +{d:<3d} {load[:64]:64s} -> {reader[:64]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
