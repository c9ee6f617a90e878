"""Hugging Face models end to end on the CPU (issue 6's interop tier): Llama-, Qwen2- and
Mistral-style configs with random weights (no download), PEFT parity, bitsandbytes-format
checkpoints, merge. Runs where transformers and peft import (CI installs both)."""

import copy

import pytest
import torch

import nf4lora
from nf4lora import dequantize_nf4
from nf4lora.model import LLAMA_TARGETS, qlora_layers
from conftest import rel_err

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

SMALL = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)


def _model(kind="llama", seed=0):
    torch.manual_seed(seed)
    cfg_cls, model_cls = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
    }[kind]
    return model_cls(cfg_cls(**SMALL)).eval()


def _dense_twin(converted, base):
    """``base`` with every converted Linear's weight replaced by the dequantized NF4 weight."""
    dense = copy.deepcopy(base)
    for name, layer in qlora_layers(converted).items():
        dense.get_submodule(name).weight.data.copy_(dequantize_nf4(layer.weight, torch.float32))
    return dense


def _randomize_adapters(model, std=0.05):
    torch.manual_seed(1)
    for layer in qlora_layers(model).values():
        torch.nn.init.normal_(layer.lora_A, std=std)
        torch.nn.init.normal_(layer.lora_B, std=std)


@pytest.mark.parametrize("kind", ["llama", "qwen2", "mistral"])
def test_convert_forward_backward_generate_match_the_dequantized_model(kind):
    base = _model(kind)
    model = copy.deepcopy(base)
    summary = nf4lora.convert(model, "all-linear", r=4, alpha=8, progress=False)
    assert len(summary["converted"]) == 7 * SMALL["num_hidden_layers"]
    assert isinstance(model.lm_head, torch.nn.Linear)  # the head is not converted
    dense = _dense_twin(model, base)
    ids = torch.randint(0, SMALL["vocab_size"], (2, 11))
    with torch.no_grad():
        assert rel_err(model(ids).logits, dense(ids).logits) < 1e-5  # LoRA B is zero at start
    out = model(ids, labels=ids)
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(n.endswith(("lora_A", "lora_B")) for n in grads)
    assert all(g is not None for n, g in grads.items() if n.endswith("lora_B"))
    gen = model.generate(ids[:, :4], max_new_tokens=6, do_sample=False)
    assert torch.equal(gen, dense.generate(ids[:, :4], max_new_tokens=6, do_sample=False))


def test_gradient_checkpointing_gives_the_same_grads():
    model = _model()
    nf4lora.convert(model, "all-linear", r=4, progress=False)
    _randomize_adapters(model)
    model.train()
    ids = torch.randint(0, SMALL["vocab_size"], (2, 11))

    def lora_grads():
        model.zero_grad(set_to_none=True)
        model(ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain = lora_grads()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    checkpointed = lora_grads()
    assert plain.keys() == checkpointed.keys()
    for n in plain:
        assert torch.allclose(plain[n], checkpointed[n], rtol=1e-5, atol=1e-7), n


def test_peft_parity_logits_and_lora_grads():
    base = _model()
    model = copy.deepcopy(base)
    nf4lora.convert(model, list(LLAMA_TARGETS), r=4, alpha=8, progress=False)
    _randomize_adapters(model)
    dense = _dense_twin(model, base)
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=list(LLAMA_TARGETS))
    pm = peft.get_peft_model(dense, config)
    with torch.no_grad():
        for name, layer in qlora_layers(model).items():
            target = pm.base_model.model.get_submodule(name)
            target.lora_A["default"].weight.copy_(layer.lora_A)
            target.lora_B["default"].weight.copy_(layer.lora_B)
    ids = torch.randint(0, SMALL["vocab_size"], (2, 11))
    ours, theirs = model(ids, labels=ids), pm(input_ids=ids, labels=ids)
    assert rel_err(ours.logits, theirs.logits) < 1e-5
    ours.loss.backward()
    theirs.loss.backward()
    for name, layer in qlora_layers(model).items():
        target = pm.base_model.model.get_submodule(name)
        assert rel_err(layer.lora_A.grad, target.lora_A["default"].weight.grad) < 1e-4, name
        assert rel_err(layer.lora_B.grad, target.lora_B["default"].weight.grad) < 1e-4, name


def test_adapters_load_both_ways_with_peft(tmp_path):
    base = _model()
    model = copy.deepcopy(base)
    nf4lora.convert(model, list(LLAMA_TARGETS), r=4, alpha=8, progress=False)
    _randomize_adapters(model)
    nf4lora.save_adapter(model, str(tmp_path / "ours"))
    pm = peft.PeftModel.from_pretrained(_dense_twin(model, base), str(tmp_path / "ours"))
    ids = torch.randint(0, SMALL["vocab_size"], (2, 9))
    with torch.no_grad():
        assert rel_err(pm(input_ids=ids).logits, model(ids).logits) < 1e-5
    pm.save_pretrained(str(tmp_path / "theirs"))
    fresh = copy.deepcopy(base)
    nf4lora.convert(fresh, list(LLAMA_TARGETS), r=4, alpha=8, progress=False)
    nf4lora.load_adapter(fresh, str(tmp_path / "theirs"))
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, model(ids).logits)


@pytest.mark.parametrize("double_quant", [False, True])
def test_bitsandbytes_format_checkpoint_loads_byte_for_byte(double_quant, tmp_path):
    from safetensors.torch import load_file, save_file

    source = _model(seed=0)
    nf4lora.convert(source, "all-linear", r=4, double_quant=double_quant, progress=False)
    sd = {k: v for k, v in source.state_dict().items() if not k.endswith((".lora_A", ".lora_B"))}
    assert "model.layers.0.self_attn.q_proj.weight.quant_state.bitsandbytes__nf4" in sd
    assert sd["model.layers.0.self_attn.q_proj.weight"].dtype == torch.uint8
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "model.safetensors"))
    target = _model(seed=5)  # other random weights, converted the other way
    nf4lora.convert(target, "all-linear", r=4, double_quant=not double_quant, progress=False)
    nf4lora.load_quantized_state_dict(target, load_file(str(tmp_path / "model.safetensors")))
    for name, layer in qlora_layers(source).items():
        got = qlora_layers(target)[name].weight
        for key, t in layer.weight.tensors().items():
            assert torch.equal(getattr(got, key), t), (name, key)
        assert got.nested == double_quant and got.nested_offset == layer.weight.nested_offset
    ids = torch.randint(0, SMALL["vocab_size"], (2, 9))
    with torch.no_grad():
        assert torch.equal(target(ids).logits, source(ids).logits)
    bad = dict(sd)
    del bad["model.layers.1.mlp.up_proj.weight.absmax"]
    with pytest.raises((ValueError, RuntimeError), match="up_proj.weight"):
        nf4lora.load_quantized_state_dict(target, bad)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_merge_and_unload_matches_the_adapted_model(dtype, tol):
    model = _model().to(dtype)
    nf4lora.convert(model, "all-linear", r=4, alpha=8, progress=False)
    _randomize_adapters(model)
    ids = torch.randint(0, SMALL["vocab_size"], (2, 9))
    with torch.no_grad():
        adapted = model(ids).logits.float()
        merged = nf4lora.merge_and_unload(model)
        assert not qlora_layers(merged)
        assert rel_err(merged(ids).logits.float(), adapted) < tol
