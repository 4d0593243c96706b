//! Each task's own metric, computed on the model's greedy output against the gold target.
//!
//! - **Accuracy** (label tasks: topic, news, sentiment, copa): the normalized output
//!   ([`normalize_label`]) equals the normalized gold label; an output outside the task's label set
//!   is wrong. Beside it, **macro-F1**: per class c, F1 = 2·tp / (2·tp + fp + fn), averaged over the
//!   classes that occur in the cell (gold labels, and predicted labels that belong to the label
//!   set). An output outside the label set is a false negative of the gold class and a false
//!   positive of no class.
//! - **Entity-span F1** (ner): targets are items `token|B-X` / `token|I-X` separated by ASCII
//!   whitespace (a token may hold another space, e.g. the no-break space of `25 000`); a bare
//!   token (or `token|O`) is outside any entity. Items split on their last `|`. Spans follow
//!   the BIO rules of seqeval's default mode: `B-X` starts a span, `I-X` continues a span of type
//!   X and otherwise (after `O` or a span of another type: a stray `I-X`) starts one, `O` ends one.
//!   A span is (type, first token position, last token position); a predicted span is correct
//!   when the gold has the same span. Spans are compared by position, so an output with the wrong
//!   token count is scored against the gold positions it covers. Precision, recall and F1 are
//!   micro-averaged over the cell (summed true/false positives and false negatives), F1 0 when the
//!   cell has neither gold nor predicted spans, as in seqeval.
//! - **Token accuracy** (pos): targets are `token|UPOS` per token; position i is right when the
//!   output's item i has the gold tag. An output with the wrong token count scores each missing
//!   or extra token as wrong: the denominator of an example is max(gold tokens, output tokens).
//!   An item without a tag is wrong.
//! - **Frame exact match** (semparse), beside **intent accuracy**: targets are
//!   `[IN:intent [SL:slot value ] ... ]`. Both sides are parsed into frames (brackets, labels and
//!   words; whitespace between them does not matter) and compared as frames: same intent, same
//!   slots in the same order with the same words. Intent accuracy compares the top-level intent
//!   only. Unbalanced brackets, text outside the frame or an empty output are wrong.
//! - **Exact match** and **chrF** for any other task.
//!
//! Malformed output is never an error: it scores as wrong. A malformed *gold* target is an error
//! (see [`TaskMetric::check_gold`]) found before any decoding.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::metrics::normalize_label;
use crate::error::ModelError;

/// The metric a task is scored by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskMetric {
    /// Label accuracy, with macro-F1 beside it.
    Accuracy,
    /// Entity-span F1 of BIO-tagged tokens.
    SpanF1,
    /// Position-aligned token (tag) accuracy.
    TokenAccuracy,
    /// Exact match of the parsed frame, with intent accuracy beside it.
    Frame,
    /// Exact match of the whole output, with chrF beside it.
    Text,
}

/// Names of the values a cell can carry (keys of `CellScore::values`).
pub mod value {
    pub const ACCURACY: &str = "accuracy";
    pub const MACRO_F1: &str = "macro_f1";
    pub const SPAN_F1: &str = "span_f1";
    pub const SPAN_PRECISION: &str = "span_precision";
    pub const SPAN_RECALL: &str = "span_recall";
    pub const TOKEN_ACCURACY: &str = "token_accuracy";
    pub const FRAME_EXACT_MATCH: &str = "frame_exact_match";
    pub const INTENT_ACCURACY: &str = "intent_accuracy";
    pub const EXACT_MATCH: &str = "exact_match";
    pub const CHRF: &str = "chrf";
}

impl TaskMetric {
    pub const ALL: [TaskMetric; 5] = [
        TaskMetric::Accuracy,
        TaskMetric::SpanF1,
        TaskMetric::TokenAccuracy,
        TaskMetric::Frame,
        TaskMetric::Text,
    ];

