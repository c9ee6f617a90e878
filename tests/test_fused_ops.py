"""nf4lora.fused: the RMSNorm and SwiGLU kernels (triton_kernels/model_ops.py) and fuse_model_ops.

CPU (CI): Triton's interpreter (TRITON_INTERPRET=1, set by conftest without a GPU) runs the kernels on CPU tensors,
fp32 / fp16 (the interpreter converts float32 to bfloat16 by truncation, not round-to-nearest: 1 + 2^-7 - 2^-12
becomes 1.0, so bf16 runs on the GPU only); outputs and gradients against float64, each low-precision error within
twice what the same math in PyTorch at that dtype makes. GPU (`gpu` marker): also bf16, real shapes, poisoned
outputs.
"""

import copy
import os

import pytest
import torch
import torch.nn.functional as F

import nf4lora
from nf4lora import fused
from conftest import poison_next_alloc, rel_err

ON_GPU = torch.cuda.is_available()
DEV = "cuda" if ON_GPU else "cpu"
needs_triton = pytest.mark.skipif(not ON_GPU and os.environ.get("TRITON_INTERPRET") != "1",
                                  reason="needs a GPU or Triton's interpreter")
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if ON_GPU else [])


def _budget(err_plain, dtype):
    # fp32: the kernels' fp32 math is as exact as the reference's; low precision: twice PyTorch's own error at that
    # dtype, with a floor of a quarter of a rounding step (PyTorch's error can be near zero on a few elements).
    return 1e-5 if dtype == torch.float32 else max(2 * err_plain, 2.0 ** -10)


def _norm_grads(x, w, g, fn):
    x = x.detach().clone().requires_grad_(True)
    w = w.detach().clone().requires_grad_(True)
    y = fn(x, w)
    y.backward(g.to(y.dtype))
    return y.detach(), x.grad, w.grad


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 7), (5, 33), (2, 3, 96), (123, 64)])
def test_rms_norm_matches_float64(dtype, shape):
    N = shape[-1]
    x = torch.randn(shape, device=DEV).to(dtype)
    w = (1 + 0.2 * torch.randn(N, device=DEV)).to(dtype)
    g = torch.randn(shape, device=DEV)
    y, dx, dw = _norm_grads(x, w, g, lambda a, b: fused.rms_norm(a, b, 1e-6))
    assert fused.last_path["rms_norm"] == "triton"
    y64, dx64, dw64 = _norm_grads(x.double(), w.double(), g.double(),
                                  lambda a, b: fused.rms_norm_reference(a, b, 1e-6))
    yp, dxp, dwp = _norm_grads(x, w, g, lambda a, b: fused.rms_norm_reference(a, b, 1e-6))
    assert y.dtype == dtype and dx.dtype == dtype and dw.dtype == dtype
    for out, ref, plain in ((y, y64, yp), (dx, dx64, dxp), (dw, dw64, dwp)):
        assert rel_err(out, ref) <= _budget(rel_err(plain, ref), dtype)


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (1023,), (3, 5, 67), (2, 1025)])
def test_swiglu_matches_float64(dtype, shape):
    gate = (2 * torch.randn(shape, device=DEV)).to(dtype)
    up = torch.randn(shape, device=DEV).to(dtype)
    dh = torch.randn(shape, device=DEV)

    def run(fn, a, b):
        a = a.detach().clone().requires_grad_(True)
        b = b.detach().clone().requires_grad_(True)
        h = fn(a, b)
        h.backward(dh.to(h.dtype))
        return h.detach(), a.grad, b.grad

    out = run(fused.swiglu, gate, up)
    assert fused.last_path["swiglu"] == "triton"
    ref = run(lambda a, b: F.silu(a) * b, gate.double(), up.double())
    plain = run(lambda a, b: F.silu(a) * b, gate, up)
    for o, r, p in zip(out, ref, plain):
        assert o.dtype == dtype
        assert rel_err(o, r) <= _budget(rel_err(p, r), dtype)


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,H,S,D,cos_b,transposed", [(1, 1, 1, 2, 1, False), (2, 3, 37, 8, 1, True),
                                                      (2, 2, 17, 16, 2, False), (1, 4, 5, 128, 1, True)])
