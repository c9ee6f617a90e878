"""Triton forward of nf4lora::qlora_linear.

CPU (CI): Triton's interpreter (TRITON_INTERPRET=1, set by conftest without a GPU) runs the
kernels on CPU tensors through the public API, fp16/fp32 only (the interpreter's bf16 tl.dot is
wrong). GPU (`gpu` marker): bf16/fp16 at real shapes, poisoned outputs, compile, bnb parity.
"""

import os
import warnings

import pytest
import torch
import torch.nn.functional as F

import nf4lora
from nf4lora import dequantize_nf4, ops, qlora_linear, quantize_nf4
from conftest import REL_TOL, TF32_TOL, qlora_reference_f64, random_lora, rel_err

ON_GPU = torch.cuda.is_available()
DEV = "cuda" if ON_GPU else "cpu"
needs_triton = pytest.mark.skipif(not ON_GPU and os.environ.get("TRITON_INTERPRET") != "1",
                                  reason="needs a GPU or Triton's interpreter")


@pytest.fixture(autouse=True)
def _triton(monkeypatch):
    # These are the Triton kernels' tests: on CUDA the dispatcher would send M <= 16 to the CUDA
    # backend (tests/test_cuda_gemv.py), so the backend is forced here.
    monkeypatch.setenv("NF4LORA_BACKEND", "triton")


def _run(monkeypatch, x, q, A, B, scale, bias=None, x_lora=None):
    monkeypatch.setenv("NF4LORA_BACKEND", "triton")
    with torch.no_grad():
        y = qlora_linear(x, q, A, B, scale, bias, x_lora)
    assert ops.last_path["qlora_linear"] == "triton"
    return y


def _tol(dtype):
    return TF32_TOL if (dtype == torch.float32 and ON_GPU) else REL_TOL[dtype]


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("M,K,N", [(1, 64, 40), (5, 128, 72), (33, 192, 24), (70, 64, 100)])
@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("r", [1, 8, 16])
def test_triton_forward_matches_float64(monkeypatch, dtype, M, K, N, nested, with_bias, r):
    blocksize = 32 if K % 64 else 64
    q = quantize_nf4(torch.randn(N, K, device=DEV), blocksize, double_quant=nested)
    x = torch.randn(M, K, device=DEV).to(dtype)
    A, B = random_lora(N, K, r, dtype, DEV)
    bias = torch.randn(N, device=DEV).to(dtype) if with_bias else None
    y = _run(monkeypatch, x, q, A, B, 1.5, bias)
    ref = qlora_reference_f64(x, q, A, B, 1.5, bias)
    assert y.dtype == dtype and y.shape == (M, N)
    assert rel_err(y, ref) < _tol(dtype)


@needs_triton
def test_triton_forward_dropout_branch_noncontiguous_and_leading_dims(monkeypatch):
    q = quantize_nf4(torch.randn(48, 128, device=DEV), 64)
    A, B = random_lora(48, 128, 4, torch.float16, DEV)
    x = torch.randn(128, 6, device=DEV).t().to(torch.float16)  # non-contiguous (6, 128)
    xl = torch.randn(6, 128, device=DEV).to(torch.float16)
    y = _run(monkeypatch, x, q, A, B, 0.5, x_lora=xl)
    assert rel_err(y, qlora_reference_f64(x, q, A, B, 0.5, x_lora=xl)) < REL_TOL[torch.float16]
    x3 = torch.randn(2, 3, 128, device=DEV).to(torch.float16)
    y3 = _run(monkeypatch, x3, q, A, B, 0.5)
    assert y3.shape == (2, 3, 48)
    assert rel_err(y3.reshape(6, 48), qlora_reference_f64(x3.reshape(6, 128), q, A, B, 0.5)) < 1e-2


@needs_triton
def test_triton_forward_writes_every_output(monkeypatch):
    from nf4lora.triton_kernels import qlora_fwd

    q = quantize_nf4(torch.randn(72, 128, device=DEV), 32)
    A, B = random_lora(72, 128, 8, torch.float16, DEV)
    x = torch.randn(9, 128, device=DEV).to(torch.float16)
    real_empty = torch.empty

    def poisoned_empty(*args, **kwargs):  # every buffer the launcher allocates starts as NaN
        return real_empty(*args, **kwargs).fill_(float("nan"))

    monkeypatch.setattr(qlora_fwd.torch, "empty", poisoned_empty)
    y, u = qlora_fwd.qlora_forward(x, None, q, A, B, 1.0, None)
    assert torch.isfinite(y).all() and torch.isfinite(u).all()
    assert rel_err(u, x.double() @ A.double().t()) < 1e-3


