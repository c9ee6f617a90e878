"""CUDA backward dx (csrc/qlora_dx.cu, sm_90): dx = g·W (+ s·(g·B)·A) with W decoded into shared
memory for SS wgmma, by the SS kernel (every thread decodes) and the warp-specialized one (a
producer warpgroup copies g by TMA and decodes W; two consumer warpgroups run the MMAs), and by the
rs kernel (W decoded in the consumers' registers, the transposed tile; its own column order; the
default wherever the reduction is not split and the LoRA term folds).

GPU only (`gpu` marker, sm_90): the decode and the N-major descriptor bit for bit through an
identity matrix; dx against float64 on real and odd shapes (M not a multiple of the token tile,
K not a multiple of the 128-column tile), bf16 and fp16, both absmax forms, with and without the
LoRA term (r up to 80: several 16-rank steps of the epilogue), 128- and 256-token tiles, both
kernels, with and without the reduction split over blocks (the plan says which ran); every
gradient through the public API on the CUDA backend (g·B by cuBLAS and by the u kernel); calls it
does not take; compute-sanitizer.
"""

import shutil

import pytest
import torch

from nf4lora import _cuda_ext, dequantize_nf4, ops, qlora_linear, quantize_nf4
from nf4lora._cuda_ext import _C
from conftest import REL_TOL, poison_next_alloc, qlora_reference_f64, random_lora, rel_err, run_memcheck

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not _cuda_ext.built(), reason="the CUDA extension is not built"),
              pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] != 9,
                                 reason="the CUDA dx kernel needs sm_90")]
DEV = "cuda"


@pytest.mark.parametrize("variant", ["ss", "ws", "rs"])
@pytest.mark.parametrize("block_m", [128, 256])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("nested", [False, True])
def test_dx_decode_is_exact_through_identity(dtype, nested, block_m, variant):
    # g = I (N × N): dx = W exactly, each value code·absmax rounded once to dtype. N = 320 (5 chunks
    # of 64), K = 1088 (8.5 column tiles), M = N = 320 (2.5 / 1.25 token tiles).
    N, K = 320, 1088
    q = quantize_nf4(torch.randn(N, K, device=DEV), 64, double_quant=nested)
    A, _ = random_lora(N, K, 16, dtype, DEV)
    g = torch.eye(N, device=DEV, dtype=dtype)
    gB = torch.randn(N, 16, device=DEV)
    poison_next_alloc(N * K, dtype)
    dx = _cuda_ext.qlora_dx(g, q, gB, A, 0.0, False, block_m, variant)
    assert torch.equal(dx, dequantize_nf4(q, torch.float32).to(dtype))


CASES = [  # M, K, N, r, blocksize, lora (plan on 132 SMs with block_m 0: tokens per block, splits)
    (1, 4096, 4096, 16, 64, True),  # 128, 4
    (123, 1088, 320, 3, 64, True),  # 128, 1 (5 chunks)
    (2048, 4096, 14336, 16, 64, True),  # 256, 1
    (300, 14336, 4096, 64, 128, False),  # 256, 1
    (129, 640, 704, 80, 64, True),  # 128, 2 (odd chunk count per slice); ws: 3 LoRA chunks, the last partial
    (300, 4096, 1024, 64, 64, True),  # 256, 1; ws: 2 LoRA chunks of 32 ranks
    (77, 1024, 512, 13, 64, True),  # 128, 2; ws: r % 8 != 0: the epilogue's LoRA term (s·gB element by element)
    (520, 2048, 768, 24, 64, True),  # 256, 1; ws: 1 LoRA chunk, ranks 24-31 zeros
]


