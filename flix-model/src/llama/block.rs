//! One decoder layer: pre-norm attention and pre-norm gated MLP, each added to the residual
//! stream. `forward` returns the activations `backward` needs (llm.c style, no autograd).
//!
//! Two optional pieces (both `None` for Llama, Mistral and Qwen2):
//!
//! * [`QkNorm`] (Qwen3 and Gemma 3): an RMSNorm of every head's query and key, after the
//!   projections and before RoPE (run as the one RMSNorm op over the `[T · heads, head_dim]`
//!   view);
//! * [`SandwichNorms`] (Gemma 3): an RMSNorm of the attention output and of the MLP output
//!   before each joins the residual stream:
//!
//! ```text
//! h = x + norm_after_attention(attention(norm_input(x)))
//! y = h + norm_after_mlp(mlp(norm_mlp(h)))
//! ```
//!
//! Mind the names: Llama's `post_attention_layernorm` is the norm in front of the MLP (here
//! `mlp_norm`), while Gemma's `post_attention_layernorm` normalises the attention output
//! (`sandwich.after_attention`) and its `pre_feedforward_layernorm` is the `mlp_norm`.

use flix_kernels::flix::DevicePlan;
use flix_kernels::ops::attention::{
    attention_backward, attention_decode_layer, attention_forward, AttentionShape, DecodeStep,
    KvCacheView,
};
use flix_kernels::ops::elementwise::{add_assign, copy_rows};
use flix_kernels::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use flix_kernels::ops::rope::{inv_freq, rope_backward, rope_forward};
use flix_kernels::ops::swiglu::{gated_backward, gated_forward, GateActivation};
use flix_kernels::{DType, Device, DeviceBatch, Tensor};

use super::linear::{Linear, LinearSaved};
use super::param::{MakeParam, Param, ParamKind};
use crate::adapters::TargetModule;
use crate::config::{Family, LlamaConfig};
use crate::error::{ModelError, Result};

/// Qwen3's and Gemma 3's per-head RMSNorms of the queries and keys (weights `[head_dim]`).
pub struct QkNorm {
    /// `self_attn.q_norm`
    pub q: Param,
    /// `self_attn.k_norm`
    pub k: Param,
}

/// Gemma 3's norms of the two branch outputs (weights `[hidden]`).
pub struct SandwichNorms {
    /// `post_attention_layernorm`: of the attention output.
    pub after_attention: Param,
    /// `post_feedforward_layernorm`: of the MLP output.
    pub after_mlp: Param,
}

pub struct DecoderLayer {
    /// `input_layernorm`: in front of the attention.
    pub input_norm: Param,
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    /// In front of the MLP: `post_attention_layernorm` (Llama, Mistral, Qwen2) or
    /// `pre_feedforward_layernorm` (Gemma 3).
    pub mlp_norm: Param,
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
    pub qk_norm: Option<QkNorm>,
    pub sandwich: Option<SandwichNorms>,
    eps: f32,
    shape: AttentionShape,
    activation: GateActivation,
    /// This layer's rope frequencies (Gemma 3's local and global layers differ).
    inv_freq: Vec<f32>,
}

/// The input of an RMSNorm and its reciprocal RMS per row (f32, on the activations' device):
/// what its backward reads.
struct NormSaved {
    x: Tensor,
    rstd: Tensor,
}

/// Everything the backward pass of one layer reads.
pub struct LayerSaved {
    x: Tensor,
    xn1: Tensor,
    rstd1: Tensor,
    /// q and k after the projections, viewed `[T · heads, head_dim]`, when they are normalised.
    q_norm: Option<NormSaved>,
    k_norm: Option<NormSaved>,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn: Tensor,
    lse: Tensor,
    /// The attention output before its sandwich norm.
    after_attention: Option<NormSaved>,
    x_mid: Tensor,
    xn2: Tensor,
    rstd2: Tensor,
    gate: Tensor,
    up: Tensor,
    h: Tensor,
    /// The MLP output before its sandwich norm.
    after_mlp: Option<NormSaved>,
    lin: [LinearSaved; 7],
}

