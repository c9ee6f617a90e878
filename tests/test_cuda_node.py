"""The eager path's autograd node in C++ (csrc/node.cpp, nf4lora._node): the same kernels as the
Python Function, called through _C's launch table, with the backward in C++.

GPU (`gpu` marker): outputs and every gradient bit-equal to the Python Function's on the same
kernels, at small and large M, both absmax forms, bias with and without its gradient, any subset of
x, A, B requiring grad, x̃ absent, dropout(x), or a leaf of its own with or without grad, float16 and
bfloat16; and the float64 reference. CPU: the module builds
where _C does, takes _C's launch table, and reports a launcher's refusal as a RuntimeError.
"""

import ctypes

import pytest
import torch

from nf4lora import _cuda_ext, ops, qlora_linear, quantize_nf4
from conftest import REL_TOL, qlora_reference_f64, random_lora, rel_err

DEV = "cuda"
needs_node = pytest.mark.skipif(_cuda_ext._NODE is None, reason=f"nf4lora._node not built: {_cuda_ext._NODE_ERROR}")


@needs_node
def test_node_reports_a_launchers_refusal():
    # cfg with blocksize 32: _C's launcher refuses it before touching any memory (no GPU needed)
    x, A, B = torch.zeros(2, 256), torch.zeros(4, 256), torch.zeros(64, 4)
    cfg = [1, 0, 0, 0, 0, 0, 1, 0, 0, 16, 16, 16, 0, 0, 32, 64, 256, 4]
    assert len(cfg) == _cuda_ext._NODE.CFG_SIZE
    with pytest.raises(RuntimeError, match="blocksize must be a power of two in"):
        _cuda_ext._NODE.qlora_apply(x, None, A, B, None, 1.0, cfg, 0.0, [], 0, 0, 0)
    # the messages that carry numbers (formatted without iostreams: node.cpp says why)
    with pytest.raises(RuntimeError, match="cfg must have 18 entries, got 17"):
        _cuda_ext._NODE.qlora_apply(x, None, A, B, None, 1.0, cfg[:-1], 0.0, [], 0, 0, 0)
    v = _cuda_ext._C.LAUNCH_TABLE_VERSION
    with pytest.raises(RuntimeError, match=rf"launch table version {v + 1} from _C \(table {v}\), this module "
                                           rf"takes {v} "):
        _cuda_ext._NODE.set_launch_table(_cuda_ext._C.launch_table(), v + 1)
    # any capsule but _C's own table is refused (its pointer is never read)
    new_capsule = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(
        ("PyCapsule_New", ctypes.pythonapi))
    dummy, name = ctypes.c_int(1), ctypes.create_string_buffer(b"some.other.capsule")
    foreign = new_capsule(ctypes.addressof(dummy), ctypes.addressof(name), None)
    with pytest.raises(RuntimeError, match="set_launch_table takes the capsule of nf4lora._C.launch_table"):
        _cuda_ext._NODE.set_launch_table(foreign, v)
    # the refusals left _C's table in place
    with pytest.raises(RuntimeError, match="blocksize must be a power of two in"):
        _cuda_ext._NODE.qlora_apply(x, None, A, B, None, 1.0, cfg, 0.0, [], 0, 0, 0)
    with pytest.raises(TypeError):
        _cuda_ext._NODE.qlora_apply(x, None, A, B, None, "1.0", cfg, 0.0, [], 0, 0, 0)


# How x̃ enters: absent (x itself), dropout of x inside the graph (the layer's case: grads reach x
# by both branches), or a leaf of its own that requires grad, or one that does not (the LoRA term
# must then stay out of dx).
XL_MODES = ("none", "of_x", "leaf_grad", "leaf_nograd")


