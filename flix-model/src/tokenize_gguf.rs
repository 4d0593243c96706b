//! The tokenizer a GGUF file describes, built as a `tokenizers` tokenizer.
//!
//! A GGUF file carries no `tokenizer.json`: its metadata lists the vocabulary (`tokenizer.ggml.*`)
//! in llama.cpp's terms. [`build_tokenizer`] turns that list into the same tokenizer Hugging Face
//! transformers builds from it (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`), so the ids
//! match a model converted either way:
//!
//! - `tokenizer.ggml.model = "llama"`: SentencePiece BPE with byte fallback (Gemma, Llama 2,
//!   Mistral, Phi-3). The file has no merges; they are recovered from the vocabulary, ranked by the
//!   token scores, or for Gemma by the order of the tokens in the file (Gemma's scores do not
//!   follow its merge order).
//! - `tokenizer.ggml.model = "gpt2"`: byte-level BPE from the tokens and merges (Llama 3, Qwen2),
//!   split first by the regular expression that `tokenizer.ggml.pre` names.
//!
//! Control tokens become special tokens (matched whole, dropped when decoding), user-defined
//! tokens (Gemma's `\n\n`, `<think>`) become added tokens (matched whole, kept when decoding).
//!
//! Where this deliberately differs from transformers:
//! - transformers ignores `tokenizer.ggml.add_space_prefix = false` for Llama-style SentencePiece
//!   files and always prepends the dummy space; this honours the flag, as llama.cpp does.
//! - transformers adds its tokenizer classes' default special tokens (e.g. `<|endoftext|>`) to the
//!   vocabulary when the file lacks them, beyond the model's embedding rows; this adds none.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{AddedToken, DecoderWrapper, SplitDelimiterBehavior};

use crate::error::{ModelError, Result};
use crate::gguf::{GgufFile, MetaValue};
use crate::tokenize::Tokenizer;

/// The tokenizer section of a GGUF file's metadata (keys `tokenizer.ggml.*`), plus the
/// architecture, which picks the SentencePiece variant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GgufVocab {
    /// `general.architecture` (e.g. "gemma3", "llama", "qwen2"): Gemma and Phi-3 SentencePiece
    /// files need their own rules.
    #[serde(default)]
    pub architecture: Option<String>,
    /// `tokenizer.ggml.model`: "llama" (SentencePiece) or "gpt2" (byte-level BPE).
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer of a "gpt2" vocabulary (e.g. "llama-bpe", "qwen2").
    #[serde(default)]
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`, by id.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores`, one per token (SentencePiece).
    #[serde(default)]
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type`, one per token; see [`token_type`].
    #[serde(default)]
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges`: "left right" pairs, best first (byte-level BPE).
    #[serde(default)]
    pub merges: Option<Vec<String>>,
    /// `tokenizer.ggml.bos_token_id`.
    #[serde(default)]
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`: the token that ends a generated target.
    #[serde(default)]
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    #[serde(default)]
    pub unk_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    #[serde(default)]
    pub pad_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`; absent means yes for SentencePiece, no for byte-level BPE.
    #[serde(default)]
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`; absent means no.
    #[serde(default)]
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`: SentencePiece's dummy space before the text; absent
    /// means yes (Llama 2). Gemma files say no, and Gemma's rules never add one.
    #[serde(default)]
    pub add_space_prefix: Option<bool>,
}

