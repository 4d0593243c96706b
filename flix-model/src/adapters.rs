//! Which linear layers get FLix adapters, and how adapters are created (DESIGN §1): for every
//! adapted linear, one (A, B) pair per value of every feature type, in PEFT's layout
//! (A `[r, in]`, B `[out, r]`), A Kaiming-uniform as PEFT initialises `lora_A`, B zero.

use flix_core::dropout::splitmix64;
use flix_core::registry::Registry;
use flix_kernels::flix::{AdapterGrads, LayerAdapters, TypeAdapter};
use flix_kernels::{DType, Device, Tensor};

use crate::error::{ModelError, Result};

/// A projection of a decoder layer that can carry adapters. The one list of the seven
/// projections and of their names in every format (Hugging Face checkpoints, PEFT, GGUF, the
/// command line); everything that walks the projections or names one derives it from here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TargetModule {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl TargetModule {
    /// The seven, in the fixed order of a decoder layer (`DecoderLayer::linears`).
    pub const ALL: [TargetModule; 7] = [
        TargetModule::Q,
        TargetModule::K,
        TargetModule::V,
        TargetModule::O,
        TargetModule::Gate,
        TargetModule::Up,
        TargetModule::Down,
    ];

    /// The module's name in Hugging Face checkpoints, which PEFT's `target_modules` and LoRA
    /// tensor names use too: `q_proj`, ..., `down_proj`.
    pub fn hf_name(self) -> &'static str {
        match self {
            TargetModule::Q => "q_proj",
            TargetModule::K => "k_proj",
            TargetModule::V => "v_proj",
            TargetModule::O => "o_proj",
            TargetModule::Gate => "gate_proj",
            TargetModule::Up => "up_proj",
            TargetModule::Down => "down_proj",
        }
    }

    /// The short name of the command line and spec files: `q`, ..., `down`.
    pub fn short_name(self) -> &'static str {
        let name = self.hf_name();
        name.strip_suffix("_proj").unwrap_or(name)
    }

    /// The block of a Hugging Face decoder layer that holds the module: `self_attn` or `mlp`.
    pub fn block(self) -> &'static str {
        match self {
            TargetModule::Q | TargetModule::K | TargetModule::V | TargetModule::O => "self_attn",
            TargetModule::Gate | TargetModule::Up | TargetModule::Down => "mlp",
        }
    }

    /// The module's path inside a decoder layer, e.g. `self_attn.q_proj`.
    pub fn layer_path(self) -> String {
        format!("{}.{}", self.block(), self.hf_name())
    }

    /// The module's path in a checkpoint, e.g. `model.layers.0.self_attn.q_proj` (its tensors
    /// are `.weight` and `.bias` below it; PEFT's keys put `base_model.model.` before it).
    pub fn path(self, layer: usize) -> String {
        format!("model.layers.{layer}.{}", self.layer_path())
    }

    /// The module's tensor name in a GGUF layer block (`blk.N.attn_q.weight`): llama.cpp's.
    pub fn gguf_name(self) -> &'static str {
        match self {
            TargetModule::Q => "attn_q",
            TargetModule::K => "attn_k",
            TargetModule::V => "attn_v",
            TargetModule::O => "attn_output",
            TargetModule::Gate => "ffn_gate",
            TargetModule::Up => "ffn_up",
            TargetModule::Down => "ffn_down",
        }
    }

    /// The module named `name` in Hugging Face's (and PEFT's) naming, if any.
    pub fn from_hf_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.hf_name() == name)
    }

    /// The module whose GGUF tensor name is `name` (`attn_q`, ...), if any.
    pub fn from_gguf_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.gguf_name() == name)
    }

    /// The list of names for an error message, e.g. `q, k, v, o, gate, up, down`.
    pub fn list(name: impl Fn(Self) -> &'static str) -> String {
        Self::ALL.map(name).join(", ")
    }

    /// Accepts `q` or `q_proj` (likewise for the others).
    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.short_name() == name || m.hf_name() == name)
            .ok_or_else(|| {
                ModelError::Invalid(format!(
                    "unknown target module {name:?}; use any of {}",
                    Self::list(Self::short_name)
                ))
            })
    }
}

/// One feature type as the adapters see it.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterType {
    pub rank: usize,
    pub alpha: f64,
    pub num_values: usize,
}

/// The adapters to attach: feature types in the batch plan's order, and the target modules.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterSpec {
    pub types: Vec<AdapterType>,
    pub targets: Vec<TargetModule>,
    /// Seed of A's initialisation.
    pub seed: u64,
}

impl AdapterSpec {
    /// Every type of `registry`, on `targets` (all seven when empty).
    pub fn from_registry(registry: &Registry, targets: &[TargetModule], seed: u64) -> Self {
        Self {
            types: registry
                .types()
                .iter()
                .map(|t| AdapterType {
                    rank: t.rank(),
                    alpha: t.alpha(),
                    num_values: t.num_values(),
                })
                .collect(),
            targets: if targets.is_empty() {
                TargetModule::ALL.to_vec()
            } else {
                targets.to_vec()
            },
            seed,
        }
    }

    /// Plain LoRA: one type with one value that every example has.
    pub fn lora(rank: usize, alpha: f64, targets: &[TargetModule], seed: u64) -> Self {
        Self {
            types: vec![AdapterType {
                rank,
                alpha,
                num_values: 1,
            }],
            targets: targets.to_vec(),
            seed,
        }
    }
}

