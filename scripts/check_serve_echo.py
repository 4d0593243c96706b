#!/usr/bin/env python3
"""Checks `flix serve`'s echoed log-probabilities against transformers + peft.

    python scripts/check_serve_echo.py BASE PEFT_DIR PORT COMBINATION [TEXT]

BASE is the run's base (a Hugging Face directory or a GGUF file), PEFT_DIR what `flix export RUN
--features COMBINATION --out PEFT_DIR` wrote, PORT where `flix serve RUN` listens. TEXT (a
prompt in the run's format) is tokenized by transformers, sent as token ids with `echo`,
`logprobs` and `max_tokens` 0, the combination after `@` in `model`; every prompt token's
log-probability must match transformers' log-softmax of the base with the exported adapters.
Exits 1 when the worst difference is above 1e-3, or when the tokens' texts do not rebuild the
text.
"""
import json
import pathlib
import sys
import urllib.request

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer


def load(base):
    path = pathlib.Path(base)
    if path.is_file():  # GGUF
        kwargs = {"gguf_file": path.name}
        path = path.parent
    else:
        kwargs = {}
    tokenizer = AutoTokenizer.from_pretrained(str(path), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, **kwargs)
    return tokenizer, model.eval()


def main():
    base, peft_dir, port, combination = sys.argv[1:5]
    text = sys.argv[5] if len(sys.argv) > 5 else "<lang=swa> <task=topic> Habari za leo ="
    tokenizer, model = load(base)
    ids = tokenizer(text).input_ids
    body = {"prompt": ids, "max_tokens": 0, "echo": True, "logprobs": 2,
            "model": f"run@{combination}"}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions", data=json.dumps(body).encode(),
        headers={"content-type": "application/json"})
    choice = json.load(urllib.request.urlopen(request))["choices"][0]
    got = choice["logprobs"]["token_logprobs"]
    model = PeftModel.from_pretrained(model, peft_dir).eval()
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
    want = [logprobs[j - 1, ids[j]].item() for j in range(1, len(ids))]
    worst = max(abs(g - w) for g, w in zip(got[1:], want))
    rebuilt = "".join(choice["logprobs"]["tokens"]) == choice["text"]
    print(f"{len(ids)} prompt tokens: worst |flix serve - transformers| {worst:.2e}; "
          f"the tokens' texts rebuild the text: {rebuilt}")
    sys.exit(0 if worst < 1e-3 and rebuilt and got[0] is None else 1)


if __name__ == "__main__":
    main()
