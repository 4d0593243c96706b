//! The one atomic write of the workspace: a file or a directory is replaced whole or not at all,
//! failed writes leave nothing behind, and no other code renames files into place by hand.

use std::path::{Path, PathBuf};

use flix_core::{write_atomic, write_atomic_with, write_dir_atomic, CoreError};
use proptest::prelude::*;

/// Every entry of `dir` (names), sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_nothing_else(
        old in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        new in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state.json");
        if let Some(old) = &old {
            std::fs::write(&path, old).unwrap();
        }
        write_atomic(&path, &new).unwrap();
        prop_assert_eq!(std::fs::read(&path).unwrap(), new);
        prop_assert_eq!(entries(tmp.path()), vec!["state.json".to_string()]);
    }
}

#[test]
fn a_failed_write_keeps_the_old_file_and_removes_its_temporary() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("weights.safetensors");
    std::fs::write(&path, b"old").unwrap();
    let err = write_atomic_with(&path, |tmp_path| {
        std::fs::write(tmp_path, b"half of the new")?;
        Err(std::io::Error::other("disk full"))
    })
    .unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
    assert_eq!(entries(tmp.path()), vec!["weights.safetensors".to_string()]);
}

#[test]
fn a_rename_that_fails_leaves_no_temporary() {
    let tmp = tempfile::tempdir().unwrap();
    // A file cannot replace a directory.
    let path = tmp.path().join("checkpoints");
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("kept"), b"k").unwrap();
    let err = write_atomic(&path, b"x").unwrap_err();
    assert!(err.to_string().contains("checkpoints"), "{err}");
    assert_eq!(entries(tmp.path()), vec!["checkpoints".to_string()]);
    assert_eq!(entries(&path), vec!["kept".to_string()]);
}

#[test]
fn a_write_into_a_missing_directory_names_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("missing").join("x.json");
    let err = write_atomic(&path, b"{}").unwrap_err();
    assert!(matches!(err, CoreError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn a_directory_appears_complete_or_not_at_all() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("step-00000010");

    // A fill that fails half-way leaves no directory and no temporary.
    let failed: Result<(), CoreError> = write_dir_atomic(&dir, |t| {
        write_atomic(&t.join("a.bin"), b"a")?;
        Err(CoreError::Io {
            path: t.join("b.bin"),
            source: std::io::Error::other("killed"),
        })
    });
    assert!(failed.is_err());
    assert!(entries(tmp.path()).is_empty(), "{:?}", entries(tmp.path()));

    // A fill that succeeds appears whole, under its name only.
    let filled: Result<(), CoreError> = write_dir_atomic(&dir, |t| {
        write_atomic(&t.join("a.bin"), b"a")?;
        write_atomic(&t.join("b.bin"), b"b")
    });
    filled.unwrap();
    assert_eq!(entries(tmp.path()), vec!["step-00000010".to_string()]);
    assert_eq!(
        entries(&dir),
        vec!["a.bin".to_string(), "b.bin".to_string()]
    );

    // A leftover temporary of a killed writer is replaced, and an existing directory of the same
    // name is replaced whole (no file of the old one survives).
    std::fs::create_dir(tmp.path().join(".step-00000010.tmp")).unwrap();
    std::fs::write(tmp.path().join(".step-00000010.tmp/junk"), b"x").unwrap();
    let again: Result<(), CoreError> =
        write_dir_atomic(&dir, |t| write_atomic(&t.join("c.bin"), b"c"));
    again.unwrap();
    assert_eq!(entries(tmp.path()), vec!["step-00000010".to_string()]);
    assert_eq!(entries(&dir), vec!["c.bin".to_string()]);
}

/// The `.rs` files under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Calls that write or move a file in place: a killed run would leave a torn file.
const BARE_WRITES: [&str; 4] = [
    "fs::write(",
    "File::create(",
    "File::create_new(",
    "fs::rename(",
];

/// Every file a user keeps is written whole or not at all: library and command-line code writes
/// through `write_atomic*`, never with a bare `fs::write`, `File::create` or `rename`. Only the
/// helper itself, and test code, may use them.
#[test]
fn no_library_code_writes_or_renames_files_in_place() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for krate in ["flix-core", "flix-model", "flix-cli", "flix-kernels"] {
        rust_files(&workspace.join(krate).join("src"), &mut files);
    }
    assert!(files.len() > 20, "the sources were not found: {files:?}");
    let mut in_place = Vec::new();
    // `*_tests.rs` files are unit-test modules kept beside their code.
    let checked = files.iter().filter(|f| {
        !f.ends_with("flix-core/src/saved.rs") && !f.to_string_lossy().ends_with("_tests.rs")
    });
    for file in checked {
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests may write and move files around; the code they test may not.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (i, line) in code.lines().enumerate() {
            let is_comment = line.trim_start().starts_with("//");
            if !is_comment && BARE_WRITES.iter().any(|call| line.contains(call)) {
                in_place.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        in_place.is_empty(),
        "write through flix_core::write_atomic instead:\n{}",
        in_place.join("\n")
    );
}
