//! The text of one choice as its tokens arrive: decoded exactly as `flix generate` prints it (the
//! new tokens without the end-of-sequence token), cut at the first stop string, and released in
//! pieces for streaming that concatenate to that same text. When the request asked for
//! log-probabilities, each token's entry (its text, where that starts, its log-probability and
//! the alternatives') is released with the piece its text starts in.

use flix_model::{TokenLogprobs, Tokenizer};

/// Why a choice ended, as the decoder or a stop string decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// End-of-sequence token or a stop string: OpenAI's "stop".
    Stop,
    /// `max_tokens` reached: "length".
    Length,
    /// The server shut down first: what was generated until then (finish_reason null).
    Cut,
}

impl Ending {
    pub fn finish_reason(self) -> Option<&'static str> {
        match self {
            Ending::Stop => Some("stop"),
            Ending::Length => Some("length"),
            Ending::Cut => None,
        }
    }
}

/// One generated token as the `logprobs` of a choice report it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEntry {
    /// What the token adds to the text: the decoding of the tokens up to it, less the decoding
    /// of those before (so the entries' texts concatenate to the choice's text, up to a cut).
    pub text: String,
    /// Where that starts in the choice's text, in bytes.
    pub offset: usize,
    /// The same in characters (Unicode scalar values), as OpenAI's `text_offset` counts.
    pub char_offset: usize,
    pub logprob: f32,
    /// The most likely tokens at this step (their texts as this token's), most likely first.
    pub top: Vec<(String, f32)>,
}

/// What a token released: the next piece of text and the entries of the tokens it starts.
#[derive(Debug, Default, PartialEq)]
pub struct Released {
    pub text: String,
    pub entries: Vec<TokenEntry>,
}

/// One choice's tokens and the text already released.
#[derive(Debug)]
pub struct ChoiceText {
    stop: Vec<String>,
    tokens: Vec<u32>,
    /// One per token of `tokens` when log-probabilities were asked for.
    entries: Vec<TokenEntry>,
    /// How many of `entries` have been released.
    entries_released: usize,
    /// Every token the model generated for this choice, the end-of-sequence token included.
    pub generated: usize,
    /// The text as of the last token (cut at a stop string once one matched).
    text: String,
    /// How much of `text` has been released (a byte offset on a char boundary).
    released: usize,
    pub ending: Option<Ending>,
}

impl ChoiceText {
    pub fn new(stop: Vec<String>) -> Self {
        Self {
            stop,
            tokens: Vec::new(),
            entries: Vec::new(),
            entries_released: 0,
            generated: 0,
            text: String::new(),
            released: 0,
            ending: None,
        }
    }

    /// Takes the next token, with its log-probabilities when they were asked for; `last` is the
    /// decoder's ending when it was the sequence's last (with `is_eos`, the end-of-sequence
    /// token, which is not part of the text and gets no entry). Returns what is now safe to
    /// release. Tokens after the choice ended are ignored.
    pub fn push(
        &mut self,
        tokenizer: &Tokenizer,
        token: u32,
        is_eos: bool,
        last: Option<Ending>,
        logprobs: Option<&TokenLogprobs>,
    ) -> Result<Released, String> {
        if self.ending.is_some() {
            return Ok(Released::default());
        }
        self.generated += 1;
        let decode = |tokens: &[u32]| {
            tokenizer
                .decode(tokens)
                .map_err(|e| format!("decoding the completion: {e}"))
        };
        let before = std::mem::take(&mut self.text);
        if !(is_eos && last.is_some()) {
            self.tokens.push(token);
            if let Some(logprobs) = logprobs {
                let (offset, text) = addition(&before, decode(&self.tokens)?);
                let earlier = &self.tokens[..self.tokens.len() - 1];
                let mut top = Vec::with_capacity(logprobs.top.len());
                for &(alternative, logprob) in &logprobs.top {
                    let with = decode(&[earlier, &[alternative]].concat())?;
                    top.push((addition(&before, with).1, logprob));
                }
                self.entries.push(TokenEntry {
                    char_offset: before[..offset].chars().count(),
                    text,
                    offset,
                    logprob: logprobs.logprob,
                    top,
                });
            }
        }
        self.text = decode(&self.tokens)?;
        if let Some(cut) = first_stop(&self.text, &self.stop) {
            self.text.truncate(cut);
            self.ending = Some(Ending::Stop);
        } else {
            self.ending = last;
        }
        Ok(self.release())
    }

    /// Ends the choice where it stands (shutdown); returns the rest of its text.
    pub fn cut(&mut self) -> Released {
        if self.ending.is_none() {
            self.ending = Some(Ending::Cut);
        }
        self.release()
    }

