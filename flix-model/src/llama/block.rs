//! One decoder layer: pre-norm attention and pre-norm SwiGLU MLP, each added to the residual
//! stream. `forward` returns the activations `backward` needs (llm.c style, no autograd).

use flix_kernels::flix::DevicePlan;
use flix_kernels::ops::attention::{
    attention_backward, attention_cached_forward, attention_forward, AttentionShape,
};
use flix_kernels::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use flix_kernels::ops::rope::{rope_backward, rope_forward};
use flix_kernels::ops::swiglu::{swiglu_backward, swiglu_forward};
use flix_kernels::{Device, Tensor};

use super::linear::{Linear, LinearSaved};
use flix_kernels::ops::elementwise::add_assign;
use flix_kernels::DType;

use super::param::Param;
use crate::batch::Batch;
use crate::config::LlamaConfig;
use crate::error::Result;
use crate::weights::TensorSource;

pub struct DecoderLayer {
    pub input_norm: Param,
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub post_norm: Param,
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
    eps: f32,
    shape: AttentionShape,
}

/// Everything the backward pass of one layer reads.
pub struct LayerSaved {
    x: Tensor,
    xn1: Tensor,
    rstd1: Vec<f32>,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn: Tensor,
    lse: Vec<f32>,
    x_mid: Tensor,
    xn2: Tensor,
    rstd2: Vec<f32>,
    gate: Tensor,
    up: Tensor,
    h: Tensor,
    lin: [LinearSaved; 7],
}

/// One layer's key/value cache for generation: per sequence, its keys and values so far
/// (after RoPE), row-major `[len, kv_dim]`.
#[derive(Default)]
pub struct LayerCache {
    pub k: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

/// What a layer needs to know about the batch besides its activations.
pub struct LayerInputs<'a> {
    pub batch: &'a Batch,
    pub plan: Option<&'a DevicePlan>,
    pub inv_freq: &'a [f32],
}

