//! Text to token ids through the `tokenizers` crate, from a model directory's `tokenizer.json`
//! (offline). An example is its prompt (encoded with the tokenizer's special tokens, e.g. BOS)
//! followed by its target (encoded without); only target tokens are scored.

use std::path::{Path, PathBuf};

use crate::batch::Sequence;
use crate::error::{ModelError, Result};

pub struct TextTokenizer {
    path: PathBuf,
    inner: tokenizers::Tokenizer,
}

impl TextTokenizer {
    /// Loads `dir/tokenizer.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| ModelError::Config {
            path: path.clone(),
            message: format!("cannot load the tokenizer: {e}"),
        })?;
        Ok(Self { path, inner })
    }

    /// Token ids of `text`, with the tokenizer's special tokens when `special`.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, special)
            .map_err(|e| ModelError::Config {
                path: self.path.clone(),
                message: format!("cannot encode {text:?}: {e}"),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// The sequence prompt ++ target, scoring the target tokens only.
    pub fn encode_example(&self, prompt: &str, target: &str) -> Result<Sequence> {
        let mut tokens = self.encode(prompt, true)?;
        let prompt_len = tokens.len();
        tokens.extend(self.encode(target, false)?);
        Ok(Sequence::prompt_and_target(tokens, prompt_len.max(1)))
    }
}
