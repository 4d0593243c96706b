//! What a cell's score can be, and which tasks are label tasks.
//!
//! Every cell gets exact match (the whole output, whitespace at the ends ignored) and chrF (see
//! [`super::chrf`]). Cells of a **label task** also get accuracy. The rule that makes a task a
//! label task, decided on the examples being evaluated:
//!
//! - a task is the value of the example's `task` feature (examples without one form a task per
//!   cell);
//! - its labels are its distinct normalized targets ([`normalize_label`]: ends trimmed, lowercase,
//!   inner whitespace runs as one space);
//! - it is a label task when it has at most [`MAX_LABELS`] labels, each at most
//!   [`MAX_LABEL_CHARS`] characters and [`MAX_LABEL_WORDS`] words on one line, and its examples
//!   repeat them: at least [`MIN_EXAMPLES_PER_LABEL`] examples per label on average (a closed set
//!   shows itself by repeating; a few short free-text targets that happen to be distinct do not).
//!
//! Accuracy is the fraction of examples whose normalized prediction equals the normalized gold
//! label; a prediction that is not one of the labels is wrong.
//!
//! The rule applies to tasks that neither a mixture's task descriptions nor the known task names
//! give a metric (see [`super::task_metric::TaskMetrics`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use flix_core::Example;

use crate::error::ModelError;

/// A label task has at most this many labels.
pub const MAX_LABELS: usize = 20;
/// A label is at most this many characters...
pub const MAX_LABEL_CHARS: usize = 32;
/// ...and this many words.
pub const MAX_LABEL_WORDS: usize = 3;
/// A label task has at least this many examples per label on average.
pub const MIN_EXAMPLES_PER_LABEL: usize = 2;

/// The score a grid shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Metric {
    /// Exact match of the whole output.
    #[default]
    ExactMatch,
    /// Corpus-level chrF of the cell.
    Chrf,
    /// Accuracy of label tasks (other cells have none).
    Accuracy,
    /// Each task's own metric ([`super::task_metric`]): accuracy, span F1, token accuracy, frame
    /// exact match, or exact match for free text.
    Auto,
}

impl Metric {
    pub const ALL: [Metric; 4] = [
        Metric::ExactMatch,
        Metric::Chrf,
        Metric::Accuracy,
        Metric::Auto,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Metric::ExactMatch => "exact",
            Metric::Chrf => "chrf",
            Metric::Accuracy => "accuracy",
            Metric::Auto => "auto",
        }
    }

    /// The name a person reads in a title.
    pub fn title(self) -> &'static str {
        match self {
            Metric::ExactMatch => "Exact match",
            Metric::Chrf => "chrF",
            Metric::Accuracy => "Accuracy (label tasks)",
            Metric::Auto => "Each task's metric",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Metric {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "exact" | "exact-match" | "em" => Ok(Metric::ExactMatch),
            "chrf" => Ok(Metric::Chrf),
            "accuracy" | "acc" => Ok(Metric::Accuracy),
            "auto" => Ok(Metric::Auto),
            other => Err(ModelError::Invalid(format!(
                "unknown metric {other:?}: expected exact, chrf, accuracy or auto"
            ))),
        }
    }
}

