//! Criterion benches: accounting of one model, shape enumeration throughput, training memory
//! at the peak moment, timing a full training step with the analytical model.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lmshape::flops::{self, FlopsConvention};
use lmshape::hardware::AnalyticalTimer;
use lmshape::search::ShapeSpace;
use lmshape::step::{self, Cluster, StepOptions};
use lmshape::{Architecture, ParallelLayout, Recompute, presets};
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

/// Enumerate-and-count: every candidate (depth, head size, width) examined gets the full
/// validity check and an exact parameter count. Throughput is candidates per second.
fn enumeration(c: &mut Criterion) {
    let mut g = c.benchmark_group("enumeration");
    let bloom = ShapeSpace::bloom_reference().unwrap();
    let wide = ShapeSpace::around(100_000_000_000, 0.9, Architecture::gpt2(), 50257)
        .unwrap()
        .to_builder()
        .hidden_multiple(64)
        .build()
        .unwrap();
    for (name, space) in [("bloom_reference", &bloom), ("wide_10b_to_190b", &wide)] {
        let mut it = space.iter().unwrap();
        let shapes = it.by_ref().count();
        let candidates = it.candidates();
        g.throughput(Throughput::Elements(candidates));
        g.bench_function(
            format!("{name}/{candidates}_candidates_{shapes}_shapes"),
            |b| {
                b.iter(|| {
                    let mut it = black_box(space).iter().unwrap();
                    let n = it
                        .by_ref()
                        .map(|s| s.params)
                        .fold(0u64, |a, p| a.wrapping_add(p));
                    black_box((n, it.candidates()))
                })
            },
        );
    }
    // Mixture-of-experts variants of every Llama-style shape of 6.3–7.7B active parameters.
    let backbone = ShapeSpace::around(7_000_000_000, 0.1, Architecture::llama(), 32000)
        .unwrap()
        .to_builder()
        .seq_len(4096)
        .build()
        .unwrap();
    let moe = lmshape::search::MoeSpace::new(backbone);
    let shapes = moe.iter().unwrap().count() as u64;
    g.throughput(Throughput::Elements(shapes));
    g.bench_function(format!("moe_7b_active/{shapes}_moe_shapes"), |b| {
        b.iter(|| {
            black_box(
                black_box(&moe)
                    .iter()
                    .unwrap()
                    .map(|m| m.active_params)
                    .fold(0u64, u64::wrapping_add),
            )
        })
    });
    g.finish();
}

/// BLOOM-176B's launch layout: tp 4, pp 12, dp 8, micro-batch 2, full recomputation.
fn bloom_launch_layout() -> ParallelLayout {
    ParallelLayout::builder()
        .tp(4)
        .pp(12)
        .dp(8)
        .micro_batch(2)
        .global_batch(2048)
        .recompute(Recompute::Full)
        .embedding_pipeline_slots(true)
        .build()
        .unwrap()
}

/// One full 70-layer BLOOM-176B step on its launch layout with the analytical timer.
fn step_timing(c: &mut Criterion) {
    let m = presets::by_name("bloom-176b").unwrap();
    let layout = bloom_launch_layout();
    let cluster = Cluster::selene();
    let timer = AnalyticalTimer::new(cluster.gpu.clone());
    let opts = StepOptions::default();
    let mut g = c.benchmark_group("step");
    g.throughput(Throughput::Elements(1));
    g.bench_function("bloom_176b_70_layers", |b| {
        b.iter(|| {
            black_box(step::step_time(black_box(&m), &layout, &cluster, &timer, &opts).unwrap())
        })
    });
    g.finish();
}

/// Training memory of every stage at its peak moment, then the device figure under a
/// framework: BLOOM's launch layout under Megatron-DeepSpeed, and Qwen3-30B-A3B on eight
/// expert-parallel ranks under Megatron-Core.
fn training_memory(c: &mut Criterion) {
    use lmshape::memory::{self, Framework, FrameworkProfile, MemoryOptions};
    let bloom = presets::by_name("bloom-176b").unwrap();
    let bloom_layout = bloom_launch_layout();
    let qwen = lmshape::model::hf::from_hf_config_str(include_str!(
        "../examples/configs/qwen3-30b-a3b.json"
    ))
    .unwrap();
    let qwen_layout = ParallelLayout::builder()
        .dp(8)
        .ep(8)
        .micro_batch(4)
        .global_batch(512)
        .seq_len(4096)
        .build()
        .unwrap();
    let mut g = c.benchmark_group("memory");
    g.throughput(Throughput::Elements(1));
    for (name, model, layout, framework) in [
        (
            "bloom_176b_launch",
            &bloom,
            &bloom_layout,
            Framework::MegatronDeepspeed,
        ),
        (
            "qwen3_30b_a3b_ep8",
            &qwen,
            &qwen_layout,
            Framework::MegatronCore,
        ),
    ] {
        let profile = FrameworkProfile::of(framework);
        let opts = profile.memory_options(&MemoryOptions::default());
        g.bench_function(name, |b| {
            b.iter(|| {
                let r = memory::training_memory(black_box(model), layout, &opts).unwrap();
                black_box(profile.most_loaded(&r).unwrap())
            })
        });
    }
    g.finish();
}

/// The whole reference plan: every shape × layout evaluated.
fn planning(c: &mut Criterion) {
    let req = lmshape::PlanRequest::bloom_reference();
    let timer = AnalyticalTimer::new(req.cluster().gpu.clone());
    let evaluated = lmshape::plan::plan(&req, &timer).unwrap().evaluated;
    let mut g = c.benchmark_group("plan");
    g.sample_size(10);
    g.throughput(Throughput::Elements(evaluated));
    g.bench_function(format!("bloom_reference/{evaluated}_pairs"), |b| {
        b.iter(|| {
            black_box(
                lmshape::plan::plan(black_box(&req), &timer)
                    .unwrap()
                    .candidates
                    .len(),
            )
        })
    });
    let moe = req
        .to_builder()
        .moe(Some(lmshape::plan::MoeSearch::default()))
        .build()
        .unwrap();
    let moe_pairs = lmshape::plan::plan(&moe, &timer)
        .unwrap()
        .moe
        .map_or(0, |m| m.evaluated);
    g.bench_function(
        format!("bloom_reference_with_moe/{moe_pairs}_moe_pairs"),
        |b| {
            b.iter(|| {
                black_box(
                    lmshape::plan::plan(black_box(&moe), &timer)
                        .unwrap()
                        .moe
                        .map(|m| m.candidates.len()),
                )
            })
        },
    );
    let huge = req.to_builder().gpus(1_000_000_000).build().unwrap();
    g.bench_function("a_billion_gpus", |b| {
        b.iter(|| {
            black_box(
                lmshape::plan::plan(black_box(&huge), &timer)
                    .unwrap()
                    .shapes,
            )
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    accounting,
    enumeration,
    training_memory,
    step_timing,
    planning
);
criterion_main!(benches);
