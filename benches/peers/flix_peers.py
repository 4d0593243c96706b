#!/usr/bin/env python3
"""PyTorch peers of the FLix layer (DESIGN §9), timed on the same shapes as `flix bench`.

For each shape (T tokens in S segments, X [T, d_in], frozen W [d_out, d_in], K feature types with
V_k values of rank r_k, every segment using one value per type) it times, forward and
forward+backward, median milliseconds over CUDA events:

  base    Y = X Wᵀ; backward dX = dY W (W frozen: no dW). The floor every ratio divides by.
  loop    base + the per-adapter loop PEFT runs for mixed-adapter batches (`_mixed_batch_forward`):
          for every type and every value in the batch, gather its tokens, (x A_vᵀ) B_vᵀ s_k,
          index_add back. Token index lists are built once outside the timing (PEFT builds them
          per call, so this favours the peer).
  bmm     base + segment-batched bmm: tokens padded to [S, L_max, d_in], each segment's adapters
          of all types concatenated along the rank ([S, R, d_in], [S, d_out, R]), two bmm's.
  dense   base + all values of all types at once: H_all = X A_allᵀ [T, Σ V_k r_k], masked by
          which values each token uses (times s_k), then H_all B_allᵀ.

In forward+backward the adapters are trainable (their gradients are computed) and so is X.
Inputs rotate among several sets so that repeated runs do not measure the cache. Every
formulation's output is compared with the loop's on the first set (printed as rel_err).

Shapes: `--shapes FILE` reads the exact batches of `flix bench --list-shapes --json FILE` (the
same segment lengths and values as our benchmark); without it the same shape list is rebuilt here
(equal or Zipf lengths, values drawn uniformly), which matches in every size but not in the
exact values drawn. `--device cpu --small` runs tiny shapes in f32 to check the script anywhere.
"""

import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def default_shapes(small):
    """The benchmark's shape list (mirrors benches/src/shapes.rs), or tiny ones for --small."""
    if small:
        base = dict(name="tiny", tokens=96, segments=6, d_in=64, d_out=48,
                    types=[[4, 5], [4, 3]], lengths="equal", seed=1)
        out = [base]
        out.append(dict(base, name="tiny-K=1", types=[[8, 4]]))
        out.append(dict(base, name="tiny-zipf", lengths={"zipf": {"s": 1.1}}))
        return out
    ref = dict(name="reference", tokens=8192, segments=64, d_in=4096, d_out=4096,
               types=[[16, 90], [16, 10]], lengths="equal", seed=1)
    var = [
        ("T=256", dict(tokens=256, segments=2)),
        ("T=2048", dict(tokens=2048, segments=16)),
        ("T=16384", dict(tokens=16384, segments=128)),
        ("d_out=11008", dict(d_out=11008)),
        ("r=8", dict(types=[[8, 90], [8, 10]])),
        ("r=64", dict(types=[[64, 90], [64, 10]])),
        ("K=1", dict(types=[[16, 100]])),
        ("K=3", dict(types=[[16, 90], [16, 10], [16, 5]])),
        ("values=8", dict(types=[[16, 6], [16, 2]])),
        ("zipf", dict(lengths={"zipf": {"s": 1.1}})),
    ]
    return [ref] + [dict(ref, name=n, **c) for n, c in var]


