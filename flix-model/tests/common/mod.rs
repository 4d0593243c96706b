//! A tiny demo mixture and random base model for the trainer's tests.

use std::path::{Path, PathBuf};

use flix_demo::{generate, write_dir, DemoConfig, TRAIN_FILE};
use flix_model::tokenize::char_tokenizer_json;
use flix_model::train::base::{write_random_base, TinyLlamaShape};

/// The files of directory `from` (not its subdirectories) copied into `to`, created if need be,
/// replacing any of the same name: a copy of a checkpoint or a base model to damage or edit.
#[allow(dead_code)]
pub fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A tiny demo mixture and a random base model in `dir`; returns (base, train file).
#[allow(dead_code)]
pub fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let config = DemoConfig {
        train_per_cell: 3,
        dev_per_cell: 0,
        test_per_cell: 0,
        knowledge_dates_per_language: 1,
        ..DemoConfig::for_grid(&["eng", "deu", "fra"], &flix_demo::Task::ALL[..3])
    };
    let mixture = generate(&config).unwrap();
    let data = dir.join("data");
    write_dir(&mixture, &data).unwrap();
    let mut texts = vec![" ="];
    for e in &mixture.train {
        texts.extend([e.input.as_str(), e.target.as_str()]);
    }
    let tags: Vec<String> = ["eng", "deu", "fra"]
        .iter()
        .map(|l| format!("<lang={l}>"))
        .chain(
            ["num2words", "words2num", "date"]
                .iter()
                .map(|t| format!("<task={t}>")),
        )
        .collect();
    let json = char_tokenizer_json(texts, &tags);
    let vocab = flix_model::tokenize::Tokenizer::from_json_str(&json, Path::new("t"))
        .unwrap()
        .vocab_size();
    let shape = TinyLlamaShape {
        hidden: 16,
        intermediate: 24,
        layers: 1,
        heads: 2,
        kv_heads: 1,
        vocab,
        max_positions: 256,
    };
    let base = dir.join("base");
    write_random_base(&base, &shape, &json, 3).unwrap();
    (base, data.join(TRAIN_FILE))
}

/// Runs `scripts/<script>` with `args` under the Python of `FLIX_PYTHON` (default
/// `/opt/hfvenv/bin/python`, which has transformers and peft) and fails the test with its output
/// if it fails. Returns false, after saying so, when that Python does not exist: the check is
/// skipped, not passed.
#[allow(dead_code)]
pub fn run_python_check(script: &str, args: &[&std::ffi::OsStr], what: &str) -> bool {
    let python = std::env::var("FLIX_PYTHON").unwrap_or_else(|_| "/opt/hfvenv/bin/python".into());
    if !Path::new(&python).exists() {
        eprintln!("skipped the {what} check: no Python at {python} (set FLIX_PYTHON)");
        return false;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(script);
    let out = std::process::Command::new(&python)
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} check failed: {text}");
    eprintln!("{text}");
    true
}

/// `lang` and `task` features discovered from the data, ranks 2 and 3 (heterogeneous on
/// purpose), alpha 3, no dropout.
#[allow(dead_code)]
pub fn lang_task_features_of_ranks_2_and_3() -> flix_core::FeatureConfig {
    let mut features = flix_core::FeatureConfig::discovered(
        &["lang", "task"],
        flix_core::TypeDefaults {
            rank: 2,
            alpha: 3.0,
            dropout: 0.0,
        },
    );
    features.types[1].rank = Some(3);
    features
}

/// The logits `[tokens, vocab]` of `batch` (with its sequences' features) under `model`, as
/// f32 on the host.
#[allow(dead_code)]
pub fn logits_of(model: &flix_model::LlamaModel, batch: &flix_model::Batch) -> Vec<f32> {
    let batch = model.upload(batch).unwrap();
    model.logits(&batch).unwrap().to_f32_vec().unwrap()
}

/// Replaces the random Llama base in `base` with a random Gemma 3 text model of the same
/// vocabulary (one sliding layer with a window shorter than the sequences, one global layer),
/// keeping its tokenizer.
#[allow(dead_code)]
pub fn rewrite_as_gemma3(base: &Path) {
    let vocab = flix_model::LlamaConfig::from_file(&base.join("config.json"))
        .unwrap()
        .vocab_size;
    let config = flix_model::LlamaConfig::from_json_str(
        &format!(
            r#"{{"model_type": "gemma3_text", "hidden_size": 16, "intermediate_size": 24,
                "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                "head_dim": 12, "query_pre_attn_scalar": 10, "sliding_window": 3,
                "layer_types": ["sliding_attention", "full_attention"],
                "rope_local_base_freq": 100.0, "rope_theta": 10000.0,
                "max_position_embeddings": 256, "vocab_size": {vocab}}}"#
        ),
        "gemma3 config".as_ref(),
    )
    .unwrap();
    let mut model = flix_model::LlamaModel::random(config, 11, &flix_kernels::Device::Cpu).unwrap();
    model.save_pretrained(base).unwrap();
}
