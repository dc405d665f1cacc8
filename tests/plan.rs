//! The planner: the reference plan, impossible requests, and timer independence.

use lmshape::hardware::{AnalyticalTimer, Gemm, GemmTimer, GpuSpec};
use lmshape::plan::{self, PlanRequest, RejectReason};
use proptest::prelude::*;

mod common;

/// The analytical timer, uniformly slower: changes only timing.
struct Slower(AnalyticalTimer, f64);

impl GemmTimer for Slower {
    fn gemm_seconds(&self, g: &Gemm) -> lmshape::Result<f64> {
        Ok(self.0.gemm_seconds(g)? * self.1)
    }
}

fn reference() -> (PlanRequest, AnalyticalTimer) {
    let req = PlanRequest::bloom_reference();
    let timer = AnalyticalTimer::new(req.cluster().gpu.clone());
    (req, timer)
}

#[test]
fn reference_plan_recommendation_is_feasible() {
    let (req, timer) = reference();
    let p = plan::plan(&req, &timer).unwrap();
    assert!(p.shapes > 100, "hundreds of shapes: {}", p.shapes);
    let best = p.best().expect("a recommendation");
    // Check the recommendation by hand, without the crate's counting or layout code.
    let m = &best.shape.model;
    let (l, d, v) = (m.num_layers(), m.hidden_size(), m.vocab_size());
    // BLOOM's count (BigScience): per layer two LayerNorms (4d), fused QKV (3d² + 3d), the
    // attention output (d² + d) and the 4d MLP (8d² + 5d); the tied embedding V·d with its
    // LayerNorm (2d) and the final LayerNorm (2d).
    let by_hand = l * (12 * d * d + 13 * d) + v * d + 4 * d;
    assert_eq!(best.shape.params, by_hand);
    let t = &best.layout;
    assert_eq!(t.tp() * t.pp() * t.dp() * t.cp(), 384);
    assert!(t.tp() <= 8 && m.num_heads() % t.tp() == 0 && d % t.tp() == 0);
    let slots = if t.embedding_pipeline_slots() {
        l + 2
    } else {
        l
    };
    assert_eq!(
        slots % t.pp(),
        0,
        "layers (with embedding slots) split over pp"
    );
    assert_eq!(req.global_batch() % (t.micro_batch() * t.dp()), 0);
    // The model states of a middle stage alone, under DeepSpeed's ZeRO-1 bytes (16-bit weights
    // and gradients, fp32 gradient partition, master weights and Adam moments over dp):
    // a lower bound of the allocated figure.
    let layers = slots / t.pp();
    let states = (layers * (12 * d * d) / t.tp()) as f64 * (4.0 + 16.0 / t.dp() as f64);
    assert!(
        best.memory_bytes_per_gpu as f64 >= states,
        "{} < {states}",
        best.memory_bytes_per_gpu
    );
    assert!(best.memory_bytes_per_gpu <= 80 << 30);
    assert!(best.tokens >= 350e9);
    assert!(best.shape.model.head_dim() <= req.max_head_dim());
    assert!(best.days_to_token_floor.unwrap() <= best.days);
    // Ranked by predicted loss.
    assert!(
        p.candidates
            .windows(2)
            .all(|w| w[0].predicted_loss <= w[1].predicted_loss)
    );
    // Every reason of the story shows up.
    for reason in [
        RejectReason::HeadsTooLarge,
        RejectReason::Indivisible,
        RejectReason::DoesNotFit,
    ] {
        assert!(
            p.rejection_counts
                .iter()
                .any(|(r, n)| *r == reason && *n > 0),
            "{reason:?}"
        );
    }
}

/// What BigScience launched (14336 hidden, 70 layers, 112 heads; tp 4, pp 12, dp 8,
/// micro-batch 2) is a feasible candidate of the reference plan.
#[test]
fn bigscience_launch_is_a_feasible_candidate() {
    let (req, timer) = reference();
    let p = plan::plan(&req, &timer).unwrap();
    let launched = p.candidates.iter().find(|c| {
        (
            c.shape.model.hidden_size(),
            c.shape.model.num_layers(),
            c.shape.model.num_heads(),
        ) == (14336, 70, 112)
            && (
                c.layout.tp(),
                c.layout.pp(),
                c.layout.dp(),
                c.layout.micro_batch(),
            ) == (4, 12, 8, 2)
    });
    let c = launched.expect("BLOOM's launch configuration is feasible");
    assert_eq!(c.shape.params, 176_247_271_424);
    assert!(c.layout.embedding_pipeline_slots());
    // Equivalence to the best: the best itself, every candidate whose optimistic loss reaches
    // the best's pessimistic one, and no other; each loss range holds its prediction.
    let best = p.best().unwrap();
    assert!(best.equivalent_to_best);
    for c in &p.candidates {
        assert!(c.loss_low <= c.predicted_loss && c.predicted_loss <= c.loss_high);
        assert_eq!(c.equivalent_to_best, c.loss_low <= best.loss_high);
    }
}

