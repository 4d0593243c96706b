//! `flix compare` end to end on the CPU: a tiny random base, a tiny mixture root in the
//! `<task>/<lang>/{train,test}.jsonl` layout (a label task, a BIO-tagged task and a frame task in
//! two languages, one cell held out by a split file), two seeds, a few steps. The per-task table
//! in summary.md is checked against a recomputation from results.json's cell records; a rerun
//! keeps finished runs, and a run whose last checkpoint is gone resumes.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{flix, flix_ok, text};
use flix_model::tokenize::{char_tokenizer_json, Tokenizer};
use flix_model::train::base::{write_random_base, TinyLlamaShape};
use serde_json::{json, Value};

const LANGS: [&str; 2] = ["eng", "fra"];
const STEPS: u64 = 120;
const CHECKPOINT_EVERY: u64 = 100;

/// (input, target) pairs of each task; each language gets them with its own words.
fn task_examples(task: &str, lang: &str) -> Vec<(String, String)> {
    let w = |s: &str| format!("{s}{}", &lang[..1]);
    match task {
        "sentiment" => vec![
            (w("good day"), "yes".into()),
            (w("bad day"), "no".into()),
            (w("nice cat"), "yes".into()),
            (w("sad dog"), "no".into()),
        ],
        "ner" => vec![
            (
                format!("{} met {}", w("ann"), w("bob")),
                format!("{}|B-PER met {}|B-PER", w("ann"), w("bob")),
            ),
            (
                format!("in {} now", w("rome")),
                format!("in {}|B-LOC now", w("rome")),
            ),
            (
                format!("{} ran", w("eve")),
                format!("{}|B-PER ran", w("eve")),
            ),
        ],
        "semparse" => vec![
            (
                format!("wake me at {}", w("six")),
                format!("[IN:alarm/set [SL:time {} ] ]", w("six")),
            ),
            (
                format!("rain in {}", w("oslo")),
                format!("[IN:weather/find [SL:place {} ] ]", w("oslo")),
            ),
        ],
        _ => unreachable!(),
    }
}

