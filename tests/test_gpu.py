"""GPU tier (marker `gpu`, skipped without CUDA): kernels vs the reference at real shapes, bf16,
bitsandbytes parity when it imports, memory, torch.compile on CUDA."""

import pytest
import torch
import torch.nn.functional as F

import nf4lora
from nf4lora import _cuda_ext, dequantize, dequantize_nf4, ops, qlora_linear, quantize_nf4
from nf4lora.benchmark import forced_backend
from conftest import REL_TOL, qlora_reference_f64, random_lora, rel_err

pytestmark = pytest.mark.gpu
DEV = "cuda"


def _cuda_backend_usable():
    return _cuda_ext.built() and _cuda_ext.unavailable_reason() is None


@pytest.mark.skipif(not _cuda_ext.built(), reason="CUDA extension not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("shape,blocksize", [((4096, 4096), 64), ((37, 333), 32), ((1, 7), 64), ((129, 4096), 4096),
                                             ((300, 1000), 256), ((3, 5), 32)])
def test_cuda_dequantize_bit_exact_with_reference(dtype, nested, shape, blocksize):
    q = quantize_nf4(torch.randn(shape, device=DEV), blocksize, double_quant=nested)
    with forced_backend("cuda"):
        got = dequantize(q, dtype)
    assert torch.equal(got, dequantize_nf4(q, dtype))


@pytest.mark.skipif(not _cuda_ext.built(), reason="CUDA extension not built")
def test_cuda_dequantize_writes_every_element_and_is_default():
    q = quantize_nf4(torch.randn(513, 777, device=DEV), 64)
    assert ops.select_backend("dequantize", torch.device(DEV)) == "cuda"
    out = torch.full(q.shape, float("nan"), device=DEV, dtype=torch.bfloat16)
    out.copy_(dequantize(q, torch.bfloat16))
    assert torch.isfinite(out).all()
    poisoned = torch.full(q.shape, float("nan"), device=DEV)
    _cuda_ext._C.dequantize_nf4(out=poisoned.data_ptr(), out_dtype=0, packed=q.packed.data_ptr(),
                                absmax=q.absmax.data_ptr(), quant_map=q.quant_map.data_ptr(),
                                nested_absmax=q.nested_absmax.data_ptr(), nested_quant_map=q.nested_quant_map.data_ptr(),
                                nested_offset=q.nested_offset, n=q.numel, blocksize=64,
                                stream=torch.cuda.current_stream().cuda_stream)
    assert torch.equal(poisoned, dequantize_nf4(q, torch.float32))
    with pytest.raises(RuntimeError, match="blocksize must be a power of two"):
        _cuda_ext._C.dequantize_nf4(out=poisoned.data_ptr(), out_dtype=0, packed=q.packed.data_ptr(),
                                    absmax=q.absmax.data_ptr(), quant_map=q.quant_map.data_ptr(),
                                    nested_absmax=0, nested_quant_map=0, nested_offset=0.0, n=q.numel,
                                    blocksize=48, stream=0)


def test_quantize_on_gpu_matches_cpu():
    w = torch.randn(1000, 515)
    a, b = quantize_nf4(w, 64, False), quantize_nf4(w.to(DEV), 64, False)
    assert torch.equal(a.packed, b.packed.cpu()) and torch.equal(a.absmax, b.absmax.cpu())
    assert torch.equal(dequantize_nf4(a), dequantize_nf4(b).cpu())
    # Nested: mean(absmax) is reduced in a different order on each device, so the offset (and
    # then a few 8-bit absmax codes) may differ by rounding; the codes of W may not.
    a, b = quantize_nf4(w, 64, True), quantize_nf4(w.to(DEV), 64, True)
    assert torch.equal(a.packed, b.packed.cpu())
    assert abs(a.nested_offset - b.nested_offset) <= 4e-7 * abs(a.nested_offset)
    assert rel_err(dequantize_nf4(b).cpu(), dequantize_nf4(a)) < 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M,K,N", [(1, 4096, 4096), (123, 4096, 14336), (1024, 14336, 4096), (5, 8192, 8192)])