#[test]
fn impossible_requests_give_empty_plans_with_reasons() {
    let (req, timer) = reference();
    let req = req
        .to_builder()
        // 1,500 hours reach 350B tokens at ~175B parameters only above ~65% MFU
        .hours(1500.0)
        .param_range(Some((170_000_000_000, 180_000_000_000)))
        .build()
        .unwrap();
    let p = plan::plan(&req, &timer).unwrap();
    assert!(p.candidates.is_empty());
    assert!(
        p.rejection_counts
            .iter()
            .any(|(r, n)| *r == RejectReason::TooSlowForTokenFloor && *n > 0)
    );
    assert!(!p.rejected_shapes.is_empty());

    let (req, timer) = reference();
    let req = req
        .to_builder()
        .gpus(8) // a ~175B model fits on no layout of one node
        .token_floor(None)
        .param_range(Some((170_000_000_000, 180_000_000_000)))
        .build()
        .unwrap();
    let p = plan::plan(&req, &timer).unwrap();
    assert!(p.candidates.is_empty());
    assert!(p.rejected_shapes.iter().all(|r| matches!(
        r.reason,
        RejectReason::DoesNotFit | RejectReason::Indivisible | RejectReason::HeadsTooLarge
    )));

    // One week cannot reach 350B tokens at 170B+ parameters even at the GPU's peak: by hand,
    // each token costs at least 6 FLOPs per non-embedding parameter (Kaplan et al. 2020
    // §2.1), so 384 GPUs × 151.2 usable hours × 312 TFLOP/s buy at most 6.4e10 tokens.
    let (req, timer) = reference();
    let req = req
        .to_builder()
        .hours(24.0 * 7.0)
        .param_range(Some((170_000_000_000, 180_000_000_000)))
        .build()
        .unwrap();
    let by_hand = 384.0 * 24.0 * 7.0 * 0.9 * 3600.0 * 312e12 / (6.0 * 170e9);
    assert!(by_hand < 350e9);
    let err = plan::plan(&req, &timer).unwrap_err().to_string();
    assert!(err.contains("token floor must be reachable"), "{err}");
    assert!(err.contains("3.500e11 tokens"), "{err}");

    // No tp option fits a node of 8: no layout at all, refused before the search.
    let (req, timer) = reference();
    let req = req
        .to_builder()
        .gpus(8)
        .tp_options(vec![16])
        .build()
        .unwrap();
    assert!(req.layout_space().enumerate().unwrap().valid.is_empty());
    let err = plan::plan(&req, &timer).unwrap_err().to_string();
    assert!(err.contains("no layout of 8 GPUs"), "{err}");

    // A request that breaks a rule cannot be built.
    let (req, _) = reference();
    assert!(matches!(
        req.to_builder().hours(-1.0).build().unwrap_err(),
        lmshape::Error::InvalidValue { field: "hours", .. }
    ));
}

/// Swapping the timer changes step times, TFLOPs, tokens and loss, and nothing else.
#[test]
fn timer_changes_only_timing_figures() {
    let (req, timer) = reference();
    let req = req
        .to_builder()
        .token_floor(None) // feasibility then does not depend on speed
        .param_range(Some((170_000_000_000, 180_000_000_000)))
        .build()
        .unwrap();
    let a = plan::plan(&req, &timer).unwrap();
    let slow = Slower(AnalyticalTimer::new(GpuSpec::a100_80gb()), 1.25);
    let b = plan::plan(&req, &slow).unwrap();
    assert_eq!(a.evaluated, b.evaluated);
    assert_eq!(a.shapes, b.shapes);
    assert_eq!(a.rejection_counts, b.rejection_counts);
    assert_eq!(a.candidates.len(), b.candidates.len());
    for x in &a.candidates {
        let y = b
            .candidates
            .iter()
            .find(|y| y.shape == x.shape && y.layout == x.layout)
            .unwrap();
        assert_eq!(x.memory_bytes_per_gpu, y.memory_bytes_per_gpu);
        assert!(y.step.step_seconds > x.step.step_seconds);
        assert!(y.step.tflops_per_gpu < x.step.tflops_per_gpu);
        assert!(y.tokens < x.tokens);
        assert!(y.predicted_loss > x.predicted_loss);
    }
    assert_eq!(a.budget, b.budget);
    assert_eq!(a.bounds, b.bounds);
}

