//! A merged checkpoint (`W + Σ s·B·A` written into the base's weights) loaded as a plain model
//! gives the logits of the unmerged model with that feature combination's adapters active; and
//! transformers, where available, reads it and agrees.

mod common;

use std::path::{Path, PathBuf};

use common::fixture;
use flix_kernels::{Device, Tolerance};
use flix_model::export::{parse_combination, Combination};
use flix_model::merge::merge_checkpoint;
use flix_model::train::{load_trained, Method, TrainSpec, Trained, Trainer};
use flix_model::weights::{Checkpoint, INDEX_FILE, SINGLE_FILE};
use flix_model::{Batch, LlamaModel, Sequence};
use safetensors::{Dtype, SafeTensors};

/// Token sequences of a few lengths (the fixture's vocabulary is small: ids stay below 20).
fn sequences() -> Vec<Vec<u32>> {
    vec![
        (0..9).map(|i| (i * 7 % 20) as u32).collect(),
        vec![3, 1, 4, 1, 5],
        vec![2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4, 5],
    ]
}

/// Logits of every sequence, each its own segment with feature values `slots` (ignored by a
/// model without adapters).
fn logits(model: &LlamaModel, slots: &[i32]) -> Vec<f32> {
    let seqs: Vec<Sequence> = sequences()
        .into_iter()
        .map(|t| Sequence::prompt_and_target(t, 1).with_features(slots.to_vec()))
        .collect();
    let batch = model.upload(&Batch::new(&seqs).unwrap()).unwrap();
    model.logits(&batch).unwrap().to_f32_vec().unwrap()
}

/// The plan slots of `combination` under the trained layout.
fn slots_of(trained: &Trained, combination: &Combination) -> Vec<i32> {
    let reg = &trained.layout.registry;
    let features = flix_core::FeatureSet {
        slots: reg
            .type_names()
            .iter()
            .map(|name| {
                combination
                    .get(*name)
                    .map_or(-1, |v| reg.feature_type(name).unwrap().id_of(v).unwrap())
            })
            .collect(),
    };
    trained.layout.slots(&features)
}

fn train(base: &Path, data: &Path, method: Method, run: &Path) -> Trained {
    let features = common::lang_task_features_of_ranks_2_and_3();
    let mut spec = TrainSpec::new(
        base.to_path_buf(),
        vec![data.to_path_buf()],
        features,
        method,
    );
    spec.steps = 4;
    spec.lr = 0.05;
    // The always-on adapter of the methods that have one.
    spec.shared_rank = matches!(method, Method::Lora | Method::FlixShared).then_some(1);
    spec.targets = vec!["q".into(), "v".into(), "down".into()];
    Trainer::new(spec, run).unwrap().run(|_| {}).unwrap();
    load_trained(run, &Device::Cpu).unwrap()
}

/// Raw bytes and dtype of tensor `name` in the checkpoint of `dir`.
fn stored(dir: &Path, name: &str) -> (Dtype, Vec<u8>) {
    let ck = Checkpoint::open(dir).unwrap();
    let (view, _) = ck.view(name).unwrap();
    (view.dtype(), view.data().to_vec())
}

/// f32 logits agree to about 1e-5 relative: the merged weight is rounded once to f32.
const MERGED_F32: Tolerance = Tolerance::new(1e-5, 1e-6);

