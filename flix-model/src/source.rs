//! The base model a user names: a Hugging Face directory (`config.json`, safetensors weights,
//! `tokenizer.json`) or one GGUF file (llama.cpp's format: configuration, tokenizer and weights,
//! possibly quantized, in one file). Everything that loads a base model — `flix score`, `train`,
//! `eval`, `generate`, `export`, `merge`, `bench-train` and the library — goes through
//! [`ModelSource`], so both kinds work everywhere.

use std::io::Read;
use std::path::{Path, PathBuf};

use flix_kernels::{DType, Device};

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::gguf::{GgufFile, GgufModel};
use crate::llama::{default_dtype, LlamaModel};
use crate::tokenize::Tokenizer;
use crate::tokenize_gguf::{build_tokenizer, GgufVocab};
use crate::weights::Checkpoint;

/// The first four bytes of every GGUF file.
const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// Where a base model lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// A Hugging Face directory: `config.json`, `model.safetensors` (or shards and their index),
    /// `tokenizer.json`.
    Directory(PathBuf),
    /// A GGUF file.
    Gguf(PathBuf),
}

impl ModelSource {
    /// Tells a directory from a GGUF file (by its magic bytes, whatever its name); anything else
    /// is an error that says what was found.
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.is_dir() {
            if !path.join("config.json").is_file() {
                return Err(ModelError::Config {
                    path: path.to_path_buf(),
                    message: "not a model directory: it has no config.json (a base model is a \
                              Hugging Face directory or a GGUF file)"
                        .into(),
                });
            }
            return Ok(Self::Directory(path.to_path_buf()));
        }
        let mut magic = [0u8; 4];
        let read = std::fs::File::open(path)
            .and_then(|mut f| f.read(&mut magic))
            .map_err(io)?;
        if read == 4 && &magic == GGUF_MAGIC {
            return Ok(Self::Gguf(path.to_path_buf()));
        }
        Err(ModelError::Config {
            path: path.to_path_buf(),
            message: format!(
                "not a base model: a base model is a Hugging Face directory or a GGUF file, and \
                 this file starts with {:?}, not \"GGUF\"",
                String::from_utf8_lossy(&magic[..read])
            ),
        })
    }

    pub fn path(&self) -> &Path {
        match self {
            Self::Directory(p) | Self::Gguf(p) => p,
        }
    }

    pub fn is_gguf(&self) -> bool {
        matches!(self, Self::Gguf(_))
    }

    /// The model's configuration: `config.json`, or what the GGUF metadata says (with the
    /// settings it leaves out filled in; see [`crate::gguf`]).
    pub fn config(&self) -> Result<LlamaConfig> {
        match self {
            Self::Directory(dir) => LlamaConfig::from_file(&dir.join("config.json")),
            Self::Gguf(path) => GgufModel::open(path)?.llama_config(),
        }
    }

    /// The tokenizer: `tokenizer.json`, or the one the GGUF metadata describes.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        match self {
            Self::Directory(dir) => Tokenizer::from_file(&dir.join("tokenizer.json")),
            Self::Gguf(path) => {
                let file = GgufFile::open(path)?;
                build_tokenizer(&GgufVocab::from_gguf(&file)?, path)
            }
        }
    }

    /// The model on `device` in the device's default working dtype.
    pub fn load(&self, device: &Device) -> Result<LlamaModel> {
        self.load_as(device, default_dtype(device))
    }

    /// The model on `device` with weights and activations in `dtype`.
    pub fn load_as(&self, device: &Device, dtype: DType) -> Result<LlamaModel> {
        match self {
            Self::Directory(dir) => {
                let config = LlamaConfig::from_file(&dir.join("config.json"))?;
                LlamaModel::from_checkpoint(config, &Checkpoint::open(dir)?, device, dtype)
            }
            Self::Gguf(path) => {
                let gguf = GgufModel::open(path)?;
                LlamaModel::from_checkpoint(gguf.llama_config()?, &gguf, device, dtype)
            }
        }
    }
}
