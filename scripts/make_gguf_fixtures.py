#!/usr/bin/env python3
"""Writes the GGUF fixtures of flix-model, with the `gguf` Python package (llama.cpp's gguf-py) and
`transformers` as the independent implementations the Rust reader is checked against.

Run with the project's HF venv:  /opt/hfvenv/bin/python scripts/make_gguf_fixtures.py
Outputs, in flix-model/tests/fixtures/gguf/:

  * quant_types.gguf: one small tensor of every type the reader converts to f32 (F32, F16, BF16,
    Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 quantized by gguf-py from random values; Q2_K, Q3_K, Q4_K,
    Q5_K, Q6_K, IQ4_NL and IQ4_XS as random blocks with sane f16 scales, since gguf-py only
    dequantizes those), a 3-D F32 tensor, and an IQ2_XXS tensor (a known type the reader does not
    convert). quant_types.expected.safetensors holds what gguf-py's `gguf.quants.dequantize`
    makes of each, in f32, by the same names.
  * metadata.gguf: one key of every metadata value type (and arrays, nested arrays, an empty
    string, a non-ASCII string); metadata.json holds the values written, by key, each as
    {"type": <GGUF type name>, "value": ...}.
  * llama3_rope.gguf: a Llama 3 rope scaling as llama.cpp stores it (a `rope_freqs.weight`
    tensor), and llama3_rope.json the Hugging Face `rope_scaling` it was computed from.
  * tiny-llama.gguf, tiny-qwen2.gguf, tiny-qwen3.gguf, tiny-gemma3.gguf: tiny random models built with
    transformers, converted to GGUF by a small converter that follows llama.cpp's
    convert_hf_to_gguf.py (tensor names, the row permutation of Llama's q and k, Gemma's +1 on
    norm weights, metadata keys, a token list) with a mix of tensor types. Each is loaded back
    with transformers (`from_pretrained(dir, gguf_file=...)`), and <name>.expected.safetensors
    holds the f32 logits that model computes for the sequences in inputs.json
    (`logits.<i>`); <name>.config.json holds the configuration fields transformers read from
    the GGUF. The converter itself is checked first: an all-F32 conversion loaded back by
    transformers must give the original weights exactly.
  * tiny-gemma3-text.gguf: a tiny random Gemma 3 (2 layers, one sliding, one global) with a real
    700-token SentencePiece vocabulary (fixtures/gguf-tokenizer/spm-gemma.json), for the
    command-line tests that train, evaluate, generate, export and merge from text.

Gemma 3: transformers reads no `query_pre_attn_scalar` from a GGUF (its default is 256), while
llama.cpp uses head_dim (for every size but 27B); the model is loaded with
`query_pre_attn_scalar=head_dim` so the logits are llama.cpp's model.

With --dump-real PATH.gguf OUT.json, instead writes gguf-py's dequantization of the first rows of
a few tensors of the real model, of different types, and the logits transformers computes with
that GGUF for one token sequence, for the optional Rust test that reads them
(FLIX_GEMMA3_GGUF_EXPECTED); nothing is committed from that mode.
"""

import json
import pathlib
import sys
import tempfile

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V
from safetensors.numpy import save_file
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    Gemma3ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

OUT = pathlib.Path(__file__).resolve().parent.parent / "flix-model/tests/fixtures/gguf"

# Token sequences whose logits are saved (each run on its own, no padding). Longer than the
# Gemma fixture's sliding window, so the window matters.
SEQUENCES = [
    [2, 17, 42, 90, 5, 63, 31, 77, 8, 50],
    [2, 88, 7, 31, 91, 12, 3],
    [2, 60, 61, 62, 9],
]


# ---------------------------------------------------------------- tensor types


