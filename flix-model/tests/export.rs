//! Exporting a feature combination as one LoRA of rank Σ r_k is exact: a model carrying only the
//! exported LoRA gives the logits the FLix model gives with that combination's features.

mod common;

use std::collections::BTreeMap;

use common::fixture;

use flix_kernels::{DType, Device, Tensor};
use flix_model::adapters::{AdapterSpec, TargetModule};
use flix_model::export::{concatenated_lora, export_peft};
use flix_model::train::tensor_file::load_tensors;
use flix_model::train::{load_trained, Method, TrainSpec, Trainer};
use flix_model::{Batch, LlamaModel, Sequence};

#[test]
fn exported_lora_reproduces_the_flix_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train) = fixture(tmp.path());
    let features = common::lang_task_features_of_ranks_2_and_3();
    let mut spec = TrainSpec::new(base.clone(), vec![train], features, Method::FlixShared);
    spec.steps = 5;
    spec.lr = 0.05;
    spec.shared_rank = Some(1);
    spec.targets = vec!["q".into(), "v".into(), "down".into()];
    let run = tmp.path().join("run");
    Trainer::new(spec, &run).unwrap().run(|_| {}).unwrap();
    let trained = load_trained(&run, &Device::Cpu).unwrap();

    let combination: BTreeMap<String, String> = [("lang", "fra"), ("task", "words2num")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (tensors, rank) = concatenated_lora(&trained, &combination).unwrap();
    assert_eq!(rank, 2 + 3 + 1);

    // The FLix model's logits for that combination (+ the shared type).
    let reg = &trained.layout.registry;
    let lang = reg.feature_type("lang").unwrap().id_of("fra").unwrap();
    let task = reg
        .feature_type("task")
        .unwrap()
        .id_of("words2num")
        .unwrap();
    let tokens: Vec<u32> = (0..9).map(|i| (i * 7 % 20) as u32).collect();
    let sequence = Sequence::prompt_and_target(tokens.clone(), 3);
    let batch = |features| Batch::new(&[sequence.clone().with_features(features)]).unwrap();
    let want = common::logits_of(&trained.model, &batch(vec![lang, task, 0]));

    // A fresh base with one LoRA of rank R, alpha R, holding the exported tensors.
    let mut lora = LlamaModel::load(&base, &Device::Cpu).unwrap();
    let targets = [TargetModule::Q, TargetModule::V, TargetModule::Down];
    lora.attach_adapters(&AdapterSpec::lora(rank, rank as f64, &targets, 0))
        .unwrap();
    let by_name: BTreeMap<_, _> = tensors.into_iter().map(|t| (t.name.clone(), t)).collect();
    for layer in 0..lora.layers.len() {
        for module in targets {
            let path = format!("base_model.model.{}", module.path(layer));
            let a = &by_name[&format!("{path}.lora_A.weight")];
            let b = &by_name[&format!("{path}.lora_B.weight")];
            let lin = lora.linear_mut(layer, module).unwrap();
            let t = &mut lin.adapter.as_mut().unwrap().layers.types[0];
            t.a = Tensor::from_f32(&Device::Cpu, DType::F32, &[1, rank, a.shape[1]], &a.data)
                .unwrap();
            t.b = Tensor::from_f32(&Device::Cpu, DType::F32, &[1, b.shape[0], rank], &b.data)
                .unwrap();
        }
    }
    let got = common::logits_of(&lora, &batch(vec![0]));
    let worst = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs() / (1e-3 + a.abs()))
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "worst relative difference {worst}");
    // The adapters were trained: the LoRA is not a no-op.
    let plain = LlamaModel::load(&base, &Device::Cpu).unwrap();
    let base_logits = common::logits_of(&plain, &batch(vec![]));
    assert!(base_logits
        .iter()
        .zip(&got)
        .any(|(a, b)| (a - b).abs() > 1e-4));

    // The PEFT directory holds the same tensors and a config PEFT reads.
    let dir = tmp.path().join("peft");
    export_peft(&trained, &combination, &dir).unwrap();
    let saved = load_tensors(&dir.join("adapter_model.safetensors")).unwrap();
    assert_eq!(saved.len(), by_name.len());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["r"], rank);
    assert_eq!(config["lora_alpha"], rank);
    assert_eq!(
        config["target_modules"],
        serde_json::json!(["q_proj", "v_proj", "down_proj"])
    );

    // PEFT itself, where Python with transformers and peft is available.
    let case = tmp.path().join("case.json");
    let case_json = serde_json::json!({ "tokens": tokens, "logits": want });
    std::fs::write(&case, case_json.to_string()).unwrap();
    common::run_python_check(
        "check_peft_export.py",
        &[base.as_os_str(), dir.as_os_str(), case.as_os_str()],
        "PEFT",
    );
}

/// A Gemma 3 FLix run on all seven projections exports a PEFT LoRA (transformers' module names)
/// that PEFT applies to the Gemma 3 base with the logits the FLix model gives.
#[test]
fn gemma3_export_is_applied_by_peft() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train) = fixture(tmp.path());
    common::rewrite_as_gemma3(&base);
    let features = common::lang_task_features_of_ranks_2_and_3();
    let mut spec = TrainSpec::new(base.clone(), vec![train], features, Method::Flix);
    spec.steps = 3;
    spec.lr = 0.05;
    spec.targets = TargetModule::ALL
        .iter()
        .map(|m| m.hf_name().to_string())
        .collect();
    let run = tmp.path().join("run");
    Trainer::new(spec, &run).unwrap().run(|_| {}).unwrap();
    let trained = load_trained(&run, &Device::Cpu).unwrap();
    assert_eq!(trained.model.config.family, flix_model::Family::Gemma3);

    let combination: BTreeMap<String, String> = [("lang", "deu"), ("task", "date")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let reg = &trained.layout.registry;
    let lang = reg.feature_type("lang").unwrap().id_of("deu").unwrap();
    let task = reg.feature_type("task").unwrap().id_of("date").unwrap();
    // Longer than the sliding window (3).
    let tokens: Vec<u32> = (0..9).map(|i| (i * 7 % 20) as u32).collect();
    let sequence = Sequence::prompt_and_target(tokens.clone(), 3).with_features(vec![lang, task]);
    let batch = Batch::new(&[sequence]).unwrap();
    let want = common::logits_of(&trained.model, &batch);

    let dir = tmp.path().join("peft");
    export_peft(&trained, &combination, &dir).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap())
            .unwrap();
    let mut modules: Vec<String> =
        serde_json::from_value(config["target_modules"].clone()).unwrap();
    modules.sort();
    let mut all: Vec<&str> = TargetModule::ALL.iter().map(|m| m.hf_name()).collect();
    all.sort();
    assert_eq!(modules, all);

    let case = tmp.path().join("case.json");
    let case_json = serde_json::json!({ "tokens": tokens, "logits": want });
    std::fs::write(&case, case_json.to_string()).unwrap();
    common::run_python_check(
        "check_peft_export.py",
        &[base.as_os_str(), dir.as_os_str(), case.as_os_str()],
        "PEFT",
    );
}
