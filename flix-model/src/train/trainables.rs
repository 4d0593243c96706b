//! The trainable tensors of a model in one fixed order, with stable names (for checkpoints and
//! the optimizer): the adapters of every adapted linear (adapter training), or every base weight
//! (full-parameter training). The optimizer (`crate::optim::AdamW`) steps them in this order.

use flix_kernels::Tensor;

use super::tensor_file::NamedTensor;
use crate::adapters::{Adapter, TargetModule};
use crate::error::{ModelError, Result};
use crate::llama::{self, LlamaModel, Param};

/// One trainable tensor, its gradient and its name.
pub struct Trainable<'a> {
    pub name: String,
    pub value: &'a mut Tensor,
    pub grad: &'a mut Tensor,
    /// The value's working copy in another dtype, if the model keeps one (the bf16 copy of an
    /// adapter on a CUDA bf16 model): the optimizer writes it in the same pass.
    pub working: Option<&'a mut Tensor>,
}

/// The trainable tensors of `model`: with `full`, the base weights that have gradients; else the
/// adapters, type k named `type_names[k]` (`<module>.flix.<type>.lora_A` `[V, r, in]` and
/// `.lora_B` `[V, out, r]`).
pub fn trainables<'a>(
    model: &'a mut LlamaModel,
    full: bool,
    type_names: &[String],
) -> Result<Vec<Trainable<'a>>> {
    let mut out = Vec::new();
    if full {
        for p in model.params_mut() {
            if let Param {
                name,
                value,
                grad: Some(grad),
            } = p
            {
                out.push(Trainable {
                    name: name.clone(),
                    value,
                    grad,
                    working: None,
                });
            }
        }
        return Ok(out);
    }
    for (i, layer) in model.layers.iter_mut().enumerate() {
        for (module, lin) in TargetModule::ALL.into_iter().zip(layer.linears_mut()) {
            let Some(Adapter { layers, grads }) = lin.adapter.as_mut() else {
                continue;
            };
            let path = module.path(i);
            let pairs = layers
                .optimizer_tensors_mut()
                .into_iter()
                .zip(grads.da.iter_mut().zip(&mut grads.db));
            for (k, (t, (da, db))) in pairs.enumerate() {
                let type_name = type_names.get(k).ok_or_else(|| {
                    ModelError::Invalid(format!(
                        "{path} has adapter type {k}, but only {} type names were given",
                        type_names.len()
                    ))
                })?;
                out.push(Trainable {
                    name: format!("{path}.flix.{type_name}.lora_A"),
                    value: t.a,
                    grad: da,
                    working: t.a_working,
                });
                out.push(Trainable {
                    name: format!("{path}.flix.{type_name}.lora_B"),
                    value: t.b,
                    grad: db,
                    working: t.b_working,
                });
            }
        }
    }
    Ok(out)
}

impl Trainable<'_> {
    /// The tensor and its gradient as the optimizer takes them.
    pub fn as_param(&mut self) -> llama::Trainable<'_> {
        llama::Trainable {
            value: &mut *self.value,
            grad: &*self.grad,
            working: self.working.as_deref_mut(),
        }
    }
}

/// The names, in order (what the optimizer's saved state is keyed by).
pub fn names(trainables: &[Trainable]) -> Vec<String> {
    trainables.iter().map(|t| t.name.clone()).collect()
}

/// Copies of the values (for checkpoints).
pub fn snapshot(trainables: &[Trainable]) -> Result<Vec<NamedTensor>> {
    trainables
        .iter()
        .map(|t| {
            Ok(NamedTensor {
                name: t.name.clone(),
                shape: t.value.shape().to_vec(),
                data: t.value.to_f32_vec()?,
            })
        })
        .collect()
}
