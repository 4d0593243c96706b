//! Parity with Hugging Face `transformers` on the committed tiny Llama, Qwen2, Qwen3 and Mistral
//! fixtures (`scripts/make_hf_fixture.py`) and the tiny Gemma 3 fixture
//! (`scripts/make_gemma3_fixture.py`): logits, masked loss, gradients, greedy generation and the
//! decoder's log-probabilities must match what PyTorch computed. Every test body runs on each
//! available device: the CPU always, CUDA when a GPU is present (skipped with a message
//! otherwise; with FLIX_REQUIRE_GPU=1 a missing GPU fails).

use std::path::{Path, PathBuf};

use flix_kernels::tolerance::Tolerance;
use flix_kernels::{DType, Device, Tensor};
use flix_model::config::{Family, LayerType};
use flix_model::{
    AdapterSpec, Batch, Checkpoint, Decoder, GenerationConfig, LlamaConfig, LlamaModel, Sequence,
    SequenceParams, TargetModule, TrainMode,
};
use safetensors::SafeTensors;

/// `tiny-llama` (llama3 rope, untied, LoRA fixture), `tiny-qwen2` (q/k/v biases, tied),
/// `tiny-qwen3` (q/k norms, head_dim ≠ hidden / heads), `tiny-mistral` or `tiny-gemma3`.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn fixture_dir() -> PathBuf {
    fixture("tiny-llama")
}

/// One run of a test body: a device, the model's working dtype there, and the tolerance its
/// results are held to against PyTorch's f32.
struct Run {
    device: Device,
    dtype: DType,
    tol: Tolerance,
}

/// bf16 weights and activations with f32 accumulation, through two layers and back: each
/// rounding keeps 8 significant bits, so errors of a few percent of the tensor's scale.
const BF16_MODEL: Tolerance = Tolerance::new(5e-2, 5e-2);

impl Run {
    fn assert_close(&self, what: &str, got: &[f32], want: &[f32]) {
        let what = format!("{} {}: {what}", self.device, self.dtype);
        let result = match self.dtype {
            DType::F32 => self.tol.check(&what, got, want),
            DType::BF16 => self.tol.check_scaled(&what, got, want),
        };
        if let Err(m) = result {
            panic!("{m}");
        }
    }
}

/// The runs: the CPU in f32 always; CUDA in f32 and in bf16 when a GPU is present (skipped with
/// a message otherwise; with FLIX_REQUIRE_GPU=1 a missing GPU fails).
fn devices() -> Vec<Run> {
    let mut out = vec![Run {
        device: Device::Cpu,
        dtype: DType::F32,
        tol: F32,
    }];
    match Device::cuda(0) {
        Ok(d) => {
            out.push(Run {
                device: d.clone(),
                dtype: DType::F32,
                tol: F32,
            });
            out.push(Run {
                device: d,
                dtype: DType::BF16,
                tol: BF16_MODEL,
            });
        }
        Err(e) => {
            if std::env::var("FLIX_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("FLIX_REQUIRE_GPU=1 but CUDA is unavailable: {e}");
            }
            eprintln!("SKIPPED the CUDA runs of this test: {e}");
        }
    }
    out
}

/// f32 forward and backward against PyTorch's f32 (different summation orders).
const F32: Tolerance = Tolerance::F32;

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    if let Err(m) = F32.check(what, got, want) {
        panic!("{m}");
    }
}

struct Expected {
    bytes: Vec<u8>,
}

