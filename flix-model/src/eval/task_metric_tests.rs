//! Each metric on small cases computed by hand, including malformed outputs.

use super::*;

fn labels(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn accuracy_and_macro_f1_by_hand() {
    let set = labels(&["pos", "neg", "neu"]);
    let mut stats = LabelStats::default();
    for (gold, output) in [
        ("pos", "pos"),
        ("pos", "neg"),
        ("neg", "neg"),
        ("neu", "banana"), // outside the label set: wrong, a false positive of no class
        ("neu", " Neu "),  // normalized: right
        ("neg", "POS"),
    ] {
        stats.add(gold, output, &set);
    }
    assert_eq!((stats.correct, stats.total), (3, 6));
    assert!(close(stats.accuracy(), 0.5));
    // pos: tp 1, fp 1, fn 1 → 1/2; neg: tp 1, fp 1, fn 1 → 1/2; neu: tp 1, fn 1 → 2/3.
    assert!(close(stats.macro_f1(), (0.5 + 0.5 + 2.0 / 3.0) / 3.0));
    // Empty output: wrong.
    let mut empty = LabelStats::default();
    empty.add("pos", "", &set);
    assert_eq!(empty.accuracy(), 0.0);
    assert_eq!(empty.macro_f1(), 0.0);
}

#[test]
fn bio_spans_follow_seqeval_rules() {
    let spans = |text: &str| -> Vec<(String, usize, usize)> {
        bio_spans(&bio_tags(text))
            .into_iter()
            .map(|s| (s.entity, s.start, s.end))
            .collect()
    };
    let s = |e: &str, a, b| (e.to_string(), a, b);
    assert_eq!(
        spans("A|B-PER B|I-PER c D|B-LOC"),
        [s("PER", 0, 1), s("LOC", 3, 3)]
    );
    // A stray I-X starts a span; I of another type ends the span and starts its own.
    assert_eq!(spans("x|I-ORG y|I-ORG z"), [s("ORG", 0, 1)]);
    assert_eq!(spans("a|B-PER b|I-LOC"), [s("PER", 0, 0), s("LOC", 1, 1)]);
    // B after I starts a new span of the same type.
    assert_eq!(
        spans("a|I-PER b|B-PER c|I-PER"),
        [s("PER", 0, 0), s("PER", 1, 2)]
    );
    // `O`, bare tokens and malformed tags are outside; items split on their last `|`.
    assert_eq!(spans("a|O b c|B- d|X-PER e|f|B-DATE"), [s("DATE", 4, 4)]);
    assert_eq!(spans(""), []);
}

#[test]
fn span_f1_by_hand_with_malformed_outputs() {
    let mut stats = SpanStats::default();
    // PER right, LOC predicted as ORG: tp 1, fp 1, fn 1.
    stats.add(
        "Ali|B-PER went to Lagos|B-LOC",
        "Ali|B-PER went to Lagos|B-ORG",
    );
    // Empty output: the gold span is missed (fn 1).
    stats.add("New|B-LOC York|I-LOC", "");
    // A span where the gold has none: fp 1.
    stats.add("x y", "x|B-PER y");
    assert_eq!(
        (
            stats.true_positives,
            stats.false_positives,
            stats.false_negatives
        ),
        (1, 2, 2)
    );
    assert!(close(stats.precision(), 1.0 / 3.0));
    assert!(close(stats.recall(), 1.0 / 3.0));
    assert!(close(stats.f1(), 1.0 / 3.0));

    // Missing tags: no predicted spans.
    let mut untagged = SpanStats::default();
    untagged.add("Ali|B-PER went", "Ali went");
    assert_eq!(untagged.f1(), 0.0);
    assert_eq!(untagged.false_negatives, 1);
    // An extra token shifts the later span: the first still counts, the shifted one does not.
    let mut shifted = SpanStats::default();
    shifted.add(
        "Ali|B-PER went to Lagos|B-LOC",
        "Ali|B-PER Ali went to Lagos|B-LOC",
    );
    assert_eq!(
        (
            shifted.true_positives,
            shifted.false_positives,
            shifted.false_negatives
        ),
        (1, 1, 1)
    );
    // Neither gold nor predicted spans: F1 0, as seqeval gives.
    let mut none = SpanStats::default();
    none.add("a b", "a b");
    assert_eq!(none.f1(), 0.0);
}

#[test]
fn token_accuracy_counts_missing_and_extra_tokens_as_wrong() {
    let gold = "a|DET b|NOUN c|VERB";
    let score = |output: &str| {
        let mut s = TokenStats::default();
        s.add(gold, output);
        (s.correct, s.total)
    };
    assert_eq!(score("a|DET b|NOUN c|VERB"), (3, 3));
    assert_eq!(score("a|DET b|VERB c|VERB"), (2, 3));
    assert_eq!(score("a|DET b|NOUN"), (2, 3));
    assert_eq!(score("a|DET b|NOUN c|VERB d|X"), (3, 4));
    assert_eq!(score("a b c"), (0, 3));
    assert_eq!(score("a|DET |NOUN c|"), (1, 3));
    assert_eq!(score(""), (0, 3));
    // Items are separated by ASCII whitespace only: `25 000` (a no-break space) is one token.
    let mut nbsp = TokenStats::default();
    nbsp.add("de|ADP 25\u{a0}000|NUM", "de|ADP  25\u{a0}000|NUM");
    assert_eq!((nbsp.correct, nbsp.total), (2, 2));
    nbsp.add("25\u{a0}000|NUM", "25 000|NUM");
    assert_eq!((nbsp.correct, nbsp.total), (2, 4));
    // Over a cell: summed counts, not a mean of example accuracies.
    let mut cell = TokenStats::default();
    cell.add(gold, "a|DET b|NOUN c|VERB d|X");
    cell.add("x|PRON", "x|NOUN");
    assert!(close(cell.accuracy(), 3.0 / 5.0));
}

#[test]
fn frames_compare_parsed_not_as_strings() {
    let gold = "[IN:reminder/set [SL:todo buy gas ] [SL:time at 5 ] ]";
    let score = |output: &str| {
        let mut s = FrameStats::default();
        s.add(gold, output);
        (s.exact, s.intent)
    };
    assert_eq!(score(gold), (1, 1));
    // Whitespace between brackets and words does not matter.
    assert_eq!(
        score("  [IN:reminder/set [SL:todo buy   gas] [SL:time at 5]]"),
        (1, 1)
    );
    // Another slot value, or slot order: the intent is right, the frame is not.
    assert_eq!(
        score("[IN:reminder/set [SL:todo buy oil ] [SL:time at 5 ] ]"),
        (0, 1)
    );
    assert_eq!(
        score("[IN:reminder/set [SL:time at 5 ] [SL:todo buy gas ] ]"),
        (0, 1)
    );
    assert_eq!(score("[IN:weather/find ]"), (0, 0));
    // Unbalanced brackets, text outside the frame, no intent at the top, empty: wrong.
    assert_eq!(
        score("[IN:reminder/set [SL:todo buy gas ] [SL:time at 5 ]"),
        (0, 0)
    );
    assert_eq!(
        score("[IN:reminder/set [SL:todo buy gas ] [SL:time at 5 ] ] ]"),
        (0, 0)
    );
    assert_eq!(
        score("sure: [IN:reminder/set [SL:todo buy gas ] [SL:time at 5 ] ]"),
        (0, 0)
    );
    assert_eq!(score("[SL:todo buy gas ]"), (0, 0));
    assert_eq!(score("[IN: ]"), (0, 0));
    assert_eq!(score(""), (0, 0));
    let frame = parse_frame("[IN:a x [SL:b y ] ]").unwrap();
    assert_eq!(
        frame,
        Frame {
            label: "IN:a".into(),
            children: vec![
                FrameItem::Word("x".into()),
                FrameItem::Node(Frame {
                    label: "SL:b".into(),
                    children: vec![FrameItem::Word("y".into())],
                }),
            ],
        }
    );
    let mut cell = FrameStats::default();
    cell.add(gold, gold);
    cell.add(gold, "[IN:reminder/set ]");
    cell.add(gold, "[IN:other ]");
    assert!(close(cell.exact_match(), 1.0 / 3.0));
    assert!(close(cell.intent_accuracy(), 2.0 / 3.0));
}

#[test]
fn metric_descriptions_map_to_metrics() {
    for (text, want) in [
        ("accuracy", Some(TaskMetric::Accuracy)),
        (
            "accuracy (exact match on the label)",
            Some(TaskMetric::Accuracy),
        ),
        ("accuracy / macro-F1", Some(TaskMetric::Accuracy)),
        ("accuracy (chance = 50%)", Some(TaskMetric::Accuracy)),
        ("entity-span F1", Some(TaskMetric::SpanF1)),
        ("span F1", Some(TaskMetric::SpanF1)),
        (
            "entity-level (span) F1 after parsing the BIO tags; token accuracy as a secondary",
            Some(TaskMetric::SpanF1),
        ),
        ("token accuracy", Some(TaskMetric::TokenAccuracy)),
        (
            "token accuracy (position-aligned)",
            Some(TaskMetric::TokenAccuracy),
        ),
        ("exact match of the frame", Some(TaskMetric::Frame)),
        (
            "exact match of the whole frame; intent accuracy and slot F1 as secondaries",
            Some(TaskMetric::Frame),
        ),
        ("exact match", Some(TaskMetric::Text)),
        ("BLEU", None),
        ("", None),
    ] {
        assert_eq!(TaskMetric::from_description(text), want, "{text:?}");
    }
    for m in TaskMetric::ALL {
        assert_eq!(m.name().parse::<TaskMetric>().unwrap(), m);
    }
}

fn example(task: &str, target: &str, line: usize) -> flix_core::Example {
    flix_core::Example {
        location: flix_core::Location {
            file: std::path::Path::new("test.jsonl").into(),
            line,
        },
        id: None,
        features: [("task".to_string(), task.to_string())].into(),
        input: "x".into(),
        target: target.into(),
    }
}

#[test]
fn tasks_get_described_metrics_then_name_defaults_then_the_label_rule() {
    let descriptions: BTreeMap<String, TaskDescription> = [
        (
            "tags".to_string(),
            TaskDescription {
                metric: Some("token accuracy".into()),
                labels: None,
            },
        ),
        (
            "sentiment".to_string(),
            TaskDescription {
                metric: Some("accuracy / macro-F1".into()),
                labels: Some(vec!["Positive".into(), "negative".into()]),
            },
        ),
        (
            "odd".to_string(),
            TaskDescription {
                metric: Some("BLEU".into()),
                labels: None,
            },
        ),
    ]
    .into();
    let err = TaskMetrics::from_descriptions(&descriptions, true).unwrap_err();
    assert!(
        err.to_string().contains("\"odd\"") && err.to_string().contains("BLEU"),
        "{err}"
    );
    // A described task without a metric: its name's default, else an error under auto.
    let no_metric = |task: &str| -> BTreeMap<String, TaskDescription> {
        [(task.to_string(), TaskDescription::default())].into()
    };
    assert!(TaskMetrics::from_descriptions(&no_metric("ner"), true).is_ok());
    let err = TaskMetrics::from_descriptions(&no_metric("quiz"), true).unwrap_err();
    assert!(
        err.to_string().contains("\"quiz\"") && err.to_string().contains("no metric"),
        "{err}"
    );
    assert!(TaskMetrics::from_descriptions(&no_metric("quiz"), false).is_ok());
    let tasks = TaskMetrics::from_descriptions(&descriptions, false).unwrap();
    let examples = vec![
        example("tags", "a|X", 1),
        example("sentiment", "positive", 2),
        example("ner", "a|B-PER", 3),
        example("pick", "one", 4),
        example("pick", "one", 5),
        example("odd", "free text", 6),
    ];
    let entries = tasks.resolve(&examples).unwrap();
    let metric = |t: &str| entries[&format!("task={t}")].metric;
    assert_eq!(metric("tags"), TaskMetric::TokenAccuracy);
    assert_eq!(metric("sentiment"), TaskMetric::Accuracy);
    assert_eq!(
        entries["task=sentiment"].labels,
        Some(labels(&["positive", "negative"]))
    );
    assert_eq!(metric("ner"), TaskMetric::SpanF1);
    assert_eq!(metric("pick"), TaskMetric::Accuracy);
    assert_eq!(metric("odd"), TaskMetric::Text);

    // Malformed gold targets are errors naming file and line.
    for (bad, line) in [
        (example("sentiment", "mixed", 7), "test.jsonl:7"),
        (example("ner", "a|X-PER", 8), "test.jsonl:8"),
        (example("tags", "a b|X", 9), "test.jsonl:9"),
        (example("semparse", "[IN:a [SL:b c ]", 10), "test.jsonl:10"),
    ] {
        let err = tasks.resolve(&[bad]).unwrap_err().to_string();
        assert!(err.contains(line), "{err}");
    }
}
