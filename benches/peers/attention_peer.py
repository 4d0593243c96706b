#!/usr/bin/env python3
"""The PyTorch peer of `flix bench-attention`: torch.nn.functional.scaled_dot_product_attention on
the same shapes (causal, grouped-query heads, an optional sliding window), forward and backward,
in TFLOP/s counted the same way (4 * visible pairs * head_dim * heads forward, 2.5x that backward).

Sequences of equal length are a dense [batch, heads, seq, head_dim] batch with is_causal, which
is the packed batch of equal causal segments that flix times. A sliding window needs a boolean
mask, which the flash backend does not take; the script then asks for the memory-efficient or
cuDNN backend and names the one that ran.

    python3 attention_peer.py --device cuda --json attention-peer.json
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def visible_pairs(length, window):
    return sum(min(i + 1, window or length + 1) for i in range(length))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(device, warmup, iters, fn):
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def backends_to_try(device, window):
    if device.type != "cuda":
        return [("flash (CPU)", [SDPBackend.FLASH_ATTENTION]), ("math (CPU)", [SDPBackend.MATH])]
    if window is None:
        return [
            ("flash", [SDPBackend.FLASH_ATTENTION]),
            ("cudnn", [SDPBackend.CUDNN_ATTENTION]),
            ("efficient", [SDPBackend.EFFICIENT_ATTENTION]),
        ]
    return [
        ("cudnn (mask)", [SDPBackend.CUDNN_ATTENTION]),
        ("efficient (mask)", [SDPBackend.EFFICIENT_ATTENTION]),
        ("math (mask)", [SDPBackend.MATH]),
    ]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default=None, help="f32 or bf16 (default bf16 on CUDA, f32 on CPU)")
    p.add_argument("--batches", default="8x1024,4x2048")
    p.add_argument("--head-dims", default="64,128,256")
    p.add_argument("--windows", default="none,512")
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--json")
    a = p.parse_args()
    device = torch.device(a.device)
    dtype_name = a.dtype or ("bf16" if device.type == "cuda" else "f32")
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    rows = []
    print(f"torch {torch.__version__} SDPA on {device}, {dtype_name}, {a.heads} heads / {a.kv_heads} KV heads")
    print(f"{'batch':>10} {'hd':>4} {'window':>7} {'backend':>18} {'fwd ms':>10} {'fwd TF/s':>10} {'bwd ms':>10} {'bwd TF/s':>10}")
    gen = torch.Generator(device="cpu").manual_seed(0)
    for batch in a.batches.split(","):
        n, length = (int(x) for x in batch.split("x"))
        for hd in (int(x) for x in a.head_dims.split(",")):
            def rand(heads):
                x = torch.rand(n, heads, length, hd, generator=gen) - 0.5
                return x.to(device=device, dtype=dtype).requires_grad_(True)
            q, k, v = rand(a.heads), rand(a.kv_heads), rand(a.kv_heads)
            dout = (torch.rand(n, a.heads, length, hd, generator=gen) - 0.5).to(device=device, dtype=dtype)
            for w in a.windows.split(","):
                window = None if w == "none" else int(w)
                mask = None
                if window is not None:
                    i = torch.arange(length, device=device)
                    mask = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - window)
                row = None
                for name, backend in backends_to_try(device, window):
                    try:
                        with sdpa_kernel(backend):
                            def forward():
                                if mask is None:
                                    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
                            out = forward()
                            fwd = median_ms(device, a.warmup, a.iters, lambda: forward())
                            bwd = median_ms(device, a.warmup, a.iters,
                                            lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True))
                    except RuntimeError as e:  # this backend does not take these inputs
                        print(f"  ({name}: {str(e).splitlines()[0][:100]})")
                        continue
                    flop = 4.0 * n * visible_pairs(length, window) * hd * a.heads
                    row = dict(sequences=n, seq_len=length, heads=a.heads, kv_heads=a.kv_heads, head_dim=hd,
                               window=window, dtype=dtype_name, backend=name, forward_ms=fwd, backward_ms=bwd,
                               forward_tflops=flop / (fwd * 1e-3) / 1e12,
                               backward_tflops=2.5 * flop / (bwd * 1e-3) / 1e12)
                    break
                if row is None:
                    print(f"{batch:>10} {hd:>4} {w:>7}  no SDPA backend ran")
                    continue
                rows.append(row)
                print(f"{batch:>10} {hd:>4} {w:>7} {row['backend']:>18} {fwd:>10.3f} {row['forward_tflops']:>10.3f} "
                      f"{bwd:>10.3f} {row['backward_tflops']:>10.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(benchmark="attention", peer=f"torch {torch.__version__} SDPA", device=str(device),
                           rows=rows), f, indent=2)


if __name__ == "__main__":
    main()