impl LayerSaved {
    /// The layer's activations by name, for numerical diagnostics: the input, the normed
    /// input, the q/k projections (before their norms, when normed), v, q and k after RoPE,
    /// the attention output, the projected attention output (before its sandwich norm), the
    /// residual after attention, the normed MLP input, the gated product and the MLP output
    /// (before its sandwich norm).
    pub(crate) fn named(&self) -> Vec<(&'static str, &Tensor)> {
        let mut out = vec![("x", &self.x), ("xn1", &self.xn1)];
        out.extend(self.q_norm.as_ref().map(|n| ("qp", &n.x)));
        out.extend(self.k_norm.as_ref().map(|n| ("kp", &n.x)));
        out.extend([
            ("v", &self.v),
            ("q", &self.q),
            ("k", &self.k),
            ("attn", &self.attn),
        ]);
        out.extend(self.after_attention.as_ref().map(|n| ("o", &n.x)));
        out.extend([("x_mid", &self.x_mid), ("xn2", &self.xn2), ("h", &self.h)]);
        out.extend(self.after_mlp.as_ref().map(|n| ("down", &n.x)));
        out
    }
}

/// One layer's key/value cache for generation, on the model's device: per cache slot (a
/// sequence of the decoder, or None when the slot is free), its keys and values so far.
#[derive(Default)]
pub struct LayerCache {
    pub slots: Vec<Option<SequenceCache>>,
}

/// A sequence's keys and values (after RoPE): the first `len` rows of `[capacity, kv_dim]`
/// buffers that grow by doubling, so appending a token copies one row, not the whole cache.
pub struct SequenceCache {
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl SequenceCache {
    /// Makes room for `n` more rows in `slot` (created empty, `[_, kv_dim]` in `dtype` on
    /// `device`, when it is None), doubling the capacity when it must grow, so the rows of a
    /// decoding step are appended without moving the cache: the step's attention tables,
    /// built before its first layer, then still point at it.
    fn reserve(
        slot: &mut Option<Self>,
        n: usize,
        kv_dim: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<()> {
        if matches!(slot, Some(c) if c.len + n <= c.k.shape()[0]) {
            return Ok(());
        }
        let old = slot.take();
        let (len, capacity) = old.as_ref().map_or((0, 0), |c| (c.len, c.k.shape()[0]));
        let capacity = (2 * capacity).max(len + n).max(16);
        let fresh = || Tensor::zeros(device, dtype, &[capacity, kv_dim]);
        let mut grown = Self {
            k: fresh()?,
            v: fresh()?,
            len,
        };
        if let Some(old) = old {
            copy_rows(&old.k, 0, &mut grown.k, 0, len)?;
            copy_rows(&old.v, 0, &mut grown.v, 0, len)?;
        }
        *slot = Some(grown);
        Ok(())
    }

    /// Appends rows `from..from + n` of the step's `k` and `v` (`[T, kv_dim]`).
    fn append(
        slot: &mut Option<Self>,
        k: &Tensor,
        v: &Tensor,
        from: usize,
        n: usize,
    ) -> Result<()> {
        Self::reserve(slot, n, k.shape()[1], k.device(), k.dtype())?;
        let cache = slot
            .as_mut()
            .ok_or_else(|| ModelError::Batch("a reserved cache slot is empty".into()))?;
        copy_rows(k, from, &mut cache.k, cache.len, n)?;
        copy_rows(v, from, &mut cache.v, cache.len, n)?;
        cache.len += n;
        Ok(())
    }
}

impl LayerCache {
    /// Makes room in the caches of `seqs` (slots) for `new_rows[i]` more rows of sequence i.
    pub fn reserve(
        &mut self,
        seqs: &[usize],
        new_rows: &[usize],
        shape: AttentionShape,
        device: &Device,
        dtype: DType,
    ) -> Result<()> {
        for (&slot, &n) in seqs.iter().zip(new_rows) {
            let entry = self
                .slots
                .get_mut(slot)
                .ok_or_else(|| ModelError::Batch(format!("cache slot {slot} does not exist")))?;
            SequenceCache::reserve(entry, n, shape.kv_heads * shape.head_dim, device, dtype)?;
        }
        Ok(())
    }

    /// The caches of `seqs` as they are.
    pub fn views(&self, seqs: &[usize]) -> Result<Vec<KvCacheView<'_>>> {
        self.views_with(seqs, std::iter::repeat(0))
    }

    /// The caches of `seqs` as they will be once a step appends `new_rows[i]` rows to sequence
    /// i (their rows reserved by [`LayerCache::reserve`]), for [`DecodeStep::new`].
    pub fn views_after(&self, seqs: &[usize], new_rows: &[usize]) -> Result<Vec<KvCacheView<'_>>> {
        self.views_with(seqs, new_rows.iter().copied())
    }