#[test]
fn merged_checkpoint_gives_the_adapted_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, data) = fixture(tmp.path());
    let mut trained = train(&base, &data, Method::FlixShared, &tmp.path().join("run"));
    let plain = LlamaModel::load(&base, &Device::Cpu).unwrap();
    let base_logits = logits(&plain, &[]);

    for (i, text) in ["lang=fra,task=words2num", "task=date"].iter().enumerate() {
        let combination = parse_combination(text).unwrap();
        let want = logits(&trained.model, &slots_of(&trained, &combination));
        let out = tmp.path().join(format!("merged-{i}"));
        let summary = merge_checkpoint(&mut trained, &combination, &out).unwrap();
        // q, v and down of the one layer.
        assert_eq!(summary.replaced, 3, "{text}");
        let merged = LlamaModel::load(&out, &Device::Cpu).unwrap();
        let got = logits(&merged, &[]);
        if let Err(m) = MERGED_F32.check(text, &got, &want) {
            panic!("{m}");
        }
        // The adapters were trained: merging changed the model.
        assert!(Tolerance::new(1e-3, 1e-4)
            .check("base", &base_logits, &got)
            .is_err());
        // Untouched tensors are the base's bytes; the rest of the directory is copied.
        for name in ["model.layers.0.self_attn.k_proj.weight", "lm_head.weight"] {
            assert_eq!(stored(&out, name), stored(&base, name), "{name}");
        }
        for file in ["config.json", "tokenizer.json"] {
            assert_eq!(
                std::fs::read(out.join(file)).unwrap(),
                std::fs::read(base.join(file)).unwrap()
            );
        }
        check_with_transformers(&out, &got);
    }

    // Errors: an unknown value names the known ones; a type twice; the base as the output.
    let err = merge_checkpoint(
        &mut trained,
        &parse_combination("lang=xx").unwrap(),
        &tmp.path().join("bad"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("lang=xx") && err.contains("fra"), "{err}");
    let err = parse_combination("lang=fra,task=date,lang=deu")
        .unwrap_err()
        .to_string();
    assert!(err.contains("twice") && err.contains("lang"), "{err}");
    let err = merge_checkpoint(&mut trained, &parse_combination("").unwrap(), &base)
        .unwrap_err()
        .to_string();
    assert!(err.contains("base model's directory"), "{err}");
}

#[test]
fn lora_and_full_runs_merge_what_they_trained() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, data) = fixture(tmp.path());
    let none = Combination::new();

    // lora: the shared adapter alone, always.
    let mut lora = train(&base, &data, Method::Lora, &tmp.path().join("lora"));
    let want = logits(&lora.model, &slots_of(&lora, &none));
    let out = tmp.path().join("merged-lora");
    merge_checkpoint(&mut lora, &none, &out).unwrap();
    let got = logits(&LlamaModel::load(&out, &Device::Cpu).unwrap(), &[]);
    if let Err(m) = MERGED_F32.check("lora", &got, &want) {
        panic!("{m}");
    }

    // full: the trained weights themselves (every tensor replaced).
    let mut full = train(&base, &data, Method::Full, &tmp.path().join("full"));
    let want = logits(&full.model, &[]);
    let out = tmp.path().join("merged-full");
    let summary = merge_checkpoint(&mut full, &none, &out).unwrap();
    assert_eq!(summary.copied, 0);
    let got = logits(&LlamaModel::load(&out, &Device::Cpu).unwrap(), &[]);
    assert_eq!(got, want);
    let plain = LlamaModel::load(&base, &Device::Cpu).unwrap();
    assert_ne!(logits(&plain, &[]), want, "full training changed nothing");
}

/// Rewrites the f32 checkpoint of `dir` as bf16, in two shards with their index.
fn shard_as_bf16(dir: &Path) -> Vec<PathBuf> {
    let bytes = std::fs::read(dir.join(SINGLE_FILE)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let converted: Vec<(String, Vec<usize>, Vec<u8>)> = names
        .iter()
        .map(|n| {
            let v = st.tensor(n).unwrap();
            let data = v
                .data()
                .chunks_exact(4)
                .flat_map(|b| {
                    half::bf16::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]])).to_le_bytes()
                })
                .collect();
            (n.clone(), v.shape().to_vec(), data)
        })
        .collect();
    let half_point = converted.len() / 2;
    let mut map = serde_json::Map::new();
    let mut shards = Vec::new();
    for (i, part) in [&converted[..half_point], &converted[half_point..]]
        .iter()
        .enumerate()
    {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let views: Vec<_> = part
            .iter()
            .map(|(n, s, d)| {
                map.insert(n.clone(), file.clone().into());
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(Dtype::BF16, s.clone(), d).unwrap(),
                )
            })
            .collect();
        let path = dir.join(&file);
        std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
        shards.push(path);
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(dir.join(INDEX_FILE), index.to_string()).unwrap();
    std::fs::remove_file(dir.join(SINGLE_FILE)).unwrap();
    shards
}

