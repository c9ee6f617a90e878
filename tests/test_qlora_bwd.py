"""Triton backward of nf4lora::qlora_linear (dx through the NF4 weight, dA, dB, dropout).

CPU (CI): Triton's interpreter, fp16/fp32. GPU (`gpu` marker): bf16/fp16 at real shapes, error
at most about twice plain torch's. The tests force NF4LORA_BACKEND=triton; on CUDA it is also
the default.
"""

import os

import pytest
import torch
import torch.nn.functional as F

from nf4lora import dequantize_nf4, ops, qlora_linear, quantize_nf4
from conftest import REL_TOL, TF32_TOL, qlora_reference_f64, random_lora, rel_err

ON_GPU = torch.cuda.is_available()
DEV = "cuda" if ON_GPU else "cpu"
pytestmark = pytest.mark.skipif(not ON_GPU and os.environ.get("TRITON_INTERPRET") != "1",
                                reason="needs a GPU or Triton's interpreter")


def _grads(monkeypatch, x, q, A, B, scale, g, bias=None, x_lora=None, backend="triton"):
    monkeypatch.setenv("NF4LORA_BACKEND", backend)
    y = qlora_linear(x, q, A, B, scale, bias, x_lora)
    y.backward(g)
    if backend == "triton":
        assert ops.last_path["qlora_linear_backward"] == "triton"
    return y


def _tol(dtype):
    return TF32_TOL if (dtype == torch.float32 and ON_GPU) else REL_TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("M,K,N", [(1, 64, 40), (5, 128, 72), (33, 192, 24), (70, 64, 100)])
@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("r", [1, 8, 16])
def test_triton_backward_matches_float64(monkeypatch, dtype, M, K, N, nested, r):
    blocksize = 32 if K % 64 else 64
    q = quantize_nf4(torch.randn(N, K, device=DEV), blocksize, double_quant=nested)
    x = torch.randn(M, K, device=DEV).to(dtype).requires_grad_()
    A, B = random_lora(N, K, r, dtype, DEV)
    A.requires_grad_(), B.requires_grad_()
    g = torch.randn(M, N, device=DEV).to(dtype)
    _grads(monkeypatch, x, q, A, B, 1.5, g)
    _, dx, _, dA, dB = qlora_reference_f64(x.detach(), q, A.detach(), B.detach(), 1.5, grad_y=g)
    tol = _tol(dtype)
    assert rel_err(x.grad, dx) < tol and rel_err(A.grad, dA) < tol and rel_err(B.grad, dB) < tol


def test_triton_backward_with_dropout_and_bias(monkeypatch):
    dtype, M, K, N, r, p, scale = torch.float16, 17, 128, 40, 4, 0.25, 0.5
    q = quantize_nf4(torch.randn(N, K, device=DEV), 64)
    x = torch.randn(M, K, device=DEV).to(dtype).requires_grad_()
    A, B = random_lora(N, K, r, dtype, DEV)
    A.requires_grad_(), B.requires_grad_()
    bias = torch.randn(N, device=DEV).to(dtype).requires_grad_()
    mask = ((torch.rand(M, K, device=DEV) > p).float() / (1 - p)).to(dtype)
    g = torch.randn(M, N, device=DEV).to(dtype)
    _grads(monkeypatch, x, q, A, B, scale, g, bias, x * mask)
    _, dx, lora, dA, dB = qlora_reference_f64(x.detach(), q, A.detach(), B.detach(), scale, bias.detach(),
                                              x_lora=(x * mask).detach(), grad_y=g)
    assert rel_err(x.grad, dx + lora * mask.double()) < 1e-2
    assert rel_err(A.grad, dA) < 1e-2 and rel_err(B.grad, dB) < 1e-2
    assert rel_err(bias.grad, g.double().sum(0)) < 1e-2


def test_triton_backward_only_what_is_needed(monkeypatch):
    q = quantize_nf4(torch.randn(40, 128, device=DEV), 64)
    A, B = random_lora(40, 128, 4, torch.float16, DEV)
    B.requires_grad_()
    x = torch.randn(6, 128, device=DEV).to(torch.float16)  # first layer: x needs no grad
    g = torch.randn(6, 40, device=DEV).to(torch.float16)
    _grads(monkeypatch, x, q, A, B, 1.0, g)
    assert A.grad is None and x.grad is None
    _, _, _, _, dB = qlora_reference_f64(x, q, A, B.detach(), 1.0, grad_y=g)
    assert rel_err(B.grad, dB) < 1e-2


def test_default_dispatch_picks_the_triton_backward_on_cuda_only():
    assert ops.select_backend("qlora_linear_backward", torch.device("cpu")) == "reference"
    if ON_GPU:
        assert ops.select_backend("qlora_linear_backward", torch.device("cuda")) == "triton"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M", [1, 16, 123, 1024])
@pytest.mark.parametrize("K,N", [(4096, 4096), (4096, 14336), (14336, 4096)])
def test_triton_backward_real_shapes_gpu(monkeypatch, dtype, M, K, N):
    q = quantize_nf4(torch.randn(N, K, device=DEV) * K**-0.5, 64)
    A, B = random_lora(N, K, 16, dtype, DEV)
    A.requires_grad_(), B.requires_grad_()
    x = torch.randn(M, K, device=DEV, dtype=dtype, requires_grad=True)
    g = torch.randn(M, N, device=DEV, dtype=dtype)
    _grads(monkeypatch, x, q, A, B, 2.0, g)
    _, dx, _, dA, dB = qlora_reference_f64(x.detach(), q, A.detach(), B.detach(), 2.0, grad_y=g)
    xp, Ap, Bp = (t.detach().clone().requires_grad_() for t in (x, A, B))
    yp = F.linear(xp, dequantize_nf4(q, dtype)) + 2.0 * F.linear(F.linear(xp, Ap), Bp)
    yp.backward(g)
    for ours, plain, ref in ((x.grad, xp.grad, dx), (A.grad, Ap.grad, dA), (B.grad, Bp.grad, dB)):
        assert rel_err(ours, ref) < REL_TOL[dtype]
        assert rel_err(ours, ref) <= 2 * rel_err(plain, ref) + 1e-6
