//! `flix inspect` end to end: the grid counts of a generated mixture against an independent
//! recount, and the exit status and message on malformed or unknown data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn flix(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flix"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the flix binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

struct Row {
    lang: Option<&'static str>,
    task: Option<&'static str>,
    input: String,
    target: String,
}

/// A small mixture with uneven cells, an empty cell, and examples missing lang or task.
fn mixture() -> Vec<Row> {
    let langs = ["swa", "eng", "deu"];
    let tasks = ["qa", "ner"];
    let mut rows = Vec::new();
    for (i, lang) in langs.iter().enumerate() {
        for (j, task) in tasks.iter().enumerate() {
            if (*lang, *task) == ("deu", "qa") {
                continue; // an empty cell
            }
            for n in 0..(1 + i + 2 * j) {
                rows.push(Row {
                    lang: Some(lang),
                    task: Some(task),
                    input: "word ".repeat(n + i + 1),
                    target: format!("a  b\tc{}", " d".repeat(j)),
                });
            }
        }
    }
    rows.push(Row {
        lang: Some("eng"),
        task: None,
        input: "no task here".into(),
        target: "x".into(),
    });
    rows.push(Row {
        lang: None,
        task: Some("qa"),
        input: "no language".into(),
        target: "".into(),
    });
    rows
}

fn json_line(row: &Row, index: usize) -> String {
    let mut fields = vec![format!("\"id\":\"ex{index}\"")];
    if let Some(lang) = row.lang {
        fields.push(format!("\"lang\":\"{lang}\""));
    }
    if let Some(task) = row.task {
        fields.push(format!("\"task\":\"{task}\""));
    }
    fields.push(format!("\"input\":{:?}", row.input));
    fields.push(format!("\"target\":{:?}", row.target));
    fields.push("\"source\":\"test\"".into());
    format!("{{{}}}", fields.join(","))
}

/// Writes the rows over two files (alternating), with a blank line in the first.
fn write_mixture(dir: &Path, rows: &[Row]) -> Vec<PathBuf> {
    let paths = vec![dir.join("part1.jsonl"), dir.join("part2.jsonl")];
    let mut texts = vec![String::from("\n"), String::new()];
    for (i, row) in rows.iter().enumerate() {
        texts[i % 2] += &(json_line(row, i) + "\n");
    }
    for (path, text) in paths.iter().zip(&texts) {
        std::fs::write(path, text).unwrap();
    }
    paths
}

/// The printed grid as (row name → column name → cell text).
fn parse_grid(text: &str, corner: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.starts_with(corner))
        .take_while(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .expect("a grid header")
        .split_whitespace()
        .collect();
    let mut grid = BTreeMap::new();
    for line in lines {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells.len(), header.len(), "ragged line {line:?}");
        let row = header[1..]
            .iter()
            .zip(&cells[1..])
            .map(|(c, v)| (c.to_string(), v.to_string()))
            .collect();
        grid.insert(cells[0].to_string(), row);
    }
    grid
}