def random_k_blocks(rng, qtype, n_blocks):
    """Random k-quant blocks with finite, moderate f16 scales (gguf-py cannot quantize these)."""
    block_bytes = gguf.GGML_QUANT_SIZES[qtype][1]
    blocks = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)

    def f16_bytes(values):
        return np.asarray(values, dtype=np.float16).view(np.uint8).reshape(n_blocks, 2)

    if qtype in (Q.Q4_K, Q.Q5_K):  # d then dmin at the start
        blocks[:, 0:2] = f16_bytes(rng.uniform(0.001, 0.05, n_blocks))
        blocks[:, 2:4] = f16_bytes(rng.uniform(0.0, 0.02, n_blocks))
    elif qtype in (Q.Q6_K, Q.Q3_K):  # d at the end
        blocks[:, -2:] = f16_bytes(rng.uniform(-0.02, 0.02, n_blocks))
    elif qtype == Q.Q2_K:  # d then dmin at the end
        blocks[:, -4:-2] = f16_bytes(rng.uniform(0.001, 0.05, n_blocks))
        blocks[:, -2:] = f16_bytes(rng.uniform(0.0, 0.02, n_blocks))
    elif qtype in (Q.IQ4_NL, Q.IQ4_XS, Q.IQ2_XXS):  # d at the start
        blocks[:, 0:2] = f16_bytes(rng.uniform(-0.02, 0.02, n_blocks))
    else:
        raise ValueError(qtype)
    return blocks


def write_quant_types():
    rng = np.random.default_rng(7)
    writer = gguf.GGUFWriter(OUT / "quant_types.gguf", "quant-test")
    expected = {}

    def add(name, raw, qtype):
        writer.add_tensor(name, raw, raw_dtype=qtype)
        expected[name] = np.ascontiguousarray(gguf.quants.dequantize(raw, qtype), dtype=np.float32)

    # Values with a wide range, a few exact zeros and some values past f16's range for F32.
    values = rng.standard_normal((3, 64)).astype(np.float32) * 3.0
    values[0, :4] = 0.0
    add("f32", values * 1e5, Q.F32)
    add("f16", gguf.quants.quantize(values, Q.F16), Q.F16)
    add("bf16", gguf.quants.quantize(values * 1e3, Q.BF16), Q.BF16)
    for name, qtype in [("q8_0", Q.Q8_0), ("q4_0", Q.Q4_0), ("q5_0", Q.Q5_0), ("q4_1", Q.Q4_1)]:
        add(name, gguf.quants.quantize(values, qtype), qtype)
    for name, qtype in [("q4_k", Q.Q4_K), ("q5_k", Q.Q5_K), ("q6_k", Q.Q6_K)]:
        rows, blocks_per_row = 2, 2
        blocks = random_k_blocks(rng, qtype, rows * blocks_per_row)
        add(name, blocks.reshape(rows, -1), qtype)
    add("f32_3d", rng.standard_normal((2, 3, 4)).astype(np.float32), Q.F32)
    add("q5_1", gguf.quants.quantize(values, Q.Q5_1), Q.Q5_1)
    add("iq4_nl", random_k_blocks(rng, Q.IQ4_NL, 6).reshape(3, -1), Q.IQ4_NL)
    for name, qtype in [("q2_k", Q.Q2_K), ("q3_k", Q.Q3_K), ("iq4_xs", Q.IQ4_XS)]:
        add(name, random_k_blocks(rng, qtype, 4).reshape(2, -1), qtype)
    add("iq2_xxs", random_k_blocks(rng, Q.IQ2_XXS, 1), Q.IQ2_XXS)
    del expected["iq2_xxs"]  # the reader refuses IQ2_XXS; the Rust test checks the error

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    save_file(expected, OUT / "quant_types.expected.safetensors")


# ---------------------------------------------------------------- metadata


