//! Examples against the model's context: a model has positions for `max_position_embeddings`
//! tokens, and a sequence longer than that is outside what it was built for (and, for a giant
//! line, more work and memory than any run can afford). Every command that reads examples decides
//! what to do with an over-long one, explicitly ([`LongExamples`]): `flix train` skips it with a
//! count by default, `flix score` refuses it unless asked to truncate, `flix eval` skips it with a
//! count.
//!
//! The work is bounded before tokenizing: a text of more than [`MAX_BYTES_PER_TOKEN`] bytes per
//! position of the context is over-long without being tokenized (no tokenizer packs that many
//! bytes into a token on average), so a line of a few million characters costs a length check,
//! not minutes of tokenizing.

use std::fmt;
use std::str::FromStr;

use flix_core::Location;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::tokenize::Tokenizer;

/// A text of more bytes than this times the context is over-long without tokenizing it. Generous:
/// tokenizers average a few bytes per token on natural text.
pub const MAX_BYTES_PER_TOKEN: usize = 16;

/// What to do with an example longer than the model's context.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LongExamples {
    /// Leave it out, and count it.
    #[default]
    Skip,
    /// Keep its first context-many tokens (prompt first, then as much target as fits).
    Truncate,
    /// Refuse the data, naming the example's file and line.
    Error,
}

impl FromStr for LongExamples {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "skip" => Ok(Self::Skip),
            "truncate" => Ok(Self::Truncate),
            "error" => Ok(Self::Error),
            other => Err(ModelError::Invalid(format!(
                "long examples: expected skip, truncate or error, found {other:?}"
            ))),
        }
    }
}

impl fmt::Display for LongExamples {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Skip => "skip",
            Self::Truncate => "truncate",
            Self::Error => "error",
        })
    }
}

/// How an over-long example was found out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlength {
    /// It tokenizes to this many tokens.
    Tokens(usize),
    /// Its text has this many bytes, too many to tokenize (see [`MAX_BYTES_PER_TOKEN`]).
    Bytes(usize),
}

impl fmt::Display for Overlength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tokens(n) => write!(f, "{n} tokens"),
            Self::Bytes(n) => write!(
                f,
                "{n} bytes (not tokenized: more than {MAX_BYTES_PER_TOKEN} bytes per position)"
            ),
        }
    }
}

/// The number of positions a sequence may fill: the model's `max_position_embeddings`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContextLimit {
    pub positions: usize,
}

impl ContextLimit {
    pub fn new(positions: usize) -> Self {
        Self { positions }
    }

    /// The most bytes of text that may still fit.
    pub fn byte_bound(self) -> usize {
        self.positions.saturating_mul(MAX_BYTES_PER_TOKEN)
    }

    /// `the model's context of N tokens (max_position_embeddings)`.
    pub fn describe(self) -> String {
        format!(
            "the model's context of {} tokens (max_position_embeddings)",
            self.positions
        )
    }

    /// The error for the example at `location` that does not fit.
    pub fn too_long(self, location: &Location, found: Overlength, what: &str) -> ModelError {
        ModelError::Invalid(format!(
            "{location}: the {what} has {found}, longer than {}",
            self.describe()
        ))
    }
}

/// A prompt and its continuation as tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Prompt tokens, then continuation tokens.
    pub tokens: Vec<u32>,
    /// How many of `tokens` are the prompt (all of them when truncation cut into the prompt).
    pub prompt_len: usize,
    /// Whether tokens past the context were cut off.
    pub truncated: bool,
}

impl Encoded {
    /// Whether any continuation token is left (truncation may leave only the prompt).
    pub fn has_continuation(&self) -> bool {
        self.tokens.len() > self.prompt_len
    }
}

/// A prompt and continuation checked against a context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fit {
    Fits(Encoded),
    TooLong(Overlength),
}

