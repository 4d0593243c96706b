#!/usr/bin/env python3
"""Writes the Gemma 3 parity fixture for flix-model (`tests/gemma3_parity.rs`).

A tiny random Gemma 3 text model (`Gemma3ForCausalLM`, model_type `gemma3_text`) saved by
`transformers` in safetensors f32, chosen so that every Gemma-specific piece matters:

  * 2 layers, `layer_types` = [sliding_attention, full_attention] with `sliding_window` 4, and
    sequences of 9 and 11 tokens, so the local layer's window cuts real keys;
  * 2 query heads sharing 1 KV head, `head_dim` 24 != hidden / heads (16), and
    `query_pre_attn_scalar` 20 != head_dim (the attention scale is 20^-0.5);
  * different rope per layer type: the global layer theta 100000 with linear scaling (factor 2),
    the local layer theta 1000, default rope;
  * every RMSNorm weight (input, post-attention, pre- and post-feedforward, q_norm, k_norm, final)
    random around zero: Gemma multiplies by (1 + w), so zero would hide a wrong convention;
  * tied embeddings, scaled by sqrt(hidden) on the way in; GeGLU (gelu_pytorch_tanh) MLP.

What HF computes for the two sequences, each run on its own (no padding), as in
`make_hf_fixture.py` (whose helpers this script reuses):

  * `full.logits.{s}`, `full.loss` and `full.grad.<name>` for every parameter;
  * with a PEFT LoRA (r=4, alpha=8) on q, k, v, o, gate, up and down (B drawn nonzero):
    `lora.logits.{s}`, `lora.loss`, `lora.weight.<module>.lora_{A,B}`, `lora.grad.…`, and the
    adapter directory PEFT saves (`lora/`);
  * in `inputs.json`: the sequences, and greedy continuations by `model.generate` (with its
    sliding-window cache) of the plain model for two prompts, past the window.

Also `config_gemma3_wrapper.json`: the same text model inside a multimodal `gemma3` config
(`text_config`), as Gemma 3 4B and larger ship; it must parse to the same model config.

Run with the project's HF venv:  /opt/hfvenv/bin/python scripts/make_gemma3_fixture.py
Outputs flix-model/tests/fixtures/tiny-gemma3/.
"""

import json

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import Gemma3Config, Gemma3ForCausalLM, Gemma3TextConfig

from make_hf_fixture import (
    FIXTURES,
    lora_weights_and_grads,
    loss_over,
    make_lora_b_nonzero,
    randomize,
)

OUT = FIXTURES / "tiny-gemma3"

# Two sequences: (token ids, prompt length), longer than the sliding window.
SEQUENCES = [
    ([2, 17, 42, 9, 5, 63, 20, 11, 37, 50, 8], 4),
    ([2, 33, 7, 31, 60, 14, 3, 45, 29], 3),
]

GREEDY_PROMPTS = [[2, 17, 42, 9, 5], [2, 33, 7]]
GREEDY_NEW_TOKENS = 8

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_config():
    return Gemma3TextConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=40,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=24,
        query_pre_attn_scalar=20,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        rms_norm_eps=1e-6,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 100000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1000.0},
        },
        hidden_activation="gelu_pytorch_tanh",
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=1,
        attn_implementation="eager",
    )


def make_model():
    torch.manual_seed(3)
    model = Gemma3ForCausalLM(make_config()).float()
    # Gemma norms scale by (1 + w): draw w around zero.
    randomize(model, norm_center=0.0)
    # A smaller tied embedding, so that the head does not simply echo the current token (a
    # random tied model would), which makes the greedy continuations say something.
    with torch.no_grad():
        embed = model.model.embed_tokens.weight
        embed.copy_(0.05 * torch.randn_like(embed))
    model.eval()
    return model


def greedy_continuations(model):
    """`generate` with greedy decoding: the cached, sliding-window path of transformers."""
    out = []
    model.generation_config.eos_token_id = None
    with torch.no_grad():
        for prompt in GREEDY_PROMPTS:
            ids = model.generate(
                torch.tensor([prompt]),
                max_new_tokens=GREEDY_NEW_TOKENS,
                do_sample=False,
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            )[0].tolist()
            # The same by full recomputation, so a cache bug in either library shows up here.
            again = list(prompt)
            for _ in range(GREEDY_NEW_TOKENS):
                again.append(int(model(input_ids=torch.tensor([again])).logits[0, -1].argmax()))
            assert ids == again, (ids, again)
            out.append({"prompt": prompt, "new_tokens": ids[len(prompt):]})
    return out


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    model = make_model()
    model.save_pretrained(OUT, safe_serialization=True)
    (OUT / "generation_config.json").unlink(missing_ok=True)

    wrapper = Gemma3Config(text_config=model.config.to_dict())
    (OUT / "config_gemma3_wrapper.json").write_text(wrapper.to_json_string())

    greedy = greedy_continuations(model)

    expected = loss_over(model, "full.", SEQUENCES)
    for name, p in model.named_parameters():
        expected[f"full.grad.{name}"] = p.grad.detach().contiguous()

    model.zero_grad(set_to_none=True)
    lora_cfg = LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, lora_dropout=0.0)
    peft_model = get_peft_model(model, lora_cfg)
    make_lora_b_nonzero(peft_model)
    expected.update(loss_over(peft_model, "lora.", SEQUENCES))
    expected.update(lora_weights_and_grads(peft_model))
    save_file(expected, str(OUT / "expected.safetensors"))
    # The same LoRA as PEFT writes it (adapter_config.json, adapter_model.safetensors).
    peft_model.save_pretrained(OUT / "lora")
    (OUT / "lora/README.md").unlink(missing_ok=True)

    inputs = {
        "sequences": [{"ids": ids, "prompt_len": prompt} for ids, prompt in SEQUENCES],
        "lora": {"r": 4, "alpha": 8, "target_modules": LORA_TARGETS},
        "greedy": greedy,
    }
    (OUT / "inputs.json").write_text(json.dumps(inputs, indent=1) + "\n")
    print("wrote", OUT, sorted(p.name for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