def write_metadata():
    writer = gguf.GGUFWriter(OUT / "metadata.gguf", "meta-test")
    expected = {}

    def add(key, value, vtype, sub_type=None, json_value=None):
        writer.add_key_value(key, value, vtype, sub_type)
        expected[key] = {
            "type": vtype.name.lower(),
            "value": value if json_value is None else json_value,
        }
        if sub_type is not None:
            expected[key]["element"] = sub_type.name.lower()

    add("test.u8", 200, V.UINT8)
    add("test.i8", -100, V.INT8)
    add("test.u16", 60000, V.UINT16)
    add("test.i16", -30000, V.INT16)
    add("test.u32", 4_000_000_000, V.UINT32)
    add("test.i32", -2_000_000_000, V.INT32)
    add("test.u64", 2**64 - 1, V.UINT64)
    add("test.i64", -(2**63), V.INT64)
    # f32 values are saved as the f32 actually stored, converted exactly to a Python float.
    f32_value = float(np.float32(1.2345678))
    add("test.f32", f32_value, V.FLOAT32)
    add("test.f64", -0.1234567890123, V.FLOAT64)
    add("test.bool_true", True, V.BOOL)
    add("test.bool_false", False, V.BOOL)
    add("test.string", "hello GGUF", V.STRING)
    add("test.string_empty", "", V.STRING)
    add("test.string_unicode", "héllo ▁wörld 日本", V.STRING)
    add("test.array_u8", [1, 2, 255], V.ARRAY, V.UINT8)
    add("test.array_i16", [-1, 0, 1], V.ARRAY, V.INT16)
    add("test.array_u64", [0, 2**40, 2**64 - 1], V.ARRAY, V.UINT64)
    f32s = [float(np.float32(x)) for x in (0.1, -2.5, 1e-7)]
    add("test.array_f32", f32s, V.ARRAY, V.FLOAT32)
    add("test.array_f64", [0.1, -2.5], V.ARRAY, V.FLOAT64)
    add("test.array_bool", [True, False, True], V.ARRAY, V.BOOL)
    add("test.array_string", ["a", "", "ünï"], V.ARRAY, V.STRING)
    # Nested: gguf-py writes the inner arrays' elements as int32 / string from their values.
    add("test.array_nested", [[1, 2], [3], [4, 5, 6]], V.ARRAY, V.ARRAY)
    add("test.array_nested_str", [["x", "y"], ["z"]], V.ARRAY, V.ARRAY)
    writer.add_string("general.name", "metadata fixture")
    expected["general.name"] = {"type": "string", "value": "metadata fixture"}
    expected["general.architecture"] = {"type": "string", "value": "meta-test"}

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    (OUT / "metadata.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------- model converter


def llama_permute(w, n_head):
    """convert_hf_to_gguf.py `LlamaModel.permute`: interleave the two rotary halves of each head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name(arch, hf_name):
    """The llama.cpp tensor name of a Hugging Face tensor (gguf-py's tensor_mapping)."""
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    parts = hf_name.split(".")  # model.layers.{i}.{module...}.{weight|bias}
    i, module, kind = parts[2], ".".join(parts[3:-1]), parts[-1]
    common = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
    }
    if arch == "gemma3":
        common.update(
            {
                "post_attention_layernorm": "post_attention_norm",
                "pre_feedforward_layernorm": "ffn_norm",
                "post_feedforward_layernorm": "post_ffw_norm",
                "self_attn.q_norm": "attn_q_norm",
                "self_attn.k_norm": "attn_k_norm",
            }
        )
    else:
        common["post_attention_layernorm"] = "ffn_norm"
    if arch == "qwen3":
        common["self_attn.q_norm"] = "attn_q_norm"
        common["self_attn.k_norm"] = "attn_k_norm"
    return f"blk.{i}.{common[module]}.{kind}"


def convert_tensor(arch, cfg, hf_name, w):
    """A Hugging Face tensor in llama.cpp's conventions."""
    if arch == "llama" and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
        w = llama_permute(w, cfg.num_attention_heads)
    if arch == "llama" and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
        w = llama_permute(w, cfg.num_key_value_heads)
    if arch == "gemma3" and hf_name.endswith("norm.weight"):
        w = w + 1  # Gemma3Model.modify_tensors: llama.cpp multiplies by the stored weight
    return w


def write_model_gguf(path, arch, model, cfg, types, name, vocab=None):
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(name)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    # transformers 5.x: one rope_parameters dict, or one per layer type (Gemma 3).
    params = cfg.rope_parameters
    theta = params["full_attention"]["rope_theta"] if "full_attention" in params else params["rope_theta"]
    writer.add_rope_freq_base(theta)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    if arch == "llama":
        writer.add_rope_dimension_count(cfg.head_dim)
    if arch in ("gemma3", "qwen3"):
        writer.add_key_length(cfg.head_dim)
        writer.add_value_length(cfg.head_dim)
    if arch == "gemma3":
        writer.add_sliding_window(cfg.sliding_window)
    if vocab is None:
        # A token list (its length is the vocabulary size transformers and llama.cpp read).
        tokens = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"tok{i}" for i in range(4, cfg.vocab_size)]
        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores([0.0] * len(tokens))
        writer.add_token_types([3, 3, 3, 2] + [1] * (len(tokens) - 4))
        writer.add_bos_token_id(2)
        writer.add_eos_token_id(1)
    else:
        # A real SentencePiece vocabulary (the tokenizer fixtures' Gemma-style one), so text
        # round-trips through the model's own tokenizer.
        assert len(vocab["tokens"]) == cfg.vocab_size
        writer.add_tokenizer_model(vocab["model"])
        writer.add_token_list(vocab["tokens"])
        writer.add_token_scores(vocab["scores"])
        writer.add_token_types(vocab["token_types"])
        writer.add_bos_token_id(vocab["bos_id"])
        writer.add_eos_token_id(vocab["eos_id"])
        writer.add_unk_token_id(vocab["unk_id"])
        writer.add_pad_token_id(vocab["pad_id"])
        writer.add_add_bos_token(vocab["add_bos"])
        writer.add_add_eos_token(vocab["add_eos"])
        writer.add_add_space_prefix(vocab["add_space_prefix"])
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        w = convert_tensor(arch, cfg, hf_name, tensor.detach().float().numpy())
        qtype = types(hf_name, w)
        raw = gguf.quants.quantize(w.astype(np.float32), qtype)
        writer.add_tensor(gguf_name(arch, hf_name), raw, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def load_gguf(path, overrides):
    return AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32, **overrides
    ).eval()


