#!/usr/bin/env python3
"""Collects one GPU call's benchmark JSON files (written by gpu-remote.sh under $OUT) into one
results file, `<date>-<card>.json`, to commit under benches/results/ beside BENCHMARKS.md: the
date, the card, the commit, and for each benchmark our figure, the peer's from the same call and
their ratio. Missing inputs are listed, not guessed.

Headline figures:
  train_ratio     our training tokens/s / PyTorch's (bench-train.json, train-peer.json)
  layer_fb_ratio  FLix layer forward+backward / base GEMM at the reference shape (flix.json)
  attention       per shape, our forward and backward TFLOP/s, SDPA's and the ratios

    python3 gpu-results.py OUT_DIR COMMIT [--out FILE]
"""
import argparse
import datetime
import json
import os
import re


def load(out_dir, name, missing):
    path = os.path.join(out_dir, name)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        missing.append(f"{name}: {e.__class__.__name__}")
        return None


def ratio(a, b):
    return a / b if a is not None and b else None


def card_name(out_dir):
    try:
        with open(os.path.join(out_dir, "machine.txt")) as f:
            for line in f:
                m = re.search(r"(NVIDIA [^,\n]+)", line)
                if m:
                    return m.group(1).strip()
    except OSError:
        pass
    return "unknown-card"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("commit")
    p.add_argument("--out")
    a = p.parse_args()
    missing = []
    card = card_name(a.out_dir)
    date = datetime.date.today().isoformat()
    result = dict(date=date, card=card, commit=a.commit, benchmarks={}, missing=missing)

    ours, peer = load(a.out_dir, "bench-train.json", missing), load(a.out_dir, "train-peer.json", missing)
    if ours or peer:
        o = ours and ours.get("tokens_per_s")
        q = peer and peer.get("tokens_per_s")
        result["train_ratio"] = ratio(o, q)
        result["benchmarks"]["train_step_tokens_per_s"] = dict(ours=o, peer=q, ratio=ratio(o, q))

    layer = load(a.out_dir, "flix.json", missing)
    if layer:
        rows = [r for r in layer.get("rows", []) if r.get("shape", {}).get("name") == "reference"]
        if rows:
            fb, fw = rows[0]["forward_backward"], rows[0]["forward"]
            result["layer_fb_ratio"] = fb.get("ratio")
            result["benchmarks"]["flix_layer_reference"] = dict(
                forward_ratio=fw.get("ratio"), forward_backward_ratio=fb.get("ratio"),
                adapters_copy_fraction_fb=fb.get("adapters_copy_fraction"))
        else:
            missing.append("flix.json: no reference shape")

    att, att_peer = load(a.out_dir, "attention.json", missing), load(a.out_dir, "attention-peer.json", missing)
    if att:
        key = lambda r: (r["sequences"], r["seq_len"], r["head_dim"], r["window"])
        peers = {key(r): r for r in (att_peer or {}).get("rows", [])}
        rows = []
        for r in att["rows"]:
            q = peers.get(key(r), {})
            rows.append(dict(
                shape=f"{r['sequences']}x{r['seq_len']} hd{r['head_dim']} window {r['window'] or 'none'}",
                forward_tflops=r["forward_tflops"], backward_tflops=r["backward_tflops"],
                peer_backend=q.get("backend"), peer_forward_tflops=q.get("forward_tflops"),
                peer_backward_tflops=q.get("backward_tflops"),
                forward_ratio=ratio(r["forward_tflops"], q.get("forward_tflops")),
                backward_ratio=ratio(r["backward_tflops"], q.get("backward_tflops"))))
        result["benchmarks"]["attention"] = rows

    # Serving (the optional "serve" part): ours and the transformers + PEFT peer, as written.
    for name, key in (("bench-serve.json", "serve"), ("serve-peer.json", "serve_peer")):
        if os.path.exists(os.path.join(a.out_dir, name)):
            result["benchmarks"][key] = load(a.out_dir, name, missing)

    slug = re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")
    out = a.out or os.path.join(a.out_dir, f"{date}-{slug}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {out}" + (f"; missing: {', '.join(missing)}" if missing else ""))


if __name__ == "__main__":
    main()
