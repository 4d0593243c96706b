//! Exporting one feature combination of trained FLix adapters as a standard PEFT LoRA directory
//! (DESIGN §1): summing features equals concatenating ranks,
//!
//! ```text
//! Σ_k s_k B_k A_k x = [s_1 B_1 | s_2 B_2 | …] [A_1; A_2; …] x
//! ```
//!
//! so each adapted module gets `lora_A` = the chosen values' A stacked `[R, in]` and `lora_B` =
//! their s_k-scaled B side by side `[out, R]`, with R = Σ of the present types' ranks and
//! `lora_alpha = r = R` (PEFT's scale 1, the s_k being folded into B).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use crate::adapters::TargetModule;
use crate::error::{ModelError, Result};
use crate::llama::Linear;
use flix_core::write_atomic;

use crate::train::tensor_file::{save_tensors, NamedTensor};
use crate::train::Trained;

/// Which value each type takes: `type name → value`; types not named are left out (absent).
pub type Combination = BTreeMap<String, String>;

/// Parses `lang=deu,task=date` (spaces around names are ignored). A pair without `=`, an empty
/// name or value, or a type given twice is an error.
pub fn parse_combination(text: &str) -> Result<Combination> {
    let mut combination = Combination::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let pair = part.split_once('=').map(|(k, v)| (k.trim(), v.trim()));
        let Some((name, value)) = pair.filter(|(k, v)| !k.is_empty() && !v.is_empty()) else {
            return Err(ModelError::Invalid(format!(
                "features {text:?}: expected type=value pairs, found {part:?}"
            )));
        };
        if let Some(first) = combination.insert(name.to_string(), value.to_string()) {
            return Err(ModelError::Invalid(format!(
                "features {text:?}: type {name:?} is given twice ({first:?} and {value:?})"
            )));
        }
    }
    Ok(combination)
}

/// The (type index, value id) pairs `combination` selects, in plan order. The always-on `shared`
/// type of `lora` and `flix+shared` is always included. An unknown type or value is an error
/// that names what the adapters know; so is a combination that selects nothing.
pub fn selected(trained: &Trained, combination: &Combination) -> Result<Vec<(usize, usize)>> {
    let layout = &trained.layout;
    for name in combination.keys() {
        if layout.registry.type_index(name).is_none() {
            return Err(ModelError::Invalid(format!(
                "unknown feature type {name:?}; the adapters know {:?}",
                layout.registry.type_names()
            )));
        }
    }
    let mut out = Vec::new();
    let types = layout.adapter_types();
    for (k, (name, _)) in types.iter().enumerate() {
        if layout.shared.is_some() && k == types.len() - 1 {
            out.push((k, 0));
            continue;
        }
        if let Some(value) = combination.get(name) {
            let ft = layout.registry.feature_type(name).ok_or_else(|| {
                ModelError::Invalid(format!("no feature type {name:?} in the registry"))
            })?;
            let id = ft.id_of(value).ok_or_else(|| {
                ModelError::Invalid(format!(
                    "feature {name}={value} has no adapter (known: {:?})",
                    ft.values()
                ))
            })?;
            out.push((k, id as usize));
        }
    }
    if out.is_empty() {
        return Err(ModelError::Invalid(
            "the combination selects no adapter at all".into(),
        ));
    }
    Ok(out)
}

/// One selected feature value's adapter on one linear layer.
pub struct PickedAdapter {
    /// `[r, in]`.
    pub a: Vec<f32>,
    /// `[out, r]`, not scaled.
    pub b: Vec<f32>,
    pub rank: usize,
    /// s = alpha / r, as the forward pass applies it.
    pub scale: f32,
}

