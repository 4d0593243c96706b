//! The text of one choice as its tokens arrive: decoded exactly as `flix generate` prints it (the
//! new tokens without the end-of-sequence token), cut at the first stop string, and released in
//! pieces for streaming that concatenate to that same text.

use flix_model::Tokenizer;

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

/// One choice's tokens and the text already released.
#[derive(Debug)]
pub struct ChoiceText {
    stop: Vec<String>,
    tokens: Vec<u32>,
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
            generated: 0,
            text: String::new(),
            released: 0,
            ending: None,
        }
    }

    /// Takes the next token; `last` is the decoder's ending when it was the sequence's last
    /// (with `is_eos`, the end-of-sequence token, which is not part of the text). Returns the
    /// text now safe to release. Tokens after the choice ended are ignored.
    pub fn push(
        &mut self,
        tokenizer: &Tokenizer,
        token: u32,
        is_eos: bool,
        last: Option<Ending>,
    ) -> Result<String, String> {
        if self.ending.is_some() {
            return Ok(String::new());
        }
        self.generated += 1;
        if !(is_eos && last.is_some()) {
            self.tokens.push(token);
        }
        self.text = tokenizer
            .decode(&self.tokens)
            .map_err(|e| format!("decoding the completion: {e}"))?;
        if let Some(cut) = first_stop(&self.text, &self.stop) {
            self.text.truncate(cut);
            self.ending = Some(Ending::Stop);
        } else {
            self.ending = last;
        }
        Ok(self.release())
    }

    /// Ends the choice where it stands (shutdown); returns the rest of its text.
    pub fn cut(&mut self) -> String {
        if self.ending.is_none() {
            self.ending = Some(Ending::Cut);
        }
        self.release()
    }

    /// The whole text (final once `ending` is set).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text from `released` to what is safe: all of it once the choice ended; before that,
    /// nothing that a later token could still change (a trailing replacement character: an
    /// incomplete UTF-8 sequence to a byte-level tokenizer) or complete into a stop string.
    fn release(&mut self) -> String {
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
    use super::*;

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
