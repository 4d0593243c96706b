//! The generated demo mixture: deterministic, the right sizes, correct targets, clean knowledge
//! text, and JSONL files that round-trip through serde_json.

mod demo_tables;

use std::collections::{BTreeMap, BTreeSet};

use flix_demo::{
    check_knowledge, generate, read_jsonl, write_dir, Cell, DemoConfig, DemoError, DemoExample,
    KnowledgeKind, KnowledgeLine, Task, DEV_FILE, HELDOUT_FILE, KNOWLEDGE_FILE, TEST_FILE,
    TRAIN_FILE,
};

/// Every language of the hand-written tables.
fn all_codes() -> Vec<&'static str> {
    demo_tables::NUMBER_WORDS.iter().map(|(c, _)| *c).collect()
}

/// The demo's first four tasks: with a date task, so the knowledge has months and dates too.
const FIRST_TASKS: [Task; 4] = [
    Task::Num2Words,
    Task::Words2Num,
    Task::Date,
    Task::Successor,
];

/// The test examples of the held-out cells.
fn heldout_test_examples(m: &flix_demo::DemoMixture) -> Vec<DemoExample> {
    m.test
        .iter()
        .filter(|e| m.is_heldout(&e.lang, &e.task))
        .cloned()
        .collect()
}

fn all_examples(m: &flix_demo::DemoMixture) -> impl Iterator<Item = &DemoExample> {
    m.train.iter().chain(&m.dev).chain(&m.test)
}

#[test]
fn the_same_seed_gives_the_same_mixture_and_another_seed_another() {
    let config = DemoConfig::tiny();
    let a = generate(&config).expect("generates");
    let b = generate(&config).expect("generates");
    assert_eq!(a, b);
    let other = generate(&DemoConfig { seed: 1, ..config }).expect("generates");
    assert_eq!(other.train.len(), a.train.len());
    let differing = a
        .train
        .iter()
        .zip(&other.train)
        .filter(|(x, y)| x != y)
        .count();
    assert!(
        differing > a.train.len() / 2,
        "seed 1 changed only {differing} examples"
    );
}

#[test]
fn one_cells_size_does_not_change_another_cells_examples() {
    let small = generate(&DemoConfig::tiny()).expect("generates");
    let big = generate(&DemoConfig {
        train_per_cell: 20,
        ..DemoConfig::tiny()
    })
    .expect("generates");
    // Dev and test come from their own streams.
    assert_eq!(small.dev, big.dev);
    assert_eq!(small.test, big.test);
    // A cell's first examples do not depend on how many follow.
    let first = |m: &flix_demo::DemoMixture| -> Vec<DemoExample> {
        m.train
            .iter()
            .filter(|e| e.lang == "fra" && e.task == "num2words")
            .take(8)
            .cloned()
            .collect()
    };
    assert_eq!(first(&small), first(&big));
}

#[test]
fn sizes_ids_and_fields_are_as_configured() {
    let config = DemoConfig::tiny();
    let m = generate(&config).expect("generates");
    let cells = config.languages.len() * config.tasks.len();
    assert_eq!(
        m.train.len(),
        (cells - config.heldout.len()) * config.train_per_cell
    );
    assert_eq!(m.dev.len(), cells * config.dev_per_cell);
    assert_eq!(m.test.len(), cells * config.test_per_cell);
    let ids: BTreeSet<&str> = all_examples(&m).map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        m.train.len() + m.dev.len() + m.test.len(),
        "ids are not unique"
    );
    for e in all_examples(&m) {
        assert!(config.languages.contains(&e.lang));
        assert!(e.task.parse::<Task>().is_ok(), "{}", e.task);
        assert!(!e.input.is_empty() && !e.target.is_empty(), "{e:?}");
        assert!(e.target.split(' ').count() <= 6, "target too long: {e:?}");
        assert_eq!(e.source, "flix-demo");
        assert!(
            e.id.starts_with(&format!("flix-demo:{}:", e.lang)),
            "{}",
            e.id
        );
    }
}