    fn views_with(
        &self,
        seqs: &[usize],
        new_rows: impl Iterator<Item = usize>,
    ) -> Result<Vec<KvCacheView<'_>>> {
        seqs.iter()
            .zip(new_rows)
            .map(|(&slot, n)| match self.slots.get(slot) {
                Some(Some(c)) => Ok(KvCacheView {
                    k: &c.k,
                    v: &c.v,
                    len: c.len + n,
                }),
                _ => Err(ModelError::Batch(format!("cache slot {slot} is empty"))),
            })
            .collect()
    }
}

/// What a layer needs to know about the batch besides its activations.
pub struct LayerInputs<'a> {
    /// The batch as bound to the device, with its FLix plan when the model has adapters.
    pub batch: &'a DeviceBatch,
}

impl LayerInputs<'_> {
    fn plan(&self) -> Option<&DevicePlan> {
        self.batch.plan()
    }
}

/// The projections and (optionally) normalised, rotated q and k of one attention call.
struct Qkv {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_norm: Option<NormSaved>,
    k_norm: Option<NormSaved>,
    lin: [LinearSaved; 3],
}

/// An RMSNorm when `norm` is given (returning what its backward needs), else `x` unchanged.
fn maybe_norm(norm: Option<&Param>, x: Tensor, eps: f32) -> Result<(Tensor, Option<NormSaved>)> {
    match norm {
        Some(p) => {
            let (y, rstd) = rmsnorm_forward(&x, &p.value, eps)?;
            Ok((y, Some(NormSaved { x, rstd })))
        }
        None => Ok((x, None)),
    }
}

/// The backward of [`maybe_norm`]: `Some(dx)` when there was a norm (accumulating its weight's
/// gradient), `None` when the gradient passes through unchanged.
fn maybe_norm_backward(
    norm: Option<&mut Param>,
    saved: Option<&NormSaved>,
    dy: &Tensor,
) -> Result<Option<Tensor>> {
    match (norm, saved) {
        (Some(Param { value, grad, .. }), Some(s)) => Ok(Some(rmsnorm_backward(
            dy,
            &s.x,
            value,
            &s.rstd,
            grad.as_mut(),
        )?)),
        (None, None) => Ok(None),
        _ => Err(changed_between_passes()),
    }
}

fn changed_between_passes() -> ModelError {
    ModelError::Invalid(
        "a layer's norms were added or removed between the forward and the backward pass".into(),
    )
}

/// An RMSNorm over each `head_dim` slice of `x` (`[T, heads · head_dim]`).
fn head_norm(norm: &Param, x: Tensor, head_dim: usize, eps: f32) -> Result<(Tensor, NormSaved)> {
    let (t, width) = (x.shape()[0], x.shape()[1]);
    let x = x.reshape(&[t * width / head_dim, head_dim])?;
    let (y, rstd) = rmsnorm_forward(&x, &norm.value, eps)?;
    Ok((y.reshape(&[t, width])?, NormSaved { x, rstd }))
}

/// The backward of [`head_norm`]: dY `[T, heads · head_dim]` → dX of the same shape.
fn head_norm_backward(
    norm: &mut Param,
    saved: &NormSaved,
    dy: Tensor,
    head_dim: usize,
) -> Result<Tensor> {
    let (t, width) = (dy.shape()[0], dy.shape()[1]);
    let dy = dy.reshape(&[t * width / head_dim, head_dim])?;
    let Param { value, grad, .. } = norm;
    let dx = rmsnorm_backward(&dy, &saved.x, value, &saved.rstd, grad.as_mut())?;
    Ok(dx.reshape(&[t, width])?)
}

