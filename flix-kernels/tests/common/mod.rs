//! Shared by the FLix op tests: a seeded random generator, random batch plans with the edge cases
//! of DESIGN §8, problems built on any device, and the list of devices to run every test body on.
#![allow(dead_code)] // each test file uses a different part

use flix_core::{BatchPlan, SegmentSpec, TypeShape, ABSENT};
use flix_kernels::flix::cpu_ref::RefLayer;
use flix_kernels::flix::{LayerAdapters, TypeAdapter};
use flix_kernels::{DType, Device, Tensor, Tolerance};

/// SplitMix64: tiny, seeded, reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n >= 1).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    /// Uniform in [-1, 1).
    pub fn signed(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| scale * self.signed()).collect()
    }
}

/// CUDA device 0, or `None` after printing why it was skipped; with `FLIX_REQUIRE_GPU=1` a
/// missing GPU fails the test instead, so a GPU run can never pass by skipping.
pub fn cuda_or_skip() -> Option<Device> {
    match Device::cuda(0) {
        Ok(cuda) => Some(cuda),
        Err(e) => {
            if std::env::var("FLIX_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("FLIX_REQUIRE_GPU=1 but CUDA is unavailable: {e}");
            }
            eprintln!("SKIPPED cuda: {e}");
            None
        }
    }
}

/// The devices (and activation dtypes) every test body runs on: the CPU in f32 always; CUDA in
/// f32 and bf16 when it is there (see [`cuda_or_skip`]).
pub fn devices() -> Vec<(Device, DType)> {
    let mut out = vec![(Device::Cpu, DType::F32)];
    if let Some(cuda) = cuda_or_skip() {
        out.push((cuda.clone(), DType::F32));
        out.push((cuda, DType::BF16));
    }
    out
}

/// The tolerance for results computed in `dtype`; tests compare with
/// [`Tolerance::check_scaled`], since sums of many terms err in proportion to the terms.
pub fn tolerance(dtype: DType) -> Tolerance {
    match dtype {
        DType::F32 => Tolerance::F32,
        DType::BF16 => Tolerance::BF16,
    }
}

/// A random layer shape and batch, on the host.
#[derive(Clone, Debug)]
pub struct Case {
    pub types: Vec<TypeShape>,
    pub scales: Vec<f32>,
    pub segments: Vec<SegmentSpec>,
    pub d_in: usize,
    pub d_out: usize,
}

const WIDTHS: [usize; 6] = [1, 7, 33, 130, 16, 5];

impl Case {
    /// A random case: 1 to 4 types of rank 1 to 5, 1 to 12 values (sometimes up to 200), widths
    /// that are not multiples of any tile, 0 to 8 segments of 0 to 9 tokens (one-token and empty
    /// ones included), each type present with probability 0.7 (absent and dropped look the same
    /// to the plan), random tile sizes.
    pub fn random(rng: &mut Rng) -> Self {
        let k = rng.range(1, 4);
        let types: Vec<TypeShape> = (0..k)
            .map(|_| TypeShape {
                rank: if rng.chance(0.3) { 1 } else { rng.range(1, 5) },
                num_values: if rng.chance(0.15) {
                    rng.range(100, 200)
                } else {
                    rng.range(1, 12)
                },
            })
            .collect();
        let scales = (0..k).map(|_| 0.25 + rng.below(8) as f32 * 0.25).collect();
        let num_segments = rng.range(0, 8);
        let segments = (0..num_segments)
            .map(|_| SegmentSpec {
                len: match rng.below(4) {
                    0 => 0,
                    1 => 1,
                    _ => rng.range(1, 9),
                },
                slots: types
                    .iter()
                    .map(|t| {
                        if rng.chance(0.7) {
                            rng.below(t.num_values) as i32
                        } else {
                            ABSENT
                        }
                    })
                    .collect(),
            })
            .collect();
        Self {
            types,
            scales,
            segments,
            d_in: WIDTHS[rng.below(WIDTHS.len())],
            d_out: WIDTHS[rng.below(WIDTHS.len())],
        }
    }

    pub fn plan(&self) -> BatchPlan {
        BatchPlan::new(&self.types, &self.segments).expect("valid random plan")
    }
}

/// A case's data on one device, and the same data (as the device rounded it) for the oracle.
pub struct Problem {
    pub plan: BatchPlan,
    pub adapters: LayerAdapters,
    pub layer: RefLayer,
    pub x: Tensor,
    pub x_ref: Vec<f64>,
    pub dy: Tensor,
    pub dy_ref: Vec<f64>,
}

/// Values as the oracle sees them: exactly what the tensor holds.
pub fn host(t: &Tensor) -> Vec<f64> {
    t.to_f32_vec()
        .expect("read back")
        .iter()
        .map(|&v| v as f64)
        .collect()
}

pub fn tensor(device: &Device, dtype: DType, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_f32(device, dtype, shape, data).expect("upload")
}

impl Problem {
    /// Random adapters (B non-zero, unlike PEFT's init, so that every term is exercised), X and
    /// dY for `case` on `device`; activations in `dtype`, adapters in f32.
    pub fn new(case: &Case, rng: &mut Rng, device: &Device, dtype: DType) -> Self {
        let plan = case.plan();
        let t = plan.num_tokens();
        let mut types = Vec::new();
        for (shape, &scale) in case.types.iter().zip(&case.scales) {
            let a_shape = [shape.num_values, shape.rank, case.d_in];
            let b_shape = [shape.num_values, case.d_out, shape.rank];
            let a = rng.vec(a_shape.iter().product(), 1.0 / (case.d_in as f32).sqrt());
            let b = rng.vec(b_shape.iter().product(), 1.0);
            types.push(TypeAdapter {
                scale,
                a: tensor(device, DType::F32, &a_shape, &a),
                b: tensor(device, DType::F32, &b_shape, &b),
            });
        }
        let adapters = LayerAdapters::new(types);
        let layer = RefLayer::from_adapters(&adapters).expect("oracle copy");
        let x = tensor(device, dtype, &[t, case.d_in], &rng.vec(t * case.d_in, 1.0));
        let dy = tensor(
            device,
            dtype,
            &[t, case.d_out],
            &rng.vec(t * case.d_out, 1.0),
        );
        Self {
            x_ref: host(&x),
            dy_ref: host(&dy),
            plan,
            adapters,
            layer,
            x,
            dy,
        }
    }
}
