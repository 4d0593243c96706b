#!/usr/bin/env python3
"""Reference per-token log-probabilities of Gemma 3 270M, computed by transformers from the GGUF.

transformers reads the GGUF itself (dequantizing Q4_K_M to float32) and builds the tokenizer from
its metadata; this script scores a few multilingual texts with it, one of them longer than the
512-token sliding window so that local and global layers differ, and writes:

  flix-model/tests/fixtures/gemma3-270m/texts.jsonl     one example per text, input "" (so every
                                                        token of the target after BOS is scored)
  flix-model/tests/fixtures/gemma3-270m/reference.json  per text: token ids (BOS first) and the
                                                        log-probability of every token after BOS,
                                                        twice: `token_logprobs` with torch's SIMD
                                                        kernels (the default on this machine), and
                                                        `token_logprobs_portable` with its portable
                                                        kernels (ATEN_CPU_CAPABILITY=default),
                                                        and `token_logprobs_float64` with the
                                                        model in float64

Why three: torch's SIMD `pow` (Sleef, 1-ulp accuracy) rounds one of the 128 inverse RoPE
frequencies (10^3.46875) one ulp away from the correctly rounded f32 value, which the portable
kernel (the C library's powf) and flix compute, so the SIMD reference depends on the machine's
vector unit. The two float32 passes differ by at most 3e-5 except at one ill-conditioned token
(position 1,946 of the long text: 2.7e-4), which moves by 1e-3 and more with the rounding of
any float32 implementation (torch's own attention-score GEMM, the order of a vector unit's
sums). The float64 pass is the reference a float32 implementation can be held to token by
token: transformers' Gemma 3 code with the model in float64, run with the portable kernels, and
with the two places where that code computes in float32 whatever the model's dtype (RMSNorm and
the attention softmax) computing in float64 too. RoPE stays as the model defines it (float32
angles, as flix computes them).

    python scripts/gemma3_reference_logprobs.py [GGUF]                  all three passes
    python scripts/gemma3_reference_logprobs.py GGUF --add-float64      only the float64 pass,
                                                                        added to the fixture
The second form keeps the float32 passes already in reference.json (they depend on the vector
unit of the machine that ran them, which `cpu_capability` names) and checks the token ids.
"""

import contextlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "flix-model/tests/fixtures/gemma3-270m"
DEFAULT_GGUF = pathlib.Path.home() / ".cache/flix/gemma3-270m/gemma-3-270m-q4_k_m.gguf"

# Short texts in several scripts, written for this test.
TEXTS = [
    "The library opens at nine in the morning and closes at six in the evening.",
    "Die Brücke über den Fluss wurde im Frühjahr für Fußgänger geöffnet.",
    "Le marché du samedi attire des familles de toute la région.",
    "Mvua kubwa ilinyesha jana usiku katika mji wa Mombasa.",
    "የአዲስ አበባ ከተማ ትምህርት ቤቶች ነገ ይከፈታሉ።",
    "今天下午我们在公园里散步，天气很好。",
    "明日の朝、駅の前で友達に会います。",
    "मौसम विभाग ने कल भारी बारिश की चेतावनी दी है।",
    "افتتحت المكتبة الجديدة أبوابها للزوار يوم الأحد.",
    "  two  spaces,\ta tab,\nnew lines\n\n\nand digits 12345 3.14159",
]