def make_batch(shape):
    """Segment lengths and values when the shape comes without its batch."""
    g = torch.Generator().manual_seed(shape["seed"])
    t, s = shape["tokens"], shape["segments"]
    if shape["lengths"] == "equal":
        lens = [t // s + (1 if i < t % s else 0) for i in range(s)]
    else:
        z = shape["lengths"]["zipf"]["s"]
        w = [1.0 / (i ** z) for i in range(1, s + 1)]
        spare = max(t - s, 0)
        lens = [(1 if t >= s else 0) + math.floor(spare * x / sum(w)) for x in w]
        for i in range(t - sum(lens)):
            lens[i] += 1
        perm = torch.randperm(s, generator=g).tolist()
        lens = [lens[p] for p in perm]
    batch = []
    for n in lens:
        slots = [int(torch.randint(v, (1,), generator=g)) for _, v in shape["types"]]
        batch.append({"len": n, "slots": slots})
    return batch


class Layer:
    """One shape's tensors and the index structures each formulation needs (built untimed)."""

    def __init__(self, shape, device, dtype, sets):
        self.shape, self.device, self.dtype = shape, device, dtype
        batch = shape.get("batch") or make_batch(shape)
        t, d_in, d_out = shape["tokens"], shape["d_in"], shape["d_out"]
        g = torch.Generator(device=device).manual_seed(7)

        def rand(*size, scale=1.0):  # drawn on the device: the large shapes stay quick to set up
            return (torch.rand(*size, generator=g, device=device) * 2 - 1).mul_(scale).to(dtype)

        self.w = rand(d_out, d_in, scale=d_in ** -0.5)
        self.xs = [rand(t, d_in) for _ in range(sets)]
        self.dys = [rand(t, d_out) for _ in range(sets)]
        self.types = []  # per type: rank, scale, A [V, r, d_in], B [V, d_out, r]
        for rank, values in shape["types"]:
            a = rand(values, rank, d_in, scale=d_in ** -0.5)
            b = rand(values, d_out, rank, scale=rank ** -0.5)
            self.types.append(dict(rank=rank, scale=2.0, a=a, b=b))

        lens = [seg["len"] for seg in batch]
        starts = [0]
        for n in lens:
            starts.append(starts[-1] + n)
        seg_of_token = torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens))
        pos_in_seg = torch.arange(t) - torch.tensor(starts[:-1])[seg_of_token]
        self.seg_of_token = seg_of_token.to(device)
        self.pos_in_seg = pos_in_seg.to(device)
        self.max_len = max(lens) if lens else 0
        slots = torch.tensor([seg["slots"] for seg in batch], dtype=torch.long)  # [S, K]
        self.slots = slots.to(device)
        self.present = (slots >= 0).to(device)

        # loop: per (type, value) the token indices that use it.
        self.groups = []
        for k in range(len(self.types)):
            for v in sorted(set(slots[:, k].tolist()) - {-1}):
                segs = (slots[:, k] == v).nonzero().flatten().tolist()
                idx = torch.cat([torch.arange(starts[s], starts[s + 1]) for s in segs])
                self.groups.append((k, v, idx.to(device)))

        # dense: column offset of each type's values in [Σ V_k r_k], and the token mask.
        cols, self.dense_off = 0, []
        for ty in self.types:
            self.dense_off.append(cols)
            cols += ty["a"].shape[0] * ty["rank"]
        mask = torch.zeros(t, cols)
        for k, ty in enumerate(self.types):
            r = ty["rank"]
            for s, seg in enumerate(batch):
                v = seg["slots"][k]
                if v >= 0:
                    c = self.dense_off[k] + v * r
                    mask[starts[s]:starts[s + 1], c:c + r] = ty["scale"]
        self.dense_mask = mask.to(device, dtype)

    def adapters(self, form, trainable):
        """The adapters as `form` takes them: for the loop one (A_v, B_v) pair per value (PEFT
        keeps one nn.Linear pair per adapter, so each value's gradient is its own tensor); for the
        others one (A, B) pair per type. Trainable ones are fresh leaf copies."""
        def leaf(t):
            return t.detach().clone().requires_grad_(True) if trainable else t
        if form == "loop":
            return [[(leaf(ty["a"][v]), leaf(ty["b"][v])) for v in range(ty["a"].shape[0])]
                    for ty in self.types]
        return [(leaf(ty["a"]), leaf(ty["b"])) for ty in self.types]

    # Each formulation: (x, adapters) -> y, adapters as `adapters(form, ...)` gives them.
    def base(self, x, ad):
        return F.linear(x, self.w)

    def loop(self, x, ad):
        y = F.linear(x, self.w)
        for k, v, idx in self.groups:
            a, b = ad[k][v]
            sub = x.index_select(0, idx)
            upd = F.linear(F.linear(sub, a), b) * self.types[k]["scale"]
            y[idx] += upd  # as PEFT does: result[sub_batch_indices] += lora_output
        return y

    def bmm(self, x, ad):
        s = self.slots.shape[0]
        xp = x.new_zeros(s, self.max_len, x.shape[1])
        xp = xp.index_put((self.seg_of_token, self.pos_in_seg), x)
        a_cat, b_cat = [], []
        for k, (a, b) in enumerate(ad):
            sel = self.slots[:, k].clamp(min=0)
            keep = self.present[:, k].to(x.dtype).view(-1, 1, 1) * self.types[k]["scale"]
            a_cat.append(a.index_select(0, sel) * keep)  # [S, r, d_in]
            b_cat.append(b.index_select(0, sel))  # [S, d_out, r]
        a_cat = torch.cat(a_cat, 1)
        b_cat = torch.cat(b_cat, 2)
        h = torch.bmm(xp, a_cat.transpose(1, 2))  # [S, L, R]
        yp = torch.bmm(h, b_cat.transpose(1, 2))  # [S, L, d_out]
        return F.linear(x, self.w) + yp[self.seg_of_token, self.pos_in_seg]

    def dense(self, x, ad):
        a_all = torch.cat([a.reshape(-1, a.shape[-1]) for a, _ in ad], 0)  # [ΣVr, d_in]
        b_all = torch.cat([b.permute(1, 0, 2).reshape(b.shape[1], -1) for _, b in ad], 1)
        h = F.linear(x, a_all) * self.dense_mask
        return F.linear(x, self.w) + F.linear(h, b_all)


