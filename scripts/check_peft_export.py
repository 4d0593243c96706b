"""Loads a base checkpoint with `transformers`, applies a `flix export` directory with `peft`, and
compares the logits with ours for the same tokens.

    python scripts/check_peft_export.py BASE_DIR PEFT_DIR CASE.json

CASE.json: {"tokens": [...], "logits": [...]} (our logits, row-major [T, vocab]). Exits 1 when the
worst relative difference is above 1e-3.
"""
import json
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM


def main():
    base, peft_dir, case_path = sys.argv[1:4]
    with open(case_path) as f:
        case = json.load(f)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, peft_dir)
    model.eval()
    ids = torch.tensor([case["tokens"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    want = torch.tensor(case["logits"], dtype=torch.float32).reshape(logits.shape)
    worst = ((logits - want).abs() / (1e-3 + want.abs())).max().item()
    print(f"PEFT vs flix logits: worst relative difference {worst:.3e}")
    sys.exit(0 if worst < 1e-3 else 1)


if __name__ == "__main__":
    main()
