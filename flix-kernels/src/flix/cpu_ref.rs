//! The oracle: the FLix ops as plain loops over f64 slices, written straight from the formulas
//! in the `flix` module docs, with no tiling, no GEMM and no parallelism. Slow and obviously right.
//! The tests compare the fast CPU path and the CUDA kernels with it, and its f64 form lets
//! finite-difference gradient checks run without f32 rounding noise.

use flix_core::BatchPlan;

use super::LayerAdapters;
use crate::error::{KernelError, Result};

/// One feature type's adapters in f64: `a` `[V, r, d_in]`, `b` `[V, d_out, r]`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct RefType {
    pub scale: f64,
    pub rank: usize,
    pub a: Vec<f64>,
    pub b: Vec<f64>,
}

/// One layer's adapters in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct RefLayer {
    pub d_in: usize,
    pub d_out: usize,
    pub types: Vec<RefType>,
}

/// Gradients in f64: `dx` `[T, d_in]`, `da[k]` and `db[k]` shaped like the adapters.
#[derive(Clone, Debug, PartialEq)]
pub struct RefGrads {
    pub dx: Vec<f64>,
    pub da: Vec<Vec<f64>>,
    pub db: Vec<Vec<f64>>,
}

impl RefLayer {
    /// Copies adapters from any device; `a` must be 3-D `[V, r, d_in]` and `b` `[V, d_out, r]`.
    pub fn from_adapters(ad: &LayerAdapters) -> Result<Self> {
        let mut types = Vec::with_capacity(ad.types.len());
        let (mut d_in, mut d_out) = (0, 0);
        for t in &ad.types {
            let (&[_, rank, di], &[_, d_o, _]) = (t.a.shape(), t.b.shape()) else {
                return Err(KernelError::Invalid {
                    op: "RefLayer::from_adapters",
                    message: format!(
                        "adapters must be 3-D, found A {:?} and B {:?}",
                        t.a.shape(),
                        t.b.shape()
                    ),
                });
            };
            (d_in, d_out) = (di, d_o);
            types.push(RefType {
                scale: t.scale as f64,
                rank,
                a: t.a.to_f32_vec()?.iter().map(|&v| v as f64).collect(),
                b: t.b.to_f32_vec()?.iter().map(|&v| v as f64).collect(),
            });
        }
        Ok(Self { d_in, d_out, types })
    }

    /// R = Σ_k r_k.
    pub fn total_rank(&self) -> usize {
        self.types.iter().map(|t| t.rank).sum()
    }
}

/// Calls `f(t, k, value)` for every token t and every type k present in t's segment.
fn for_each_present(plan: &BatchPlan, mut f: impl FnMut(usize, usize, usize)) {
    for s in 0..plan.num_segments() {
        for t in plan.segment_range(s) {
            for (k, &v) in plan.segment_slots(s).iter().enumerate() {
                if v >= 0 {
                    f(t, k, v as usize);
                }
            }
        }
    }
}

/// H `[T, R]`: H[t, off_k + j] = s_k Σ_i X[t, i] A_{k,f}[j, i], 0 where absent.
pub fn shrink(plan: &BatchPlan, layer: &RefLayer, x: &[f64]) -> Vec<f64> {
    let (d_in, r_total) = (layer.d_in, layer.total_rank());
    let offs = plan.col_offsets();
    let mut h = vec![0.0; plan.num_tokens() * r_total];
    for_each_present(plan, |t, k, v| {
        let ty = &layer.types[k];
        for j in 0..ty.rank {
            let mut sum = 0.0;
            for i in 0..d_in {
                sum += x[t * d_in + i] * ty.a[(v * ty.rank + j) * d_in + i];
            }
            h[t * r_total + offs[k] + j] = ty.scale * sum;
        }
    });
    h
}

