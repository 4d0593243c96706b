#!/usr/bin/env python3
"""What transformers computes with a real Gemma 3 GGUF, for `tests/gemma3_real.rs`.

    python scripts/gemma3_gguf_reference.py MODEL.gguf OUT_DIR

transformers dequantizes the GGUF (subtracting the 1 that llama.cpp's converter adds to every
Gemma norm weight) into a `Gemma3ForCausalLM` in f32, which this script saves to OUT_DIR as a
Hugging Face directory (config.json + model.safetensors, f32: about 1.1 GB for 270M). For a
pseudo-random token sequence longer than the model's sliding window it writes OUT_DIR/case.json:

  * `tokens`: the sequence;
  * `token_logprobs`: log p(token t+1 | tokens ..t) for every position, under the eager
    (plain softmax) attention;
  * `greedy`: the greedy continuation of the whole sequence by `generate` (KV cache,
    sliding-window cache).

The weights are the GGUF's own (Gemma Terms of Use): OUT_DIR must be a temporary directory,
never a place in the repository.
"""

import json
import pathlib
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

LENGTH = 560
GREEDY_NEW_TOKENS = 4


def main():
    gguf, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    # `save_pretrained` refuses a model loaded from GGUF: write the config and the dequantized
    # weights directly (the tied head is the embedding; it is not written twice).
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (out / "config.json").write_text(json.dumps(config, indent=1))
    weights = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    window = model.config.sliding_window
    assert LENGTH > window, (LENGTH, window)

    generator = torch.Generator().manual_seed(0)
    # Ids past the special and control tokens of Gemma's vocabulary.
    tokens = [2] + torch.randint(1000, 200_000, (LENGTH - 1,), generator=generator).tolist()
    ids = torch.tensor([tokens])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
        logp = torch.log_softmax(logits.double(), -1)
        token_logprobs = [logp[t, tokens[t + 1]].item() for t in range(LENGTH - 1)]
        del logits, logp
        model.generation_config.eos_token_id = None
        generated = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=GREEDY_NEW_TOKENS,
            do_sample=False,
        )[0].tolist()
    case = {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "greedy": generated[LENGTH:],
    }
    (out / "case.json").write_text(json.dumps(case))
    print(f"wrote {out}: sliding window {window}, {LENGTH} tokens, greedy {case['greedy']}")


if __name__ == "__main__":
    main()
