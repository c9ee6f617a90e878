"""CUDA tensor-core forward (csrc/qlora_mma.cu): y = x·Wᵀ + s·(x̃·Aᵀ)·Bᵀ + bias for M > 16, both
kernels of the file (wgmma, the default on sm_90, its variants with W decoded into shared memory,
plain and warp-specialized (alone or in pairs of blocks sharing the decode), and mma.sync, the default elsewhere).

GPU only (`gpu` marker): float64 reference on real and odd shapes (M, N, K not multiples of the
128 × 128 tile, r not a multiple of 16 and above 64), bf16 and fp16, both absmax forms, bias,
dropout (x̃ ≠ x); poisoned outputs; the decode bit for bit through an identity matrix; u (returned
for dB) against float64; determinism; compute-sanitizer.
"""

import shutil

import pytest
import torch

from nf4lora import _cuda_ext, dequantize_nf4, ops, qlora_linear, quantize_nf4
from conftest import REL_TOL, forward_case, forward_cases, poison_next_alloc, qlora_reference_f64, random_lora, rel_err, run_memcheck

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not _cuda_ext.built(), reason="the CUDA extension is not built")]
DEV = "cuda"


CASES = [  # M, K, N, r, blocksize, bias, dropout
    (17, 4096, 4096, 16, 64, False, False),
    (123, 640, 300, 1, 128, True, True),
    (128, 14336, 4096, 64, 64, True, False),
    (257, 4096, 1000, 80, 64, False, True),
    (1024, 4096, 14336, 16, 64, True, False),
    (300, 64, 257, 3, 64, False, False),
    (2048, 8192, 520, 16, 4096, True, True),
    (1000, 1024, 777, 32, 64, True, True),  # ws: the LoRA term folded (tf32 chunks of 32 ranks)
    (600, 2048, 384, 24, 64, True, False),  # folded: one partial chunk (ranks 24-31 zeros)
    (513, 1024, 640, 40, 64, False, True),  # folded: two chunks, the second partial
]


@forward_cases(CASES)
def test_mma_forward_matches_reference(monkeypatch, dtype, nested, case):
    M, K, N, r = case[:4]
    c = forward_case(*case, dtype, nested)
    q, A, B, x, xl, bias, ref, plain = (c[k] for k in ("q", "A", "B", "x", "x_lora", "bias", "ref", "plain"))
    monkeypatch.setenv("NF4LORA_BACKEND", "cuda")
    poison_next_alloc(M * N, dtype)
    with torch.no_grad():
        y = qlora_linear(x, q, A, B, 0.7, bias, xl)
    assert ops.last_path["qlora_linear"] == "cuda"
    assert torch.isfinite(y).all()
    err = rel_err(y, ref)
    assert err < REL_TOL[dtype] and err <= 2 * rel_err(plain, ref) + 1e-6, (err, rel_err(plain, ref))
    # u = x̃·Aᵀ, returned for dB: fp32 sums of exact products; poisoned u must be fully written.
    # Both ways of computing it: cuBLAS (the default where torch has a float32-output mm) and the u
    # kernel (split K, the last block of each group sums the partials in slice order).
    u_ref = (x if xl is None else xl).double() @ A.double().t()
    poison_next_alloc(M * r, torch.float32)
    y2, u = _cuda_ext.qlora_forward_large(x, xl, q, A, B, 0.7, bias)
    assert rel_err(u, u_ref) < 1e-5
    assert torch.equal(y2, y)  # deterministic: fixed split plan, no atomics
    for u_by in ("cublas", "kernel") if _cuda_ext.U_BY == "cublas" else ("kernel",):
        poison_next_alloc(M * r, torch.float32)
        poison_next_alloc(M * N, dtype)
        yk, uk = _cuda_ext.qlora_forward_large(x, xl, q, A, B, 0.7, bias, u_by=u_by)
        assert rel_err(uk, u_ref) < 1e-5, u_by
        assert torch.isfinite(yk).all() and rel_err(yk, ref) <= 2 * rel_err(plain, ref) + 1e-6, u_by
        yk2, uk2 = _cuda_ext.qlora_forward_large(x, xl, q, A, B, 0.7, bias, u_by=u_by)
        assert torch.equal(uk2, uk) and torch.equal(yk2, yk), u_by  # deterministic either way
    # Every kernel of the file is as accurate: mma.sync (the default off sm_90) and wgmma with 128
    # and 256 x rows per block (the default picks one by shape); the warp-specialized ones with the
    # LoRA term folded into the reduction (every r % 8 == 0: 16, 24, 32, 40, 64, 80 here) and in
    # the epilogue.
    for variant, block_m in (("mma_sync", 0), ("wgmma", 128), ("wgmma", 256), ("wgmma_ss", 128), ("wgmma_ss", 256),
                             ("wgmma_ws", 128), ("wgmma_ws", 256), ("wgmma_ws_pair", 128), ("wgmma_ws_pair", 256),
                             ("wgmma_rs", 128), ("wgmma_rs", 256)):
        for fold in (True, False) if variant.startswith(("wgmma_ws", "wgmma_rs")) else (True,):
            poison_next_alloc(M * N, dtype)
            y3, u3 = _cuda_ext.qlora_forward_large(x, xl, q, A, B, 0.7, bias, variant=variant, block_m=block_m,
                                                   fold_lora=fold)
            assert torch.equal(u3, u)
            assert torch.isfinite(y3).all() and rel_err(y3, ref) <= 2 * rel_err(plain, ref) + 1e-6, (variant, block_m,
                                                                                                    fold)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("variant,block_m",
                         [("wgmma", 128), ("wgmma", 256), ("wgmma_ss", 128), ("wgmma_ss", 256), ("wgmma_ws", 128),
                          ("wgmma_ws", 256), ("wgmma_ws_pair", 128), ("wgmma_ws_pair", 256), ("wgmma_rs", 128),
                          ("wgmma_rs", 256), ("mma_sync", 0)])
