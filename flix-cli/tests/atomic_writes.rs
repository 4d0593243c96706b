//! Every file a user keeps is written whole or not at all: library and command-line code writes
//! through `flix_core::write_atomic*`, never with a bare `fs::write`, `File::create` or `rename`
//! (a killed run would leave a torn file). Only the helper itself, and test code, may use them.

use std::path::{Path, PathBuf};

/// The crates whose non-test code is checked.
const CRATES: [&str; 3] = ["flix-core", "flix-model", "flix-cli"];
/// Calls that write a file in place.
const BARE_WRITES: [&str; 4] = [
    "fs::write(",
    "File::create(",
    "fs::rename(",
    "File::create_new(",
];
/// The atomic write helper: the one place allowed to create and rename files.
const HELPER: &str = "flix-core/src/saved.rs";

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

#[test]
fn library_and_cli_code_writes_files_only_through_the_atomic_helper() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut offenders = Vec::new();
    for krate in CRATES {
        let mut files = Vec::new();
        rust_files(&root.join(krate).join("src"), &mut files);
        assert!(!files.is_empty(), "no sources under {krate}/src");
        for file in files {
            let relative = file
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .to_string();
            if relative == HELPER || relative.ends_with("_tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            // Unit tests sit at the end of a file, after `#[cfg(test)]`.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for (i, line) in code.lines().enumerate() {
                let trimmed = line.trim_start();
                if trimmed.starts_with("//") {
                    continue;
                }
                if BARE_WRITES.iter().any(|call| line.contains(call)) {
                    offenders.push(format!("{relative}:{}: {}", i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "files written in place (use flix_core::write_atomic*):\n{}",
        offenders.join("\n")
    );
}