def test_dx_plan():
    # (block_m, splits, tiles, ws, rs): the rs kernel wherever the reduction is not split
    block_m, splits, tiles, ws, rs = _C.plan_qlora_dx(1, 4096, 4096, 0)
    # 32 tiles: up to 4 slices (132 SMs), fewer when 32 clusters of 4 do not fit the GPCs at once
    assert block_m == 128 and tiles == 32 and 1 < splits <= 4 and not ws and not rs
    assert _C.plan_qlora_dx(1, 4096, 4096, 0, 2) == (128, 1, 32, True, False)  # ws asked: never split
    assert _C.plan_qlora_dx(1, 4096, 4096, 0, 4) == (128, 1, 32, True, True)  # rs asked: never split
    assert _C.plan_qlora_dx(1, 4096, 4096, 0, 1)[1:2] == (splits,)  # ss asked: the auto split
    assert _C.plan_qlora_dx(129, 704, 640, 0) == (128, 2, 10, False, False)
    assert _C.plan_qlora_dx(2048, 14336, 4096, 0) == (256, 1, 8 * 32, True, True)
    assert _C.plan_qlora_dx(2048, 14336, 4096, 0, 1) == (256, 1, 8 * 32, False, False)
    assert _C.plan_qlora_dx(2048, 14336, 4096, 0, 2) == (256, 1, 8 * 32, True, False)
    assert _C.plan_qlora_dx(2048, 14336, 4096, 128) == (128, 1, 16 * 32, True, True)
    assert _C.plan_qlora_dx(1024, 4096, 4096, 0) == (256, 1, 4 * 32, True, True)  # one wave of 256 beats two of 128
    # r: the LoRA term the launch folds — rs only where it can (r % 8 == 0), else ws under auto, variant 4 refused
    assert _C.plan_qlora_dx(2048, 14336, 4096, 0, 0, 16) == (256, 1, 8 * 32, True, True)
    assert _C.plan_qlora_dx(2048, 14336, 4096, 0, 0, 13) == (256, 1, 8 * 32, True, False)
    assert _C.plan_qlora_dx(2048, 14336, 4096, 0, 3, 13) == (256, 1, 8 * 32, True, False)
    with pytest.raises(RuntimeError, match="needs r % 8 == 0, got r = 13"):
        _C.plan_qlora_dx(2048, 14336, 4096, 0, 4, 13)
    assert _C.plan_qlora_dx(5, 4096, 256, 0) == (128, 8, 2, False, False)  # 8 slices: the largest portable cluster
    with pytest.raises(RuntimeError, match="block_m must be 0"):
        _C.plan_qlora_dx(5, 4096, 256, 64)


@pytest.mark.parametrize("variant", ["ss", "ws", "ws_epilogue", "rs", "auto"])
@pytest.mark.parametrize("block_m", [0, 256])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "M{}-K{}-N{}-r{}-bs{}-l{:d}".format(*c))
def test_dx_matches_reference(dtype, nested, case, block_m, variant):
    M, K, N, r, blocksize, lora = case
    q = quantize_nf4(torch.randn(N, K, device=DEV) * K**-0.5, blocksize, double_quant=nested)
    A, B = random_lora(N, K, r, dtype, DEV)
    g = torch.randn(M, N, device=DEV, dtype=dtype)
    gB = g.float() @ B.float()
    w = dequantize_nf4(q, torch.float32).double()
    ref = g.double() @ w + (0.7 * gB.double() @ A.double() if lora else 0)
    plain = g @ dequantize_nf4(q, dtype) + ((0.7 * gB).to(dtype) @ A if lora else 0)
    if variant == "rs" and lora and r % 8:  # the rs kernel folds the LoRA term: r % 8 == 0 only
        with pytest.raises(RuntimeError, match=f"needs r % 8 == 0, got r = {r}"):
            _cuda_ext.qlora_dx(g, q, gB, A, 0.7, lora, block_m, variant)
        return
    poison_next_alloc(M * K, dtype)
    dx = _cuda_ext.qlora_dx(g, q, gB, A, 0.7, lora, block_m, variant)
    assert torch.isfinite(dx).all()
    err = rel_err(dx, ref)
    assert err < REL_TOL[dtype] and err <= 2 * rel_err(plain, ref) + 1e-6, (err, rel_err(plain, ref))


def _lora_dx_problem(M, K, N, r, dtype):
    """A fresh dx problem with a LoRA term: q (NF4 of an N×K weight, nested absmax), A (r, K), g (M, N), gB = g·B
    (float32)."""
    q = quantize_nf4(torch.randn(N, K, device=DEV) * K**-0.5, 64, double_quant=True)
    A, B = random_lora(N, K, r, dtype, DEV)
    g = torch.randn(M, N, device=DEV, dtype=dtype)
    return q, A, g, g.float() @ B.float()


@pytest.mark.parametrize("variant,r", [(v, r) for v in ("ss", "ws", "ws_epilogue") for r in (16, 13)] + [("rs", 16)])
def test_dx_lora_with_unaligned_A_and_gB(variant, r):
    # A and gB starting 2 / 4 bytes past a 16-byte boundary (the wrapper copies both to aligned
    # starts: the folded term reads them by TMA) give the same dx as the aligned operands, bit for bit.
    M, K, N, dtype = 300, 1024, 512, torch.bfloat16
    q, A, g, gB = _lora_dx_problem(M, K, N, r, dtype)
    gB1 = torch.empty(M * r + 1, device=DEV)[1:].view(M, r).copy_(gB)
    A1 = torch.empty(r * K + 1, device=DEV, dtype=dtype)[1:].view(r, K).copy_(A)
    assert gB1.data_ptr() % 16 and A1.data_ptr() % 16
    want = _cuda_ext.qlora_dx(g, q, gB, A, 0.7, True, 0, variant)
    poison_next_alloc(M * K, dtype)
    got = _cuda_ext.qlora_dx(g, q, gB1, A1, 0.7, True, 0, variant)
    assert torch.equal(got, want)
    ref = g.double() @ dequantize_nf4(q, torch.float32).double() + 0.7 * gB.double() @ A.double()
    assert rel_err(got, ref) < REL_TOL[dtype]