@pytest.mark.parametrize("K,N", [(2048, 520), (320, 261)])
def test_mma_decode_is_exact_through_identity(dtype, nested, variant, block_m, K, N):
    # y = I·Wᵀ gives W's values exactly. wgmma: the absmax is folded into the decode table, so each
    # value is code·absmax in fp32 rounded once to dtype, bit for bit dequantize_nf4(q).to(dtype).
    # mma.sync: the 16 code values are rounded to dtype (what the mma consumes), the fp32 sums are
    # scaled by the absmax, then rounded once. M = 200 rows (two row blocks, the second partial) at
    # the first and the last K columns; N = 520 or 261 (a partial column block). 320x261: 1305 absmax
    # blocks, so the nested codes' last 4-byte word runs past the last code byte (nested_q_tail) for
    # the last row's last block (the last K columns).
    from nf4lora.nf4 import absmax_float

    M = 200
    q = quantize_nf4(torch.randn(N, K, device=DEV), 64, double_quant=nested)
    A, B = random_lora(N, K, 16, dtype, DEV)
    if variant.startswith("wgmma"):
        w = dequantize_nf4(q, torch.float32).to(dtype)
    else:
        codes = torch.stack([q.packed >> 4, q.packed & 15], 1).reshape(-1).long()
        table = q.quant_map.to(dtype).float()
        w = (table[codes] * absmax_float(q).repeat_interleave(64)).to(dtype).view(N, K)
    for cols in (slice(0, M), slice(K - M, K)):
        x = torch.zeros(M, K, device=DEV, dtype=dtype)
        x[:, cols] = torch.eye(M, device=DEV, dtype=dtype)
        y, _ = _cuda_ext.qlora_forward_large(x, None, q, A, B, 0.0, None, variant=variant, block_m=block_m)
        assert torch.equal(y, w[:, cols].t())


@pytest.mark.parametrize("variant", ["wgmma", "wgmma_ss", "wgmma_ws", "wgmma_ws_pair", "wgmma_rs", "mma_sync"])
def test_mma_forward_uses_the_weights_code_table(variant):
    q = quantize_nf4(torch.randn(256, 512, device=DEV), 64)
    q.quant_map = q.quant_map.flip(0).contiguous()
    x = torch.randn(40, 512, device=DEV, dtype=torch.bfloat16)
    A, B = random_lora(256, 512, 4, torch.bfloat16, DEV)
    y, _ = _cuda_ext.qlora_forward_large(x, None, q, A, B, 1.0, None, variant=variant)
    assert rel_err(y, qlora_reference_f64(x, q, A, B, 1.0)) < 1e-2


def test_mma_forward_non_contiguous_and_3d_input(monkeypatch):
    monkeypatch.setenv("NF4LORA_BACKEND", "cuda")
    q = quantize_nf4(torch.randn(384, 1024, device=DEV) * 0.03, 64)
    A, B = random_lora(384, 1024, 8, torch.bfloat16, DEV)
    x = torch.randn(3, 1024, 50, device=DEV, dtype=torch.bfloat16).transpose(1, 2)  # (3, 50, 1024), strided
    with torch.no_grad():
        y = qlora_linear(x, q, A, B, 0.5)
    ref = qlora_reference_f64(x.reshape(-1, 1024), q, A, B, 0.5).view(3, 50, 384)
    assert y.shape == (3, 50, 384) and rel_err(y, ref) < 1e-2


