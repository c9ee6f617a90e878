"""End-to-end benchmark (issue 6): a Llama-3-8B-shaped model, the fine-tuning stacks below, one run.

    python bench/bench_e2e.py --out bench/results/h200/e2e                 # on the H200
    python bench/bench_e2e.py --out /tmp/e2e --config tiny --device cpu    # smoke test

Stacks, each built from the same random base weights (bf16, seeded; no download):
  nf4lora   nf4lora.convert, NF4 with double quant, LoRA r=16 on the seven projections
  nf4lora_fused  nf4lora plus nf4lora.fuse_model_ops: the model's RMSNorms, SwiGLU products and rotary
            embeddings by the Triton kernels of triton_kernels/model_ops.py (the configuration issue 6's ratios
            are measured with, bench/results/h200/s33/; its rotary patch is undone before any other stack runs)
  bnb_peft  bitsandbytes Linear4bit (NF4, double quant) + PEFT LoRA r=16 (needs CUDA + bitsandbytes)
  lora16    PEFT LoRA r=16 on the bf16 weights
For each: tokens/s and peak memory of a full training step (AdamW on the adapters, fused on CUDA as
the Hugging Face Trainer's default) at sequence --seq, micro-batch 1 and 4, with and without gradient
checkpointing; weight memory against bf16;
greedy decode at batch 1 (--decode-tokens new tokens; with --only-decode --decode-compiled also
with a static KV cache and CUDA graphs); and the loss over --loss-steps steps on
the same byte-tokenized text for every stack (JSON + PNG). Writes results.jsonl and summary.md,
merged after each stack: `--stacks nf4lora` then `--stacks bnb_peft,lora16` with the same --out give
one summary (each row keeps the date and git sha that measured it). --profile adds the top kernels
of one step per stack (profile_<stack>.txt) at micro-batch --profile-batch (default: the largest of
--batches, where the step is GPU-bound; before 2026-12-01's twenty-fourth session: the first); with --only-decode, of one decode instead
(profile_decode_<stack>.txt, the compiled one with --decode-compiled), headed by the kernels and
device time per generated token.
"""

import argparse
import copy
import datetime
import gc
import json
import os
import sys
import time

import torch

import nf4lora
from nf4lora.demo import load_text
from nf4lora.model import LLAMA_TARGETS

CONFIGS = {
    "llama3-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512),
}


def build_base(config: str, device, dtype, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialize directly in the target dtype on the device
    try:
        with torch.device(device):
            model = LlamaForCausalLM(LlamaConfig(**CONFIGS[config]))
    finally:
        torch.set_default_dtype(old)
    return model


def _bnb_quantize(model):
    import bitsandbytes as bnb

    for name, module in list(model.named_modules()):
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] in LLAMA_TARGETS:
            q = bnb.nn.Linear4bit(module.in_features, module.out_features, bias=module.bias is not None,
                                  compute_dtype=module.weight.dtype, compress_statistics=True, quant_type="nf4")
            q.weight = bnb.nn.Params4bit(module.weight.data.cpu(), requires_grad=False, compress_statistics=True,
                                         quant_type="nf4")
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf, q.to(module.weight.device))
    return model


def make_stack(stack: str, base, r=16):
    """(model, trainable parameters) of one stack, from a private copy of ``base``."""
    model = copy.deepcopy(base)
    if stack in ("nf4lora", "nf4lora_fused"):
        nf4lora.convert(model, list(LLAMA_TARGETS), r=r, alpha=r, double_quant=True, progress=False)
        if stack == "nf4lora_fused":
            nf4lora.fuse_model_ops(model)
    else:
        import peft

        if stack == "bnb_peft":
            _bnb_quantize(model)
        elif stack != "lora16":
            raise ValueError(f"unknown stack {stack!r}")
        model = peft.get_peft_model(model, peft.LoraConfig(r=r, lora_alpha=r, lora_dropout=0.0,
                                                           target_modules=list(LLAMA_TARGETS)))
    return model, [p for p in model.parameters() if p.requires_grad]