@pytest.mark.parametrize("r,kernel", [(16, "rs"), (13, "ws")])
def test_dx_auto_takes_rs_where_it_folds_the_lora_term(r, kernel):
    # auto = the rs kernel (bit for bit) where the LoRA term folds (r % 8 == 0), else the ws kernel
    # (a shape the plan does not split: >= 132 tiles)
    M, K, N = 1100, 4096, 512
    q, A, g, gB = _lora_dx_problem(M, K, N, r, torch.bfloat16)
    assert _C.plan_qlora_dx(M, N, K, 0)[3:] == (True, True)  # (no LoRA term: rs)
    assert _C.plan_qlora_dx(M, N, K, 0, r=r)[3:] == (True, kernel == "rs")
    got = _cuda_ext.qlora_dx(g, q, gB, A, 0.7, True)
    assert torch.equal(got, _cuda_ext.qlora_dx(g, q, gB, A, 0.7, True, 0, kernel))
    if r % 8 == 0:  # (g·W alone comes out of both with the same bits; their folded LoRA terms differ in the
        # last bits: the check tells the two kernels apart)
        assert not torch.equal(got, _cuda_ext.qlora_dx(g, q, gB, A, 0.7, True, 0, "ws"))
        assert torch.equal(_cuda_ext.qlora_dx(g, q, gB, A, 0.7, False, 0, "ws"),
                           _cuda_ext.qlora_dx(g, q, gB, A, 0.7, False, 0, "rs"))


def test_dx_fold_needs_aligned_A_and_gB():
    M, K, N, r = 300, 1024, 512, 16
    q = quantize_nf4(torch.randn(N, K, device=DEV) * K**-0.5, 64)
    g = torch.randn(M, N, device=DEV, dtype=torch.bfloat16)
    A = torch.randn(r, K, device=DEV, dtype=torch.bfloat16) * K**-0.5
    A1 = torch.empty(r * K + 1, device=DEV, dtype=torch.bfloat16)[1:].view(r, K).copy_(A)  # 2 bytes past 16
    gB = torch.randn(M, r, device=DEV)
    gB1 = torch.empty(M * r + 1, device=DEV)[1:].view(M, r).copy_(gB)  # 4 bytes past 16
    dx = torch.empty(M, K, device=DEV, dtype=torch.bfloat16)
    _, state = _cuda_ext._nf4_args(q)
    run = lambda a, gb, variant: _C.qlora_dx(dx.data_ptr(), g.data_ptr(), gb.data_ptr(), a.data_ptr(), 2, *state,
                                             M, N, K, r, 1.0, 0, variant, torch.cuda.current_stream().cuda_stream)
    for a, gb in ((A1, gB), (A, gB1)):  # (refused before any launch)
        with pytest.raises(RuntimeError, match="folded LoRA term needs A and gB 16-byte aligned"):
            run(a, gb, 2)
    ref = g.double() @ dequantize_nf4(q, torch.float32).double() + gB.double() @ A.double()
    for a, gb, variant in ((A, gB, 2), (A1, gB1, 3)):  # the epilogue's variant (and the SS kernel) take any
        dx.fill_(float("nan"))
        run(a, gb, variant)
        torch.cuda.synchronize()
        assert rel_err(dx, ref) < REL_TOL[torch.bfloat16], variant


# The u kernel's K splits S on the H200 (132 SMs; groups of 128 rows x 64 ranks, u_splits): (1, 4096, 16) and
# (128, 4096, 64) 64 slices, 8 clusters of 8 per group (the clusters' sums through the workspace); (2048, 14336, 16)
# 16 (2 clusters); (130, 640, 80) 8 (one cluster: straight to u); (77, 192, 24) 3 and (5000, 512, 13) 6 (clusters of
# fewer than 8 blocks: a block adds several 16-row stripes; r = 13 a partial rank tile).
@pytest.mark.parametrize("M,N,r", [(1, 4096, 16), (128, 4096, 64), (2048, 14336, 16), (130, 640, 80), (77, 192, 24),
                                   (5000, 512, 13)])
