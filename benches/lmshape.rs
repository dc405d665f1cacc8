//! Criterion benches: accounting of one model (more groups are added by later modules).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lmshape::flops::{self, FlopsConvention};
use lmshape::{Recompute, presets};
use std::hint::black_box;

fn accounting(c: &mut Criterion) {
    let m = presets::by_name("bloom-176b").unwrap();
    let mut g = c.benchmark_group("accounting");
    g.throughput(Throughput::Elements(1));
    g.bench_function("param_counts", |b| {
        b.iter(|| black_box(black_box(&m).param_counts().unwrap()))
    });
    g.bench_function("params_and_flops", |b| {
        b.iter(|| {
            let m = black_box(&m);
            let p = m.param_counts().unwrap();
            let f =
                flops::matmul_flops_per_token(m, &FlopsConvention::megatron(2048, Recompute::Full))
                    .unwrap();
            black_box((p, f))
        })
    });
    g.finish();
}

criterion_group!(benches, accounting);
criterion_main!(benches);