proptest! {
    #![proptest_config(common::proptest_config("proptest-regressions/plan.txt", 16))]

    /// Random small requests never panic, and whatever they recommend honours the memory
    /// limit, the token floor and the layout rules, ranked by loss.
    #[test]
    fn small_requests_are_consistent(gpus in 1u64..33, hours in 0.1f64..500.0, floor in proptest::option::of(1e6f64..1e10),
        lo in 10_000_000u64..60_000_000, width in 1_000_000u64..20_000_000, mb in 1u64..4, law in 0usize..3) {
        let (req, _) = reference();
        let mut cluster = req.cluster().clone();
        cluster.gpu = GpuSpec::a100_40gb();
        let Ok(req) = req
            .to_builder()
            .cluster(cluster)
            .gpus(gpus)
            .hours(hours)
            .token_floor(floor)
            .vocab_size(32000)
            .global_batch(64)
            .param_range(Some((lo, lo + width)))
            .aspect_ratio_range((10.0, 200.0))
            .micro_batches(vec![mb])
            .law([plan::LawChoice::Kaplan, plan::LawChoice::Chinchilla, plan::LawChoice::Besiroglu][law])
            .build()
        else {
            return Ok(());
        };
        let timer = AnalyticalTimer::new(req.cluster().gpu.clone());
        let p = match plan::plan(&req, &timer) {
            Ok(p) => p,
            Err(e) => {
                // Only GPUs no layout can use, or a floor no shape reaches at the peak, end
                // the plan early.
                let no_layout = req.layout_space().enumerate().unwrap().valid.is_empty();
                if no_layout {
                    prop_assert!(e.to_string().contains("no layout of"), "{}", e);
                } else {
                    prop_assert!(floor.is_some());
                    prop_assert!(e.to_string().contains("token floor must be reachable"), "{}", e);
                }
                return Ok(());
            }
        };
        // At most the peak's FLOPs over 6 per non-embedding parameter per token.
        let usable_seconds = hours * (1.0 - req.safety_margin()) * 3600.0;
        let peak = req.cluster().gpu.peak_flops_per_s(req.step_options().dtype).unwrap();
        for c in &p.candidates {
            let most = gpus as f64 * usable_seconds * peak / (6.0 * c.shape.non_embedding_params as f64);
            prop_assert!(c.tokens <= most * (1.0 + 1e-9), "{} > {}", c.tokens, most);
            prop_assert!(c.memory_bytes_per_gpu as f64 <= req.cluster().gpu.memory_bytes as f64 * req.memory_fraction());
            prop_assert!(floor.is_none_or(|f| c.tokens >= f));
            prop_assert_eq!(c.layout.gpus().unwrap(), gpus);
            // The range is in the law's own count: non-embedding for Kaplan, total otherwise.
            let size = c.shape.params_in(req.law().size_basis());
            prop_assert!(size >= lo && size <= lo + width);
        }
        // Ranked: the shapes equivalent to the best first, each part in loss order.
        let set = p.candidates.iter().take_while(|c| c.equivalent_to_best).count();
        let (head, tail) = p.candidates.split_at(set);
        prop_assert!(tail.iter().all(|c| !c.equivalent_to_best));
        for part in [head, tail] {
            prop_assert!(part.windows(2).all(|w| w[0].predicted_loss <= w[1].predicted_loss));
        }
    }
}

/// A timer that knows no GEMM: every estimate fails, and the plan says so per candidate
/// instead of failing as a whole.
struct NoTimings;

impl GemmTimer for NoTimings {
    fn gemm_seconds(&self, g: &Gemm) -> lmshape::Result<f64> {
        Err(lmshape::Error::MissingTiming {
            m: g.m,
            n: g.n,
            k: g.k,
            batch: g.batch,
        })
    }
}