/// `text` cut to at most `max_bytes` bytes, at a character boundary.
pub fn cut_to_bytes(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Tokenizer {
    /// `prompt` as [`Tokenizer::encode_prompt`] makes it, then `continuation` without special
    /// tokens, then `end` (the end-of-sequence token of a training example) when given, checked
    /// against `limit` tokens. Without `truncate`, a longer sequence is [`Fit::TooLong`], and
    /// texts of more than [`ContextLimit::byte_bound`] bytes are not even tokenized. With it, the
    /// texts are first cut to that many bytes and the tokens to `limit`.
    pub fn encode_within(
        &self,
        prompt: &str,
        continuation: &str,
        end: Option<u32>,
        limit: ContextLimit,
        truncate: bool,
    ) -> Result<Fit> {
        let bound = limit.byte_bound();
        let bytes = prompt.len().saturating_add(continuation.len());
        if bytes > bound && !truncate {
            return Ok(Fit::TooLong(Overlength::Bytes(bytes)));
        }
        // Within the bound these cuts change nothing; past it, they keep the tokenizer's work
        // proportional to the context, not to the line.
        let prompt = cut_to_bytes(prompt, bound);
        let continuation = cut_to_bytes(continuation, bound - prompt.len());
        let mut tokens = self.encode_prompt(prompt)?;
        let prompt_len = tokens.len();
        if !continuation.is_empty() {
            tokens.extend(self.encode(continuation)?);
        }
        tokens.extend(end);
        let truncated = tokens.len() > limit.positions || bytes > bound;
        if tokens.len() > limit.positions {
            if !truncate {
                return Ok(Fit::TooLong(Overlength::Tokens(tokens.len())));
            }
            tokens.truncate(limit.positions);
        }
        Ok(Fit::Fits(Encoded {
            prompt_len: prompt_len.min(tokens.len()),
            tokens,
            truncated,
        }))
    }
}

/// The examples a command left out or cut for being longer than the context: how many, and where
/// the first few are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LongReport {
    /// Examples left out.
    pub skipped: usize,
    /// Examples cut to the context.
    pub truncated: usize,
    /// The first few left-out or cut examples.
    pub first: Vec<Location>,
}

/// How many locations a [`LongReport`] keeps.
const SHOWN: usize = 3;

impl LongReport {
    pub fn skip(&mut self, location: &Location) {
        self.skipped += 1;
        self.remember(location);
    }

    pub fn truncate(&mut self, location: &Location) {
        self.truncated += 1;
        self.remember(location);
    }

