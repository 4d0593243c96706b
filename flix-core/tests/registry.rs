//! The feature config, the registry (stable ids, save and reload by name, growth) and feature sets
//! (unknown-value policy per mode).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use flix_core::{
    CoreError, DropoutPolicy, Example, FeatureConfig, Location, Mode, Registry, TypeDefaults,
    TypeShape, ABSENT,
};

fn example(line: usize, features: &[(&str, &str)]) -> Example {
    Example {
        location: Location {
            file: Arc::from(Path::new("data/train.jsonl")),
            line,
        },
        id: None,
        features: features
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        input: "x".into(),
        target: "y".into(),
    }
}

const CONFIG: &str = r#"{
  "defaults": { "rank": 8, "alpha": 16, "dropout": 0.1 },
  "dropout_policy": "allow-empty",
  "types": [
    { "name": "lang", "rank": 4 },
    { "name": "task", "alpha": 4, "dropout": 0.5, "values": ["qa", "ner", "pos"] }
  ]
}"#;

#[test]
fn config_resolves_defaults_and_fixed_values() {
    let config = FeatureConfig::from_json_str(CONFIG, "test").unwrap();
    let reg = Registry::from_config(&config).unwrap();
    assert_eq!(reg.type_names(), ["lang", "task"]);
    assert_eq!(reg.dropout_policy(), DropoutPolicy::AllowEmpty);
    let lang = &reg.types()[0];
    assert_eq!((lang.rank(), lang.alpha(), lang.dropout()), (4, 16.0, 0.1));
    assert_eq!(lang.scale(), 4.0);
    assert!(lang.allow_new_values(), "a type with no value list grows");
    let task = &reg.types()[1];
    assert_eq!((task.rank(), task.alpha(), task.dropout()), (8, 4.0, 0.5));
    assert_eq!(task.scale(), 0.5);
    assert!(!task.allow_new_values(), "a fixed value list does not grow");
    assert_eq!(task.id_of("ner"), Some(1));
    assert_eq!(task.value_name(2), Some("pos"));
    assert_eq!(task.value_name(3), None);
    assert_eq!(task.value_name(-1), None);
    assert_eq!(
        reg.type_shapes(),
        [
            TypeShape {
                rank: 4,
                num_values: 0
            },
            TypeShape {
                rank: 8,
                num_values: 3
            }
        ]
    );
}