    /// The whole text (final once `ending` is set).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Every entry of the choice's tokens (empty unless log-probabilities were asked for): those
    /// whose text starts inside the final text, once the choice has ended.
    pub fn entries(&self) -> &[TokenEntry] {
        &self.entries[..self.entries_released]
    }

    /// The text from `released` to what is safe, with the entries of the tokens whose text starts
    /// in what has been released. All of it once the choice ended (entries of tokens whose text
    /// starts past its end, inside a cut stop string, are dropped); before that, nothing that a
    /// later token could still change (a trailing replacement character: an incomplete UTF-8
    /// sequence to a byte-level tokenizer) or complete into a stop string.
    fn release(&mut self) -> Released {
        let text = self.release_text();
        let mut entries = Vec::new();
        while let Some(entry) = self.entries.get(self.entries_released) {
            if entry.offset >= self.released {
                break;
            }
            entries.push(entry.clone());
            self.entries_released += 1;
        }
        if self.ending.is_some() {
            self.entries.truncate(self.entries_released);
        }
        Released { text, entries }
    }

    fn release_text(&mut self) -> String {
        let end = if self.ending.is_some() {
            self.text.len()
        } else {
            let settled = self.text.trim_end_matches('\u{FFFD}').len();
            settled - longest_stop_prefix_suffix(&self.text[..settled], &self.stop)
        };
        // A tokenizer whose decoding of a longer list does not extend the shorter one (rare:
        // cleanup of spaces) may change released text; nothing can be taken back, so wait.
        if end <= self.released
            || !self.text.is_char_boundary(self.released)
            || !self.text.is_char_boundary(end)
        {
            return String::new();
        }
        let piece = self.text[self.released..end].to_string();
        self.released = end;
        piece
    }
}

/// Where `after` stops agreeing with `before` (a byte offset on a char boundary) and what `after`
/// holds from there: what a token added to the text. Usually `before` is a prefix of `after`; when
/// the token completed a character `before` ended in a replacement character for, the addition
/// starts where that character did.
fn addition(before: &str, after: String) -> (usize, String) {
    let common = before
        .char_indices()
        .zip(after.chars())
        .find(|((_, a), b)| a != b)
        .map_or(before.len().min(after.len()), |((i, _), _)| i);
    // `common` is a char boundary of `before`, and the same chars precede it in `after`.
    (common, after[common..].to_string())
}

/// The byte offset of the earliest stop string in `text`.
fn first_stop(text: &str, stop: &[String]) -> Option<usize> {
    stop.iter().filter_map(|s| text.find(s.as_str())).min()
}