#[test]
fn a_failing_estimate_is_a_rejection_not_an_error() {
    let (req, _) = reference();
    let req = req
        .to_builder()
        .param_range(Some((170_000_000_000, 180_000_000_000)))
        .build()
        .unwrap();
    let p = plan::plan(&req, &NoTimings).unwrap();
    assert!(p.candidates.is_empty());
    let failed = p
        .rejection_counts
        .iter()
        .find(|(r, _)| *r == RejectReason::EstimateFailed)
        .unwrap()
        .1;
    assert!(failed > 0);
    let r = p
        .rejected_shapes
        .iter()
        .find(|r| r.reason == RejectReason::EstimateFailed)
        .expect("a shape rejected for the failed estimate");
    assert!(r.error.as_deref().unwrap().contains("no timing for gemm"));
}

/// Seven GPUs cannot split a global batch of 2048 over data parallelism 7: the plan names the
/// rule for those layouts instead of counting every shape as indivisible.
#[test]
fn layouts_that_break_their_own_rules_are_named() {
    let (req, timer) = reference();
    let req = req
        .to_builder()
        .gpus(7)
        .token_floor(None)
        .param_range(Some((1_000_000_000, 1_100_000_000)))
        .aspect_ratio_range((10.0, 300.0))
        .build()
        .unwrap();
    let p = plan::plan(&req, &timer).unwrap();
    assert!(p.candidates.iter().all(|c| c.layout.dp() == 1));
    assert!(!p.invalid_layouts.is_empty());
    assert!(
        p.invalid_layouts
            .iter()
            .all(|l| l.layout.to_string().contains(" × dp 7,"))
    );
    assert!(
        p.invalid_layouts
            .iter()
            .all(|l| l.reason.contains("global batch must split")),
        "{:?}",
        p.invalid_layouts
    );
}

/// A billion GPUs: the layouts are found from the divisors once, so the plan answers (the
/// bench reports how fast); every layout is invalid for a global batch of 2048.
#[test]
fn a_billion_gpus_answers() {
    let (req, timer) = reference();
    let req = req.to_builder().gpus(1_000_000_000).build().unwrap();
    let p = plan::plan(&req, &timer).unwrap();
    assert!(p.candidates.is_empty());
    assert!(!p.invalid_layouts.is_empty());
}

/// Widening the search (context parallelism, the interleaved schedule, FP8) never makes the
/// best candidate worse, keeps every candidate valid for its model, and an FP8 precision the
/// GPU lacks is skipped rather than failing the pairs.
#[test]
fn widened_search_never_loses() {
    use lmshape::memory::GemmPrecision;
    use lmshape::step::Cluster;
    let cluster = Cluster::reference_node(GpuSpec::h100_sxm());
    let narrow = PlanRequest::builder(
        cluster.clone(),
        64,
        24.0 * 14.0,
        lmshape::Architecture::llama(),
        32000,
    )
    .seq_len(4096)
    .global_batch(256)
    .build()
    .unwrap();
    let wide = narrow
        .to_builder()
        .cp_options(vec![1, 2])
        .virtual_stage_options(vec![1, 2])
        .precisions(vec![GemmPrecision::Bf16, GemmPrecision::Fp8])
        .build()
        .unwrap();
    let timer = AnalyticalTimer::new(cluster.gpu.clone());
    let a = plan::plan(&narrow, &timer).unwrap();
    let b = plan::plan(&wide, &timer).unwrap();
    let (x, y) = (a.best().unwrap(), b.best().unwrap());
    assert!(y.predicted_loss <= x.predicted_loss);
    assert!(b.evaluated > a.evaluated);
    assert!(
        b.candidates
            .iter()
            .any(|c| c.precision == GemmPrecision::Fp8)
    );
    for c in b.candidates.iter().take(50) {
        assert_eq!(c.layout.gpus().unwrap(), 64);
        assert!(c.layout.cp() <= 2 && c.layout.virtual_stages() <= 2);
    }
    // A100 has no FP8: the request is refused before any search, naming the GPU.
    let a100 = Cluster::selene();
    let timer = AnalyticalTimer::new(a100.gpu.clone());
    let e = wide
        .to_builder()
        .cluster(a100)
        .build()
        .and_then(|r| plan::plan(&r, &timer))
        .unwrap_err();
    assert!(e.to_string().contains("a100-80gb has no fp8"), "{e}");
}