@needs_triton
def test_large_m_is_cut_into_launches_that_keep_offsets_32_bit(monkeypatch):
    from nf4lora.triton_kernels import qlora_fwd

    q = quantize_nf4(torch.randn(40, 128, device=DEV), 64)
    A, B = random_lora(40, 128, 4, torch.float16, DEV)
    x = torch.randn(150, 128, device=DEV).to(torch.float16)
    monkeypatch.setattr(qlora_fwd, "_MAX_OFFSET", 70 * 128 + 127 + 256 * 128)  # 70-row launches
    assert qlora_fwd.rows_per_launch(x, x, torch.empty(150, 40)) == 70
    y, u = qlora_fwd.qlora_forward(x, None, q, A, B, 0.5, None)
    assert rel_err(y, qlora_reference_f64(x, q, A, B, 0.5)) < REL_TOL[torch.float16]
    assert rel_err(u, x.double() @ A.double().t()) < 1e-3
    monkeypatch.setattr(qlora_fwd, "_MAX_OFFSET", 1000)
    with pytest.raises(ValueError, match="does not fit 32-bit offsets"):
        qlora_fwd.rows_per_launch(x)


def test_k_not_multiple_of_blocksize_falls_back_with_one_warning(monkeypatch):
    q = quantize_nf4(torch.randn(16, 96, device=DEV), 64)  # K = 96: blocks straddle rows
    A, B = random_lora(16, 96, 4, torch.float32, DEV)
    x = torch.randn(3, 96, device=DEV)
    monkeypatch.setenv("NF4LORA_BACKEND", "triton")
    if not ON_GPU and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("needs a GPU or Triton's interpreter")
    ops._warned_fallback.clear()
    with pytest.warns(UserWarning, match="not a multiple of blocksize"):
        y = qlora_linear(x, q, A, B, 1.0)
    assert ops.last_path["qlora_linear"].startswith("reference (fallback")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        qlora_linear(x, q, A, B, 1.0)  # warned once only
    assert rel_err(y, qlora_reference_f64(x, q, A, B, 1.0)) < 1e-5


# --- GPU tier ---------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M", [1, 5, 16, 123, 1024])
@pytest.mark.parametrize("K,N", [(4096, 4096), (4096, 14336), (14336, 4096)])
def test_triton_forward_real_shapes_gpu(dtype, M, K, N):
    q = quantize_nf4(torch.randn(N, K, device=DEV) * K**-0.5, 64)
    A, B = random_lora(N, K, 16, dtype, DEV)
    x = torch.randn(M, K, device=DEV, dtype=dtype)
    with torch.no_grad():
        y = qlora_linear(x, q, A, B, 2.0)
    assert ops.last_path["qlora_linear"] == "triton"
    ref = qlora_reference_f64(x, q, A, B, 2.0)
    plain = F.linear(x, dequantize_nf4(q, dtype)) + 2.0 * F.linear(F.linear(x, A), B)
    assert rel_err(y, ref) < REL_TOL[dtype]
    assert rel_err(y, ref) <= 2 * rel_err(plain, ref) + 1e-6


@pytest.mark.gpu
@pytest.mark.parametrize("r,nested,blocksize", [(1, True, 32), (16, False, 64), (64, True, 128), (8, False, 256),
                                                (16, True, 4096)])
def test_triton_forward_odd_shapes_gpu(r, nested, blocksize):
    for M, K, N in [(1, 4096, 100), (37, 4096, 333), (200, 8192, 72), (130, 4096, 1000)]:
        q = quantize_nf4(torch.randn(N, K, device=DEV), blocksize, double_quant=nested)
        A, B = random_lora(N, K, r, torch.bfloat16, DEV)
        x = torch.randn(M, K, device=DEV, dtype=torch.bfloat16)
        bias = torch.randn(N, device=DEV, dtype=torch.bfloat16)
        with torch.no_grad():
            y = qlora_linear(x, q, A, B, 0.7, bias)
        assert rel_err(y, qlora_reference_f64(x, q, A, B, 0.7, bias)) < 1e-2, (M, K, N)