impl DecoderLayer {
    pub fn load(
        ck: &dyn TensorSource,
        c: &LlamaConfig,
        i: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let p = format!("model.layers.{i}");
        let (d, f) = (c.hidden_size, c.intermediate_size);
        let lin = |name: &str, out, inp, bias| {
            Linear::load(ck, &format!("{p}.{name}"), out, inp, bias, device, dtype)
        };
        Ok(Self {
            input_norm: Param::load(
                ck,
                &format!("{p}.input_layernorm.weight"),
                &[d],
                device,
                dtype,
            )?,
            q_proj: lin("self_attn.q_proj", c.q_dim(), d, c.qkv_bias)?,
            k_proj: lin("self_attn.k_proj", c.kv_dim(), d, c.qkv_bias)?,
            v_proj: lin("self_attn.v_proj", c.kv_dim(), d, c.qkv_bias)?,
            o_proj: lin("self_attn.o_proj", d, c.q_dim(), c.o_bias)?,
            post_norm: Param::load(
                ck,
                &format!("{p}.post_attention_layernorm.weight"),
                &[d],
                device,
                dtype,
            )?,
            gate_proj: lin("mlp.gate_proj", f, d, false)?,
            up_proj: lin("mlp.up_proj", f, d, false)?,
            down_proj: lin("mlp.down_proj", d, f, false)?,
            eps: c.rms_norm_eps,
            shape: AttentionShape::new(c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        })
    }

    /// A layer from its parts: the two norms and the seven projections (q, k, v, o, gate, up,
    /// down).
    pub fn from_parts(
        c: &LlamaConfig,
        input_norm: Param,
        linears: [Linear; 7],
        post_norm: Param,
    ) -> Self {
        let [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj] = linears;
        Self {
            input_norm,
            q_proj,
            k_proj,
            v_proj,
            o_proj,
            post_norm,
            gate_proj,
            up_proj,
            down_proj,
            eps: c.rms_norm_eps,
            shape: AttentionShape::new(c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        }
    }

    /// The seven projections, read-only, in the order of `linears_mut`.
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

    /// The seven projections, in a fixed order (q, k, v, o, gate, up, down).
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

    /// The seven projections, after pushing the two norms into `norms` (a split borrow for
    /// walking every parameter at once).
    pub fn linears_mut_with_norms<'a>(
        &'a mut self,
        norms: &mut Vec<&'a mut Param>,
    ) -> [&'a mut Linear; 7] {
        norms.push(&mut self.input_norm);
        norms.push(&mut self.post_norm);
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

    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut out = vec![&mut self.input_norm, &mut self.post_norm];
        for l in [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.o_proj,
            &mut self.gate_proj,
            &mut self.up_proj,
            &mut self.down_proj,
        ] {
            out.extend(l.params_mut());
        }
        out
    }

    /// x [T, d] → x + attn(norm x) → … + mlp(norm …). Returns the output and the saved state.
    pub fn forward(&self, inp: &LayerInputs, x: Tensor) -> Result<(Tensor, LayerSaved)> {
        let (plan, b, s) = (inp.plan, inp.batch, self.shape);
        let (xn1, rstd1) = rmsnorm_forward(&x, &self.input_norm.value, self.eps)?;
        let (mut q, sq) = self.q_proj.forward(plan, &xn1)?;
        let (mut k, sk) = self.k_proj.forward(plan, &xn1)?;
        let (v, sv) = self.v_proj.forward(plan, &xn1)?;
        rope_forward(&mut q, s.heads, &b.positions, inp.inv_freq)?;
        rope_forward(&mut k, s.kv_heads, &b.positions, inp.inv_freq)?;
        let (attn, lse) = attention_forward(&q, &k, &v, &b.starts, s)?;
        let (o, so) = self.o_proj.forward(plan, &attn)?;
        // x + o, written into o's buffer (no copy of the residual stream).
        let mut x_mid = o;
        add_assign(&mut x_mid, &x)?;
        let (xn2, rstd2) = rmsnorm_forward(&x_mid, &self.post_norm.value, self.eps)?;
        let (gate, sg) = self.gate_proj.forward(plan, &xn2)?;
        let (up, su) = self.up_proj.forward(plan, &xn2)?;
        let h = swiglu_forward(&gate, &up)?;
        let (down, sd) = self.down_proj.forward(plan, &h)?;
        let mut out = down;
        add_assign(&mut out, &x_mid)?;
        let saved = LayerSaved {
            x,
            xn1,
            rstd1,
            q,
            k,
            v,
            attn,
            lse,
            x_mid,
            xn2,
            rstd2,
            gate,
            up,
            h,
            lin: [sq, sk, sv, so, sg, su, sd],
        };
        Ok((out, saved))
    }

    /// Forward for generation: the batch holds the new tokens of sequences `seqs` (indices into
    /// `cache`), at positions continuing their cached ones. Appends their keys and values to
    /// the cache and attends over everything cached. Saves nothing.
    pub fn forward_cached(
        &self,
        inp: &LayerInputs,
        x: Tensor,
        cache: &mut LayerCache,
        seqs: &[usize],
    ) -> Result<Tensor> {
        let (plan, b, s) = (inp.plan, inp.batch, self.shape);
        let (xn1, _) = rmsnorm_forward(&x, &self.input_norm.value, self.eps)?;
        let (mut q, _) = self.q_proj.forward(plan, &xn1)?;
        let (mut k, _) = self.k_proj.forward(plan, &xn1)?;
        let (v, _) = self.v_proj.forward(plan, &xn1)?;
        rope_forward(&mut q, s.heads, &b.positions, inp.inv_freq)?;
        rope_forward(&mut k, s.kv_heads, &b.positions, inp.inv_freq)?;
        let kv_dim = s.kv_heads * s.head_dim;
        let (k_new, v_new) = (k.to_f32_vec()?, v.to_f32_vec()?);
        let mut kv_starts = vec![0];
        let (mut k_all, mut v_all) = (Vec::new(), Vec::new());
        for (seg, &i) in seqs.iter().enumerate() {
            let rows = b.starts[seg] * kv_dim..b.starts[seg + 1] * kv_dim;
            cache.k[i].extend_from_slice(&k_new[rows.clone()]);
            cache.v[i].extend_from_slice(&v_new[rows]);
            k_all.extend_from_slice(&cache.k[i]);
            v_all.extend_from_slice(&cache.v[i]);
            kv_starts.push(k_all.len() / kv_dim);
        }
        let rows = k_all.len() / kv_dim;
        let k_all = Tensor::from_f32(x.device(), x.dtype(), &[rows, kv_dim], &k_all)?;
        let v_all = Tensor::from_f32(x.device(), x.dtype(), &[rows, kv_dim], &v_all)?;
        let attn = attention_cached_forward(&q, &k_all, &v_all, &b.starts, &kv_starts, s)?;
        let (o, _) = self.o_proj.forward(plan, &attn)?;
        let mut x_mid = x;
        add_assign(&mut x_mid, &o)?;
        let (xn2, _) = rmsnorm_forward(&x_mid, &self.post_norm.value, self.eps)?;
        let (gate, _) = self.gate_proj.forward(plan, &xn2)?;
        let (up, _) = self.up_proj.forward(plan, &xn2)?;
        let h = swiglu_forward(&gate, &up)?;
        let (down, _) = self.down_proj.forward(plan, &h)?;
        add_assign(&mut x_mid, &down)?;
        Ok(x_mid)
    }

    /// dOut [T, d] → dX [T, d]; accumulates gradients of trainable parameters and adapters.
    pub fn backward(&mut self, inp: &LayerInputs, s: &LayerSaved, dout: &Tensor) -> Result<Tensor> {
        let (plan, b, shape) = (inp.plan, inp.batch, self.shape);
        let zeros = |t: &Tensor| Tensor::zeros(t.device(), t.dtype(), t.shape());
        // MLP branch.
        let mut dh = zeros(&s.h)?;
        self.down_proj
            .backward(plan, &s.h, &s.lin[6], dout, &mut dh)?;
        let (dgate, dup) = swiglu_backward(&dh, &s.gate, &s.up)?;
        let mut dxn2 = zeros(&s.xn2)?;
        self.gate_proj
            .backward(plan, &s.xn2, &s.lin[4], &dgate, &mut dxn2)?;
        self.up_proj
            .backward(plan, &s.xn2, &s.lin[5], &dup, &mut dxn2)?;
        let Param {
            value: w2,
            grad: dw2,
            ..
        } = &mut self.post_norm;
        let mut dx_mid = rmsnorm_backward(&dxn2, &s.x_mid, w2, &s.rstd2, dw2.as_mut())?;
        add_assign(&mut dx_mid, dout)?;
        // Attention branch.
        let mut dattn = zeros(&s.attn)?;
        self.o_proj
            .backward(plan, &s.attn, &s.lin[3], &dx_mid, &mut dattn)?;
        let (mut dq, mut dk, dv) =
            attention_backward(&dattn, &s.q, &s.k, &s.v, &s.attn, &s.lse, &b.starts, shape)?;
        rope_backward(&mut dq, shape.heads, &b.positions, inp.inv_freq)?;
        rope_backward(&mut dk, shape.kv_heads, &b.positions, inp.inv_freq)?;
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
