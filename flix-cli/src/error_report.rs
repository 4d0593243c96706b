//! How a failed command reports its error on stderr: `Error: ...` and the chain of causes, as
//! anyhow prints them, without the causes the text above already shows. Many errors carry their
//! source inside their own message (`path: No such file or directory`) and also as their cause;
//! printed as is, every such reason would appear twice.

use std::backtrace::BacktraceStatus;
use std::fmt::Write;

/// The whole report for `error`: [`message_and_causes`], then the backtrace when one was
/// captured (`RUST_BACKTRACE=1`).
pub fn error_report(error: &anyhow::Error) -> String {
    let mut out = message_and_causes(error);
    let backtrace = error.backtrace();
    if backtrace.status() == BacktraceStatus::Captured {
        write!(out, "\n\nStack backtrace:\n{backtrace}").unwrap_or(());
    }
    out
}

/// The message, then `Caused by:` and each cause not already shown by the one before it.
fn message_and_causes(error: &anyhow::Error) -> String {
    let chain: Vec<String> = error.chain().map(|e| e.to_string()).collect();
    let mut causes = Vec::new();
    for pair in chain.windows(2) {
        let (above, cause) = (&pair[0], &pair[1]);
        if !above.contains(cause.as_str()) {
            causes.push(cause.as_str());
        }
    }
    let mut out = format!("Error: {}", chain[0]);
    match causes.as_slice() {
        [] => {}
        [only] => write!(out, "\n\nCaused by:\n    {}", indented(only, 4)).unwrap_or(()),
        many => {
            out.push_str("\n\nCaused by:");
            for (i, cause) in many.iter().enumerate() {
                let prefix = format!("    {i}: ");
                let text = indented(cause, prefix.len());
                write!(out, "\n{prefix}{text}").unwrap_or(());
            }
        }
    }
    out
}

/// `text` with its second and later lines indented by `width` spaces, under the first.
fn indented(text: &str, width: usize) -> String {
    text.replace('\n', &format!("\n{}", " ".repeat(width)))
}

#[cfg(test)]
mod tests {
    use super::message_and_causes;
    use anyhow::Context;

    fn missing_file() -> anyhow::Error {
        let path = std::path::PathBuf::from("/nonexistent/split.json");
        let source = std::fs::read(&path).unwrap_err();
        let inner: anyhow::Result<()> = Err(flix_core::CoreError::Io { path, source }.into());
        inner.context("reading the split file").unwrap_err()
    }

    #[test]
    fn a_cause_the_message_above_already_shows_is_not_repeated() {
        let report = message_and_causes(&missing_file());
        let reason = "No such file or directory";
        assert_eq!(report.matches(reason).count(), 1, "{report}");
        assert!(
            report.starts_with(
                "Error: reading the split file\n\nCaused by:\n    /nonexistent/split.json: "
            ),
            "{report}"
        );
    }

    #[test]
    fn distinct_causes_are_numbered_and_multiline_ones_indented() {
        let error = anyhow::anyhow!("line one\nline two")
            .context("loading the model")
            .context("serving");
        let report = message_and_causes(&error);
        assert!(
            report.starts_with("Error: serving\n\nCaused by:\n"),
            "{report}"
        );
        assert!(report.contains("\n    0: loading the model\n"), "{report}");
        assert!(
            report.contains("\n    1: line one\n       line two"),
            "{report}"
        );
        assert_eq!(
            message_and_causes(&anyhow::anyhow!("plain")),
            "Error: plain"
        );
    }
}