/// The adapters of one linear layer with their gradient accumulators.
pub struct Adapter {
    pub layers: LayerAdapters,
    pub grads: AdapterGrads,
}

impl Adapter {
    /// Fresh adapters for a layer `[out, in]`; `salt` makes every layer's init distinct.
    pub fn init(
        spec: &AdapterSpec,
        out_dim: usize,
        in_dim: usize,
        salt: u64,
        device: &Device,
    ) -> Result<Self> {
        let mut types = Vec::with_capacity(spec.types.len());
        for (k, t) in spec.types.iter().enumerate() {
            if t.rank == 0 || t.num_values == 0 {
                return Err(ModelError::Invalid(format!(
                    "adapter type {k}: rank {} and {} values; both must be >= 1",
                    t.rank, t.num_values
                )));
            }
            // PEFT: kaiming_uniform_(A, a=sqrt(5)) gives U(-1/sqrt(in), 1/sqrt(in)).
            let bound = 1.0 / (in_dim as f64).sqrt();
            // Checked: absurd sizes are refused by the trainer's memory estimate, but a library
            // caller may come here directly.
            let n = t
                .num_values
                .checked_mul(t.rank)
                .and_then(|n| n.checked_mul(in_dim.max(out_dim)))
                .map(|_| t.num_values * t.rank * in_dim)
                .ok_or_else(|| {
                    ModelError::Invalid(format!(
                        "adapter type {k}: {} values × rank {} × {} features is too large to \
                         count",
                        t.num_values,
                        t.rank,
                        in_dim.max(out_dim)
                    ))
                })?;
            let stream = splitmix64(spec.seed ^ splitmix64(salt ^ splitmix64(k as u64)));
            let a: Vec<f32> = (0..n as u64)
                .map(|i| {
                    let u = (splitmix64(stream ^ splitmix64(i)) >> 11) as f64 / (1u64 << 53) as f64;
                    ((2.0 * u - 1.0) * bound) as f32
                })
                .collect();
            types.push(TypeAdapter {
                scale: (t.alpha / t.rank as f64) as f32,
                a: Tensor::from_f32(device, DType::F32, &[t.num_values, t.rank, in_dim], &a)?,
                b: Tensor::zeros(device, DType::F32, &[t.num_values, out_dim, t.rank])?,
            });
        }
        let layers = LayerAdapters::new(types);
        let grads = AdapterGrads::zeros(&layers)?;
        Ok(Self { layers, grads })
    }

    pub fn zero_grad(&mut self) -> Result<()> {
        self.grads = AdapterGrads::zeros(&self.layers)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_peft_like_and_deterministic() {
        let spec = AdapterSpec::lora(4, 8.0, &[TargetModule::Q], 7);
        let a1 = Adapter::init(&spec, 6, 16, 3, &Device::Cpu).unwrap();
        let a2 = Adapter::init(&spec, 6, 16, 3, &Device::Cpu).unwrap();
        let other = Adapter::init(&spec, 6, 16, 4, &Device::Cpu).unwrap();
        let t = &a1.layers.types[0];
        assert_eq!(t.scale, 2.0);
        assert_eq!(t.a.shape(), &[1, 4, 16]);
        assert_eq!(t.b.shape(), &[1, 6, 4]);
        let a = t.a.to_f32_vec().unwrap();
        assert!(a.iter().all(|v| v.abs() <= 0.25) && a.iter().any(|v| v.abs() > 0.15));
        assert!(t.b.to_f32_vec().unwrap().iter().all(|&v| v == 0.0));
        assert_eq!(a, a2.layers.types[0].a.to_f32_vec().unwrap());
        assert_ne!(a, other.layers.types[0].a.to_f32_vec().unwrap());
    }

    #[test]
    fn target_names_parse() {
        assert_eq!(TargetModule::parse("q").unwrap(), TargetModule::Q);
        assert_eq!(
            TargetModule::parse("down_proj").unwrap(),
            TargetModule::Down
        );
        let err = TargetModule::parse("lm_head").unwrap_err().to_string();
        assert!(
            err.contains("lm_head") && err.contains("q, k, v, o, gate, up, down"),
            "{err}"
        );
    }

    #[test]
    fn names_in_every_format_follow_the_module() {
        // Typed out from transformers' LlamaDecoderLayer and llama.cpp's tensor names.
        let expected = [
            ("q", "self_attn.q_proj", "attn_q"),
            ("k", "self_attn.k_proj", "attn_k"),
            ("v", "self_attn.v_proj", "attn_v"),
            ("o", "self_attn.o_proj", "attn_output"),
            ("gate", "mlp.gate_proj", "ffn_gate"),
            ("up", "mlp.up_proj", "ffn_up"),
            ("down", "mlp.down_proj", "ffn_down"),
        ];
        for (m, (short, layer_path, gguf)) in TargetModule::ALL.into_iter().zip(expected) {
            assert_eq!(m.short_name(), short);
            assert_eq!(m.layer_path(), layer_path);
            assert_eq!(m.gguf_name(), gguf);
            assert_eq!(m.path(3), format!("model.layers.3.{layer_path}"));
            assert_eq!(TargetModule::from_hf_name(m.hf_name()), Some(m));
            assert_eq!(TargetModule::from_gguf_name(gguf), Some(m));
            assert_eq!(TargetModule::parse(short).unwrap(), m);
        }
        assert_eq!(TargetModule::from_hf_name("q"), None);
    }
}
