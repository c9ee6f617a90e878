"""Triton backward of nf4lora::qlora_linear (issue 4, first version).

With g = dL/dy (M, N), u = x̃·Aᵀ (M, r, float32, saved by the forward) and s the scale:

    gB  = g·B                       (M, r) float32   _lora_u_kernel on (g, Bᵀ): M·N·2 bytes read
    dx  = g·W [+ s·gB·A]            (M, K)           _qlora_dx_kernel: W read once as NF4 codes in
                                                     its stored (N, K) layout, decoded in registers;
                                                     the LoRA term in the epilogue when x̃ is x
    dx̃  = s·gB·A                    (M, K)           one GEMM (only with dropout)
    dA  = s·gBᵀ·x̃                   (r, K)           one GEMM
    dB  = s·gᵀ·u                    (N, r)           one GEMM

No W, no transposed W and no M×N temporary is ever written. The three small GEMMs run through
torch (cuBLAS) on 16-bit operands with fp32 accumulation, as plain PyTorch autograd would, with s
as the GEMM's alpha (gB and u rounded to 16 bits unscaled).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from nf4lora.lora_grads import lora_grads
from nf4lora.nf4 import NF4Weight
from nf4lora.triton_kernels.qlora_fwd import (INTERPRET, _code_table, _decode_tile, _grouped_tile, autotuned,
                                              decode_consts, row_times_rows, rows_per_launch, weight_args)


@triton.jit
def _qlora_dx_kernel(g_ptr, packed_ptr, code_ptr, absmax_ptr, nested_absmax_ptr, nested_code_ptr, nested_offset,
                     gb_ptr, a_ptr, dx_ptr, M, N, K, R, scale, M_BUCKET,
                     stride_gm, stride_gn, stride_ar, stride_ak, stride_dm, stride_dk,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     GROUP_M: tl.constexpr, BLOCKSIZE: tl.constexpr, NB: tl.constexpr, NESTED: tl.constexpr,
                     ADD_LORA: tl.constexpr, R_PAD: tl.constexpr, DECODE_ASM: tl.constexpr,
                     DOT_PRECISION: tl.constexpr):
    # Output tile (BLOCK_M, BLOCK_K) of dx; the reduction runs over N in BLOCK_N steps, each
    # decoding the (BLOCK_N, BLOCK_K) tile of W as stored (rows n, contiguous k).
    pid_m, pid_k = _grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(K, BLOCK_K), GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    k0 = pid_k * BLOCK_K
    offs_k = k0 + tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    table = _code_table(code_ptr, g_ptr.dtype.element_ty)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        g = tl.load(g_ptr + offs_m[:, None] * stride_gm + offs_n[None, :] * stride_gn,
                    mask=mask_m[:, None] & (offs_n[None, :] < N), other=0.0)
        w = _decode_tile(packed_ptr, code_ptr, table, absmax_ptr, nested_absmax_ptr, nested_code_ptr, nested_offset,
                         offs_n, k0, N, K, BLOCK_N, BLOCK_K, BLOCKSIZE, NB, NESTED, g.dtype, DECODE_ASM)
        acc = tl.dot(g, w, acc, input_precision=DOT_PRECISION)
    if ADD_LORA:  # + s·gB·A, gB (BLOCK_M, r) float32, A (r, BLOCK_K), exact fp32
        offs_r = tl.arange(0, R_PAD)
        gb = tl.load(gb_ptr + offs_m[:, None] * R + offs_r[None, :], mask=mask_m[:, None] & (offs_r[None, :] < R),
                     other=0.0)
        a = tl.load(a_ptr + offs_r[:, None] * stride_ar + offs_k[None, :] * stride_ak,
                    mask=(offs_r[:, None] < R) & (offs_k[None, :] < K), other=0.0).to(tl.float32)
        acc += scale * tl.dot(gb, a, input_precision="ieee")
    tl.store(dx_ptr + offs_m[:, None] * stride_dm + offs_k[None, :] * stride_dk, acc.to(dx_ptr.dtype.element_ty),
             mask=mask_m[:, None] & (offs_k[None, :] < K))


# Up to SMALL_M rows dx uses 16-row tiles: the autotuned configs' grid is K / BLOCK_K programs
# per 64+ rows (64 on K = 8192), too few to fill 132 SMs at small M.
SMALL_M = 64
# (BLOCK_M, BLOCK_N (reduction), BLOCK_K (output), num_warps, num_stages) for M > SMALL_M.
_LARGE_CONFIGS = [(128, 64, 128, 8, 4), (128, 64, 256, 8, 3), (64, 64, 128, 4, 4), (128, 128, 128, 8, 3),
                  (256, 64, 128, 8, 3)]


def _dx(g, q: NF4Weight, gB, A, scale, add_lora, dx):
    M, N = g.shape
    K = q.shape[1]
    r = A.shape[0]
    args = (g, *weight_args(q), gB, A, dx, M, N, K, r, float(scale), triton.next_power_of_2(M),
            g.stride(0), g.stride(1), A.stride(0), A.stride(1), dx.stride(0), dx.stride(1))
    consts = dict(decode_consts(q, g.dtype, r), ADD_LORA=add_lora)
    if M <= SMALL_M or INTERPRET:
        cfg = ({"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 1} if M <= SMALL_M
               else {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 64, "GROUP_M": 4})
        grid = (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(K, cfg["BLOCK_K"]),)
        _qlora_dx_kernel[grid](*args, **cfg, **consts, NB=max(1, cfg["BLOCK_K"] // q.blocksize),
                               num_warps=4, num_stages=3)
    else:
        grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(K, meta["BLOCK_K"]),)
        autotuned(_qlora_dx_kernel, tuple(_LARGE_CONFIGS), q.blocksize)[grid](*args, **consts)


def qlora_backward(grad_y, x_lora, u, q: NF4Weight, A, B, scale: float, needs):
    """(dx, dx_lora, dA, dB), None where not needed; needs = (dx, dx_lora, dA, dB) as in
    reference.backward (dx_lora False with dx True: x̃ is x, the LoRA term goes into dx). g·B and
    dx by the Triton kernels, the LoRA factors' gradients by lora_grads (shared with the CUDA
    backend, ops._cuda_backward)."""
    need_dx, need_dxl, need_dA, need_dB = needs
    g = grad_y
    M, N = g.shape
    K = q.shape[1]
    dx = gB = None
    if need_dx or need_dxl or need_dA:
        gB = torch.empty((M, A.shape[0]), device=g.device, dtype=torch.float32)
        row_times_rows(g, B.t(), gB)  # gB = g·B (M, r) float32
    if need_dx:
        dx = torch.empty((M, K), device=g.device, dtype=g.dtype)
        if M:
            step = rows_per_launch(g, dx)
            for start in range(0, M, step):
                rows = slice(start, min(M, start + step))
                _dx(g[rows], q, gB[rows], A, scale, not need_dxl, dx[rows])
    dx_lora, dA, dB = lora_grads(g, gB, x_lora, u, A, scale, need_dxl, need_dA, need_dB)
    return dx, dx_lora, dA, dB
