"""The main job (``python -m nf4lora demo``): a small language model, end to end.

1. checks QLoRALinear against float64 math on random data;
2. pre-trains a tiny character-level transformer (Llama-style projection names) on one shipped
   text, converts its linear layers to QLoRALinear (NF4 base + LoRA) and fine-tunes only the
   adapters on a second shipped text, printing the loss, the trainable parameters and the weight
   memory in NF4 against bf16;
3. saves the adapter, reloads it into a freshly converted copy and shows identical outputs;
4. on a CUDA machine, benchmarks one layer shape against the baselines.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from importlib import resources

import torch
from torch import nn
import torch.nn.functional as F

from . import benchmark, model as model_utils
from .layer import QLoRALinear
from .nf4 import dequantize_nf4


def load_text(name: str) -> str:
    return resources.files("nf4lora").joinpath("data", name).read_text(encoding="utf-8")


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(dim)
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)
        self.mlp_norm = nn.LayerNorm(dim)
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        b, t, d = x.shape
        h = self.attn_norm(x)
        q, k, v = (p(h).view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o_proj(a.transpose(1, 2).reshape(b, t, d))
        h = self.mlp_norm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class TinyLM(nn.Module):
    """A character-level causal transformer: tokens (B, T) → logits (B, T, vocab)."""

    def __init__(self, vocab: int, dim: int = 128, layers: int = 2, heads: int = 4, context: int = 64):
        super().__init__()
        self.context = context
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(context, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, 2 * dim) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, tokens):
        x = self.embed(tokens) + self.pos(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm(x))


class CharData:
    def __init__(self, texts, device):
        self.chars = sorted(set("".join(texts)))
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.device = device

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor([self.index[c] for c in text], dtype=torch.long, device=self.device)

    def batch(self, data: torch.Tensor, batch: int, context: int, gen: torch.Generator):
        starts = torch.randint(0, data.numel() - context - 1, (batch,), generator=gen).tolist()
        x = torch.stack([data[s:s + context] for s in starts])
        y = torch.stack([data[s + 1:s + context + 1] for s in starts])
        return x, y


def train(model, data, chars: CharData, steps, lr, batch, seed, desc, log_every, show_progress=True):
    from tqdm.auto import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    bar = tqdm(range(steps), desc=desc, disable=not show_progress, leave=False, mininterval=1.0)
    for step in bar:
        x, y = chars.batch(data, batch, model.context, gen)
        loss = F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        if log_every and (step % log_every == 0 or step == steps - 1):
            tqdm.write(f"  {desc} step {step:4d}  loss {loss.item():.3f}")
    return losses


@torch.no_grad()
def eval_loss(model, data, chars, context, seed=123, batches=8, batch=16):
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(batches):
        x, y = chars.batch(data, batch, context, gen)
        total += F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten()).item()
    return total / batches


def check_layer(device) -> dict:
    """QLoRALinear vs float64 math on random data: relative errors of y, dx, dA, dB."""
    torch.manual_seed(0)
    layer = QLoRALinear(256, 192, r=16, alpha=32, compute_dtype=torch.float32, device=device)
    nn.init.normal_(layer.lora_B, std=0.05)
    x = torch.randn(37, 256, device=device, requires_grad=True)
    g = torch.randn(37, 192, device=device)
    layer(x).backward(g)
    w = dequantize_nf4(layer.weight, torch.float32).double()
    A, B, s = layer.lora_A.double(), layer.lora_B.double(), layer.scaling
    xd, gd = x.detach().double(), g.double()
    ref = {"y": xd @ w.t() + s * xd @ A.t() @ B.t() + layer.bias.double(),
           "dx": gd @ w + s * gd @ B @ A, "dA": s * (gd @ B).t() @ xd, "dB": s * gd.t() @ (xd @ A.t())}
    got = {"y": layer(x.detach()), "dx": x.grad, "dA": layer.lora_A.grad, "dB": layer.lora_B.grad}
    return {k: ((got[k].double() - ref[k]).norm() / ref[k].norm()).item() for k in ref}


def run(pretrain_steps=300, finetune_steps=200, rank=8, alpha=16, seed=0, device=None,
        bench=True, progress=True, log_every=50) -> dict:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    t0 = time.time()
    print(f"nf4lora demo on {device} (torch {torch.__version__})")

    print("\n[1] QLoRALinear vs float64 math (random x, A, B; K=256, N=192, r=16, M=37):")
    errs = check_layer(device)
    print("    relative error  " + "  ".join(f"{k}={v:.2e}" for k, v in errs.items()))
    # fp32 runs exact on the CPU; on a GPU the Triton forward uses 3×tf32 tensor-core products.
    if max(errs.values()) > (1e-5 if device.type == "cpu" else 1e-4):
        raise RuntimeError(f"the layer does not match float64 math: {errs}")

    print("\n[2] tiny language model: pre-train dense, convert to NF4 + LoRA, fine-tune the adapters")
    texts = [load_text("pretrain.txt"), load_text("finetune.txt")]
    chars = CharData(texts, device)
    pre, fine = chars.encode(texts[0]), chars.encode(texts[1])
    torch.manual_seed(seed)
    lm = TinyLM(len(chars.chars)).to(device)
    losses = train(lm, pre, chars, pretrain_steps, 3e-3, 32, seed, "pre-train", log_every, progress)
    print(f"    pre-train: loss {losses[0]:.3f} -> {losses[-1]:.3f} over {pretrain_steps} steps")
    base = copy.deepcopy(lm)
    before = eval_loss(lm, fine, chars, lm.context)
    summary = model_utils.convert(lm, "all-linear", r=rank, alpha=alpha, progress=progress)
    after_convert = eval_loss(lm, fine, chars, lm.context)
    trainable, total = summary["trainable_parameters"], summary["total_parameters"]
    print(f"    converted {len(summary['converted'])} linear layers to QLoRALinear (r={rank}, alpha={alpha})")
    print(f"    trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)")
    print(f"    converted weight memory: NF4 {summary['weight_bytes_nf4'] / 1024:.1f} KiB vs bf16 "
          f"{summary['weight_bytes_bf16'] / 1024:.1f} KiB ({100 * summary['weight_bytes_nf4'] / summary['weight_bytes_bf16']:.1f}%)")
    print(f"    loss on the fine-tune text: dense {before:.3f}, NF4 base {after_convert:.3f}")
    ft = train(lm, fine, chars, finetune_steps, 1e-2, 32, seed + 1, "fine-tune", log_every, progress)
    tuned = eval_loss(lm, fine, chars, lm.context)
    print(f"    fine-tune: loss {ft[0]:.3f} -> {ft[-1]:.3f} over {finetune_steps} steps; held-out batches {after_convert:.3f} -> {tuned:.3f}")

    print("\n[3] save the adapter, reload it into a freshly converted model")
    with tempfile.TemporaryDirectory() as tmp:
        model_utils.save_adapter(lm, tmp)
        files = sorted(os.listdir(tmp))
        fresh = copy.deepcopy(base)
        model_utils.convert(fresh, "all-linear", r=rank, alpha=alpha, progress=False)
        model_utils.load_adapter(fresh, tmp)
    lm.eval(), fresh.eval()
    x, _ = chars.batch(fine, 4, lm.context, torch.Generator().manual_seed(7))
    with torch.no_grad():
        same = torch.equal(lm(x), fresh(x))
    print(f"    wrote {files}; outputs identical after reload: {same}")
    if not same:
        raise RuntimeError("the reloaded adapter does not reproduce the outputs")

    result = {"layer_errors": errs, "pretrain_loss": (losses[0], losses[-1]), "finetune_loss": (ft[0], ft[-1]),
              "heldout": (after_convert, tuned), "trainable": trainable, "total": total, "reload_identical": same}
    if device.type == "cuda" and bench:
        print("\n[4] microbenchmark on the GPU (one shape; bench/ runs the full grid)")
        rows = benchmark.run_grid([(4096, 14336)], [1, 1024], [16], ["fwd"], device=device)
        print(benchmark.markdown_table(rows))
    print(f"\ndone in {time.time() - t0:.1f} s")
    return result