fn write_jsonl(path: &Path, lang: &str, task: &str, pairs: &[(String, String)]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let text: String = pairs
        .iter()
        .map(|(input, target)| {
            format!(
                "{}\n",
                json!({"lang": lang, "task": task, "input": input, "target": target})
            )
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

/// Writes the mixture root, tasks.json, the split file and a random base; returns (base, root,
/// split file).
fn fixture(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let root = dir.join("mixture");
    let mut texts: Vec<String> = vec![" =".into()];
    for task in ["sentiment", "ner", "semparse"] {
        for lang in LANGS {
            let pairs = task_examples(task, lang);
            let cell = root.join(task).join(lang);
            write_jsonl(&cell.join("train.jsonl"), lang, task, &pairs);
            write_jsonl(&cell.join("test.jsonl"), lang, task, &pairs[..2]);
            texts.extend(pairs.iter().flat_map(|(i, t)| [i.clone(), t.clone()]));
            texts.push(format!("<lang={lang}> <task={task}>"));
        }
    }
    std::fs::write(
        root.join("tasks.json"),
        json!({
            "sentiment": {"metric": "accuracy / macro-F1", "labels": ["yes", "no"]},
            "ner": {"metric": "entity-level (span) F1; token accuracy as a secondary"},
            "semparse": {"metric": "exact match of the whole frame; intent accuracy"}
        })
        .to_string(),
    )
    .unwrap();
    let split = dir.join("split.json");
    std::fs::write(
        &split,
        json!({"heldout": [{"task": "ner", "lang": "fra", "train_tasks_for_lang": ["sentiment"]}]})
            .to_string(),
    )
    .unwrap();
    let json = char_tokenizer_json(texts.iter().map(String::as_str), &[]);
    let vocab = Tokenizer::from_json_str(&json, Path::new("t"))
        .unwrap()
        .vocab_size();
    let shape = TinyLlamaShape {
        hidden: 32,
        intermediate: 64,
        layers: 1,
        heads: 2,
        kv_heads: 2,
        vocab,
        max_positions: 256,
    };
    write_random_base(&dir.join("base"), &shape, &json, 1).unwrap();
    (dir.join("base"), root, split)
}

fn compare_args(base: &Path, root: &Path, split: &Path, out: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec!["compare".into()];
    for (flag, value) in [
        ("--base", base.display().to_string()),
        ("--mixture", root.display().to_string()),
        ("--split-file", split.display().to_string()),
        ("--out", out.display().to_string()),
        ("--seeds", "2".into()),
        ("--steps", STEPS.to_string()),
        ("--rank", "lang=4,task=4".into()),
        ("--dropout", "0.1".into()),
        ("--lr", "0.015".into()),
        ("--batch-tokens", "512".into()),
        ("--checkpoint-every", CHECKPOINT_EVERY.to_string()),
        ("--max-eval-per-cell", "2".into()),
        ("--max-new-tokens", "8".into()),
    ] {
        args.extend([flag.to_string(), value]);
    }
    args
}

/// `mean ± std` (in %) of per-seed values, computed here independently of the binary.
fn mean_std(xs: &[f64]) -> String {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    format!("{mean:.1} ± {:.1}", var.sqrt())
}

/// The rows of the Markdown table under `## {title}`: task → cells.
fn table(md: &str, title: &str) -> BTreeMap<String, Vec<String>> {
    md.split("\n## ")
        .find(|s| s.starts_with(title))
        .unwrap_or_else(|| panic!("no {title} table in {md}"))
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| task") && !l.starts_with("| cell"))
        .map(|l| {
            let cells: Vec<String> = l
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect();
            (cells[0].clone(), cells)
        })
        .collect()
}

#[test]
fn compare_trains_evaluates_summarises_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, root, split) = fixture(tmp.path());
    let out = tmp.path().join("out");
    // A split cell the mixture lacks is an error before any run starts.
    let bad_split = tmp.path().join("bad-split.json");
    std::fs::write(
        &bad_split,
        r#"{"heldout": [{"task": "ner", "lang": "deu"}]}"#,
    )
    .unwrap();
    let refused = flix(&compare_args(&base, &root, &bad_split, &out));
    assert!(!refused.status.success());
    assert!(
        text(&refused).1.contains("lang=deu,task=ner"),
        "{}",
        text(&refused).1
    );
    assert!(!out.join("runs").exists());

    let args = compare_args(&base, &root, &split, &out);
    let (stdout, _) = flix_ok(&args);
    assert!(stdout.contains("## Held-out (zero-shot) cells"), "{stdout}");

    let methods = ["flix", "lora", "flix+shared"];
    for m in methods {
        for seed in 0..2 {
            let run = out.join("runs").join(format!("{m}-seed{seed}"));
            assert!(run.join("spec.json").exists(), "{}", run.display());
            assert!(run.join("eval.json").exists(), "{}", run.display());
        }
    }
    for file in ["results.json", "summary.md", "grid.txt", "report.html"] {
        assert!(out.join(file).exists(), "{file}");
    }
    // LoRA is compute-matched: its spec asks for rank Σ_k r_k.
    let lora: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("runs/lora-seed1/spec.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(lora["match_compute"], true);
    assert_eq!(lora["seed"], 1);
    assert_eq!(lora["holdout"], json!(["lang=fra,task=ner"]));

    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let records = results["records"].as_array().unwrap();
    // 3 methods × 2 seeds × 6 cells, each with 2 test examples.
    assert_eq!(records.len(), 36);
    for r in records {
        let held = r["cell"] == "lang=fra,task=ner";
        assert_eq!(r["heldout"], held, "{r}");
        assert_eq!(
            r["kind"],
            if held { "held_out" } else { "supervised" },
            "{r}"
        );
        assert_eq!(r["examples"], 2);
        let want = match r["task"].as_str().unwrap() {
            "sentiment" => "accuracy",
            "ner" => "span_f1",
            _ => "frame",
        };
        assert_eq!(r["metric"], want, "{r}");
        let primary = match want {
            "frame" => "frame_exact_match",
            other => other,
        };
        assert_eq!(r["value"], r["values"][primary], "{r}");
    }
    // The runs learnt something: not every primary value is zero (else the checks below
    // could not tell a wrong summary from a right one).
    assert!(
        records.iter().any(|r| r["value"].as_f64().unwrap() > 0.0),
        "no run scored above zero: {}",
        std::fs::read_to_string(out.join("runs/flix-seed0/eval.json")).unwrap()
    );
    // Each cell's values come from its own predictions: accuracy of the label task and exact
    // match of every cell, recomputed here with plain loops.
    let eval: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("runs/flix+shared-seed1/eval.json")).unwrap(),
    )
    .unwrap();
    for cell in eval["result"]["cells"].as_array().unwrap() {
        let name = cell["cell"].as_str().unwrap();
        let preds: Vec<&Value> = eval["result"]["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["cell"] == name)
            .collect();
        let fraction = |right: &dyn Fn(&str, &str) -> bool| {
            let n = preds
                .iter()
                .filter(|p| right(p["output"].as_str().unwrap(), p["target"].as_str().unwrap()))
                .count();
            n as f64 / preds.len() as f64
        };
        let exact = fraction(&|o, t| o.trim() == t.trim());
        assert_eq!(
            cell["values"]["exact_match"].as_f64(),
            Some(exact),
            "{name}"
        );
        if name.ends_with("task=sentiment") {
            let accuracy = fraction(&|o, t| o.trim().to_lowercase() == t);
            assert_eq!(
                cell["values"]["accuracy"].as_f64(),
                Some(accuracy),
                "{name}"
            );
        }
    }
    let grid = std::fs::read_to_string(out.join("grid.txt")).unwrap();
    assert!(grid.contains("span F1") && grid.contains('*'), "{grid}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Held-out (zero-shot) cells") && html.contains("frame exact match"));

    // summary.md against a recomputation from the records: per task, per seed the mean over
    // cells, then mean ± std over seeds; FLix − LoRA the difference of the means.
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert_eq!(md.trim(), stdout.trim());
    for (title, held) in [
        ("Supervised cells", false),
        ("Held-out (zero-shot) cells", true),
    ] {
        let rows = table(&md, title);
        let tasks: Vec<&str> = if held {
            vec!["ner"]
        } else {
            vec!["ner", "semparse", "sentiment"]
        };
        let mut keys: Vec<&str> = tasks.clone();
        keys.push("all tasks");
        assert_eq!(
            rows.keys().map(String::as_str).collect::<Vec<_>>(),
            {
                keys.sort();
                keys
            },
            "{md}"
        );
        let mut per_seed_task_means: BTreeMap<(&str, u64), Vec<f64>> = BTreeMap::new();
        for task in &tasks {
            let row = &rows[*task];
            let mut means = Vec::new();
            for (i, m) in methods.iter().enumerate() {
                let per_seed: Vec<f64> = (0..2u64)
                    .map(|seed| {
                        let values: Vec<f64> = records
                            .iter()
                            .filter(|r| {
                                r["method"] == *m
                                    && r["seed"] == seed
                                    && r["task"] == *task
                                    && r["heldout"] == held
                            })
                            .map(|r| 100.0 * r["value"].as_f64().unwrap())
                            .collect();
                        let mean = values.iter().sum::<f64>() / values.len() as f64;
                        per_seed_task_means.entry((m, seed)).or_default().push(mean);
                        mean
                    })
                    .collect();
                assert_eq!(row[3 + i], mean_std(&per_seed), "{task} {m} in {md}");
                means.push(per_seed.iter().sum::<f64>() / 2.0);
            }
            assert_eq!(
                row[6],
                format!("{:+.1}", means[0] - means[1]),
                "{task}: {md}"
            );
        }
        let all = &rows["all tasks"];
        for (i, m) in methods.iter().enumerate() {
            let per_seed: Vec<f64> = (0..2u64)
                .map(|seed| {
                    let xs = &per_seed_task_means[&(*m, seed)];
                    xs.iter().sum::<f64>() / xs.len() as f64
                })
                .collect();
            assert_eq!(all[3 + i], mean_std(&per_seed), "all tasks {m}: {md}");
        }
    }

    // The held-out cells one by one: per seed the cell's value, then mean ± std over seeds.
    let cells = table(&md, "Held-out cells one by one");
    let row = &cells["lang=fra,task=ner"];
    assert_eq!(cells.len(), 1, "{md}");
    for (i, m) in methods.iter().enumerate() {
        let per_seed: Vec<f64> = (0..2u64)
            .map(|seed| {
                let r = records
                    .iter()
                    .find(|r| r["method"] == *m && r["seed"] == seed && r["heldout"] == true)
                    .unwrap();
                100.0 * r["value"].as_f64().unwrap()
            })
            .collect();
        assert_eq!(row[3 + i], mean_std(&per_seed), "{m} in {md}");
    }
    assert_eq!(results["heldout_cells"][0]["task"], "lang=fra,task=ner");

    // Rerun: every run is kept, the results are the same.
    let (_, log) = flix_ok(&args);
    assert_eq!(log.matches("finished earlier").count(), 6, "{log}");
    let again: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(again, results);

    // A run killed after its first checkpoint resumes from it; the others are kept.
    let killed = out.join("runs/flix-seed1");
    let checkpoints = killed.join("checkpoints");
    std::fs::remove_dir_all(checkpoints.join(format!("step-{STEPS:08}"))).unwrap();
    std::fs::write(
        checkpoints.join("latest"),
        format!("step-{CHECKPOINT_EVERY:08}"),
    )
    .unwrap();
    let (_, log) = flix_ok(&args);
    assert!(
        log.contains(&format!(
            "flix seed 1: resuming from step {CHECKPOINT_EVERY}"
        )),
        "{log}"
    );
    assert_eq!(log.matches("finished earlier").count(), 5, "{log}");
    assert!(checkpoints.join(format!("step-{STEPS:08}")).exists());
    // Resumed training is deterministic: the same evaluation as before.
    let resumed: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(resumed["records"], results["records"]);

    // Other settings in the same --out are refused, not overwritten.
    let mut other = args.clone();
    let steps = other.iter().position(|a| a == "--steps").unwrap();
    other[steps + 1] = "4".into();
    let refused = flix(&other);
    let (_, err) = text(&refused);
    assert!(!refused.status.success());
    assert!(err.contains("holds a run with other settings"), "{err}");
}

