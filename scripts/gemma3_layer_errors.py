#!/usr/bin/env python3
"""Per-layer, per-op errors of flix's Gemma 3 forward pass against transformers in float64.

Runs transformers on the GGUF twice (float32 and float64; hooks save every layer's activations)
and reads what `cargo run --release -p flix-model --example layer_dump -- GGUF FLIX_DIR` wrote,
then prints, per activation, the relative error (Frobenius norm of the difference over that of
the float64 values) of flix and of torch's float32, over all tokens and at one token, and the
log-probability differences. Dumps are large (about 3 GB for the 2,340-token text): keep them
outside the repository.

    python scripts/gemma3_layer_errors.py GGUF FLIX_DIR WORK_DIR [TEXT_INDEX] [ROW]

Mind that transformers' "float64" pass still rounds in float32 where Gemma 3's code asks for
float: every RMSNorm (`x.float()`), the RoPE cos/sin and the attention softmax
(`dtype=torch.float32`). It is float64 in the matmuls, GELU and residual adds.
"""

import json
import pathlib
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "flix-model/tests/fixtures/gemma3-270m"
# flix's activation names (LlamaModel::visit_activations) that transformers' hooks also save.
NAMES = ["x", "xn1", "qp", "kp", "v", "attn", "o", "xn2", "h", "down"]


def dump_transformers(gguf, ids, dtype, out):
    """Saves `L{layer}_{name}.npy` for every hooked activation and `logprobs.json`."""
    out.mkdir(parents=True, exist_ok=True)
    if (out / "logprobs.json").exists():
        return
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager")
    model = model.to(dtype).eval()

    def save(name, t):
        np.save(out / f"{name}.npy", t.detach().reshape(-1, t.shape[-1]).numpy())

    def after(name):
        return lambda module, args, output: save(name, output)

    def before(name):
        return lambda module, args: save(name, args[0])

    m = model.model
    m.embed_tokens.register_forward_hook(after("L00_x"))
    for i, layer in enumerate(m.layers):
        p, a = f"L{i:02d}_", layer.self_attn
        layer.input_layernorm.register_forward_hook(after(p + "xn1"))
        a.q_proj.register_forward_hook(after(p + "qp"))
        a.k_proj.register_forward_hook(after(p + "kp"))
        a.v_proj.register_forward_hook(after(p + "v"))
        a.o_proj.register_forward_pre_hook(before(p + "attn"))
        a.o_proj.register_forward_hook(after(p + "o"))
        layer.pre_feedforward_layernorm.register_forward_hook(after(p + "xn2"))
        layer.mlp.down_proj.register_forward_pre_hook(before(p + "h"))
        layer.mlp.down_proj.register_forward_hook(after(p + "down"))
        layer.register_forward_hook(after(f"L{i + 1:02d}_x"))
    m.norm.register_forward_hook(after(f"L{len(m.layers) + 1:02d}_final"))
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    json.dump([logprobs[t - 1, ids[t]].item() for t in range(1, len(ids))],
              open(out / "logprobs.json", "w"))


def main():
    gguf, flix, work = (pathlib.Path(a) for a in sys.argv[1:4])
    text = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    row = int(sys.argv[5]) if len(sys.argv) > 5 else 1946
    ids = json.load(open(FIXTURES / "reference.json"))["texts"][text]["ids"]
    f32, f64 = work / "float32", work / "float64"
    dump_transformers(gguf, ids, torch.float32, f32)
    dump_transformers(gguf, ids, torch.float64, f64)

    def rel(a, ref, rows=slice(None)):
        return np.linalg.norm(a[rows] - ref[rows]) / np.linalg.norm(ref[rows])

    print(f"relative error against float64: {'all tokens':>21s} | token {row}")
    print(f"{'activation':12s} {'flix':>10s} {'torch f32':>10s} | {'flix':>9s} {'torch f32':>9s}")
    for path in sorted(f64.glob("L*.npy")):
        name = path.stem
        mine = flix / f"{name}.f32"
        if not mine.exists():
            continue
        ref = np.load(path).astype(np.float64)
        theirs = np.load(f32 / path.name).astype(np.float64)
        ours = np.fromfile(mine, dtype=np.float32).reshape(ref.shape).astype(np.float64)
        print(f"{name:12s} {rel(ours, ref):10.2e} {rel(theirs, ref):10.2e} | "
              f"{rel(ours, ref, row):9.2e} {rel(theirs, ref, row):9.2e}")
    ref = np.array(json.load(open(f64 / "logprobs.json")))
    for who, path in [("flix", flix / "logprobs.json"), ("torch f32", f32 / "logprobs.json")]:
        d = np.abs(np.array(json.load(open(path))) - ref)
        print(f"log-prob |Δ| against float64, {who}: max {d.max():.2e} (token {d.argmax()}), "
              f"token {row}: {d[row]:.2e}")


if __name__ == "__main__":
    main()
