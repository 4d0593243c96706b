//! The text of one choice as its tokens arrive: decoded exactly as `flix generate` prints it (the
//! new tokens without the end-of-sequence token), cut at the first stop string, and released in
//! pieces for streaming that concatenate to that same text. When the request asked for
//! log-probabilities, each token's entry (its text, where that starts, its log-probability and
//! the alternatives') is released with the piece that completes its text.

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

/// One token as the `logprobs` of a choice report it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEntry {
    /// What the token adds to the text: the decoding of the tokens up to it, less the decoding
    /// of those before (so the entries' texts concatenate to the choice's text, up to a cut).
    pub text: String,
    /// Where that starts in the completion's text, in bytes (prompt tokens: in the prompt's).
    pub offset: usize,
    /// Where that starts in the choice's text (the echoed prompt included), in characters
    /// (Unicode scalar values), as OpenAI's `text_offset` counts.
    pub char_offset: usize,
    /// None for the first prompt token, which nothing predicts.
    pub logprob: Option<f32>,
    /// The most likely tokens at this step (their texts as this token's), most likely first.
    pub top: Vec<(String, f32)>,
}

/// What a token released: the next piece of text and the entries of the tokens it starts.
#[derive(Debug, Default, PartialEq)]
pub struct Released {
    pub text: String,
    pub entries: Vec<TokenEntry>,
}

/// The prompt a choice echoes before its completion (`echo`).
#[derive(Debug)]
struct Echo {
    tokens: Vec<u32>,
    /// The prompt's tokens decoded: what the choice's text starts with.
    text: String,
    /// What each token adds to `text` ([`emitted_pieces`]), when log-probabilities are asked.
    pieces: Vec<String>,
    /// Its entries, once the first token brought the prompt's log-probabilities.
    entries: Vec<TokenEntry>,
    released: bool,
}

/// One choice's tokens and the text already released.
#[derive(Debug)]
pub struct ChoiceText {
    stop: Vec<String>,
    echo: Option<Echo>,
    /// False for `max_tokens` 0: the decoder's one token is dropped, only the prompt is echoed.
    keep_completion: bool,
    tokens: Vec<u32>,
    /// One per generated token when log-probabilities were asked for.
    entries: Vec<TokenEntry>,
    /// How many of `entries` have been released.
    entries_released: usize,
    /// Every token the model generated for this choice, the end-of-sequence token included.
    pub generated: usize,
    /// The completion's text as of the last token (cut at a stop string once one matched).
    text: String,
    /// A stop string cut `text`.
    stopped: bool,
    /// The entries' texts so far, concatenated.
    emitted: String,
    /// How much of `text` has been released (a byte offset on a char boundary).
    released: usize,
    pub ending: Option<Ending>,
}

impl ChoiceText {
    pub fn new(stop: Vec<String>) -> Self {
        Self {
            stop,
            echo: None,
            keep_completion: true,
            tokens: Vec::new(),
            entries: Vec::new(),
            entries_released: 0,
            generated: 0,
            text: String::new(),
            stopped: false,
            emitted: String::new(),
            released: 0,
            ending: None,
        }
    }

    /// The choice's text starts with the prompt `prompt_tokens`, decoded; `with_logprobs`: its
    /// tokens get entries too (this decodes every prefix of the prompt: a long prompt takes a
    /// while, so call it off the threads that serve requests).
    pub fn echoing(
        mut self,
        tokenizer: &Tokenizer,
        prompt_tokens: &[u32],
        with_logprobs: bool,
    ) -> Result<Self, String> {
        let text = decode_with(tokenizer, prompt_tokens)?;
        let pieces = match with_logprobs {
            true => emitted_pieces(tokenizer, prompt_tokens, &text)?,
            false => Vec::new(),
        };
        self.echo = Some(Echo {
            tokens: prompt_tokens.to_vec(),
            text,
            pieces,
            entries: Vec::new(),
            released: false,
        });
        Ok(self)
    }

    /// The completion is dropped (`max_tokens` 0 with `echo`): the choice is its prompt only.
    pub fn without_completion(mut self) -> Self {
        self.keep_completion = false;
        self
    }

