//! AdamW with clipping against a plain-loop f64 oracle (PyTorch's `clip_grad_norm_` then
//! `AdamW` step), and its saved state round-tripping through a file.

use super::*;
use flix_kernels::ops::reference::adamw_step;
use flix_kernels::Tolerance;

/// Deterministic values in [-1, 1) (splitmix64).
fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let mut z = (seed.wrapping_mul(1_000_003) + i).wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

const SHAPES: [&[usize]; 2] = [&[3, 4], &[5]];

fn hp(lr: f32) -> AdamWParams {
    AdamWParams {
        lr,
        beta1: 0.8,
        beta2: 0.95,
        eps: 1e-6,
        weight_decay: 0.1,
    }
}

/// The f64 oracle: parameters, moments, step count.
struct Oracle {
    p: Vec<Vec<f64>>,
    m: Vec<Vec<f64>>,
    v: Vec<Vec<f64>>,
    t: u64,
}

impl Oracle {
    fn new(p: &[Vec<f32>]) -> Self {
        let f64s = |x: &Vec<f32>| x.iter().map(|&a| a as f64).collect::<Vec<_>>();
        let zeros = |x: &Vec<f32>| vec![0.0; x.len()];
        Self {
            p: p.iter().map(f64s).collect(),
            m: p.iter().map(zeros).collect(),
            v: p.iter().map(zeros).collect(),
            t: 0,
        }
    }

    fn step(&mut self, grads: &[Vec<f32>], hp: AdamWParams, max_norm: Option<f64>) -> f64 {
        let norm = grads
            .iter()
            .flatten()
            .map(|&g| g as f64 * g as f64)
            .sum::<f64>()
            .sqrt();
        let coef = max_norm.map_or(1.0, |max| (max / (norm + 1e-6)).min(1.0));
        self.t += 1;
        for (k, g) in grads.iter().enumerate() {
            let g: Vec<f64> = g.iter().map(|&g| g as f64 * coef).collect();
            let (p, m, v) = (&mut self.p[k], &mut self.m[k], &mut self.v[k]);
            adamw_step(p, m, v, &g, self.t, hp);
        }
        norm
    }
}

fn tensors(seed: u64, scale: f32) -> Vec<Vec<f32>> {
    SHAPES
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let n = s.iter().product();
            let x = pseudo_random(n, seed * 10 + k as u64);
            x.into_iter().map(|a| a * scale).collect()
        })
        .collect()
}

fn on_cpu(data: &[Vec<f32>]) -> Vec<Tensor> {
    SHAPES
        .iter()
        .zip(data)
        .map(|(s, d)| Tensor::cpu(s, d.clone()).unwrap())
        .collect()
}

fn step(opt: &mut AdamW, values: &mut [Tensor], grads: &[Tensor]) -> f64 {
    let mut params: Vec<Trainable> = values
        .iter_mut()
        .zip(grads)
        .map(|(value, grad)| Trainable {
            value,
            grad,
            working: None,
        })
        .collect();
    opt.step_tensors(&mut params, 1.0).unwrap()
}

/// Steps with the given learning rates and gradient scales (large scales trigger clipping),
/// compared with the oracle after every step.
fn check_against_oracle(lrs: &[f32], grad_scales: &[f32]) {
    let p0 = tensors(1, 1.0);
    let mut values = on_cpu(&p0);
    let mut oracle = Oracle::new(&p0);
    let max_norm = Some(1.0);
    let mut opt = AdamW::new(hp(lrs[0]), max_norm);
    for (s, (&lr, &gs)) in lrs.iter().zip(grad_scales).enumerate() {
        let g = tensors(100 + s as u64, gs);
        opt.params.lr = lr;
        let norm = step(&mut opt, &mut values, &on_cpu(&g));
        let want = oracle.step(&g, hp(lr), max_norm);
        Tolerance::F32
            .check(&format!("norm at step {}", s + 1), &[norm as f32], &[want])
            .unwrap();
        for (k, v) in values.iter().enumerate() {
            Tolerance::F32
                .check(
                    &format!("tensor {k} at step {}", s + 1),
                    &v.to_f32_vec().unwrap(),
                    &oracle.p[k],
                )
                .unwrap();
        }
    }
    assert_eq!(opt.steps_taken(), lrs.len() as u64);
}

#[test]
fn one_step_matches_the_oracle() {
    // Unclipped, then (a fresh run) clipped.
    check_against_oracle(&[0.1], &[0.1]);
    check_against_oracle(&[0.1], &[5.0]);
}

#[test]
fn several_steps_match_the_oracle() {
    check_against_oracle(&[0.05, 0.1, 0.08, 0.02], &[0.1, 5.0, 0.2, 3.0]);
}

