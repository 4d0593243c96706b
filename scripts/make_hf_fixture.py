#!/usr/bin/env python3
"""Writes the Hugging Face parity fixture for flix-model.

A tiny random Llama (2 layers, hidden 64, 4 heads, 2 KV heads, untied embeddings, llama3 rope
scaling, vocab 128) saved by `transformers` in safetensors f32, with a small Metaspace BPE
`tokenizer.json` (TinyLlama / Llama 2 style), plus what HF computes for two sequences of
different lengths, each run on its own (no padding):

  * logits of every position of each sequence;
  * the loss: summed cross-entropy over target tokens of both sequences / number of targets
    (a position t predicts token t + 1; only tokens past the prompt are targets);
  * the gradient of that loss w.r.t. every base weight (full-parameter mode);
  * with a PEFT LoRA on q_proj and v_proj (r=4, alpha=8, B set to nonzero values), the logits,
    loss, LoRA weights and LoRA gradients.

Run with the project's HF venv:  /opt/hfvenv/bin/python scripts/make_hf_fixture.py
Outputs flix-model/tests/fixtures/tiny-llama/{config.json, model.safetensors, tokenizer.json,
inputs.json, expected.safetensors, lora/ (the PEFT adapter directory)}, and tiny-qwen2/{config.json, model.safetensors,
expected.safetensors}: a smaller Qwen2 (q/k/v biases, tied embeddings, default rope) with the
same inputs, its logits, loss and full-parameter gradients; tiny-qwen3/ the same for a Qwen3
(per-head q/k norms, no biases, head_dim 16 with hidden 32 and 4 heads, untied); tiny-mistral/{config.json,
model.safetensors, expected.safetensors, greedy.json}: a Mistral with a sliding window of 3 (shorter
than the sequences), the same for it plus greedy continuations past the window; and
bytelevel-tokenizer/{tokenizer.json, samples.json}: a Llama 3-style byte-level BPE tokenizer and
Python's ids for a few texts.
"""

import json
import pathlib

import tokenizers
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "flix-model/tests/fixtures"
OUT = FIXTURES / "tiny-llama"
# A second, smaller model for the Qwen2 conventions: q/k/v biases, tied embeddings, default rope.
OUT_QWEN2 = FIXTURES / "tiny-qwen2"
# Qwen3: per-head q/k norms, no biases, head_dim (16) that is not hidden / heads (8).
OUT_QWEN3 = FIXTURES / "tiny-qwen3"
# A Mistral whose sliding window (3) is shorter than the sequences.
OUT_MISTRAL = FIXTURES / "tiny-mistral"

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a language model predicts the next token",
    "features such as language and task own low rank adapters",
    "every example uses the sum of its feature adapters",
    "habari ya asubuhi rafiki yangu",
] * 4

# Two sequences: (token ids, prompt length). Tokens from the prompt are not targets.
SEQUENCES = [
    ([1, 17, 42, 99, 5, 63, 120], 3),
    ([1, 88, 7, 31, 127], 2),
]


def make_tokenizer():
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=128, special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return tok


def randomize(model, norm_center=1.0):
    """Weights large enough that every op matters; norms near `norm_center` (one for Llama's
    x̂ · w; zero for Gemma's x̂ · (1 + w)), not exactly there."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and "norm" in name:
                p.copy_(norm_center + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))


# Llama 3's pre-tokenizer split pattern (look-arounds and Unicode classes: needs a regex engine
# with look-ahead, which is why the Rust side enables tokenizers' fancy-regex feature).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def write_bytelevel_tokenizer():
    """A Llama 3 / SmolLM-style byte-level BPE tokenizer and what Python encodes with it."""
    out = FIXTURES / "bytelevel-tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(tokenizers.Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|begin_of_text|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)]
    )
    tok.save(str(out / "tokenizer.json"))
    texts = [
        "the quick brown fox's 12345 features",
        "  habari   ya\nasubuhi!! ünïcödé – 3.14",
        "they'll say it's LOW RANK\r\n\tadapters",
    ]
    samples = [{"text": t, "ids": tok.encode(t).ids} for t in texts]
    (out / "samples.json").write_text(json.dumps(samples, indent=1, ensure_ascii=False) + "\n")


def make_model():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        max_position_embeddings=128,
        # original_max_position_embeddings = 64 puts head_dim 16's frequencies in all three
        # llama3 regimes (kept, interpolated, divided by factor).
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(config).float()
    randomize(model)
    return model


# The shape the smaller fixture models share (Qwen2, Qwen3, Mistral).
SMALL = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-6,
    max_position_embeddings=64,
    attn_implementation="eager",
)


def small_model(seed, config_class, model_class, **settings):
    """A randomized model of the SMALL shape with `settings` on top, drawn from `seed`."""
    torch.manual_seed(seed)
    model = model_class(config_class(**{**SMALL, **settings})).float()
    randomize(model)
    return model


def make_qwen2():
    return small_model(
        2,
        Qwen2Config,
        Qwen2ForCausalLM,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    )


def write_full_parameter_fixture(out, model):
    """`model` saved in `out`, with the logits, loss and full-parameter gradients of SEQUENCES in
    out/expected.safetensors."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)
    expected = loss_over(model, "full.")
    for name, p in model.named_parameters():
        expected[f"full.grad.{name}"] = p.grad.detach().contiguous()
    save_file(expected, str(out / "expected.safetensors"))


def write_qwen2():
    """Logits, loss and full-parameter gradients of the tied, biased Qwen2 model."""
    write_full_parameter_fixture(OUT_QWEN2, make_qwen2())


def make_qwen3():
    return small_model(
        5,
        Qwen3Config,
        Qwen3ForCausalLM,
        head_dim=16,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    )