/// `plan` with a mixture-of-experts search: the candidates are mixture-of-experts variants of
/// the best dense shapes (same layers and width), at least as expanded as asked, ranked by the
/// law's loss, each on a layout valid for it; the dense answer is unchanged.
#[test]
fn moe_search_beside_the_dense_plan() {
    let (req, timer) = reference();
    let dense = plan::plan(&req, &timer).unwrap();
    let search = plan::MoeSearch::default();
    let with = req.to_builder().moe(Some(search.clone())).build().unwrap();
    let p = plan::plan(&with, &timer).unwrap();
    assert_eq!(p.best(), dense.best());
    let moe = p.moe.unwrap();
    assert!(!moe.candidates.is_empty());
    assert!(
        moe.candidates
            .windows(2)
            .all(|w| w[0].predicted_loss <= w[1].predicted_loss)
    );
    let backbones: Vec<(u64, u64)> = dense
        .best_per_shape()
        .iter()
        .take(search.backbones)
        .map(|c| (c.shape.model.num_layers(), c.shape.model.hidden_size()))
        .collect();
    for c in moe.candidates.iter().take(100) {
        let m = c.shape.model;
        let e = m.moe().unwrap();
        assert!(backbones.contains(&(m.num_layers(), m.hidden_size())));
        let g = m.ffn_size() / e.expert_ffn_size;
        assert!(e.num_experts + e.num_shared_experts >= search.min_expansion * g);
        assert!(c.active_params < c.shape.params);
        c.layout.validate(&m).unwrap();
        assert!(c.memory_device_bytes_per_gpu <= 80 << 30);
    }
}

/// Balanced uneven pipelines in the plan: depths that do not divide the stages become
/// feasible, every candidate validates for its model, and no stage holds more than one layer
/// (or slot) above another.
#[test]
fn balanced_pipelines_widen_the_plan() {
    let (req, timer) = reference();
    let even = plan::plan(&req, &timer).unwrap();
    let balanced = plan::plan(
        &req.to_builder().balanced_pipeline(true).build().unwrap(),
        &timer,
    )
    .unwrap();
    assert!(balanced.best_per_shape().len() > even.best_per_shape().len());
    let uneven = balanced
        .candidates
        .iter()
        .filter(|c| {
            let l = c.shape.model.num_layers() + 2 * u64::from(c.layout.embedding_pipeline_slots());
            l % c.layout.pp() != 0
        })
        .take(200)
        .collect::<Vec<_>>();
    assert!(!uneven.is_empty());
    for c in uneven {
        c.layout.validate(&c.shape.model).unwrap();
        let s = c.layout.stage_layers(&c.shape.model).unwrap();
        let pp = c.layout.pp();
        let counts: Vec<u64> = (0..pp).map(|i| s.layers(i, pp)).collect();
        assert_eq!(counts.iter().sum::<u64>(), c.shape.model.num_layers());
        let slot = |i: usize| {
            counts[i]
                + u64::from(
                    c.layout.embedding_pipeline_slots() && (i == 0 || i + 1 == counts.len()),
                )
        };
        let slots: Vec<u64> = (0..counts.len()).map(slot).collect();
        assert!(
            slots.iter().max().unwrap() - slots.iter().min().unwrap() <= 1,
            "{slots:?}"
        );
    }
}

/// Planning at the pick's predicted MFU settles: the last plan's pick predicts the MFU its
/// budget assumed (within 1%), or the rounds ran out; the first round is the request's guess.
#[test]
fn predicted_mfu_settles() {
    let (req, timer) = reference();
    let (p, mfus) = plan::plan_with_predicted_mfu(&req, &timer).unwrap();
    assert_eq!(mfus[0], req.assumed_mfu());
    let last = *mfus.last().unwrap();
    let pick = p.best().unwrap().step.mfu;
    assert!(
        (pick / last - 1.0).abs() < 0.01 || mfus.len() == plan::MAX_MFU_ROUNDS,
        "{mfus:?} then {pick}"
    );
    assert!(
        (p.budget.compute_flops
            / plan::plan(&req.to_builder().assumed_mfu(last).build().unwrap(), &timer)
                .unwrap()
                .budget
                .compute_flops
            - 1.0)
            .abs()
            < 1e-12
    );
}