    /// Takes the next token, with its log-probabilities when they were asked for (and, on the
    /// first token of an echoing choice, the prompt's); `last` is the decoder's ending when it
    /// was the sequence's last (with `is_eos`, the end-of-sequence token, which adds nothing to
    /// the text). Returns what is now safe to release. Tokens after the choice ended are ignored.
    pub fn push(
        &mut self,
        tokenizer: &Tokenizer,
        token: u32,
        is_eos: bool,
        last: Option<Ending>,
        logprobs: Option<&TokenLogprobs>,
        prompt_logprobs: &[TokenLogprobs],
    ) -> Result<Released, String> {
        if self.ending.is_some() {
            return Ok(Released::default());
        }
        if let (Some(echo), Some(_)) = (&mut self.echo, logprobs) {
            if echo.entries.is_empty() {
                echo.entries = prompt_entries(tokenizer, echo, prompt_logprobs)?;
            }
        }
        if !self.keep_completion {
            self.ending = Some(Ending::Length);
            return Ok(self.release());
        }
        self.generated += 1;
        let before = std::mem::take(&mut self.text);
        // The end-of-sequence token adds nothing to the text.
        let ends_here = is_eos && last.is_some();
        if !ends_here {
            self.tokens.push(token);
        }
        let now = match ends_here {
            true => before.clone(),
            false => decode_with(tokenizer, &self.tokens)?,
        };
        if let Some(logprobs) = logprobs {
            let earlier = &self.tokens[..self.tokens.len() - usize::from(!ends_here)];
            let now_settled = if last.is_some() {
                &now[..]
            } else {
                settled(&now)
            };
            let text = emission(&self.emitted, now_settled).to_string();
            let top = alternatives(tokenizer, earlier, logprobs)?;
            self.entries.push(TokenEntry {
                char_offset: self.echo_chars() + self.emitted.chars().count(),
                offset: self.emitted.len(),
                text: text.clone(),
                logprob: Some(logprobs.logprob),
                top,
            });
            self.emitted.push_str(&text);
        }
        self.text = now;
        if let Some(cut) = first_stop(&self.text, &self.stop) {
            self.text.truncate(cut);
            self.stopped = true;
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

    /// The whole text, the echoed prompt first (final once `ending` is set).
    pub fn text(&self) -> String {
        match &self.echo {
            Some(echo) => format!("{}{}", echo.text, self.text),
            None => self.text.clone(),
        }
    }

    /// Every entry released so far (empty unless log-probabilities were asked for): the echoed
    /// prompt's, then the completion's; once the choice has ended, all of them (cut with the text
    /// at a stop string, those inside it dropped).
    pub fn entries(&self) -> Vec<TokenEntry> {
        let echoed = self
            .echo
            .as_ref()
            .filter(|e| e.released)
            .map_or(&[][..], |e| &e.entries[..]);
        [echoed, &self.entries[..self.entries_released]].concat()
    }

    fn echo_chars(&self) -> usize {
        self.echo.as_ref().map_or(0, |e| e.text.chars().count())
    }

    /// The text from `released` to what is safe, with the entries of the tokens whose text has
    /// been released, the echoed prompt and its entries first. All of it once the choice ended
    /// (the entries cut with the text at a stop string, those starting inside it dropped);
    /// before that, nothing that a later token could still change (a trailing replacement
    /// character: an incomplete UTF-8 sequence to a byte-level tokenizer) or complete into a
    /// stop string.
    fn release(&mut self) -> Released {
        let mut out = Released::default();
        if let Some(echo) = self.echo.as_mut().filter(|e| !e.released) {
            echo.released = true;
            out.text.push_str(&echo.text);
            out.entries.extend(echo.entries.iter().cloned());
        }
        out.text.push_str(&self.release_text());
        let ended = self.ending.is_some();
        // The released text never reaches a stop string's start, so an entry whose text has all
        // been released is final; at the end, one a stop string cuts is cut with the text.
        let cut = self.stopped.then_some(self.text.len());
        while let Some(entry) = self.entries.get_mut(self.entries_released) {
            let ready = match (ended, cut) {
                (false, _) => entry.offset + entry.text.len() <= self.released,
                (true, None) => true,
                (true, Some(cut)) => entry.offset < cut,
            };
            if !ready {
                break;
            }
            if let Some(cut) = cut.filter(|&cut| entry.offset + entry.text.len() > cut) {
                entry.text.truncate(cut - entry.offset);
            }
            out.entries.push(entry.clone());
            self.entries_released += 1;
        }
        if ended {
            self.entries.truncate(self.entries_released);
        }
        out
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

fn decode_with(tokenizer: &Tokenizer, tokens: &[u32]) -> Result<String, String> {
    tokenizer
        .decode(tokens)
        .map_err(|e| format!("decoding the completion: {e}"))
}

/// Tokens of context that decide what an alternative token would have added to a text: enough
/// for any character (at most 4 byte tokens) and for a tokenizer's merging of spaces.
const PIECE_CONTEXT: usize = 8;

/// `text` without the replacement characters at its end: what a byte-level tokenizer shows for
/// a character whose bytes have not all arrived yet.
fn settled(text: &str) -> &str {
    text.trim_end_matches('\u{FFFD}')
}

/// What a token adds to the entries' texts: the part of the text decoded with it that follows
/// what they already hold, or nothing while the decoding disagrees with that (a byte-fallback
/// tokenizer shows a whole run of byte tokens as replacement characters until it is valid
/// again), so that the entries' texts only ever grow into the decoded text.
fn emission<'a>(emitted: &str, now: &'a str) -> &'a str {
    now.strip_prefix(emitted).unwrap_or_default()
}

/// What each of `tokens` adds to `text`, their decoding: by [`emission`] over the decoding of
/// every prefix, the last token adding whatever is left, so the pieces concatenate to `text`.
fn emitted_pieces(
    tokenizer: &Tokenizer,
    tokens: &[u32],
    text: &str,
) -> Result<Vec<String>, String> {
    let mut emitted = String::new();
    let mut pieces = Vec::with_capacity(tokens.len());
    for j in 0..tokens.len() {
        let piece = if j + 1 == tokens.len() {
            emission(&emitted, text).to_string()
        } else {
            let now = decode_with(tokenizer, &tokens[..=j])?;
            // Only what the whole text keeps counts: a prefix that a later token changes waits.
            let kept = common_prefix(settled(&now), text);
            emission(&emitted, kept).to_string()
        };
        emitted.push_str(&piece);
        pieces.push(piece);
    }
    Ok(pieces)
}

/// The longest common prefix of `a` and `b` (on a char boundary).
fn common_prefix<'a>(a: &'a str, b: &str) -> &'a str {
    let end = a
        .char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i);
    &a[..end]
}

