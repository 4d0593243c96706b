//! Reading a PEFT LoRA directory (`adapter_config.json` + `adapter_model.safetensors`) into the
//! model as a single-feature FLix: one type with one value that every example has (DESIGN §1).
//! Only plain LoRA on the seven decoder projections is accepted; anything else PEFT can express
//! (DoRA, per-module rank or alpha patterns, biases, a subset of layers) is an error naming the
//! field rather than a silently different model.

use std::path::Path;

use flix_kernels::{DType, Tensor};
use serde_json::Value;

use crate::adapters::{AdapterSpec, TargetModule};
use crate::error::{ModelError, Result};
use crate::llama::LlamaModel;
use crate::train::checkpoint::{check_finite, check_rank_alpha};
use crate::weights::Checkpoint;

/// What was read from `adapter_config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct PeftLora {
    pub rank: usize,
    /// The alpha that gives FLix's scale alpha / r (for rsLoRA: lora_alpha · sqrt(r)).
    pub alpha: f64,
    pub targets: Vec<TargetModule>,
}

impl PeftLora {
    /// The feature values of every sequence under a LoRA ([`crate::Sequence::features`]): the
    /// one value of the one type.
    pub fn features(&self) -> Vec<i32> {
        vec![0]
    }
}

fn config_err(path: &Path, message: String) -> ModelError {
    ModelError::Config {
        path: path.to_path_buf(),
        message,
    }
}

/// Parses `dir/adapter_config.json`.
pub fn read_peft_config(dir: &Path) -> Result<PeftLora> {
    let path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
        path: path.clone(),
        source,
    })?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| config_err(&path, format!("not valid JSON: {e}")))?;
    let field = |name: &str| json.get(name).filter(|v| !v.is_null());
    let unsupported = |name: &str, why: &str| config_err(&path, format!("field `{name}`: {why}"));
    if let Some(t) = field("peft_type") {
        if t.as_str() != Some("LORA") {
            return Err(unsupported(
                "peft_type",
                &format!("is {t}; only \"LORA\" is supported"),
            ));
        }
    }
    let flag = |name: &str| field(name).and_then(Value::as_bool).unwrap_or(false);
    for name in ["use_dora", "fan_in_fan_out", "lora_bias"] {
        if flag(name) {
            return Err(unsupported(name, "is true, which is not supported"));
        }
    }
    if let Some(b) = field("bias") {
        if b.as_str() != Some("none") {
            return Err(unsupported(
                "bias",
                &format!("is {b}; only \"none\" is supported"),
            ));
        }
    }
    for name in ["rank_pattern", "alpha_pattern"] {
        if field(name)
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            return Err(unsupported(
                name,
                "per-module ranks or alphas are not supported",
            ));
        }
    }
    for name in ["layers_to_transform", "modules_to_save"] {
        if field(name).is_some() {
            return Err(unsupported(
                name,
                "must be null; only LoRA on every layer is supported",
            ));
        }
    }
    let rank = field("r")
        .and_then(Value::as_u64)
        .filter(|&r| r > 0)
        .ok_or_else(|| {
            config_err(
                &path,
                "missing or invalid field `r` (a positive integer)".into(),
            )
        })? as usize;
    let lora_alpha = field("lora_alpha")
        .and_then(Value::as_f64)
        .ok_or_else(|| config_err(&path, "missing or invalid field `lora_alpha`".into()))?;
    let alpha = if flag("use_rslora") {
        lora_alpha * (rank as f64).sqrt()
    } else {
        lora_alpha
    };
    check_rank_alpha("fields `r` and `lora_alpha`", rank, alpha)
        .map_err(|m| config_err(&path, m))?;
    let names = field("target_modules")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            config_err(
                &path,
                "field `target_modules` must be a list of module names".into(),
            )
        })?;
    let mut targets = Vec::new();
    for n in names {
        let name = n.as_str().unwrap_or_default();
        let module = TargetModule::from_hf_name(name).ok_or_else(|| {
            unsupported(
                "target_modules",
                &format!(
                    "{n} is not one of {}",
                    TargetModule::list(TargetModule::hf_name)
                ),
            )
        })?;
        if !targets.contains(&module) {
            targets.push(module);
        }
    }
    if targets.is_empty() {
        return Err(unsupported(
            "target_modules",
            "is empty: the adapters would change nothing",
        ));
    }
    Ok(PeftLora {
        rank,
        alpha,
        targets,
    })
}