def test_rotary_matches_float64(dtype, B, H, S, D, cos_b, transposed):
    # q as Hugging Face's attention hands it over: (B, S, H, D) memory viewed as (B, H, S, D), or contiguous
    x = torch.randn(B, S, H, D, device=DEV).transpose(1, 2) if transposed else torch.randn(B, H, S, D, device=DEV)
    x = x.to(dtype)
    ang = torch.randn(cos_b, S, D // 2, device=DEV)
    emb = torch.cat([ang, ang + 0.3], dim=-1)  # halves that differ: the kernel reads both
    cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
    g = torch.randn(B, H, S, D, device=DEV)

    def run(fn, x_, c_, s_):
        x_ = x_.detach().clone().requires_grad_(True) if not transposed else \
            x_.detach().transpose(1, 2).clone().transpose(1, 2).requires_grad_(True)
        y = fn(x_, c_, s_)
        y.backward(g.to(y.dtype))
        return y.detach(), x_.grad

    y, dx = run(fused.rotary, x, cos, sin)
    assert fused.last_path["rotary"] == "triton"
    assert y.stride() == x.stride() and y.dtype == dtype
    y64, dx64 = run(fused.rotary_reference, x.double(), cos.double(), sin.double())
    yp, dxp = run(fused.rotary_reference, x, cos, sin)
    assert rel_err(y, y64) <= _budget(rel_err(yp, y64), dtype)
    assert rel_err(dx, dx64) <= _budget(rel_err(dxp, dx64), dtype)


@needs_triton
def test_calls_autograd_does_not_record_run_the_kernels_without_an_autograd_function():
    # decode (no grad) skips the autograd Functions' host cost: the same bits, no graph; with grad the Functions
    x = torch.randn(3, 5, 64, device=DEV, requires_grad=True)
    w = (1 + 0.2 * torch.randn(64, device=DEV)).requires_grad_(True)
    gate, up = torch.randn(3, 96, device=DEV, requires_grad=True), torch.randn(3, 96, device=DEV)
    q = torch.randn(2, 7, 4, 16, device=DEV).transpose(1, 2).requires_grad_(True)
    emb = torch.randn(1, 7, 16, device=DEV)
    cos, sin = emb.cos(), emb.sin()
    calls = [lambda: fused.rms_norm(x, w, 1e-6), lambda: fused.swiglu(gate, up), lambda: fused.rotary(q, cos, sin)]
    for call, fn_name in zip(calls, ["_RMSNormBackward", "_SwiGLUBackward", "_RotaryBackward"]):
        with_grad = call()
        assert type(with_grad.grad_fn).__name__ == fn_name
        with torch.no_grad():
            plain = call()
        assert plain.grad_fn is None and torch.equal(plain, with_grad.detach())
        assert plain.stride() == with_grad.stride()
    assert fused.last_path == {"rms_norm": "triton", "swiglu": "triton", "rotary": "triton"}


@needs_triton
def test_the_rotary_patch_fuses_only_the_calls_it_understands():
    calls = []

    def original(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):  # Hugging Face's older signature
        calls.append((position_ids, unsqueeze_dim))
        return fused.rotary_reference(q, cos, sin), fused.rotary_reference(k, cos, sin)

    def star(q, k, cos, sin, *args):
        calls.append(args)
        return q, k

    q, k = torch.randn(1, 2, 3, 8, device=DEV), torch.randn(1, 1, 3, 8, device=DEV)
    ang = torch.randn(1, 3, 8, device=DEV)
    cos, sin = ang.cos(), ang.sin()
    patched = fused._fused_apply_rotary(original)
    for args, kwargs in [((), {}), ((None,), {}), ((None, 1), {}), ((), {"unsqueeze_dim": 1}),
                         ((None,), {"unsqueeze_dim": 1})]:
        qe, ke = patched(q, k, cos, sin, *args, **kwargs)
        assert fused.last_path["rotary"] == "triton" and not calls, (args, kwargs)
        assert torch.allclose(qe, fused.rotary_reference(q, cos, sin), atol=1e-6)
        assert torch.allclose(ke, fused.rotary_reference(k, cos, sin), atol=1e-6)
    for args, kwargs in [((None, 2), {}), ((), {"unsqueeze_dim": 2}), ((torch.arange(3),), {}),
                         ((), {"position_ids": torch.arange(3)})]:
        patched(q, k, cos, sin, *args, **kwargs)
        assert fused.last_path["rotary"] == "torch" and len(calls) == 1, (args, kwargs)
        calls.clear()
    for args, kwargs in [((None, 1, 0), {}), ((), {"scale": 2.0}), ((None,), {"position_ids": None})]:
        with pytest.raises(TypeError):  # the original's own refusal
            patched(q, k, cos, sin, *args, **kwargs)
        assert fused.last_path["rotary"] == "torch" and not calls
    fused._fused_apply_rotary(star)(q, k, cos, sin)  # a signature it cannot name: always the original
    assert fused.last_path["rotary"] == "torch" and calls == [()]


def test_rotary_runs_the_reference_where_the_kernel_does_not_take_the_call():
    x = torch.randn(1, 2, 3, 6, device=DEV)  # D / 2 = 3: not a power of two
    cos, sin = torch.randn(1, 3, 6, device=DEV), torch.randn(1, 3, 6, device=DEV)
    assert torch.equal(fused.rotary(x, cos, sin), fused.rotary_reference(x, cos, sin))
    assert fused.last_path["rotary"] == "torch"


@needs_triton
def test_rms_norm_with_a_float32_weight_returns_float32():
    # weight · x.to(input_dtype) promotes, as in Hugging Face's module
    x = torch.randn(4, 40, device=DEV).to(torch.float16)
    w = 1 + 0.2 * torch.randn(40, device=DEV)
    y = fused.rms_norm(x, w, 1e-5)
    ref = fused.rms_norm_reference(x, w, 1e-5)
    assert y.dtype == ref.dtype == torch.float32
    assert rel_err(y, ref) < 1e-3


def test_fused_ops_name_what_is_wrong():
    with pytest.raises(ValueError, match=r"weight must have shape \(8,\).*got \(7,\)"):
        fused.rms_norm(torch.randn(2, 8), torch.ones(7), 1e-6)
    with pytest.raises(ValueError, match="gate and up must match"):
        fused.swiglu(torch.randn(2, 8), torch.randn(2, 9))
    with pytest.raises(ValueError, match="gate and up must match"):
        fused.swiglu(torch.randn(2, 8), torch.randn(2, 8, dtype=torch.float64))


def test_float64_takes_the_pytorch_path():
    # the kernels compute in float32: a float64 call keeps float64 math
    x, w = torch.randn(3, 16, dtype=torch.float64), torch.rand(16, dtype=torch.float64) + 0.5
    assert torch.equal(fused.rms_norm(x, w, 1e-6), fused.rms_norm_reference(x, w, 1e-6))
    assert fused.last_path["rms_norm"] == "torch"
    g, u = torch.randn(3, 16, dtype=torch.float64), torch.randn(3, 16, dtype=torch.float64)
    assert torch.equal(fused.swiglu(g, u), F.silu(g) * u) and fused.last_path["swiglu"] == "torch"


def test_cpu_without_the_interpreter_runs_the_same_math_in_torch(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x, w = torch.randn(3, 16), torch.rand(16) + 0.5
    assert torch.equal(fused.rms_norm(x, w, 1e-6), fused.rms_norm_reference(x, w, 1e-6))
    assert fused.last_path["rms_norm"] == "torch"
    g, u = torch.randn(3, 16), torch.randn(3, 16)
    assert torch.equal(fused.swiglu(g, u), F.silu(g) * u)
    assert fused.last_path["swiglu"] == "torch"


transformers = pytest.importorskip("transformers")
SMALL = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)


KINDS = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
         "mistral": ("MistralConfig", "MistralForCausalLM")}


