"""More than one GPU: the kernels run on their inputs' device whatever the current device is, on that
device's current stream, and a model split across devices (device_map-style) trains.

GPU (`gpu` marker) and only with two or more CUDA devices (skipped otherwise). Each backend (cuda,
through the C++ node where it is built; triton) on cuda:1 while cuda:0 is current, x̃ absent or given:
outputs and dx, dA, dB against the float64 reference, the current device left as it was; a
non-default stream of cuda:1; two layers on two devices against the same two layers on one device.
"""

import contextlib

import pytest
import torch

from nf4lora import QLoRALinear, _cuda_ext, ops, qlora_linear, quantize_nf4
from conftest import REL_TOL, qlora_reference_f64, random_lora, rel_err

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")]

BACKENDS = [pytest.param("cuda", marks=pytest.mark.skipif(not _cuda_ext.built(), reason="the CUDA extension is not built")),
            "triton"]


def _layer_grads(backend, M, dropout_leaf, device, monkeypatch, stream=None):
    """y, dx, dx_lora, dA, dB of one call on ``device`` (bf16, K = 1024, N = 768, r = 16) and the float64
    reference's, with cuda:0 current throughout."""
    monkeypatch.setenv("NF4LORA_BACKEND", backend)
    K, N, r = 1024, 768, 16
    gen = torch.Generator(device=device).manual_seed(M)
    q = quantize_nf4(torch.randn(N, K, device=device, generator=gen) * K**-0.5, 64, double_quant=True)
    A0, B0 = random_lora(N, K, r, torch.bfloat16, device)
    x0 = torch.randn(M, K, device=device, dtype=torch.bfloat16, generator=gen)
    xl0 = torch.randn(M, K, device=device, dtype=torch.bfloat16, generator=gen) if dropout_leaf else None
    g = torch.randn(M, N, device=device, dtype=torch.bfloat16, generator=gen)
    x, A, B = (t.clone().requires_grad_() for t in (x0, A0, B0))
    xl = None if xl0 is None else xl0.clone().requires_grad_()
    if stream is not None:
        stream.wait_stream(torch.cuda.current_stream(device))  # the inputs were made on cuda:1's default stream
    with torch.cuda.device(0):
        # (a stream context makes the stream's device current while it is entered)
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            y = qlora_linear(x, q, A, B, 0.7, None, xl)
            assert ops.last_path["qlora_linear"] == backend
            y.backward(g)
        if stream is not None:
            torch.cuda.current_stream(device).wait_stream(stream)
        assert torch.cuda.current_device() == 0
    torch.cuda.synchronize(device)
    assert y.device == torch.device(device) and x.grad.device == torch.device(device)
    ref = qlora_reference_f64(x0, q, A0, B0, 0.7, None, xl0, grad_y=g)
    got = (y, x.grad, None if xl is None else xl.grad, A.grad, B.grad)
    return got, ref


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("M", [1, 5, 256])
@pytest.mark.parametrize("dropout_leaf", [False, True])
def test_a_layer_on_the_second_gpu_while_the_first_is_current(monkeypatch, backend, M, dropout_leaf):
    got, ref = _layer_grads(backend, M, dropout_leaf, "cuda:1", monkeypatch)
    for name, out, expect in zip(("y", "dx", "dx_lora", "dA", "dB"), got, ref):
        if expect is None:
            assert out is None, name
            continue
        assert out.device == torch.device("cuda:1"), name
        assert rel_err(out, expect) < REL_TOL[torch.bfloat16], (name, rel_err(out, expect))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_side_stream_of_the_second_gpu(monkeypatch, backend):
    # the kernels launch on cuda:1's current stream (a side stream here), not on cuda:0's or the default
    got, ref = _layer_grads(backend, 64, False, "cuda:1", monkeypatch, stream=torch.cuda.Stream("cuda:1"))
    for name, out, expect in zip(("y", "dx", "dx_lora", "dA", "dB"), got, ref):
        if expect is not None:
            assert rel_err(out, expect) < REL_TOL[torch.bfloat16], (name, rel_err(out, expect))


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_layers_on_two_gpus_train_like_on_one(monkeypatch, backend):
    # device_map-style: layer 0 on cuda:0, layer 1 on cuda:1 (activations moved between them), against
    # copies of the same layers both on cuda:0 (the same kernels on the same inputs; bf16 tolerance in
    # case a library picks another algorithm on the other device)
    monkeypatch.setenv("NF4LORA_BACKEND", backend)
    torch.manual_seed(0)
    base = [torch.nn.Linear(512, 768, dtype=torch.bfloat16), torch.nn.Linear(768, 512, dtype=torch.bfloat16)]
    layers = [QLoRALinear.from_linear(lin.cuda(), r=8, alpha=16) for lin in base]
    for layer in layers:
        torch.nn.init.normal_(layer.lora_B, std=0.02)  # B not zero: dA is not zero either
    split = [layers[0], QLoRALinear.from_linear(base[1].cuda(), r=8, alpha=16).to("cuda:1")]
    split[1].load_state_dict(layers[1].state_dict())
    x = torch.randn(2, 37, 512, device="cuda:0", dtype=torch.bfloat16)

    def step(mods, devices):
        for m in mods:
            m.zero_grad(set_to_none=True)
        h = mods[0](x.to(devices[0]))
        out = mods[1](torch.nn.functional.gelu(h).to(devices[1]))
        (out.float().square().mean()).backward()
        return out.to("cuda:0"), [(m.lora_A.grad.to("cuda:0"), m.lora_B.grad.to("cuda:0")) for m in mods]

    ref_out, ref_grads = step(layers, ("cuda:0", "cuda:0"))
    ref_grads = [(a.clone(), b.clone()) for a, b in ref_grads]
    out, grads = step(split, ("cuda:0", "cuda:1"))
    assert split[1].weight_packed.device == torch.device("cuda:1")
    tol = REL_TOL[torch.bfloat16]
    assert rel_err(out, ref_out) < tol
    for (a, b), (ra, rb) in zip(grads, ref_grads):
        assert rel_err(a, ra) < tol and rel_err(b, rb) < tol