def weight_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def _nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def target_weight_bytes(model) -> int:
    """Bytes of the frozen weights of the seven projections, whatever holds them: an NF4Weight
    (codes, scales, tables), a bitsandbytes Params4bit plus its quant_state (absmax, code and the
    nested state2; these are not parameters or buffers), or a plain bf16 weight. LoRA excluded."""
    total = 0
    for name, m in model.named_modules():
        if name.split(".")[-1] not in LLAMA_TARGETS:
            continue
        if isinstance(m, nf4lora.QLoRALinear):
            total += m.weight.nbytes
        elif hasattr(m, "base_layer") or isinstance(m, torch.nn.Linear):
            base = getattr(m, "base_layer", m)
            w = base.weight
            total += _nbytes(w)
            qs = getattr(w, "quant_state", None)
            if qs is not None:
                total += _nbytes(qs.absmax, qs.code)
                if getattr(qs, "state2", None) is not None:
                    total += _nbytes(qs.state2.absmax, qs.state2.code)
    return total


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def adamw(params, lr, device):
    """The optimizer of every stack: AdamW, fused on CUDA — Hugging Face Trainer's default under
    torch >= 2.8 (`adamw_torch_fused`), what a fine-tuning user runs (until the twenty-third session
    this benchmark used torch's default, the foreach AdamW: 6-12 ms of a Llama-3-8B step's GPU time in
    the profiles)."""
    return torch.optim.AdamW(params, lr=lr, fused=torch.device(device).type == "cuda")


def train_steps(model, params, batch, seq, vocab, steps, checkpointing, device, seed=0):
    """(tokens/s, peak bytes) of full training steps on random tokens, after two warm-up steps."""
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()
    model.train()
    opt = adamw(params, 1e-4, device)
    gen = torch.Generator(device=device).manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), device=device, generator=gen)

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    _sync(device)
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if torch.device(device).type == "cuda" else 0
    return batch * seq * steps / dt, peak


def profile_step(model, params, batch, seq, vocab, device, path, top=25):
    """One training step (no checkpointing) under torch.profiler, after one unprofiled step (the
    optimizer's first step creates its state: zeroed moments for every adapter tensor, which the
    timed steps of train_steps never pay); the top kernels by device time go to ``path`` (where
    the step's time goes, for the summary)."""
    from torch.profiler import ProfilerActivity, profile

    model.gradient_checkpointing_disable()
    model.train()
    opt = adamw(params, 1e-4, device)
    ids = torch.randint(0, vocab, (batch, seq), device=device, generator=torch.Generator(device=device).manual_seed(2))
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.device(device).type == "cuda" else [])

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    _sync(device)
    with profile(activities=acts) as prof:
        step()
        _sync(device)
    key = "self_cuda_time_total" if torch.device(device).type == "cuda" else "self_cpu_time_total"
    with open(path, "w") as f:
        f.write(f"# one training step (no checkpointing) at micro-batch {batch}, sequence {seq}\n")
        f.write(prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=70) + "\n")