    /// The name on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            TaskMetric::Accuracy => "accuracy",
            TaskMetric::SpanF1 => "span_f1",
            TaskMetric::TokenAccuracy => "token_accuracy",
            TaskMetric::Frame => "frame",
            TaskMetric::Text => "text",
        }
    }

    /// The key of the primary value in a cell's values.
    pub fn primary(self) -> &'static str {
        match self {
            TaskMetric::Accuracy => value::ACCURACY,
            TaskMetric::SpanF1 => value::SPAN_F1,
            TaskMetric::TokenAccuracy => value::TOKEN_ACCURACY,
            TaskMetric::Frame => value::FRAME_EXACT_MATCH,
            TaskMetric::Text => value::EXACT_MATCH,
        }
    }

    /// The primary value's name as a person reads it.
    pub fn title(self) -> &'static str {
        match self {
            TaskMetric::Accuracy => "accuracy",
            TaskMetric::SpanF1 => "span F1",
            TaskMetric::TokenAccuracy => "token accuracy",
            TaskMetric::Frame => "frame exact match",
            TaskMetric::Text => "exact match",
        }
    }

    /// The metric of a task by its name alone, for tasks a mixture's `tasks.json` does not
    /// describe: the label tasks topic, news, sentiment and copa; ner; pos; semparse.
    pub fn default_for_task(task: &str) -> Option<TaskMetric> {
        match task {
            "topic" | "news" | "sentiment" | "copa" => Some(TaskMetric::Accuracy),
            "ner" => Some(TaskMetric::SpanF1),
            "pos" => Some(TaskMetric::TokenAccuracy),
            "semparse" => Some(TaskMetric::Frame),
            _ => None,
        }
    }

    /// The metric a `tasks.json` `metric` text names. Only the primary metric counts: the text
    /// before the first `;` (secondary metrics such as "token accuracy as a secondary" follow it).
    /// The more specific phrases are tried first ("token accuracy" before "accuracy").
    pub fn from_description(text: &str) -> Option<TaskMetric> {
        let primary = text.split(';').next().unwrap_or("").to_lowercase();
        let has = |s: &str| primary.contains(s);
        if has("frame") {
            Some(TaskMetric::Frame)
        } else if (has("span") || has("entity")) && has("f1") {
            Some(TaskMetric::SpanF1)
        } else if has("token accuracy") {
            Some(TaskMetric::TokenAccuracy)
        } else if has("accuracy") {
            Some(TaskMetric::Accuracy)
        } else if has("exact match") || has("chrf") {
            Some(TaskMetric::Text)
        } else {
            None
        }
    }

    /// Whether `target` is a well-formed gold target for this metric (`labels`: the task's label
    /// set, when known). The error says what is wrong.
    pub fn check_gold(self, target: &str, labels: Option<&BTreeSet<String>>) -> Result<(), String> {
        match self {
            TaskMetric::Accuracy => match labels {
                Some(labels) if !labels.contains(&normalize_label(target)) => Err(format!(
                    "the label {target:?} is not one of the task's labels ({})",
                    labels.iter().cloned().collect::<Vec<_>>().join(", ")
                )),
                _ => Ok(()),
            },
            TaskMetric::SpanF1 => {
                for item in target.split_ascii_whitespace() {
                    if let Some((_, tag)) = item.rsplit_once('|') {
                        if ner_tag(tag).is_none() {
                            return Err(format!(
                                "the item {item:?} has the tag {tag:?}: expected B-X, I-X or O"
                            ));
                        }
                    }
                }
                Ok(())
            }
            TaskMetric::TokenAccuracy => {
                if target.split_ascii_whitespace().next().is_none() {
                    return Err("the target has no token".into());
                }
                match target
                    .split_ascii_whitespace()
                    .find(|item| pos_tag(item).is_none())
                {
                    Some(item) => Err(format!("the item {item:?} has no `|TAG`")),
                    None => Ok(()),
                }
            }
            TaskMetric::Frame => match parse_frame(target) {
                Some(_) => Ok(()),
                None => Err(format!(
                    "the target {target:?} is not a frame `[IN:intent [SL:slot value ] ... ]`"
                )),
            },
            TaskMetric::Text => Ok(()),
        }
    }
}

