#!/usr/bin/env python3
"""PyTorch peer of `flix bench-train` (BENCHMARKS.md): training-step tokens/s and peak memory of a
TinyLlama-1.1B-shaped model (random weights), or of a real model given with --model (a Hugging
Face directory or a GGUF file, e.g. Gemma 3 270M), with FLix adapters on every linear layer.

The model is `transformers`' LlamaForCausalLM built from TinyLlama-1.1B's config (or whatever
--model holds, loaded by transformers, which dequantizes a GGUF), SDPA attention, bf16 weights
(frozen). FLix in plain torch, the way a user would write it for mixed-feature
batches: every projection gets, per feature type k, f32 master tensors A_k [V_k, r, in] and
B_k [V_k, out, r]; each example gathers its value's A and B (absent features are masked to zero)
and two batched matmuls in bf16 add s_k · B (A x) to the frozen output. One step: zero grads,
forward + backward of the causal-LM loss (every token but the first of each sequence is a
target), global grad-norm clipping at 1.0, AdamW on the adapters — as `flix bench-train` does.

Reports tokens/s (all tokens of the batch / mean step time) and torch.cuda.max_memory_allocated
(tensors only), max_memory_reserved (the caching allocator's pool) and the driver's total − free
at the end (the whole process, comparable to what `flix bench-train` samples).

  python3 benches/peers/train_peer.py --device cuda [--json out.json]
  python3 benches/peers/train_peer.py --device cuda --model ~/.cache/flix/gemma3-270m/gemma-3-270m-q4_k_m.gguf
  python3 benches/peers/train_peer.py --device cpu --tiny      # a smoke test anywhere
"""

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

TYPES = [(16, 8), (16, 4)]  # (rank, values) per feature type, as flix bench-train
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_config(tiny):
    from transformers import LlamaConfig

    if tiny:
        dims = dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, vocab_size=512)
    else:  # TinyLlama-1.1B
        dims = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                    num_attention_heads=32, num_key_value_heads=4, vocab_size=32000)
    return LlamaConfig(**dims, rms_norm_eps=1e-5, rope_theta=10000.0,
                       tie_word_embeddings=False, max_position_embeddings=2048)


class Features:
    """The batch's feature values, shared by every adapted layer: ids [B] per type, -1 absent."""

    def __init__(self):
        self.ids = []


class FlixLinear(nn.Module):
    """y = base(x) + Σ_k s_k · B_{k,f} (A_{k,f} x), f = the example's value of type k."""

    def __init__(self, base, features, gen):
        super().__init__()
        self.base, self.features = base, features
        out_dim, in_dim = base.weight.shape
        dev = base.weight.device
        self.a = nn.ParameterList()
        self.b = nn.ParameterList()
        self.scales = []
        for rank, values in TYPES:
            bound = 1.0 / in_dim ** 0.5  # PEFT's Kaiming-uniform(a=sqrt(5)) bound
            a = (torch.rand(values, rank, in_dim, generator=gen) * 2 - 1) * bound
            self.a.append(nn.Parameter(a.to(dev)))
            self.b.append(nn.Parameter(torch.zeros(values, out_dim, rank, device=dev)))
            self.scales.append(2.0)  # alpha = 2 r

    def forward(self, x):  # x [B, L, in]
        y = self.base(x)
        for k, ids in enumerate(self.features.ids):
            present = (ids >= 0).to(x.dtype).view(-1, 1, 1)
            idx = ids.clamp(min=0)
            a = self.a[k][idx].to(x.dtype)  # [B, r, in]
            b = self.b[k][idx].to(x.dtype)  # [B, out, r]
            h = torch.bmm(x, a.transpose(1, 2)) * (self.scales[k] * present)
            y = y + torch.bmm(h, b.transpose(1, 2))
        return y