impl GgufVocab {
    /// The tokenizer section of an opened GGUF file. A key the file lacks stays `None` (or
    /// empty); a key of the wrong type is an error naming it.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let present = |key: &str| file.metadata().get(key).is_some();
        let opt_str = |key: &str| -> Result<Option<String>> {
            present(key)
                .then(|| file.get_str(key).map(str::to_string))
                .transpose()
        };
        let opt_id = |key: &str| -> Result<Option<u32>> {
            present(key).then(|| file.get_u32(key)).transpose()
        };
        let opt_bool = |key: &str| -> Result<Option<bool>> {
            present(key).then(|| file.get_bool(key)).transpose()
        };
        let opt_strings = |key: &str| -> Result<Option<Vec<String>>> {
            present(key)
                .then(|| {
                    file.get_str_array(key)
                        .map(|v| v.into_iter().map(str::to_string).collect())
                })
                .transpose()
        };
        let token_types = match file.metadata().get("tokenizer.ggml.token_type") {
            None => None,
            Some(MetaValue::Array { values, .. }) => Some(
                values
                    .iter()
                    .map(|v| {
                        v.as_i128()
                            .and_then(|n| i32::try_from(n).ok())
                            .ok_or_else(|| ModelError::Config {
                                path: file.path().to_path_buf(),
                                message: format!(
                                    "metadata `tokenizer.ggml.token_type` must hold 32-bit \
                                     integers, found {}",
                                    v.type_name()
                                ),
                            })
                    })
                    .collect::<Result<Vec<i32>>>()?,
            ),
            Some(other) => {
                return Err(ModelError::Config {
                    path: file.path().to_path_buf(),
                    message: format!(
                        "metadata `tokenizer.ggml.token_type` must be an array, found {}",
                        other.type_name()
                    ),
                })
            }
        };
        Ok(Self {
            architecture: opt_str("general.architecture")?,
            model: file.get_str("tokenizer.ggml.model")?.to_string(),
            pre: opt_str("tokenizer.ggml.pre")?,
            tokens: file
                .get_str_array("tokenizer.ggml.tokens")?
                .into_iter()
                .map(str::to_string)
                .collect(),
            scores: present("tokenizer.ggml.scores")
                .then(|| file.get_f32_array("tokenizer.ggml.scores"))
                .transpose()?,
            token_types,
            merges: opt_strings("tokenizer.ggml.merges")?,
            bos_id: opt_id("tokenizer.ggml.bos_token_id")?,
            eos_id: opt_id("tokenizer.ggml.eos_token_id")?,
            unk_id: opt_id("tokenizer.ggml.unknown_token_id")?,
            pad_id: opt_id("tokenizer.ggml.padding_token_id")?,
            add_bos: opt_bool("tokenizer.ggml.add_bos_token")?,
            add_eos: opt_bool("tokenizer.ggml.add_eos_token")?,
            add_space_prefix: opt_bool("tokenizer.ggml.add_space_prefix")?,
        })
    }
}

/// The values of `tokenizer.ggml.token_type` (llama.cpp's `llama_token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    /// Special tokens such as `<bos>` or `<start_of_turn>`: matched whole, skipped when decoding.
    pub const CONTROL: i32 = 3;
    /// Tokens the text must match whole, such as Gemma's `\n\n` or `<think>`; kept when decoding.
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    /// `<0x00>`..`<0xFF>`: the byte fallback of a SentencePiece vocabulary.
    pub const BYTE: i32 = 6;
}

/// SentencePiece's word-boundary marker, which stands for a space inside tokens.
const SPACE_MARKER: char = '\u{2581}';

/// The regular expressions that split text before byte-level BPE, by `tokenizer.ggml.pre` (the
/// names llama.cpp writes; the expressions are those of the models' own `tokenizer.json`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const PRE_TOKENIZER_SPLITS: &[(&str, &str)] = &[
    ("llama-bpe", LLAMA3_SPLIT),
    ("llama3", LLAMA3_SPLIT),
    ("llama-v3", LLAMA3_SPLIT),
    ("falcon3", LLAMA3_SPLIT),
    ("falcon-h1", LLAMA3_SPLIT),
    ("pixtral", LLAMA3_SPLIT),
    ("midm-2.0", LLAMA3_SPLIT),
    ("lfm2", LLAMA3_SPLIT),
    ("dbrx", LLAMA3_SPLIT),
    ("smaug-bpe", LLAMA3_SPLIT),
    ("qwen2", QWEN2_SPLIT),
    ("deepseek-r1-qwen", QWEN2_SPLIT),
    ("megrez", QWEN2_SPLIT),
    ("qwen35", QWEN35_SPLIT),
    ("tekken", TEKKEN_SPLIT),
    ("gpt-4o", GPT4O_SPLIT),
    ("llama4", GPT4O_SPLIT),
];