/// The length of the longest end of `text` that is a proper start of some stop string: text that
/// a next token could complete into a stop, so it must not be released yet.
fn longest_stop_prefix_suffix(text: &str, stop: &[String]) -> usize {
    let mut longest = 0;
    for s in stop {
        for (i, _) in s.char_indices().skip(1) {
            if i > longest && text.ends_with(&s[..i]) {
                longest = i;
            }
        }
    }
    longest
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use flix_model::tokenize::char_tokenizer_json;

    use super::*;

    /// Feeds `text` one character token at a time (then EOS); returns the streamed pieces and the
    /// choice.
    fn feed(text: &str, stop: &[&str], end: Ending) -> (Vec<String>, ChoiceText) {
        let tokenizer =
            Tokenizer::from_json_str(&char_tokenizer_json([text], &[]), Path::new("t")).unwrap();
        let eos = tokenizer.eos_id().unwrap();
        let mut tokens = tokenizer.encode(text).unwrap();
        if end == Ending::Stop {
            tokens.push(eos);
        }
        let mut choice = ChoiceText::new(stop.iter().map(|s| s.to_string()).collect());
        let mut pieces = Vec::new();
        for (i, &token) in tokens.iter().enumerate() {
            let last = (i + 1 == tokens.len()).then_some(end);
            let released = choice.push(&tokenizer, token, token == eos, last, None);
            pieces.push(released.unwrap().text);
        }
        (pieces, choice)
    }

    #[test]
    fn pieces_concatenate_to_the_text_cut_at_the_first_stop() {
        let text = "one two; three END four";
        for (stop, want, ending) in [
            (vec![], text, Ending::Stop),
            (vec!["END"], "one two; three ", Ending::Stop),
            (vec!["three", ";"], "one two", Ending::Stop),
            (vec!["EN", "t"], "one ", Ending::Stop),
            (vec!["absent"], text, Ending::Length),
        ] {
            let natural = if stop.is_empty() {
                Ending::Stop
            } else {
                ending
            };
            let (pieces, choice) = feed(text, &stop, natural);
            assert_eq!(choice.text(), want, "{stop:?}");
            assert_eq!(pieces.concat(), want, "{stop:?}");
            assert_eq!(choice.ending, Some(ending), "{stop:?}");
            // Text is released as it comes: the first piece is out before the end.
            assert!(!pieces[0].is_empty(), "{stop:?}: {pieces:?}");
        }
    }

    #[test]
    fn a_possible_stop_start_is_held_back_until_decided() {
        let (pieces, choice) = feed("ab Xc", &["XY"], Ending::Length);
        // "X" could begin "XY": released only once "c" shows it does not.
        assert_eq!(pieces, ["a", "b", " ", "", "Xc"]);
        assert_eq!(choice.text(), "ab Xc");
    }

    #[test]
    fn a_cut_releases_what_is_left() {
        let tokenizer =
            Tokenizer::from_json_str(&char_tokenizer_json(["abX"], &[]), Path::new("t")).unwrap();
        let mut choice = ChoiceText::new(vec!["XY".into()]);
        let mut streamed = String::new();
        for token in tokenizer.encode("abX").unwrap() {
            streamed += &choice
                .push(&tokenizer, token, false, None, None)
                .unwrap()
                .text;
        }
        assert_eq!(streamed, "ab");
        streamed += &choice.cut().text;
        assert_eq!(streamed, "abX");
        assert_eq!(choice.ending, Some(Ending::Cut));
        assert_eq!(Ending::Cut.finish_reason(), None);
    }

    /// With log-probabilities: one entry per token, released with the piece its text starts in;
    /// the entries' texts and offsets rebuild the text; a stop string drops the entries of the
    /// tokens inside it, and the end-of-sequence token has none.
    #[test]
    fn token_entries_follow_the_released_text() {
        let text = "ab XY cd";
        let tokenizer =
            Tokenizer::from_json_str(&char_tokenizer_json([text], &[]), Path::new("t")).unwrap();
        let eos = tokenizer.eos_id().unwrap();
        for (stop, want_text) in [(vec![], text), (vec!["XY".to_string()], "ab ")] {
            let mut choice = ChoiceText::new(stop.clone());
            let mut tokens = tokenizer.encode(text).unwrap();
            tokens.push(eos);
            let (mut streamed, mut entries) = (String::new(), Vec::new());
            for (i, &token) in tokens.iter().enumerate() {
                let last = (i + 1 == tokens.len()).then_some(Ending::Stop);
                let logprobs = TokenLogprobs {
                    logprob: -(i as f32),
                    top: vec![(token, -(i as f32)), (tokens[0], -9.0)],
                };
                let released = choice
                    .push(&tokenizer, token, token == eos, last, Some(&logprobs))
                    .unwrap();
                for entry in &released.entries {
                    // An entry goes out with (or after) the text it starts in.
                    assert!(entry.offset < streamed.len() + released.text.len());
                }
                streamed += &released.text;
                entries.extend(released.entries);
                if choice.ending.is_some() {
                    break;
                }
            }
            assert_eq!(streamed, want_text, "{stop:?}");
            assert_eq!(entries, choice.entries(), "{stop:?}");
            let rebuilt: String = entries.iter().map(|e| e.text.as_str()).collect();
            assert_eq!(rebuilt, want_text, "{stop:?}: one character per token here");
            for (i, entry) in entries.iter().enumerate() {
                assert_eq!((entry.offset, entry.char_offset), (i, i));
                assert_eq!(entry.logprob, -(i as f32));
                assert_eq!(entry.top[0], (entry.text.clone(), -(i as f32)));
                assert_eq!(entry.top[1], ("a".to_string(), -9.0));
            }
        }
    }

    #[test]
    fn additions_start_where_the_texts_part() {
        assert_eq!(addition("ab", "abc".into()), (2, "c".into()));
        assert_eq!(addition("", "x".into()), (0, "x".into()));
        // A character completed by the token: the addition starts where its stand-in did.
        assert_eq!(addition("a€\u{FFFD}", "a€é".into()), (4, "é".into()));
        assert_eq!(addition("abc", "ab".into()), (2, "".into()));
    }

    #[test]
    fn stop_prefixes_are_held_back() {
        let stops = vec!["END".to_string(), "\n\n".to_string()];
        assert_eq!(longest_stop_prefix_suffix("abc EN", &stops), 2);
        assert_eq!(longest_stop_prefix_suffix("abc E", &stops), 1);
        assert_eq!(longest_stop_prefix_suffix("abc\n", &stops), 1);
        assert_eq!(longest_stop_prefix_suffix("abc", &stops), 0);
        // A complete stop string is not a proper prefix: the caller has cut it already.
        assert_eq!(longest_stop_prefix_suffix("xEND", &["END".to_string()]), 0);
        assert_eq!(first_stop("a END b \n\n", &stops), Some(2));
        assert_eq!(first_stop("a b", &stops), None);
    }
}