/// The MLP branch's output and what its backward reads.
struct MlpOut {
    /// The layer output: x_mid + the branch.
    out: Tensor,
    xn2: Tensor,
    rstd2: Tensor,
    gate: Tensor,
    up: Tensor,
    h: Tensor,
    after_mlp: Option<NormSaved>,
    lin: [LinearSaved; 3],
}

impl DecoderLayer {
    /// Layer `i` of a model with config `c`, each parameter from `make` (name, shape, kind):
    /// the one place that knows a layer's tensor names and shapes, for loading and for random
    /// initialisation alike.
    pub(crate) fn build(c: &LlamaConfig, i: usize, make: &mut MakeParam<'_>) -> Result<Self> {
        let p = format!("model.layers.{i}");
        let (d, f) = (c.hidden_size, c.intermediate_size);
        // The order of `make` calls is part of the contract: random initialisation draws each
        // parameter from its own stream, numbered in call order (bias before weight).
        let mut lin =
            |module: TargetModule, out: usize, inp: usize, bias: bool| -> Result<Linear> {
                let name = module.layer_path();
                let bias = if bias {
                    Some(make(format!("{p}.{name}.bias"), &[out], ParamKind::Bias)?)
                } else {
                    None
                };
                Ok(Linear {
                    weight: make(format!("{p}.{name}.weight"), &[out, inp], ParamKind::Weight)?,
                    bias,
                    adapter: None,
                })
            };
        let q_proj = lin(TargetModule::Q, c.q_dim(), d, c.qkv_bias)?;
        let k_proj = lin(TargetModule::K, c.kv_dim(), d, c.qkv_bias)?;
        let v_proj = lin(TargetModule::V, c.kv_dim(), d, c.qkv_bias)?;
        let o_proj = lin(TargetModule::O, d, c.q_dim(), c.o_bias)?;
        let gate_proj = lin(TargetModule::Gate, f, d, false)?;
        let up_proj = lin(TargetModule::Up, f, d, false)?;
        let down_proj = lin(TargetModule::Down, d, f, false)?;
        let mut norm =
            |name: &str, dim: usize| make(format!("{p}.{name}.weight"), &[dim], ParamKind::Norm);
        let input_norm = norm("input_layernorm", d)?;
        // Gemma 3 normalizes before and after each sub-layer; the others before only, and name
        // the norm before the MLP after the attention it follows.
        let gemma = c.family == Family::Gemma3;
        let mlp_norm = norm(
            if gemma {
                "pre_feedforward_layernorm"
            } else {
                "post_attention_layernorm"
            },
            d,
        )?;
        let qk_norm = if c.has_qk_norm() {
            Some(QkNorm {
                q: norm("self_attn.q_norm", c.head_dim)?,
                k: norm("self_attn.k_norm", c.head_dim)?,
            })
        } else {
            None
        };
        let sandwich = if gemma {
            Some(SandwichNorms {
                after_attention: norm("post_attention_layernorm", d)?,
                after_mlp: norm("post_feedforward_layernorm", d)?,
            })
        } else {
            None
        };
        let rope = c.layer_rope(i);
        Ok(Self {
            input_norm,
            q_proj,
            k_proj,
            v_proj,
            o_proj,
            mlp_norm,
            gate_proj,
            up_proj,
            down_proj,
            qk_norm,
            sandwich,
            eps: c.rms_norm_eps,
            shape: AttentionShape {
                scale: c.attention_scale(),
                window: c.layer_window(i),
                ..AttentionShape::new(c.num_attention_heads, c.num_key_value_heads, c.head_dim)
            },
            activation: c.gate_activation(),
            inv_freq: inv_freq(c.head_dim, rope.theta, rope.scaling),
        })
    }

    /// The attention layout of this layer (heads, scale, sliding window).
    pub fn attention_shape(&self) -> AttentionShape {
        self.shape
    }

