"""Whole-model utilities: convert, count, save/load PEFT-format adapters, merge."""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .layer import QLoRALinear

LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
_PEFT_PREFIX = "base_model.model."


def _output_head(model: nn.Module) -> Optional[nn.Module]:
    get = getattr(model, "get_output_embeddings", None)
    if callable(get):
        try:
            return get()
        except (NotImplementedError, AttributeError):
            return None
    return None


def _targets(model: nn.Module, target_modules: Union[str, Sequence[str]]) -> List[str]:
    head = _output_head(model)
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if target_modules == "all-linear":
            # PEFT's rule: every linear layer except the output head.
            if module is head or name.split(".")[-1] == "lm_head":
                continue
            names.append(name)
        elif name in target_modules or name.split(".")[-1] in target_modules:
            names.append(name)
    return names


def convert(model: nn.Module, target_modules: Union[str, Sequence[str]] = LLAMA_TARGETS, r: int = 16,
            alpha: float = 16, dropout: float = 0.0, use_rslora: bool = False, blocksize: int = 64,
            double_quant: bool = True, compute_dtype: Optional[torch.dtype] = None,
            progress: bool = True) -> Dict[str, object]:
    """Replace matching nn.Linear modules of ``model`` in place by QLoRALinear and freeze the rest.

    Args:
        target_modules: "all-linear" (every nn.Linear except the output head, as in PEFT) or
            names: a module matches when its full path or its last path component is listed.
        r, alpha, dropout, use_rslora, blocksize, double_quant, compute_dtype: as QLoRALinear.
        progress: show a progress bar while quantizing.
    Returns:
        a summary: converted module names, trainable / total parameters, and the bytes of the
        converted weights in NF4 against bf16.
    """
    if isinstance(target_modules, str) and target_modules != "all-linear":
        target_modules = (target_modules,)
    names = _targets(model, target_modules)
    if not names:
        raise ValueError(f"target_modules={target_modules!r} matches no nn.Linear in the model")
    for p in model.parameters():
        p.requires_grad_(False)
    from tqdm.auto import tqdm

    nf4_bytes = bf16_bytes = 0
    for name in tqdm(names, desc="nf4lora: quantizing", unit="layer", disable=not progress):
        parent, _, leaf = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        linear = getattr(owner, leaf)
        layer = QLoRALinear.from_linear(linear, r, alpha, dropout, use_rslora, blocksize, double_quant,
                                        compute_dtype)
        setattr(owner, leaf, layer)
        nf4_bytes += layer.weight.nbytes
        bf16_bytes += 2 * linear.weight.numel()
    trainable, total = trainable_parameters(model)
    return {"converted": names, "trainable_parameters": trainable, "total_parameters": total,
            "weight_bytes_nf4": nf4_bytes, "weight_bytes_bf16": bf16_bytes}