/// How a SentencePiece ("llama") vocabulary treats spaces, by architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SentencePieceStyle {
    /// Llama 2, Mistral: a `Metaspace` pre-tokenizer, with the dummy prefix space unless the file
    /// says `add_space_prefix = false`; merges ranked by score.
    Llama,
    /// Gemma: spaces become `▁`, no dummy prefix; merges ranked by file order.
    Gemma,
    /// Phi-3: the dummy prefix comes from a normalizer, so text that starts with a space keeps it.
    Phi3,
}

/// Builds the tokenizer `vocab` describes. `source` names the file in errors.
///
/// The tokenizer adds BOS (and EOS) as the file says, and reports the file's `eos_id` as its
/// end-of-sequence token.
pub fn build_tokenizer(vocab: &GgufVocab, source: &Path) -> Result<Tokenizer> {
    let inner = build_hf_tokenizer(vocab, source)?;
    Ok(Tokenizer::from_tokenizers(inner, vocab.eos_id))
}

/// The `tokenizers` tokenizer of [`build_tokenizer`], e.g. to save as a `tokenizer.json`.
pub fn build_hf_tokenizer(vocab: &GgufVocab, source: &Path) -> Result<tokenizers::Tokenizer> {
    let err = |message: String| ModelError::Config {
        path: source.to_path_buf(),
        message,
    };
    check_lengths_and_ids(vocab).map_err(err)?;
    let mut inner = match vocab.model.as_str() {
        "llama" => sentencepiece(vocab).map_err(err)?,
        "gpt2" => byte_level(vocab).map_err(err)?,
        other => {
            return Err(err(format!(
                "tokenizer.ggml.model {other:?} is not supported (supported: \"llama\", \
                 SentencePiece BPE; \"gpt2\", byte-level BPE)"
            )))
        }
    };
    let add_bos = vocab.add_bos.unwrap_or(vocab.model == "llama");
    let add_eos = vocab.add_eos.unwrap_or(false);
    let post_processor = bos_eos_template(vocab, add_bos, add_eos).map_err(err)?;
    inner.with_post_processor(Some(post_processor));
    Ok(inner)
}

/// Every per-token list has one entry per token, and every special id names a token.
fn check_lengths_and_ids(vocab: &GgufVocab) -> std::result::Result<(), String> {
    let count = vocab.tokens.len();
    if count == 0 {
        return Err("tokenizer.ggml.tokens is missing or empty".into());
    }
    if let Some(scores) = &vocab.scores {
        if scores.len() != count {
            return Err(format!(
                "tokenizer.ggml.scores has {} entries, expected {count} (one per token)",
                scores.len()
            ));
        }
        if let Some(index) = scores.iter().position(|s| s.is_nan()) {
            return Err(format!("tokenizer.ggml.scores[{index}] is NaN"));
        }
    }
    if let Some(types) = &vocab.token_types {
        if types.len() != count {
            return Err(format!(
                "tokenizer.ggml.token_type has {} entries, expected {count} (one per token)",
                types.len()
            ));
        }
    }
    let ids = [
        ("bos_token_id", vocab.bos_id),
        ("eos_token_id", vocab.eos_id),
        ("unknown_token_id", vocab.unk_id),
        ("padding_token_id", vocab.pad_id),
    ];
    for (key, id) in ids {
        if let Some(id) = id {
            if id as usize >= count {
                return Err(format!(
                    "tokenizer.ggml.{key} = {id} is out of range: the vocabulary has {count} tokens"
                ));
            }
        }
    }
    Ok(())
}

