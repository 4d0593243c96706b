#!/usr/bin/env python3
"""Reference per-token log-probabilities of Gemma 3 270M, computed by transformers from the GGUF.

transformers reads the GGUF itself (dequantizing Q4_K_M to float32) and builds the tokenizer from
its metadata; this script scores a few multilingual texts with it, one of them longer than the
512-token sliding window so that local and global layers differ, and writes:

  flix-model/tests/fixtures/gemma3-270m/texts.jsonl     one example per text, input "" (so every
                                                        token of the target after BOS is scored)
  flix-model/tests/fixtures/gemma3-270m/reference.json  per text: token ids (BOS first) and the
                                                        log-probability of every token after BOS

The `gemma3_real` test of flix-model compares `flix score` with these when FLIX_GEMMA3_GGUF names
the GGUF file (scripts/fetch_gemma3_gguf.sh fetches it).

Run:  /opt/hfvenv/bin/python scripts/gemma3_reference_logprobs.py [GGUF]
"""

import json
import pathlib
import sys

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


def main():
    gguf = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_GGUF
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    texts = TEXTS + [long_text()]
    OUT.mkdir(parents=True, exist_ok=True)
    reference = []
    with open(OUT / "texts.jsonl", "w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": f"text-{i}", "input": "", "target": text},
                               ensure_ascii=False) + "\n")
    for i, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id, "the tokenizer adds BOS"
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        logprobs = torch.log_softmax(logits, dim=-1)
        token_logprobs = [logprobs[t - 1, ids[t]].item() for t in range(1, len(ids))]
        reference.append({"id": f"text-{i}", "ids": ids, "token_logprobs": token_logprobs})
        print(f"text-{i}: {len(ids)} tokens, mean log-prob "
              f"{sum(token_logprobs) / len(token_logprobs):.4f}")
    meta = {
        "gguf": gguf.name,
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "dtype": "float32",
        "attn_implementation": "eager",
        "texts": reference,
    }
    (OUT / "reference.json").write_text(json.dumps(meta, ensure_ascii=False) + "\n")
    assert max(len(r["ids"]) for r in reference) > 512, "one text must exceed the window"


if __name__ == "__main__":
    main()