/// Summed gradients of 4 micro-batches stepped with `grad_scale` 1/4: the oracle steps on their
/// mean (norm, clipping and update alike), unclipped and clipped.
#[test]
fn a_gradient_scale_steps_on_the_mean_gradient() {
    for gs in [0.1, 5.0] {
        let p0 = tensors(1, 1.0);
        let mut values = on_cpu(&p0);
        let mut oracle = Oracle::new(&p0);
        let mut opt = AdamW::new(hp(0.1), Some(1.0));
        let mean = tensors(7, gs);
        let summed: Vec<Vec<f32>> = mean
            .iter()
            .map(|g| g.iter().map(|x| x * 4.0).collect())
            .collect();
        let summed = on_cpu(&summed);
        let mut params: Vec<Trainable> = values
            .iter_mut()
            .zip(&summed)
            .map(|(value, grad)| Trainable {
                value,
                grad,
                working: None,
            })
            .collect();
        let norm = opt.step_tensors(&mut params, 0.25).unwrap();
        let want = oracle.step(&mean, hp(0.1), Some(1.0));
        Tolerance::F32
            .check("norm", &[norm as f32], &[want])
            .unwrap();
        for (k, v) in values.iter().enumerate() {
            Tolerance::F32
                .check(
                    &format!("tensor {k}"),
                    &v.to_f32_vec().unwrap(),
                    &oracle.p[k],
                )
                .unwrap();
        }
    }
}

#[test]
fn a_non_finite_gradient_skips_the_update() {
    let p0 = tensors(1, 1.0);
    let mut values = on_cpu(&p0);
    let mut opt = AdamW::new(hp(0.1), Some(1.0));
    let mut g = tensors(2, 1.0);
    g[1][0] = f32::NAN;
    assert!(step(&mut opt, &mut values, &on_cpu(&g)).is_nan());
    assert_eq!(opt.steps_taken(), 0);
    let now: Vec<Vec<f32>> = values.iter().map(|v| v.to_f32_vec().unwrap()).collect();
    assert_eq!(now, p0);
}

fn names() -> Vec<String> {
    vec!["a".into(), "b".into()]
}

#[test]
fn a_saved_state_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("optimizer.safetensors");
    let p0 = tensors(1, 1.0);
    let grads: Vec<Vec<Tensor>> = (0..4).map(|s| on_cpu(&tensors(50 + s, 2.0))).collect();
    let mut straight = on_cpu(&p0);
    let mut opt = AdamW::new(hp(0.1), Some(1.0));
    for g in &grads {
        step(&mut opt, &mut straight, g);
    }

    let mut halves = on_cpu(&p0);
    let mut first = AdamW::new(hp(0.1), Some(1.0));
    for g in &grads[..2] {
        step(&mut first, &mut halves, g);
    }
    first.saved_state(&names()).unwrap().save(&file).unwrap();
    let mut second = AdamW::new(hp(0.1), Some(1.0));
    let named: Vec<(&str, &Tensor)> = vec![("a", &halves[0]), ("b", &halves[1])];
    second
        .load_state(SavedState::load(&file).unwrap(), &named, &file)
        .unwrap();
    assert_eq!(second.steps_taken(), 2);
    for g in &grads[2..] {
        step(&mut second, &mut halves, g);
    }
    for (a, b) in straight.iter().zip(&halves) {
        assert_eq!(a.to_f32_vec().unwrap(), b.to_f32_vec().unwrap());
    }
    let (s1, s2) = (
        opt.saved_state(&names()).unwrap(),
        second.saved_state(&names()).unwrap(),
    );
    assert_eq!(s1.step, s2.step);
    for (a, b) in s1.tensors.iter().zip(&s2.tensors) {
        assert_eq!((&a.name, &a.data), (&b.name, &b.data));
    }
}

#[test]
fn a_state_that_does_not_fit_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("optimizer.safetensors");
    let mut values = on_cpu(&tensors(1, 1.0));
    let mut opt = AdamW::new(hp(0.1), None);
    step(&mut opt, &mut values, &on_cpu(&tensors(2, 1.0)));
    let saved = || opt.saved_state(&names()).unwrap();
    let load_error = |saved: SavedState, params: &[(&str, &Tensor)]| {
        let mut fresh = AdamW::new(hp(0.1), None);
        fresh
            .load_state(saved, params, &file)
            .unwrap_err()
            .to_string()
    };
    let wrong_shape = Tensor::cpu(&[4, 3], vec![0.0; 12]).unwrap();
    let e = load_error(saved(), &[("a", &wrong_shape), ("b", &values[1])]);
    assert!(e.contains("a.adam_m") && e.contains("[4, 3]"), "{e}");
    let mut without_v = saved();
    without_v.tensors.retain(|t| t.name != "b.adam_v");
    let e = load_error(without_v, &[("a", &values[0]), ("b", &values[1])]);
    assert!(e.contains("missing tensor b.adam_v"), "{e}");
    let e = load_error(saved(), &[("a", &values[0])]);
    assert!(
        e.contains("b.adam_m") && e.contains("does not belong"),
        "{e}"
    );
    // A file without the step is not an optimizer state.
    crate::train::tensor_file::save_tensors(&file, &saved().tensors).unwrap();
    let e = SavedState::load(&file).err().unwrap().to_string();
    assert!(e.contains("adamw_step"), "{e}");
}
