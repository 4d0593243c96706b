//! Mixture roots (`<task>/<lang>/{train,dev,test}.jsonl`, tasks.json) and split files: what is
//! read, the per-cell cap, and the errors for each kind of bad input.

use std::path::{Path, PathBuf};

use flix_core::{read_split_file, Mixture, Split};

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

fn line(lang: Option<&str>, task: Option<&str>, input: &str) -> String {
    let mut record = serde_json::json!({"input": input, "target": "t"});
    if let Some(l) = lang {
        record["lang"] = l.into();
    }
    if let Some(t) = task {
        record["task"] = t.into();
    }
    format!("{record}\n")
}

/// ner/{hau,yor}, topic/hau; test files for all, a dev file for ner/hau only.
fn mixture(root: &Path) {
    for (task, lang) in [("ner", "hau"), ("ner", "yor"), ("topic", "hau")] {
        let dir = root.join(task).join(lang);
        let train: String = (0..3)
            .map(|i| line(Some(lang), Some(task), &format!("{task}-{lang}-{i}")))
            .collect();
        write(&dir.join("train.jsonl"), &train);
        write(&dir.join("test.jsonl"), &line(None, None, "test"));
    }
    write(&root.join("ner/hau/dev.jsonl"), &line(None, None, "dev"));
    // Not cells: a file at the root, a folder without split files, a hidden folder.
    write(&root.join("stats.tsv"), "x");
    write(&root.join("topic/notes/readme.txt"), "x");
    write(
        &root.join("topic/.cache/train.jsonl"),
        &line(None, None, "x"),
    );
}

#[test]
fn cells_examples_caps_and_folder_features() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("m");
    mixture(&root);
    let m = Mixture::open(&root).unwrap();
    let names: Vec<String> = m.cells.iter().map(|c| c.name()).collect();
    assert_eq!(
        names,
        [
            "lang=hau,task=ner",
            "lang=yor,task=ner",
            "lang=hau,task=topic"
        ]
    );
    assert!(m.has_value("lang", "yor") && !m.has_value("lang", "swa"));

    let all = m
        .read(Split::Train, &["lang", "task"], None, |_| true)
        .unwrap();
    assert_eq!(all.len(), 9);
    let capped = m
        .read(Split::Train, &["lang", "task"], Some(2), |c| {
            c.lang == "hau"
        })
        .unwrap();
    let inputs: Vec<&str> = capped.iter().map(|e| e.input.as_str()).collect();
    assert_eq!(
        inputs,
        ["ner-hau-0", "ner-hau-1", "topic-hau-0", "topic-hau-1"]
    );
    assert_eq!(capped[2].location.line, 1);

    // Records without lang/task take the folder's; lang and task are read even when not asked.
    let test = m.read(Split::Test, &["domain"], None, |_| true).unwrap();
    assert_eq!(test.len(), 3);
    assert_eq!(test[1].features["lang"], "yor");
    assert_eq!(test[1].features["task"], "ner");
}

#[test]
fn bad_mixtures_are_errors_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("m");
    mixture(&root);
    let m = Mixture::open(&root).unwrap();

    // A cell without the requested split.
    let err = m
        .read(Split::Dev, &["lang", "task"], None, |_| true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("yor") && err.contains("has no dev split"),
        "{err}"
    );
    // ...unless that cell is not read.
    let dev = m
        .read(Split::Dev, &["lang"], None, |c| {
            c.lang == "hau" && c.task == "ner"
        })
        .unwrap();
    assert_eq!(dev.len(), 1);

    // A record whose lang disagrees with its folder: file and line.
    let bad = write(
        &root.join("topic/hau/train.jsonl"),
        &(line(Some("hau"), None, "a") + &line(Some("yor"), Some("topic"), "b")),
    );
    let err = m
        .read(Split::Train, &["lang", "task"], None, |_| true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("{}:2", bad.display())) && err.contains("\"yor\""),
        "{err}"
    );
    write(&bad, &line(None, Some("ner"), "c"));
    let err = m
        .read(Split::Train, &["lang", "task"], None, |_| true)
        .unwrap_err()
        .to_string();
    assert!(err.contains(":1") && err.contains("task \"ner\""), "{err}");

    // No cells; not a folder.
    let empty = dir.path().join("empty");
    write(&empty.join("tasks.json"), "{}");
    let err = Mixture::open(&empty).unwrap_err().to_string();
    assert!(err.contains("no cells"), "{err}");
    let err = Mixture::open(&dir.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no such folder"), "{err}");
}