def check_converter(arch, model, cfg, overrides):
    """An all-F32 conversion read back by transformers must give the original weights exactly."""
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "f32.gguf"
        write_model_gguf(path, arch, model, cfg, lambda n, w: Q.F32, "check")
        back = load_gguf(path, overrides).state_dict()
    for name, want in model.state_dict().items():
        got = back[name]
        # Gemma's norms go through (w + 1) - 1 in f32 on both sides: equal to f32 rounding.
        tol = 1e-7 if arch == "gemma3" and name.endswith("norm.weight") else 0.0
        assert torch.allclose(got, want, rtol=0, atol=tol), f"{arch}: {name} changed in the round trip"


CONFIG_FIELDS = [
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "vocab_size",
    "tie_word_embeddings",
    "max_position_embeddings",
    "sliding_window",
    "query_pre_attn_scalar",
    "layer_types",
]


def write_model_fixture(stem, arch, model, types, overrides):
    cfg = model.config
    check_converter(arch, model, cfg, overrides)
    path = OUT / f"{stem}.gguf"
    write_model_gguf(path, arch, model, cfg, types, stem)
    back = load_gguf(path, overrides)
    expected = {}
    with torch.no_grad():
        for i, ids in enumerate(SEQUENCES):
            logits = back(torch.tensor([ids])).logits[0]
            expected[f"logits.{i}"] = logits.float().numpy()
    save_file(expected, OUT / f"{stem}.expected.safetensors")
    read = back.config.to_dict()
    fields = {k: read[k] for k in CONFIG_FIELDS if k in read}
    params = read.get("rope_parameters") or {}
    full = params.get("full_attention", params)
    fields["rope_theta"] = full.get("rope_theta")
    if "sliding_attention" in params:
        fields["rope_local_base_freq"] = params["sliding_attention"].get("rope_theta")
    (OUT / f"{stem}.config.json").write_text(json.dumps(fields, indent=1) + "\n")
    print(f"{stem}: {path.stat().st_size} bytes")


def mixed_types(plan):
    """Tensor types by the module in the name; vectors (norms, biases) stay F32."""

    def pick(name, w):
        if w.ndim == 1:
            return Q.F32
        for key, qtype in plan.items():
            if key in name:
                return qtype
        return Q.Q8_0

    return pick