#[test]
fn number_targets_agree_with_the_hand_written_tables() {
    let m = generate(&DemoConfig::for_grid(&all_codes(), &Task::ALL)).expect("generates");
    let mut checked_tasks = BTreeSet::new();
    let mut checked = 0;
    for (code, _) in demo_tables::NUMBER_WORDS {
        let table: BTreeMap<u32, String> = demo_tables::number_words(code).into_iter().collect();
        let by_words: BTreeMap<&str, u32> = table.iter().map(|(n, w)| (w.as_str(), *n)).collect();
        for e in all_examples(&m).filter(|e| e.lang == code) {
            let ok = match e.task.as_str() {
                "num2words" => match table.get(&e.input.parse::<u32>().expect("digits")) {
                    Some(words) => words == &e.target,
                    None => continue,
                },
                "words2num" => match by_words.get(e.input.as_str()) {
                    Some(n) => n.to_string() == e.target,
                    None => continue,
                },
                "successor" => match (
                    by_words.get(e.input.as_str()),
                    by_words.get(e.target.as_str()),
                ) {
                    (Some(a), Some(b)) => a + 1 == *b,
                    _ => continue,
                },
                // Digits in, a number out in words: the target is the table's words for the
                // number the task makes of the input.
                "next" | "previous" | "reverse" | "double" | "plus10" | "minus10" => {
                    let n: u32 = e.input.parse().expect("digits");
                    let (tens, units) = (n / 10, n % 10);
                    let expected = match e.task.as_str() {
                        "next" => n + 1,
                        "previous" => n.checked_sub(1).expect("previous of 0"),
                        "reverse" => {
                            assert!(tens > 0, "reverse of a one-digit number: {e:?}");
                            units * 10 + tens
                        }
                        "double" => 2 * n,
                        "plus10" => n + 10,
                        _ => n.checked_sub(10).expect("minus10 of a one-digit number"),
                    };
                    match table.get(&expected) {
                        Some(words) => words == &e.target,
                        None => continue,
                    }
                }
                _ => continue,
            };
            assert!(ok, "{e:?}");
            checked_tasks.insert(e.task.clone());
            checked += 1;
        }
    }
    for task in Task::ALL.iter().filter(|t| **t != Task::Date) {
        assert!(checked_tasks.contains(task.name()), "{task} never checked");
    }
    assert!(
        checked > 1000,
        "only {checked} examples were checked against the tables"
    );
}

/// Leap years by the textbook rule, written independently of the code under test.
fn days_in(year: u32, month: u32) -> u32 {
    let leap = year.is_multiple_of(400) || (year.is_multiple_of(4) && !year.is_multiple_of(100));
    [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ][month as usize - 1]
}

#[test]
fn date_targets_spell_the_input_date_in_the_language() {
    let m = generate(&DemoConfig::for_grid(&all_codes(), &FIRST_TASKS)).expect("generates");
    let mut dates = 0;
    for e in all_examples(&m).filter(|e| e.task == "date") {
        let parts: Vec<u32> = e
            .input
            .split('-')
            .map(|p| p.parse().expect("number"))
            .collect();
        let [year, month, day] = parts[..] else {
            panic!("not an ISO date: {}", e.input)
        };
        assert_eq!(e.input.len(), 10, "{}", e.input);
        assert!(
            (1..=12).contains(&month) && day >= 1 && day <= days_in(year, month),
            "{}",
            e.input
        );
        let month_name = demo_tables::month_names(&e.lang)[month as usize - 1];
        assert!(e.target.contains(month_name), "{e:?}");
        assert!(e.target.ends_with(&year.to_string()), "{e:?}");
        let day_written = e.target.split(' ').next().expect("a word");
        let day_digits: String = day_written
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        assert_eq!(day_digits, day.to_string(), "{e:?}");
        dates += 1;
    }
    // 8 languages, 2 of them hold the date task out: 6 train cells, 8 dev and 8 test cells.
    assert_eq!(dates, 6 * 200 + 8 * 50 + 8 * 50);
}