/// The adapters of `lin` that `picks` (from [`selected`]) select, in plan order; none when the
/// layer has no adapters.
pub fn picked_adapters(lin: &Linear, picks: &[(usize, usize)]) -> Result<Vec<PickedAdapter>> {
    let Some(ad) = &lin.adapter else {
        return Ok(Vec::new());
    };
    let (out_dim, in_dim) = (lin.out_dim(), lin.in_dim());
    let mut out = Vec::with_capacity(picks.len());
    for &(k, v) in picks {
        let t = ad.layers.types.get(k).ok_or_else(|| {
            ModelError::Invalid(format!(
                "{}: adapter type {k} is not attached",
                lin.weight.name
            ))
        })?;
        let r = t.a.shape()[1];
        let a = t.a.to_f32_vec()?;
        let b = t.b.to_f32_vec()?;
        out.push(PickedAdapter {
            a: a[v * r * in_dim..(v + 1) * r * in_dim].to_vec(),
            b: b[v * out_dim * r..(v + 1) * out_dim * r].to_vec(),
            rank: r,
            scale: t.scale,
        });
    }
    Ok(out)
}

/// The concatenated `lora_A` `[R, in]` and `lora_B` `[out, R]` of every adapted module, named as
/// PEFT names them (`base_model.model.<module path>.lora_{A,B}.weight`); and R.
pub fn concatenated_lora(
    trained: &Trained,
    combination: &Combination,
) -> Result<(Vec<NamedTensor>, usize)> {
    let picks = selected(trained, combination)?;
    let mut tensors = Vec::new();
    let mut total_rank = 0;
    for (i, layer) in trained.model.layers.iter().enumerate() {
        for (module, lin) in TargetModule::ALL.into_iter().zip(layer.linears()) {
            let picked = picked_adapters(lin, &picks)?;
            if picked.is_empty() {
                continue;
            }
            let (out_dim, in_dim) = (lin.out_dim(), lin.in_dim());
            let rank: usize = picked.iter().map(|p| p.rank).sum();
            let mut a_rows: Vec<f32> = Vec::with_capacity(rank * in_dim);
            let mut b_cat = vec![0.0f32; out_dim * rank];
            let mut col = 0;
            for p in &picked {
                a_rows.extend_from_slice(&p.a);
                let r = p.rank;
                for o in 0..out_dim {
                    for j in 0..r {
                        b_cat[o * rank + col + j] = p.b[o * r + j] * p.scale;
                    }
                }
                col += r;
            }
            let path = format!("base_model.model.{}", module.path(i));
            check_output_finite(&format!("{path}.lora_B.weight"), &b_cat)?;
            tensors.push(NamedTensor {
                name: format!("{path}.lora_A.weight"),
                shape: vec![rank, in_dim],
                data: a_rows,
            });
            tensors.push(NamedTensor {
                name: format!("{path}.lora_B.weight"),
                shape: vec![out_dim, rank],
                data: b_cat,
            });
            total_rank = rank;
        }
    }
    Ok((tensors, total_rank))
}

/// Refuses to write tensor `name` when a value is NaN or infinite (finite adapters, which loading
/// guarantees, can still overflow once scaled).
pub fn check_output_finite<T: Copy + Into<f64>>(name: &str, values: &[T]) -> Result<()> {
    match values
        .iter()
        .map(|&v| v.into())
        .position(|v: f64| !v.is_finite())
    {
        None => Ok(()),
        Some(i) => Err(ModelError::Invalid(format!(
            "tensor {name}: value {} at flat index {i} is not finite; nothing was written",
            values[i].into()
        ))),
    }
}

/// Writes `dir/adapter_model.safetensors` and `dir/adapter_config.json` for `combination`.
pub fn export_peft(trained: &Trained, combination: &Combination, dir: &Path) -> Result<()> {
    let (tensors, rank) = concatenated_lora(trained, combination)?;
    std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    save_tensors(&dir.join("adapter_model.safetensors"), &tensors)?;
    let targets: Vec<&str> = trained.layout.targets.iter().map(|t| t.hf_name()).collect();
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": trained.config.base_model,
        "r": rank,
        "lora_alpha": rank,
        "lora_dropout": 0.0,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": null
    });
    let text = serde_json::to_string_pretty(&config)
        .map_err(|e| ModelError::Invalid(format!("adapter_config.json: {e}")))?;
    Ok(write_atomic(
        &dir.join("adapter_config.json"),
        text.as_bytes(),
    )?)
}