def test_qlora_linear_cuda_vs_float64(dtype, M, K, N):
    q = quantize_nf4(torch.randn(N, K, device=DEV) * K**-0.5, 64)
    A, B = random_lora(N, K, 16, dtype, DEV)
    x = torch.randn(M, K, device=DEV, dtype=dtype, requires_grad=True)
    A.requires_grad_(), B.requires_grad_()
    g = torch.randn(M, N, device=DEV, dtype=dtype)
    y = qlora_linear(x, q, A, B, 2.0)
    y.backward(g)
    ref = qlora_reference_f64(x.detach(), q, A.detach(), B.detach(), 2.0, grad_y=g)
    w = dequantize_nf4(q, dtype)
    plain = F.linear(x.detach(), w) + 2.0 * F.linear(F.linear(x.detach(), A.detach()), B.detach())
    for got, want in zip((y, x.grad, A.grad, B.grad), (ref[0], ref[1], ref[3], ref[4])):
        assert rel_err(got, want) < REL_TOL[dtype]
    assert rel_err(y, ref[0]) <= 2 * rel_err(plain, ref[0]) + 1e-6


def test_bitsandbytes_parity_on_cuda():
    bnbf = pytest.importorskip("bitsandbytes.functional")
    bnb = pytest.importorskip("bitsandbytes")
    for shape, bs in [((4096, 4096), 64), ((333, 1000), 64), ((512, 2048), 128), ((64, 96), 32)]:
        w = torch.randn(shape, device=DEV, dtype=torch.bfloat16)
        for nested in (False, True):
            packed, st = bnbf.quantize_4bit(w, blocksize=bs, quant_type="nf4", compress_statistics=nested)
            q = quantize_nf4(w, bs, double_quant=nested)
            assert torch.equal(packed.view(-1), q.packed), (shape, bs, nested)
            if nested:
                assert torch.equal(st.absmax, q.absmax) and torch.equal(st.state2.absmax, q.nested_absmax)
                assert st.offset.item() == q.nested_offset
            else:
                assert torch.equal(st.absmax, q.absmax)
            assert torch.equal(bnbf.dequantize_4bit(packed, st), dequantize(q, torch.bfloat16))
            # a bitsandbytes-written state dict loads byte for byte
            sd = {"weight": packed, **{f"weight.{k}": v for k, v in st.as_dict(packed=True).items()}}
            loaded = nf4lora.NF4Weight.from_bnb_state_dict(sd)
            assert torch.equal(dequantize(loaded, torch.bfloat16), bnbf.dequantize_4bit(packed, st))
            x = torch.randn(7, shape[1], device=DEV, dtype=torch.bfloat16)
            ref = bnb.matmul_4bit(x, packed.t(), quant_state=st)
            A = torch.zeros(4, shape[1], device=DEV, dtype=torch.bfloat16)
            B = torch.zeros(shape[0], 4, device=DEV, dtype=torch.bfloat16)
            assert rel_err(qlora_linear(x, q, A, B, 1.0), ref) < 1e-2


def test_fwd_bwd_extra_memory_is_small():
    # Forward (Triton) keeps no W; the backward (reference until the fused one lands) dequantizes
    # W to float32 once; nothing else of size N×K lives. The first call autotunes (its benchmark
    # buffers are a one-time cost), so measure the second.
    N, K, M = 8192, 4096, 128
    q = quantize_nf4(torch.randn(N, K, device=DEV), 64)
    A, B = random_lora(N, K, 16, torch.bfloat16, DEV)
    A.requires_grad_(), B.requires_grad_()
    x = torch.randn(M, K, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(M, N, device=DEV, dtype=torch.bfloat16)
    qlora_linear(x, q, A, B, 1.0).backward(g)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    qlora_linear(x, q, A, B, 1.0).backward(g)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    assert extra < 4 * N * K * 1.25, extra  # one float32 W plus activations


def test_torch_compile_fullgraph_on_cuda():
    layer = nf4lora.QLoRALinear(512, 256, r=8, compute_dtype=torch.bfloat16, device=DEV)
    torch.nn.init.normal_(layer.lora_B, std=0.02)
    x = torch.randn(4, 9, 512, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    eager = layer(x)
    eager.float().square().sum().backward()
    gA = layer.lora_A.grad.clone()
    layer.lora_A.grad = None
    compiled = torch.compile(layer, fullgraph=True)
    out = compiled(x)
    out.float().square().sum().backward()
    assert rel_err(out, eager) < 1e-2 and rel_err(layer.lora_A.grad, gA) < 1e-2
