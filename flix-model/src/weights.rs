//! Reading weights from a Hugging Face checkpoint directory: `model.safetensors`, or shards listed
//! by `model.safetensors.index.json`. Files are memory-mapped; each tensor is converted to f32 on
//! the CPU when asked for (bf16, f16 and f32 are accepted).
//!
//! Loading is strict: a missing tensor, a wrong shape, an unsupported dtype or a truncated file is
//! an error that names the tensor, what was expected and found, and the file.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, Result};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

struct MappedFile {
    path: PathBuf,
    mmap: Mmap,
}

/// Where a model's weights come from, by their Hugging Face names (for example
/// `model.layers.0.self_attn.q_proj.weight`) and in Hugging Face's conventions (row-major
/// `[out, in]` matrices, Hugging Face's norm weights). A safetensors [`Checkpoint`] is one; a
/// GGUF file, whose names and layouts are mapped on the way in, is another.
pub trait TensorSource {
    /// Whether the tensor `name` exists.
    fn contains(&self, name: &str) -> bool;
    /// Every tensor name, sorted.
    fn tensor_names(&self) -> Vec<String>;
    /// The tensor `name`, which must have `shape`, as f32; an error names the tensor, the shapes
    /// expected and found, and the file.
    fn load_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;
}

/// An opened checkpoint: its mapped files and which file holds each tensor.
pub struct Checkpoint {
    files: Vec<MappedFile>,
    location: HashMap<String, usize>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: Vec<_> = self.files.iter().map(|m| &m.path).collect();
        write!(f, "Checkpoint({paths:?}, {} tensors)", self.location.len())
    }
}

fn weights_err(path: &Path, message: String) -> ModelError {
    ModelError::Weights {
        path: path.to_path_buf(),
        message,
    }
}

impl Checkpoint {
    /// Opens `dir/model.safetensors`, else the shards named by `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join(SINGLE_FILE);
        let index = dir.join(INDEX_FILE);
        if single.is_file() {
            return Self::from_files(&[single]);
        }
        if !index.is_file() {
            // PyTorch's pickled checkpoints can run code when loaded and are not read; say so
            // rather than only that nothing was found.
            let pickled = ["pytorch_model.bin", "pytorch_model.bin.index.json"]
                .into_iter()
                .find(|name| dir.join(name).is_file());
            let hint = match pickled {
                Some(name) => format!(
                    "; {name} (PyTorch pickle) is not read: save the model as safetensors \
                     (`save_pretrained(dir, safe_serialization=True)`)"
                ),
                None => String::new(),
            };
            return Err(weights_err(
                dir,
                format!("no weights found: neither {SINGLE_FILE} nor {INDEX_FILE} exists{hint}"),
            ));
        }
        let text = std::fs::read_to_string(&index).map_err(|source| ModelError::Io {
            path: index.clone(),
            source,
        })?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| weights_err(&index, format!("not valid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| weights_err(&index, "missing object `weight_map`".into()))?;
        let mut shard_names: Vec<&str> = Vec::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| {
                weights_err(
                    &index,
                    format!("weight_map[{tensor:?}] must be a file name, found {file}"),
                )
            })?;
            if !shard_names.contains(&file) {
                shard_names.push(file);
            }
        }
        shard_names.sort_unstable();
        let paths: Vec<PathBuf> = shard_names.iter().map(|f| dir.join(f)).collect();
        let checkpoint = Self::from_files(&paths)?;
        // The index must agree with the shards: every tensor it lists must be where it says.
        for (tensor, file) in map {
            let want = dir.join(file.as_str().unwrap_or_default());
            match checkpoint.location.get(tensor) {
                Some(&i) if checkpoint.files[i].path == want => {}
                Some(&i) => {
                    return Err(weights_err(
                        &index,
                        format!(
                            "tensor `{tensor}` is listed in {} but found in {}",
                            want.display(),
                            checkpoint.files[i].path.display()
                        ),
                    ))
                }
                None => {
                    return Err(weights_err(
                        &want,
                        format!("tensor `{tensor}` is listed in {INDEX_FILE} but not in this file"),
                    ))
                }
            }
        }
        Ok(checkpoint)
    }

    /// Maps and validates the given safetensors files (headers, offsets, sizes).
    pub fn from_files(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut location = HashMap::new();
        for path in paths {
            let file = File::open(path).map_err(|source| ModelError::Io {
                path: path.clone(),
                source,
            })?;
            // SAFETY: the map is read-only. Like every safetensors loader, we rely on nobody
            // truncating or rewriting the checkpoint file while it is open.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|source| ModelError::Io {
                path: path.clone(),
                source,
            })?;
            let st = SafeTensors::deserialize(&mmap).map_err(|e| {
                weights_err(
                    path,
                    format!("not a valid safetensors file ({e}); is it truncated or corrupt?"),
                )
            })?;
            for name in st.names() {
                if let Some(&other) = location.get(name) {
                    let other: &MappedFile = &files[other];
                    return Err(weights_err(
                        path,
                        format!("tensor `{name}` also appears in {}", other.path.display()),
                    ));
                }
                location.insert(name.to_string(), files.len());
            }
            files.push(MappedFile {
                path: path.clone(),
                mmap,
            });
        }
        Ok(Self { files, location })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.location.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The tensor `name` as stored (dtype, shape and raw little-endian bytes, borrowed from the
    /// mapped file), and the path of that file.
    pub fn view(&self, name: &str) -> Result<(TensorView<'_>, &Path)> {
        let Some(&index) = self.location.get(name) else {
            return Err(self.missing(name, ""));
        };
        let file = &self.files[index];
        let st = SafeTensors::deserialize(&file.mmap)
            .map_err(|e| weights_err(&file.path, format!("not a valid safetensors file ({e})")))?;
        let view = st
            .tensor(name)
            .map_err(|e| weights_err(&file.path, format!("tensor `{name}`: {e}")))?;
        Ok((view, &file.path))
    }

    fn missing(&self, name: &str, detail: &str) -> ModelError {
        let paths: Vec<String> = self
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        weights_err(
            self.files.first().map_or(Path::new("."), |f| &f.path),
            format!(
                "tensor `{name}`{detail} is missing; searched {}",
                paths.join(", ")
            ),
        )
    }

    /// The tensor `name`, which must have `shape`, converted to f32.
    pub fn load_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        if !self.contains(name) {
            return Err(self.missing(name, &format!(" (shape {shape:?})")));
        }
        let (view, path) = self.view(name)?;
        if view.shape() != shape {
            return Err(weights_err(
                path,
                format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    view.shape()
                ),
            ));
        }
        let bytes = view.data();
        let values = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(weights_err(
                    path,
                    format!("tensor `{name}` has dtype {other:?}, expected one of BF16, F16, F32"),
                ))
            }
        };
        Ok(values)
    }
}

impl TensorSource for Checkpoint {
    fn contains(&self, name: &str) -> bool {
        Checkpoint::contains(self, name)
    }

    fn tensor_names(&self) -> Vec<String> {
        self.names().into_iter().map(str::to_string).collect()
    }

    fn load_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        Checkpoint::load_f32(self, name, shape)
    }
}

#[cfg(test)]
#[path = "weights_tests.rs"]
mod tests;
