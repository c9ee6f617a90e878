"""nf4lora::qlora_linear and its backward on the reference path, against float64 math."""

import os

import pytest
import torch
import torch.nn.functional as F

import nf4lora
from nf4lora import QLoRALinear, dequantize_nf4, ops, qlora_linear, quantize_nf4
from conftest import REL_TOL, TF32_TOL, qlora_reference_f64, random_lora, rel_err

SHAPES = [(1, 64, 32), (5, 96, 40), (123, 160, 72), (33, 256, 48)]  # (M, K, N)


def _plain_torch_error(x, q, A, B, scale, bias, dtype):
    """Error of the same math done by plain torch in ``dtype`` (the bar for our kernels)."""
    w = dequantize_nf4(q, dtype)
    y = F.linear(x, w, bias) + scale * F.linear(F.linear(x, A), B)
    return rel_err(y, qlora_reference_f64(x, q, A, B, scale, bias))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("M,K,N", SHAPES)
@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_forward_and_grads_match_float64(dtype, M, K, N, nested, with_bias):
    q = quantize_nf4(torch.randn(N, K), blocksize=32, double_quant=nested)
    r, scale = 8, 2.0
    x = torch.randn(M, K).to(dtype).requires_grad_()
    A, B = random_lora(N, K, r, dtype)
    A.requires_grad_(), B.requires_grad_()
    bias = torch.randn(N).to(dtype).requires_grad_() if with_bias else None
    y = qlora_linear(x, q, A, B, scale, bias)
    g = torch.randn(M, N).to(dtype)
    y.backward(g)
    y64, dx64, _, dA64, dB64 = qlora_reference_f64(x.detach(), q, A.detach(), B.detach(), scale,
                                                    None if bias is None else bias.detach(), grad_y=g)
    tol = REL_TOL[dtype]
    assert y.dtype == dtype and y.shape == (M, N)
    assert rel_err(y, y64) < tol
    assert rel_err(x.grad, dx64) < tol
    assert rel_err(A.grad, dA64) < tol
    assert rel_err(B.grad, dB64) < tol
    if with_bias:
        assert rel_err(bias.grad, g.double().sum(0)) < tol
    if dtype != torch.float32:  # at most about twice the error of plain torch in this dtype
        plain = _plain_torch_error(x.detach(), q, A.detach(), B.detach(), scale,
                                   None if bias is None else bias.detach(), dtype)
        assert rel_err(y, y64) <= 2 * plain + 1e-6


def test_lora_dropout_branch_sees_dropped_x():
    dtype = torch.float32
    M, K, N, r, p, scale = 17, 96, 40, 4, 0.3, 0.5
    q = quantize_nf4(torch.randn(N, K), 32)
    x = torch.randn(M, K, requires_grad=True)
    A, B = random_lora(N, K, r, dtype)
    A.requires_grad_(), B.requires_grad_()
    mask = (torch.rand(M, K) > p).float() / (1 - p)
    x_lora = x * mask
    y = qlora_linear(x, q, A, B, scale, x_lora=x_lora)
    g = torch.randn(M, N)
    y.backward(g)
    y64, dx64, lora64, dA64, dB64 = qlora_reference_f64(x.detach(), q, A.detach(), B.detach(), scale,
                                                         x_lora=x_lora.detach(), grad_y=g)
    assert rel_err(y, y64) < 1e-5
    assert rel_err(x.grad, dx64 + lora64 * mask.double()) < 1e-5
    assert rel_err(A.grad, dA64) < 1e-5 and rel_err(B.grad, dB64) < 1e-5


def _on_cpu_backend(backend, eager, monkeypatch):
    """Force ``backend`` (reference, or triton in its interpreter) and the eager path or the ops for
    CPU float32 tensors; the relative tolerance against float64 for that backend."""
    if backend == "triton" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the Triton backend on CPU tensors needs Triton's interpreter")
    monkeypatch.setenv("NF4LORA_BACKEND", backend)
    monkeypatch.setattr(ops, "EAGER_FAST_PATH", eager)
    return REL_TOL[torch.float32] if backend == "reference" else TF32_TOL


