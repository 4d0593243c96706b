//! What a training run will allocate beyond the base weights, estimated from the model's shapes
//! and the options before anything is allocated, and checked against the memory available, so
//! that an absurd `--rank` or `--batch-tokens` is refused with numbers instead of aborting on an
//! allocation.
//!
//! The estimate counts, in f32:
//! - adapters: every adapted linear `[out, in]` has, per adapter type, `values × rank × (in +
//!   out)` parameters; with their gradient and AdamW's two moments, 16 bytes per parameter, and
//!   2 more on a bf16 model (the bf16 working copy the CUDA kernels read, `LayerAdapters`)
//!   (`full`: every linear weight of the layers gets a gradient and two moments, 12 bytes per
//!   parameter; embeddings and norms are left out, as the bound is a lower one);
//! - activations: per token of a micro-batch, what each layer keeps for the backward pass, at
//!   least its input and normalised input, attention output and residual (4 × hidden), queries,
//!   keys and values, and the MLP's gate, up and activation (3 × intermediate). The real figure
//!   is higher (attention scores, logits chunks): the estimate is a lower bound, so a refusal is
//!   certain, never a guess;
//! - kept logits: the output head's f32 logits the forward keeps for the backward, within the
//!   model's `logits_budget_bytes`, counted as if every token of the micro-batch were scored.
//!   This one part is an upper bound (at most the budget; prompt tokens are not scored), so the
//!   refusal names it and how to lower it.
//!
//! The limit is the memory available now: `MemAvailable` of `/proc/meminfo` on the CPU, the
//! GPU's free memory on CUDA. Where neither can be read, only sizes that cannot be counted in
//! 64 bits are refused.

use flix_kernels::ops::cross_entropy::kept_logits_bytes;
use flix_kernels::{DType, Device};

use crate::adapters::TargetModule;
use crate::error::{ModelError, Result};
use crate::llama::LlamaModel;

use super::layout::{Layout, Method};

/// Bytes per adapter parameter: value, gradient, AdamW's first and second moments (f32 each).
const ADAPTER_BYTES_PER_PARAM: u128 = 16;
/// Bytes per adapter parameter of the bf16 working copy a bf16 model's layers keep.
const ADAPTER_COPY_BYTES_PER_PARAM: u128 = 2;
/// Bytes per base parameter beyond the weight itself for `full`: gradient and two moments.
const FULL_EXTRA_BYTES_PER_PARAM: u128 = 12;

/// The estimated allocation of a run, in bytes (u128: a product of absurd options must not wrap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Trainable parameters (adapters, or every base weight for `full`).
    pub params: u128,
    /// Their values, gradients and optimizer state.
    pub param_bytes: u128,
    /// Lower bound of one micro-batch's saved activations.
    pub activation_bytes: u128,
    /// The output head's logits kept for the backward when every token of a micro-batch is
    /// scored (at most the model's `logits_budget_bytes`).
    pub kept_logits_bytes: u128,
}

impl MemoryEstimate {
    pub fn total(&self) -> u128 {
        self.param_bytes + self.activation_bytes + self.kept_logits_bytes
    }
}

/// Adapter parameters of `layout` on `model`'s linears (its real shapes, whatever the family).
pub fn adapter_params(model: &LlamaModel, layout: &Layout) -> u128 {
    let per_dims: u128 = layout
        .adapter_types()
        .iter()
        .map(|(_, t)| t.num_values as u128 * t.rank as u128)
        .sum();
    let mut total = 0u128;
    for layer in &model.layers {
        for (module, lin) in TargetModule::ALL.into_iter().zip(layer.linears()) {
            if layout.targets.contains(&module) {
                total += per_dims * (lin.in_dim() as u128 + lin.out_dim() as u128);
            }
        }
    }
    total
}

/// Adapter types whose rank exceeds the smallest dimension of the projections they adapt, with
/// that dimension: a low-rank update of an `in × out` matrix has rank at most min(in, out), so a
/// larger rank only adds parameters, memory and time.
pub fn ranks_above_the_dimensions(
    model: &LlamaModel,
    layout: &Layout,
) -> Vec<(String, usize, usize)> {
    let smallest = model
        .layers
        .iter()
        .flat_map(|layer| TargetModule::ALL.into_iter().zip(layer.linears()))
        .filter(|(module, _)| layout.targets.contains(module))
        .map(|(_, lin)| lin.in_dim().min(lin.out_dim()))
        .min();
    let Some(smallest) = smallest else {
        return Vec::new();
    };
    layout
        .adapter_types()
        .into_iter()
        .filter(|(_, t)| t.rank > smallest)
        .map(|(name, t)| (name, t.rank, smallest))
        .collect()
}