#[test]
fn task_descriptions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("m");
    mixture(&root);
    let m = Mixture::open(&root).unwrap();
    assert_eq!(m.task_infos().unwrap(), None);
    write(
        &root.join("tasks.json"),
        r#"{"topic": {"description": "d", "metric": "accuracy", "labels": ["a", "b"]},
            "ner": {"metric": "span F1", "tags": ["B-PER"]}}"#,
    );
    let infos = m.task_infos().unwrap().unwrap();
    assert_eq!(infos["topic"].labels, Some(vec!["a".into(), "b".into()]));
    assert_eq!(infos["ner"].metric.as_deref(), Some("span F1"));
    write(
        &root.join("tasks.json"),
        "\u{feff}{\"topic\": {\"metric\": \"chrF\"}}",
    );
    let infos = m.task_infos().unwrap().unwrap();
    assert_eq!(infos["topic"].metric.as_deref(), Some("chrF"));
    write(&root.join("tasks.json"), r#"{"topic": {"metric": 3}}"#);
    let err = m.task_infos().unwrap_err().to_string();
    assert!(err.contains("tasks.json"), "{err}");
}

#[test]
fn split_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir.path().join("split.json"),
        r#"{"description": "x", "heldout": [
              {"task": "ner", "lang": "hau", "train_languages_for_task": ["yor"]},
              {"lang": "swa"}],
            "train_cells": [{"task": "ner", "lang": "yor"}]}"#,
    );
    assert_eq!(
        read_split_file(&path).unwrap(),
        ["lang=hau,task=ner", "lang=swa"]
    );
    // A byte-order mark from an editor is not part of the JSON.
    write(&path, "\u{feff}{\"heldout\": [{\"lang\": \"swa\"}]}");
    assert_eq!(read_split_file(&path).unwrap(), ["lang=swa"]);
    for (text, want) in [
        (r#"{"cells": []}"#, "\"heldout\" list"),
        (r#"{"heldout": [{"n": 1}]}"#, "entry 0 names no feature"),
        (r#"{"heldout": [3]}"#, "entry 0 is not an object"),
        (r#"{"heldout": [{"lang": "a,b"}]}"#, "not a feature value"),
        (r#"{"heldout": [{"lang": ""}]}"#, "not a feature value"),
        ("{", "invalid JSON"),
    ] {
        write(&path, text);
        let err = read_split_file(&path).unwrap_err().to_string();
        assert!(
            err.contains(want) && err.contains("split.json"),
            "{text}: {err}"
        );
    }
    let err = read_split_file(&dir.path().join("nope.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.json"), "{err}");
}

/// A cap spreads over the cell's file: a file sorted by label (12 lines, 3 labels of 4) capped
/// at 3 keeps one line of each label, where its first 3 lines would all be one label.
#[test]
fn a_cap_spreads_over_a_label_sorted_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("m");
    let lines: String = ["negative", "neutral", "positive"]
        .iter()
        .flat_map(|label| {
            (0..4).map(move |i| {
                format!(
                    "{}\n",
                    serde_json::json!({"input": format!("{label}-{i}"), "target": label})
                )
            })
        })
        .collect();
    write(&root.join("sentiment/yor/train.jsonl"), &lines);
    let m = Mixture::open(&root).unwrap();
    let capped = m
        .read(Split::Train, &["lang", "task"], Some(3), |_| true)
        .unwrap();
    let inputs: Vec<&str> = capped.iter().map(|e| e.input.as_str()).collect();
    assert_eq!(inputs, ["negative-0", "neutral-0", "positive-0"]);
}

/// Every cap of every length: `min(len, max)` positions, strictly rising, the first one 0, all
/// inside; `keep_spread` keeps exactly those.
#[test]
fn spread_positions_cover_the_file() {
    for len in 0..40 {
        for max in 1..45 {
            let p = flix_core::spread_positions(len, max);
            assert_eq!(p.len(), len.min(max), "len {len} max {max}");
            assert!(
                p.windows(2).all(|w| w[0] < w[1]),
                "len {len} max {max}: {p:?}"
            );
            assert!(p.iter().all(|&i| i < len));
            if len > 0 {
                assert_eq!(p[0], 0);
            }
            let mut items: Vec<usize> = (0..len).collect();
            flix_core::keep_spread(&mut items, max);
            assert_eq!(items, p);
        }
    }
}