#[test]
fn number_tasks_use_every_number_equally_often() {
    let config = DemoConfig::for_grid(&["eng", "deu"], &Task::ALL);
    assert_eq!(config.train_per_cell, 200);
    let m = generate(&config).expect("generates");
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for e in m
        .train
        .iter()
        .filter(|e| e.lang == "deu" && e.task == "num2words")
    {
        *counts.entry(e.input.as_str()).or_default() += 1;
    }
    assert_eq!(counts.len(), 100, "not every number 0..=99 appears");
    assert!(
        counts.values().all(|&c| c == 2),
        "200 examples of 100 numbers: each twice"
    );
}

#[test]
fn jsonl_files_round_trip_through_serde_json() {
    let m = generate(&DemoConfig::tiny()).expect("generates");
    let dir = tempfile::tempdir().expect("temp dir");
    let written = write_dir(&m, dir.path()).expect("writes");
    assert_eq!(written.len(), 5);
    for (file, examples) in [
        (TRAIN_FILE, &m.train),
        (DEV_FILE, &m.dev),
        (TEST_FILE, &m.test),
    ] {
        let path = dir.path().join(file);
        assert_eq!(&read_jsonl(&path).expect("reads"), examples, "{file}");
        let text = std::fs::read_to_string(&path).expect("reads");
        assert_eq!(text.lines().count(), examples.len());
        for (line, example) in text.lines().zip(examples) {
            let value: serde_json::Value = serde_json::from_str(line).expect("JSON");
            let object = value.as_object().expect("an object per line");
            let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
            let want: BTreeSet<&str> = ["id", "lang", "task", "input", "target", "source"].into();
            assert_eq!(keys, want);
            assert_eq!(object["input"].as_str(), Some(example.input.as_str()));
            assert_eq!(object["target"].as_str(), Some(example.target.as_str()));
        }
    }
    let knowledge = std::fs::read_to_string(dir.path().join(KNOWLEDGE_FILE)).expect("reads");
    let lines: Vec<&str> = knowledge.lines().collect();
    let want: Vec<&str> = m.knowledge.iter().map(|k| k.text.as_str()).collect();
    assert_eq!(lines, want);
    let heldout: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(HELDOUT_FILE)).expect("reads"),
    )
    .expect("JSON");
    let cells: Vec<Cell> = serde_json::from_value(heldout["heldout"].clone()).expect("cells");
    assert_eq!(cells, m.heldout);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("lists")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
}

#[test]
fn a_malformed_line_is_reported_with_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.jsonl");
    let good = r#"{"id":"a","lang":"eng","task":"date","input":"x","target":"y","source":"s"}"#;
    std::fs::write(&path, format!("{good}\n{{\"id\": 3}}\n")).expect("writes");
    let err = read_jsonl(&path).expect_err("line 2 is bad");
    assert!(matches!(err, DemoError::Json { line: 2, .. }), "{err}");
    assert!(err.to_string().contains("bad.jsonl:2"), "{err}");
}

#[test]
fn knowledge_covers_every_language_without_heldout_examples_in_task_form() {
    let config = DemoConfig::for_grid(&all_codes(), &FIRST_TASKS);
    let m = generate(&config).expect("generates");
    for code in &config.languages {
        for kind in [
            KnowledgeKind::Counting,
            KnowledgeKind::NumberSentence,
            KnowledgeKind::MonthList,
            KnowledgeKind::MonthOrder,
            KnowledgeKind::MonthNumber,
            KnowledgeKind::DateSentence,
        ] {
            assert!(
                m.knowledge
                    .iter()
                    .any(|k| &k.lang == code && k.kind == kind),
                "{code} {kind:?}"
            );
        }
        // Every number word of the hand-written table appears in the language's text.
        let text: String = m
            .knowledge
            .iter()
            .filter(|k| &k.lang == code)
            .map(|k| k.text.as_str())
            .collect();
        for (_, words) in demo_tables::number_words(code) {
            assert!(text.contains(&words), "{code}: {words} never appears");
        }
    }
    for line in &m.knowledge {
        let bytes = line.text.as_bytes();
        let iso_date = bytes.windows(10).any(|w| {
            w.iter().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    *b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            })
        });
        assert!(!iso_date, "knowledge holds an ISO date: {}", line.text);
        assert!(
            !line.text.contains('<') && !line.text.contains('='),
            "{}",
            line.text
        );
    }
    // No counting line pairs a number with its successor: steps are two and ten.
    let heldout: Vec<DemoExample> = m
        .dev
        .iter()
        .chain(&m.test)
        .filter(|e| m.is_heldout(&e.lang, &e.task))
        .cloned()
        .collect();
    assert!(heldout.iter().any(|e| e.task == "successor"));
    check_knowledge(&m.knowledge, &heldout).expect("clean");
}