def trainable_parameters(model: nn.Module) -> Tuple[int, int]:
    """(trainable, total) parameter counts; an NF4 weight counts its N·K elements, frozen."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    total += sum(m.weight.numel for m in model.modules() if isinstance(m, QLoRALinear))
    return trainable, total


def qlora_layers(model: nn.Module) -> Dict[str, QLoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QLoRALinear)}


# --- adapters in PEFT's format ----------------------------------------------------------

def save_adapter(model: nn.Module, directory: str) -> None:
    """Write ``adapter_model.safetensors`` and ``adapter_config.json`` as PEFT does.

    Keys are ``base_model.model.<path>.lora_A.weight`` / ``.lora_B.weight``. Layers whose r or
    alpha differ from the most common one are listed in ``rank_pattern`` / ``alpha_pattern``.
    """
    from safetensors.torch import save_file

    layers = qlora_layers(model)
    if not layers:
        raise ValueError("model has no QLoRALinear layers: call nf4lora.convert first")
    tensors = {}
    for path, layer in layers.items():
        tensors[f"{_PEFT_PREFIX}{path}.lora_A.weight"] = layer.lora_A.detach().contiguous().cpu()
        tensors[f"{_PEFT_PREFIX}{path}.lora_B.weight"] = layer.lora_B.detach().contiguous().cpu()
    first = next(iter(layers.values()))
    ranks = [layer.r for layer in layers.values()]
    r = max(set(ranks), key=ranks.count)
    alphas = [layer.alpha for layer in layers.values()]
    alpha = max(set(alphas), key=alphas.count)
    config = {
        "peft_type": "LORA", "task_type": None, "base_model_name_or_path": None, "inference_mode": True,
        "r": r, "lora_alpha": alpha, "lora_dropout": first.dropout, "use_rslora": first.use_rslora,
        "target_modules": sorted({p.split(".")[-1] for p in layers}), "bias": "none",
        "fan_in_fan_out": False, "init_lora_weights": True, "modules_to_save": None,
        "rank_pattern": {p: l.r for p, l in layers.items() if l.r != r},
        "alpha_pattern": {p: l.alpha for p, l in layers.items() if l.alpha != alpha},
    }
    os.makedirs(directory, exist_ok=True)
    save_file(tensors, os.path.join(directory, ADAPTER_WEIGHTS), metadata={"format": "pt"})
    with open(os.path.join(directory, ADAPTER_CONFIG), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)


def _pattern_value(pattern: dict, path: str, default):
    # PEFT matches a pattern key against the end of the module path.
    for key, value in pattern.items():
        if path == key or path.endswith("." + key):
            return value
    return default


def load_adapter(model: nn.Module, directory: str) -> None:
    """Load a PEFT-format LoRA adapter (written by :func:`save_adapter` or by PEFT) into the
    QLoRALinear layers of ``model``, in place. Its config sets each layer's alpha and rsLoRA
    flag; every layer must have the adapter's r, and every key must match a layer."""
    from safetensors.torch import load_file

    with open(os.path.join(directory, ADAPTER_CONFIG)) as f:
        config = json.load(f)
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{ADAPTER_CONFIG}: peft_type must be 'LORA', got {config.get('peft_type')!r}")
    path = os.path.join(directory, ADAPTER_WEIGHTS)
    if os.path.exists(path):
        tensors = load_file(path)
    else:
        bin_path = os.path.join(directory, "adapter_model.bin")
        if not os.path.exists(bin_path):
            raise FileNotFoundError(f"{directory} has neither {ADAPTER_WEIGHTS} nor adapter_model.bin")
        tensors = torch.load(bin_path, map_location="cpu", weights_only=True)
    layers = qlora_layers(model)
    if not layers:
        raise ValueError("model has no QLoRALinear layers: call nf4lora.convert first")
    seen = set()
    for key, value in tensors.items():
        stem = key[len(_PEFT_PREFIX):] if key.startswith(_PEFT_PREFIX) else key
        for suffix, attr in ((".lora_A.weight", "lora_A"), (".lora_B.weight", "lora_B")):
            if stem.endswith(suffix):
                mod_path = stem[: -len(suffix)]
                break
        else:
            raise ValueError(f"{key}: not a LoRA A/B weight (modules_to_save and other keys are not supported)")
        if mod_path not in layers:
            raise ValueError(f"{key}: the model has no QLoRALinear at {mod_path!r}")
        layer = layers[mod_path]
        target = getattr(layer, attr)
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(f"{key}: shape {tuple(value.shape)} does not match the layer's {tuple(target.shape)} "
                             f"(adapter r={_pattern_value(config.get('rank_pattern') or {}, mod_path, config.get('r'))}, "
                             f"layer r={layer.r})")
        with torch.no_grad():
            target.copy_(value.to(target.dtype))
        seen.add((mod_path, attr))
    for mod_path, layer in layers.items():
        missing = [a for a in ("lora_A", "lora_B") if (mod_path, a) not in seen]
        if len(missing) == 1:
            raise ValueError(f"adapter has {mod_path}.{'lora_B' if missing[0] == 'lora_A' else 'lora_A'} "
                             f"but not {mod_path}.{missing[0]}")
        if not missing:
            layer.alpha = _pattern_value(config.get("alpha_pattern") or {}, mod_path, config.get("lora_alpha", layer.alpha))
            layer.use_rslora = bool(config.get("use_rslora", False))


def load_quantized_state_dict(model: nn.Module, state_dict: Dict[str, torch.Tensor]) -> None:
    """Load a state dict whose quantized layers use bitsandbytes' 4-bit keys (what Hugging Face
    writes for a ``load_in_4bit`` NF4 model: ``<path>.weight``, ``<path>.weight.absmax``, ...,
    ``<path>.weight.quant_state.bitsandbytes__nf4``) into a model converted by :func:`convert`.

    No bitsandbytes is needed; the bytes are taken as they are. LoRA parameters may be absent
    (they keep their values); any other missing or unexpected key is an error naming it.
    """
    result = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith((".lora_A", ".lora_B"))]
    if missing or result.unexpected_keys:
        raise ValueError(f"state dict does not match the converted model: missing {missing[:8]}"
                         f"{' …' if len(missing) > 8 else ''}, unexpected {result.unexpected_keys[:8]}"
                         f"{' …' if len(result.unexpected_keys) > 8 else ''}")


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Replace every QLoRALinear by an nn.Linear holding W + s·B·A; returns the model."""
    for path, layer in qlora_layers(model).items():
        parent, _, leaf = path.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, leaf, layer.merge())
    return model