/// SentencePiece BPE with byte fallback, as transformers' `LlamaTokenizer` / `GemmaTokenizer`
/// build it from a GGUF file.
fn sentencepiece(vocab: &GgufVocab) -> std::result::Result<tokenizers::Tokenizer, String> {
    let style = match vocab.architecture.as_deref() {
        Some("gemma" | "gemma2" | "gemma3") => SentencePieceStyle::Gemma,
        Some("phi3") => SentencePieceStyle::Phi3,
        _ => SentencePieceStyle::Llama,
    };
    // Gemma files store a token of two or more spaces with real spaces ("  "), while the text
    // reaches the model with spaces already turned into `▁`: spell those tokens "▁▁".
    let spelled: Vec<String> = match style {
        SentencePieceStyle::Gemma => vocab
            .tokens
            .iter()
            .map(|t| {
                if t.contains(' ') && t.chars().all(is_python_space) {
                    SPACE_MARKER.to_string().repeat(t.chars().count())
                } else {
                    t.clone()
                }
            })
            .collect(),
        _ => vocab.tokens.clone(),
    };
    let ids = ids_by_token(&spelled);
    let merges = match &vocab.merges {
        Some(merges) => split_merges(merges)?,
        None => {
            // Gemma's scores do not follow its merge order; the order of the tokens does.
            let ranks: Vec<f64> = match (style, &vocab.scores) {
                (SentencePieceStyle::Gemma, _) => (0..spelled.len()).map(|i| -(i as f64)).collect(),
                (_, Some(scores)) => scores.iter().map(|&s| f64::from(s)).collect(),
                (_, None) => {
                    return Err(
                        "tokenizer.ggml.scores is missing: a SentencePiece vocabulary \
                                without merges needs its scores to rank them"
                            .into(),
                    )
                }
            };
            merges_from_vocab(&spelled, &ids, &ranks)
        }
    };
    let mut bpe = BPE::builder()
        .vocab_and_merges(ids, merges)
        .fuse_unk(true)
        .byte_fallback(true);
    if style == SentencePieceStyle::Gemma {
        // GemmaTokenizer names "<unk>" whatever the file's unknown id; with byte fallback it is
        // only used for a byte the vocabulary lacks.
        bpe = bpe.unk_token("<unk>".into());
    }
    let bpe = bpe
        .build()
        .map_err(|e| format!("cannot build the BPE model: {e}"))?;
    let mut tokenizer = tokenizers::Tokenizer::new(bpe);

    let space = SPACE_MARKER.to_string();
    let to_marker = Replace::new(" ", space.as_str()).map_err(|e| e.to_string())?;
    let from_marker = Replace::new(space.as_str(), " ").map_err(|e| e.to_string())?;
    let mut decoders: Vec<DecoderWrapper> = vec![
        from_marker.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    match style {
        SentencePieceStyle::Gemma => {
            tokenizer.with_normalizer(Some(to_marker));
            let split = Split::new(" ", SplitDelimiterBehavior::MergedWithPrevious, false)
                .map_err(|e| e.to_string())?;
            tokenizer.with_pre_tokenizer(Some(split));
        }
        SentencePieceStyle::Llama => {
            let prefix = vocab.add_space_prefix.unwrap_or(true);
            let scheme = if prefix {
                PrependScheme::First
            } else {
                PrependScheme::Never
            };
            tokenizer.with_pre_tokenizer(Some(Metaspace::new(SPACE_MARKER, scheme, false)));
            if prefix {
                decoders.push(Strip::new(' ', 1, 0).into());
            }
        }
        SentencePieceStyle::Phi3 => {
            let prepend = Prepend::new(space.clone());
            tokenizer.with_normalizer(Some(NormalizerSequence::new(vec![
                prepend.into(),
                to_marker.into(),
            ])));
            decoders.push(Strip::new(' ', 1, 0).into());
        }
    }
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
    add_control_and_user_tokens(&mut tokenizer, vocab, |_| true);
    Ok(tokenizer)
}

/// Byte-level BPE from the tokens and merges, as transformers' `GPT2Tokenizer` builds it from a
/// GGUF file, with the split expression `tokenizer.ggml.pre` names.
fn byte_level(vocab: &GgufVocab) -> std::result::Result<tokenizers::Tokenizer, String> {
    let pre = vocab.pre.as_deref().ok_or(
        "tokenizer.ggml.pre is missing: a gpt2 vocabulary needs it to know how to split text",
    )?;
    let split = PRE_TOKENIZER_SPLITS
        .iter()
        .find(|(name, _)| *name == pre)
        .map(|(_, split)| *split)
        .ok_or_else(|| {
            let known: Vec<&str> = PRE_TOKENIZER_SPLITS.iter().map(|(name, _)| *name).collect();
            format!("tokenizer.ggml.pre {pre:?} is not supported (supported: {known:?})")
        })?;
    let merges = vocab
        .merges
        .as_ref()
        .ok_or("tokenizer.ggml.merges is missing: a gpt2 vocabulary needs its merges")?;
    let merges = split_merges(merges)?;

    // Tokens are stored in the byte alphabet (a space is "Ġ"); one that is not (a special token
    // some converters write in plain UTF-8) is spelled in it, so it stays in the vocabulary.
    let alphabet = byte_alphabet();
    let spelled_in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
    let spelled: Vec<String> = vocab
        .tokens
        .iter()
        .map(|t| {
            if spelled_in_alphabet(t) {
                t.clone()
            } else {
                t.bytes().map(byte_char).collect()
            }
        })
        .collect();
    let ids = ids_by_token(&spelled);
    let bpe = BPE::builder()
        .vocab_and_merges(ids, merges)
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix(String::new())
        .fuse_unk(false)
        .build()
        .map_err(|e| format!("cannot build the BPE model: {e}"))?;
    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
    let split = Split::new(
        SplitPattern::Regex(split.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| format!("tokenizer.ggml.pre {pre:?}: bad split expression: {e}"))?;
    tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
        split.into(),
        ByteLevel::new(false, true, false).into(),
    ])));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    // A control token outside the byte alphabet is a mislabel by the converter (transformers
    // skips it too): making it special would add a token the model has no row for.
    add_control_and_user_tokens(&mut tokenizer, vocab, spelled_in_alphabet);
    Ok(tokenizer)
}

