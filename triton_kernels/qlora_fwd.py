"""Triton forward of nf4lora::qlora_linear: NF4 decode + x·Wᵀ + s·(x·Aᵀ)·Bᵀ + bias, two launches.

    launch 1  _lora_u_kernel      u = x·Aᵀ                 (M, r) float32; M·K·2 + r·K·2 bytes read
    launch 2  _qlora_fwd_kernel   y = x·Wᵀ + s·u·Bᵀ + bias (M, N) in x's dtype

The main kernel reads W only as packed NF4 codes (N·K/2 bytes) and its block scales (N·K/blocksize
bytes nested, 4× that plain), decodes a (BLOCK_N, BLOCK_K) tile in registers, scales it by the
absmax of its block (the nested double-quant state is decoded in the kernel too) and feeds it
to tl.dot; a dequantized W never reaches global memory. The LoRA term and the bias are added in
the epilogue from u, so no M×N temporary exists.

Two regimes: M ≤ 16 uses one row tile of 16 and narrow N tiles so that every SM streams W;
larger M uses tensor-core tiles with grouped tile order, autotuned per (M bucket, N, K).
fp16/bf16 x feed the tensor cores directly; fp32 x runs the main tl.dot as 3×tf32 (about fp32
accuracy) and the LoRA terms in exact fp32. K must be a multiple of the blocksize (ops.py routes other K to the
reference path with a warning).
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from nf4lora.nf4 import NF4Weight

INTERPRET = os.environ.get("TRITON_INTERPRET", "") == "1"


# Operands of the decode asm: $0-$3 outputs, $4 = 4 packed bytes, then the eight table words
# (lo0-lo3, hi0-hi3), each a 32-bit argument that inline_asm_elementwise hands over once per
# packed element (pack=4: four operands per word, all equal); the asm reads the first of each.
_TABLE_OPERAND = [5 + 4 * i for i in range(8)]
DECODE_CONSTRAINTS = tl.constexpr("=r,=r,=r,=r,r" + ",r" * 32)


@functools.lru_cache(maxsize=None)
def _nf4_decode_asm() -> str:
    """PTX that decodes 4 packed bytes (8 NF4 codes) into 8 fp16/bf16 code values.

    Table lookups by byte permute: the 16 code values (the weight's own quant_map, rounded to
    x's dtype by ``_code_table`` in the kernel prologue) are split into their low and high bytes,
    four 32-bit registers each; ``prmt`` picks 4 bytes by 3-bit index from a pair of them, a third
    ``prmt`` chooses per byte between codes 0-7 and 8-15 (bit 3), and two more interleave low and
    high bytes into 16-bit pairs. 26 instructions per 8 elements, no memory access. Operands:
    $4 = 4 packed bytes; $0, $1 = even elements (high nibbles) of bytes 0-1 and 2-3; $2, $3 = odd
    elements (low nibbles); the table words at ``_TABLE_OPERAND``. Verified bit for bit against
    the table, standard and permuted (tests/test_qlora_fwd.py, identity-matrix decode tests).
    """
    lo = [f"${i}" for i in _TABLE_OPERAND[:4]]
    hi = [f"${i}" for i in _TABLE_OPERAND[4:]]
    look = ("prmt.b32 nfa, {t0}, {t1}, {i}; prmt.b32 nfb, {t2}, {t3}, {i}; "
            "prmt.b32 {out}, nfa, nfb, {b}; ")
    lut = lambda t, i, b, out: look.format(t0=t[0], t1=t[1], t2=t[2], t3=t[3], i=i, b=b, out=out)  # noqa: E731
    return (
        "{ .reg .b32 nfs, nft, nfyo, nfye, nfq, nfi, nfq1, nfb3, nfie, nfbe, nfa, nfb, nflo, nfho, nfle, nfhe; "
        "shr.u32 nfs, $4, 4; shr.u32 nft, $4, 8; "
        "lop3.b32 nfyo, $4, nfs, 0x0F0F0F0F, 0xE4; lop3.b32 nfye, nfs, nft, 0x0F0F0F0F, 0xE4; "
        "prmt.b32 nfq, nfyo, nfye, 0x6420; and.b32 nfi, nfq, 0x77777777; shr.u32 nfq1, nfq, 1; "
        "lop3.b32 nfb3, nfq1, 0x44444444, 0x32103210, 0xEA; shr.u32 nfie, nfi, 16; shr.u32 nfbe, nfb3, 16; "
        + lut(lo, "nfi", "nfb3", "nflo") + lut(hi, "nfi", "nfb3", "nfho")
        + lut(lo, "nfie", "nfbe", "nfle") + lut(hi, "nfie", "nfbe", "nfhe")
        + "prmt.b32 $0, nfle, nfhe, 0x5140; prmt.b32 $1, nfle, nfhe, 0x7362; "
        "prmt.b32 $2, nflo, nfho, 0x5140; prmt.b32 $3, nflo, nfho, 0x7362; }"
    )


@triton.jit
def _table_word(v, i, first: tl.constexpr, SHIFT: tl.constexpr):
    """Bytes (v >> SHIFT) & 0xFF of the code values first…first+3, little-endian in one int32."""
    sel = (i >= first) & (i < first + 4)
    return tl.sum(tl.where(sel, ((v >> SHIFT) & 0xFF) << ((i - first) * 8), 0), axis=0)


@triton.jit
def _code_table(code_ptr, OUT_DTYPE: tl.constexpr):
    """The eight 32-bit table words the prmt decode takes, from the weight's quant_map (16 float32
    values at ``code_ptr``) rounded to OUT_DTYPE: low bytes of codes 0-3, 4-7, 8-11, 12-15, then
    their high bytes. Computed once per program, before the main loop (fp32 x decodes by gather
    and never reads the table: it is built from fp16 values there only to keep one signature)."""
    i = tl.arange(0, 16)
    if OUT_DTYPE == tl.float32:
        c = tl.load(code_ptr + i).to(tl.float16)
    else:
        c = tl.load(code_ptr + i).to(OUT_DTYPE)
    v = c.to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
    return (_table_word(v, i, 0, 0), _table_word(v, i, 4, 0), _table_word(v, i, 8, 0), _table_word(v, i, 12, 0),
            _table_word(v, i, 0, 8), _table_word(v, i, 4, 8), _table_word(v, i, 8, 8), _table_word(v, i, 12, 8))


def decode_mode(dtype: torch.dtype) -> str:
    """'prmt' (register table lookups, fp16/bf16 on a GPU) or 'gather' (codebook loads: the
    interpreter, fp32, or NF4LORA_TRITON_DECODE=gather for comparison)."""
    forced = os.environ.get("NF4LORA_TRITON_DECODE", "")
    if INTERPRET or dtype == torch.float32 or forced == "gather":
        return "gather"
    return "prmt"
_TL_DTYPE = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}


@triton.jit
def _lora_u_kernel(x_ptr, a_ptr, u_ptr, M, K, R, stride_xm, stride_xk, stride_ar, stride_ak,
                   BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, R_PAD: tl.constexpr, PRECISION: tl.constexpr):
    # u[m, :] = Σ_k x[m, k]·A[:, k]: one program per BLOCK_M rows, fp32 accumulation
    # (PRECISION "ieee" for fp32 x: u is r values per row, exactness costs nothing here).
    pid = tl.program_id(0)
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_r = tl.arange(0, R_PAD)
    acc = tl.zeros((BLOCK_M, R_PAD), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                    mask=(offs_m[:, None] < M) & (offs_k[None, :] < K), other=0.0)
        a = tl.load(a_ptr + offs_r[None, :] * stride_ar + offs_k[:, None] * stride_ak,
                    mask=(offs_r[None, :] < R) & (offs_k[:, None] < K), other=0.0)
        acc = tl.dot(x, a, acc, input_precision=PRECISION)
    tl.store(u_ptr + offs_m[:, None] * R + offs_r[None, :], acc,
             mask=(offs_m[:, None] < M) & (offs_r[None, :] < R))


@triton.jit
def _block_absmax(absmax_ptr, nested_absmax_ptr, nested_code_ptr, nested_offset, blk, mask,
                  NESTED: tl.constexpr):
    """float32 absmax of the blocks ``blk`` (any shape); nested: code2[q] * absmax2[blk // 256] + offset."""
    if NESTED:  # one return for both branches: Triton type-checks every return statement
        q = tl.load(absmax_ptr + blk, mask=mask, other=0).to(tl.int32)
        am = tl.load(nested_code_ptr + q, mask=mask, other=0.0) * tl.load(nested_absmax_ptr + blk // 256,
                                                                            mask=mask, other=0.0)
        am = am + nested_offset
    else:
        am = tl.load(absmax_ptr + blk, mask=mask, other=0.0)
    return am


@triton.jit
def _decode_tile(packed_ptr, code_ptr, table, absmax_ptr, nested_absmax_ptr, nested_code_ptr, nested_offset,
                 offs_n, k0, N, K, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCKSIZE: tl.constexpr,
                 NB: tl.constexpr, NESTED: tl.constexpr, OUT_DTYPE: tl.constexpr, DECODE_ASM: tl.constexpr):
    """W[offs_n, k0:k0+BLOCK_K] as a (BLOCK_N, BLOCK_K) tile of OUT_DTYPE, from the packed codes.

    Code values come from the weight's quant_map: loaded per element at ``code_ptr`` (gather
    mode) or, for the prmt decode, from ``table`` (``_code_table`` of the same quant_map).

    Bytes read: BLOCK_N·BLOCK_K/2 codes + BLOCK_N·NB scales. NB = max(1, BLOCK_K / BLOCKSIZE)
    absmax blocks per row of the tile (K is a multiple of BLOCKSIZE, so blocks never straddle rows).
    """
    row_bytes = K // 2
    offs_b = k0 // 2 + tl.arange(0, BLOCK_K // 2)
    n64 = offs_n.to(tl.int64)
    mask_n = offs_n < N
    p = tl.load(packed_ptr + n64[:, None] * row_bytes + offs_b[None, :],
                mask=mask_n[:, None] & (offs_b[None, :] < row_bytes), other=0)
    if DECODE_ASM == "":  # codebook loads (interpreter, fp32): element 2j high nibble, 2j+1 low
        w = tl.join(tl.load(code_ptr + (p >> 4).to(tl.int32)),
                    tl.load(code_ptr + (p & 15).to(tl.int32))).reshape(BLOCK_N, BLOCK_K)
    else:  # byte-permute table lookups in registers, 16-bit code values
        if OUT_DTYPE == tl.bfloat16:  # the asm builder needs plain dtypes, not constexpr-wrapped ones
            even, odd = tl.inline_asm_elementwise(DECODE_ASM, DECODE_CONSTRAINTS, [p, table[0], table[1], table[2], table[3], table[4], table[5], table[6], table[7]],
                                                  dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=4)
        else:
            even, odd = tl.inline_asm_elementwise(DECODE_ASM, DECODE_CONSTRAINTS, [p, table[0], table[1], table[2], table[3], table[4], table[5], table[6], table[7]],
                                                  dtype=(tl.float16, tl.float16), is_pure=True, pack=4)
        w = tl.join(even, odd).reshape(BLOCK_N, BLOCK_K).to(tl.float32)
    blk = n64[:, None] * (K // BLOCKSIZE) + k0 // BLOCKSIZE + tl.arange(0, NB)[None, :]
    am = _block_absmax(absmax_ptr, nested_absmax_ptr, nested_code_ptr, nested_offset, blk,
                       mask_n[:, None] & (k0 // BLOCKSIZE + tl.arange(0, NB)[None, :] < K // BLOCKSIZE), NESTED)
    w = (w.reshape(BLOCK_N, NB, BLOCK_K // NB) * am[:, :, None]).reshape(BLOCK_N, BLOCK_K)
    return w.to(OUT_DTYPE)


@triton.jit
def _grouped_tile(pid, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) in grouped order: GROUP_M row tiles sweep the column tiles together, so a
    decoded W block is reused from L2 by the row tiles that share it."""
    group = GROUP_M * num_pid_n
    first_m = (pid // group) * GROUP_M
    size_m = min(num_pid_m - first_m, GROUP_M)
    return first_m + (pid % group) % size_m, (pid % group) // size_m


@triton.jit
def _qlora_fwd_kernel(x_ptr, packed_ptr, code_ptr, absmax_ptr, nested_absmax_ptr, nested_code_ptr, nested_offset,
                      u_ptr, b_ptr, bias_ptr, y_ptr, M, N, K, R, scale, M_BUCKET,
                      stride_xm, stride_xk, stride_bn, stride_br, stride_ym, stride_yn,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      GROUP_M: tl.constexpr, BLOCKSIZE: tl.constexpr, NB: tl.constexpr, NESTED: tl.constexpr,
                      HAS_BIAS: tl.constexpr, R_PAD: tl.constexpr, DECODE_ASM: tl.constexpr,
                      DOT_PRECISION: tl.constexpr):
    pid_m, pid_n = _grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    table = _code_table(code_ptr, x_ptr.dtype.element_ty)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                    mask=mask_m[:, None] & (offs_k[None, :] < K), other=0.0)
        w = _decode_tile(packed_ptr, code_ptr, table, absmax_ptr, nested_absmax_ptr, nested_code_ptr, nested_offset,
                         offs_n, k0, N, K, BLOCK_N, BLOCK_K, BLOCKSIZE, NB, NESTED, x.dtype, DECODE_ASM)
        acc = tl.dot(x, tl.trans(w), acc, input_precision=DOT_PRECISION)

    # Epilogue: + s·u·Bᵀ (u (BLOCK_M, r) float32, B (BLOCK_N, r)) + bias, exact fp32.
    offs_r = tl.arange(0, R_PAD)
    u = tl.load(u_ptr + offs_m[:, None] * R + offs_r[None, :], mask=mask_m[:, None] & (offs_r[None, :] < R), other=0.0)
    bt = tl.load(b_ptr + offs_n[None, :] * stride_bn + offs_r[:, None] * stride_br,
                 mask=(offs_n[None, :] < N) & (offs_r[:, None] < R), other=0.0).to(tl.float32)
    acc += scale * tl.dot(u, bt, input_precision="ieee")
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn, acc.to(y_ptr.dtype.element_ty),
             mask=mask_m[:, None] & (offs_n[None, :] < N))


# Up to SMALL_M rows the forward uses one 16-row tile and narrow N tiles; above, the autotuned
# tensor-core configs. 16, not 64: at M = 64 the 16-row tiles decode W four times and took 676 µs
# on 8192×28672 where M = 128 took 340 µs through the autotuned configs (H200; bench/NOTES.md,
# third session of 2026-11-30, run 4; triton_fwd/results-s3run5.jsonl). M ≤ 16 in fp16/bf16 is
# the CUDA backend's, when built.
SMALL_M = 16
# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) for M > SMALL_M, autotuned per shape.
_LARGE_CONFIGS = [(128, 128, 64, 8, 4), (128, 256, 64, 8, 3), (64, 128, 64, 4, 4), (128, 128, 128, 8, 3),
                  (256, 128, 64, 8, 3)]


@functools.lru_cache(maxsize=None)
def autotuned(kernel, configs: tuple, blocksize: int):
    """``kernel`` autotuned per (M bucket, N, K, r) over (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages)
    configs; NB (absmax blocks per tile row) follows BLOCK_K, so it is part of each config."""
    return triton.autotune(
        configs=[triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "NB": max(1, bk // blocksize)},
                               num_warps=w, num_stages=st) for bm, bn, bk, w, st in configs],
        key=["M_BUCKET", "N", "K", "R"])(kernel)


def weight_args(q: NF4Weight) -> tuple:
    """The NF4 state as the kernels take it: packed, code, absmax, nested absmax, nested code,
    offset (plain absmax: the nested slots repeat existing tensors and are never read)."""
    nested = q.nested
    return (q.packed, q.quant_map, q.absmax, q.nested_absmax if nested else q.absmax,
            q.nested_quant_map if nested else q.quant_map, float(q.nested_offset or 0.0))


def decode_consts(q: NF4Weight, dtype: torch.dtype, r: int) -> dict:
    """Compile-time arguments shared by the kernels that decode W (a fresh dict per call)."""
    return dict(_decode_consts(q.blocksize, q.nested, dtype, r, decode_mode(dtype)))


@functools.lru_cache(maxsize=None)
def _decode_consts(blocksize: int, nested: bool, dtype: torch.dtype, r: int, mode: str) -> tuple:
    consts = dict(BLOCKSIZE=blocksize, NESTED=nested, R_PAD=max(16, triton.next_power_of_2(r)),
                  DECODE_ASM=_nf4_decode_asm() if mode == "prmt" else "",
                  DOT_PRECISION="tf32x3" if dtype == torch.float32 else "tf32")
    if not INTERPRET:
        # No fused multiply-add: the nested absmax is code2·absmax2 + offset with two roundings,
        # exactly as the format (and dequantize_nf4) defines it.
        consts["enable_fp_fusion"] = False
    return tuple(consts.items())


def _small_config(N: int, K: int):
    # Memory-bound: enough (BLOCK_N-wide) programs to keep every SM streaming W.
    block_n = 64 if N >= 64 * 132 * 2 else (32 if N >= 32 * 132 else 16)
    block_k = 256 if K >= 256 else max(32, triton.next_power_of_2(K))
    return {"BLOCK_M": 16, "BLOCK_N": block_n, "BLOCK_K": block_k, "GROUP_M": 1}, 4, 4


def supports(q: NF4Weight) -> bool:
    """Whether the Triton kernels take this weight (K a multiple of the blocksize)."""
    return q.shape[1] % q.blocksize == 0


# Tile offsets into x, x̃ and y are int32 in the kernels (W and its scales use int64 row offsets):
# one launch covers at most as many rows as keep every such offset below 2**31, and a larger M is
# cut into several launches over row slices.
_MAX_OFFSET = 2**31 - 1
_MAX_BLOCK_M = 256  # the largest BLOCK_M of any config: padded rows compute offsets too


def rows_per_launch(*tensors: torch.Tensor) -> int:
    """The most rows of these 2-D tensors one launch may cover (offsets stay below 2**31)."""
    rows = _MAX_OFFSET
    for t in tensors:
        rest = _MAX_OFFSET - (t.shape[1] - 1) * abs(t.stride(1))
        rows = min(rows, rest // max(1, abs(t.stride(0))) - _MAX_BLOCK_M)
    if rows < 1:
        raise ValueError(f"a row of shape {[tuple(t.shape) for t in tensors]} with strides "
                         f"{[t.stride() for t in tensors]} does not fit 32-bit offsets")
    return rows


def qlora_forward(x: torch.Tensor, x_lora, q: NF4Weight, A: torch.Tensor, B: torch.Tensor, scale: float, bias):
    """(y (M, N) in x's dtype, u (M, r) float32) for validated 2-D inputs; two launches per
    row slice (one slice unless M·K or M·N approaches 2**31)."""
    M, K = x.shape
    N, r = B.shape
    u = torch.empty((M, r), device=x.device, dtype=torch.float32)
    y = torch.empty((M, N), device=x.device, dtype=x.dtype)
    xl = x if x_lora is None else x_lora
    step = rows_per_launch(x, xl, y)
    for start in range(0, M, step):
        rows = slice(start, min(M, start + step))
        _launch(x[rows], xl[rows], q, A, B, scale, bias, y[rows], u[rows])
    return y, u


def row_times_rows(t: torch.Tensor, w_rows: torch.Tensor, out: torch.Tensor) -> None:
    """out (M, r) float32 = t (M, C) · w_rowsᵀ for w_rows (r, C): u = x̃·Aᵀ, or gB = g·B with Bᵀ."""
    M, C = t.shape
    r = w_rows.shape[0]
    if M == 0:
        return
    _lora_u_kernel[(triton.cdiv(M, 64),)](t, w_rows, out, M, C, r, t.stride(0), t.stride(1), w_rows.stride(0),
                                          w_rows.stride(1), BLOCK_M=64, BLOCK_K=64,
                                          R_PAD=max(16, triton.next_power_of_2(r)),
                                          PRECISION="ieee" if t.dtype == torch.float32 else "tf32")


def _launch(x, xl, q: NF4Weight, A, B, scale, bias, y, u):
    M, K = x.shape
    N, r = B.shape
    row_times_rows(xl, A, u)
    args = (x, *weight_args(q), u, B, bias if bias is not None else B, y, M, N, K, r, float(scale),
            triton.next_power_of_2(M), x.stride(0), x.stride(1), B.stride(0), B.stride(1), y.stride(0), y.stride(1))
    consts = dict(decode_consts(q, x.dtype, r), HAS_BIAS=bias is not None)
    if M <= SMALL_M or INTERPRET:
        cfg, warps, stages = _small_config(N, K) if M <= SMALL_M else (
            {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 64, "GROUP_M": 4}, 4, 2)
        grid = (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(N, cfg["BLOCK_N"]),)
        _qlora_fwd_kernel[grid](*args, **cfg, **consts, NB=max(1, cfg["BLOCK_K"] // q.blocksize),
                                num_warps=warps, num_stages=stages)
    else:
        grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)
        autotuned(_qlora_fwd_kernel, tuple(_LARGE_CONFIGS), q.blocksize)[grid](*args, **consts)