def _converted(kind):
    """A small random model of ``kind``, converted (r = 4), its LoRA B random so that the adapters count."""
    cfg_name, model_name = KINDS[kind]
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(getattr(transformers, cfg_name)(**SMALL)).to(DEV)
    nf4lora.convert(model, "all-linear", r=4, alpha=8, progress=False)
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nf4lora.QLoRALinear):
            torch.nn.init.normal_(m.lora_B, std=0.05)
    return model


@needs_triton
@pytest.mark.parametrize("kind", ["llama", "qwen2", "mistral"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_fuse_model_ops_keeps_a_converted_model_s_outputs_and_grads(kind, checkpointing):
    base = _converted(kind)
    model = copy.deepcopy(base)
    keys = list(model.state_dict())
    ids = torch.randint(0, SMALL["vocab_size"], (2, 11), device=DEV)

    def step(m):
        m.train()
        if checkpointing:
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        out = m(input_ids=ids, labels=ids)
        out.loss.backward()
        return out.logits.detach(), {n: p.grad for n, p in m.named_parameters() if p.requires_grad}

    ref_logits, ref_grads = step(base)  # before the patch: the rotary function is a module global
    try:
        fused.last_path.clear()
        summary = nf4lora.fuse_model_ops(model)
        L = SMALL["num_hidden_layers"]
        assert len(summary["rms_norms"]) == 2 * L + 1 and len(summary["mlps"]) == L and not summary["skipped"]
        assert summary["rotary"] == [type(model.model.layers[0].self_attn).__module__]
        assert list(model.state_dict()) == keys  # the same weights under the same names
        logits, g = step(model)
        assert fused.last_path == {"rms_norm": "triton", "swiglu": "triton", "rotary": "triton"}
    finally:
        assert nf4lora.restore_rotary() == [type(model.model.layers[0].self_attn).__module__]
    assert rel_err(logits, ref_logits) < 1e-5  # fp32 model: the same math up to summation order
    assert g.keys() == ref_grads.keys() and len(g) == 2 * 7 * L
    for n in g:
        assert rel_err(g[n], ref_grads[n]) < 1e-4, n


@needs_triton
@pytest.mark.parametrize("kind", ["gemma", "cohere"])
def test_fuse_model_ops_leaves_look_alike_ops_as_they_are(kind):
    # Gemma's RMSNorm scales by 1 + weight; Cohere's rotary embedding rotates interleaved pairs: fused blindly, both
    # models' logits came out wrong (rel. error 1.0 and 0.006 before the probes)
    cfg_cls = getattr(transformers, kind.capitalize() + "Config", None)
    if cfg_cls is None:
        pytest.skip(f"this transformers has no {kind}")
    model_cls = getattr(transformers, kind.capitalize() + "ForCausalLM")
    torch.manual_seed(0)
    base = model_cls(cfg_cls(**SMALL, **({"head_dim": 16} if kind == "gemma" else {}))).to(DEV).eval()
    for m in base.modules():  # weights away from Gemma's zero init, so that 1 + w and w differ everywhere
        if type(m).__name__.endswith("RMSNorm"):
            torch.nn.init.normal_(m.weight, 0.5, 0.2)
    model = copy.deepcopy(base)
    ids = torch.randint(0, SMALL["vocab_size"], (2, 9), device=DEV)
    try:
        with pytest.warns(UserWarning, match="left as"):
            summary = nf4lora.fuse_model_ops(model)
        with torch.no_grad():
            logits, ref = model(ids).logits, base(ids).logits
    finally:
        nf4lora.restore_rotary()
    if kind == "gemma":  # norms left as they were, the standard rotary embedding fused
        assert not summary["rms_norms"] and len(summary["skipped"]) == 2 * SMALL["num_hidden_layers"] + 1
        assert summary["rotary"] and not summary["rotary_skipped"]
    else:  # the SwiGLU MLPs fused, the interleaved rotary embedding left as it was
        assert len(summary["mlps"]) == SMALL["num_hidden_layers"] and not summary["rotary"]
        assert summary["rotary_skipped"] == [type(model.model.layers[0].self_attn).__module__]
    assert rel_err(logits, ref) < 1e-5


def test_fuse_model_ops_checks_each_module_s_math():
    class FooRMSNorm(torch.nn.Module):  # an RMSNorm by name, (1 + w) by math
        def __init__(self):
            super().__init__()
            self.weight, self.variance_epsilon = torch.nn.Parameter(torch.rand(16)), 1e-6

        def forward(self, x):
            return fused.rms_norm_reference(x, 1 + self.weight, self.variance_epsilon)

    class GatedUpMLP(torch.nn.Module):  # the SwiGLU names, silu on the other projection
        def __init__(self, dropout):
            super().__init__()
            self.gate_proj, self.up_proj = torch.nn.Linear(16, 24), torch.nn.Linear(16, 24)
            self.down_proj, self.act_fn, self.drop = torch.nn.Linear(24, 16), torch.nn.SiLU(), torch.nn.Dropout(dropout)

        def forward(self, x):
            return self.down_proj(self.act_fn(self.up_proj(x)) * self.gate_proj(x))

    class SwiGLU(GatedUpMLP):  # the real thing, with a dropout that the probe must not see
        def forward(self, x):
            return self.down_proj(self.act_fn(self.gate_proj(self.drop(x))) * self.up_proj(self.drop(x)))

    class BarRMSNorm(FooRMSNorm):  # Llama's math, wrapped by a hook at the instance (as accelerate's device hooks)
        def forward(self, x):
            return fused.rms_norm_reference(x, self.weight, self.variance_epsilon)

    hooked, plain = BarRMSNorm(), BarRMSNorm()
    hooked.forward = lambda x: BarRMSNorm.forward(hooked, x)
    model = torch.nn.Sequential(FooRMSNorm(), GatedUpMLP(0.0), SwiGLU(0.5), hooked, plain).train()
    with pytest.warns(UserWarning, match="not LlamaRMSNorm's math"):
        summary = nf4lora.fuse_model_ops(model, rotary=False)
    assert summary["skipped"] == ["0", "3"] and summary["rms_norms"] == ["4"] and summary["mlps"] == ["2"]
    assert model.training and model[2].training
    assert type(model[0]).__name__ == "FooRMSNorm" and "forward" not in model[1].__dict__
    assert model[3] is hooked and isinstance(model[4], nf4lora.FusedRMSNorm)


@needs_triton
@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_a_fused_model_generates_what_the_unfused_one_does(kind):
    # generate() runs without grad (the kernels without autograd Functions) over a prefill and one-token steps
    base = _converted(kind)
    model = copy.deepcopy(base)
    ids = torch.randint(0, SMALL["vocab_size"], (2, 5), device=DEV)
    kw = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0, output_scores=True,
              return_dict_in_generate=True)
    ref = base.generate(ids, **kw)
    try:
        nf4lora.fuse_model_ops(model)
        fused.last_path.clear()
        out = model.generate(ids, **kw)
        assert fused.last_path == {"rms_norm": "triton", "swiglu": "triton", "rotary": "triton"}
    finally:
        nf4lora.restore_rotary()
    assert torch.equal(out.sequences, ref.sequences)
    for a, b in zip(out.scores, ref.scores):  # fp32: summation order only; -inf where min_new_tokens bans EOS
        assert torch.equal(torch.isinf(a), torch.isinf(b))
        assert rel_err(a.masked_fill(torch.isinf(a), 0), b.masked_fill(torch.isinf(b), 0)) < 1e-5


def _op_inputs():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 64, device=DEV, requires_grad=True)
    w = (1 + 0.2 * torch.randn(64, device=DEV)).requires_grad_(True)
    g, u = (torch.randn(3, 96, device=DEV, requires_grad=True) for _ in range(2))
    q = torch.randn(2, 7, 4, 16, device=DEV).transpose(1, 2).requires_grad_(True)
    k = torch.randn(2, 7, 2, 16, device=DEV).transpose(1, 2).requires_grad_(True)
    emb = torch.randn(1, 7, 16, device=DEV)
    return (x, w, g, u, q, k), emb.cos(), emb.sin()