def _grads(x0, q, A0, B0, b0, g, need, mask=None, xl_mode="none", scale=0.7):
    x, A, B, b = (t.detach().clone().requires_grad_(n) for t, n in zip((x0, A0, B0, b0), need))
    xl = None
    if xl_mode == "of_x":
        xl = x * mask
    elif xl_mode != "none":
        xl = (x0 * mask).detach().requires_grad_(xl_mode == "leaf_grad")
    y = qlora_linear(x, q, A, B, scale, b, x_lora=xl)
    node = y.grad_fn.name()
    assert ops.last_path["qlora_linear"] == "cuda"
    wrt = [t for t in (x, xl if xl_mode.startswith("leaf") else None, A, B, b) if t is not None and t.requires_grad]
    outs = torch.autograd.grad(y, wrt, g)
    assert ops.last_path["qlora_linear_backward"] == "cuda"
    return [y.detach(), *outs], node


@needs_node
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M,N,K,r", [(1, 256, 512, 16), (16, 1024, 4096, 8), (64, 512, 1024, 16),
                                     (128, 4096, 4096, 16), (300, 640, 1024, 64)])
@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("xl_mode", XL_MODES)
def test_node_matches_the_python_function(dtype, M, N, K, r, nested, xl_mode, monkeypatch):
    torch.manual_seed(M + N)
    q = quantize_nf4(torch.randn(N, K, device=DEV) * K**-0.5, 64, double_quant=nested)
    A, B = random_lora(N, K, r, dtype, DEV)
    x = torch.randn(M, K, device=DEV, dtype=dtype)
    b = torch.randn(N, device=DEV, dtype=dtype)
    g = torch.randn(M, N, device=DEV, dtype=dtype)
    mask = (torch.rand(M, K, device=DEV) > 0.1).to(dtype) / 0.9  # a dropout mask, p = 0.1
    for need in [(True, True, True, False), (False, True, True, True), (True, False, False, False),
                 (False, False, True, False)]:
        node, name = _grads(x, q, A, B, b, g, need, mask, xl_mode)
        assert "QLoRANode" in name
        monkeypatch.setattr(ops, "EAGER_NODE", False)
        py, name = _grads(x, q, A, B, b, g, need, mask, xl_mode)
        monkeypatch.setattr(ops, "EAGER_NODE", True)
        assert name == "_EagerQLoRALinearBackward"
        assert len(node) == len(py)
        for a, c in zip(node, py):
            assert torch.equal(a, c)
    # the float64 reference: x, x̃ (when a leaf), A, B requiring grad
    xl = None if xl_mode == "none" else x * mask
    ref = qlora_reference_f64(x, q, A, B, 0.7, b, x_lora=xl, grad_y=g)
    y_ref, dx_ref, dxl_ref, dA_ref, dB_ref = ref
    if xl_mode == "of_x":  # x's gradient through both branches
        dx_ref = dx_ref + dxl_ref * mask.double()
    want = {"none": (y_ref, dx_ref, dA_ref, dB_ref), "of_x": (y_ref, dx_ref, dA_ref, dB_ref),
            "leaf_grad": (y_ref, dx_ref, dxl_ref, dA_ref, dB_ref), "leaf_nograd": (y_ref, dx_ref, dA_ref, dB_ref)}
    node, _ = _grads(x, q, A, B, b, g, (True, True, True, False), mask, xl_mode)
    assert len(node) == len(want[xl_mode])
    for out, ref_out in zip(node, want[xl_mode]):
        assert rel_err(out, ref_out) < REL_TOL[dtype]