impl Expected {
    fn load(dir: &Path) -> Self {
        Self {
            bytes: std::fs::read(dir.join("expected.safetensors")).unwrap(),
        }
    }
    fn get(&self, name: &str) -> Vec<f32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let view = st
            .tensor(name)
            .unwrap_or_else(|e| panic!("fixture tensor {name}: {e}"));
        view.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

/// The sequences of `dir/inputs.json`, packed.
fn fixture_batch_from(dir: &Path) -> Batch {
    let text = std::fs::read_to_string(dir.join("inputs.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let seqs: Vec<Sequence> = json["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let ids = s["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            Sequence::prompt_and_target(ids, s["prompt_len"].as_u64().unwrap() as usize)
        })
        .collect();
    Batch::new(&seqs).unwrap()
}

/// The Llama fixture's sequences (the Qwen2 fixture uses them too).
fn fixture_batch() -> Batch {
    fixture_batch_from(&fixture_dir())
}

/// `batch` with every sequence given the one value of a LoRA's one feature type.
fn with_lora_features(batch: &Batch) -> Batch {
    let mut batch = batch.clone();
    batch.features = vec![vec![0]; batch.num_sequences()];
    batch
}

fn check_logits_and_loss(dir: &Path, batch: &Batch) {
    let expected = Expected::load(dir);
    for run in devices() {
        let device = run.device.clone();
        let model = LlamaModel::load_as(dir, &device, run.dtype).unwrap();
        let uploaded = model.upload(batch).unwrap();
        let logits = model.logits(&uploaded).unwrap().to_f32_vec().unwrap();
        let vocab = model.config.vocab_size;
        for s in 0..batch.num_sequences() {
            let rows = &logits[batch.starts[s] * vocab..batch.starts[s + 1] * vocab];
            run.assert_close(
                &format!("logits of sequence {s}"),
                rows,
                &expected.get(&format!("full.logits.{s}")),
            );
        }
        let scored = model.score(&uploaded).unwrap();
        let loss = scored.loss_sum / scored.count as f64;
        run.assert_close("loss", &[loss as f32], &expected.get("full.loss"));
    }
}

fn check_full_gradients(dir: &Path, batch: &Batch, num_params: usize) {
    let expected = Expected::load(dir);
    for run in devices() {
        let device = run.device.clone();
        let mut model = LlamaModel::load_as(dir, &device, run.dtype).unwrap();
        model.set_train_mode(TrainMode::Full).unwrap();
        let report = model
            .forward_backward(&model.upload(batch).unwrap())
            .unwrap();
        run.assert_close("loss", &[report.loss as f32], &expected.get("full.loss"));
        let mut checked = 0;
        for p in model.params_mut() {
            let grad = p.grad.as_ref().unwrap().to_f32_vec().unwrap();
            run.assert_close(
                &format!("gradient of {}", p.name),
                &grad,
                &expected.get(&format!("full.grad.{}", p.name)),
            );
            checked += 1;
        }
        assert_eq!(checked, num_params);
    }
}

#[test]
fn llama_logits_and_loss_match_transformers() {
    check_logits_and_loss(&fixture("tiny-llama"), &fixture_batch());
}

#[test]
fn llama_full_parameter_gradients_match_transformers() {
    // embed, 2 × (2 norms + 7 projections), final norm, untied head.
    check_full_gradients(&fixture("tiny-llama"), &fixture_batch(), 1 + 2 * 9 + 2);
}

#[test]
fn qwen2_tied_biased_logits_and_loss_match_transformers() {
    let model = LlamaModel::load(&fixture("tiny-qwen2"), &Device::Cpu).unwrap();
    assert!(model.config.qkv_bias && model.lm_head.is_none());
    check_logits_and_loss(&fixture("tiny-qwen2"), &fixture_batch());
}

#[test]
fn qwen2_full_parameter_gradients_match_transformers() {
    // embed (also the head), 2 × (2 norms + 7 projections + 3 biases), final norm.
    check_full_gradients(&fixture("tiny-qwen2"), &fixture_batch(), 1 + 2 * 12 + 1);
}

#[test]
fn qwen3_qk_norm_logits_and_loss_match_transformers() {
    let model = LlamaModel::load(&fixture("tiny-qwen3"), &Device::Cpu).unwrap();
    let c = &model.config;
    assert!(c.has_qk_norm() && !c.qkv_bias && !c.o_bias && model.lm_head.is_some());
    assert_eq!((c.head_dim, c.hidden_size / c.num_attention_heads), (16, 8));
    check_logits_and_loss(&fixture("tiny-qwen3"), &fixture_batch());
}

#[test]
fn qwen3_full_parameter_gradients_match_transformers() {
    // embed, 2 × (2 norms + 7 projections + q and k norms), final norm, untied head.
    check_full_gradients(&fixture("tiny-qwen3"), &fixture_batch(), 1 + 2 * 11 + 2);
}

/// What the decoder reports for a whole sequence given as a prompt (its prompt log-probabilities,
/// from the prefill's rows) and for its first new token, on every device, against the log-softmax
/// (f64) of PyTorch's logits of the same sequence.
#[test]
fn decoder_log_probabilities_match_the_log_softmax_of_transformers_logits() {
    for (dir, batch) in [
        (fixture_dir(), fixture_batch()),
        (fixture("tiny-qwen3"), fixture_batch()),
        (gemma3_dir(), fixture_batch_from(&gemma3_dir())),
    ] {
        let expected = Expected::load(&dir);
        for run in devices() {
            let model = LlamaModel::load_as(&dir, &run.device, run.dtype).unwrap();
            let vocab = model.config.vocab_size;
            for s in 0..batch.num_sequences() {
                let ids = batch.tokens[batch.starts[s]..batch.starts[s + 1]].to_vec();
                let logits = expected.get(&format!("full.logits.{s}"));
                let log_softmax = |row: usize, token: u32| {
                    let row = &logits[row * vocab..(row + 1) * vocab];
                    let max = row.iter().fold(f64::MIN, |m, &l| m.max(l as f64));
                    let sum: f64 = row.iter().map(|&l| (l as f64 - max).exp()).sum();
                    (row[token as usize] as f64 - max - sum.ln()) as f32
                };
                let mut decoder = Decoder::new(&model);
                decoder
                    .add(SequenceParams {
                        prompt: ids.clone(),
                        slots: vec![],
                        max_new_tokens: 1,
                        temperature: 0.0,
                        top_p: 1.0,
                        seed: 0,
                        stream: 0,
                        eos_token_ids: vec![],
                        logprobs: Some(2),
                        prompt_logprobs: true,
                    })
                    .unwrap();
                let events = decoder.step().unwrap();
                let event = &events[0];
                let mut got: Vec<f32> = event.prompt_logprobs.iter().map(|l| l.logprob).collect();
                let mut want: Vec<f32> =
                    (1..ids.len()).map(|j| log_softmax(j - 1, ids[j])).collect();
                got.push(event.logprobs.as_ref().unwrap().logprob);
                want.push(log_softmax(ids.len() - 1, event.token));
                run.assert_close(
                    &format!("{} sequence {s} log-probabilities", dir.display()),
                    &got,
                    &want,
                );
            }
        }
    }
}

/// The fixture's PEFT LoRA (r = 4, alpha = 8, on `targets`) as a single-feature FLix: one type
/// with one value that every example has. Logits, loss and every LoRA gradient match PEFT's.
fn check_lora(dir: &Path, batch: &Batch, targets: &[TargetModule]) {
    let expected = Expected::load(dir);
    let (rank, alpha) = (4, 8.0);
    for run in devices() {
        let device = run.device.clone();
        let mut model = LlamaModel::load_as(dir, &device, run.dtype).unwrap();
        model.set_train_mode(TrainMode::Adapters).unwrap();
        model
            .attach_adapters(&AdapterSpec::lora(rank, alpha, targets, 0))
            .unwrap();
        let layers = model.config.num_hidden_layers;
        for layer in 0..layers {
            for &module in targets {
                let name = module.path(layer);
                let lin = model.linear_mut(layer, module).unwrap();
                let ty = &mut lin.adapter.as_mut().unwrap().layers.types[0];
                let (a_shape, b_shape) = (ty.a.shape().to_vec(), ty.b.shape().to_vec());
                let a = expected.get(&format!("lora.weight.{name}.lora_A"));
                let b = expected.get(&format!("lora.weight.{name}.lora_B"));
                ty.a = Tensor::from_f32(&device, DType::F32, &a_shape, &a).unwrap();
                ty.b = Tensor::from_f32(&device, DType::F32, &b_shape, &b).unwrap();
            }
        }
        let uploaded = model.upload(&with_lora_features(batch)).unwrap();
        let logits = model.logits(&uploaded).unwrap().to_f32_vec().unwrap();
        let vocab = model.config.vocab_size;
        for s in 0..batch.num_sequences() {
            let rows = &logits[batch.starts[s] * vocab..batch.starts[s + 1] * vocab];
            run.assert_close(
                &format!("LoRA logits of sequence {s}"),
                rows,
                &expected.get(&format!("lora.logits.{s}")),
            );
        }
        let report = model.forward_backward(&uploaded).unwrap();
        run.assert_close(
            "LoRA loss",
            &[report.loss as f32],
            &expected.get("lora.loss"),
        );
        for layer in 0..layers {
            for &module in targets {
                let name = module.path(layer);
                let lin = model.linear_mut(layer, module).unwrap();
                assert!(
                    lin.weight.grad.is_none(),
                    "{name}: base weight must stay frozen"
                );
                let grads = &lin.adapter.as_ref().unwrap().grads;
                let (da, db) = (
                    grads.da[0].to_f32_vec().unwrap(),
                    grads.db[0].to_f32_vec().unwrap(),
                );
                assert!(
                    da.iter().any(|v| v.abs() > 1e-4),
                    "{name}: dA should be nonzero"
                );
                run.assert_close(
                    &format!("dA of {name}"),
                    &da,
                    &expected.get(&format!("lora.grad.{name}.lora_A")),
                );
                run.assert_close(
                    &format!("dB of {name}"),
                    &db,
                    &expected.get(&format!("lora.grad.{name}.lora_B")),
                );
            }
        }
    }
}

/// The Llama fixture's LoRA is on q_proj and v_proj.
#[test]
fn lora_as_single_feature_flix_matches_peft() {
    check_lora(
        &fixture_dir(),
        &fixture_batch(),
        &[TargetModule::Q, TargetModule::V],
    );
}

/// The PEFT adapter directory `dir/lora` (r = 4, alpha = 8) that a fixture script saved, read by
/// `load_peft_lora`, gives PEFT's logits. Returns the model with those adapters.
fn check_peft_directory(dir: &Path, batch: &Batch) -> LlamaModel {
    let expected = Expected::load(dir);
    let mut model = LlamaModel::load(dir, &Device::Cpu).unwrap();
    let lora = flix_model::load_peft_lora(&mut model, &dir.join("lora")).unwrap();
    assert_eq!((lora.rank, lora.alpha), (4, 8.0));
    let batch_with_features = Batch {
        features: vec![lora.features(); batch.num_sequences()],
        ..batch.clone()
    };
    let uploaded = model.upload(&batch_with_features).unwrap();
    let logits = model.logits(&uploaded).unwrap().to_f32_vec().unwrap();
    let vocab = model.config.vocab_size;
    for s in 0..batch.num_sequences() {
        let rows = &logits[batch.starts[s] * vocab..batch.starts[s + 1] * vocab];
        assert_close(
            &format!("PEFT-dir logits of sequence {s}"),
            rows,
            &expected.get(&format!("lora.logits.{s}")),
        );
    }
    model
}

/// The Llama fixture's PEFT directory gives PEFT's logits; and per-example scores recombine into
/// HF's loss, whatever the batching.
#[test]
fn peft_directory_and_scores_match_peft() {
    let expected = Expected::load(&fixture_dir());
    let batch = fixture_batch();
    let model = check_peft_directory(&fixture_dir(), &batch);

    let seqs: Vec<Sequence> = (0..batch.num_sequences())
        .map(|s| {
            let r = batch.starts[s]..batch.starts[s + 1];
            Sequence {
                tokens: batch.tokens[r.clone()].to_vec(),
                targets: batch.targets[r].to_vec(),
                features: vec![0],
            }
        })
        .collect();
    let together = flix_model::score_sequences(&model, &seqs, 1 << 20).unwrap();
    let apart = flix_model::score_sequences(&model, &seqs, 1).unwrap();
    let (mut sum, mut count) = (0.0, 0);
    for (a, b) in together.iter().zip(&apart) {
        assert_close(
            "token logprobs, batched vs alone",
            &a.token_logprobs,
            &b.token_logprobs,
        );
        sum += a.loss.unwrap() * a.token_logprobs.len() as f64;
        count += a.token_logprobs.len();
    }
    assert_close(
        "loss recombined from per-example scores",
        &[(sum / count as f64) as f32],
        &expected.get("lora.loss"),
    );
}

/// `tokenizer.json` read by the `tokenizers` crate gives the ids the Python library gave.
#[test]
fn tokenizer_matches_python_tokenizers() {
    let text = std::fs::read_to_string(fixture_dir().join("inputs.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let sample = &json["tokenizer_sample"];
    let want: Vec<u32> = sample["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let tok = flix_model::Tokenizer::load(&fixture_dir()).unwrap();
    assert_eq!(
        tok.encode_with_special(sample["text"].as_str().unwrap(), true)
            .unwrap(),
        want
    );
    let seq = tok.encode_example("the quick", " brown fox").unwrap();
    let prompt = tok.encode_with_special("the quick", true).unwrap();
    assert_eq!(&seq.tokens[..prompt.len()], &prompt[..]);
    assert!(seq.targets[..prompt.len() - 1].iter().all(|&t| t < 0));
    assert_eq!(
        seq.targets[prompt.len() - 1],
        seq.tokens[prompt.len()] as i32
    );
}

/// A Llama 3 / SmolLM-style byte-level BPE (regex split with look-ahead, then byte-level): the
/// Rust tokenizer gives Python's ids, including whitespace runs, newlines and non-ASCII text.
#[test]
fn bytelevel_tokenizer_matches_python_tokenizers() {
    let dir = fixture("bytelevel-tokenizer");
    let tok = flix_model::Tokenizer::load(&dir).unwrap();
    let text = std::fs::read_to_string(dir.join("samples.json")).unwrap();
    let samples: serde_json::Value = serde_json::from_str(&text).unwrap();
    for s in samples.as_array().unwrap() {
        let want: Vec<u32> = s["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            tok.encode_with_special(s["text"].as_str().unwrap(), true)
                .unwrap(),
            want,
            "{}",
            s["text"]
        );
    }
}

// Gemma 3 (`tests/fixtures/tiny-gemma3`, see scripts/make_gemma3_fixture.py): one sliding
// (window 4) and one global layer, sequences of 9 and 11 tokens, head_dim 24 != hidden / heads,
// query_pre_attn_scalar 20, per-type rope, random norms around zero (x̂ · (1 + w)), tied head.

fn gemma3_dir() -> PathBuf {
    fixture("tiny-gemma3")
}

#[test]
fn gemma3_config_is_read_as_transformers_reads_it() {
    let c = LlamaConfig::from_file(&gemma3_dir().join("config.json")).unwrap();
    assert_eq!(c.family, Family::Gemma3);
    assert_eq!(c.layer_types, [LayerType::Sliding, LayerType::Full]);
    assert_eq!((c.layer_window(0), c.layer_window(1)), (Some(4), None));
    assert_eq!(
        (c.head_dim, c.num_attention_heads, c.num_key_value_heads),
        (24, 2, 1)
    );
    assert!((c.attention_scale() - 1.0 / 20f32.sqrt()).abs() < 1e-7);
    assert_eq!(c.layer_rope(0).theta, 1000.0);
    assert_eq!(c.layer_rope(1).theta, 100000.0);
    assert!(c.tie_word_embeddings);
    // The same text model inside a multimodal `gemma3` config (`text_config`).
    let wrapped = LlamaConfig::from_file(&gemma3_dir().join("config_gemma3_wrapper.json")).unwrap();
    assert_eq!(wrapped, c);
}

#[test]
fn gemma3_logits_and_loss_match_transformers() {
    let dir = gemma3_dir();
    check_logits_and_loss(&dir, &fixture_batch_from(&dir));
}

#[test]
fn gemma3_full_parameter_gradients_match_transformers() {
    // embed (also the head), 2 × (6 norms + 7 projections), final norm. The norm gradients are
    // those of transformers' w: the model keeps 1 + w, whose gradient is the same.
    let dir = gemma3_dir();
    check_full_gradients(&dir, &fixture_batch_from(&dir), 1 + 2 * 13 + 1);
}

#[test]
fn gemma3_lora_on_every_projection_matches_peft() {
    let dir = gemma3_dir();
    check_lora(&dir, &fixture_batch_from(&dir), &TargetModule::ALL);
}

#[test]
fn gemma3_peft_directory_gives_peft_logits() {
    let dir = gemma3_dir();
    let model = check_peft_directory(&dir, &fixture_batch_from(&dir));
    assert_eq!(model.adapters().len(), 2 * 7);
}

/// Greedy continuations past the sliding window, through the KV cache, equal what
/// transformers' `generate` (its own sliding-window cache) produced.
#[test]
fn gemma3_greedy_generation_matches_transformers_generate() {
    let dir = gemma3_dir();
    let text = std::fs::read_to_string(dir.join("inputs.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let cases = json["greedy"].as_array().unwrap();
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["prompt"])).collect();
    let want: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["new_tokens"])).collect();
    for run in devices().into_iter().filter(|r| r.dtype == DType::F32) {
        let model = LlamaModel::load_as(&dir, &run.device, run.dtype).unwrap();
        let cfg = GenerationConfig {
            max_new_tokens: want[0].len(),
            ..GenerationConfig::default()
        };
        let got = model.generate(&prompts, None, &cfg).unwrap();
        assert_eq!(got, want, "{}", run.device);
    }
}

/// A checkpoint with more layers than the config's `num_hidden_layers` is refused, naming a
/// tensor of the extra layer, rather than silently cut short.
#[test]
fn checkpoint_with_more_layers_than_the_config_is_an_error() {
    let dir = fixture_dir();
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["num_hidden_layers"], 2);
    let mut one_layer = json.clone();
    one_layer["num_hidden_layers"] = 1.into();
    let config =
        LlamaConfig::from_json_str(&one_layer.to_string(), "config.json".as_ref()).unwrap();
    let ck = Checkpoint::open(&dir).unwrap();
    let err = LlamaModel::from_checkpoint(config, &ck, &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model.layers.1.") && err.contains("num_hidden_layers = 1"),
        "{err}"
    );
}

// Mistral with a sliding window (3) shorter than the sequences (`tiny-mistral`): every layer
// attends to the current token and the two before it, as transformers' sliding-window mask.

#[test]
fn mistral_sliding_window_logits_and_loss_match_transformers() {
    let dir = fixture("tiny-mistral");
    let c = LlamaConfig::from_file(&dir.join("config.json")).unwrap();
    assert_eq!(c.family, Family::Mistral);
    assert_eq!((c.layer_window(0), c.layer_window(1)), (Some(3), Some(3)));
    check_logits_and_loss(&dir, &fixture_batch());
}

#[test]
fn mistral_sliding_window_gradients_match_transformers() {
    // embed, 2 × (2 norms + 7 projections), final norm, untied head.
    check_full_gradients(&fixture("tiny-mistral"), &fixture_batch(), 1 + 2 * 9 + 2);
}

/// Greedy continuations past the window, through the KV cache, equal transformers' argmax by
/// full recomputation.
#[test]
fn mistral_sliding_window_greedy_generation_matches_transformers() {
    let dir = fixture("tiny-mistral");
    let text = std::fs::read_to_string(dir.join("greedy.json")).unwrap();
    let cases: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let cases = cases.as_array().unwrap();
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["prompt"])).collect();
    let want: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["new_tokens"])).collect();
    let model = LlamaModel::load(&dir, &Device::Cpu).unwrap();
    let cfg = GenerationConfig {
        max_new_tokens: want[0].len(),
        ..GenerationConfig::default()
    };
    assert_eq!(model.generate(&prompts, None, &cfg).unwrap(), want);
}

/// A multimodal Gemma 3 directory (a `gemma3` config, text weights under
/// `language_model.model.`): the config parses, and loading says what the weights are instead of
/// reporting a missing embedding.
#[test]
fn multimodal_gemma3_checkpoint_is_refused_with_a_clear_error() {
    let src = gemma3_dir();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let renamed: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| (format!("language_model.{name}"), view))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        safetensors::serialize(renamed, None).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        src.join("config_gemma3_wrapper.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let err = LlamaModel::load(dir.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("multimodal") && err.contains("language_model.model."),
        "{err}"
    );
}