/// Y `[T, d_out]`: Y[t, o] = Σ_k Σ_j H[t, off_k + j] B_{k,f}[o, j] over present types.
pub fn expand(plan: &BatchPlan, layer: &RefLayer, h: &[f64]) -> Vec<f64> {
    let (d_out, r_total) = (layer.d_out, layer.total_rank());
    let offs = plan.col_offsets();
    let mut y = vec![0.0; plan.num_tokens() * d_out];
    for_each_present(plan, |t, k, v| {
        let ty = &layer.types[k];
        for o in 0..d_out {
            for j in 0..ty.rank {
                y[t * d_out + o] +=
                    h[t * r_total + offs[k] + j] * ty.b[(v * d_out + o) * ty.rank + j];
            }
        }
    });
    y
}

/// Gradients of expand(shrink(X)) given dY: dX `[T, d_in]`, dA and dB (fresh, not accumulated).
pub fn backward(plan: &BatchPlan, layer: &RefLayer, x: &[f64], h: &[f64], dy: &[f64]) -> RefGrads {
    let (d_in, d_out, r_total) = (layer.d_in, layer.d_out, layer.total_rank());
    let offs = plan.col_offsets();
    let mut grads = RefGrads {
        dx: vec![0.0; plan.num_tokens() * d_in],
        da: layer.types.iter().map(|t| vec![0.0; t.a.len()]).collect(),
        db: layer.types.iter().map(|t| vec![0.0; t.b.len()]).collect(),
    };
    for_each_present(plan, |t, k, v| {
        let ty = &layer.types[k];
        let r = ty.rank;
        for j in 0..r {
            // dH_k[t, j] = Σ_o dY[t, o] B[o, j]
            let mut dh = 0.0;
            for o in 0..d_out {
                dh += dy[t * d_out + o] * ty.b[(v * d_out + o) * r + j];
                // dB[o, j] += dY[t, o] H[t, off_k + j]
                grads.db[k][(v * d_out + o) * r + j] +=
                    dy[t * d_out + o] * h[t * r_total + offs[k] + j];
            }
            for i in 0..d_in {
                // dA[j, i] += s_k dH[t, j] X[t, i];  dX[t, i] += s_k dH[t, j] A[j, i]
                grads.da[k][(v * r + j) * d_in + i] += ty.scale * dh * x[t * d_in + i];
                grads.dx[t * d_in + i] += ty.scale * dh * ty.a[(v * r + j) * d_in + i];
            }
        }
    });
    grads
}

/// The adapted linear layer: returns (Y, H) with Y = X Wᵀ + bias + expand(shrink(X));
/// `w` `[d_out, d_in]`, `bias` `[d_out]`.
pub fn linear_forward(
    plan: &BatchPlan,
    layer: &RefLayer,
    w: &[f64],
    bias: Option<&[f64]>,
    x: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let (d_in, d_out) = (layer.d_in, layer.d_out);
    let h = shrink(plan, layer, x);
    let mut y = expand(plan, layer, &h);
    for t in 0..plan.num_tokens() {
        for o in 0..d_out {
            let mut sum = bias.map_or(0.0, |b| b[o]);
            for i in 0..d_in {
                sum += x[t * d_in + i] * w[o * d_in + i];
            }
            y[t * d_out + o] += sum;
        }
    }
    (y, h)
}

/// Gradients of the adapted linear layer: the adapter gradients and dX = dY W + adapter part.
pub fn linear_backward(
    plan: &BatchPlan,
    layer: &RefLayer,
    w: &[f64],
    x: &[f64],
    h: &[f64],
    dy: &[f64],
) -> RefGrads {
    let (d_in, d_out) = (layer.d_in, layer.d_out);
    let mut grads = backward(plan, layer, x, h, dy);
    for t in 0..plan.num_tokens() {
        for i in 0..d_in {
            let mut sum = 0.0;
            for o in 0..d_out {
                sum += dy[t * d_out + o] * w[o * d_in + i];
            }
            grads.dx[t * d_in + i] += sum;
        }
    }
    grads
}