@needs_triton
@pytest.mark.parametrize("backend", ["recording", "inductor"])
def test_fused_ops_compile_with_fullgraph_to_the_same_bits(backend):
    # under torch.compile the launchers are registered ops (nf4lora::rms_norm_fwd ...): one graph, the same kernels
    from transformers.models.llama import modeling_llama as ml

    inputs, cos, sin = _op_inputs()
    apply_rotary = fused._fused_apply_rotary(ml.apply_rotary_pos_emb)  # as fuse_model_ops installs it

    def f(x, w, g, u, q, k):
        return (fused.rms_norm(x, w, 1e-6), fused.swiglu(g, u)) + tuple(apply_rotary(q, k, cos, sin))

    def run(fn):
        for t in inputs:
            t.grad = None
        outs = fn(*inputs)
        torch.autograd.backward(outs, [torch.full_like(o, 0.5) for o in outs])
        return [o.detach() for o in outs] + [t.grad.clone() for t in inputs]

    graphs = []

    def recording(gm, example_inputs):
        graphs.append(gm.print_readable(print_output=False))
        return gm.forward

    ref = run(f)
    torch._dynamo.reset()
    got = run(torch.compile(f, fullgraph=True, backend=recording if backend == "recording" else backend))
    assert fused.last_path == {"rms_norm": "triton", "swiglu": "triton", "rotary": "triton"}
    dw = 4 + 1  # the norm weight's gradient: PyTorch ops, which inductor may fuse into another summation order
    assert all(torch.equal(a, b) for i, (a, b) in enumerate(zip(got, ref)) if i != dw or backend == "recording")
    assert rel_err(got[dw], ref[dw]) < 1e-6
    if backend == "recording":
        for op in ("rms_norm_fwd", "rms_norm_bwd", "swiglu_fwd", "swiglu_bwd", "rotary"):
            assert f"torch.ops.nf4lora.{op}" in "\n".join(graphs), op