#[test]
fn default_dropout_policy_is_keep_one() {
    let config = FeatureConfig::from_json_str(r#"{"types":[{"name":"lang"}]}"#, "t").unwrap();
    assert_eq!(config.dropout_policy, DropoutPolicy::KeepOne);
    assert_eq!(config.defaults, TypeDefaults::default());
}

#[test]
fn bad_configs_are_errors_that_say_why() {
    let cases = [
        (r#"{"types":[]}"#, "no feature types"),
        (
            r#"{"types":[{"name":"lang","rank":0}]}"#,
            "rank must be >= 1",
        ),
        (
            r#"{"types":[{"name":"lang","dropout":1.5}]}"#,
            "not a probability",
        ),
        (r#"{"types":[{"name":"a"},{"name":"a"}]}"#, "listed twice"),
        (
            r#"{"types":[{"name":"a","values":["x","x"]}]}"#,
            "value \"x\" twice",
        ),
        (r#"{"types":[{"name":"a","values":[""]}]}"#, "empty value"),
        (r#"{"types":[{"name":""}]}"#, "empty name"),
        (r#"{"types":[{"name":"a","rnak":4}]}"#, "unknown field"),
        (
            r#"{"types":[{"name":"a"}],"dropout_policy":"keep-all"}"#,
            "unknown variant",
        ),
        ("{\n\"types\": [\n}", "line 3"),
    ];
    for (text, expected) in cases {
        let err = FeatureConfig::from_json_str(text, "cfg.json").unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("cfg.json: ") && message.contains(expected),
            "{text}: got {message:?}, expected it to mention {expected:?}"
        );
    }
}

#[test]
fn discovery_sorts_values_by_name_whatever_the_file_order() {
    let data = [
        example(1, &[("lang", "swa"), ("task", "ner")]),
        example(2, &[("lang", "eng"), ("task", "qa")]),
        example(3, &[("lang", "swa")]),
        example(4, &[("lang", "deu"), ("task", "ner")]),
    ];
    let config = FeatureConfig::discovered(&["lang", "task"], TypeDefaults::default());
    let forward = Registry::discover(&config, &data).unwrap();
    let mut reversed_data = data.to_vec();
    reversed_data.reverse();
    let backward = Registry::discover(&config, &reversed_data).unwrap();
    assert_eq!(forward.types()[0].values(), ["deu", "eng", "swa"]);
    assert_eq!(forward.types()[1].values(), ["ner", "qa"]);
    assert_eq!(forward, backward);
}

#[test]
fn reload_keeps_ids_and_new_values_are_appended() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.json");
    let config = FeatureConfig::discovered(&["lang", "task"], TypeDefaults::default());
    let today = [
        example(1, &[("lang", "fra"), ("task", "qa")]),
        example(2, &[("lang", "eng"), ("task", "ner")]),
    ];
    let trained = Registry::discover(&config, &today).unwrap();
    trained.save(&path).unwrap();

    // The file maps names to ids explicitly.
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(saved["types"][0]["values"]["eng"], 0);
    assert_eq!(saved["types"][0]["values"]["fra"], 1);

    let mut reloaded = Registry::load(&path).unwrap();
    assert_eq!(reloaded, trained);

    // The data gains "deu", which sorts before both known languages: it is appended anyway.
    let tomorrow = [
        example(1, &[("lang", "deu"), ("task", "qa")]),
        example(2, &[("lang", "fra"), ("task", "ner")]),
    ];
    reloaded.grow_from(&tomorrow).unwrap();
    let lang = &reloaded.types()[0];
    assert_eq!(lang.values(), ["eng", "fra", "deu"]);
    let set = reloaded.encode(&tomorrow[1], Mode::Training).unwrap();
    assert_eq!(set.slots, [1, 0], "fra and ner keep their saved ids");
}

#[test]
fn saved_registries_with_bad_ids_are_rejected() {
    let good = r#"{"format":"flix-registry/1","dropout_policy":"keep-one","types":[
        {"name":"lang","rank":2,"alpha":2.0,"dropout":0.0,"allow_new_values":true,
         "values":{"eng":1,"fra":0}}]}"#;
    let reg = Registry::from_json_str(good, "reg.json").unwrap();
    assert_eq!(
        reg.types()[0].values(),
        ["fra", "eng"],
        "ids come from the file"
    );
    for (bad, expected) in [
        (good.replace("\"eng\":1", "\"eng\":2"), "has id 2"),
        (good.replace("\"eng\":1", "\"eng\":0"), "no repeats"),
        (good.replace("\"eng\":1", "\"eng\":-1"), "has id -1"),
        (
            good.replace("flix-registry/1", "flix-registry/9"),
            "unknown registry format",
        ),
        (
            good.replace("\"rank\":2", "\"rank\":0"),
            "rank must be >= 1",
        ),
    ] {
        let message = Registry::from_json_str(&bad, "reg.json")
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("reg.json: ") && message.contains(expected),
            "got {message:?}, expected {expected:?}"
        );
    }
}

#[test]
fn training_with_an_unknown_value_of_a_fixed_type_names_file_line_type_and_value() {
    let config = FeatureConfig::from_json_str(CONFIG, "test").unwrap();
    let mut reg = Registry::from_config(&config).unwrap();
    let bad = example(7, &[("lang", "eng"), ("task", "summarise")]);
    let err = reg.encode(&bad, Mode::Training).unwrap_err();
    assert!(matches!(err, CoreError::UnknownValue { .. }));
    let message = err.to_string();
    for part in [
        "data/train.jsonl:7",
        "\"task\"",
        "\"summarise\"",
        "qa, ner, pos",
    ] {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
    // grow_from reports the same error.
    let message = reg.grow_from(&[bad]).unwrap_err().to_string();
    assert!(message.contains("data/train.jsonl:7") && message.contains("summarise"));
}

#[test]
fn training_grows_types_that_allow_it() {
    let config = FeatureConfig::from_json_str(CONFIG, "test").unwrap();
    let mut reg = Registry::from_config(&config).unwrap();
    let a = reg
        .encode(
            &example(1, &[("lang", "yor"), ("task", "pos")]),
            Mode::Training,
        )
        .unwrap();
    let b = reg
        .encode(&example(2, &[("lang", "hau")]), Mode::Training)
        .unwrap();
    let c = reg
        .encode(
            &example(3, &[("lang", "yor"), ("other", "z")]),
            Mode::Training,
        )
        .unwrap();
    assert_eq!(a.slots, [0, 2]);
    assert_eq!(b.slots, [1, ABSENT]);
    assert_eq!(
        c.slots,
        [0, ABSENT],
        "fields that are not types are ignored"
    );
    assert_eq!(b.num_present(), 1);
}

/// A writer that collects everything `tracing` prints, to check the warning.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn inference_makes_unknown_values_absent_with_a_warning_naming_them() {
    let config = FeatureConfig::from_json_str(CONFIG, "test").unwrap();
    let mut reg = Registry::from_config(&config).unwrap();
    reg.encode(&example(1, &[("lang", "eng")]), Mode::Training)
        .unwrap();
    let before = reg.clone();

    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let set = tracing::subscriber::with_default(subscriber, || {
        reg.encode(
            &example(9, &[("lang", "zul"), ("task", "ner")]),
            Mode::Inference,
        )
        .unwrap()
    });
    assert_eq!(set.slots, [ABSENT, 1]);
    assert_eq!(reg, before, "inference never grows the registry");
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("WARN") && log.contains("\"zul\"") && log.contains("data/train.jsonl:9"),
        "{log:?}"
    );
}