    /// The seven projections, read-only, in [`TargetModule::ALL`] order.
    pub fn linears(&self) -> [&Linear; 7] {
        [
            &self.q_proj,
            &self.k_proj,
            &self.v_proj,
            &self.o_proj,
            &self.gate_proj,
            &self.up_proj,
            &self.down_proj,
        ]
    }

    /// The projection `module`.
    pub fn linear_mut(&mut self, module: TargetModule) -> &mut Linear {
        match module {
            TargetModule::Q => &mut self.q_proj,
            TargetModule::K => &mut self.k_proj,
            TargetModule::V => &mut self.v_proj,
            TargetModule::O => &mut self.o_proj,
            TargetModule::Gate => &mut self.gate_proj,
            TargetModule::Up => &mut self.up_proj,
            TargetModule::Down => &mut self.down_proj,
        }
    }

    /// The seven projections, in [`TargetModule::ALL`] order.
    pub fn linears_mut(&mut self) -> [&mut Linear; 7] {
        [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.o_proj,
            &mut self.gate_proj,
            &mut self.up_proj,
            &mut self.down_proj,
        ]
    }

    /// Every RMSNorm weight of the layer: input, (q, k), MLP, (after attention, after MLP).
    pub fn norms(&self) -> Vec<&Param> {
        let mut out = vec![&self.input_norm];
        if let Some(qk) = &self.qk_norm {
            out.extend([&qk.q, &qk.k]);
        }
        out.push(&self.mlp_norm);
        if let Some(s) = &self.sandwich {
            out.extend([&s.after_attention, &s.after_mlp]);
        }
        out
    }