/// Attaches the LoRA of PEFT directory `dir` to `model` (replacing its adapters) and returns its
/// description; every adapted layer's `lora_A` and `lora_B` must be present with PEFT's shapes and
/// finite values, and every tensor of the file must be one of them.
pub fn load_peft_lora(model: &mut LlamaModel, dir: &Path) -> Result<PeftLora> {
    let lora = read_peft_config(dir)?;
    let file = dir.join("adapter_model.safetensors");
    let ck = Checkpoint::from_files(std::slice::from_ref(&file))?;
    let mut unused: std::collections::BTreeSet<String> =
        ck.names().into_iter().map(str::to_string).collect();
    model.attach_adapters(&AdapterSpec::lora(lora.rank, lora.alpha, &lora.targets, 0))?;
    let device = model.device.clone();
    for layer in 0..model.config.num_hidden_layers {
        for &module in &lora.targets {
            let lin = model.linear_mut(layer, module)?;
            let (out_dim, in_dim) = (lin.out_dim(), lin.in_dim());
            let prefix = format!("base_model.model.{}", module.path(layer));
            let (a_name, b_name) = (
                format!("{prefix}.lora_A.weight"),
                format!("{prefix}.lora_B.weight"),
            );
            let a = ck.load_f32(&a_name, &[lora.rank, in_dim])?;
            let b = ck.load_f32(&b_name, &[out_dim, lora.rank])?;
            check_finite(&file, &a_name, &a)?;
            check_finite(&file, &b_name, &b)?;
            unused.remove(&a_name);
            unused.remove(&b_name);
            let ad = lin.adapter.as_mut().ok_or_else(|| {
                ModelError::Invalid(format!("{prefix}: adapter was not attached"))
            })?;
            let ty = &mut ad.layers.types[0];
            ty.a = Tensor::from_f32(&device, DType::F32, &[1, lora.rank, in_dim], &a)?;
            ty.b = Tensor::from_f32(&device, DType::F32, &[1, out_dim, lora.rank], &b)?;
        }
    }
    if let Some(extra) = unused.first() {
        return Err(ModelError::Weights {
            path: file,
            message: format!(
                "{} tensor(s) are not used by adapter_config.json (e.g. {extra}): its \
                 `target_modules` or `r` do not match the file",
                unused.len()
            ),
        });
    }
    Ok(lora)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(extra: &str) -> Result<PeftLora> {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"{{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "bias": "none",
                "target_modules": ["q_proj", "down_proj"]{extra}}}"#
        );
        std::fs::write(dir.path().join("adapter_config.json"), text).unwrap();
        read_peft_config(dir.path())
    }

    #[test]
    fn plain_and_rslora_configs() {
        let c = config_with("").unwrap();
        assert_eq!((c.rank, c.alpha), (8, 16.0));
        assert_eq!(c.targets, vec![TargetModule::Q, TargetModule::Down]);
        // rsLoRA scales by alpha / sqrt(r): 16 / sqrt(8) = alpha' / 8.
        let rs = config_with(r#", "use_rslora": true"#).unwrap();
        assert!((rs.alpha / 8.0 - 16.0 / 8f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn unsupported_settings_name_the_field() {
        for (extra, field) in [
            (r#", "use_dora": true"#, "use_dora"),
            (r#", "rank_pattern": {"q_proj": 4}"#, "rank_pattern"),
            (r#", "layers_to_transform": [0]"#, "layers_to_transform"),
            (r#", "peft_type": "IA3""#, "peft_type"),
        ] {
            let err = config_with(extra).unwrap_err().to_string();
            assert!(
                err.contains(field) && err.contains("adapter_config.json"),
                "{err}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("adapter_config.json"),
            r#"{"r": 4, "lora_alpha": 8, "target_modules": ["lm_head"]}"#,
        )
        .unwrap();
        let err = read_peft_config(dir.path()).unwrap_err().to_string();
        assert!(err.contains("lm_head"), "{err}");
    }

    #[test]
    fn configs_that_would_change_nothing_or_explode_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("adapter_config.json");
        for (text, expected) in [
            (
                r#"{"r": 4, "lora_alpha": 8, "target_modules": []}"#,
                "`target_modules`",
            ),
            (
                r#"{"r": 4, "lora_alpha": 0, "target_modules": ["q_proj"]}"#,
                "`lora_alpha`",
            ),
            (
                r#"{"r": 4, "lora_alpha": -8, "target_modules": ["q_proj"]}"#,
                "`lora_alpha`",
            ),
            (
                r#"{"r": 1, "lora_alpha": 1e300, "target_modules": ["q_proj"]}"#,
                "`lora_alpha`",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = read_peft_config(dir.path()).unwrap_err().to_string();
            assert!(
                err.contains(expected) && err.contains("adapter_config.json"),
                "{text}: {err}"
            );
        }
    }
}
