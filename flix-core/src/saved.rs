//! Saving files so that a crash never leaves a torn one ([`write_atomic`], [`write_dir_atomic`]:
//! every file FLix writes goes through them), and the saved form of the registry: JSON with, per
//! type, its settings and a map value name → id. Saved next to the adapters, the registry is what
//! keeps value ids stable: a reload restores exactly these ids, whatever order the data comes in
//! later.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::check_hyper;
use crate::dropout::DropoutPolicy;
use crate::error::{CoreError, Result};
use crate::registry::{FeatureType, Registry};

impl Registry {
    /// The saved form, JSON: per type its settings and a map value name → id.
    pub fn to_json_string(&self) -> Result<String> {
        let saved = SavedRegistry {
            format: SAVED_FORMAT.to_string(),
            dropout_policy: self.dropout_policy(),
            types: self
                .types()
                .iter()
                .map(|t| SavedType {
                    name: t.name().to_string(),
                    rank: t.rank(),
                    alpha: t.alpha(),
                    dropout: t.dropout(),
                    allow_new_values: t.allow_new_values(),
                    values: (0..)
                        .zip(t.values())
                        .map(|(id, v)| (v.clone(), id))
                        .collect(),
                })
                .collect(),
        };
        serde_json::to_string_pretty(&saved)
            .map_err(|e| CoreError::config("feature registry", format!("cannot serialise: {e}")))
    }

    /// Writes the registry to `path` with [`write_atomic`].
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, (self.to_json_string()? + "\n").as_bytes())
    }

    /// Reads a registry saved by [`Registry::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// Parses a saved registry; `origin` names it in errors. Value ids must be exactly
    /// 0..n for each type.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self> {
        let saved: SavedRegistry = serde_json::from_str(text).map_err(|e| {
            CoreError::config(
                origin,
                format!(
                    "invalid saved registry at line {} column {}: {e}",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        if saved.format != SAVED_FORMAT {
            return Err(CoreError::config(
                origin,
                format!(
                    "unknown registry format {:?} (expected {SAVED_FORMAT:?})",
                    saved.format
                ),
            ));
        }
        if saved.types.is_empty() {
            return Err(CoreError::config(
                origin,
                "the registry has no feature types",
            ));
        }
        let mut names = BTreeSet::new();
        let mut types = Vec::with_capacity(saved.types.len());
        for st in saved.types {
            if !names.insert(st.name.clone()) {
                return Err(CoreError::config(
                    origin,
                    format!("feature type {:?} appears twice", st.name),
                ));
            }
            check_hyper(&st.name, st.rank, st.alpha, st.dropout)
                .map_err(|m| CoreError::config(origin, m))?;
            let mut by_id: Vec<Option<String>> = vec![None; st.values.len()];
            for (value, id) in st.values {
                let slot = usize::try_from(id).ok().and_then(|i| by_id.get_mut(i));
                match slot {
                    Some(slot @ None) => *slot = Some(value),
                    _ => {
                        return Err(CoreError::config(
                            origin,
                            format!(
                                "feature type {:?}: value {value:?} has id {id}; ids must be \
                                 0..{} with no repeats",
                                st.name,
                                by_id.len()
                            ),
                        ))
                    }
                }
            }
            let mut ft =
                FeatureType::new(&st.name, st.rank, st.alpha, st.dropout, st.allow_new_values);
            // Every slot is filled: n distinct ids in 0..n.
            for value in by_id.into_iter().flatten() {
                ft.push_value(&value)?;
            }
            types.push(ft);
        }
        Ok(Registry {
            types,
            dropout_policy: saved.dropout_policy,
        })
    }
}

const SAVED_FORMAT: &str = "flix-registry/1";

/// Writes `bytes` to `path` so that, whenever the machine stops, `path` holds either its old
/// content or all of `bytes`: see [`write_atomic_with`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        let mut file = File::create(tmp)?;
        file.write_all(bytes)
    })
}

/// Writes `path` through `write`, which fills the temporary file it is given (a hidden sibling
/// of `path`, in the same directory so the rename cannot cross file systems). Then the file's
/// data reaches the disk (fsync), the rename replaces `path` in one step, and the directory is
/// synced so that the rename itself survives a power cut. On an error the temporary file is
/// removed and `path` is untouched. For writers that stream (a merged checkpoint of several GB)
/// rather than hold every byte.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = hidden_sibling(path)?;
    let written = write(&tmp).and_then(|()| File::open(&tmp)?.sync_all());
    if let Err(e) = written {
        // Best effort: the error that matters is the write's.
        let _ = std::fs::remove_file(&tmp);
        return Err(CoreError::io(&tmp, e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(CoreError::io(path, e));
    }
    sync_parent(path)
}

/// Creates directory `dir` complete or not at all: `fill` writes the files into a temporary
/// sibling directory, every file in it (top level: checkpoints are flat) and the directory
/// itself are synced, the directory is
/// renamed to `dir` and the parent is synced. A crash leaves at most a hidden `.NAME.tmp`
/// directory, never a partial `dir`. An existing `dir` is removed just before the rename (a
/// directory cannot be renamed over a non-empty one), so callers give fresh names.
pub fn write_dir_atomic<E: From<CoreError>>(
    dir: &Path,
    fill: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let tmp = hidden_sibling(dir)?;
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| CoreError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| CoreError::io(&tmp, e))?;
    if let Err(e) = fill(&tmp) {
        // Best effort: the error that matters is the fill's.
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let entries = std::fs::read_dir(&tmp).map_err(|e| CoreError::io(&tmp, e))?;
    for entry in entries {
        let path = entry.map_err(|e| CoreError::io(&tmp, e))?.path();
        if path.is_file() {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| CoreError::io(&path, e))?;
        }
    }
    sync_dir(&tmp)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| CoreError::io(dir, e))?;
    Ok(sync_parent(dir)?)
}

/// `DIR/.NAME.tmp` for `DIR/NAME`: hidden, so listings and loaders skip it.
fn hidden_sibling(path: &Path) -> Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        CoreError::config(path.display(), "not a file path (it has no file name)")
    })?;
    Ok(path.with_file_name(format!(".{}.tmp", name.to_string_lossy())))
}

fn sync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => sync_dir(Path::new(".")),
    }
}

/// Syncs a directory's entries (names, renames). Only Unix can open a directory for that; other
/// systems make renames durable themselves.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| CoreError::io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedRegistry {
    format: String,
    dropout_policy: DropoutPolicy,
    types: Vec<SavedType>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedType {
    name: String,
    rank: usize,
    alpha: f64,
    dropout: f64,
    allow_new_values: bool,
    /// Value name → id, sorted by name in the file.
    values: BTreeMap<String, i32>,
}