impl fmt::Display for TaskMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TaskMetric {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskMetric::ALL
            .into_iter()
            .find(|m| m.name() == s.trim())
            .ok_or_else(|| {
                ModelError::Invalid(format!(
                    "unknown task metric {s:?}: expected accuracy, span_f1, token_accuracy, \
                     frame or text"
                ))
            })
    }
}

// ---------------------------------------------------------------------------------------------
// Label accuracy and macro-F1.

/// Per-cell counts of a label task.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelStats {
    pub correct: usize,
    pub total: usize,
    /// Per class: (true positives, false positives, false negatives).
    pub classes: BTreeMap<String, (usize, usize, usize)>,
}

impl LabelStats {
    /// Adds one example: `labels` is the task's label set.
    pub fn add(&mut self, gold: &str, output: &str, labels: &BTreeSet<String>) {
        let gold = normalize_label(gold);
        let predicted = normalize_label(output);
        self.total += 1;
        if predicted == gold && labels.contains(&predicted) {
            self.correct += 1;
            self.classes.entry(gold).or_default().0 += 1;
            return;
        }
        self.classes.entry(gold).or_default().2 += 1;
        if labels.contains(&predicted) {
            self.classes.entry(predicted).or_default().1 += 1;
        }
    }

    pub fn accuracy(&self) -> f64 {
        ratio(self.correct, self.total)
    }

    /// The mean over the classes that occur of 2·tp / (2·tp + fp + fn).
    pub fn macro_f1(&self) -> f64 {
        let f1s: Vec<f64> = self
            .classes
            .values()
            .map(|&(tp, fp, fn_)| ratio(2 * tp, 2 * tp + fp + fn_))
            .collect();
        if f1s.is_empty() {
            0.0
        } else {
            f1s.iter().sum::<f64>() / f1s.len() as f64
        }
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

// ---------------------------------------------------------------------------------------------
// Entity spans.

/// A BIO tag of one token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BioTag {
    Outside,
    Begin(String),
    Inside(String),
}

/// The tag a `|`-suffix names: `O`, `B-X` or `I-X` (X not empty); anything else is not a tag.
fn ner_tag(suffix: &str) -> Option<BioTag> {
    if suffix == "O" {
        return Some(BioTag::Outside);
    }
    let (kind, entity) = suffix.split_once('-')?;
    if entity.is_empty() {
        return None;
    }
    match kind {
        "B" => Some(BioTag::Begin(entity.to_string())),
        "I" => Some(BioTag::Inside(entity.to_string())),
        _ => None,
    }
}

/// The BIO tag of every item (separated by ASCII whitespace) of `text`: a bare item (or one
/// whose suffix is not a tag) is outside.
pub fn bio_tags(text: &str) -> Vec<BioTag> {
    text.split_ascii_whitespace()
        .map(|item| {
            item.rsplit_once('|')
                .and_then(|(_, tag)| ner_tag(tag))
                .unwrap_or(BioTag::Outside)
        })
        .collect()
}

/// An entity: its type and its first and last token positions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    pub entity: String,
    pub start: usize,
    pub end: usize,
}

/// The spans of a tag sequence by the BIO rules of the module doc.
pub fn bio_spans(tags: &[BioTag]) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    let mut open: Option<Span> = None;
    for (i, tag) in tags.iter().enumerate() {
        match tag {
            BioTag::Outside => spans.extend(open.take()),
            BioTag::Begin(entity) => {
                spans.extend(open.take());
                open = Some(Span {
                    entity: entity.clone(),
                    start: i,
                    end: i,
                });
            }
            BioTag::Inside(entity) => match &mut open {
                Some(span) if &span.entity == entity => span.end = i,
                _ => {
                    spans.extend(open.take());
                    open = Some(Span {
                        entity: entity.clone(),
                        start: i,
                        end: i,
                    });
                }
            },
        }
    }
    spans.extend(open);
    spans
}

/// Summed span counts of a cell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanStats {
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
}