def _penalty_grads(x, q, A, B, scale):
    """Grads of A and B of y.sum() + (∂(Σy²)/∂x)², built with create_graph=True (a gradient penalty)."""
    y = qlora_linear(x, q, A, B, scale)
    (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    return torch.autograd.grad(y.sum() + gx.square().sum(), (A, B))


def test_double_backward_on_the_reference_eager_path_matches_float64(monkeypatch):
    """The reference backend's eager backward is torch math: differentiable again, and right."""
    tol = _on_cpu_backend("reference", True, monkeypatch)
    M, K, N, r, scale = 5, 128, 40, 4, 0.7
    q = quantize_nf4(torch.randn(N, K), 64)
    x = torch.randn(M, K, requires_grad=True)
    A, B = (t.requires_grad_() for t in random_lora(N, K, r, torch.float32))
    dA, dB = _penalty_grads(x, q, A, B, scale)
    w = dequantize_nf4(q, torch.float32).double()
    x64, A64, B64 = (t.detach().double().requires_grad_() for t in (x, A, B))
    y64 = x64 @ w.t() + scale * (x64 @ A64.t()) @ B64.t()
    (gx64,) = torch.autograd.grad(y64.square().sum(), x64, create_graph=True)
    dA64, dB64 = torch.autograd.grad(y64.sum() + gx64.square().sum(), (A64, B64))
    assert rel_err(dA, dA64) < tol and rel_err(dB, dB64) < tol


def test_double_backward_through_the_kernels_is_refused(monkeypatch):
    """The Triton backward's gradients are kernel outputs without a graph: with create_graph=True the
    penalty's terms would be lost silently (they once were, on the eager path); it is an error."""
    _on_cpu_backend("triton", True, monkeypatch)
    q = quantize_nf4(torch.randn(40, 128), 64)
    x = torch.randn(5, 128, requires_grad=True)
    A, B = (t.requires_grad_() for t in random_lora(40, 128, 4, torch.float32))
    with pytest.raises(RuntimeError, match=r"differentiable backward \(create_graph=True.*triton backend"):
        _penalty_grads(x, q, A, B, 0.7)
    monkeypatch.setattr(ops, "EAGER_FAST_PATH", False)  # the registered ops: torch's own refusal
    with pytest.raises(RuntimeError, match="no autograd formula was registered"):
        _penalty_grads(x, q, A, B, 0.7)


@pytest.mark.parametrize("eager", [True, False])
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_a_separate_x_lora_without_grad_keeps_the_lora_term_out_of_dx(eager, backend, monkeypatch):
    """x̃ given apart from x and not requiring grad (e.g. a dropout drawn under no_grad): y depends
    on x only through the base branch, so dx = g·W, with no LoRA term (it once came back with it)."""
    tol = _on_cpu_backend(backend, eager, monkeypatch)
    M, K, N, r, scale = 5, 128, 40, 4, 0.7
    q = quantize_nf4(torch.randn(N, K), 64)
    x = torch.randn(M, K, requires_grad=True)
    x_lora = torch.randn(M, K)  # needs no gradient
    A, B = (t.requires_grad_() for t in random_lora(N, K, r, torch.float32))
    g = torch.randn(M, N)
    y = qlora_linear(x, q, A, B, scale, x_lora=x_lora)
    dx, dA, dB = torch.autograd.grad(y, (x, A, B), g)
    y64, dx64, _, dA64, dB64 = qlora_reference_f64(x.detach(), q, A.detach(), B.detach(), scale,
                                                   x_lora=x_lora, grad_y=g)
    assert rel_err(y, y64) < tol and rel_err(dx, dx64) < tol
    assert rel_err(dA, dA64) < tol and rel_err(dB, dB64) < tol


def test_only_needed_grads_and_leading_dims():
    q = quantize_nf4(torch.randn(40, 64), 64)
    A, B = random_lora(40, 64, 4, torch.float32)
    B.requires_grad_()
    x = torch.randn(2, 3, 64)
    y = qlora_linear(x, q, A, B, 1.0)
    assert y.shape == (2, 3, 40)
    y.sum().backward()
    assert A.grad is None and B.grad is not None and x.grad is None
    x_nc = torch.randn(64, 6).t()  # non-contiguous (6, 64)
    ref = qlora_reference_f64(x_nc, q, A, B.detach(), 1.0)
    assert rel_err(qlora_linear(x_nc, q, A, B.detach(), 1.0), ref) < 1e-5


def test_empty_batch_returns_empty():
    q = quantize_nf4(torch.randn(40, 64), 64)
    A, B = random_lora(40, 64, 4, torch.float32)
    x = torch.randn(0, 64, requires_grad=True)
    y = qlora_linear(x, q, A, B, 1.0)
    assert y.shape == (0, 40)
    y.sum().backward()
    assert x.grad.shape == (0, 64)


def _op_args(dtype=torch.float32, nested=True):
    q = quantize_nf4(torch.randn(40, 96), 32, double_quant=nested)
    x = torch.randn(7, 96, dtype=dtype, requires_grad=True)
    A, B = random_lora(40, 96, 4, dtype)
    return q, x, A.requires_grad_(), B.requires_grad_(), torch.randn(40, dtype=dtype)


@pytest.mark.parametrize("nested", [False, True])
def test_opcheck(nested):
    q, x, A, B, bias = _op_args(nested=nested)
    w = ops._weight_args(q)
    meta = (list(q.shape), q.blocksize, ops._offset_arg(q))
    torch.library.opcheck(torch.ops.nf4lora.dequantize.default, (w, *meta, torch.bfloat16))
    torch.library.opcheck(torch.ops.nf4lora.qlora_linear.default, (x, None, w, *meta, A, B, 0.5, bias))
    xl = torch.randn_like(x, requires_grad=True)
    torch.library.opcheck(torch.ops.nf4lora.qlora_linear.default, (x, xl, w, *meta, A, B, 0.5, None))
    g = torch.randn(7, 40)
    u = torch.randn(7, 4)
    for needs in ([True, False, True, True], [False, False, True, False], [True, True, False, True]):
        torch.library.opcheck(torch.ops.nf4lora.qlora_linear_backward.default,
                              (g, x.detach(), u, w, *meta, A.detach(), B.detach(), 0.5, needs))


def test_torch_compile_fullgraph_matches_eager():
    layer = nf4lora.QLoRALinear(96, 40, r=4, compute_dtype=torch.float32)
    torch.nn.init.normal_(layer.lora_B)
    x = torch.randn(3, 7, 96, requires_grad=True)

    def step(inp):
        return (layer(inp) ** 2).sum()

    eager = step(x)
    eager.backward()
    grads = [t.grad.clone() for t in (x, layer.lora_A, layer.lora_B)]
    for t in (x, layer.lora_A, layer.lora_B):
        t.grad = None
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")(x)
    compiled.backward()
    assert torch.allclose(compiled, eager, rtol=1e-6)
    for g0, t in zip(grads, (x, layer.lora_A, layer.lora_B)):
        assert torch.allclose(t.grad, g0, rtol=1e-5, atol=1e-6)


def test_torch_compile_inductor_cpu():
    layer = nf4lora.QLoRALinear(64, 32, r=4, compute_dtype=torch.float32)
    torch.nn.init.normal_(layer.lora_B)
    x = torch.randn(5, 64)
    f = torch.compile(layer, fullgraph=True)
    assert torch.allclose(f(x), layer(x), rtol=1e-5, atol=1e-6)


# --- bad inputs -----------------------------------------------------------------------

def test_bad_inputs_name_the_argument():
    q, x, A, B, bias = _op_args()
    with pytest.raises(ValueError, match=r"x must have shape \(M, 96\)"):
        qlora_linear(torch.randn(7, 95), q, A, B, 1.0)
    with pytest.raises(TypeError, match="lora_A must have dtype torch.float32"):
        qlora_linear(x, q, A.half(), B, 1.0)
    with pytest.raises(ValueError, match=r"lora_B must have shape \(40, 4\)"):
        qlora_linear(x, q, A, B[:, :3], 1.0)
    with pytest.raises(ValueError, match=r"lora_A must have shape \(r, 96\)"):
        qlora_linear(x, q, A[:, :90], B, 1.0)
    with pytest.raises(ValueError, match=r"bias must have shape \(40,\)"):
        qlora_linear(x, q, A, B, 1.0, bias[:39])
    with pytest.raises(TypeError, match="x must be float32, float16 or bfloat16"):
        qlora_linear(x.detach().long(), q, A, B, 1.0)
    with pytest.raises(ValueError, match="x_lora must have the shape of x"):
        qlora_linear(x, q, A, B, 1.0, x_lora=x[:3])
    with pytest.raises(ValueError, match="x must be on meta"):
        qlora_linear(x, q.to("meta"), A, B, 1.0)


def test_forced_backend_errors(monkeypatch):
    q, x, A, B, _ = _op_args()
    monkeypatch.setenv("NF4LORA_BACKEND", "triton")
    if os.environ.get("TRITON_INTERPRET") == "1":  # CPU tensors run in Triton's interpreter
        qlora_linear(x, q, A, B, 1.0).sum().backward()
        assert ops.last_path == {"qlora_linear": "triton", "qlora_linear_backward": "triton"}
    else:
        with pytest.raises(RuntimeError, match="backend 'triton' needs CUDA tensors, got device cpu"):
            qlora_linear(x, q, A, B, 1.0)
    monkeypatch.setenv("NF4LORA_BACKEND", "cuda")
    with pytest.raises(RuntimeError, match="NF4LORA_BACKEND=cuda cannot run"):
        nf4lora.dequantize(q)
    with pytest.raises(RuntimeError, match="NF4LORA_BACKEND=cuda cannot run nf4lora::qlora_linear"):
        qlora_linear(x, q, A, B, 1.0)
    with pytest.raises(RuntimeError, match="NF4LORA_BACKEND=cuda cannot run nf4lora::qlora_linear_backward"):
        ops.select_backend("qlora_linear_backward", torch.device("cpu"))
    monkeypatch.setenv("NF4LORA_BACKEND", "fast")
    with pytest.raises(ValueError, match="NF4LORA_BACKEND must be one of"):
        qlora_linear(x, q, A, B, 1.0)
    monkeypatch.setenv("NF4LORA_BACKEND", "reference")
    assert qlora_linear(x, q, A, B, 1.0).shape == (7, 40)
    assert nf4lora.select_backend("qlora_linear", torch.device("cpu")) == "reference"


def test_saves_only_what_the_needed_grads_read():
    q = quantize_nf4(torch.randn(40, 96), 32)
    A, B = random_lora(40, 96, 4, torch.float32)
    x = torch.randn(7, 96, requires_grad=True)

    def saved_shapes(A, B):
        shapes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
            y = qlora_linear(x, q, A, B, 1.0)
        y.sum().backward()
        return shapes

    frozen = saved_shapes(A, B)  # only dx needed: neither x (7, 96) nor u (7, 4) is kept
    assert (7, 96) not in frozen and (7, 4) not in frozen
    only_B = saved_shapes(A, B.clone().requires_grad_())  # dB reads u, not x
    assert (7, 4) in only_B and (7, 96) not in only_B
    only_A = saved_shapes(A.clone().requires_grad_(), B)  # dA reads x, not u
    assert (7, 96) in only_A and (7, 4) not in only_A


def test_gradient_checkpointing_gives_the_same_grads():
    layer = nf4lora.QLoRALinear(96, 40, r=4, compute_dtype=torch.float32)
    torch.nn.init.normal_(layer.lora_B)
    x = torch.randn(5, 96, requires_grad=True)
    g = torch.randn(5, 40)

    def grads(fn):
        for t in (x, layer.lora_A, layer.lora_B):
            t.grad = None
        fn(x).backward(g)
        return [t.grad.clone() for t in (x, layer.lora_A, layer.lora_B)]

    plain = grads(layer)
    ckpt = grads(lambda inp: torch.utils.checkpoint.checkpoint(layer, inp, use_reentrant=False))
    for a, b in zip(plain, ckpt):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dropout", [False, True])
def test_eager_path_matches_the_ops(dropout, monkeypatch):
    """qlora_linear outside torch.compile runs the ops' bodies through one autograd.Function:
    the same outputs and gradients (bit for bit) as the registered ops, and it is the path taken."""
    monkeypatch.delenv("NF4LORA_BACKEND", raising=False)
    torch.manual_seed(5)
    q = quantize_nf4(torch.randn(24, 64), 64, double_quant=True)
    x0, xl0 = torch.randn(5, 64), torch.randn(5, 64)
    A0, B0, b0 = torch.randn(4, 64) * 0.1, torch.randn(24, 4) * 0.1, torch.randn(24)
    results = []
    for eager in (True, False):
        monkeypatch.setattr(ops, "EAGER_FAST_PATH", eager)
        x, xl, A, B, b = (t.clone().requires_grad_() for t in (x0, xl0, A0, B0, b0))
        y = qlora_linear(x, q, A, B, 0.7, b, x_lora=xl if dropout else None)
        assert (type(y.grad_fn).__name__ == "_EagerQLoRALinearBackward") == eager
        y.backward(torch.randn_like(y, generator=torch.Generator().manual_seed(1)))
        results.append([y.detach(), x.grad, A.grad, B.grad, b.grad] + ([xl.grad] if dropout else []))
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("how", ["no_grad", "nothing_requires_grad"])
def test_eager_path_without_autograd_matches_the_ops(how, monkeypatch):
    """With nothing to differentiate (no_grad, or no input requiring grad: inference, generate())
    the eager path runs the op's body without an autograd node: the same output bit for bit."""
    monkeypatch.delenv("NF4LORA_BACKEND", raising=False)
    torch.manual_seed(6)
    q = quantize_nf4(torch.randn(24, 64), 64, double_quant=True)
    x, A, B, b = torch.randn(5, 64), torch.randn(4, 64) * 0.1, torch.randn(24, 4) * 0.1, torch.randn(24)
    if how == "no_grad":
        x, A, B = (t.requires_grad_() for t in (x, A, B))
    applied = []
    monkeypatch.setattr(ops._EagerQLoRALinear, "apply", lambda *a: applied.append(a) or None)
    outs = []
    for eager in (True, False):
        monkeypatch.setattr(ops, "EAGER_FAST_PATH", eager)
        with torch.set_grad_enabled(how != "no_grad"):
            outs.append(qlora_linear(x, q, A, B, 0.7, b))
    assert not applied and outs[0].grad_fn is None
    assert torch.equal(outs[0], outs[1])


def test_eager_path_validates_a_reassigned_weight():
    q = quantize_nf4(torch.randn(24, 64), 64)
    x, A, B = torch.randn(2, 64), torch.randn(4, 64), torch.randn(24, 4)
    qlora_linear(x, q, A, B, 1.0)  # passes, and the eager path remembers that it did
    assert len(q.plans) == 1
    q.absmax = q.absmax[:-1]  # a field replaced after construction: caught before any kernel runs
    with pytest.raises(ValueError, match="absmax must have 24 elements"):
        qlora_linear(x, q, A, B, 1.0)
    q.absmax = torch.cat([q.absmax, q.absmax[:1]])  # valid again, other storage: the old plans go
    assert qlora_linear(x, q, A, B, 1.0).shape == (2, 24) and len(q.plans) == 1


def test_layer_weight_is_reused_until_its_buffers_change():
    """layer.weight hands out one NF4Weight while the buffers stay the same objects; an in-place
    swap of a buffer's data (``.data =``) or a reassigned buffer is seen on the next call and
    checked before any kernel runs."""
    torch.manual_seed(0)
    layer = QLoRALinear(64, 24, r=4, bias=False)
    x = torch.randn(3, 64)
    q = layer.weight
    assert layer.weight is q
    y = layer(x)
    q.packed = q.packed.clone()  # the handed-out object edited: the layer rebuilds from its buffers
    assert layer.weight is not q and layer.weight.packed is layer.weight_packed
    layer.weight_absmax.data = layer.weight_absmax.data[:-1].clone()  # same object, fewer elements
    with pytest.raises(ValueError, match="absmax must have 24 elements"):
        layer(x)
    fresh = quantize_nf4(torch.randn(24, 64), 64)
    layer._set_weight(fresh)  # buffers reassigned: the new weight is the one used
    assert layer.weight.packed is fresh.packed
    assert not torch.equal(layer(x), y)


def test_call_level_backend_choice(monkeypatch):
    """A backend registered for some calls only is chosen for the calls it takes, skipped for
    the others, and a forced one that does not take a call is an error naming why."""
    monkeypatch.delenv("NF4LORA_BACKEND", raising=False)
    monkeypatch.setitem(ops._IMPLS["qlora_linear"], "cuda", lambda *a: None)
    monkeypatch.setitem(ops._SUPPORTS["qlora_linear"], "cuda",
                        lambda x, *rest: None if x.shape[0] <= 16 else f"M={x.shape[0]} > 16")
    monkeypatch.setattr(ops, "_backend_unavailable_reason", lambda backend, op, device: None)
    dev = torch.device("cuda")
    q = quantize_nf4(torch.randn(24, 64), 64)
    small = (torch.randn(3, 64), None, q, None, None, 1.0, None)
    large = (torch.randn(40, 64), None, q, None, None, 1.0, None)
    assert ops.select_backend("qlora_linear", dev, small) == "cuda"
    assert ops.select_backend("qlora_linear", dev, large) == "triton"
    assert ops.select_backend("qlora_linear", dev) == "triton"  # no call to judge
    assert ops.regime_backends("qlora_linear", dev) == ["cuda"]
    monkeypatch.setenv("NF4LORA_BACKEND", "cuda")
    with pytest.raises(RuntimeError, match="NF4LORA_BACKEND=cuda cannot run nf4lora::qlora_linear: M=40 > 16"):
        ops.select_backend("qlora_linear", dev, large)


def test_eager_plans_are_kept_per_call_signature(monkeypatch):
    """The eager path checks a call and picks its backends once per call signature (shapes,
    dtypes, devices, NF4LORA_BACKEND, the CUDA switches) and weight; a call of another signature
    gets its own plan, and the results are those of the ops."""
    chosen = []
    select = ops.select_backend
    monkeypatch.setattr(ops, "select_backend", lambda op, *a: chosen.append(op) or select(op, *a))
    q = quantize_nf4(torch.randn(24, 64), 64)
    A0, B0 = random_lora(24, 64, 4, torch.float32)
    A, B = A0.clone().requires_grad_(), B0.clone().requires_grad_()
    x = torch.randn(5, 64, requires_grad=True)
    for _ in range(3):
        qlora_linear(x, q, A, B, 0.5).sum().backward()
    assert chosen == ["qlora_linear", "qlora_linear_backward"] and len(q.plans) == 1
    qlora_linear(torch.randn(6, 64), q, A, B, 0.5)  # another M
    qlora_linear(x.half(), q, A.half(), B.half(), 0.5)  # another dtype
    qlora_linear(x, q, A, B, 0.5, bias=torch.randn(24))  # a bias
    assert chosen.count("qlora_linear") == 4 and len(q.plans) == 4
    monkeypatch.setattr(ops, "_MAX_PLANS", 4)  # bounded: a full table starts over
    qlora_linear(torch.randn(7, 64), q, A, B, 0.5)
    assert len(q.plans) == 1
    # what the plans ran is what the ops run
    monkeypatch.setattr(ops, "EAGER_FAST_PATH", False)
    Ar, Br = A0.clone().requires_grad_(), B0.clone().requires_grad_()
    xr = x.detach().clone().requires_grad_()
    for _ in range(3):
        qlora_linear(xr, q, Ar, Br, 0.5).sum().backward()
    for a, b in ((x.grad, xr.grad), (A.grad, Ar.grad), (B.grad, Br.grad)):
        assert torch.equal(a, b)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs Triton's interpreter (CPU tensors)")
def test_eager_plans_follow_nf4lora_backend(monkeypatch):
    """NF4LORA_BACKEND is read on every call: set between two calls of one signature it applies to
    the next one, and set between a forward and its backward it applies to that backward."""
    q = quantize_nf4(torch.randn(24, 64), 64)
    A, B = (t.requires_grad_() for t in random_lora(24, 64, 4, torch.float32))
    x = torch.randn(5, 64)
    qlora_linear(x, q, A, B, 0.5).sum().backward()
    assert ops.last_path == {"qlora_linear": "reference", "qlora_linear_backward": "reference"}
    monkeypatch.setenv("NF4LORA_BACKEND", "triton")
    y = qlora_linear(x, q, A, B, 0.5)
    assert ops.last_path["qlora_linear"] == "triton"
    monkeypatch.setenv("NF4LORA_BACKEND", "reference")
    y.sum().backward()
    assert ops.last_path["qlora_linear_backward"] == "reference"
    monkeypatch.setenv("NF4LORA_BACKEND", "triton")
    qlora_linear(x, q, A, B, 0.5).sum().backward()
    assert ops.last_path == {"qlora_linear": "triton", "qlora_linear_backward": "triton"}


def test_copies_of_a_weight_start_without_plans():
    """Plans hold raw pointers to the weight's buffers: a deepcopy or a pickled copy starts
    without them (and computes the same)."""
    import copy
    import io

    q = quantize_nf4(torch.randn(24, 64), 64)
    x, A, B = torch.randn(3, 64), torch.randn(4, 64), torch.randn(24, 4)
    y = qlora_linear(x, q, A, B, 1.0)
    buf = io.BytesIO()
    torch.save(q, buf)
    buf.seek(0)
    for other in (copy.deepcopy(q), torch.load(buf, weights_only=False)):
        assert q.plans and not other.plans and "_validated" not in other.__dict__
        assert torch.equal(qlora_linear(x, other, A, B, 1.0), y)


def test_plans_do_not_keep_a_weight_alive():
    """A weight's plans hold nothing that refers back to it: a weight (and its buffers) goes as soon
    as its last reference does, without waiting for the cycle collector."""
    import gc
    import weakref

    gc.disable()
    try:
        q = quantize_nf4(torch.randn(24, 64), 64)
        A, B = (t.requires_grad_() for t in random_lora(24, 64, 4, torch.float32))
        y = qlora_linear(torch.randn(3, 64, requires_grad=True), q, A, B, 1.0)
        y.sum().backward()
        qlora_linear(torch.randn(2, 64), q, A.detach(), B.detach(), 1.0)
        assert len(q.plans) == 2
        ref = weakref.ref(q)
        del q, y
        assert ref() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("eager", [True, False])
@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("x_lora_kind", ["none", "same", "separate"])
def test_every_grad_subset_matches_float64_autograd(eager, backend, x_lora_kind, monkeypatch):
    """Every subset of {x, x̃, A, B, bias} requiring grad, x̃ absent, x itself or a separate tensor:
    the gradients autograd returns are those of the float64 math (the backward's needs protocol
    in every combination)."""
    import itertools

    tol = _on_cpu_backend(backend, eager, monkeypatch)
    M, K, N, r, scale = 3, 64, 24, 4, 0.6
    q = quantize_nf4(torch.randn(N, K), 64)
    w = dequantize_nf4(q, torch.float32).double()
    x0, xl0, b0 = torch.randn(M, K), torch.randn(M, K), torch.randn(N)
    A0, B0 = random_lora(N, K, r, torch.float32)
    g = torch.randn(M, N)
    for mask in itertools.product([False, True], repeat=5):
        need_x, need_xl, need_A, need_B, need_b = mask
        if x_lora_kind != "separate" and need_xl:
            continue  # x̃ is x (or absent): its requires_grad is x's
        if not any(mask):
            continue
        x = x0.clone().requires_grad_(need_x)
        xl = {"none": None, "same": x, "separate": xl0.clone().requires_grad_(need_xl)}[x_lora_kind]
        A, B, b = A0.clone().requires_grad_(need_A), B0.clone().requires_grad_(need_B), b0.clone().requires_grad_(need_b)
        y = qlora_linear(x, q, A, B, scale, b, x_lora=xl)
        inputs = [t for t in (x, xl if x_lora_kind == "separate" else None, A, B, b) if t is not None and t.requires_grad]
        got = torch.autograd.grad(y, inputs, g)
        xd, Ad, Bd, bd = (t.detach().double().requires_grad_(t.requires_grad) for t in (x, A, B, b))
        xld = xd if x_lora_kind != "separate" else xl.detach().double().requires_grad_(xl.requires_grad)
        yd = xd @ w.t() + scale * (xld @ Ad.t()) @ Bd.t() + bd
        refs = [t for t in (xd, xld if x_lora_kind == "separate" else None, Ad, Bd, bd)
                if t is not None and t.requires_grad]
        want = torch.autograd.grad(yd, refs, g.double())
        assert rel_err(y, yd) < tol, mask
        for a, e in zip(got, want):
            assert rel_err(a, e) < tol, mask


def test_the_eager_node_takes_the_launch_plan_the_planner_bound():
    # _EagerPlan hands the C++ node the forward's own launch plan (no second planning): what
    # _with_plan bound, and nothing where the plan was not kept (it held a copy of the codes)
    class Plan:
        def __init__(self, cacheable):
            self.cacheable = cacheable

    kept, not_kept = Plan(True), Plan(False)
    assert ops._bound_plan(ops._with_plan(ops._cuda_forward, kept, "plan"), "plan") is kept
    assert ops._bound_plan(ops._with_plan(ops._cuda_forward, not_kept, "plan"), "plan") is None
    assert ops._bound_plan(ops._cuda_forward, "plan") is None
