//! Trained adapters are checked when loaded: a config edited by hand (targets, method, alpha,
//! feature types), a weights file with a tensor too many, too few, of the wrong shape or with a
//! NaN, or another base model than the one trained on is refused with the field or tensor and
//! the file named. Export and merge never write non-finite output.

mod common;

use std::path::{Path, PathBuf};

use common::fixture;
use flix_kernels::Device;
use flix_model::export::{export_peft, parse_combination};
use flix_model::merge::merge_checkpoint;
use flix_model::train::checkpoint::{latest_checkpoint, CONFIG_FILE, WEIGHTS_FILE};
use flix_model::train::tensor_file::{load_tensors, save_tensors, NamedTensor};
use flix_model::train::{load_trained, Method, TrainSpec, Trainer};
use flix_model::{load_peft_lora, LlamaModel};

/// A short flix+shared run on q and down; returns its last checkpoint.
fn trained_checkpoint(dir: &Path) -> PathBuf {
    let (base, train) = fixture(dir);
    let features = common::lang_task_features_of_ranks_2_and_3();
    let mut spec = TrainSpec::new(base, vec![train], features, Method::FlixShared);
    spec.steps = 2;
    spec.shared_rank = Some(1);
    spec.targets = vec!["q".into(), "down".into()];
    let run = dir.join("run");
    Trainer::new(spec, &run).unwrap().run(|_| {}).unwrap();
    latest_checkpoint(&run).unwrap().unwrap()
}

/// A copy of checkpoint `ck` named `name`.
fn copy_of(ck: &Path, name: &str) -> PathBuf {
    let dir = ck.parent().unwrap().parent().unwrap().join(name);
    common::copy_files(ck, &dir);
    dir
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(CONFIG_FILE);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(&path, json.to_string()).unwrap();
}

fn edit_weights(dir: &Path, edit: impl FnOnce(&mut Vec<NamedTensor>)) {
    let path = dir.join(WEIGHTS_FILE);
    let mut tensors: Vec<NamedTensor> = load_tensors(&path).unwrap().into_values().collect();
    edit(&mut tensors);
    save_tensors(&path, &tensors).unwrap();
}

fn load_error(dir: &Path) -> String {
    match load_trained(dir, &Device::Cpu) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn edited_configs_are_refused_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = trained_checkpoint(tmp.path());
    load_trained(&ck, &Device::Cpu).unwrap();

    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &[&str]); 8] = [
        (
            "no targets",
            |c| c["targets"] = serde_json::json!([]),
            &["`targets`", "empty"],
        ),
        (
            "unknown target",
            |c| c["targets"] = serde_json::json!(["lm_head"]),
            &["`targets`", "lm_head"],
        ),
        (
            "target twice",
            |c| c["targets"] = serde_json::json!(["q_proj", "q_proj"]),
            &["twice"],
        ),
        (
            "method lora",
            |c| c["method"] = "lora".into(),
            &["`adapter_types`", "lora"],
        ),
        (
            "method flix",
            |c| c["method"] = "flix".into(),
            &["`shared`", "flix"],
        ),
        (
            "method full",
            |c| c["method"] = "full".into(),
            &["`shared`", "full"],
        ),
        (
            "alpha 0",
            |c| c["shared"]["alpha"] = 0.0.into(),
            &["alpha must be finite and > 0"],
        ),
        (
            "more values",
            |c| c["adapter_types"][0]["num_values"] = 9.into(),
            &["`adapter_types`"],
        ),
    ];
    for (i, (what, edit, expected)) in cases.iter().enumerate() {
        let dir = copy_of(&ck, &format!("config-{i}"));
        edit_config(&dir, edit);
        let err = load_error(&dir);
        assert!(err.contains(CONFIG_FILE), "{what}: {err}");
        for e in *expected {
            assert!(err.contains(e), "{what}: expected {e:?} in {err}");
        }
    }
}

