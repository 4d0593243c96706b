//! Held-out cells never get lost silently: malformed specs, types the run does not have, values
//! no data has and split cells a mixture lacks are errors; held-out examples leave training;
//! per-cell caps keep the first examples.

use std::path::{Path, PathBuf};

use flix_core::{FeatureConfig, TypeDefaults};
use flix_model::train::data::training_examples;
use flix_model::train::{Holdout, Method, TrainSpec};

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

fn records(cells: &[(&str, &str)], per_cell: usize) -> String {
    let mut text = String::new();
    for (lang, task) in cells {
        for i in 0..per_cell {
            text += &format!(
                "{}\n",
                serde_json::json!({"lang": lang, "task": task, "input": format!("{i}"), "target": "t"})
            );
        }
    }
    text
}

fn spec(data: Vec<PathBuf>, mixture: Option<PathBuf>, holdout: &[&str]) -> TrainSpec {
    let features = FeatureConfig::discovered(&["lang", "task"], TypeDefaults::default());
    let mut spec = TrainSpec::new("base".into(), data, features, Method::Flix);
    spec.mixture = mixture;
    spec.holdout = holdout.iter().map(|s| s.to_string()).collect();
    spec
}

fn error(spec: &TrainSpec) -> String {
    match training_examples(spec) {
        Ok(_) => panic!("expected an error for {:?}", spec.holdout),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_holdout_specs_are_errors() {
    for (spec, want) in [
        ("lang=", "needs both a feature type and a value"),
        ("=deu", "needs both a feature type and a value"),
        ("deu", "expected type=value pairs"),
        (",", "names no feature"),
    ] {
        let err = Holdout::parse(&[spec.to_string()]).unwrap_err().to_string();
        assert!(err.contains(want) && err.contains(spec), "{spec}: {err}");
    }
    let ok = Holdout::parse(&["lang=deu, task=qa".to_string()]).unwrap();
    assert_eq!(Holdout::cell_text(&ok.cells[0]), "lang=deu,task=qa");
    let huge: Vec<String> = (0..200).map(|i| format!("lang=l{i},task=t{i}")).collect();
    let err = Holdout::parse(&[huge.join(",")]).unwrap_err().to_string();
    assert!(err.contains("more than 10000 cells"), "{err}");
}

/// A type named twice lists alternatives: every combination is held out, each cell once.
#[test]
fn a_type_named_twice_holds_out_each_value() {
    let text = |h: &Holdout| -> Vec<String> { h.cells.iter().map(Holdout::cell_text).collect() };
    let both = Holdout::parse(&["lang=deu,lang=fra".to_string()]).unwrap();
    assert_eq!(text(&both), ["lang=deu", "lang=fra"]);
    let crossed = Holdout::parse(&[
        "lang=deu,task=qa,lang=fra,lang=deu".to_string(),
        "task=qa,lang=fra".to_string(),
    ])
    .unwrap();
    assert_eq!(text(&crossed), ["lang=deu,task=qa", "lang=fra,task=qa"]);

    let dir = tempfile::tempdir().unwrap();
    let data = write(
        &dir.path().join("train.jsonl"),
        &records(&[("eng", "qa"), ("deu", "qa"), ("fra", "qa")], 2),
    );
    let kept = training_examples(&spec(vec![data], None, &["lang=deu,lang=fra"])).unwrap();
    let langs: Vec<&str> = kept
        .examples
        .iter()
        .map(|e| e.features["lang"].as_str())
        .collect();
    assert_eq!(langs, ["eng", "eng"]);
}

#[test]
fn data_files_holdout_types_values_and_caps() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(
        &dir.path().join("train.jsonl"),
        &records(&[("eng", "qa"), ("deu", "qa"), ("eng", "ner")], 3),
    );
    let data = vec![data];

    let err = error(&spec(data.clone(), None, &["foo=bar"]));
    assert!(
        err.contains("\"foo\" is not a feature type") && err.contains("lang, task"),
        "{err}"
    );
    let err = error(&spec(data.clone(), None, &["lang=xxx"]));
    assert!(
        err.contains("lang=xxx") && err.contains("misspelt"),
        "{err}"
    );
    let err = error(&spec(data.clone(), None, &["lang=eng,task=xxx"]));
    assert!(err.contains("task=xxx"), "{err}");

    let kept = training_examples(&spec(data.clone(), None, &["lang=eng,task=qa"])).unwrap();
    assert_eq!(kept.examples.len(), 6);
    assert!(kept
        .examples
        .iter()
        .all(|e| !(e.features["lang"] == "eng" && e.features["task"] == "qa")));
    assert_eq!(kept.holdout.cells.len(), 1);
    // A held-out combination the files do not have, of values they do have: nothing to remove
    // (the files were split already), no error.
    let absent = training_examples(&spec(data.clone(), None, &["lang=deu,task=ner"])).unwrap();
    assert_eq!(absent.examples.len(), 9);

    let mut capped = spec(data.clone(), None, &[]);
    capped.max_train_per_cell = Some(2);
    let kept = training_examples(&capped).unwrap();
    let inputs: Vec<&str> = kept.examples.iter().map(|e| e.input.as_str()).collect();
    assert_eq!(inputs, ["0", "1", "0", "1", "0", "1"]);

    // Holding out everything leaves nothing to train on.
    let err = error(&spec(data, None, &["task=qa", "task=ner"]));
    assert!(err.contains("no examples to train on"), "{err}");
}

#[test]
fn mixture_root_split_cells_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mixture");
    for (task, lang) in [("ner", "hau"), ("ner", "yor"), ("pos", "yor")] {
        write(
            &root.join(task).join(lang).join("train.jsonl"),
            &records(&[(lang, task)], 3),
        );
    }
    // A held-out cell needs no train file of its own.
    write(
        &root.join("pos/hau/test.jsonl"),
        &records(&[("hau", "pos")], 1),
    );

    let kept =
        training_examples(&spec(vec![], Some(root.clone()), &["lang=hau,task=pos"])).unwrap();
    assert_eq!(kept.examples.len(), 9);
    std::fs::remove_dir_all(root.join("pos/hau")).unwrap();
    let kept =
        training_examples(&spec(vec![], Some(root.clone()), &["lang=hau,task=ner"])).unwrap();
    assert_eq!(kept.examples.len(), 6);
    assert!(kept.examples.iter().all(|e| e.features["lang"] == "yor"));

    // Values the mixture has, in a cell it does not have.
    let err = error(&spec(vec![], Some(root.clone()), &["lang=hau,task=pos"]));
    assert!(
        err.contains("lang=hau,task=pos") && err.contains("has no such cell"),
        "{err}"
    );
    let err = error(&spec(vec![], Some(root.clone()), &["lang=xxx,task=ner"]));
    assert!(
        err.contains("lang=xxx") && err.contains("misspelt"),
        "{err}"
    );
    // A non-held-out cell without its train file.
    write(
        &root.join("pos/swa/dev.jsonl"),
        &records(&[("swa", "pos")], 1),
    );
    let err = error(&spec(vec![], Some(root), &[]));
    assert!(
        err.contains("lang=swa,task=pos has no train split"),
        "{err}"
    );
}