def timer(device):
    if device.type == "cuda":
        def run(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
    else:
        def run(fn):
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
    return run


def measure(layer, form, backward, warmup, iters):
    fn = getattr(layer, form)
    run = timer(layer.device)
    n = len(layer.xs)
    state = {"i": 0}

    def once():
        i = state["i"] % n
        state["i"] += 1
        if not backward:
            with torch.no_grad():
                fn(layer.xs[i], ad_frozen)
            return
        x = layer.xs[i].detach().requires_grad_(True)
        for p in leaves:
            p.grad = None
        y = fn(x, ad_train)
        y.backward(layer.dys[i])

    ad_frozen = layer.adapters(form, trainable=False)
    ad_train = layer.adapters(form, trainable=True)
    leaves = [t for pair in (sum(ad_train, []) if form == "loop" else ad_train) for t in pair]
    for _ in range(warmup):
        once()
    if layer.device.type == "cuda":
        torch.cuda.synchronize()
    times = [run(once) for _ in range(iters)]
    return statistics.median(times)


def check(layer):
    """Relative error of each formulation's output against the loop's (first input set)."""
    with torch.no_grad():
        ref = layer.loop(layer.xs[0], layer.adapters("loop", False)).float()
        out = {}
        for form in ("bmm", "dense"):
            y = getattr(layer, form)(layer.xs[0], layer.adapters(form, False)).float()
            out[form] = float((y - ref).norm() / ref.norm())
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default=None, help="bf16 (default on CUDA) or f32 (default on CPU)")
    p.add_argument("--shapes", help="JSON from `flix bench --list-shapes --json FILE`")
    p.add_argument("--only", help="comma-separated shape names to run")
    p.add_argument("--small", action="store_true", help="tiny shapes (for a CPU check)")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--sets", type=int, default=4, help="input sets to rotate among")
    p.add_argument("--skip", default="", help="comma-separated formulations to skip")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA requested but torch.cuda.is_available() is false")
    dtype_name = args.dtype or ("bf16" if device.type == "cuda" else "f32")
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[dtype_name]
    warmup = args.warmup if args.warmup is not None else (10 if device.type == "cuda" else 3)
    iters = args.iters if args.iters is not None else (50 if device.type == "cuda" else 3)
    if args.shapes:
        with open(args.shapes) as f:
            shapes = json.load(f)
    else:
        shapes = default_shapes(args.small)
    if args.only:
        keep = set(args.only.split(","))
        shapes = [s for s in shapes if s["name"] in keep]
    skip = set(filter(None, args.skip.split(",")))
    forms = [f for f in ("base", "loop", "bmm", "dense") if f not in skip]

    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# flix_peers: torch {torch.__version__}, {card}, {dtype_name}, "
          f"warmup {warmup}, iters {iters} (median ms), {args.sets} rotating input sets")
    results = []
    header = f"{'shape':<14}{'formulation':<8}{'fwd ms':>10}{'fwd+bwd ms':>12}" \
             f"{'fwd/base':>10}{'f+b/base':>10}{'rel_err':>10}"
    print(header)
    for shape in shapes:
        layer = Layer(shape, device, dtype, args.sets)
        errs = check(layer)
        row = {}
        for form in forms:
            try:
                fwd = measure(layer, form, False, warmup, iters)
                fb = measure(layer, form, True, warmup, iters)
            except torch.OutOfMemoryError:
                fwd = fb = float("nan")
                torch.cuda.empty_cache()
            row[form] = (fwd, fb)
        base = row.get("base", (float("nan"),) * 2)
        for form, (fwd, fb) in row.items():
            err = errs.get(form)
            print(f"{shape['name']:<14}{form:<8}{fwd:>10.3f}{fb:>12.3f}"
                  f"{fwd / base[0]:>10.2f}{fb / base[1]:>10.2f}"
                  f"{'' if err is None else f'{err:.1e}':>10}")
            results.append(dict(shape=shape["name"], formulation=form, fwd_ms=fwd,
                                fwd_bwd_ms=fb, fwd_ratio=fwd / base[0],
                                fwd_bwd_ratio=fb / base[1], rel_err_vs_loop=err))
        del layer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(torch=torch.__version__, device=card, dtype=dtype_name,
                           warmup=warmup, iters=iters, results=results), f, indent=1)


if __name__ == "__main__":
    main()
