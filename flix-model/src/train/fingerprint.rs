//! A cheap fingerprint of a base model, recorded when training starts (in `spec.json` and every
//! checkpoint's `adapter_config.json`) and checked when a run resumes or its adapters are loaded,
//! so that adapters are never continued on, or applied to, another model than the one they were
//! trained on (a path edited in `spec.json`, a base directory overwritten in place).
//!
//! It hashes (64-bit FNV-1a) the name and size of each of the base's files that define the
//! model (`config.json`, `tokenizer.json`, the weight files and their index) and their first and
//! last MiB: the whole config and tokenizer of small models and every safetensors header (names,
//! dtypes, shapes, offsets), plus a sample of the weights, without reading gigabytes. The files'
//! directory is not part of it: a base that moved is still the same model.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

/// How much of the start and of the end of each file is hashed.
const SAMPLE_BYTES: u64 = 1 << 20;
/// Names the hash, so that a later change of method is recognised rather than reported as a
/// different model.
const SCHEME: &str = "fnv1a64-v1";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The files of `base` (a model directory, or one weight file) that define the model, sorted.
fn model_files(base: &Path) -> Result<Vec<PathBuf>> {
    if base.is_file() {
        return Ok(vec![base.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(base).map_err(io_err(base))? {
        let path = entry.map_err(io_err(base))?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let defines_model = name == "config.json"
            || name == "tokenizer.json"
            || name.ends_with(".safetensors")
            || name.ends_with(".safetensors.index.json")
            || name.ends_with(".gguf");
        if defines_model && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

struct Fnv1a(u64);

impl Fnv1a {
    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// The fingerprint of the base model at `base`, e.g. `fnv1a64-v1:5f0c…`.
pub fn base_fingerprint(base: &Path) -> Result<String> {
    let mut hash = Fnv1a(0xcbf2_9ce4_8422_2325);
    let files = model_files(base)?;
    if files.is_empty() {
        return Err(ModelError::Invalid(format!(
            "{}: no config.json, tokenizer.json or weight file: not a base model",
            base.display()
        )));
    }
    for path in &files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut file = File::open(path).map_err(io_err(path))?;
        let size = file.metadata().map_err(io_err(path))?.len();
        hash.update(name.as_bytes());
        hash.update(&[0]);
        hash.update(&size.to_le_bytes());
        let mut sample = Vec::new();
        (&mut file)
            .take(SAMPLE_BYTES)
            .read_to_end(&mut sample)
            .map_err(io_err(path))?;
        hash.update(&sample);
        if size > 2 * SAMPLE_BYTES {
            sample.clear();
            file.seek(SeekFrom::Start(size - SAMPLE_BYTES))
                .map_err(io_err(path))?;
            file.read_to_end(&mut sample).map_err(io_err(path))?;
            hash.update(&sample);
        } else if size > SAMPLE_BYTES {
            sample.clear();
            file.read_to_end(&mut sample).map_err(io_err(path))?;
            hash.update(&sample);
        }
    }
    Ok(format!("{SCHEME}:{:016x}", hash.0))
}

/// Checks that the base model at `base` still has the fingerprint `recorded` (read from
/// `origin`). A fingerprint of another scheme is not compared.
pub fn check_base_fingerprint(base: &Path, recorded: &str, origin: &Path) -> Result<()> {
    if !recorded.starts_with(&format!("{SCHEME}:")) {
        return Ok(());
    }
    let now = base_fingerprint(base)?;
    if now != recorded {
        return Err(ModelError::Config {
            path: origin.to_path_buf(),
            message: format!(
                "the base model {} is not the one these adapters were trained on: its \
                 fingerprint is {now}, {recorded} was recorded (config.json, the tokenizer or \
                 the weights differ); give the original base model",
                base.display()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_its_published_vectors() {
        // From the FNV reference test suite (64-bit FNV-1a).
        for (input, expected) in [
            ("", 0xcbf2_9ce4_8422_2325u64),
            ("a", 0xaf63_dc4c_8601_ec8c),
            ("foobar", 0x8594_4171_f739_67e8),
        ] {
            let mut h = Fnv1a(0xcbf2_9ce4_8422_2325);
            h.update(input.as_bytes());
            assert_eq!(h.0, expected, "{input:?}");
        }
    }

    #[test]
    fn any_change_to_a_model_file_changes_the_fingerprint_but_moving_it_does_not() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        std::fs::create_dir(&base).unwrap();
        std::fs::write(base.join("config.json"), "{\"hidden_size\": 16}").unwrap();
        // Large enough that the middle is not sampled: head and tail are.
        let mut weights = vec![7u8; 3 * SAMPLE_BYTES as usize];
        std::fs::write(base.join("model.safetensors"), &weights).unwrap();
        std::fs::write(base.join("README.md"), "notes").unwrap();
        let first = base_fingerprint(&base).unwrap();
        assert!(first.starts_with("fnv1a64-v1:"), "{first}");

        std::fs::write(base.join("README.md"), "other notes").unwrap();
        assert_eq!(
            base_fingerprint(&base).unwrap(),
            first,
            "README is not the model"
        );
        let moved = tmp.path().join("moved");
        std::fs::rename(&base, &moved).unwrap();
        assert_eq!(base_fingerprint(&moved).unwrap(), first);

        let last = weights.len() - 1;
        weights[last] = 8;
        std::fs::write(moved.join("model.safetensors"), &weights).unwrap();
        let changed = base_fingerprint(&moved).unwrap();
        assert_ne!(changed, first);
        let err = check_base_fingerprint(&moved, &first, Path::new("spec.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.json") && err.contains("not the one"),
            "{err}"
        );
        check_base_fingerprint(&moved, &changed, Path::new("spec.json")).unwrap();

        std::fs::write(moved.join("config.json"), "{\"hidden_size\": 32}").unwrap();
        assert_ne!(base_fingerprint(&moved).unwrap(), changed);
    }
}