/// `cap_per_cell` over interleaved cells: each cell keeps its examples at the spread positions
/// of its own sequence (here 2 of 6: its 1st and 4th), so a cell sorted by label keeps both
/// labels; the order of the list is kept.
#[test]
fn a_per_cell_cap_spreads_over_each_cell() {
    let file: std::sync::Arc<Path> = std::sync::Arc::from(Path::new("mixed.jsonl"));
    let mut examples = Vec::new();
    for i in 0..6 {
        for lang in ["eng", "deu"] {
            let label = if i < 3 { "negative" } else { "positive" };
            let text = format!(
                r#"{{"lang":"{lang}","task":"sentiment","input":"{lang}-{i}","target":"{label}"}}"#
            );
            let location = flix_core::Location {
                file: file.clone(),
                line: examples.len() + 1,
            };
            examples.push(flix_core::data::parse_line(&text, location, &["lang", "task"]).unwrap());
        }
    }
    flix_model::train::data::cap_per_cell(&mut examples, &["lang", "task"], 2);
    let kept: Vec<(&str, &str)> = examples
        .iter()
        .map(|e| (e.input.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        kept,
        [
            ("eng-0", "negative"),
            ("deu-0", "negative"),
            ("eng-3", "positive"),
            ("deu-3", "positive")
        ]
    );
}