#[test]
fn without_a_date_task_the_knowledge_is_about_numbers_only() {
    let m = generate(&DemoConfig::for_grid(&all_codes(), &Task::DEMO)).expect("generates");
    let kinds: BTreeSet<String> = m
        .knowledge
        .iter()
        .map(|k| format!("{:?}", k.kind))
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["Counting".to_string(), "NumberSentence".to_string()])
    );
    let heldout = heldout_test_examples(&m);
    assert!(heldout.iter().any(|e| e.task == "next"));
    check_knowledge(&m.knowledge, &heldout).expect("clean");
}

#[test]
fn check_knowledge_catches_a_planted_example() {
    let m = generate(&DemoConfig::tiny()).expect("generates");
    let held = heldout_test_examples(&m);
    for example in held.iter().take(8) {
        for planted in [
            format!("Look: {}: {}", example.input, example.target),
            format!("{} -> {}", example.input, example.target),
            example.target.clone(),
        ] {
            let mut knowledge = m.knowledge.clone();
            knowledge.push(KnowledgeLine {
                lang: example.lang.clone(),
                kind: KnowledgeKind::NumberSentence,
                text: planted.clone(),
            });
            let err = check_knowledge(&knowledge, &held).expect_err(&planted);
            assert!(matches!(err, DemoError::KnowledgeLeak { .. }), "{err}");
        }
    }
}

#[test]
fn the_grid_layout_matches_the_real_mixture_and_leaves_heldout_cells_untrained() {
    let m = generate(&DemoConfig::tiny()).expect("generates");
    let dir = tempfile::tempdir().expect("temp dir");
    flix_demo::write_grid_dir(&m, dir.path()).expect("writes");
    let mut read_back: Vec<DemoExample> = Vec::new();
    let mut files = 0;
    for e in std::fs::read_dir(dir.path())
        .expect("lists")
        .filter_map(|e| e.ok())
    {
        if !e.path().is_dir() {
            continue;
        }
        let task = e.file_name().to_string_lossy().to_string();
        for l in std::fs::read_dir(e.path())
            .expect("lists")
            .filter_map(|l| l.ok())
        {
            let lang = l.file_name().to_string_lossy().to_string();
            let train = l.path().join(TRAIN_FILE);
            assert_eq!(train.exists(), !m.is_heldout(&lang, &task), "{task}/{lang}");
            for file in [TRAIN_FILE, DEV_FILE, TEST_FILE] {
                let path = l.path().join(file);
                if !path.exists() {
                    continue;
                }
                let examples = read_jsonl(&path).expect("reads");
                assert!(
                    examples.iter().all(|x| x.task == task && x.lang == lang),
                    "{path:?}"
                );
                read_back.extend(examples);
                files += 1;
            }
        }
    }
    // 32 cells × (dev, test) + 24 trained cells × train.
    assert_eq!(files, 32 * 2 + 24);
    let mut expected: Vec<DemoExample> = all_examples(&m).cloned().collect();
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    read_back.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(read_back, expected);
    assert!(dir.path().join(KNOWLEDGE_FILE).exists() && dir.path().join(HELDOUT_FILE).exists());
}