@needs_triton
def test_a_converted_fused_model_compiles_with_fullgraph_to_the_same_bits():
    model = _converted("llama")
    ids = torch.randint(0, SMALL["vocab_size"], (2, 11), device=DEV)

    def step(fn):
        model.zero_grad(set_to_none=True)
        out = fn(input_ids=ids, labels=ids)
        out.loss.backward()
        return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    try:
        nf4lora.fuse_model_ops(model)
        ref_logits, ref_grads = step(model)
        torch._dynamo.reset()
        logits, grads = step(torch.compile(model, backend="aot_eager", fullgraph=True))
        assert fused.last_path == {"rms_norm": "triton", "swiglu": "triton", "rotary": "triton"}
    finally:
        nf4lora.restore_rotary()
    assert grads.keys() == ref_grads.keys() and len(grads) == 2 * 7 * SMALL["num_hidden_layers"]
    if DEV == "cpu":  # the same kernels and PyTorch ops in the same order
        assert torch.equal(logits, ref_logits) and all(torch.equal(grads[n], ref_grads[n]) for n in grads)
    else:  # on CUDA the compiled QLoRA layers run through the registered op, the eager ones through the C++ node
        assert rel_err(logits, ref_logits) < 1e-5 and all(rel_err(grads[n], ref_grads[n]) < 1e-4 for n in grads)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_model_ops_at_llama_shapes_write_every_output(dtype):
    # 8192 tokens of a Llama-3-8B layer (hidden 4096, MLP 14336); outputs land in poisoned (NaN) memory
    x = torch.randn(8192, 4096, device="cuda").to(dtype)
    w = (1 + 0.2 * torch.randn(4096, device="cuda")).to(dtype)
    poison_next_alloc(x.numel(), dtype)
    y = fused.rms_norm(x, w, 1e-5)
    ref = fused.rms_norm_reference(x.double(), w.double(), 1e-5)
    assert rel_err(y, ref) <= 2 * rel_err(fused.rms_norm_reference(x, w, 1e-5), ref) + 2.0 ** -10
    gate = torch.randn(8192, 14336, device="cuda").to(dtype)
    up = torch.randn(8192, 14336, device="cuda").to(dtype)
    poison_next_alloc(gate.numel(), dtype)
    h = fused.swiglu(gate, up)
    ref = F.silu(gate.double()) * up.double()
    assert rel_err(h, ref) <= 2 * rel_err(F.silu(gate) * up, ref) + 2.0 ** -10
    q = torch.randn(4, 2048, 32, 128, device="cuda").to(dtype).transpose(1, 2)  # (B, H, S, D) as attention has it
    emb = torch.randn(1, 2048, 64, device="cuda").repeat(1, 1, 2)
    cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
    poison_next_alloc(q.numel(), dtype)
    qe = fused.rotary(q, cos, sin)
    assert fused.last_path["rotary"] == "triton"
    ref = fused.rotary_reference(q.double(), cos.double(), sin.double())
    assert rel_err(qe, ref) <= 2 * rel_err(fused.rotary_reference(q, cos, sin), ref) + 2.0 ** -10