/// Token → id; a token listed twice keeps its last id (as a Python dict built from the list).
fn ids_by_token(tokens: &[String]) -> Vocab {
    let mut ids = Vocab::default();
    ids.reserve(tokens.len());
    for (id, token) in tokens.iter().enumerate() {
        ids.insert(token.clone(), id as u32);
    }
    ids
}

/// "left right" merge strings as pairs.
fn split_merges(merges: &[String]) -> std::result::Result<Vec<(String, String)>, String> {
    merges
        .iter()
        .enumerate()
        .map(|(i, merge)| {
            let mut parts = merge.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(left), Some(right), None) => Ok((left.to_string(), right.to_string())),
                _ => Err(format!(
                    "tokenizer.ggml.merges[{i}] = {merge:?} is not two tokens separated by one space"
                )),
            }
        })
        .collect()
}

/// The merges a SentencePiece BPE vocabulary implies: every way to cut a token into two tokens
/// of the vocabulary, best rank first (transformers' `generate_merges`, which the GGUF conversion
/// uses). `ranks[i]` ranks the token at position `i`; higher merges first. Ties go to the longer
/// left piece, then the longer right piece, then the token listed first, then the lower ids.
fn merges_from_vocab(tokens: &[String], ids: &Vocab, ranks: &[f64]) -> Vec<(String, String)> {
    // A token listed twice takes its first position and the rank of its last (Python dict
    // semantics); `ids` already holds the last position of each token.
    let has_duplicates = ids.len() != tokens.len();
    let mut seen: HashSet<&str> = HashSet::new();
    let first_seen = tokens
        .iter()
        .filter(|token| !has_duplicates || seen.insert(token.as_str()));
    struct Candidate<'a> {
        left: &'a str,
        right: &'a str,
        rank: f64,
        left_chars: usize,
        right_chars: usize,
    }
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut local: Vec<(u32, u32, Candidate)> = Vec::new();
    for token in first_seen {
        let rank = ids
            .get(token.as_str())
            .and_then(|&last| ranks.get(last as usize))
            .copied()
            .unwrap_or(f64::NEG_INFINITY);
        let total_chars = token.chars().count();
        local.clear();
        for (left_chars, (cut, _)) in token.char_indices().skip(1).enumerate() {
            let (left, right) = token.split_at(cut);
            if let (Some(&left_id), Some(&right_id)) = (ids.get(left), ids.get(right)) {
                let left_chars = left_chars + 1;
                let candidate = Candidate {
                    left,
                    right,
                    rank,
                    left_chars,
                    right_chars: total_chars - left_chars,
                };
                local.push((left_id, right_id, candidate));
            }
        }
        local.sort_by_key(|(left_id, right_id, _)| (*left_id, *right_id));
        candidates.extend(local.drain(..).map(|(_, _, candidate)| candidate));
    }
    // Stable, so equal keys keep the order above (as Python's sorted(..., reverse=True) does);
    // ranks are never NaN, and -0.0 ties with 0.0 as in Python.
    candidates.sort_by(|a, b| {
        b.rank
            .partial_cmp(&a.rank)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.left_chars.cmp(&a.left_chars))
            .then(b.right_chars.cmp(&a.right_chars))
    });
    candidates
        .into_iter()
        .map(|c| (c.left.to_string(), c.right.to_string()))
        .collect()
}