@pytest.mark.gpu
def test_triton_forward_fp32_is_tf32_accurate_gpu():
    q = quantize_nf4(torch.randn(512, 1024, device=DEV), 64)
    A, B = random_lora(512, 1024, 16, torch.float32, DEV)
    for M in (3, 300):
        x = torch.randn(M, 1024, device=DEV)
        with torch.no_grad():
            y = qlora_linear(x, q, A, B, 1.0)
        assert rel_err(y, qlora_reference_f64(x, q, A, B, 1.0)) < TF32_TOL


@pytest.mark.gpu
def test_triton_forward_compiles_fullgraph_gpu():
    layer = nf4lora.QLoRALinear(1024, 512, r=16, compute_dtype=torch.bfloat16, device=DEV)
    torch.nn.init.normal_(layer.lora_B, std=0.02)
    x = torch.randn(4, 33, 1024, device=DEV, dtype=torch.bfloat16)
    with torch.no_grad():
        eager = layer(x)
        compiled = torch.compile(layer, fullgraph=True)(x)
    assert torch.equal(compiled, eager)


@pytest.mark.gpu
def test_triton_forward_matches_bitsandbytes_gpu():
    bnbf = pytest.importorskip("bitsandbytes.functional")
    bnb = pytest.importorskip("bitsandbytes")
    w = torch.randn(4096, 4096, device=DEV, dtype=torch.bfloat16) * 4096**-0.5
    packed, st = bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    sd = {"weight": packed, **{f"weight.{k}": v for k, v in st.as_dict(packed=True).items()}}
    q = nf4lora.NF4Weight.from_bnb_state_dict(sd)
    A, B = random_lora(4096, 4096, 16, torch.bfloat16, DEV)
    for M in (1, 16, 512):
        x = torch.randn(M, 4096, device=DEV, dtype=torch.bfloat16)
        ref = bnb.matmul_4bit(x, packed.t(), quant_state=st) + 2.0 * F.linear(F.linear(x, A), B)
        with torch.no_grad():
            y = qlora_linear(x, q, A, B, 2.0)
        assert rel_err(y, ref) < 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("table", ["standard", "permuted"])
@pytest.mark.parametrize("mode", ["prmt", "gather"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("M", [16, 256])
def test_triton_decode_is_exact_through_identity_gpu(monkeypatch, table, mode, dtype, nested, M):
    # y = I·Wᵀ = Wᵀ and dx = I·W = W: each output is one product 1.0·w, exact in fp32, so y and
    # dx show the decoded tile bit for bit. prmt decodes the code to 16 bits, then scales in fp32
    # (two roundings); gather scales the fp32 code (one rounding, as dequantize_nf4). The code
    # values are the weight's own quant_map: a permuted table must change the result accordingly.
    from nf4lora.nf4 import absmax_float

    monkeypatch.setenv("NF4LORA_TRITON_DECODE", mode)
    K, N = 256, 320
    q = quantize_nf4(torch.randn(N, K, device=DEV), 64, double_quant=nested)
    if table == "permuted":
        q.quant_map = q.quant_map[torch.randperm(16, generator=torch.Generator().manual_seed(M)).to(DEV)]
    x = torch.eye(M, K, device=DEV, dtype=dtype, requires_grad=True)
    A, B = random_lora(N, K, 16, dtype, DEV)
    y = qlora_linear(x, q, A, B, 0.0)
    y.backward(torch.eye(M, N, device=DEV, dtype=dtype))
    if mode == "prmt":
        codes = torch.stack([q.packed >> 4, q.packed & 15], 1).reshape(-1).long()
        code = q.quant_map.to(dtype).float()
        w = (code[codes] * absmax_float(q).repeat_interleave(64)).to(dtype).view(N, K)
    else:
        w = dequantize_nf4(q, dtype)
    assert torch.equal(y.detach(), w[:, :M].t())
    assert torch.equal(x.grad, w[:M])