impl SpanStats {
    /// Adds one example.
    pub fn add(&mut self, gold: &str, output: &str) {
        let gold: BTreeSet<Span> = bio_spans(&bio_tags(gold)).into_iter().collect();
        let predicted: BTreeSet<Span> = bio_spans(&bio_tags(output)).into_iter().collect();
        let hits = gold.intersection(&predicted).count();
        self.true_positives += hits;
        self.false_positives += predicted.len() - hits;
        self.false_negatives += gold.len() - hits;
    }

    pub fn precision(&self) -> f64 {
        ratio(
            self.true_positives,
            self.true_positives + self.false_positives,
        )
    }

    pub fn recall(&self) -> f64 {
        ratio(
            self.true_positives,
            self.true_positives + self.false_negatives,
        )
    }

    pub fn f1(&self) -> f64 {
        ratio(
            2 * self.true_positives,
            2 * self.true_positives + self.false_positives + self.false_negatives,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Token accuracy.

/// The tag of a `token|TAG` item (split on the last `|`; both sides non-empty).
fn pos_tag(item: &str) -> Option<&str> {
    let (token, tag) = item.rsplit_once('|')?;
    (!token.is_empty() && !tag.is_empty()).then_some(tag)
}

/// Summed token counts of a cell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenStats {
    pub correct: usize,
    pub total: usize,
}

impl TokenStats {
    /// Adds one example: position-aligned tags, max(gold, output) tokens in the denominator.
    pub fn add(&mut self, gold: &str, output: &str) {
        let gold: Vec<Option<&str>> = gold.split_ascii_whitespace().map(pos_tag).collect();
        let predicted: Vec<Option<&str>> = output.split_ascii_whitespace().map(pos_tag).collect();
        self.total += gold.len().max(predicted.len());
        self.correct += gold
            .iter()
            .zip(&predicted)
            .filter(|(g, p)| g.is_some() && g == p)
            .count();
    }

    pub fn accuracy(&self) -> f64 {
        ratio(self.correct, self.total)
    }
}

// ---------------------------------------------------------------------------------------------
// Semantic-parsing frames.

/// A parsed frame: a bracketed node's label (`IN:...` or `SL:...`) and its children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub label: String,
    pub children: Vec<FrameItem>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameItem {
    Word(String),
    Node(Frame),
}

#[derive(Debug, PartialEq)]
enum FrameToken<'a> {
    /// `[` and the label that follows it.
    Open(&'a str),
    Close,
    Word(&'a str),
}

/// `[LABEL`, `]` and words; whitespace only separates them (`a]` is `a` then `]`).
fn frame_tokens(text: &str) -> Vec<FrameToken<'_>> {
    let mut tokens = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        let Some(c) = rest.chars().next() else {
            break;
        };
        let is_break = |ch: char| ch.is_whitespace() || ch == '[' || ch == ']';
        match c {
            ']' => {
                tokens.push(FrameToken::Close);
                rest = &rest[1..];
            }
            '[' => {
                let body = &rest[1..];
                let end = body.find(is_break).unwrap_or(body.len());
                tokens.push(FrameToken::Open(&body[..end]));
                rest = &body[end..];
            }
            _ => {
                let end = rest.find(is_break).unwrap_or(rest.len());
                tokens.push(FrameToken::Word(&rest[..end]));
                rest = &rest[end..];
            }
        }
    }
    tokens
}

/// Parses `[IN:intent ... ]`: one top-level intent node covering the whole text, nested `IN:` or
/// `SL:` nodes, balanced brackets. None for anything else.
pub fn parse_frame(text: &str) -> Option<Frame> {
    let tokens = frame_tokens(text);
    let mut position = 0;
    let frame = parse_node(&tokens, &mut position)?;
    let whole = position == tokens.len() && frame.label.starts_with("IN:");
    whole.then_some(frame)
}

fn parse_node(tokens: &[FrameToken], position: &mut usize) -> Option<Frame> {
    let FrameToken::Open(label) = tokens.get(*position)? else {
        return None;
    };
    let known = ["IN:", "SL:"]
        .iter()
        .any(|p| label.strip_prefix(p).is_some_and(|name| !name.is_empty()));
    if !known {
        return None;
    }
    *position += 1;
    let mut children = Vec::new();
    loop {
        match tokens.get(*position)? {
            FrameToken::Close => {
                *position += 1;
                return Some(Frame {
                    label: label.to_string(),
                    children,
                });
            }
            FrameToken::Word(word) => {
                children.push(FrameItem::Word(word.to_string()));
                *position += 1;
            }
            FrameToken::Open(_) => children.push(FrameItem::Node(parse_node(tokens, position)?)),
        }
    }
}

/// Summed frame counts of a cell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameStats {
    pub exact: usize,
    pub intent: usize,
    pub total: usize,
}

