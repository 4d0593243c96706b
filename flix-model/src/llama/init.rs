//! Models without a checkpoint and checkpoints without Python: a randomly initialised model (as
//! transformers initialises Llama and Gemma 3: weights N(0, 0.02²), biases zero, norms the
//! identity, i.e. w = 1 for Llama and w = 0 for Gemma's 1 + w), and writing a model back as a
//! Hugging Face directory (`config.json` + `model.safetensors`) that `LlamaModel::load` and
//! transformers read.

use std::path::Path;

use flix_core::splitmix64;
use flix_kernels::{DType, Device, Tensor};

use super::{LlamaModel, Param, ParamKind};
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::train::tensor_file::save_tensors_with_metadata;
use flix_core::write_atomic;

/// transformers' default `initializer_range` for Llama.
pub const INIT_STD: f64 = 0.02;

/// Deterministic N(0, std²) values (Box–Muller over a counter-based hash of (seed, stream, i)).
fn normal(n: usize, std: f64, seed: u64, stream: u64) -> Vec<f32> {
    let base = splitmix64(seed ^ splitmix64(stream));
    let unit =
        |i: u64| ((splitmix64(base ^ splitmix64(i)) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    (0..n as u64)
        .map(|i| {
            let (u1, u2) = (unit(2 * i), unit(2 * i + 1));
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
        })
        .collect()
}

impl LlamaModel {
    /// A model with random weights for `config` (for pretraining small models from scratch),
    /// in the device's default working dtype.
    pub fn random(config: LlamaConfig, seed: u64, device: &Device) -> Result<Self> {
        Self::random_as(config, seed, device, super::default_dtype(device))
    }

    /// [`Self::random`] with weights stored as `dtype`.
    pub fn random_as(
        config: LlamaConfig,
        seed: u64,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let mut stream = 0u64;
        let mut param = |name: String, shape: &[usize], kind: ParamKind| -> Result<Param> {
            stream += 1;
            let n = shape.iter().product();
            let data = match kind {
                ParamKind::Weight => normal(n, INIT_STD, seed, stream),
                ParamKind::Bias => vec![0.0; n],
                // The identity norm, as the model keeps it (Gemma's w = 0 is kept as 1 + w).
                ParamKind::Norm => vec![1.0; n],
            };
            Ok(Param {
                value: Tensor::from_f32(device, dtype, shape, &data)?,
                name,
                grad: None,
            })
        };
        Self::build(config, device, &mut param)
    }

    /// Writes `dir/config.json` and `dir/model.safetensors` (f32 base weights; adapters are not
    /// included), each with [`flix_core::write_atomic`], so a crash never leaves a torn file.
    pub fn save_pretrained(&mut self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let config = self.config.to_hf_json();
        let text = serde_json::to_string_pretty(&config)
            .map_err(|e| ModelError::Invalid(format!("cannot serialise the config: {e}")))?;
        write_atomic(&dir.join("config.json"), text.as_bytes())?;
        let weights = self.hf_weights()?;
        save_tensors_with_metadata(
            &dir.join(crate::weights::SINGLE_FILE),
            &weights,
            Some(("format", "pt")),
        )
    }
}