def test_lora_u_alone_is_g_times_B(M, N, r):
    g = torch.randn(M, N, device=DEV, dtype=torch.bfloat16)
    B = torch.randn(N, r, device=DEV, dtype=torch.bfloat16)
    poison_next_alloc(M * r, torch.float32)
    gB = _cuda_ext.lora_u(g, B.t())
    assert rel_err(gB, g.double() @ B.double()) < 1e-5
    assert torch.equal(_cuda_ext.lora_u(g, B.t()), gB)  # fixed summation orders: the same bits every call


@pytest.mark.parametrize("gb", ["_gB_cublas", "_gB_u_kernel"])
@pytest.mark.parametrize("dropout", [False, True])
def test_cuda_backend_gradients(monkeypatch, dropout, gb):
    monkeypatch.setattr(ops, "_GB_FN", getattr(ops, gb))  # g·B by cuBLAS (torch >= 2.8) or the u kernel
    M, K, N, r = 257, 1024, 768, 16
    dtype = torch.bfloat16
    q = quantize_nf4(torch.randn(N, K, device=DEV) * K**-0.5, 64, double_quant=True)
    A, B = random_lora(N, K, r, dtype, DEV)
    x = torch.randn(M, K, device=DEV, dtype=dtype, requires_grad=True)
    xl = torch.randn(M, K, device=DEV, dtype=dtype, requires_grad=True) if dropout else None
    A.requires_grad_()
    B.requires_grad_()
    gy = torch.randn(M, N, device=DEV, dtype=dtype)
    monkeypatch.setenv("NF4LORA_BACKEND", "cuda")
    y = qlora_linear(x, q, A, B, 0.5, None, xl)
    grads = torch.autograd.grad(y, [x, A, B] + ([xl] if dropout else []), gy)
    assert ops.last_path == {"qlora_linear": "cuda", "qlora_linear_backward": "cuda"}
    _, dx, dxl, dA, dB = qlora_reference_f64(x.detach(), q, A.detach(), B.detach(), 0.5, None,
                                              None if xl is None else xl.detach(), gy)
    for got, want in zip(grads, [dx, dA, dB] + ([dxl] if dropout else [])):
        assert rel_err(got, want) < REL_TOL[dtype]


def test_dx_refuses_what_it_does_not_take(monkeypatch):
    q = quantize_nf4(torch.randn(100, 256, device=DEV), 64)
    g = torch.randn(4, 100, device=DEV, dtype=torch.bfloat16)
    assert "N and K multiples of 64, got N=100" in _cuda_ext.dx_unsupported_reason(g, q)
    A, B = random_lora(100, 256, 4, torch.bfloat16, DEV)
    x = torch.randn(4, 256, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    y = qlora_linear(x, q, A, B, 1.0)  # the default picks a backward that takes the call
    y.sum().backward()
    assert ops.last_path["qlora_linear_backward"] == "triton"


@pytest.mark.skipif(shutil.which("compute-sanitizer") is None, reason="compute-sanitizer not found")
def test_dx_is_memcheck_clean(tmp_path):
    run_memcheck(tmp_path, """
        import torch
        from nf4lora import _cuda_ext, quantize_nf4
        for dtype in (torch.bfloat16, torch.float16):
            for nested in (False, True):
                for M, K, N, r in ((1, 640, 64, 1), (130, 1088, 320, 80), (5, 640, 1024, 16)):
                    q = quantize_nf4(torch.randn(N, K, device="cuda"), 64, double_quant=nested)
                    g = torch.randn(M, N, device="cuda", dtype=dtype)
                    A = torch.randn(r, K, device="cuda", dtype=dtype)
                    gB = torch.randn(M, r, device="cuda")
                    for block_m in (0, 256):  # (5, 640, 1024): reduction split over 4 blocks
                        for variant in ("ss", "ws", "ws_epilogue") + (("rs",) if r % 8 == 0 else ()):
                            _cuda_ext.qlora_dx(g, q, gB, A, 0.5, True, block_m, variant)
                            # A and gB not 16-byte aligned (the wrapper copies them)
                            gB1 = torch.empty(M * r + 1, device="cuda")[1:].view(M, r).copy_(gB)
                            A1 = torch.empty(r * K + 1, device="cuda", dtype=dtype)[1:].view(r, K).copy_(A)
                            _cuda_ext.qlora_dx(g, q, gB1, A1, 0.5, True, block_m, variant)
        torch.cuda.synchronize()
        print("done")
    """)