impl FrameStats {
    /// Adds one example (a gold that does not parse matches nothing).
    pub fn add(&mut self, gold: &str, output: &str) {
        self.total += 1;
        let (Some(gold), Some(predicted)) = (parse_frame(gold), parse_frame(output)) else {
            return;
        };
        self.exact += usize::from(gold == predicted);
        self.intent += usize::from(gold.label == predicted.label);
    }

    pub fn exact_match(&self) -> f64 {
        ratio(self.exact, self.total)
    }

    pub fn intent_accuracy(&self) -> f64 {
        ratio(self.intent, self.total)
    }
}

// ---------------------------------------------------------------------------------------------
// One cell's task metric.

/// The running counts of one cell under its task's metric.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskStats {
    Accuracy {
        labels: BTreeSet<String>,
        stats: LabelStats,
    },
    SpanF1(SpanStats),
    TokenAccuracy(TokenStats),
    Frame(FrameStats),
}

impl TaskStats {
    /// Empty counts for `metric` (None for [`TaskMetric::Text`], whose values are computed for
    /// every cell anyway). `labels` is the label set of an accuracy task.
    pub fn new(metric: TaskMetric, labels: BTreeSet<String>) -> Option<Self> {
        Some(match metric {
            TaskMetric::Accuracy => TaskStats::Accuracy {
                labels,
                stats: LabelStats::default(),
            },
            TaskMetric::SpanF1 => TaskStats::SpanF1(SpanStats::default()),
            TaskMetric::TokenAccuracy => TaskStats::TokenAccuracy(TokenStats::default()),
            TaskMetric::Frame => TaskStats::Frame(FrameStats::default()),
            TaskMetric::Text => return None,
        })
    }

    pub fn add(&mut self, gold: &str, output: &str) {
        match self {
            TaskStats::Accuracy { labels, stats } => stats.add(gold, output, labels),
            TaskStats::SpanF1(s) => s.add(gold, output),
            TaskStats::TokenAccuracy(s) => s.add(gold, output),
            TaskStats::Frame(s) => s.add(gold, output),
        }
    }

    /// The named values, each a fraction in [0, 1].
    pub fn values(&self) -> BTreeMap<String, f64> {
        let pairs: Vec<(&str, f64)> = match self {
            TaskStats::Accuracy { stats, .. } => vec![
                (value::ACCURACY, stats.accuracy()),
                (value::MACRO_F1, stats.macro_f1()),
            ],
            TaskStats::SpanF1(s) => vec![
                (value::SPAN_F1, s.f1()),
                (value::SPAN_PRECISION, s.precision()),
                (value::SPAN_RECALL, s.recall()),
            ],
            TaskStats::TokenAccuracy(s) => vec![(value::TOKEN_ACCURACY, s.accuracy())],
            TaskStats::Frame(s) => vec![
                (value::FRAME_EXACT_MATCH, s.exact_match()),
                (value::INTENT_ACCURACY, s.intent_accuracy()),
            ],
        };
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Which metric each task gets.

/// A task's metric and, for a label task, its label set (normalized).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskEntry {
    pub metric: TaskMetric,
    pub labels: Option<BTreeSet<String>>,
}

/// A task as a mixture describes it (`tasks.json`): its metric text and its labels, if any.
pub use flix_core::TaskInfo as TaskDescription;

/// The metric of each task: from a mixture's task descriptions where they exist, else from the
/// task's name ([`TaskMetric::default_for_task`]), else the label rule of [`super::metrics`]
/// (accuracy when the task's targets form a small repeated label set), else exact match and chrF.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskMetrics {
    described: BTreeMap<String, TaskEntry>,
}