    fn remember(&mut self, location: &Location) {
        if self.first.len() < SHOWN {
            self.first.push(location.clone());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.skipped == 0 && self.truncated == 0
    }

    /// A sentence for the user (`what`: "training example"), or None when nothing was left out:
    /// `2 training examples are longer than the model's context of 64 tokens
    /// (max_position_embeddings): 1 skipped, 1 truncated (a.jsonl:7, a.jsonl:9)`.
    pub fn note(&self, what: &str, context: ContextLimit) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let mut parts = Vec::new();
        if self.skipped > 0 {
            parts.push(format!("{} skipped", self.skipped));
        }
        if self.truncated > 0 {
            parts.push(format!("{} truncated", self.truncated));
        }
        let total = self.skipped + self.truncated;
        let places: Vec<String> = self.first.iter().map(|l| l.to_string()).collect();
        let more = if total > self.first.len() {
            ", ..."
        } else {
            ""
        };
        let (plural, verb) = if total == 1 { ("", "is") } else { ("s", "are") };
        Some(format!(
            "{total} {what}{plural} {verb} longer than {}: {} ({}{more})",
            context.describe(),
            parts.join(", "),
            places.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::tokenize::char_tokenizer_json;

    fn tokenizer() -> Tokenizer {
        let json = char_tokenizer_json(["abcdefghij =é"], &[]);
        Tokenizer::from_json_str(&json, Path::new("t")).unwrap()
    }

    #[test]
    fn policies_parse_and_print_back() {
        for p in [
            LongExamples::Skip,
            LongExamples::Truncate,
            LongExamples::Error,
        ] {
            assert_eq!(p.to_string().parse::<LongExamples>().unwrap(), p);
        }
        let err = "drop".parse::<LongExamples>().unwrap_err().to_string();
        assert!(
            err.contains("skip, truncate or error") && err.contains("drop"),
            "{err}"
        );
    }

    #[test]
    fn a_giant_text_is_too_long_without_tokenizing_and_truncates_quickly() {
        let tok = tokenizer();
        let context = ContextLimit::new(8);
        // Ten million characters: tokenizing them char by char would take a long time.
        let giant = "a".repeat(10_000_000);
        let start = std::time::Instant::now();
        let fit = tok
            .encode_within("ab", &giant, None, context, false)
            .unwrap();
        assert_eq!(fit, Fit::TooLong(Overlength::Bytes(10_000_002)));
        let Fit::Fits(cut) = tok
            .encode_within("ab", &giant, None, context, true)
            .unwrap()
        else {
            panic!("truncation always fits");
        };
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
        assert_eq!(cut.tokens.len(), 8);
        assert_eq!(cut.prompt_len, 2);
        assert!(cut.truncated && cut.has_continuation());
    }

    #[test]
    fn cut_to_bytes_keeps_whole_characters() {
        assert_eq!(cut_to_bytes("aéb", 2), "a");
        assert_eq!(cut_to_bytes("aéb", 3), "aé");
        assert_eq!(cut_to_bytes("ab", 9), "ab");
    }

    #[test]
    fn the_report_counts_and_names_the_first_places() {
        let mut report = LongReport::default();
        let context = ContextLimit::new(64);
        assert_eq!(report.note("example", context), None);
        for line in 1..=5 {
            report.skip(&Location {
                file: Arc::from(Path::new("d.jsonl")),
                line,
            });
        }
        let note = report.note("training example", context).unwrap();
        assert_eq!(
            note,
            "5 training examples are longer than the model's context of 64 tokens \
             (max_position_embeddings): 5 skipped (d.jsonl:1, d.jsonl:2, d.jsonl:3, ...)"
        );
    }

    proptest! {
        /// Against a plain oracle (the char tokenizer gives one token per character, plus the
        /// end token): an example fits exactly when its length is within the limit; without
        /// truncation a longer one is too long; truncation keeps the first `limit` tokens.
        #[test]
        fn fits_exactly_when_the_tokens_are_within_the_limit(
            prompt in "[a-j =]{0,40}",
            target in "[a-jé]{0,40}",
            limit in 1usize..50,
            with_end in any::<bool>(),
        ) {
            let tok = tokenizer();
            let end = with_end.then(|| tok.eos_id().unwrap());
            let full: Vec<u32> = tok
                .encode_prompt(&prompt)
                .unwrap()
                .into_iter()
                .chain(tok.encode(&target).unwrap())
                .chain(end)
                .collect();
            let context = ContextLimit::new(limit);
            match tok.encode_within(&prompt, &target, end, context, false).unwrap() {
                Fit::Fits(e) => {
                    prop_assert!(full.len() <= limit);
                    prop_assert_eq!(&e.tokens, &full);
                    prop_assert!(!e.truncated);
                }
                Fit::TooLong(Overlength::Tokens(n)) => {
                    prop_assert!(full.len() > limit);
                    prop_assert_eq!(n, full.len());
                }
                Fit::TooLong(Overlength::Bytes(n)) => {
                    prop_assert!(n > limit * MAX_BYTES_PER_TOKEN);
                }
            }
            let Fit::Fits(cut) = tok.encode_within(&prompt, &target, end, context, true).unwrap()
            else {
                panic!("truncation always fits");
            };
            prop_assert_eq!(&cut.tokens[..], &full[..full.len().min(limit)]);
            prop_assert_eq!(cut.truncated, full.len() > limit);
            prop_assert!(cut.prompt_len <= cut.tokens.len());
        }
    }
}
