//! Measured machine profiles: every shipped one loads and times, the tables come back at their
//! points, and the properties of a step timed by them.

mod common;

use lmshape::hardware::{Gemm, GemmTimer};
use lmshape::step::{self, Cluster, StepOptions};
use lmshape::system::{SYSTEM_NAMES, SystemProfile, SystemTimer};
use lmshape::{ParallelLayout, Transformer};
use proptest::prelude::*;
use std::sync::Arc;

/// Every shipped profile loads, validates, names its sources and times a GEMM, attention and
/// a collective with positive, finite figures below the GPU's peak.
#[test]
fn shipped_profiles_load_and_time() {
    for name in SYSTEM_NAMES {
        let p = SystemProfile::shared(name).unwrap();
        p.validate().unwrap();
        assert!(!p.provenance.sources.is_empty(), "{name}");
        let gpu = p.gpu_spec().unwrap();
        let g = Gemm::bf16(8192, 8192, 8192);
        let s = p.gemm_seconds(&g, &gpu).unwrap();
        assert!(g.flops() / s < gpu.bf16_flops_per_s, "{name}");
        let (f, b) = p
            .attention_seconds(&gpu, 1, 4096, 2048.0, 32, 8, 128, 128)
            .unwrap();
        assert!(f > 0.0 && b > f, "{name}");
        let c = p.collective_seconds(lmshape::system::CollectiveOp::AllReduce, 16, 8, 1e8);
        assert!(c.is_finite() && c > 0.0, "{name}");
        let (lo, hi) = p.band(1.0);
        assert!(lo <= 1.0 && 1.0 <= hi, "{name}");
    }
    let e = SystemProfile::by_name("dgx-x100").unwrap_err().to_string();
    assert!(e.contains("dgx-h100"), "{e}");
}

/// A profile round-trips through its JSON, and a broken one is refused naming the figure.
#[test]
fn profile_json_round_trips_and_validates() {
    let p = SystemProfile::by_name("dgx-a100").unwrap();
    let text = serde_json::to_string(&p).unwrap();
    assert_eq!(SystemProfile::from_json(&text).unwrap(), p);
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["memory"]["bandwidth_fraction"] = serde_json::json!(3.0);
    let e = SystemProfile::from_json(&v.to_string())
        .unwrap_err()
        .to_string();
    assert!(e.contains("memory.bandwidth_fraction"), "{e}");
    v["memory"]["bandwidth_fraction"] = serde_json::json!(0.8);
    v["gemm"][0]["micros"] = serde_json::json!([1.0]);
    let e = SystemProfile::from_json(&v.to_string())
        .unwrap_err()
        .to_string();
    assert!(e.contains("one latency per"), "{e}");
}

/// The table comes back at every point of its grid (bf16 of the DGX H100 profile).
#[test]
fn interpolation_returns_the_table_at_its_points() {
    let p = SystemProfile::shared("dgx-h100").unwrap();
    let gpu = p.gpu_spec().unwrap();
    let grid = p.gemm.iter().find(|g| g.precision == "bf16").unwrap();
    let row = grid.n.len() * grid.k.len();
    for (i, &m) in grid.m.iter().enumerate().step_by(7) {
        for (j, &n) in grid.n.iter().enumerate().step_by(3) {
            for (l, &k) in grid.k.iter().enumerate().step_by(3) {
                let want = grid.micros[i * row + j * grid.k.len() + l] * 1e-6;
                let got = p.gemm_seconds(&Gemm::bf16(m, n, k), &gpu).unwrap();
                assert!(
                    (got / want - 1.0).abs() < 1e-9,
                    "{m} {n} {k}: {got} vs {want}"
                );
            }
        }
    }
}

fn model() -> Transformer {
    common::llama_8_layers(8192)
}

fn flash() -> StepOptions {
    StepOptions {
        memory: lmshape::MemoryOptions {
            attention: lmshape::memory::AttentionKernel::Flash,
            dropout: false,
            ..lmshape::MemoryOptions::default()
        },
        ..StepOptions::default()
    }
}

fn step_on(p: Arc<SystemProfile>, layout: &ParallelLayout) -> lmshape::step::StepTime {
    let cluster = Cluster::from_system(p.clone()).unwrap();
    let timer = SystemTimer::new(p).unwrap();
    step::step_time(&model(), layout, &cluster, &timer, &flash()).unwrap()
}

proptest! {
    #![proptest_config(common::proptest_config("proptest-regressions/system.txt", 24))]

    /// A slower GEMM table never makes a step faster; more tokens per micro-batch (a longer
    /// micro-batch) or per step never take less time; the band always contains the estimate.
    #[test]
    fn profile_steps_are_monotone(
        which in 0usize..7, factor in 1.01f64..3.0, tp in prop_oneof![Just(1u64), Just(2), Just(8)],
        mb in 1u64..4, m in 1u64..6,
    ) {
        let base = SystemProfile::shared(SYSTEM_NAMES[which]).unwrap();
        let layout = ParallelLayout::builder().tp(tp).dp(8 / tp).micro_batch(mb).global_batch(mb * (8 / tp) * m).seq_len(4096).sequence_parallel(tp > 1).build().unwrap();
        let s = step_on(base.clone(), &layout);
        prop_assert!(s.step_seconds_low <= s.step_seconds && s.step_seconds <= s.step_seconds_high);
        let mut slower = (*base).clone();
        for g in &mut slower.gemm {
            for t in &mut g.micros {
                *t *= factor;
            }
        }
        prop_assert!(step_on(Arc::new(slower), &layout).step_seconds >= s.step_seconds);
        let longer = layout.to_builder().micro_batch(mb + 1).global_batch((mb + 1) * (8 / tp) * m).build().unwrap();
        prop_assert!(step_on(base.clone(), &longer).step_seconds >= s.step_seconds);
        let more = layout.to_builder().global_batch(layout.global_batch() + mb * (8 / tp)).build().unwrap();
        prop_assert!(step_on(base, &more).step_seconds >= s.step_seconds);
    }

    /// GEMM time never falls as rows (tokens) grow, inside and outside the grid, in every
    /// shipped precision.
    #[test]
    fn gemm_time_grows_with_rows(which in 0usize..7, m in 1u64..100_000, n in 32u64..70_000,
        k in 32u64..70_000, extra in 1u64..5000) {
        let p = SystemProfile::shared(SYSTEM_NAMES[which]).unwrap();
        let t = SystemTimer::new(p.clone()).unwrap();
        let g = Gemm::bf16(m, n / 8 * 8, k / 8 * 8);
        let bigger = Gemm { m: m + extra, ..g };
        prop_assert!(t.gemm_seconds(&bigger).unwrap() >= t.gemm_seconds(&g).unwrap() * (1.0 - 1e-12));
    }
}