@torch.no_grad()
def profile_decode(model, tokens, vocab, device, path, static_cache=False, top=25):
    """One greedy generate() of ``tokens`` new tokens (after the timed ones, so compiled graphs are
    warm) under torch.profiler: kernel launches and device time per generated token, then the top
    ops by device time, to ``path`` (where a decode step's time goes)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    prompt = torch.randint(0, vocab, (1, 16), device=device, generator=torch.Generator(device=device).manual_seed(1))
    kwargs = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0)
    if static_cache:
        kwargs["cache_implementation"] = "static"
    cuda = torch.device(device).type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        model.generate(input_ids=prompt, **kwargs)
        _sync(device)
    stats = prof.key_averages()
    kernels = [e for e in stats if e.device_type == DeviceType.CUDA]
    launches = sum(e.count for e in kernels)
    device_us = sum(e.self_device_time_total for e in kernels)
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    with open(path, "w") as f:
        if cuda:
            f.write(f"{tokens} new tokens (prefill of 16 included): {launches / tokens:.0f} kernel launches and "
                    f"{device_us / tokens / 1e3:.2f} ms of device time per token\n")
        f.write(stats.table(sort_by=key, row_limit=top, max_name_column_width=70) + "\n")


@torch.no_grad()
def decode(model, tokens, vocab, device):
    """Eager greedy decode at batch 1: tokens/s of the second of two identical generate() calls.
    The warm-up is the whole generate(), not a few tokens: the first time a process attends over a
    KV length, scaled_dot_product_attention pays a one-time setup (measured: 4.1 s over the first
    64-token decode of an 8-layer model, ~7 ms per call, whatever the stack; bench/NOTES.md tenth
    session), so a short warm-up charged that cost to whichever stack decoded first in the run."""
    model.eval()
    prompt = torch.randint(0, vocab, (1, 16), device=device, generator=torch.Generator(device=device).manual_seed(1))
    kwargs = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0)
    model.generate(input_ids=prompt, **kwargs)  # warm up over every KV length of the timed call
    _sync(device)
    t0 = time.perf_counter()
    model.generate(input_ids=prompt, **kwargs)
    _sync(device)
    return tokens / (time.perf_counter() - t0)


@torch.no_grad()
def decode_compiled(model, tokens, vocab, device):
    """Decode as decode() does, but with a static KV cache, with which transformers' generate()
    compiles the one-token decode step into CUDA graphs (torch.compile "reduce-overhead"; the
    prefill stays eager, so the cache is allocated outside the graphs): the speed without the
    per-call host overhead that bounds eager decode. The first generate() compiles and records; the
    second is timed. Returns (tokens/s, whether generate() compiled: False where transformers
    declines, e.g. for models it sees as quantized)."""
    model.eval()
    prompt = torch.randint(0, vocab, (1, 16), device=device, generator=torch.Generator(device=device).manual_seed(1))
    kwargs = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0,
                  cache_implementation="static")
    model.generate(input_ids=prompt, **kwargs)
    _sync(device)
    t0 = time.perf_counter()
    model.generate(input_ids=prompt, **kwargs)
    _sync(device)
    return tokens / (time.perf_counter() - t0), hasattr(model, "_compiled_call")


def loss_curve(model, params, text_ids, steps, seq, device, seed=0):
    """Loss per step on the same byte-token batches for every stack (AdamW, lr 2e-4)."""
    model.gradient_checkpointing_disable()
    model.train()
    opt = adamw(params, 2e-4, device)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        start = int(torch.randint(0, text_ids.numel() - seq - 1, (1,), generator=gen))
        ids = text_ids[start:start + seq][None].to(device)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def _meta(args):
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git_sha": os.environ.get("NF4LORA_GIT_SHA", "unknown"), "config": args.config, "seq": args.seq,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "torch": torch.__version__}


def run(args):
    """Measure each stack in turn; after each one, merge its row into ``args.out`` (so a run cut
    short keeps what it measured, and stacks measured by separate invocations share one summary)."""
    device, dtype = args.device, torch.bfloat16
    vocab = CONFIGS[args.config]["vocab_size"]
    t0 = time.perf_counter()
    base = build_base(args.config, device, dtype)
    dense_bytes, dense_target_bytes = weight_bytes(base), target_weight_bytes(base)
    print(f"base model built in {time.perf_counter() - t0:.0f} s", flush=True)
    text = (load_text("pretrain.txt") + load_text("finetune.txt")) * 8
    text_ids = torch.tensor(list(text.encode("utf-8")), dtype=torch.long)
    rows, curves = [], {}
    for stack in args.stacks.split(","):
        nf4lora.restore_rotary()  # nf4lora_fused patches the modeling module's rotary function: no other stack runs it
        if stack == "bnb_peft" and (torch.device(device).type != "cuda" or not _has("bitsandbytes")):
            print(f"skipping {stack}: needs CUDA and bitsandbytes", flush=True)
            continue
        t0 = time.perf_counter()
        model, params = make_stack(stack, base)
        if args.only_decode:  # updates the decode columns of this stack's existing row
            when = _meta(args)
            row = {"stack": stack, "partial": True, "decode_tokens_per_s": decode(model, args.decode_tokens, vocab, device),
                   "decode_measured": f"{when['date']}, {when['git_sha']}"}
            print(stack, f"decode {row['decode_tokens_per_s']:.1f} tok/s", flush=True)
            if args.decode_compiled:
                row["decode_compiled_tokens_per_s"], row["decode_compiled"] = decode_compiled(
                    model, args.decode_tokens, vocab, device)
                print(stack, f"decode (static cache, CUDA graphs) {row['decode_compiled_tokens_per_s']:.1f} tok/s",
                      "" if row["decode_compiled"] else "(transformers did not compile it)", flush=True)
            rows.append(row)
            write(args.out, [row], {}, dense_bytes, args)
            if args.profile:  # after the row is saved
                # (the compiled decode with the timed length: its graphs are recorded for that cache size)
                profile_decode(model, args.decode_tokens if args.decode_compiled else 32, vocab, device,
                               os.path.join(args.out, f"profile_decode_{stack}.txt"), static_cache=args.decode_compiled)
            del model, params
            _free(device)
            continue
        row = {"stack": stack, **_meta(args), "weight_bytes": weight_bytes(model),
               "weight_pct_of_bf16": 100 * weight_bytes(model) / dense_bytes,
               "target_weight_pct_of_bf16": 100 * target_weight_bytes(model) / dense_target_bytes,
               "setup_s": round(time.perf_counter() - t0, 1)}
        for batch in args.batches:
            for ckpt in (False, True):
                t0 = time.perf_counter()
                tps, peak = train_steps(model, params, batch, args.seq, vocab, args.steps, ckpt, device)
                row[f"train_b{batch}_{'ckpt' if ckpt else 'nockpt'}"] = {"tokens_per_s": tps, "peak_mb": peak / 2**20}
                print(stack, batch, ckpt, f"{tps:.0f} tok/s, peak {peak / 2**30:.2f} GiB "
                      f"({time.perf_counter() - t0:.0f} s with warm-up)", flush=True)
        if args.profile:
            os.makedirs(args.out, exist_ok=True)
            profile_step(model, params, args.profile_batch or max(args.batches), args.seq, vocab, device,
                         os.path.join(args.out, f"profile_{stack}.txt"))
        t0 = time.perf_counter()
        row["decode_tokens_per_s"] = decode(model, args.decode_tokens, vocab, device)
        row["decode_measured"] = f"{row['date']}, {row['git_sha']}"
        print(stack, f"decode {row['decode_tokens_per_s']:.1f} tok/s ({time.perf_counter() - t0:.0f} s)", flush=True)
        del model, params
        if args.loss_steps:
            t0 = time.perf_counter()
            fresh, fresh_params = make_stack(stack, base)  # same start for every stack
            curves[stack] = loss_curve(fresh, fresh_params, text_ids, args.loss_steps, args.loss_seq, device)
            print(stack, f"loss curve {args.loss_steps} steps ({time.perf_counter() - t0:.0f} s)", flush=True)
            del fresh, fresh_params
        rows.append(row)
        print(json.dumps(row), flush=True)
        write(args.out, [row], {stack: curves[stack]} if stack in curves else {}, dense_bytes, args)
        _free(device)
    nf4lora.restore_rotary()
    return rows, curves, dense_bytes


def _free(device):
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _has(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def _read(path):
    rows, curves, meta = [], {}, None
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                if "meta" in rec:
                    meta = rec["meta"]
                elif "loss_curves" in rec:
                    curves.update(rec["loss_curves"])
                else:
                    rows.append(rec)
    return meta, rows, curves


def write(out, rows, curves, dense_bytes, args, keep_meta=False):
    """Merge ``rows``/``curves`` into out/results.jsonl (a stack measured again replaces its old
    row) and rewrite summary.md and loss_curves.png from everything there (keep_meta: the file's
    meta line stays as it is, for --summarize-only on another machine)."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "results.jsonl")
    meta, old_rows, old_curves = _read(path)
    if meta is not None and (meta.get("config"), meta.get("seq")) != (args.config, args.seq):
        old_rows, old_curves = [], {}  # another configuration: start over
    for r in rows:
        if r.get("partial"):  # decode-only: update the stack's row (which must exist)
            old = next((o for o in old_rows if o["stack"] == r["stack"]), None)
            if old is None:
                raise SystemExit(f"--only-decode: no earlier row of {r['stack']} in {path}")
            old.update({k: v for k, v in r.items() if k != "partial"})
    new = {r["stack"] for r in rows if not r.get("partial")}
    rows = [r for r in old_rows if r["stack"] not in new] + [r for r in rows if not r.get("partial")]
    curves = {**old_curves, **curves}
    if not (keep_meta and meta is not None):
        meta = dict(_meta(args), dense_weight_bytes=dense_bytes)
    with open(path, "w") as f:
        f.write(json.dumps({"meta": meta}) + "\n")
        for r in rows:
            f.write(json.dumps(r) + "\n")
        if curves:
            f.write(json.dumps({"loss_curves": curves}) + "\n")
    by = {r["stack"]: r for r in rows}
    lines = [f"# End-to-end fine-tuning benchmark — {meta['device']}, {args.config}, seq {args.seq}", "",
             "Each stack row names the date and git sha of the invocation that measured it.", "",
             "| stack | measured (date, git) | all weights % of bf16 | projection weights % of bf16 |",
             "|---|---|---|---|"]
    lines += [f"| {r['stack']} | {r.get('date', '?')}, {r.get('git_sha', '?')} | {r['weight_pct_of_bf16']:.1f}% | "
              f"{r.get('target_weight_pct_of_bf16', float('nan')):.1f}% |" for r in rows]
    lines += ["", "| stack | setting | tokens/s | peak memory | tokens/s vs bnb_peft | peak vs bnb_peft | "
              "step time vs lora16 |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        for key, v in r.items():
            if not key.startswith("train_"):
                continue
            bnb, l16 = by.get("bnb_peft", {}).get(key), by.get("lora16", {}).get(key)
            vs_bnb = f"{v['tokens_per_s'] / bnb['tokens_per_s']:.2f}×" if bnb else "–"
            mem_bnb = f"{v['peak_mb'] / bnb['peak_mb']:.2f}×" if bnb and bnb["peak_mb"] else "–"
            vs_16 = f"{l16['tokens_per_s'] / v['tokens_per_s']:.2f}×" if l16 else "–"  # step-time ratio
            lines.append(f"| {r['stack']} | {key[6:]} | {v['tokens_per_s']:.0f} | {v['peak_mb'] / 1024:.2f} GiB | "
                         f"{vs_bnb} | {mem_bnb} | {vs_16} |")
    lines += ["", "| stack | decode tokens/s (batch 1) | static cache + CUDA graphs | measured (date, git) |",
              "|---|---|---|---|"]
    lines += [f"| {r['stack']} | {r['decode_tokens_per_s']:.1f} | "
              + (f"{r['decode_compiled_tokens_per_s']:.1f}" + ("" if r.get("decode_compiled", True) else " (not compiled)")
                 if "decode_compiled_tokens_per_s" in r else "–")
              + f" | {r.get('decode_measured', '?')} |" for r in rows]
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if curves:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for stack, losses in curves.items():
            ax.plot(losses, label=stack, lw=1)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, "loss_curves.png"), dpi=120)
        plt.close(fig)
    print("\n".join(lines), flush=True)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--config", default="llama3-8b", choices=sorted(CONFIGS))
    p.add_argument("--device", default="cuda")
    p.add_argument("--stacks", default="nf4lora_fused,bnb_peft,lora16,nf4lora")
    p.add_argument("--batches", default="1,4", type=lambda s: [int(b) for b in s.split(",")])
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--steps", type=int, default=5, help="timed training steps per setting")
    p.add_argument("--decode-tokens", type=int, default=256)
    p.add_argument("--loss-steps", type=int, default=200)
    p.add_argument("--loss-seq", type=int, default=512)
    p.add_argument("--profile", action="store_true", help="write the top kernels of one step per stack")
    p.add_argument("--profile-batch", type=int, help="micro-batch of the profiled step (default: the largest of --batches)")
    p.add_argument("--summarize-only", action="store_true",
                   help="rewrite summary.md and loss_curves.png from --out's results.jsonl, measuring nothing")
    p.add_argument("--only-decode", action="store_true",
                   help="measure decode only and update those stacks' rows in --out (stacks given in one "
                        "invocation share the host's conditions: the decode is host-bound)")
    p.add_argument("--decode-compiled", action="store_true",
                   help="with --only-decode: also decode with a static KV cache and the forward compiled into "
                        "CUDA graphs (CUDA only), the host overhead removed")
    args = p.parse_args(argv)
    if args.decode_compiled and (not args.only_decode or torch.device(args.device).type != "cuda"):
        p.error("--decode-compiled needs --only-decode and a CUDA --device")
    return args


def main(argv=None):
    args = parse(argv)
    if args.summarize_only:
        meta, _, _ = _read(os.path.join(args.out, "results.jsonl"))
        if meta is None:
            raise SystemExit(f"--summarize-only: no results.jsonl in {args.out}")
        args.config, args.seq = meta["config"], meta["seq"]
        write(args.out, [], {}, meta["dense_weight_bytes"], args, keep_meta=True)
        return [], {}
    rows, curves, _ = run(args)
    return rows, curves


if __name__ == "__main__":
    sys.exit(main() and 0)
