//! GGUF files (llama.cpp's format): a reader, and GGUF models seen as Hugging Face checkpoints.
//!
//! # The reader
//!
//! [`GgufFile`] reads GGUF versions 2 and 3 (version 1, with 32-bit counts, and big-endian files
//! are refused): metadata of every value type in file order ([`Metadata`], [`MetaValue`], typed
//! getters such as [`GgufFile::get_u32`] whose errors name the key and the types expected and
//! found), tensor infos ([`TensorInfo`]: name, [`GgmlType`], row-major shape, i.e. GGUF's `ne`
//! reversed, absolute byte offset and length), `general.alignment` (default 32), and the data,
//! memory-mapped and converted to f32 on request by [`GgufFile::tensor_f32`] for F32, F16, BF16,
//! Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL and IQ4_XS. Everything read from the file is checked before use
//! (lengths against the bytes that remain, counts before allocating, offsets, alignment,
//! overlaps, duplicate names), so a corrupt file is an error naming the byte offset, key or
//! tensor, never a panic.
//!
//! # GGUF models
//!
//! [`GgufModel`] opens a model of architecture `llama` (Llama 2/3; Mistral, which llama.cpp also
//! writes as `llama`, is told apart by `general.name` containing "mistral", as transformers
//! does), `qwen2`, `qwen3` or `gemma3`, and offers:
//!
//! * [`GgufModel::hf_config`]: the `config.json` object transformers would write. From the
//!   metadata (prefix `{arch}.`): `block_count` → `num_hidden_layers`, `embedding_length` →
//!   `hidden_size`, `feed_forward_length` → `intermediate_size`, `attention.head_count` →
//!   `num_attention_heads`, `attention.head_count_kv` → `num_key_value_heads` (default: the head
//!   count), `attention.key_length` → `head_dim` (else Llama's `rope.dimension_count`, else
//!   hidden / heads), `attention.layer_norm_rms_epsilon` → `rms_norm_eps`, `rope.freq_base` →
//!   `rope_theta` (default 10000, llama.cpp's), `context_length` → `max_position_embeddings`,
//!   `rope.scaling.type` / `rope.scaling.factor` → `rope_scaling` (none or linear), and the
//!   `tokenizer.ggml.{bos,eos,padding}_token_id`. From the tensors: `vocab_size` = rows of
//!   `token_embd.weight` (which must equal the length of `tokenizer.ggml.tokens` when present),
//!   `tie_word_embeddings` = no `output.weight`, Llama's `attention_bias` = `blk.0.attn_q.bias`
//!   exists, and Llama 3's rope scaling from `rope_freqs.weight` (the per-frequency factors
//!   convert_hf_to_gguf writes instead of metadata; accepted when they match low_freq_factor 1,
//!   high_freq_factor 4 and an original context of 8192, as in every Llama 3.x release, with
//!   the largest factor as `factor`).
//!
//!   Gemma 3 (`model_type` "gemma3_text"): the GGUF leaves several settings out, and llama.cpp
//!   fixes them in code (src/llama-model.cpp, LLM_ARCH_GEMMA3); they are filled the same way:
//!   `sliding_window` from `gemma3.attention.sliding_window` (absent or 0: no sliding window, all
//!   layers global); every 6th layer global (`sliding_window_pattern` 6, `layer_types` =
//!   five "sliding_attention" then one "full_attention", repeated); `rope_local_base_freq`
//!   10000 for the sliding layers, `rope_theta` for the global ones; `query_pre_attn_scalar` =
//!   head_dim (llama.cpp scales attention by 1/sqrt(head_dim)), except for 27B (62 layers) where
//!   llama.cpp uses hidden / heads; `hidden_activation` "gelu_pytorch_tanh";
//!   `final_logit_softcapping` from `gemma3.final_logit_softcapping` when present, else null;
//!   `attn_logit_softcapping` null (llama.cpp applies none); `attention_bias` false; tied
//!   embeddings when there is no `output.weight`.
//!
//! * [`TensorSource`](crate::weights::TensorSource): tensors under their Hugging Face names,
//!   mapped from llama.cpp's (gguf-py's tensor_mapping): `token_embd` → `model.embed_tokens`,
//!   `output_norm` → `model.norm`, `output` → `lm_head`, and per layer `blk.{i}.attn_q/k/v/output`
//!   → `model.layers.{i}.self_attn.{q,k,v,o}_proj`, `ffn_gate/up/down` → `mlp.{gate,up,down}_proj`,
//!   `attn_norm` → `input_layernorm`; `ffn_norm` → `post_attention_layernorm` in Llama and Qwen
//!   but `pre_feedforward_layernorm` in Gemma 3, whose `post_attention_norm`, `post_ffw_norm`
//!   are `post_attention_layernorm`, `post_feedforward_layernorm`; `attn_q_norm`, `attn_k_norm`
//!   (Qwen3, Gemma 3) → `self_attn.q_norm`, `self_attn.k_norm`; weights and biases alike (Qwen2's q/k/v biases). A
//!   tensor with no counterpart, or of a layer past `block_count`, is an error when opening.
//!   Values come in Hugging Face's conventions: for Llama, the row permutation convert_hf_to_gguf
//!   applies to q (by attention heads) and k (by KV heads) weights and biases
//!   (`LlamaModel.permute`, which pairs the rotary halves) is undone; for Gemma 3, the 1 the
//!   converter adds to every norm weight (GGUF stores 1 + w, transformers w) is subtracted.
//!   Qwen2 and Qwen3 tensors are stored as transformers has them (Qwen3: `attention_bias` =
//!   `blk.0.attn_q.bias` exists).

mod dequant;
mod model;
mod reader;
mod types;

pub use model::{
    GgufArchitecture, GgufModel, GEMMA3_ROPE_LOCAL_BASE_FREQ, GEMMA3_SLIDING_WINDOW_PATTERN,
};
pub use reader::{GgufFile, MetaType, MetaValue, Metadata, TensorInfo, DEFAULT_ALIGNMENT};
pub use types::GgmlType;