    /// The seven projections in [`TargetModule::ALL`] order, after pushing every norm into
    /// `norms` (a split borrow for walking every parameter at once).
    pub fn linears_mut_with_norms<'a>(
        &'a mut self,
        norms: &mut Vec<&'a mut Param>,
    ) -> [&'a mut Linear; 7] {
        norms.push(&mut self.input_norm);
        if let Some(qk) = &mut self.qk_norm {
            norms.extend([&mut qk.q, &mut qk.k]);
        }
        norms.push(&mut self.mlp_norm);
        if let Some(s) = &mut self.sandwich {
            norms.extend([&mut s.after_attention, &mut s.after_mlp]);
        }
        [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.o_proj,
            &mut self.gate_proj,
            &mut self.up_proj,
            &mut self.down_proj,
        ]
    }

    /// Every parameter: the norms, then each projection's weight and bias.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut out = Vec::new();
        for l in self.linears_mut_with_norms(&mut out) {
            out.extend(l.params_mut());
        }
        out
    }

    /// q, k, v of `xn1`: projected, q and k normalised per head (Qwen3, Gemma 3) and rotated.
    fn qkv(&self, inp: &LayerInputs, xn1: &Tensor) -> Result<Qkv> {
        let (plan, positions, s) = (inp.plan(), inp.batch.token_positions(), self.shape);
        let (q, sq) = self.q_proj.forward(plan, xn1)?;
        let (k, sk) = self.k_proj.forward(plan, xn1)?;
        let (v, sv) = self.v_proj.forward(plan, xn1)?;
        let (mut q, mut k, q_norm, k_norm) = match &self.qk_norm {
            Some(n) => {
                let (q, qs) = head_norm(&n.q, q, s.head_dim, self.eps)?;
                let (k, ks) = head_norm(&n.k, k, s.head_dim, self.eps)?;
                (q, k, Some(qs), Some(ks))
            }
            None => (q, k, None, None),
        };
        rope_forward(&mut q, s.heads, positions, &self.inv_freq)?;
        rope_forward(&mut k, s.kv_heads, positions, &self.inv_freq)?;
        Ok(Qkv {
            q,
            k,
            v,
            q_norm,
            k_norm,
            lin: [sq, sk, sv],
        })
    }

    /// `x` plus the attention branch's output `o` (normalised first in Gemma 3).
    fn join_attention(&self, o: Tensor, x: &Tensor) -> Result<(Tensor, Option<NormSaved>)> {
        let after = self.sandwich.as_ref().map(|s| &s.after_attention);
        let (mut x_mid, saved) = maybe_norm(after, o, self.eps)?;
        add_assign(&mut x_mid, x)?;
        Ok((x_mid, saved))
    }

    /// The MLP branch on `x_mid`, added to it.
    fn mlp(&self, plan: Option<&DevicePlan>, x_mid: &Tensor) -> Result<MlpOut> {
        let (xn2, rstd2) = rmsnorm_forward(x_mid, &self.mlp_norm.value, self.eps)?;
        let (gate, sg) = self.gate_proj.forward(plan, &xn2)?;
        let (up, su) = self.up_proj.forward(plan, &xn2)?;
        let h = gated_forward(self.activation, &gate, &up)?;
        let (down, sd) = self.down_proj.forward(plan, &h)?;
        let after = self.sandwich.as_ref().map(|s| &s.after_mlp);
        let (mut out, after_mlp) = maybe_norm(after, down, self.eps)?;
        add_assign(&mut out, x_mid)?;
        Ok(MlpOut {
            out,
            xn2,
            rstd2,
            gate,
            up,
            h,
            after_mlp,
            lin: [sg, su, sd],
        })
    }

    /// x [T, d] → x + attn(norm x) → … + mlp(norm …). Returns the output and the saved state.
    pub fn forward(&self, inp: &LayerInputs, x: Tensor) -> Result<(Tensor, LayerSaved)> {
        let (xn1, rstd1) = rmsnorm_forward(&x, &self.input_norm.value, self.eps)?;
        let qkv = self.qkv(inp, &xn1)?;
        let (attn, lse) =
            attention_forward(&qkv.q, &qkv.k, &qkv.v, inp.batch.segments(), self.shape)?;
        let (o, so) = self.o_proj.forward(inp.plan(), &attn)?;
        let (x_mid, after_attention) = self.join_attention(o, &x)?;
        let mlp = self.mlp(inp.plan(), &x_mid)?;
        let [sq, sk, sv] = qkv.lin;
        let [sg, su, sd] = mlp.lin;
        let saved = LayerSaved {
            x,
            xn1,
            rstd1,
            q_norm: qkv.q_norm,
            k_norm: qkv.k_norm,
            q: qkv.q,
            k: qkv.k,
            v: qkv.v,
            attn,
            lse,
            after_attention,
            x_mid,
            xn2: mlp.xn2,
            rstd2: mlp.rstd2,
            gate: mlp.gate,
            up: mlp.up,
            h: mlp.h,
            after_mlp: mlp.after_mlp,
            lin: [sq, sk, sv, so, sg, su, sd],
        };
        Ok((mlp.out, saved))
    }

    /// Forward for generation: the batch holds the new tokens of sequences `seqs` (indices into
    /// `cache`), at positions continuing their cached ones. Appends their keys and values to
    /// the cache and attends over everything cached (the sliding window, if any, counts back
    /// from each query's own position), as layer `layer` of the decoding step `step`, whose
    /// tables were built with this layer's caches reserved. Saves nothing.
    pub fn forward_cached(
        &self,
        inp: &LayerInputs,
        x: Tensor,
        cache: &mut LayerCache,
        seqs: &[usize],
        step: &DecodeStep,
        layer: usize,
    ) -> Result<Tensor> {
        let b = inp.batch;
        let (xn1, _) = rmsnorm_forward(&x, &self.input_norm.value, self.eps)?;
        let Qkv { q, k, v, .. } = self.qkv(inp, &xn1)?;
        // Append the step's keys and values to each sequence's cache, then attend over the
        // caches where they lie (no gather into one packed K and V).
        for (seg, &slot) in seqs.iter().enumerate() {
            let entry = cache
                .slots
                .get_mut(slot)
                .ok_or_else(|| ModelError::Batch(format!("cache slot {slot} does not exist")))?;
            let (from, n) = (b.starts()[seg], b.starts()[seg + 1] - b.starts()[seg]);
            SequenceCache::append(entry, &k, &v, from, n)?;
        }
        let views = cache.views(seqs)?;
        let attn = attention_decode_layer(&q, step, layer, &views)?;
        let (o, _) = self.o_proj.forward(inp.plan(), &attn)?;
        let (x_mid, _) = self.join_attention(o, &x)?;
        Ok(self.mlp(inp.plan(), &x_mid)?.out)
    }

    /// dOut [T, d] → dX [T, d]; accumulates gradients of trainable parameters and adapters.
    pub fn backward(&mut self, inp: &LayerInputs, s: &LayerSaved, dout: &Tensor) -> Result<Tensor> {
        let (plan, b, shape) = (inp.plan(), inp.batch, self.shape);
        let zeros = |t: &Tensor| Tensor::zeros(t.device(), t.dtype(), t.shape());
        // MLP branch: out = x_mid + [norm_after_mlp](down(act(gate) ⊙ up)).
        let after_mlp = self.sandwich.as_mut().map(|n| &mut n.after_mlp);
        let ddown = maybe_norm_backward(after_mlp, s.after_mlp.as_ref(), dout)?;
        let mut dh = zeros(&s.h)?;
        self.down_proj.backward(
            plan,
            &s.h,
            &s.lin[6],
            ddown.as_ref().unwrap_or(dout),
            &mut dh,
        )?;
        let (dgate, dup) = gated_backward(self.activation, &dh, &s.gate, &s.up)?;
        let mut dxn2 = zeros(&s.xn2)?;
        self.gate_proj
            .backward(plan, &s.xn2, &s.lin[4], &dgate, &mut dxn2)?;
        self.up_proj
            .backward(plan, &s.xn2, &s.lin[5], &dup, &mut dxn2)?;
        let Param {
            value: w2,
            grad: dw2,
            ..
        } = &mut self.mlp_norm;
        let mut dx_mid = rmsnorm_backward(&dxn2, &s.x_mid, w2, &s.rstd2, dw2.as_mut())?;
        add_assign(&mut dx_mid, dout)?;
        // Attention branch: x_mid = x + [norm_after_attention](o_proj(attention(q, k, v))).
        let after_attention = self.sandwich.as_mut().map(|n| &mut n.after_attention);
        let d_o = maybe_norm_backward(after_attention, s.after_attention.as_ref(), &dx_mid)?;
        let mut dattn = zeros(&s.attn)?;
        self.o_proj.backward(
            plan,
            &s.attn,
            &s.lin[3],
            d_o.as_ref().unwrap_or(&dx_mid),
            &mut dattn,
        )?;
        let (mut dq, mut dk, dv) = attention_backward(
            &dattn,
            &s.q,
            &s.k,
            &s.v,
            &s.attn,
            &s.lse,
            b.segments(),
            shape,
        )?;
        rope_backward(&mut dq, shape.heads, b.token_positions(), &self.inv_freq)?;
        rope_backward(&mut dk, shape.kv_heads, b.token_positions(), &self.inv_freq)?;
        match (self.qk_norm.as_mut(), &s.q_norm, &s.k_norm) {
            (Some(n), Some(qs), Some(ks)) => {
                dq = head_norm_backward(&mut n.q, qs, dq, shape.head_dim)?;
                dk = head_norm_backward(&mut n.k, ks, dk, shape.head_dim)?;
            }
            (None, None, None) => {}
            _ => return Err(changed_between_passes()),
        }
        let mut dxn1 = zeros(&s.xn1)?;
        self.q_proj
            .backward(plan, &s.xn1, &s.lin[0], &dq, &mut dxn1)?;
        self.k_proj
            .backward(plan, &s.xn1, &s.lin[1], &dk, &mut dxn1)?;
        self.v_proj
            .backward(plan, &s.xn1, &s.lin[2], &dv, &mut dxn1)?;
        let Param {
            value: w1,
            grad: dw1,
            ..
        } = &mut self.input_norm;
        let mut dx = rmsnorm_backward(&dxn1, &s.x, w1, &s.rstd1, dw1.as_mut())?;
        add_assign(&mut dx, &dx_mid)?;
        Ok(dx)
    }
}