#[test]
fn grid_counts_match_a_recount() {
    let dir = tempfile::tempdir().unwrap();
    let rows = mixture();
    let paths = write_mixture(dir.path(), &rows);
    let args: Vec<&str> = std::iter::once("inspect")
        .chain(paths.iter().map(|p| p.to_str().unwrap()))
        .collect();
    let out = flix(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let grid = parse_grid(&stdout(&out), "lang\\task");

    // The recount: (examples, words) per cell and margin, straight from the rows.
    let mut expected: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for row in &rows {
        let r = row.lang.unwrap_or("(none)").to_string();
        let c = row.task.unwrap_or("(none)").to_string();
        let words =
            (row.input.split_whitespace().count() + row.target.split_whitespace().count()) as u64;
        for key in [
            (r.clone(), c.clone()),
            (r.clone(), "total".into()),
            ("total".into(), c.clone()),
            ("total".into(), "total".into()),
        ] {
            let e = expected.entry(key).or_default();
            e.0 += 1;
            e.1 += words;
        }
    }
    let row_names = ["deu", "eng", "swa", "(none)", "total"];
    let col_names = ["ner", "qa", "(none)", "total"];
    let mut sorted_rows = row_names.to_vec();
    sorted_rows.sort();
    assert_eq!(
        grid.keys().collect::<Vec<_>>(),
        sorted_rows,
        "no other rows"
    );
    for r in row_names {
        for c in col_names {
            let want = match expected.get(&(r.to_string(), c.to_string())) {
                Some((n, t)) => format!("{n}/{t}"),
                None => "-".to_string(),
            };
            assert_eq!(grid[r][c], want, "cell ({r}, {c})");
        }
    }
    assert_eq!(grid["deu"]["qa"], "-", "the empty cell");
}

#[test]
fn a_malformed_line_3_fails_and_names_line_3() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    std::fs::write(
        &path,
        concat!(
            "{\"lang\":\"eng\",\"task\":\"qa\",\"input\":\"a\",\"target\":\"b\"}\n",
            "{\"lang\":\"swa\",\"task\":\"qa\",\"input\":\"a\",\"target\":\"b\"}\n",
            "{\"lang\":\"swa\",\"task\":\"qa\",\"input\":\"a\" \"target\":\"b\"}\n",
            "{\"lang\":\"eng\",\"task\":\"qa\",\"input\":\"a\",\"target\":\"b\"}\n",
        ),
    )
    .unwrap();
    let out = flix(&["inspect", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("bad.jsonl:3: invalid JSON"), "{err}");
    assert!(stdout(&out).is_empty(), "no partial grid: {}", stdout(&out));
}

#[test]
fn a_config_checks_values_as_training_would() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.jsonl");
    std::fs::write(
        &data,
        "{\"lang\":\"eng\",\"task\":\"qa\",\"input\":\"a\",\"target\":\"b\"}\n\
         {\"lang\":\"swa\",\"task\":\"ner\",\"input\":\"a\",\"target\":\"b\"}\n",
    )
    .unwrap();
    let config = dir.path().join("features.json");
    std::fs::write(
        &config,
        r#"{"types":[{"name":"task","values":["qa"]},{"name":"lang"}]}"#,
    )
    .unwrap();
    let out = flix(&[
        "inspect",
        "--config",
        config.to_str().unwrap(),
        data.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("d.jsonl:2") && err.contains("\"ner\"") && err.contains("\"task\""),
        "{err}"
    );

    // With the value allowed, the grid's rows are the config's first type.
    std::fs::write(
        &config,
        r#"{"types":[{"name":"task","values":["qa","ner"]},{"name":"lang"}]}"#,
    )
    .unwrap();
    let out = flix(&[
        "inspect",
        "--config",
        config.to_str().unwrap(),
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let grid = parse_grid(&stdout(&out), "task\\lang");
    assert_eq!(grid["qa"]["eng"], "1/2");
    assert_eq!(grid["qa"]["swa"], "-");
    assert_eq!(grid["ner"]["swa"], "1/2");
    assert_eq!(grid["total"]["total"], "2/4");
}

#[test]
fn types_option_picks_the_grid_axes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.jsonl");
    std::fs::write(
        &data,
        "{\"lang\":\"eng\",\"domain\":\"news\",\"input\":\"a b c\",\"target\":\"d\"}\n\
         {\"lang\":\"eng\",\"domain\":\"web\",\"input\":\"a\",\"target\":\"d\"}\n",
    )
    .unwrap();
    let out = flix(&["inspect", "--types", "domain", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let grid = parse_grid(&stdout(&out), "domain");
    assert_eq!(grid["news"]["total"], "1/4");
    assert_eq!(grid["web"]["total"], "1/2");
    assert_eq!(grid["total"]["total"], "2/6");

    // Types after the second are listed below the grid with their totals.
    let out = flix(&[
        "inspect",
        "--types",
        "lang,task,domain",
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let below: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|l| *l != "domain:")
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(below, [["news", "1/4"], ["web", "1/2"]], "{text}");

    // No lang or task field and no --types: a clear error.
    let plain = dir.path().join("plain.jsonl");
    std::fs::write(&plain, "{\"input\":\"a\",\"target\":\"b\"}\n").unwrap();
    let out = flix(&["inspect", plain.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--types"), "{}", stderr(&out));
}