def long_text():
    """Over 512 tokens: numbered sentences of varied content, so no short period repeats."""
    subjects = ["The river", "A teacher", "The old train", "My neighbour", "The small shop"]
    verbs = ["crossed", "painted", "visited", "described", "remembered"]
    objects = ["the northern valley", "a blue door", "the harbour at dawn", "seven letters",
               "the winter market"]
    parts = []
    for i in range(120):
        s, v, o = subjects[i % 5], verbs[(i * 3) % 5], objects[(i * 7 + i // 5) % 5]
        parts.append(f"{i + 1}. {s} {v} {o} in the year {1900 + (i * 37) % 120}.")
    return " ".join(parts)


@contextlib.contextmanager
def float64_throughout():
    """Gemma 3's RMSNorm and the eager attention's softmax compute in float32 whatever the
    model's dtype; while this is active they keep float64 inputs in float64."""
    from transformers.models.gemma3 import modeling_gemma3

    norm_class = modeling_gemma3.Gemma3RMSNorm
    norm_forward, softmax = norm_class.forward, torch.nn.functional.softmax

    def norm_in_input_dtype(self, x):
        if x.dtype != torch.float64:
            return norm_forward(self, x)
        return self._norm(x) * (1.0 + self.weight.to(x.dtype))

    def softmax_keeping_float64(x, dim=None, _stacklevel=3, dtype=None):
        if x.dtype == torch.float64:
            dtype = None
        return softmax(x, dim=dim, _stacklevel=_stacklevel, dtype=dtype)

    norm_class.forward, torch.nn.functional.softmax = norm_in_input_dtype, softmax_keeping_float64
    try:
        yield
    finally:
        norm_class.forward, torch.nn.functional.softmax = norm_forward, softmax


def score_all(gguf, texts, dtype=torch.float32):
    """(token ids, log-probability of every token after BOS) of each text, computed in `dtype`."""
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager"
    )
    model = model.to(dtype).eval()
    scored = []
    precision = float64_throughout() if dtype == torch.float64 else contextlib.nullcontext()
    with precision, torch.no_grad():
        for i, text in enumerate(texts):
            ids = tokenizer(text, add_special_tokens=True)["input_ids"]
            assert ids[0] == tokenizer.bos_token_id, "the tokenizer adds BOS"
            logits = model(torch.tensor([ids])).logits[0].double()
            logprobs = torch.log_softmax(logits, dim=-1)
            token_logprobs = [logprobs[t - 1, ids[t]].item() for t in range(1, len(ids))]
            scored.append((ids, token_logprobs))
            print(f"text-{i} ({dtype}, {torch.backends.cpu.get_cpu_capability()} kernels): "
                  f"{len(ids)} tokens, "
                  f"mean log-prob {sum(token_logprobs) / len(token_logprobs):.4f}")
    return scored


def portable_pass(gguf, dtype_name):
    """score_all in a child process with torch's portable kernels (torch reads
    ATEN_CPU_CAPABILITY at start-up)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "pass.json"
        env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
        subprocess.run([sys.executable, __file__, str(gguf), "--pass", dtype_name, str(out)],
                       env=env, check=True)
        return json.loads(out.read_text())


DTYPES = {"token_logprobs": "float32", "token_logprobs_portable": "float32",
          "token_logprobs_float64": "float64"}


def add_float64(gguf):
    """Adds `token_logprobs_float64` to the existing reference.json."""
    meta = json.loads((OUT / "reference.json").read_text())
    for want, (ids, exact_logprobs) in zip(meta["texts"], portable_pass(gguf, "float64")):
        assert want["ids"] == ids, f"{want['id']}: the fixture's token ids differ"
        want["token_logprobs_float64"] = exact_logprobs
    meta.pop("dtype", None)
    meta["dtypes"] = DTYPES
    meta["float64_pass"] = {"transformers": __import__("transformers").__version__,
                            "torch": torch.__version__}
    (OUT / "reference.json").write_text(json.dumps(meta, ensure_ascii=False) + "\n")


def main():
    gguf = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_GGUF
    texts = TEXTS + [long_text()]
    if len(sys.argv) > 4 and sys.argv[2] == "--pass":
        dtype = {"float32": torch.float32, "float64": torch.float64}[sys.argv[3]]
        pathlib.Path(sys.argv[4]).write_text(json.dumps(score_all(gguf, texts, dtype)))
        return
    if len(sys.argv) > 2 and sys.argv[2] == "--add-float64":
        add_float64(gguf)
        return
    stock = score_all(gguf, texts)
    portable = portable_pass(gguf, "float32")
    exact = portable_pass(gguf, "float64")
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "texts.jsonl", "w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": f"text-{i}", "input": "", "target": text},
                               ensure_ascii=False) + "\n")
    reference = []
    for i, ((ids, token_logprobs), (portable_ids, portable_logprobs), (exact_ids, exact_logprobs)) \
            in enumerate(zip(stock, portable, exact)):
        assert ids == portable_ids == exact_ids, "all passes tokenize alike"
        reference.append({"id": f"text-{i}", "ids": ids, "token_logprobs": token_logprobs,
                          "token_logprobs_portable": portable_logprobs,
                          "token_logprobs_float64": exact_logprobs})
    meta = {
        "gguf": gguf.name,
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "dtypes": DTYPES,
        "attn_implementation": "eager",
        "texts": reference,
    }
    (OUT / "reference.json").write_text(json.dumps(meta, ensure_ascii=False) + "\n")
    assert max(len(r["ids"]) for r in reference) > 512, "one text must exceed the window"


if __name__ == "__main__":
    main()