/// The same command on a tiny random Gemma 3 read from a GGUF file (with a real SentencePiece
/// vocabulary, flix-model/tests/fixtures/gguf/tiny-gemma3-text.gguf): one seed, a few steps,
/// every method, each at its own learning rate; every file is written, every task has its row
/// in both tables, the held-out cell is marked in results.json, and each run trained at its
/// method's rate.
#[test]
fn compare_runs_on_a_gemma3_gguf_base() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, root, split) = fixture(tmp.path());
    let gguf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../flix-model/tests/fixtures/gguf/tiny-gemma3-text.gguf");
    let out = tmp.path().join("out");
    let mut args = compare_args(&gguf, &root, &split, &out);
    let lrs = [("flix", 0.001), ("lora", 0.002), ("flix+shared", 0.0005)];
    let per_method = "flix=0.001,lora=0.002,flix+shared=0.0005";
    for (flag, value) in [("--seeds", "1"), ("--steps", "3"), ("--lr", per_method)] {
        let i = args.iter().position(|a| a == flag).unwrap();
        args[i + 1] = value.to_string();
    }
    flix_ok(&args);
    for file in ["results.json", "grid.txt", "summary.md", "report.html"] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    for title in ["Supervised", "Held-out"] {
        let rows = table(&md, title);
        for task in ["ner", "semparse", "sentiment"] {
            if title == "Held-out" && task != "ner" {
                continue;
            }
            assert!(rows.contains_key(task), "{title}: no {task} row in {md}");
        }
    }
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let text = results.to_string();
    assert!(text.contains("\"heldout\":true"), "{text}");
    assert!(
        md.contains("learning rate flix 1e-3, flix+shared 5e-4, lora 2e-3;"),
        "{md}"
    );
    for (method, lr) in lrs {
        let run = out.join("runs").join(format!("{method}-seed0"));
        let spec: Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("spec.json")).unwrap()).unwrap();
        assert_eq!(spec["lr"].as_f64(), Some(lr), "{method}");
        assert_eq!(results["lr"][method].as_f64(), Some(lr), "{method}");
    }
}