/// Control tokens as special tokens and user-defined tokens as plain added tokens, both matched
/// whole in the raw text; then the tokens the file names as BOS/EOS/UNK/PAD, as special tokens.
/// `keep_control` filters control tokens (byte-level vocabularies drop mislabelled ones). A
/// user-defined token is added only under its own spelling in the vocabulary (Gemma's "  " is
/// spelled "▁▁" there and reached through merges instead).
fn add_control_and_user_tokens(
    tokenizer: &mut tokenizers::Tokenizer,
    vocab: &GgufVocab,
    keep_control: impl Fn(&str) -> bool,
) {
    use tokenizers::Model;
    let model = tokenizer.get_model();
    // The model's own vocabulary, in its spelling (not counting tokens added below).
    let in_model = |t: &str| model.token_to_id(t).is_some();
    let types = vocab.token_types.as_deref().unwrap_or(&[]);
    let of_type = |wanted: i32| {
        vocab
            .tokens
            .iter()
            .zip(types)
            .filter(move |(_, &t)| t == wanted)
            .map(|(token, _)| token.as_str())
    };
    let control: Vec<&str> = of_type(token_type::CONTROL)
        .filter(|t| keep_control(t))
        .collect();
    let user: Vec<&str> = of_type(token_type::USER_DEFINED)
        .filter(|t| in_model(t))
        .collect();
    let added: HashSet<&str> = control.iter().chain(&user).copied().collect();
    // Only under their own spelling: one the vocabulary does not hold would become a new token
    // beyond the model's embedding rows.
    let named: Vec<&str> = [vocab.bos_id, vocab.eos_id, vocab.unk_id, vocab.pad_id]
        .into_iter()
        .flatten()
        .filter_map(|id| vocab.tokens.get(id as usize))
        .map(String::as_str)
        .filter(|t| in_model(t) && !added.contains(t))
        .collect();

    let special = |tokens: &[&str]| -> Vec<AddedToken> {
        tokens
            .iter()
            .map(|t| AddedToken::from(*t, true).normalized(false))
            .collect()
    };
    let (control, named) = (special(&control), special(&named));
    let user: Vec<AddedToken> = user
        .iter()
        .map(|t| AddedToken::from(*t, false).normalized(false))
        .collect();
    tokenizer.add_special_tokens(&control);
    tokenizer.add_tokens(&user);
    if !named.is_empty() {
        tokenizer.add_special_tokens(&named);
    }
}