/// The estimate for training `layout` on `model` with micro-batches of `batch_tokens` tokens.
pub fn estimate(model: &LlamaModel, layout: &Layout, batch_tokens: usize) -> MemoryEstimate {
    let c = &model.config;
    let (params, param_bytes) = if layout.method == Method::Full {
        let base: u128 = model
            .layers
            .iter()
            .flat_map(|l| l.linears())
            .map(|lin| lin.in_dim() as u128 * lin.out_dim() as u128)
            .sum();
        (base, base * FULL_EXTRA_BYTES_PER_PARAM)
    } else {
        let params = adapter_params(model, layout);
        let copy = match model.dtype() {
            DType::BF16 => ADAPTER_COPY_BYTES_PER_PARAM,
            DType::F32 => 0,
        };
        (params, params * (ADAPTER_BYTES_PER_PARAM + copy))
    };
    let qkv = (c.num_attention_heads + 2 * c.num_key_value_heads) as u128 * c.head_dim as u128;
    let per_token_per_layer = 4 * c.hidden_size as u128 + qkv + 3 * c.intermediate_size as u128;
    let activation_bytes =
        batch_tokens as u128 * c.num_hidden_layers as u128 * per_token_per_layer * 4;
    let kept_logits_bytes = kept_logits_bytes(
        batch_tokens,
        c.vocab_size,
        model.vocab_chunk,
        model.logits_budget_bytes,
    ) as u128;
    MemoryEstimate {
        params,
        param_bytes,
        activation_bytes,
        kept_logits_bytes,
    }
}

/// The memory a run on `device` may use now, in bytes, and where that figure comes from.
pub fn available_memory(device: &Device) -> Option<(u128, &'static str)> {
    match device {
        Device::Cuda(backend) => backend
            .memory_info()
            .ok()
            .map(|(free, _)| (free as u128, "free GPU memory")),
        Device::Cpu => {
            let text = std::fs::read_to_string("/proc/meminfo").ok()?;
            let kib: u128 = text
                .lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()?;
            Some((kib * 1024, "MemAvailable in /proc/meminfo"))
        }
    }
}

/// Refuses `estimate` when it exceeds `limit` (bytes, described by `source`), or 2^64 bytes when
/// there is no limit to compare with.
pub fn check_fits(estimate: &MemoryEstimate, limit: Option<(u128, &str)>) -> Result<()> {
    let (limit, source) = limit.unwrap_or((u128::from(u64::MAX), "what 64 bits can count"));
    if estimate.total() <= limit {
        return Ok(());
    }
    Err(ModelError::Invalid(format!(
        "this run needs at least {} beyond the base weights ({} trainable parameters with \
         gradients and optimizer state: {}; activations of one micro-batch: {}; output logits \
         kept for the backward, within the model's logits budget: {}), but {} is {}; lower \
         --rank, the number of feature values or --batch-tokens",
        human_bytes(estimate.total()),
        estimate.params,
        human_bytes(estimate.param_bytes),
        human_bytes(estimate.activation_bytes),
        human_bytes(estimate.kept_logits_bytes),
        source,
        human_bytes(limit)
    )))
}

/// `bytes` in binary units with three significant digits (`1.50 GiB`).
pub fn human_bytes(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(3 << 30), "3.00 GiB");
        assert!(human_bytes(u128::MAX).ends_with("EiB"));
    }

    #[test]
    fn a_run_over_the_limit_is_refused_with_both_numbers() {
        let estimate = MemoryEstimate {
            params: 10,
            param_bytes: 160,
            activation_bytes: 1 << 19,
            kept_logits_bytes: 1 << 19,
        };
        check_fits(&estimate, Some((2 << 20, "test"))).unwrap();
        let err = check_fits(&estimate, Some((1 << 20, "the test limit")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1.00 MiB") && err.contains("the test limit") && err.contains("--rank"),
            "{err}"
        );
        let huge = MemoryEstimate {
            params: 1 << 80,
            param_bytes: 1 << 84,
            activation_bytes: 0,
            kept_logits_bytes: 0,
        };
        assert!(check_fits(&huge, None).is_err());
    }
}
