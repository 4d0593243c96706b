"""Loads a `flix merge` directory with `transformers` alone (no PEFT: the adapters are in the
weights) and compares its logits with ours for the same token sequences.

    python scripts/check_merged_checkpoint.py MERGED_DIR CASE.json

CASE.json: {"sequences": [[...], ...], "logits": [...]} (our logits of every sequence, each run
on its own, concatenated row-major [sum of lengths, vocab]). Exits 1 when the worst relative
difference is above 1e-3.
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM


def main():
    merged, case_path = sys.argv[1:3]
    with open(case_path) as f:
        case = json.load(f)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    model.eval()
    rows = []
    with torch.no_grad():
        for tokens in case["sequences"]:
            rows.append(model(input_ids=torch.tensor([tokens])).logits[0])
    logits = torch.cat(rows)
    want = torch.tensor(case["logits"], dtype=torch.float32).reshape(logits.shape)
    worst = ((logits - want).abs() / (1e-3 + want.abs())).max().item()
    print(f"transformers (merged checkpoint) vs flix logits: worst relative difference {worst:.3e}")
    sys.exit(0 if worst < 1e-3 else 1)


if __name__ == "__main__":
    main()