/// A label as compared: ends trimmed, lowercase, inner whitespace runs as one space.
pub fn normalize_label(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The task an example belongs to for the label rule: its `task` value, else its whole cell.
pub(crate) fn task_key(example: &Example) -> String {
    match example.features.get("task") {
        Some(task) => format!("task={task}"),
        None => example
            .features
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// The label tasks among some examples, with their labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelTasks {
    labels: BTreeMap<String, BTreeSet<String>>,
}

impl LabelTasks {
    /// Applies the module's rule to `examples`.
    pub fn detect(examples: &[Example]) -> Self {
        let mut targets: BTreeMap<String, (BTreeSet<String>, usize)> = BTreeMap::new();
        for ex in examples {
            let entry = targets.entry(task_key(ex)).or_default();
            entry.0.insert(normalize_label(&ex.target));
            entry.1 += 1;
        }
        let labels = targets
            .into_iter()
            .filter(|(_, (labels, count))| {
                labels.len() <= MAX_LABELS
                    && *count >= MIN_EXAMPLES_PER_LABEL * labels.len()
                    && labels.iter().all(|l| {
                        !l.is_empty()
                            && l.chars().count() <= MAX_LABEL_CHARS
                            && l.split(' ').count() <= MAX_LABEL_WORDS
                    })
            })
            .map(|(task, (labels, _))| (task, labels))
            .collect();
        Self { labels }
    }

    /// The labels of the example's task, when it is a label task.
    pub fn labels_of(&self, example: &Example) -> Option<&BTreeSet<String>> {
        self.labels.get(&task_key(example))
    }

    /// Whether `output` is the example's label (None when its task is not a label task).
    pub fn is_correct(&self, example: &Example, output: &str) -> Option<bool> {
        let labels = self.labels_of(example)?;
        let predicted = normalize_label(output);
        Some(labels.contains(&predicted) && predicted == normalize_label(&example.target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(task: &str, lang: &str, target: &str) -> Example {
        let mut ex = Example {
            location: flix_core::Location {
                file: std::path::Path::new("test.jsonl").into(),
                line: 1,
            },
            id: None,
            features: BTreeMap::new(),
            input: "x".into(),
            target: target.into(),
        };
        ex.features.insert("task".into(), task.into());
        ex.features.insert("lang".into(), lang.into());
        ex
    }

    #[test]
    fn short_repeated_targets_make_a_label_task_and_free_text_does_not() {
        let mut examples = Vec::new();
        for (i, lang) in ["eng", "deu", "swa"].iter().enumerate() {
            for label in ["positive", "Negative ", "neutral", "positive"] {
                examples.push(example("sentiment", lang, label));
            }
            // Short but all distinct: free text.
            for n in 0..4 {
                examples.push(example("num2words", lang, &format!("w{i}{n}")));
            }
            // Repeated but long: free text.
            examples.push(example("date", lang, "the fifth of March, 2024"));
            examples.push(example("date", lang, "the fifth of March, 2024"));
        }
        let tasks = LabelTasks::detect(&examples);
        let sentiment = tasks
            .labels_of(&examples[0])
            .expect("sentiment is a label task");
        let want: BTreeSet<String> = ["positive", "negative", "neutral"].map(String::from).into();
        assert_eq!(sentiment, &want);
        assert_eq!(tasks.labels_of(&examples[4]), None, "num2words");
        assert_eq!(tasks.labels_of(&examples[8]), None, "date");
        assert_eq!(tasks.is_correct(&examples[4], "w00"), None);
    }

    #[test]
    fn accuracy_normalizes_and_rejects_predictions_outside_the_labels() {
        let examples: Vec<Example> = ["yes", "no", "yes", "no"]
            .iter()
            .map(|t| example("qa", "eng", t))
            .collect();
        let tasks = LabelTasks::detect(&examples);
        assert_eq!(tasks.is_correct(&examples[0], "  YES "), Some(true));
        assert_eq!(tasks.is_correct(&examples[0], "no"), Some(false));
        assert_eq!(tasks.is_correct(&examples[0], "yes!"), Some(false));
        assert_eq!(tasks.is_correct(&examples[0], ""), Some(false));
    }

    #[test]
    fn more_than_max_labels_is_not_a_label_task() {
        let examples: Vec<Example> = (0..=MAX_LABELS)
            .flat_map(|i| [i, i])
            .map(|i| example("many", "eng", &format!("l{i}")))
            .collect();
        assert_eq!(LabelTasks::detect(&examples).labels_of(&examples[0]), None);
        let fewer = &examples[..2 * MAX_LABELS];
        assert!(LabelTasks::detect(fewer).labels_of(&fewer[0]).is_some());
    }

    #[test]
    fn metric_names_round_trip() {
        for m in Metric::ALL {
            assert_eq!(m.name().parse::<Metric>().unwrap(), m);
        }
        assert!("bleu".parse::<Metric>().is_err());
    }
}