def write_qwen3():
    """Logits, loss and full-parameter gradients of the Qwen3 model."""
    write_full_parameter_fixture(OUT_QWEN3, make_qwen3())


def make_mistral():
    return small_model(
        4,
        MistralConfig,
        MistralForCausalLM,
        head_dim=8,
        tie_word_embeddings=False,
        sliding_window=3,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )


def greedy_by_recomputation(model, prompts, new_tokens):
    """Greedy continuations by full recomputation (argmax of the last position, each step)."""
    out = []
    with torch.no_grad():
        for prompt in prompts:
            ids = list(prompt)
            for _ in range(new_tokens):
                ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
            out.append({"prompt": prompt, "new_tokens": ids[len(prompt):]})
    return out


def write_mistral():
    """Logits, loss, full-parameter gradients and greedy continuations of the windowed Mistral."""
    model = make_mistral()
    greedy = greedy_by_recomputation(model, [[1, 17, 42, 99], [1, 88]], 6)
    write_full_parameter_fixture(OUT_MISTRAL, model)
    (OUT_MISTRAL / "greedy.json").write_text(json.dumps(greedy, indent=1) + "\n")


def loss_over(model, keep, sequences=SEQUENCES):
    """Summed CE over targets of every sequence / number of targets, and per-sequence logits."""
    total, count, all_logits = 0.0, 0, []
    for ids, prompt in sequences:
        logits = model(input_ids=torch.tensor([ids])).logits[0]
        all_logits.append(logits)
        targets = torch.tensor(ids[1:])
        scored = torch.arange(1, len(ids)) >= prompt
        ce = torch.nn.functional.cross_entropy(logits[:-1], targets, reduction="none")
        total = total + ce[scored].sum()
        count += int(scored.sum())
    loss = total / count
    loss.backward()
    out = {f"logits.{i}": l.detach().contiguous() for i, l in enumerate(all_logits)}
    out["loss"] = loss.detach().reshape(1)
    return {keep + k: v for k, v in out.items()}


def make_lora_b_nonzero(peft_model):
    """PEFT starts B at zero, which would leave A's gradient zero: draw B instead."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.2 * torch.randn_like(p))


def lora_weights_and_grads(peft_model):
    """Every LoRA matrix of `peft_model` and its gradient, as `lora.weight.<module>.lora_A` and
    `lora.grad.<module>.lora_A` (and `lora_B`)."""
    out = {}
    for name, p in peft_model.named_parameters():
        if "lora_" in name:
            # base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight
            #   -> model.layers.0.self_attn.q_proj.lora_A
            short = name.removeprefix("base_model.model.").removesuffix(".default.weight")
            out[f"lora.weight.{short}"] = p.detach().contiguous()
            out[f"lora.grad.{short}"] = p.grad.detach().contiguous()
    return out


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer()
    tok.save(str(OUT / "tokenizer.json"))

    model = make_model()
    model.save_pretrained(OUT, safe_serialization=True)
    for extra in ["generation_config.json"]:
        (OUT / extra).unlink(missing_ok=True)

    expected = {}
    # Full-parameter gradients of the plain model.
    expected.update(loss_over(model, "full."))
    for name, p in model.named_parameters():
        expected[f"full.grad.{name}"] = p.grad.detach().contiguous()

    # A PEFT LoRA on q and v with nonzero B, so that A's gradient is nonzero too.
    model.zero_grad(set_to_none=True)
    lora_cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    peft_model = get_peft_model(model, lora_cfg)
    make_lora_b_nonzero(peft_model)
    expected.update(loss_over(peft_model, "lora."))
    expected.update(lora_weights_and_grads(peft_model))
    save_file(expected, str(OUT / "expected.safetensors"))
    # The same LoRA as PEFT writes it (adapter_config.json, adapter_model.safetensors), for
    # `flix score --adapters`.
    peft_model.save_pretrained(OUT / "lora")
    (OUT / "lora/README.md").unlink(missing_ok=True)

    # What `flix score --adapters lora` must print for two text examples: the prompt encoded
    # with special tokens (BOS), the target without, log p of each target token under PEFT.
    score_examples = []
    with torch.no_grad():
        for prompt, target in [
            ("the quick brown fox", " jumps over the lazy dog"),
            ("habari ya", " asubuhi rafiki"),
        ]:
            p_ids = tok.encode(prompt).ids
            ids = p_ids + tok.encode(target, add_special_tokens=False).ids
            logp = torch.log_softmax(peft_model(input_ids=torch.tensor([ids])).logits[0], -1)
            token_logprobs = [logp[t - 1, ids[t]].item() for t in range(len(p_ids), len(ids))]
            score_examples.append(
                {"input": prompt, "target": target, "ids": ids, "token_logprobs": token_logprobs}
            )

    # Greedy continuations under the LoRA model, by full recomputation (argmax of the last
    # position, 6 times), for `LlamaModel::generate`.
    greedy = greedy_by_recomputation(peft_model, [[1, 17, 42, 99], [1, 88]], 6)

    text = "the quick brown fox predicts the next token"
    inputs = {
        "sequences": [{"ids": ids, "prompt_len": prompt} for ids, prompt in SEQUENCES],
        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "tokenizer_sample": {"text": text, "ids": tok.encode(text).ids},
        "score_examples_with_lora": score_examples,
        "greedy_with_lora": greedy,
    }
    (OUT / "inputs.json").write_text(json.dumps(inputs, indent=1) + "\n")
    write_qwen2()
    write_qwen3()
    write_mistral()
    write_bytelevel_tokenizer()
    for out in [OUT, OUT_QWEN2, OUT_QWEN3, OUT_MISTRAL]:
        print("wrote", out, sorted(p.name for p in out.iterdir()))


if __name__ == "__main__":
    main()