/// What `token` would have added after `context`, judged from the last [`PIECE_CONTEXT`]
/// tokens of it.
fn piece(tokenizer: &Tokenizer, context: &[u32], token: u32) -> Result<String, String> {
    let window = &context[context.len().saturating_sub(PIECE_CONTEXT)..];
    let before = decode_with(tokenizer, window)?;
    let after = decode_with(tokenizer, &[window, &[token]].concat())?;
    // The same characters precede this char boundary in both texts.
    let common = common_prefix(settled(&before), &after).len();
    Ok(after[common..].to_string())
}

/// The alternatives of `logprobs` with the texts they would have added after `context`.
fn alternatives(
    tokenizer: &Tokenizer,
    context: &[u32],
    logprobs: &TokenLogprobs,
) -> Result<Vec<(String, f32)>, String> {
    logprobs
        .top
        .iter()
        .map(|&(token, logprob)| Ok((piece(tokenizer, context, token)?, logprob)))
        .collect()
}

/// The entries of an echoed prompt from its pieces: `logprobs[j - 1]` (the prefill's) is token
/// j's log-probability, and the first token has none.
fn prompt_entries(
    tokenizer: &Tokenizer,
    echo: &Echo,
    logprobs: &[TokenLogprobs],
) -> Result<Vec<TokenEntry>, String> {
    let mut entries = Vec::with_capacity(echo.tokens.len());
    let (mut offset, mut char_offset) = (0, 0);
    for (j, text) in echo.pieces.iter().enumerate() {
        let (logprob, top) = match j.checked_sub(1).and_then(|i| logprobs.get(i)) {
            Some(lp) => (
                Some(lp.logprob),
                alternatives(tokenizer, &echo.tokens[..j], lp)?,
            ),
            None => (None, Vec::new()),
        };
        entries.push(TokenEntry {
            text: text.clone(),
            offset,
            char_offset,
            logprob,
            top,
        });
        offset += text.len();
        char_offset += text.chars().count();
    }
    Ok(entries)
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
            let released = choice.push(&tokenizer, token, token == eos, last, None, &[]);
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
                .push(&tokenizer, token, false, None, None, &[])
                .unwrap()
                .text;
        }
        assert_eq!(streamed, "ab");
        streamed += &choice.cut().text;
        assert_eq!(streamed, "abX");
        assert_eq!(choice.ending, Some(Ending::Cut));
        assert_eq!(Ending::Cut.finish_reason(), None);
    }

    /// With log-probabilities: one entry per token, released with the piece that completes its text;
    /// the entries' texts and offsets rebuild the text; a stop string drops the entries of the
    /// tokens inside it; the end-of-sequence token's entry adds no text.
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
                    .push(&tokenizer, token, token == eos, last, Some(&logprobs), &[])
                    .unwrap();
                for entry in &released.entries {
                    // An entry goes out with (or after) the last of its text.
                    let end = streamed.len() + released.text.len();
                    assert!(entry.offset + entry.text.len() <= end);
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
                assert_eq!(entry.logprob, Some(-(i as f32)));
                assert_eq!(entry.top[0], (entry.text.clone(), -(i as f32)));
                assert_eq!(entry.top[1], ("a".to_string(), -9.0));
            }
        }
    }

    /// An echoing choice releases its prompt first, with the prompt tokens' entries (the first
    /// without a log-probability) before the completion's, whose offsets count the prompt; with
    /// `max_tokens` 0 the completion is dropped.
    #[test]
    fn echo_comes_first_and_max_tokens_zero_keeps_only_the_prompt() {
        let tokenizer =
            Tokenizer::from_json_str(&char_tokenizer_json(["ab =xy"], &[]), Path::new("t"))
                .unwrap();
        let prompt = tokenizer.encode("ab =").unwrap();
        let completion = tokenizer.encode("xy").unwrap();
        let lp = |logprob: f32| TokenLogprobs {
            logprob,
            top: vec![(completion[0], -0.5)],
        };
        let prompt_logprobs: Vec<TokenLogprobs> =
            (1..prompt.len()).map(|j| lp(-(j as f32))).collect();
        for keep in [true, false] {
            let mut choice = ChoiceText::new(vec![])
                .echoing(&tokenizer, &prompt, true)
                .unwrap();
            if !keep {
                choice = choice.without_completion();
            }
            let mut streamed = Released::default();
            for (i, &token) in completion.iter().enumerate() {
                let last = (i + 1 == completion.len()).then_some(Ending::Length);
                let first = if i == 0 { &prompt_logprobs[..] } else { &[] };
                let r = choice
                    .push(&tokenizer, token, false, last, Some(&lp(-9.0)), first)
                    .unwrap();
                streamed.text += &r.text;
                streamed.entries.extend(r.entries);
            }
            let want = if keep { "ab =xy" } else { "ab =" };
            assert_eq!(
                (streamed.text.as_str(), choice.text().as_str()),
                (want, want)
            );
            assert_eq!(streamed.entries, choice.entries());
            let texts: Vec<&str> = streamed.entries.iter().map(|e| e.text.as_str()).collect();
            let logprobs: Vec<Option<f32>> = streamed.entries.iter().map(|e| e.logprob).collect();
            let offsets: Vec<usize> = streamed.entries.iter().map(|e| e.char_offset).collect();
            if keep {
                assert_eq!(texts, ["a", "b", " ", "=", "x", "y"]);
                assert_eq!(offsets, [0, 1, 2, 3, 4, 5]);
                assert_eq!(logprobs[..4], [None, Some(-1.0), Some(-2.0), Some(-3.0)]);
                assert_eq!(logprobs[4..], [Some(-9.0), Some(-9.0)]);
                assert_eq!(choice.generated, 2);
            } else {
                assert_eq!(texts, ["a", "b", " ", "="]);
                assert_eq!(choice.generated, 0);
            }
            assert!(streamed.entries[0].top.is_empty());
            assert_eq!(streamed.entries[1].top, [("x".to_string(), -0.5)]);
            assert_eq!(choice.ending, Some(Ending::Length));
        }
    }

    /// A SentencePiece vocabulary with byte fallback (Gemma's kind): characters spelled in byte
    /// tokens are added by the token that completes them, so the entries' texts still rebuild
    /// the text, echoed prompt and completion alike.
    #[test]
    fn entries_rebuild_text_spelled_in_byte_tokens() {
        let gguf = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../flix-model/tests/fixtures/gguf/tiny-gemma3-text.gguf");
        let tokenizer = Tokenizer::load(&gguf).unwrap();
        let text = "héllo wörld ünïcode € ✓ 東京";
        let tokens = tokenizer.encode(text).unwrap();
        assert!(
            tokens.len() > text.split(' ').count() + 8,
            "the fixture spells some characters in bytes: {tokens:?}"
        );
        let lp = TokenLogprobs {
            logprob: -1.0,
            top: vec![(tokens[0], -1.0)],
        };
        let prompt_logprobs = vec![lp.clone(); tokens.len() - 1];
        let mut choice = ChoiceText::new(vec![])
            .echoing(&tokenizer, &tokens, true)
            .unwrap();
        let mut entries = Vec::new();
        for (i, &token) in tokens.iter().enumerate() {
            let last = (i + 1 == tokens.len()).then_some(Ending::Length);
            let first = if i == 0 { &prompt_logprobs[..] } else { &[] };
            let released = choice
                .push(&tokenizer, token, false, last, Some(&lp), first)
                .unwrap();
            entries.extend(released.entries);
        }
        let full = choice.text();
        assert_eq!(full, format!("{text}{text}"));
        assert_eq!(entries.len(), 2 * tokens.len());
        let rebuilt: String = entries.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(rebuilt, full);
        let mut at = 0;
        for entry in &entries {
            assert_eq!(entry.char_offset, at, "{entries:?}");
            at += entry.text.chars().count();
        }
    }

    /// A stop string inside a token's text cuts that token's entry with the text, in a whole
    /// answer and in a stream alike (a BPE vocabulary, whose tokens span several characters).
    #[test]
    fn a_stop_string_cuts_the_entry_it_falls_in() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../flix-model/tests/fixtures/tiny-llama");
        let tokenizer = Tokenizer::load(&dir).unwrap();
        let text = "the quick brown fox jumps over the lazy dog";
        let tokens = tokenizer.encode(text).unwrap();
        let full = tokenizer.decode(&tokens).unwrap();
        let lp = TokenLogprobs {
            logprob: -1.0,
            top: vec![],
        };
        for stop in ["ick", "own f", "o", "dog"] {
            let want = &full[..full.find(stop).unwrap()];
            let mut choice = ChoiceText::new(vec![stop.to_string()]);
            let mut streamed = Released::default();
            for (i, &token) in tokens.iter().enumerate() {
                let last = (i + 1 == tokens.len()).then_some(Ending::Length);
                let r = choice
                    .push(&tokenizer, token, false, last, Some(&lp), &[])
                    .unwrap();
                streamed.text += &r.text;
                streamed.entries.extend(r.entries);
                if choice.ending.is_some() {
                    break;
                }
            }
            assert_eq!(choice.text(), want, "{stop:?}");
            assert_eq!(streamed.text, want, "{stop:?}");
            assert_eq!(streamed.entries, choice.entries(), "{stop:?}");
            let rebuilt: String = streamed.entries.iter().map(|e| e.text.as_str()).collect();
            assert_eq!(rebuilt, want, "{stop:?}: {:?}", streamed.entries);
        }
    }

    #[test]
    fn common_prefixes_end_on_char_boundaries() {
        assert_eq!(common_prefix("ab", "abc"), "ab");
        assert_eq!(common_prefix("", "x"), "");
        assert_eq!(common_prefix("a€\u{FFFD}", "a€é"), "a€");
        assert_eq!(
            common_prefix("a€", "a\u{20AD}"),
            "a",
            "€ and ₭ share their first byte"
        );
        assert_eq!(common_prefix("abc", "ab"), "ab");
        assert_eq!(settled("ab\u{FFFD}\u{FFFD}"), "ab");
        assert_eq!(emission("ab", "abc"), "c");
        assert_eq!(
            emission("ab", "a\u{FFFD}"),
            "",
            "a decoding that disagrees adds nothing"
        );
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
