#!/usr/bin/env python3
"""transformers + PEFT peer of `flix bench-serve` (BENCHMARKS.md, Serving): serves the SAME
requests as the FLix server — the file `flix bench-serve --dump-requests` writes (same prompts,
same feature combinations, same max_tokens, greedy) — the way a user of PEFT can today: every
feature combination of the run is exported as a PEFT LoRA directory (`flix export RUN
--features ...`), all are loaded into one PeftModel (`load_adapter`), and each request activates
its own (`set_adapter`) before `generate`.

Two ways to serve, each reported separately:
- `--batch 1` (default): one request at a time — PEFT has one active adapter per forward pass,
  so requests of different combinations cannot share one. Latency = set_adapter + tokenize +
  generate of that request.
- `--batch N` (N > 1): requests of the same combination grouped (over the whole file, in order)
  and generated N at a time, left-padded. This is an upper bound on what batching could give a
  PEFT server: a live server only sees the requests that have arrived, and would have to hold
  requests back to fill a same-adapter batch. Every request of a batch gets the batch's time as
  its latency.
Requests with no feature (mode `base`) run with the adapters disabled.

Tokens are counted as generated up to and including the end-of-sequence token (as the server's
`usage.completion_tokens` counts them); tokens/s = all completion tokens / the wall time of all requests.

  flix bench-serve --run RUN --concurrency 1 --requests-per-level 32 --dump-requests req.jsonl
  python3 benches/peers/serve_peer.py --requests req.jsonl --run RUN --flix target/release/flix \
      --batch 1,8 --json peer.json
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import torch

EOS_CANDIDATES = ["<eos>", "</s>", "<|endoftext|>", "<|end_of_text|>"]  # as flix's tokenizer


def read_requests(path, modes, limit):
    requests = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            r = json.loads(line)
            for key in ("mode", "prompt", "features", "max_tokens"):
                if key not in r:
                    sys.exit(f"{path}:{n}: no field {key!r}; write the file with flix bench-serve "
                             "--dump-requests")
            if modes and r["mode"] not in modes:
                continue
            requests.append(r)
    by_mode = {}
    for r in requests:
        by_mode.setdefault(r["mode"], []).append(r)
    if limit:
        by_mode = {m: rs[:limit] for m, rs in by_mode.items()}
    if not by_mode:
        sys.exit(f"{path}: no request (of modes {modes or 'any'})")
    return by_mode


def combination_key(features):
    return ",".join(f"{k}={v}" for k, v in sorted(features.items()))


def export_adapters(combinations, run, flix, out_dir):
    """`flix export` of every combination (reused when already there); {key: (name, dir)}."""
    adapters = {}
    for i, key in enumerate(sorted(combinations)):
        target = pathlib.Path(out_dir) / f"combo-{i}"
        if not (target / "adapter_config.json").exists():
            subprocess.run([flix, "export", run, "--features", key, "--out", str(target)],
                           check=True, stdout=subprocess.DEVNULL)
        adapters[key] = (f"combo{i}", target)
    return adapters


class Tokenizer:
    """The base's tokenizer, encoding prompts as flix does: its special-token prefix (BOS) and the
    text's tokens, no trailing special token."""

    def __init__(self, base):
        base = pathlib.Path(base)
        if base.is_dir():
            from tokenizers import Tokenizer as Raw

            self.raw = Raw.from_file(str(base / "tokenizer.json"))
            vocab = self.raw.get_vocab()
            self.eos = next((vocab[n] for n in EOS_CANDIDATES if n in vocab), None)
            self.hf = None
        else:  # a GGUF file: transformers reads the tokenizer from its metadata
            from transformers import AutoTokenizer

            self.hf = AutoTokenizer.from_pretrained(base.parent, gguf_file=base.name)
            self.eos = self.hf.eos_token_id

    def encode(self, text):
        if self.hf is not None:
            return self.hf(text, add_special_tokens=True)["input_ids"]
        with_special = self.raw.encode(text, add_special_tokens=True).ids
        plain = self.raw.encode(text, add_special_tokens=False).ids
        for k in range(0, max(len(with_special) - len(plain), 0) + 1):
            if with_special[k:k + len(plain)] == plain:
                return with_special[:k] + plain
        return plain


