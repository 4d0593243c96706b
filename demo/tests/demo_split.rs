//! The held-out cells of the demo mixture: never trained, always composable from trained cells.

use std::collections::BTreeSet;

use flix_demo::{diagonal_heldout, generate, validate_heldout, Cell, DemoConfig, DemoError, Task};

fn langs(codes: &[&str]) -> Vec<String> {
    codes.iter().map(|c| c.to_string()).collect()
}

#[test]
fn default_holds_out_at_least_six_cells_that_are_never_trained() {
    let config = DemoConfig::tiny();
    assert!(
        config.heldout.len() >= 6,
        "only {} held-out cells",
        config.heldout.len()
    );
    let mixture = generate(&config).expect("tiny config generates");
    let trained: BTreeSet<(String, String)> = mixture
        .train
        .iter()
        .map(|e| (e.lang.clone(), e.task.clone()))
        .collect();
    for cell in &config.heldout {
        let key = (cell.lang.clone(), cell.task.clone());
        assert!(
            !trained.contains(&key),
            "held-out {cell:?} has train examples"
        );
        assert!(
            trained
                .iter()
                .any(|(l, t)| *l == cell.lang && *t != cell.task),
            "held-out language {} is never trained",
            cell.lang
        );
        assert!(
            trained
                .iter()
                .any(|(l, t)| *l != cell.lang && *t == cell.task),
            "held-out task {} is never trained",
            cell.task
        );
        for (split, examples) in [("dev", &mixture.dev), ("test", &mixture.test)] {
            let n = examples
                .iter()
                .filter(|e| e.lang == cell.lang && e.task == cell.task)
                .count();
            let want = if split == "dev" {
                config.dev_per_cell
            } else {
                config.test_per_cell
            };
            assert_eq!(n, want, "held-out {cell:?} {split}");
        }
    }
    // Every other cell is trained.
    let cells = config.languages.len() * config.tasks.len();
    assert_eq!(trained.len(), cells - config.heldout.len());
}

#[test]
fn the_default_diagonal_covers_every_language_and_task() {
    let config = DemoConfig::default();
    let held_langs: BTreeSet<&str> = config.heldout.iter().map(|c| c.lang.as_str()).collect();
    let held_tasks: BTreeSet<&str> = config.heldout.iter().map(|c| c.task.as_str()).collect();
    assert_eq!(
        held_langs.len(),
        config.languages.len(),
        "one held-out cell per language"
    );
    assert_eq!(
        held_tasks.len(),
        config.tasks.len(),
        "every task is held out somewhere"
    );
    validate_heldout(&config.languages, &config.tasks, &config.heldout).expect("valid");
    // Each task is held out in exactly two languages, and never in two alike ones.
    for task in &config.tasks {
        let held: Vec<&str> = config
            .heldout
            .iter()
            .filter(|c| c.task == task.name())
            .map(|c| c.lang.as_str())
            .collect();
        assert_eq!(held.len(), 2, "{task}: {held:?}");
        for alike in [["deu", "nld"], ["spa", "por"]] {
            assert!(!alike.iter().all(|l| held.contains(l)), "{task}: {held:?}");
        }
    }
}

#[test]
fn a_language_with_every_task_held_out_is_rejected() {
    let langs = langs(&["eng", "deu"]);
    let tasks = [Task::Num2Words, Task::Date];
    let heldout = vec![
        Cell::new("eng", Task::Num2Words),
        Cell::new("eng", Task::Date),
    ];
    let err = validate_heldout(&langs, &tasks, &heldout).expect_err("eng is never trained");
    assert!(
        matches!(err, DemoError::HeldoutLanguageNeverTrained(ref c) if c.lang == "eng"),
        "{err}"
    );
}

#[test]
fn a_task_held_out_in_every_language_is_rejected() {
    let langs = langs(&["eng", "deu"]);
    let tasks = [Task::Num2Words, Task::Date];
    let heldout = vec![Cell::new("eng", Task::Date), Cell::new("deu", Task::Date)];
    let err = validate_heldout(&langs, &tasks, &heldout).expect_err("date is never trained");
    assert!(
        matches!(err, DemoError::HeldoutTaskNeverTrained(ref c) if c.task == "date"),
        "{err}"
    );
}

#[test]
fn unknown_or_repeated_cells_are_rejected() {
    let langs = langs(&["eng", "deu"]);
    let tasks = [Task::Num2Words, Task::Date];
    let unknown_lang = [Cell::new("fra", Task::Date)];
    assert!(matches!(
        validate_heldout(&langs, &tasks, &unknown_lang),
        Err(DemoError::HeldoutUnknownLanguage(_))
    ));
    let unknown_task = [Cell::new("eng", Task::Successor)];
    assert!(matches!(
        validate_heldout(&langs, &tasks, &unknown_task),
        Err(DemoError::HeldoutUnknownTask(_))
    ));
    let twice = [Cell::new("eng", Task::Date), Cell::new("eng", Task::Date)];
    assert!(matches!(
        validate_heldout(&langs, &tasks, &twice),
        Err(DemoError::HeldoutTwice(_))
    ));
}

#[test]
fn generate_refuses_an_invalid_config() {
    let mut config = DemoConfig::tiny();
    config.heldout = vec![Cell::new("eng", Task::Next), Cell::new("deu", Task::Next)];
    config.languages = langs(&["eng", "deu"]);
    assert!(matches!(
        generate(&config),
        Err(DemoError::HeldoutTaskNeverTrained(_))
    ));

    let mut config = DemoConfig::tiny();
    config.languages.push("dan".to_string());
    assert!(matches!(generate(&config), Err(DemoError::UnknownLanguage(ref c)) if c == "dan"));

    let mut config = DemoConfig::tiny();
    config.tasks.push(Task::Next);
    assert!(matches!(
        generate(&config),
        Err(DemoError::RepeatedTask(Task::Next))
    ));
}

#[test]
fn the_diagonal_of_a_small_grid_validates() {
    for n_langs in 2..=8 {
        let all = ["eng", "deu", "fra", "spa", "ita", "nld", "swe", "por"];
        let langs = langs(&all[..n_langs]);
        for n_tasks in 2..=Task::ALL.len() {
            let tasks = &Task::ALL[..n_tasks];
            let heldout = diagonal_heldout(&langs, tasks);
            assert_eq!(heldout.len(), n_langs);
            let result = validate_heldout(&langs, tasks, &heldout);
            // Each language holds out one task, and the first two languages hold out two
            // different ones, so no task is held out everywhere and no language loses them all.
            assert!(
                result.is_ok(),
                "{n_langs} langs x {n_tasks} tasks: {result:?}"
            );
        }
    }
}