def build_models():
    torch.manual_seed(0)
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=96,
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            max_position_embeddings=128,
            tie_word_embeddings=False,
        )
    ).eval()
    randomize_norms(llama)
    write_model_fixture(
        "tiny-llama",
        "llama",
        llama,
        mixed_types(
            {
                "q_proj": Q.Q8_0,
                "k_proj": Q.Q5_0,
                "v_proj": Q.Q4_0,
                "o_proj": Q.Q8_0,
                "gate_proj": Q.F16,
                "up_proj": Q.BF16,
                "down_proj": Q.Q8_0,
                "embed_tokens": Q.Q8_0,
                "lm_head": Q.F16,
            }
        ),
        {},
    )

    # The shape the two Qwen fixtures share.
    qwen_shape = dict(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-6,
        max_position_embeddings=128,
    )
    torch.manual_seed(1)
    qwen2 = Qwen2ForCausalLM(
        Qwen2Config(**qwen_shape, rope_theta=1000000.0, tie_word_embeddings=True)
    ).eval()
    randomize_norms(qwen2)
    with torch.no_grad():
        for name, p in qwen2.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.2)
    write_model_fixture(
        "tiny-qwen2",
        "qwen2",
        qwen2,
        mixed_types({"q_proj": Q.Q5_0, "k_proj": Q.Q8_0, "v_proj": Q.F16, "down_proj": Q.Q4_0}),
        {},
    )

    # Qwen3: per-head q/k norms, no biases, a head_dim that is not hidden / heads, and the types
    # gguf-py quantizes that the other fixtures leave out.
    torch.manual_seed(3)
    qwen3 = Qwen3ForCausalLM(
        Qwen3Config(
            **qwen_shape,
            head_dim=16,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            tie_word_embeddings=False,
        )
    ).eval()
    randomize_norms(qwen3)
    write_model_fixture(
        "tiny-qwen3",
        "qwen3",
        qwen3,
        mixed_types(
            {
                "q_proj": Q.Q5_1,
                "k_proj": Q.Q4_1,
                "v_proj": Q.Q8_0,
                "gate_proj": Q.Q8_0,
                "up_proj": Q.F16,
                "down_proj": Q.Q5_0,
                "lm_head": Q.Q4_0,
            }
        ),
        # transformers reads no `head_dim` from a qwen3 GGUF (its default is 128); llama.cpp
        # reads `qwen3.attention.key_length`.
        {"head_dim": 16},
    )

    torch.manual_seed(2)
    head_dim = 32
    gemma3 = Gemma3ForCausalLM(
        Gemma3TextConfig(
            vocab_size=96,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=6,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=head_dim,
            query_pre_attn_scalar=head_dim,
            sliding_window=4,
            rms_norm_eps=1e-6,
            max_position_embeddings=128,
            rope_parameters={
                "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            },
            tie_word_embeddings=True,
        )
    ).eval()
    randomize_norms(gemma3)
    assert gemma3.config.layer_types == ["sliding_attention"] * 5 + ["full_attention"]
    write_model_fixture(
        "tiny-gemma3",
        "gemma3",
        gemma3,
        mixed_types({"q_proj": Q.Q8_0, "k_proj": Q.Q5_0, "v_proj": Q.Q4_0, "up_proj": Q.F16}),
        {"query_pre_attn_scalar": head_dim},
    )


def build_text_gemma3():
    """tiny-gemma3-text.gguf: a tiny random Gemma 3 with the 700-token Gemma-style vocabulary of
    fixtures/gguf-tokenizer/spm-gemma.json, for the command-line tests that feed it text."""
    vocab = json.loads((OUT.parent / "gguf-tokenizer/spm-gemma.json").read_text())
    torch.manual_seed(3)
    model = Gemma3ForCausalLM(
        Gemma3TextConfig(
            vocab_size=len(vocab["tokens"]),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=8,
            layer_types=["sliding_attention", "full_attention"],
            rms_norm_eps=1e-6,
            max_position_embeddings=512,
            tie_word_embeddings=True,
        )
    ).eval()
    randomize_norms(model)
    path = OUT / "tiny-gemma3-text.gguf"
    write_model_gguf(path, "gemma3", model, model.config,
                     mixed_types({"q_proj": Q.Q8_0, "v_proj": Q.Q4_0}), "tiny-gemma3-text", vocab)
    print(f"tiny-gemma3-text: {path.stat().st_size} bytes")


def randomize_norms(model):
    """Norm weights away from their initial constant, so a wrong convention shows."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.randn_like(p) * 0.2 + (0.0 if "gemma" in type(model).__name__.lower() else 1.0))


def write_llama3_rope():
    """A Llama with Llama 3 rope scaling, which llama.cpp stores as the tensor `rope_freqs.weight`
    (factors computed as convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors does), not as
    metadata; llama3_rope.json holds the rope_scaling of the Hugging Face config it came from.
    Only the metadata, the embeddings and the factors: enough for the configuration."""
    import math

    head_dim, theta, hidden, vocab = 64, 500000.0, 128, 8
    rope_scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    old_context_len = rope_scaling["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / rope_scaling["low_freq_factor"]
    high_freq_wavelen = old_context_len / rope_scaling["high_freq_factor"]
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_freq_wavelen:
            factors.append(1)
        elif wavelen > low_freq_wavelen:
            factors.append(rope_scaling["factor"])
        else:
            smooth = (old_context_len / wavelen - rope_scaling["low_freq_factor"]) / (
                rope_scaling["high_freq_factor"] - rope_scaling["low_freq_factor"]
            )
            factors.append(1 / ((1 - smooth) / rope_scaling["factor"] + smooth))
    assert any(1 < f < rope_scaling["factor"] for f in factors), "some factors are smoothed"

    writer = gguf.GGUFWriter(OUT / "llama3_rope.gguf", "llama")
    writer.add_block_count(1)
    writer.add_context_length(131072)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(256)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(theta)
    writer.add_rope_dimension_count(head_dim)
    writer.add_tensor("token_embd.weight", np.zeros((vocab, hidden), dtype=np.float32))
    writer.add_tensor("rope_freqs.weight", np.asarray(factors, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    (OUT / "llama3_rope.json").write_text(json.dumps({"rope_scaling": rope_scaling}) + "\n")


def write_inputs():
    (OUT / "inputs.json").write_text(json.dumps({"sequences": SEQUENCES}) + "\n")


# ---------------------------------------------------------------- the real model (not committed)


REAL_SEQUENCE = [2, 818, 5279, 529, 7001, 563, 496, 1607]
REAL_LOGIT_COLUMNS = 2048


def dump_real(path, out):
    reader = gguf.GGUFReader(path)
    wanted = {}
    for tensor in reader.tensors:
        kind = tensor.tensor_type.name
        if kind not in wanted and len(tensor.shape) == 2:
            wanted[kind] = tensor
    result = {}
    for kind, tensor in wanted.items():
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        rows = values.reshape(-1, int(tensor.shape[0]))[:2]
        result[tensor.name] = {"type": kind, "first_rows": rows.astype(float).tolist()}
    # transformers' logits on the same file (query_pre_attn_scalar is 256 = head_dim, llama.cpp's
    # value and transformers' default): the first REAL_LOGIT_COLUMNS columns and each position's
    # most likely token.
    model = load_gguf(pathlib.Path(path), {})
    with torch.no_grad():
        logits = model(torch.tensor([REAL_SEQUENCE])).logits[0].float()
    real = {
        "sequence": REAL_SEQUENCE,
        "columns": REAL_LOGIT_COLUMNS,
        "logits": logits[:, :REAL_LOGIT_COLUMNS].numpy().astype(float).tolist(),
        "argmax": logits.argmax(-1).tolist(),
    }
    pathlib.Path(out).write_text(json.dumps({"tensors": result, "model": real}))
    print(f"wrote the first rows of {sorted(result)} and the model's logits to {out}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--dump-real":
        dump_real(sys.argv[2], sys.argv[3])
        sys.exit(0)
    OUT.mkdir(parents=True, exist_ok=True)
    write_quant_types()
    write_metadata()
    write_inputs()
    write_llama3_rope()
    build_models()
    build_text_gemma3()
