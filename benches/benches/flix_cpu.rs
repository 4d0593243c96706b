//! Criterion benches of the FLix CPU path: the base GEMM alone against the FLix layer and the
//! adapter ops alone, forward and forward+backward, on the `small` shape set of
//! `flix_benches::shapes` (the first is the CPU target of BENCHMARKS.md: T = 2048, d = 1024,
//! r = 16, K = 2, goal ≤ 1.25× the base GEMM). `flix bench --device cpu` prints the same
//! comparison as one table.

use criterion::{criterion_group, criterion_main, Criterion};
use flix_benches::{shapes, LayerProblem};
use flix_kernels::{DType, Device};

fn layer(c: &mut Criterion) {
    for shape in shapes::small() {
        let mut p = LayerProblem::new(&Device::Cpu, DType::F32, &shape).expect("benchmark problem");
        let mut group = c.benchmark_group(&shape.name);
        group.sample_size(10);
        group.bench_function("base forward", |b| {
            b.iter(|| p.base_forward().expect("run"))
        });
        group.bench_function("flix forward", |b| {
            b.iter(|| p.flix_forward().expect("run"))
        });
        group.bench_function("adapters forward", |b| {
            b.iter(|| p.adapters_forward().expect("run"))
        });
        group.bench_function("base forward+backward", |b| {
            b.iter(|| p.base_forward_backward().expect("run"))
        });
        group.bench_function("flix forward+backward", |b| {
            b.iter(|| p.flix_forward_backward().expect("run"))
        });
        group.bench_function("adapters forward+backward", |b| {
            b.iter(|| p.adapters_forward_backward().expect("run"))
        });
        group.finish();
    }
}

criterion_group!(benches, layer);
criterion_main!(benches);
