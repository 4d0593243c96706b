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
                                                        kernels (ATEN_CPU_CAPABILITY=default)

Why two: torch's SIMD `pow` (Sleef, 1-ulp accuracy) rounds one of the 128 inverse RoPE
frequencies (10^3.46875) one ulp away from the correctly rounded f32 value, which the portable
kernel (the C library's powf) and flix compute, so the SIMD reference depends on the machine's
vector unit. The two passes differ by at most 3e-5 except at one ill-conditioned token (position
1,946 of the long text: 2.7e-4), where both lie 1.1-1.4e-3 from a float64 run of transformers,
almost all of it rounding in torch's f32 attention-score GEMM; flix lies 8e-5 from float64 there
(scripts/gemma3_layer_errors.py compares the two layer by layer).
"""

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


def score_all(gguf, texts):
    """(token ids, log-probability of every token after BOS) of each text, in float32."""
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    scored = []
    for i, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id, "the tokenizer adds BOS"
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        logprobs = torch.log_softmax(logits, dim=-1)
        token_logprobs = [logprobs[t - 1, ids[t]].item() for t in range(1, len(ids))]
        scored.append((ids, token_logprobs))
        print(f"text-{i} ({torch.backends.cpu.get_cpu_capability()} kernels): {len(ids)} tokens, "
              f"mean log-prob {sum(token_logprobs) / len(token_logprobs):.4f}")
    return scored


def main():
    gguf = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_GGUF
    texts = TEXTS + [long_text()]
    if len(sys.argv) > 3 and sys.argv[2] == "--portable-pass":
        # The child process of the second pass: torch read ATEN_CPU_CAPABILITY at start-up.
        pathlib.Path(sys.argv[3]).write_text(json.dumps(score_all(gguf, texts)))
        return
    stock = score_all(gguf, texts)
    with tempfile.TemporaryDirectory() as tmp:
        portable_file = pathlib.Path(tmp) / "portable.json"
        env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
        subprocess.run([sys.executable, __file__, str(gguf), "--portable-pass", str(portable_file)],
                       env=env, check=True)
        portable = json.loads(portable_file.read_text())
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "texts.jsonl", "w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": f"text-{i}", "input": "", "target": text},
                               ensure_ascii=False) + "\n")
    reference = []
    for i, ((ids, token_logprobs), (portable_ids, portable_logprobs)) in enumerate(zip(stock, portable)):
        assert ids == portable_ids, "both passes tokenize alike"
        reference.append({"id": f"text-{i}", "ids": ids, "token_logprobs": token_logprobs,
                          "token_logprobs_portable": portable_logprobs})
    meta = {
        "gguf": gguf.name,
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "dtype": "float32",
        "attn_implementation": "eager",
        "texts": reference,
    }
    (OUT / "reference.json").write_text(json.dumps(meta, ensure_ascii=False) + "\n")
    assert max(len(r["ids"]) for r in reference) > 512, "one text must exceed the window"


if __name__ == "__main__":
    main()
