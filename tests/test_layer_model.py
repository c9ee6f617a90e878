"""QLoRALinear, convert, adapters in PEFT's format, merge, bitsandbytes-keyed state dicts."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nf4lora
from nf4lora import QLoRALinear, dequantize_nf4, quantize_nf4
from nf4lora.demo import TinyLM
from conftest import rel_err


def test_fresh_layer_equals_quantized_base():
    linear = nn.Linear(96, 40)
    layer = QLoRALinear.from_linear(linear, r=8, alpha=16)
    assert torch.count_nonzero(layer.lora_B) == 0 and torch.count_nonzero(layer.lora_A) > 0
    x = torch.randn(5, 96)
    w = dequantize_nf4(quantize_nf4(linear.weight.detach()), torch.float32)
    assert torch.allclose(layer(x), F.linear(x, w, linear.bias), rtol=1e-6, atol=1e-6)
    assert layer.scaling == 2.0
    assert not any(isinstance(b, nn.Parameter) for b in layer.buffers())
    assert {n for n, p in layer.named_parameters() if p.requires_grad} == {"lora_A", "lora_B"}
    bound = 1 / math.sqrt(96)  # kaiming-uniform(a=√5) on (r, K) has bound 1/sqrt(K)
    assert float(layer.lora_A.detach().abs().max()) <= bound


def test_rslora_scaling_and_dropout_only_in_training():
    layer = QLoRALinear(64, 32, r=16, alpha=8, use_rslora=True, dropout=0.5, compute_dtype=torch.float32)
    assert layer.scaling == 8 / 4
    nn.init.normal_(layer.lora_B)
    x = torch.randn(4, 64)
    layer.eval()
    a, b = layer(x), layer(x)
    assert torch.equal(a, b)
    layer.train()
    torch.manual_seed(1)
    c = layer(x)
    assert not torch.allclose(a, c)


def test_merge_matches_layer_and_dtype_follows_module():
    layer = QLoRALinear(64, 48, r=4, compute_dtype=torch.float32)
    nn.init.normal_(layer.lora_B)
    x = torch.randn(3, 64)
    merged = layer.merge()
    assert isinstance(merged, nn.Linear) and merged.weight.dtype == torch.float32
    assert rel_err(merged(x), layer(x)) < 1e-6
    layer.to(torch.bfloat16)
    assert layer.compute_dtype == torch.bfloat16 and layer.weight_quant_map.dtype == torch.float32
    assert layer.weight_nested_absmax.dtype == torch.float32
    y = layer(x)  # fp32 input is cast to bf16 and the output back to fp32
    assert y.dtype == torch.float32 and rel_err(y, merged(x)) < 2e-2


def test_state_dict_uses_bitsandbytes_keys_and_roundtrips():
    layer = QLoRALinear(64, 48, r=4, compute_dtype=torch.float32)
    nn.init.normal_(layer.lora_B)
    sd = layer.state_dict()
    assert {"weight", "weight.absmax", "weight.quant_map", "weight.nested_absmax", "weight.nested_quant_map",
            "weight.quant_state.bitsandbytes__nf4", "bias", "lora_A", "lora_B"} == set(sd)
    other = QLoRALinear(64, 48, r=4, double_quant=False, compute_dtype=torch.float32)
    other.load_state_dict(sd)
    x = torch.randn(3, 64)
    assert torch.equal(other(x), layer(x)) and other.weight.nested
    bad = QLoRALinear(65, 48, r=4)
    with pytest.raises(RuntimeError, match="does not match this layer"):
        bad.load_state_dict(sd, strict=False)
    missing = {k: v for k, v in sd.items() if not k.startswith("weight")}
    res = other.load_state_dict(missing, strict=False)
    assert "weight" in res.missing_keys


def test_layer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="r must be a positive int"):
        QLoRALinear(64, 32, r=0)
    with pytest.raises(ValueError, match="blocksize must be one of"):
        QLoRALinear(64, 32, blocksize=100)
    with pytest.raises(ValueError, match="dropout must be in"):
        QLoRALinear(64, 32, dropout=1.0)
    with pytest.raises(TypeError, match="compute_dtype must be"):
        QLoRALinear(64, 32, compute_dtype=torch.int8)
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        QLoRALinear(0, 32)
    with pytest.raises(TypeError, match="linear must be a torch.nn.Linear"):
        QLoRALinear.from_linear(nn.Conv1d(3, 3, 1))
    layer = QLoRALinear(64, 32)
    with pytest.raises(ValueError, match=r"x must have shape \(M, 64\)"):
        layer(torch.randn(2, 63))


def _tiny_model():
    torch.manual_seed(0)
    return TinyLM(vocab=23, dim=32, layers=2, heads=4, context=16)


def test_convert_targets_freeze_and_summary():
    model = _tiny_model()
    summary = nf4lora.convert(model, r=4, alpha=8, progress=False)
    assert len(summary["converted"]) == 14 and "lm_head" not in " ".join(summary["converted"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    assert summary["trainable_parameters"] == sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    layers = nf4lora.model.qlora_layers(model).values()
    assert summary["weight_bytes_nf4"] == sum(layer.weight.nbytes for layer in layers)
    assert summary["weight_bytes_bf16"] == sum(2 * layer.weight.numel for layer in layers)
    all_lin = _tiny_model()
    s2 = nf4lora.convert(all_lin, "all-linear", r=4, progress=False)
    assert len(s2["converted"]) == 14 and isinstance(all_lin.lm_head, nn.Linear)
    only_q = _tiny_model()
    assert len(nf4lora.convert(only_q, ["q_proj"], progress=False)["converted"]) == 2
    assert nf4lora.trainable_parameters(only_q)[0] == 2 * 4 * 32 * 16 * 2 // 4  # 2 layers · r·(K+N)
    with pytest.raises(ValueError, match="matches no nn.Linear"):
        nf4lora.convert(_tiny_model(), ["nothing"], progress=False)


def test_convert_forward_backward_matches_dequantized_model():
    dense = _tiny_model()
    model = _tiny_model()
    nf4lora.convert(model, "all-linear", r=4, progress=False)
    for name, layer in nf4lora.model.qlora_layers(model).items():  # dense copy on the same NF4 weights
        dense.get_submodule(name).weight.data.copy_(dequantize_nf4(layer.weight, torch.float32))
    tokens = torch.randint(0, 23, (2, 16))
    assert rel_err(model(tokens), dense(tokens)) < 1e-5
    loss = model(tokens).logsumexp(-1).mean()
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)


def test_adapter_save_load_peft_format(tmp_path):
    model = _tiny_model()
    nf4lora.convert(model, r=4, alpha=8, progress=False)
    for p in model.parameters():
        if p.requires_grad:
            nn.init.normal_(p, std=0.1)
    nf4lora.save_adapter(model, str(tmp_path))
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    from safetensors.torch import load_file

    keys = set(load_file(str(tmp_path / "adapter_model.safetensors")))
    assert "base_model.model.blocks.0.q_proj.lora_A.weight" in keys and len(keys) == 28
    fresh = _tiny_model()
    nf4lora.convert(fresh, r=4, alpha=8, progress=False)
    nf4lora.load_adapter(fresh, str(tmp_path))
    tokens = torch.randint(0, 23, (2, 16))
    assert torch.equal(fresh(tokens), model(tokens))
    wrong = _tiny_model()
    nf4lora.convert(wrong, r=8, progress=False)
    with pytest.raises(ValueError, match=r"down_proj.lora_A.weight: shape \(4, 64\) does not match the layer.s \(8, 64\) \(adapter r=4, layer r=8\)"):
        nf4lora.load_adapter(wrong, str(tmp_path))


def test_merge_and_unload():
    model = _tiny_model()
    nf4lora.convert(model, r=4, progress=False)
    for p in model.parameters():
        if p.requires_grad:
            nn.init.normal_(p, std=0.1)
    tokens = torch.randint(0, 23, (2, 16))
    before = model(tokens)
    nf4lora.merge_and_unload(model)
    assert not nf4lora.model.qlora_layers(model)
    assert rel_err(model(tokens), before) < 1e-5


def test_whole_model_state_dict_loads_bitsandbytes_keys():
    model = _tiny_model()
    nf4lora.convert(model, "all-linear", r=4, progress=False)
    sd = model.state_dict()
    assert "blocks.0.q_proj.weight.quant_state.bitsandbytes__nf4" in sd
    other = _tiny_model()
    nf4lora.convert(other, "all-linear", r=4, double_quant=False, progress=False)
    other.load_state_dict(sd)
    tokens = torch.randint(0, 23, (2, 16))
    assert torch.equal(other(tokens), model(tokens))


def test_adapters_interoperate_with_peft_when_importable(tmp_path):
    peft = pytest.importorskip("peft")
    model = _tiny_model()
    nf4lora.convert(model, r=4, alpha=8, progress=False)
    for p in model.parameters():
        if p.requires_grad:
            nn.init.normal_(p, std=0.1)
    dense = _tiny_model()  # the same base on the dequantized NF4 weights, for PEFT
    for name, layer in nf4lora.model.qlora_layers(model).items():
        dense.get_submodule(name).weight.data.copy_(dequantize_nf4(layer.weight, torch.float32))
    nf4lora.save_adapter(model, str(tmp_path / "ours"))
    peft_model = peft.PeftModel.from_pretrained(dense, str(tmp_path / "ours"))
    tokens = torch.randint(0, 23, (2, 16))
    with torch.no_grad():
        assert rel_err(peft_model(tokens), model(tokens)) < 1e-5
    peft_model.save_pretrained(str(tmp_path / "theirs"))
    fresh = _tiny_model()
    nf4lora.convert(fresh, r=4, alpha=8, progress=False)
    nf4lora.load_adapter(fresh, str(tmp_path / "theirs"))
    with torch.no_grad():
        assert torch.equal(fresh(tokens), model(tokens))