def test_mma_fold_needs_aligned_B_and_u():
    from nf4lora._cuda_ext import _C

    M, K, N, r = 512, 1024, 512, 64
    q = quantize_nf4(torch.randn(N, K, device=DEV), 64)
    A, B = random_lora(N, K, r, torch.bfloat16, DEV)
    x = torch.randn(M, K, device=DEV, dtype=torch.bfloat16)
    y = torch.empty(M, N, device=DEV, dtype=torch.bfloat16)
    u = x.float() @ A.float().t()
    u1 = torch.empty(M * r + 1, device=DEV)[1:].view(M, r).copy_(u)  # 4 bytes past 16
    B1 = torch.empty(N * r + 1, device=DEV, dtype=torch.bfloat16)[1:].view(N, r).copy_(B)  # 2 bytes past 16
    _, state = _cuda_ext._nf4_args(q)
    run = lambda b, uu, fold: _C.qlora_mma(y.data_ptr(), x.data_ptr(), x.data_ptr(), A.data_ptr(), b.data_ptr(), 0,
                                           uu.data_ptr(), fold, 0, 0, 2, *state, M, N, K, r, 1.0, 4, 256, 1, 0, 0,
                                           torch.cuda.current_stream().cuda_stream)
    for b, uu in ((B1, u), (B, u1)):  # (refused before any launch)
        with pytest.raises(RuntimeError, match="folded LoRA term needs B and u 16-byte aligned"):
            run(b, uu, 1)
    ref = x.double() @ dequantize_nf4(q, torch.float32).double().t() + u.double() @ B.double().t()
    for b, uu, fold in ((B, u, 1), (B1, u1, 0)):  # not folded: the epilogue's LoRA term takes any alignment
        y.fill_(float("nan"))
        run(b, uu, fold)
        torch.cuda.synchronize()
        assert rel_err(y, ref) < REL_TOL[torch.bfloat16], fold


def test_mma_forward_refuses_unknown_u_by():
    q = quantize_nf4(torch.randn(64, 64, device=DEV), 64)
    A, B = random_lora(64, 64, 4, torch.bfloat16, DEV)
    x = torch.randn(32, 64, device=DEV, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="u_by must be 'cublas' or 'kernel', got 'cuda'"):
        _cuda_ext.qlora_forward_large(x, None, q, A, B, 1.0, None, u_by="cuda")