def load_model(path, dtype):
    """A Hugging Face directory or a GGUF file, loaded by transformers."""
    import pathlib

    from transformers import AutoModelForCausalLM

    path = pathlib.Path(path)
    if path.is_file():
        return AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=dtype, attn_implementation="sdpa")
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")


def build(args, device, dtype):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    if args.model:
        model = load_model(args.model, dtype).to(device)
        config = model.config
    else:
        config = make_config(args.tiny)
        config._attn_implementation = "sdpa"
        with torch.device(device):
            model = LlamaForCausalLM(config)
    model = model.to(dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    features = Features()
    gen = torch.Generator().manual_seed(0)
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name in TARGETS:
                if hasattr(parent, name):
                    setattr(parent, name, FlixLinear(getattr(parent, name), features, gen))
    adapters = [p for p in model.parameters() if p.requires_grad]
    return model, features, adapters, config


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", choices=["bf16", "f32"], default=None,
                    help="default: bf16 on cuda, f32 on cpu")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--model", default=None,
                    help="a Hugging Face directory or a GGUF file instead of random weights")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--seq-len", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[args.dtype or ("bf16" if on_cuda else "f32")]
    batch = args.batch or (4 if args.tiny else 8)
    seq_len = args.seq_len or (64 if args.tiny else 1024)

    model, features, adapters, config = build(args, device, dtype)
    model.train()
    n_adapter = sum(p.numel() for p in adapters)
    opt = torch.optim.AdamW(adapters, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, config.vocab_size, (batch, seq_len), generator=gen).to(device)
    labels = ids.clone()
    labels[:, 0] = -100  # the first token of each sequence is the prompt
    # Mixed features, as flix bench-train: b mod 8; b mod 4 except every third example lacks it.
    f0 = torch.tensor([b % 8 for b in range(batch)], device=device)
    f1 = torch.tensor([-1 if b % 3 == 2 else b % 4 for b in range(batch)], device=device)
    features.ids = [f0, f1]

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(input_ids=ids, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(adapters, 1.0)
        opt.step()
        return out.loss

    sync = torch.cuda.synchronize if on_cuda else (lambda: None)
    for _ in range(args.warmup):
        step()
    sync()
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    tokens_per_s = batch * seq_len / seconds
    gib = 1 << 30
    result = dict(device=str(device), dtype=str(dtype).replace("torch.", ""),
                  torch=torch.__version__, layers=config.num_hidden_layers,
                  hidden=config.hidden_size, batch=batch, seq_len=seq_len, steps=args.steps,
                  adapter_params=n_adapter, step_ms=seconds * 1e3, tokens_per_s=tokens_per_s,
                  last_loss=float(loss.detach()))
    result["model"] = args.model or ("tiny" if args.tiny else "TinyLlama-1.1B shape")
    print(f"train_peer on {device} ({result['dtype']}, torch {torch.__version__}, SDPA), "
          f"{result['model']}: {config.num_hidden_layers} layers, hidden {config.hidden_size}; batch {batch} x "
          f"{seq_len} tokens; FLix 2 types r=16 (8 and 4 values) on all 7 projections "
          f"({n_adapter} adapter parameters, f32 masters, compute in the model dtype)")
    print(f"training step: {seconds * 1e3:.1f} ms, {tokens_per_s:.0f} tokens/s (mean of "
          f"{args.steps} steps after {args.warmup} warm-up; last loss {float(loss.detach()):.4f})")
    if on_cuda:
        free, total = torch.cuda.mem_get_info()
        result.update(max_allocated_gib=torch.cuda.max_memory_allocated() / gib,
                      max_reserved_gib=torch.cuda.max_memory_reserved() / gib,
                      driver_used_at_end_gib=(total - free) / gib)
        print(f"peak memory: max_memory_allocated {result['max_allocated_gib']:.2f} GiB, "
              f"max_memory_reserved {result['max_reserved_gib']:.2f} GiB, driver total - free "
              f"at the end {result['driver_used_at_end_gib']:.2f} GiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
