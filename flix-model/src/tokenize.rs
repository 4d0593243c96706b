//! Text to token ids and back, through a Hugging Face `tokenizer.json` (the `tokenizers` crate,
//! offline), and a character-level `tokenizer.json` built in code for the demo, so the demo goes
//! through exactly the path a real checkpoint does.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Value};

use crate::batch::Sequence;
use crate::error::{ModelError, Result};

/// The end-of-sequence token of tokenizers built by [`char_tokenizer_json`].
pub const DEMO_EOS: &str = "<eos>";
/// The unknown-character token of tokenizers built by [`char_tokenizer_json`].
pub const DEMO_UNK: &str = "<unk>";

/// A loaded `tokenizer.json` plus the token that ends a generated target, when it has one
/// (scoring needs none; training and generation do, and [`Tokenizer::eos_id`] says so).
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    eos: Option<u32>,
}

/// End-of-sequence names used by common checkpoints, tried in order when none is given.
const EOS_CANDIDATES: [&str; 4] = [DEMO_EOS, "</s>", "<|endoftext|>", "<|end_of_text|>"];

impl Tokenizer {
    /// The tokenizer of a base model: `tokenizer.json` of a directory, or the one a GGUF file's
    /// metadata describes.
    pub fn load(model: &Path) -> Result<Self> {
        if model.is_dir() {
            return Self::from_file(&model.join("tokenizer.json"));
        }
        crate::source::ModelSource::open(model)?.tokenizer()
    }

    /// Reads `path`; the end-of-sequence token is the first of the usual names it knows.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text, path)
    }

    /// Parses the text of a `tokenizer.json`; `path` only names it in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let err = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let inner: tokenizers::Tokenizer = text
            .parse()
            .map_err(|e| err(format!("not a valid tokenizer.json: {e}")))?;
        Ok(Self::from_tokenizers(inner, None))
    }

    /// Wraps a tokenizer built in code. `eos` is the end-of-sequence id when the source names one
    /// (a GGUF file does); without it, the first of the usual names is used.
    pub fn from_tokenizers(inner: tokenizers::Tokenizer, eos: Option<u32>) -> Self {
        let eos = eos.or_else(|| {
            EOS_CANDIDATES
                .iter()
                .find_map(|name| inner.token_to_id(name))
        });
        Self { inner, eos }
    }

    /// The end-of-sequence id; an error for a tokenizer that has none of the usual names.
    pub fn eos_id(&self) -> Result<u32> {
        self.eos.ok_or_else(|| {
            ModelError::Invalid(format!(
                "the tokenizer has no end-of-sequence token (looked for {EOS_CANDIDATES:?})"
            ))
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`, without special tokens added around it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with_special(text, false)
    }

    /// Token ids of `text`, with the tokenizer's special tokens (e.g. BOS) when `special`.
    pub fn encode_with_special(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, special)
            .map_err(|e| ModelError::Invalid(format!("cannot tokenize {text:?}: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Token ids of a prompt: `text` with the special tokens the tokenizer puts before a text
    /// (BOS, for models that expect it, such as Gemma and Llama) and none after it (an EOS
    /// would end the sequence before the continuation).
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut with_special = self.encode_with_special(text, true)?;
        let plain = self.encode(text)?;
        if plain.is_empty() {
            // Nothing to find the text by: the specials are all there is; drop trailing EOS.
            while with_special.last().is_some_and(|&id| Some(id) == self.eos) {
                with_special.pop();
            }
            return Ok(with_special);
        }
        let prefix = (0..=with_special.len().saturating_sub(plain.len()))
            .find(|&k| with_special[k..].starts_with(&plain))
            .unwrap_or(0);
        let mut ids = with_special[..prefix].to_vec();
        ids.extend_from_slice(&plain);
        Ok(ids)
    }

    /// The sequence prompt ++ target for scoring and training: the prompt as
    /// [`Self::encode_prompt`] makes it, the target without special tokens; only target tokens
    /// are scored.
    pub fn encode_example(&self, prompt: &str, target: &str) -> Result<Sequence> {
        let mut tokens = self.encode_prompt(prompt)?;
        let prompt_len = tokens.len();
        tokens.extend(self.encode(target)?);
        Ok(Sequence::prompt_and_target(tokens, prompt_len.max(1)))
    }

    /// The text of `ids` (special tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| ModelError::Invalid(format!("cannot decode {ids:?}: {e}")))
    }
}

/// A character-level `tokenizer.json`: one token per character of `texts`, plus `<unk>`, `<eos>`
/// and every string of `whole_tokens` as a single token each (e.g. `<lang=deu>`). A BPE model with
/// no merges and a `Fuse` decoder, so decoding gives back the exact text.
pub fn char_tokenizer_json<'a>(
    texts: impl IntoIterator<Item = &'a str>,
    whole_tokens: &[String],
) -> String {
    let chars: BTreeSet<char> = texts.into_iter().flat_map(|t| t.chars()).collect();
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    let specials = [DEMO_UNK, DEMO_EOS];
    for (i, name) in specials.iter().enumerate() {
        vocab.insert(name.to_string(), json!(i));
        added.push(added_token(i, name, true));
    }
    for c in chars {
        let id = vocab.len();
        vocab.entry(c.to_string()).or_insert(json!(id));
    }
    for name in whole_tokens {
        if !vocab.contains_key(name) {
            let id = vocab.len();
            vocab.insert(name.clone(), json!(id));
            added.push(added_token(id, name, false));
        }
    }
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": { "type": "Fuse" },
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": DEMO_UNK,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": []
        }
    });
    tokenizer.to_string()
}

fn added_token(id: usize, content: &str, special: bool) -> Value {
    json!({
        "id": id,
        "content": content,
        "single_word": false,
        "lstrip": false,
        "rstrip": false,
        "normalized": false,
        "special": special
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_tokenizer() -> Tokenizer {
        let json = char_tokenizer_json(
            ["fünf März", "12 ab"],
            &["<lang=deu>".to_string(), "<task=date>".to_string()],
        );
        Tokenizer::from_json_str(&json, Path::new("test")).unwrap()
    }

    #[test]
    fn char_tokenizer_round_trips_and_keeps_tags_whole() {
        let tok = demo_tokenizer();
        let text = "<lang=deu> fünf März 12";
        let ids = tok.encode(text).unwrap();
        // One id per character, except the tag which is one token.
        assert_eq!(ids.len(), 1 + " fünf März 12".chars().count());
        assert_eq!(ids[0], tok.inner.token_to_id("<lang=deu>").unwrap());
        assert_eq!(tok.decode(&ids).unwrap(), text);
        // The end-of-sequence token is special: decoding drops it.
        let mut with_eos = ids.clone();
        with_eos.push(tok.eos_id().unwrap());
        assert_eq!(tok.decode(&with_eos).unwrap(), text);
    }

    #[test]
    fn unknown_characters_map_to_unk_and_bad_json_is_an_error() {
        let tok = demo_tokenizer();
        let ids = tok.encode("q").unwrap();
        assert_eq!(ids, vec![tok.inner.token_to_id(DEMO_UNK).unwrap()]);
        let err = Tokenizer::from_json_str("{}", Path::new("x/tokenizer.json"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("x/tokenizer.json"), "{err}");
    }
}