@needs_node
@pytest.mark.gpu
def test_node_keeps_the_weight_for_its_backward():
    """The node's launch arguments point into the weight's buffers: a layer deleted between the
    forward and the backward still gives the backward its weight."""
    import gc

    from nf4lora import QLoRALinear

    torch.manual_seed(3)
    layer = QLoRALinear(1024, 512, r=16, compute_dtype=torch.bfloat16, device=DEV)
    torch.nn.init.normal_(layer.lora_B, std=0.02)
    x = torch.randn(64, 1024, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(64, 512, device=DEV, dtype=torch.bfloat16)
    want = torch.autograd.grad(layer(x), x, g)[0]
    y = layer(x)
    assert "QLoRANode" in y.grad_fn.name()
    del layer
    gc.collect()
    torch.cuda.empty_cache()
    torch.empty(64 << 20, device=DEV, dtype=torch.uint8).fill_(0xFF)  # reuse freed memory, if any
    assert torch.equal(torch.autograd.grad(y, x, g)[0], want)


@needs_node
@pytest.mark.gpu
def test_node_not_taken_where_it_does_not_apply(monkeypatch):
    """A backward the CUDA dx kernel does not take (N not a multiple of 64) or float32 stay on the
    Python Function; LoRA dropout (x̃ ≠ x) takes the node."""
    q = quantize_nf4(torch.randn(200, 512, device=DEV), 64)
    A, B = (t.requires_grad_() for t in random_lora(200, 512, 8, torch.bfloat16, DEV))
    x = torch.randn(32, 512, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    y = qlora_linear(x, q, A, B, 0.5)
    assert type(y.grad_fn).__name__ == "_EagerQLoRALinearBackward"  # N = 200: dx kernel needs 64 | N
    q = quantize_nf4(torch.randn(256, 512, device=DEV), 64)
    A, B = (t.requires_grad_() for t in random_lora(256, 512, 8, torch.bfloat16, DEV))
    y = qlora_linear(x, q, A, B, 0.5, x_lora=torch.nn.functional.dropout(x, 0.1))
    assert "QLoRANode" in y.grad_fn.name()
    y = qlora_linear(x.float(), q, A.float(), B.float(), 0.5)
    assert "QLoRANode" not in y.grad_fn.name()
    y = qlora_linear(x, q, A, B, 0.5)
    assert "QLoRANode" in y.grad_fn.name()


@needs_node
@pytest.mark.gpu
def test_forced_cuda_backend_refuses_at_the_backward(monkeypatch):
    """NF4LORA_BACKEND=cuda with a backward the dx kernel does not take (N = 200): the forward runs
    (the Python Function; no-grad calls too) and the backward, when it runs, names the refusal."""
    monkeypatch.setenv("NF4LORA_BACKEND", "cuda")
    q = quantize_nf4(torch.randn(200, 512, device=DEV), 64)
    A, B = (t.requires_grad_() for t in random_lora(200, 512, 8, torch.bfloat16, DEV))
    x = torch.randn(32, 512, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    with torch.no_grad():
        want = qlora_linear(x, q, A, B, 0.5)
    y = qlora_linear(x, q, A, B, 0.5)
    assert type(y.grad_fn).__name__ == "_EagerQLoRALinearBackward"
    assert torch.equal(y.detach(), want)
    with pytest.raises(RuntimeError, match="cannot run nf4lora::qlora_linear_backward: the CUDA dx kernel needs N"):
        y.sum().backward()


@needs_node
@pytest.mark.gpu
@pytest.mark.parametrize("node", [True, False])
def test_double_backward_is_refused_on_the_cuda_backend(node, monkeypatch):
    """create_graph=True through the CUDA kernels (C++ node or Python Function) is an error, not a
    gradient penalty silently dropped."""
    monkeypatch.setattr(ops, "EAGER_NODE", node)
    q = quantize_nf4(torch.randn(256, 512, device=DEV), 64)
    A, B = (t.requires_grad_() for t in random_lora(256, 512, 8, torch.bfloat16, DEV))
    x = torch.randn(32, 512, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    y = qlora_linear(x, q, A, B, 0.5)
    assert ("QLoRANode" in y.grad_fn.name()) == node
    with pytest.raises(RuntimeError, match=r"differentiable backward \(create_graph=True.*cuda backend"):
        torch.autograd.grad(y.float().square().sum(), x, create_graph=True)
    # and the plain backward still runs
    assert torch.autograd.grad(qlora_linear(x, q, A, B, 0.5).float().sum(), x)[0].isfinite().all()