def test_mma_plan_splits_k_only_when_tiles_are_few():
    from nf4lora._cuda_ext import _C

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    # M = 128 on N = 4096: 32 output tiles of 128 × 128, so K is split across the idle SMs, in
    # clusters of at most 8 blocks; the workspace holds only the u kernel's: on sm_90 (its slices in
    # clusters of 8) 32 KiB of sums per cluster of the one group of 128 rows and 64 ranks, and a
    # counter per cluster rank; elsewhere S·M·r partials and a counter per group.
    splits, k_splits, block_m, ws, counters = _C.plan_qlora_mma(128, 4096, 14336, 16)
    assert block_m == 128 and 1 < k_splits <= min(8, sms // 32)
    major = torch.cuda.get_device_capability(0)[0]
    if major == 9:
        assert splits % 8 == 0 and ws == splits // 8 * 32768 + 4 * counters and counters == 8, (splits, ws, counters)
    else:
        assert ws <= 4 * splits * 128 * 16 + 4096 and counters == 1
    # Enough tiles of 256 rows to fill the GPU: the large tile, no K split; at M = 1024 on N = 4096
    # one wave of 256-row tiles (128) beats two of 128-row tiles (256 tiles on 132 SMs).
    assert _C.plan_qlora_mma(4096, 14336, 4096, 16)[1:3] == (1, 256)
    if sms == 132:
        assert _C.plan_qlora_mma(1024, 4096, 14336, 16)[1:3] == (1, 256)
    assert _C.plan_qlora_mma(128, 4096, 14336, 16, 1, 0)[1] == 1  # mma.sync never splits K
    assert _C.plan_qlora_mma(128, 4096, 14336, 16, 4, 0)[1] == 1  # nor do the warp-specialized kernels
    assert _C.plan_qlora_mma(128, 4096, 14336, 16, 5, 0)[1] == 1
    assert _C.plan_qlora_mma(128, 4096, 14336, 16, 6, 0)[1] == 1
    with pytest.raises(RuntimeError, match="variant must be 0"):
        _C.plan_qlora_mma(128, 4096, 4096, 16, 7, 0)
    with pytest.raises(RuntimeError, match="block_m must be 0"):
        _C.plan_qlora_mma(128, 4096, 4096, 16, 0, 64)


@pytest.mark.skipif(shutil.which("compute-sanitizer") is None, reason="compute-sanitizer not found")
def test_mma_forward_is_memcheck_clean(tmp_path):
    run_memcheck(tmp_path, """
        import torch
        from nf4lora import _cuda_ext, quantize_nf4
        for dtype in (torch.bfloat16, torch.float16):
            for nested in (False, True):
                # K split per tile (17, 130 rows), one tile per block (129 rows, K = 64)
                for M, K, N, r in ((17, 640, 300, 1), (130, 1024, 257, 80), (129, 64, 136, 16)):
                    q = quantize_nf4(torch.randn(N, K, device="cuda"), 64, double_quant=nested)
                    x = torch.randn(M, K, device="cuda", dtype=dtype)
                    A = torch.randn(r, K, device="cuda", dtype=dtype)
                    B = torch.randn(N, r, device="cuda", dtype=dtype)
                    bias = torch.randn(N, device="cuda", dtype=dtype)
                    for variant, block_m in (("wgmma", 128), ("wgmma", 256), ("wgmma_ss", 128), ("wgmma_ss", 256),
                                             ("wgmma_ws", 128), ("wgmma_ws", 256), ("wgmma_ws_pair", 128),
                                             ("wgmma_ws_pair", 256), ("wgmma_rs", 128), ("wgmma_rs", 256),
                                             ("mma_sync", 0)):
                        _cuda_ext.qlora_forward_large(x, x, q, A, B, 0.5, bias, variant=variant, block_m=block_m)
                    _cuda_ext.qlora_forward_large(x, x, q, A, B, 0.5, bias, u_by="kernel")
        torch.cuda.synchronize()
        print("done")
    """)


@pytest.mark.parametrize("offset", [0, 8])
def test_eager_plans_see_in_place_weight_edits(offset, monkeypatch):
    """The eager path's plans keep pointers to the codes, not copies: an in-place edit of the
    weight shows in the next call, small-M and tensor-core kernels, forward and dx, with codes
    16-byte aligned (the plan is kept) and at an 8-byte offset (copied per call: not kept)."""
    from nf4lora.nf4 import NF4Weight

    monkeypatch.delenv("NF4LORA_BACKEND", raising=False)
    N, K = 256, 512
    base = quantize_nf4(torch.randn(N, K, device=DEV), 64)
    store = torch.empty(base.packed.numel() + 16, dtype=torch.uint8, device=DEV)
    packed = store[offset:offset + base.packed.numel()]
    packed.copy_(base.packed)
    q = NF4Weight(packed, base.absmax, base.shape, 64, torch.float32, base.quant_map, base.nested_absmax,
                  base.nested_quant_map, base.nested_offset)
    A, B = (t.requires_grad_() for t in random_lora(N, K, 8, torch.bfloat16, DEV))
    for M in (4, 64):
        x = torch.randn(M, K, device=DEV, dtype=torch.bfloat16, requires_grad=True)
        g = torch.randn(M, N, device=DEV, dtype=torch.bfloat16)
        packed.copy_(base.packed)
        before = torch.autograd.grad(qlora_linear(x, q, A, B, 0.5), x, g)[0]
        assert ops.last_path == {"qlora_linear": "cuda", "qlora_linear_backward": "cuda"}
        packed.copy_(quantize_nf4(torch.randn(N, K, device=DEV), 64).packed)  # same storage, new codes
        y = qlora_linear(x, q, A, B, 0.5)
        dx = torch.autograd.grad(y, x, g)[0]
        monkeypatch.setattr(ops, "EAGER_FAST_PATH", False)  # the op path plans every call afresh
        y_op = qlora_linear(x, q, A, B, 0.5)
        dx_op = torch.autograd.grad(y_op, x, g)[0]
        monkeypatch.setattr(ops, "EAGER_FAST_PATH", True)
        assert not torch.equal(dx, before)
        assert torch.equal(y, y_op) and torch.equal(dx, dx_op)
    assert len(q.plans) == 2