#[test]
fn apply_config_keeps_ids_and_checks_shapes() {
    let config = FeatureConfig::from_json_str(CONFIG, "test").unwrap();
    let mut reg = Registry::from_config(&config).unwrap();
    reg.grow_from(&[example(1, &[("lang", "eng")])]).unwrap();
    let reloaded = Registry::from_json_str(&reg.to_json_string().unwrap(), "saved").unwrap();

    let more = CONFIG.replace("\"ner\", \"pos\"", "\"ner\", \"pos\", \"copa\"");
    let more = more.replace("\"dropout\": 0.5", "\"dropout\": 0.25");
    let mut updated = reloaded.clone();
    updated
        .apply_config(&FeatureConfig::from_json_str(&more, "new").unwrap(), "new")
        .unwrap();
    let task = &updated.types()[1];
    assert_eq!(task.values(), ["qa", "ner", "pos", "copa"]);
    assert_eq!(task.dropout(), 0.25);
    assert_eq!(updated.types()[0].values(), ["eng"]);

    let other_rank = CONFIG.replace("\"rank\": 4", "\"rank\": 2");
    let err = reloaded
        .clone()
        .apply_config(
            &FeatureConfig::from_json_str(&other_rank, "new").unwrap(),
            "new",
        )
        .unwrap_err();
    assert!(err.to_string().contains("rank 2"), "{err}");
}

#[test]
fn feature_sets_become_plan_segments() {
    use flix_core::{BatchPlan, FeatureDropout};
    let data = [
        example(1, &[("lang", "swa"), ("task", "qa")]),
        example(2, &[("task", "ner")]),
        example(3, &[("lang", "eng"), ("task", "qa")]),
    ];
    let config = FeatureConfig::discovered(&["lang", "task"], TypeDefaults::default());
    let mut reg = Registry::discover(&config, &data).unwrap();
    // No dropout configured: every feature survives.
    let dropout = FeatureDropout::from_registry(&reg, 0);
    let mut segments = Vec::new();
    for (i, ex) in data.iter().enumerate() {
        let mut set = reg.encode(ex, Mode::Training).unwrap();
        dropout.apply(0, i as u64, &mut set.slots);
        segments.push(set.into_segment(i + 1));
    }
    let plan = BatchPlan::new(&reg.type_shapes(), &segments).unwrap();
    let qa = reg.types()[1].id_of("qa").unwrap() as usize;
    let swa = reg.types()[0].id_of("swa").unwrap() as usize;
    assert_eq!(plan.users_of(1, qa), [0, 2]);
    assert_eq!(plan.users_of(0, swa), [0]);
    assert_eq!(plan.segment_slots(1)[0], ABSENT);
    assert_eq!(plan.num_tokens(), 6);
}
