//! Reading JSONL examples: what is read from a good file, and that every malformed line is an
//! error naming file, line and the problem.

use std::io::Write;
use std::path::Path;

use flix_core::{read_jsonl, read_jsonl_files, read_jsonl_within, whitespace_tokens, CoreError};

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

#[test]
fn reads_features_text_and_line_numbers_and_skips_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "a.jsonl",
        concat!(
            r#"{"id":"x:1","lang":"swa","task":"qa","input":"Habari ya leo?","target":"Nzuri.","source":"s","extra":[1]}"#,
            "\n\n   \r\n",
            r#"{"task":"ner","input":"a b","target":"c","lang":null}"#,
            "\r\n",
            r#"{"lang":"eng","input":"","target":"","domain":"news"}"#,
        ),
    );
    let examples = read_jsonl(&path, &["lang", "task"]).unwrap();
    assert_eq!(examples.len(), 3);
    let [a, b, c] = &examples[..] else {
        unreachable!()
    };
    assert_eq!(a.location.line, 1);
    assert_eq!(a.location.to_string(), format!("{}:1", path.display()));
    assert_eq!(a.id.as_deref(), Some("x:1"));
    assert_eq!(a.features["lang"], "swa");
    assert_eq!(a.features["task"], "qa");
    assert_eq!(
        (a.input.as_str(), a.target.as_str()),
        ("Habari ya leo?", "Nzuri.")
    );
    assert_eq!(b.location.line, 4, "blank lines still count");
    assert!(!b.features.contains_key("lang"), "null is absent");
    assert_eq!(b.id, None);
    assert_eq!(c.location.line, 5);
    assert!(
        !c.features.contains_key("domain"),
        "only the named types are features"
    );

    // A type named in the config is a feature field like lang and task.
    let with_domain = read_jsonl(&path, &["domain"]).unwrap();
    assert_eq!(with_domain[2].features["domain"], "news");

    let two = read_jsonl_files(&[&path, &path], &["lang"]).unwrap();
    assert_eq!(two.len(), 6);
}

#[test]
fn malformed_lines_are_errors_naming_file_line_and_problem() {
    let good = r#"{"lang":"eng","task":"qa","input":"a","target":"b"}"#;
    let cases = [
        (
            r#"{"lang":"eng","input":"a","target":"b""#,
            "invalid JSON at column",
        ),
        (r#"{"lang":"eng","target":"b"}"#, "missing field \"input\""),
        (r#"{"lang":"eng","input":"a"}"#, "missing field \"target\""),
        (
            r#"{"lang":"eng","input":"a","target":3}"#,
            "\"target\" must be a string, found the number 3",
        ),
        (
            r#"{"lang":7,"input":"a","target":"b"}"#,
            "feature \"lang\" must be a string",
        ),
        (
            r#"{"task":["qa"],"input":"a","target":"b"}"#,
            "found an array",
        ),
        (r#"{"lang":"","input":"a","target":"b"}"#, "empty value"),
        (
            r#"{"id":5,"input":"a","target":"b"}"#,
            "\"id\" must be a string",
        ),
        (
            r#"["input","a"]"#,
            "not an example: invalid type: sequence, expected a JSON object",
        ),
        ("7", "expected a JSON object"),
        (
            r#"{"lang":"eng","input":"a","target":"b","lang":"fra"}"#,
            "field \"lang\" appears twice",
        ),
        ("not json", "invalid JSON at column 2"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (bad, expected)) in cases.iter().enumerate() {
        let path = write(
            dir.path(),
            &format!("bad{i}.jsonl"),
            &format!("{good}\n\n{bad}\n{good}\n"),
        );
        let err = read_jsonl(&path, &["lang", "task"]).unwrap_err();
        assert!(matches!(err, CoreError::Data { .. }), "{bad}: {err:?}");
        let message = err.to_string();
        let place = format!("{}:3: ", path.display());
        assert!(
            message.starts_with(&place) && message.contains(expected),
            "{bad}: got {message:?}, expected {place:?} and {expected:?}"
        );
    }
}

/// Some Windows editors start a UTF-8 file with a byte-order mark: skipped at the start of the
/// file, an error anywhere else (there it is a stray character inside the data).
#[test]
fn a_byte_order_mark_starts_a_file_but_not_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"lang":"eng","input":"a","target":"b"}"#;
    let path = write(
        dir.path(),
        "bom.jsonl",
        &format!("\u{feff}{good}\r\n{good}\r\n"),
    );
    let examples = read_jsonl(&path, &["lang"]).unwrap();
    assert_eq!(examples.len(), 2);
    assert_eq!(examples[0].features["lang"], "eng");
    assert_eq!(examples[0].input, "a");

    let path = write(
        dir.path(),
        "late.jsonl",
        &format!("{good}\n\u{feff}{good}\n"),
    );
    let message = read_jsonl(&path, &["lang"]).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("{}:2: invalid JSON", path.display())),
        "{message}"
    );
}

#[test]
fn invalid_utf8_and_missing_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.jsonl");
    std::fs::write(
        &path,
        b"{\"input\":\"a\",\"target\":\"b\"}\n{\"input\":\"caf\xe9\"}\n",
    )
    .unwrap();
    let message = read_jsonl(&path, &[]).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("{}:2: ", path.display())),
        "{message}"
    );

    let missing = dir.path().join("missing.jsonl");
    let message = read_jsonl(&missing, &[]).unwrap_err().to_string();
    assert!(message.contains("missing.jsonl"), "{message}");
}

/// A line past the limit is an error naming it, whether or not a newline ever comes; lines up
/// to the limit (with either line end) are read.
#[test]
fn a_line_longer_than_the_limit_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let line =
        |target_len: usize| format!(r#"{{"input":"a","target":"{}"}}"#, "b".repeat(target_len));
    let fits = line(10);
    let limit = fits.len();
    let path = write(
        dir.path(),
        "lines.jsonl",
        &format!("{fits}\r\n{fits}\n{}\n{fits}", line(11)),
    );
    let message = read_jsonl_within(&path, &[], limit)
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        format!(
            "{}:3: the line is longer than {limit} bytes; not read further",
            path.display()
        )
    );
    let path = write(
        dir.path(),
        "last.jsonl",
        &format!("{fits}\n{}", line(10_000)),
    );
    let message = read_jsonl_within(&path, &[], limit)
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with(&format!("{}:2: ", path.display())),
        "{message}"
    );
    let path = write(dir.path(), "ok.jsonl", &format!("{fits}\r\n\n{fits}"));
    let examples = read_jsonl_within(&path, &[], limit).unwrap();
    assert_eq!(examples.len(), 2);
    assert_eq!(examples[1].location.line, 3);
    assert_eq!(examples[1].target, "b".repeat(10));
}

#[test]
fn whitespace_tokens_counts_words() {
    assert_eq!(whitespace_tokens(""), 0);
    assert_eq!(whitespace_tokens("  one\ttwo\nthree  "), 3);
}

#[test]
fn a_directory_given_as_a_data_file_is_refused_with_a_hint() {
    let dir = std::env::temp_dir().join(format!("flix-data-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let message = read_jsonl(&dir, &["lang"]).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        message.contains(&dir.display().to_string()) && message.contains("*.jsonl"),
        "{message}"
    );
}