#[test]
fn sharded_bf16_base_merges_into_one_bf16_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, data) = fixture(tmp.path());
    shard_as_bf16(&base);
    let mut trained = train(&base, &data, Method::Flix, &tmp.path().join("run"));
    let combination = parse_combination("lang=deu,task=num2words").unwrap();
    let want = logits(&trained.model, &slots_of(&trained, &combination));
    let out = tmp.path().join("merged");
    merge_checkpoint(&mut trained, &combination, &out).unwrap();
    assert!(out.join(SINGLE_FILE).is_file());
    assert!(
        !out.join(INDEX_FILE).exists(),
        "an index would point at shards"
    );
    let ck = Checkpoint::open(&out).unwrap();
    for name in ck.names() {
        assert_eq!(ck.view(name).unwrap().0.dtype(), Dtype::BF16, "{name}");
    }
    assert_eq!(
        stored(&out, "model.embed_tokens.weight"),
        stored(&base, "model.embed_tokens.weight")
    );
    // The merged weights are rounded to bf16 (8 significant bits): the logits agree to that.
    let got = logits(&LlamaModel::load(&out, &Device::Cpu).unwrap(), &[]);
    if let Err(m) = Tolerance::BF16.check("bf16 merge", &got, &want) {
        panic!("{m}");
    }
    // And far closer than the unmerged base: the rounding is small next to the adapters' effect.
    let plain = LlamaModel::load(&base, &Device::Cpu).unwrap();
    let base_logits = logits(&plain, &[]);
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    let (rounding, effect) = (max_diff(&got, &want), max_diff(&base_logits, &want));
    eprintln!("bf16 merge: rounding moved logits by {rounding}, the adapters by {effect}");
    assert!(
        rounding < 0.05 * effect,
        "bf16 rounding moved logits by {rounding}, the adapters by {effect}"
    );
}

/// Loads `dir` with transformers' `AutoModelForCausalLM` and compares its logits with `ours`
/// (the sequences of [`sequences`], one at a time), where Python with transformers exists.
fn check_with_transformers(dir: &Path, ours: &[f32]) {
    let case = dir.with_extension("case.json");
    let json = serde_json::json!({ "sequences": sequences(), "logits": ours });
    std::fs::write(&case, json.to_string()).unwrap();
    common::run_python_check(
        "check_merged_checkpoint.py",
        &[dir.as_os_str(), case.as_os_str()],
        "transformers",
    );
}

/// Gemma 3 runs merge as the Llama ones do. A full run writes its norm weights in transformers'
/// convention (w, where the model keeps 1 + w): the merged directory loads back, in our loader
/// and in transformers, as the trained model.
#[test]
fn gemma3_runs_merge_in_transformers_conventions() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, data) = fixture(tmp.path());
    common::rewrite_as_gemma3(&base);
    let none = Combination::new();

    let mut full = train(&base, &data, Method::Full, &tmp.path().join("full"));
    assert_eq!(full.model.config.family, flix_model::Family::Gemma3);
    let want = logits(&full.model, &[]);
    let out = tmp.path().join("merged-full");
    merge_checkpoint(&mut full, &none, &out).unwrap();
    let got = logits(&LlamaModel::load(&out, &Device::Cpu).unwrap(), &[]);
    assert_eq!(got, want);
    // The trained norms moved away from the identity (w = 0) and are stored as w.
    let ck = Checkpoint::open(&out).unwrap();
    let norm = ck
        .load_f32("model.layers.0.self_attn.q_norm.weight", &[12])
        .unwrap();
    assert!(norm.iter().all(|w| w.abs() < 0.5), "{norm:?}");
    assert!(norm.iter().any(|w| *w != 0.0), "{norm:?}");
    check_with_transformers(&out, &got);

    let mut flix = train(&base, &data, Method::FlixShared, &tmp.path().join("flix"));
    let combination = parse_combination("lang=deu,task=date").unwrap();
    let want = logits(&flix.model, &slots_of(&flix, &combination));
    let out = tmp.path().join("merged-flix");
    merge_checkpoint(&mut flix, &combination, &out).unwrap();
    let got = logits(&LlamaModel::load(&out, &Device::Cpu).unwrap(), &[]);
    if let Err(m) = MERGED_F32.check("gemma3 flix merge", &got, &want) {
        panic!("{m}");
    }
    for name in [
        "model.layers.1.post_feedforward_layernorm.weight",
        "model.norm.weight",
    ] {
        assert_eq!(stored(&out, name), stored(&base, name), "{name}");
    }
    check_with_transformers(&out, &got);
}
