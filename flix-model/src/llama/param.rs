//! A named parameter with an optional gradient buffer (present iff the parameter is trainable).

use flix_kernels::{DType, Device, Tensor};

use crate::error::Result;
use crate::weights::TensorSource;

/// What a parameter is, for whoever creates it: loading (norm weights may need their
/// convention shifted) and random initialisation (each kind is drawn as transformers draws it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A projection or embedding matrix.
    Weight,
    /// A projection's bias.
    Bias,
    /// An RMSNorm weight.
    Norm,
}

/// Creates a parameter from its name, shape and kind: loading reads it from a checkpoint, random
/// initialisation draws it. The model and its layers ask for their parameters through this.
pub(crate) type MakeParam<'a> = dyn FnMut(String, &[usize], ParamKind) -> Result<Param> + 'a;

pub struct Param {
    /// The checkpoint name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// The value the model computes with: the checkpoint's, except for Gemma's norm weights,
    /// kept as 1 + w (see [`crate::llama`]).
    pub value: Tensor,
    /// Gradient accumulator; `Some` exactly when the parameter is trainable.
    pub grad: Option<Tensor>,
}

impl std::fmt::Debug for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Param({} {:?}, trainable: {})",
            self.name,
            self.value.shape(),
            self.grad.is_some()
        )
    }
}

impl Param {
    /// Loads `name` with `shape` from the checkpoint onto `device`, stored as `dtype` (the
    /// model's working dtype: bf16 on CUDA by default, f32 on the CPU).
    pub fn load(
        ck: &dyn TensorSource,
        name: &str,
        shape: &[usize],
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        Self::load_shifted(ck, name, shape, 0.0, device, dtype)
    }

    /// [`Self::load`], plus `offset` added to every value: what the model keeps of a norm weight
    /// whose checkpoint convention differs from the RMSNorm op's (Gemma's 1 + w, see
    /// [`crate::config::LlamaConfig::norm_weight_offset`]).
    pub fn load_shifted(
        ck: &dyn TensorSource,
        name: &str,
        shape: &[usize],
        offset: f32,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let mut data = ck.load_f32(name, shape)?;
        if offset != 0.0 {
            data.iter_mut().for_each(|v| *v += offset);
        }
        Ok(Self {
            name: name.to_string(),
            value: Tensor::from_f32(device, dtype, shape, &data)?,
            grad: None,
        })
    }

    pub fn is_trainable(&self) -> bool {
        self.grad.is_some()
    }

    /// Allocates a zero gradient (trainable) or drops it (frozen).
    pub fn set_trainable(&mut self, trainable: bool) -> Result<()> {
        self.grad = if trainable {
            Some(zeros_like(&self.value)?)
        } else {
            None
        };
        Ok(())
    }

    pub fn zero_grad(&mut self) -> Result<()> {
        if self.grad.is_some() {
            self.grad = Some(zeros_like(&self.value)?);
        }
        Ok(())
    }
}

pub fn zeros_like(t: &Tensor) -> Result<Tensor> {
    Ok(Tensor::zeros(t.device(), t.dtype(), t.shape())?)
}

/// A copy of `t` on its device (the layers keep copies of activations that later ops
/// overwrite).
pub fn duplicate(t: &Tensor) -> Result<Tensor> {
    Ok(flix_kernels::ops::elementwise::duplicate(t)?)
}