/// BOS before (and EOS after) the text, as the file asks.
fn bos_eos_template(
    vocab: &GgufVocab,
    add_bos: bool,
    add_eos: bool,
) -> std::result::Result<TemplateProcessing, String> {
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = Vec::new();
    let mut keys: Vec<(String, u32)> = Vec::new();
    let bos = vocab.bos_id.filter(|_| add_bos);
    let eos = vocab.eos_id.filter(|_| add_eos);
    // The template names a special token by its text, as transformers writes it, unless the text
    // holds what the template syntax reserves (a space, a colon, a leading `$`).
    let mut key_of = |fallback: &str, id: Option<u32>| -> std::result::Result<String, String> {
        let Some(id) = id else {
            return Ok(String::new());
        };
        let text = vocab.tokens.get(id as usize).cloned().unwrap_or_default();
        let plain = !text.is_empty() && !text.contains([' ', ':']) && !text.starts_with('$');
        let key = if plain {
            text.clone()
        } else {
            fallback.to_string()
        };
        match keys.iter().find(|(k, _)| *k == key) {
            Some((_, other)) if *other != id => {
                return Err(format!("BOS ({bos:?}) and EOS ({eos:?}) both read {key:?}"))
            }
            Some(_) => {}
            None => {
                keys.push((key.clone(), id));
                specials.push(
                    SpecialToken::new(key.clone(), vec![id], vec![text])
                        .map_err(|e| e.to_string())?,
                );
            }
        }
        Ok(key)
    };
    let bos_key = key_of("bos", bos)?;
    let eos_key = key_of("eos", eos)?;
    if bos.is_some() {
        single.push(format!("{bos_key}:0"));
    }
    single.push("$A:0".into());
    if eos.is_some() {
        single.push(format!("{eos_key}:0"));
    }
    pair.extend(single.iter().cloned());
    if bos.is_some() {
        pair.push(format!("{bos_key}:1"));
    }
    pair.push("$B:1".into());
    if eos.is_some() {
        pair.push(format!("{eos_key}:1"));
    }
    TemplateProcessing::builder()
        .try_single(single)
        .and_then(|b| b.try_pair(pair))
        .map_err(|e| format!("cannot build the BOS/EOS template: {e}"))?
        .special_tokens(specials)
        .build()
        .map_err(|e| format!("cannot build the BOS/EOS template: {e}"))
}

/// Whether Python's `str.isspace` holds for `c` (transformers picks Gemma's whitespace tokens
/// with it): Unicode whitespace plus the separators U+001C..U+001F.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The character GPT-2's byte-level alphabet writes for byte `b`: printable Latin-1 bytes stand
/// for themselves, the others are shifted to U+0100 and up, in byte order.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return char::from(b);
    }
    let shifted = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + shifted).unwrap_or(char::REPLACEMENT_CHARACTER)
}

fn byte_alphabet() -> HashSet<char> {
    (0..=255u8).map(byte_char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_matches_tokenizers() {
        let ours = byte_alphabet();
        let theirs: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
        assert_eq!(ours, theirs);
        assert_eq!(byte_char(b' '), 'Ġ');
        assert_eq!(byte_char(b'\n'), 'Ċ');
    }

    #[test]
    fn python_space_is_str_isspace() {
        // Every code point for which Python 3's str.isspace() holds.
        let python: Vec<u32> = [0x9..=0xd, 0x1c..=0x20, 0x85..=0x85, 0xa0..=0xa0]
            .into_iter()
            .chain([0x1680..=0x1680, 0x2000..=0x200a, 0x2028..=0x2029])
            .chain([0x202f..=0x202f, 0x205f..=0x205f, 0x3000..=0x3000])
            .flatten()
            .collect();
        let ours: Vec<u32> = (0..=0x10ffff)
            .filter_map(char::from_u32)
            .filter(|&c| is_python_space(c))
            .map(u32::from)
            .collect();
        assert_eq!(ours, python);
    }
}