def load_base(base, dtype, device):
    from transformers import AutoModelForCausalLM

    base = pathlib.Path(base)
    if base.is_file():
        model = AutoModelForCausalLM.from_pretrained(base.parent, gguf_file=base.name, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    return model.to(device).eval()


def completion_tokens(new_ids, eos):
    """Generated tokens up to and including the end-of-sequence token, as the server's usage
    counts them; in a batch, a finished sequence is padded with it, so nothing after it counts."""
    return new_ids.index(eos) + 1 if eos in new_ids else len(new_ids)


def percentile(sorted_values, p):
    """Nearest rank, as flix bench-serve."""
    import math

    rank = max(1, min(len(sorted_values), math.ceil(p / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def serve(model, tok, requests, adapters, batch, device):
    """Serves `requests` in order (batch 1) or in same-combination batches; returns the report."""
    pad = tok.eos if tok.eos is not None else 0
    if batch == 1:
        groups = [[r] for r in requests]
    else:
        by_combo = {}
        for r in requests:
            by_combo.setdefault(combination_key(r["features"]), []).append(r)
        groups = [rs[i:i + batch] for rs in by_combo.values() for i in range(0, len(rs), batch)]
    latencies, tokens, prompt_tokens = [], 0, 0
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for group in groups:
        t0 = time.perf_counter()
        key = combination_key(group[0]["features"])
        ids = [tok.encode(r["prompt"]) for r in group]
        width = max(len(x) for x in ids)
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
        kwargs = dict(input_ids=input_ids, attention_mask=mask, do_sample=False,
                      max_new_tokens=group[0]["max_tokens"], min_new_tokens=0,
                      eos_token_id=tok.eos, pad_token_id=pad)
        with torch.no_grad():
            if key:
                model.set_adapter(adapters[key][0])
                out = model.generate(**kwargs)
            else:
                with model.disable_adapter():
                    out = model.generate(**kwargs)
        sync()
        elapsed = time.perf_counter() - t0
        for row, x in zip(out.tolist(), ids):
            tokens += completion_tokens(row[width:], tok.eos)
            prompt_tokens += len(x)
            latencies.append(elapsed)
    wall = time.perf_counter() - start
    ms = sorted(1e3 * x for x in latencies)
    return {
        "batch": batch,
        "requests": len(requests),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "requests_per_s": len(requests) / wall,
        "latency_ms": {"p50": percentile(ms, 50), "p99": percentile(ms, 99),
                       "mean": sum(ms) / len(ms)},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", required=True, help="JSONL from flix bench-serve --dump-requests")
    ap.add_argument("--run", required=True, help="the FLix run directory the server serves")
    ap.add_argument("--flix", default=os.environ.get("FLIX", "flix"), help="the flix binary")
    ap.add_argument("--adapters", default=None,
                    help="where the exported PEFT directories go (default: a temporary one)")
    ap.add_argument("--base", default=None,
                    help="the base model (HF directory or GGUF file); default: the run's")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["bf16", "f32"], default=None,
                    help="default: bf16 on cuda, f32 on cpu")
    ap.add_argument("--modes", default="", help="comma-separated modes to serve; default all")
    ap.add_argument("--limit", type=int, default=0, help="at most this many requests per mode")
    ap.add_argument("--batch", default="1",
                    help="comma-separated batch sizes, e.g. 1,8 (1: one request at a time)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[
        args.dtype or ("bf16" if device.type == "cuda" else "f32")]
    batches = [int(b) for b in args.batch.split(",")]
    if any(b < 1 for b in batches):
        sys.exit("--batch sizes must be >= 1")
    by_mode = read_requests(args.requests, [m for m in args.modes.split(",") if m], args.limit)

    combos = {combination_key(r["features"]) for rs in by_mode.values() for r in rs}
    combos.discard("")
    loaded = time.perf_counter()
    adapter_dir = args.adapters or tempfile.mkdtemp(prefix="flix-serve-peer-")
    adapters = export_adapters(combos, args.run, args.flix, adapter_dir)
    exported_s = time.perf_counter() - loaded
    base = args.base
    if base is None:
        any_dir = next(iter(adapters.values()))[1] if adapters else None
        if any_dir is None:
            sys.exit("--base is needed when no request has features")
        base = json.loads((any_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    tok = Tokenizer(base)
    model = load_base(base, dtype, device)
    if adapters:
        from peft import PeftModel

        first, *rest = adapters.values()
        model = PeftModel.from_pretrained(model, str(first[1]), adapter_name=first[0])
        for name, path in rest:
            model.load_adapter(str(path), adapter_name=name)
        model = model.to(device).eval()
    load_s = time.perf_counter() - loaded - exported_s
    print(f"peer: {len(adapters)} PEFT adapters exported in {exported_s:.1f} s, base {base} "
          f"and adapters loaded in {load_s:.1f} s on {device} ({dtype})", file=sys.stderr)

    # One untimed request: the first generate call allocates and warms caches.
    first_mode = next(iter(by_mode.values()))
    serve(model, tok, first_mode[:1], adapters, 1, device)
    report = {"peer": "transformers + PEFT", "device": str(device), "dtype": str(dtype),
              "base": str(base), "adapters": len(adapters), "threads": torch.get_num_threads(),
              "adapters_load_s": load_s, "results": []}
    print(f"{'mode':<7} {'batch':>5} {'requests':>8} {'tokens/s':>10} {'req/s':>8} "
          f"{'p50 ms':>10} {'p99 ms':>10}")
    for mode, requests in by_mode.items():
        for batch in batches:
            r = serve(model, tok, requests, adapters, batch, device)
            r["mode"] = mode
            report["results"].append(r)
            print(f"{mode:<7} {batch:>5} {r['requests']:>8} {r['tokens_per_s']:>10.1f} "
                  f"{r['requests_per_s']:>8.2f} {r['latency_ms']['p50']:>10.1f} "
                  f"{r['latency_ms']['p99']:>10.1f}")
            sys.stdout.flush()
            if args.json:  # after every result: a run cut short by a time limit keeps what it did
                tmp = args.json + ".tmp"
                with open(tmp, "w") as f:
                    json.dump(report, f, indent=2)
                os.replace(tmp, args.json)

if __name__ == "__main__":
    main()