impl TaskMetrics {
    /// No task descriptions: names and the label rule decide.
    pub fn by_name() -> Self {
        Self::default()
    }

    /// The metrics `descriptions` (task name → description) name. When `strict` (`--metric
    /// auto`), a metric text this module does not know, or a described task without a metric
    /// whose name has no default, is an error naming the task; otherwise such a task falls back
    /// to its name's default, or to the label rule and exact match.
    pub fn from_descriptions(
        descriptions: &BTreeMap<String, TaskDescription>,
        strict: bool,
    ) -> Result<Self, ModelError> {
        let mut described = BTreeMap::new();
        for (task, d) in descriptions {
            let metric = match &d.metric {
                Some(text) => match TaskMetric::from_description(text) {
                    Some(m) => Some(m),
                    None if strict => {
                        return Err(ModelError::Invalid(format!(
                            "task {task:?}: unknown metric {text:?} in the task descriptions \
                             (known: accuracy, entity-span F1, token accuracy, exact match of \
                             the frame, exact match, chrF)"
                        )))
                    }
                    None => TaskMetric::default_for_task(task),
                },
                None => match TaskMetric::default_for_task(task) {
                    Some(m) => Some(m),
                    None if strict => {
                        return Err(ModelError::Invalid(format!(
                            "task {task:?}: the task descriptions give no metric, and the name \
                             has no default; add a \"metric\" text (e.g. \"accuracy\", \
                             \"exact match\")"
                        )))
                    }
                    None => None,
                },
            };
            if let Some(metric) = metric {
                let labels = d
                    .labels
                    .as_ref()
                    .map(|ls| ls.iter().map(|l| normalize_label(l)).collect());
                described.insert(task.clone(), TaskEntry { metric, labels });
            }
        }
        Ok(Self { described })
    }

    /// The metric of every task (by [`super::metrics::task_key`]) of `examples`, with label sets
    /// filled in from the gold targets where no description gives them. Every gold target is
    /// checked against its task's metric here: a malformed one is an error naming its file and
    /// line, before any decoding.
    pub fn resolve(
        &self,
        examples: &[flix_core::Example],
    ) -> Result<BTreeMap<String, TaskEntry>, ModelError> {
        let detected = super::metrics::LabelTasks::detect(examples);
        let mut entries: BTreeMap<String, TaskEntry> = BTreeMap::new();
        let mut gold_labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for ex in examples {
            let key = super::metrics::task_key(ex);
            gold_labels
                .entry(key.clone())
                .or_default()
                .insert(normalize_label(&ex.target));
            if entries.contains_key(&key) {
                continue;
            }
            let task = ex.features.get("task").map(String::as_str);
            let entry = match task.and_then(|t| self.described.get(t)) {
                Some(entry) => entry.clone(),
                None => match task.and_then(TaskMetric::default_for_task) {
                    Some(metric) => TaskEntry {
                        metric,
                        labels: None,
                    },
                    None => match detected.labels_of(ex) {
                        Some(labels) => TaskEntry {
                            metric: TaskMetric::Accuracy,
                            labels: Some(labels.clone()),
                        },
                        None => TaskEntry {
                            metric: TaskMetric::Text,
                            labels: None,
                        },
                    },
                },
            };
            entries.insert(key, entry);
        }
        for (key, entry) in entries.iter_mut() {
            if entry.metric == TaskMetric::Accuracy && entry.labels.is_none() {
                entry.labels = gold_labels.remove(key);
            }
        }
        for ex in examples {
            let key = super::metrics::task_key(ex);
            if let Some(entry) = entries.get(&key) {
                entry
                    .metric
                    .check_gold(&ex.target, entry.labels.as_ref())
                    .map_err(|m| {
                        ModelError::Invalid(format!(
                            "{}: {key} ({}): {m}",
                            ex.location,
                            entry.metric.title()
                        ))
                    })?;
            }
        }
        Ok(entries)
    }
}

#[cfg(test)]
#[path = "task_metric_tests.rs"]
mod tests;