/// The law's own uncertainty: refits identical to the law change nothing (the best has the
/// lowest loss under it), refits that disagree only add equivalents, and a candidate one refit
/// in twenty or more cannot rank below the best is marked.
#[test]
fn law_refits_widen_the_equivalence_set() {
    use lmshape::scaling::ParametricLaw;
    let (req, timer) = reference();
    let req = req
        .to_builder()
        .law(plan::LawChoice::Besiroglu)
        .param_range(Some((150_000_000_000, 190_000_000_000)))
        .build()
        .unwrap();
    let p = plan::plan(&req, &timer).unwrap();
    let marked =
        |c: &[plan::Candidate]| -> Vec<bool> { c.iter().map(|c| c.equivalent_to_best).collect() };
    let before = marked(&p.candidates);
    let mut same = p.candidates.clone();
    plan::mark_equivalents_under(&mut same, &[ParametricLaw::BESIROGLU; 10]);
    assert_eq!(marked(&same), before);
    let refits = [ParametricLaw::BESIROGLU, ParametricLaw::CHINCHILLA];
    let mut wide = p.candidates.clone();
    plan::mark_equivalents_under(&mut wide, &refits);
    let after = marked(&wide);
    assert!(before.iter().zip(&after).all(|(b, a)| !b || *a));
    let best = &p.candidates[0];
    for c in &wide {
        let reached = refits.iter().any(|l| {
            l.loss(c.shape.params as f64, c.tokens).unwrap()
                <= l.loss(best.shape.params as f64, best.tokens).unwrap()
        });
        assert!(!reached || c.equivalent_to_best);
    }
    // Through the request: the plan marks with the refits it carries.
    let with = req
        .to_builder()
        .law_samples(refits.to_vec())
        .build()
        .unwrap();
    assert_eq!(
        marked(&plan::plan(&with, &timer).unwrap().candidates),
        after
    );
}

/// Ordering the equivalent shapes moves only them: the same set comes first, sorted by the
/// order's figure, and the others keep their loss order behind it.
#[test]
fn equivalent_orders_reorder_only_the_set() {
    use plan::EquivalentOrder;
    // On the measured A100 machine, whose band is narrow enough to leave shapes out of the set.
    let system = lmshape::system::SystemProfile::shared("dgx-a100").unwrap();
    let timer = lmshape::system::SystemTimer::new(system.clone()).unwrap();
    let base = PlanRequest::bloom_reference()
        .to_builder()
        .cluster(lmshape::step::Cluster::from_system(system).unwrap())
        .build()
        .unwrap();
    let by_loss = plan::plan(&base, &timer).unwrap();
    let key_of = |c: &plan::Candidate| (c.shape.params, c.shape.model.num_layers(), c.layout);
    let set = |cs: &[plan::Candidate]| {
        let mut v: Vec<_> = cs
            .iter()
            .filter(|c| c.equivalent_to_best)
            .map(|c| format!("{:?}", key_of(c)))
            .collect();
        v.sort();
        v
    };
    let equivalents = by_loss
        .candidates
        .iter()
        .filter(|c| c.equivalent_to_best)
        .count();
    assert!(
        equivalents > 1 && equivalents < by_loss.candidates.len(),
        "{equivalents} of {}",
        by_loss.candidates.len()
    );
    for order in EquivalentOrder::ALL {
        let req = base.to_builder().equivalent_order(order).build().unwrap();
        let p = plan::plan(&req, &timer).unwrap();
        assert_eq!(set(&p.candidates), set(&by_loss.candidates), "{order}");
        let (head, tail) = p.candidates.split_at(equivalents);
        assert!(head.iter().all(|c| c.equivalent_to_best), "{order}");
        assert!(tail.iter().all(|c| !c.equivalent_to_best), "{order}");
        // Each order's figure, read from the candidate's own fields.
        let figure = |c: &plan::Candidate| match order {
            EquivalentOrder::Loss => c.predicted_loss,
            EquivalentOrder::Robust => c.loss_high,
            EquivalentOrder::Speed => -c.step.tflops_per_gpu,
            EquivalentOrder::Time => c.days_to_token_floor.unwrap(),
            EquivalentOrder::Margin => -(c.memory_margin_bytes as f64),
        };
        assert!(
            head.windows(2).all(|w| figure(&w[0]) <= figure(&w[1])),
            "{order}"
        );
        assert!(
            tail.windows(2)
                .all(|w| w[0].predicted_loss <= w[1].predicted_loss),
            "{order}"
        );
    }
    // Time to the floor needs a floor.
    let err = base
        .to_builder()
        .token_floor(None)
        .equivalent_order(EquivalentOrder::Time)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("needs a token floor"), "{err}");
}