#[test]
fn weight_files_that_do_not_match_their_config_are_refused_naming_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = trained_checkpoint(tmp.path());

    type Edit = fn(&mut Vec<NamedTensor>);
    let cases: [(&str, Edit, &[&str]); 4] = [
        (
            "a tensor too many",
            |t| {
                let mut extra =
                    t[0].clone_named("model.layers.0.self_attn.k_proj.flix.lang.lora_A");
                extra.data[0] = 1.0;
                t.push(extra);
            },
            &["not used", "k_proj"],
        ),
        (
            "a tensor missing",
            |t| {
                t.retain(|t| !t.name.ends_with("down_proj.flix.task.lora_B"));
            },
            &["missing tensor", "down_proj.flix.task.lora_B"],
        ),
        (
            "a wrong shape",
            |t| {
                let i = t
                    .iter()
                    .position(|t| t.name.ends_with("q_proj.flix.shared.lora_A"))
                    .unwrap();
                t[i].shape.reverse();
            },
            &["q_proj.flix.shared.lora_A", "expected shape"],
        ),
        (
            "a NaN",
            |t| {
                let i = t
                    .iter()
                    .position(|t| t.name.ends_with("q_proj.flix.lang.lora_B"))
                    .unwrap();
                t[i].data[3] = f32::NAN;
            },
            &["q_proj.flix.lang.lora_B", "not finite"],
        ),
    ];
    for (i, (what, edit, expected)) in cases.iter().enumerate() {
        let dir = copy_of(&ck, &format!("weights-{i}"));
        edit_weights(&dir, edit);
        let err = load_error(&dir);
        assert!(err.contains(WEIGHTS_FILE), "{what}: {err}");
        for e in *expected {
            assert!(err.contains(e), "{what}: expected {e:?} in {err}");
        }
    }
}

trait CloneNamed {
    fn clone_named(&self, name: &str) -> NamedTensor;
}

impl CloneNamed for NamedTensor {
    fn clone_named(&self, name: &str) -> NamedTensor {
        NamedTensor {
            name: name.to_string(),
            shape: self.shape.clone(),
            data: self.data.clone(),
        }
    }
}

#[test]
fn adapters_are_not_applied_to_another_base_model() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = trained_checkpoint(tmp.path());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join(CONFIG_FILE)).unwrap()).unwrap();
    let base = PathBuf::from(config["base_model"].as_str().unwrap());
    assert!(base.is_absolute(), "{base:?}");
    // The same base with its config changed in place.
    let text = std::fs::read_to_string(base.join("config.json")).unwrap();
    std::fs::write(base.join("config.json"), format!("{text}\n")).unwrap();
    let err = load_error(&ck);
    assert!(
        err.contains("not the one") && err.contains(CONFIG_FILE),
        "{err}"
    );
}

#[test]
fn export_and_merge_refuse_output_that_overflows() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = trained_checkpoint(tmp.path());
    // Finite adapters whose product overflows: lang's B at f32::MAX (its scale is 3 / 2).
    edit_weights(&ck, |tensors| {
        for t in tensors
            .iter_mut()
            .filter(|t| t.name.contains(".flix.lang."))
        {
            let big = t.name.ends_with("lora_B");
            t.data
                .iter_mut()
                .for_each(|v| *v = if big { f32::MAX } else { 1.0 });
        }
    });
    let mut trained = load_trained(&ck, &Device::Cpu).unwrap();
    let combination = parse_combination("lang=eng").unwrap();
    let out = tmp.path().join("peft");
    let err = export_peft(&trained, &combination, &out)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not finite") && err.contains("lora_B"),
        "{err}"
    );
    assert!(!out.join(WEIGHTS_FILE).exists());
    let merged = tmp.path().join("merged");
    let err = merge_checkpoint(&mut trained, &combination, &merged)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("overflows") || err.contains("not finite"),
        "{err}"
    );
    assert!(!merged.join("model.safetensors").exists());
}

#[test]
fn peft_directories_are_checked_like_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = trained_checkpoint(tmp.path());
    let trained = load_trained(&ck, &Device::Cpu).unwrap();
    let base = trained.config.base_model.clone();
    let peft = tmp.path().join("peft");
    export_peft(&trained, &parse_combination("lang=eng").unwrap(), &peft).unwrap();
    let mut model = LlamaModel::load(&base, &Device::Cpu).unwrap();
    load_peft_lora(&mut model, &peft).unwrap();

    type Edit = fn(&mut Vec<NamedTensor>);
    let cases: [(&str, Edit, &str); 2] = [
        (
            "a tensor too many",
            |t| {
                let mut extra = t[0].clone_named("base_model.model.lm_head.lora_A.weight");
                extra.data[0] = 1.0;
                t.push(extra);
            },
            "not used",
        ),
        (
            "a NaN",
            |t| {
                t[1].data[0] = f32::NAN;
            },
            "not finite",
        ),
    ];
    for (i, (what, edit, expected)) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("peft-{i}"));
        std::fs::create_dir(&dir).unwrap();
        for name in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(peft.join(name), dir.join(name)).unwrap();
        }
        edit_weights(&dir, edit);
        let mut model = LlamaModel::load(&base, &Device::Cpu).unwrap();
        let err = load_peft_lora(&mut model, &dir).unwrap_err().to_string();
        assert!(
            err.contains(expected) && err.contains(WEIGHTS_FILE),
            "{what}: {err}"
        );
    }
}
