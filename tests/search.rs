//! Shape enumeration: completeness against brute force, validity, and the BLOOM case.

mod common;

use lmshape::heuristics;
use lmshape::search::{self, FfnRule, KvHeads, ShapeSpace, SortKey};
use lmshape::{Architecture, ParallelLayout};
use proptest::prelude::*;
use std::collections::BTreeSet;

fn small_space() -> impl Strategy<Value = ShapeSpace> {
    (
        (200_000u64..4_000_000, 0.0f64..0.5),
        prop_oneof![Just(1u64), Just(2), Just(4)],
        (1u64..4, any::<bool>()),
        prop_oneof![Just(8u64), Just(16), Just(32), Just(64)],
        proptest::sample::subsequence(vec![8u64, 16, 24, 32, 40, 64], 1..4),
        prop_oneof![
            Just(KvHeads::MultiHead),
            Just(KvHeads::GroupSize(2)),
            Just(KvHeads::Fixed(1)),
            Just(KvHeads::Fixed(2))
        ],
        prop_oneof![
            Just(FfnRule::FOUR_D),
            Just(FfnRule::LLAMA),
            Just(FfnRule::Fixed(512))
        ],
        (
            proptest::option::of(1u64..3),
            prop_oneof![Just((0.0, f64::INFINITY)), Just((8.0, 64.0))],
        ),
        (0usize..3, 100u64..3000),
    )
        .prop_map(
            |(
                (target, tol),
                tp,
                (pp, slots),
                m,
                hds,
                kv,
                ffn,
                (fused, (amin, amax)),
                (arch, vocab),
            )| {
                let arch = [
                    Architecture::gpt2(),
                    Architecture::llama(),
                    Architecture::bloom(),
                ][arch];
                ShapeSpace::around(target, tol, arch, vocab)
                    .unwrap()
                    .to_builder()
                    .tp(tp)
                    .pp(pp)
                    .embedding_pipeline_slots(slots)
                    .hidden_multiple(m)
                    .head_dims(hds)
                    .kv_heads(kv)
                    .ffn(ffn)
                    .fused_softmax_micro_batch(fused)
                    .min_aspect_ratio(amin)
                    .max_aspect_ratio(amax)
                    .max_layers(24)
                    .seq_len(128)
                    .build()
                    .unwrap()
            },
        )
}

/// The widest hidden size a shape in the space can have: every layer holds at least its query
/// and output projections, `2·d²` parameters, so `2·d² ≤ max_params`.
fn width_bound(space: &ShapeSpace) -> u64 {
    ((space.max_params() as f64 / 2.0).sqrt()).floor() as u64 + 1
}

/// Every (layers, hidden, heads) with hidden up to [`width_bound`] and a head size of the
/// space (any other head count breaks the head-size rule by definition).
fn brute_force(space: &ShapeSpace) -> BTreeSet<(u64, u64, u64)> {
    let mut out = BTreeSet::new();
    for l in 1..=space.max_layers() {
        for d in 1..=width_bound(space) {
            for &hd in space.head_dims() {
                if d % hd == 0 && space.check(l, d, d / hd).is_some() {
                    out.insert((l, d, d / hd));
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(common::proptest_config("proptest-regressions/search.txt", 24))]

    #[test]
    fn enumeration_equals_brute_force(space in small_space()) {
        let shapes: Vec<_> = space.iter().unwrap().collect();
        let set: BTreeSet<_> = shapes.iter().map(|s| (s.model.num_layers(), s.model.hidden_size(), s.model.num_heads())).collect();
        prop_assert_eq!(set.len(), shapes.len(), "a shape was yielded twice");
        // Nothing beyond the width bound can be valid at these sizes.
        prop_assert!(shapes.iter().all(|s| s.model.hidden_size() <= width_bound(&space)));
        prop_assert_eq!(set, brute_force(&space));
    }
}

proptest! {
    #![proptest_config(common::proptest_config("proptest-regressions/search.txt", 256))]

    #[test]
    fn every_shape_is_valid_and_counted_exactly(space in small_space()) {
        for s in space.iter().unwrap() {
            let m = space.model_of(&s).unwrap();
            prop_assert_eq!(m.total_params().unwrap(), s.params);
            prop_assert!(s.params >= space.min_params() && s.params <= space.max_params());
            prop_assert_eq!(s.model.hidden_size() % space.hidden_multiple(), 0);
            prop_assert!(space.head_dims().contains(&s.model.head_dim()));
            prop_assert_eq!(s.model.num_heads() * s.model.head_dim(), s.model.hidden_size());
            prop_assert_eq!(s.model.vocab_size() % (128 * space.tp()), 0);
            let aspect = s.model.hidden_size() as f64 / s.model.num_layers() as f64;
            prop_assert!(aspect >= space.min_aspect_ratio() && aspect <= space.max_aspect_ratio());
            if let Some(mb) = space.fused_softmax_micro_batch() {
                prop_assert_eq!((s.model.num_heads() / space.tp()) * mb % 4, 0);
            }
            // The parallel layout of the space accepts the model.
            let layout = ParallelLayout::builder().tp(space.tp()).pp(space.pp()).embedding_pipeline_slots(space.embedding_pipeline_slots()).seq_len(space.seq_len()).build().unwrap();
            prop_assert!(layout.validate(&m).is_ok(), "{:?}", layout.validate(&m));
        }
    }

    /// Arbitrary spaces never panic, and every shape they yield is one the space's own
    /// predicate accepts.
    #[test]
    fn arbitrary_spaces_never_panic(target in 1u64..u64::MAX, tol in 0.0f64..0.99, tp in 0u64..300,
        pp in 0u64..300, m in 0u64..5000, hd in proptest::collection::vec(0u64..5000, 0..4), max_layers in 0u64..200) {
        let mut hd = hd;
        hd.sort();
        hd.dedup();
        let built = ShapeSpace::around(target, tol, Architecture::gpt2(), 50257).and_then(|s| {
            s.to_builder().tp(tp).pp(pp).hidden_multiple(m).head_dims(hd).max_layers(max_layers).build()
        });
        if let Ok(s) = built {
            if let Ok(it) = s.iter() {
                for shape in it.take(1000) {
                    let m = shape.model;
                    prop_assert_eq!(s.check(m.num_layers(), m.hidden_size(), m.num_heads()), Some(shape));
                }
            }
        }
    }
}

#[test]
fn bloom_case_lists_bloom_shape() {
    let space = ShapeSpace::bloom_reference().unwrap();
    let shapes: Vec<_> = space.iter().unwrap().collect();
    assert!(shapes.len() > 100, "{}", shapes.len());
    let bloom = shapes
        .iter()
        .find(|s| {
            (
                s.model.hidden_size(),
                s.model.num_layers(),
                s.model.num_heads(),
            ) == (14336, 70, 112)
        })
        .expect("BLOOM's shape is valid in its own search space");
    // BLOOM model card: 176,247,271,424 parameters.
    assert_eq!(bloom.params, 176_247_271_424);
    // The example's default table: one row per (layers, hidden), Levine distance first, head
    // size nearest 128; BLOOM's row is within its first 40.
    let mut scored: Vec<_> = shapes
        .iter()
        .map(|s| search::score(&space, s).unwrap())
        .collect();
    search::rank(&mut scored, &[SortKey::LevineDistance, SortKey::ParamError]);
    let rows = search::one_per_width_depth(&scored, 128);
    let pos = rows
        .iter()
        .position(|r| {
            (
                r.shape.model.hidden_size(),
                r.shape.model.num_layers(),
                r.shape.model.num_heads(),
            ) == (14336, 70, 112)
        })
        .expect("BLOOM's row is shown");
    assert!(pos < 40, "{pos}");
}

#[test]
fn levine_prefers_about_80_layers_for_175b() {
    let l = heuristics::levine_depth_for_params(175e9).unwrap();
    assert!((78.0..=82.0).contains(&l), "{l}");
}

#[test]
fn contradictory_constraints_give_empty_or_error() {
    let s = ShapeSpace::around(1_000_000_000, 0.0, Architecture::gpt2(), 50257).unwrap();
    // Zero tolerance: only exact matches; at 1B exactly there are none.
    assert_eq!(s.iter().unwrap().count(), 0);
    let b = ShapeSpace::around(1_000_000_000, 0.05, Architecture::gpt2(), 50257)
        .unwrap()
        .to_builder()
        .head_dims(vec![64])
        .max_layers(24);
    // More tensor-parallel ranks than any shape has heads.
    let s = b.clone().tp(1 << 20).build().unwrap();
    assert_eq!(s.iter().unwrap().count(), 0);
    // Spaces that break a rule cannot be built.
    assert_eq!(
        b.clone().tp(0).build().unwrap_err(),
        lmshape::Error::ZeroSize { field: "tp" }
    );
    let e = b.clone().head_dims(vec![]).build().unwrap_err().to_string();
    assert!(
        e.contains("allowed head dims are 1 to 4096 positive sizes"),
        "{e}"
    );
    let e = b
        .clone()
        .min_params(10)
        .max_params(5)
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains("parameter range must not be empty"), "{e}");
    // The serde form goes through the same rules.
    let mut json = serde_json::to_value(b.build().unwrap()).unwrap();
    json["tp"] = serde_json::json!(0);
    let e = serde_json::from_value::<ShapeSpace>(json)
        .unwrap_err()
        .to_string();
    assert!(e.contains("tp"), "{e}");
    assert!(matches!(
        ShapeSpace::around(1_000, f64::NAN, Architecture::gpt2(), 1).unwrap_err(),
        lmshape::Error::InvalidValue {
            field: "tolerance",
            ..
        }
    ));
    assert_eq!(
        ShapeSpace::around(0, 0.1, Architecture::gpt2(), 1).unwrap_err(),
        lmshape::Error::ZeroSize {
            field: "target_params"
        }
    );
}

proptest! {
    #![proptest_config(common::proptest_config("proptest-regressions/search.txt", 512))]

    /// The search's fast predicate and the layout rules agree on random models × layouts: with
    /// every non-layout constraint of the space opened up (any head size, any hidden multiple,
    /// any size, any aspect ratio), `ShapeSpace::check` accepts exactly the shapes whose model
    /// `ParallelLayout::validate` accepts on the space's tp, pp and embedding slots (and whose
    /// heads divide the hidden size, as the space's head sizes are `hidden / heads`).
    #[test]
    fn search_check_agrees_with_layout_rules(
        l in 1u64..40, d in 1u64..2048, heads in 1u64..64,
        tp in 1u64..17, pp in 1u64..13, slots in any::<bool>(),
        kv in prop_oneof![Just(KvHeads::MultiHead), (1u64..9).prop_map(KvHeads::GroupSize), (1u64..9).prop_map(KvHeads::Fixed)],
        ffn in prop_oneof![Just(FfnRule::FOUR_D), Just(FfnRule::LLAMA), (1u64..5000).prop_map(FfnRule::Fixed)],
        fused in proptest::option::of(1u64..5),
        vocab in 1u64..60_000, pad in any::<bool>(),
    ) {
        let s = ShapeSpace::around(1, 0.0, Architecture::llama(), vocab)
            .unwrap()
            .to_builder()
            .min_params(0)
            .max_params(u64::MAX)
            .min_layers(1)
            .max_layers(lmshape::search::MAX_LAYER_SPAN)
            .hidden_multiple(1)
            .head_dims((1..=2048).collect())
            .tp(tp)
            .pp(pp)
            .embedding_pipeline_slots(slots)
            .kv_heads(kv)
            .ffn(ffn)
            .fused_softmax_micro_batch(fused)
            .pad_vocab(pad)
            .seq_len(64)
            .build()
            .unwrap();
        let got = s.check(l, d, heads);
        // The model the space would build, by hand: kv heads from the rule, ffn from the rule.
        let kv_heads = match kv {
            KvHeads::MultiHead => Some(heads),
            KvHeads::GroupSize(g) => (heads % g == 0).then(|| heads / g),
            KvHeads::Fixed(k) => (k <= heads && heads % k == 0).then_some(k),
        };
        let ffn_size = ffn.width(d).filter(|&f| f > 0);
        let expected = match (d % heads == 0, kv_heads, ffn_size) {
            (true, Some(kv_heads), Some(ffn_size)) => {
                let vocab_rows = if pad { vocab.div_ceil(128 * tp) * 128 * tp } else { vocab };
                let m = lmshape::Transformer::builder().vocab_size(vocab_rows).hidden_size(d).num_layers(l).num_heads(heads).num_kv_heads(kv_heads).head_dim(d / heads).ffn_size(ffn_size).max_positions(64).arch(Architecture::llama()).build().unwrap();
                let layout = ParallelLayout::builder().tp(tp).pp(pp).embedding_pipeline_slots(slots).seq_len(64).build().unwrap();
                let fused_ok = fused.is_none_or(|mb| (heads / tp) * mb % 4 == 0);
                layout.validate(&m).is_ok() && fused_ok
            }
            _ => false,
        };
        prop_assert_eq!(got.is_some(), expected, "check {:?}", got);
    }
}

/// Inputs that used to panic (division by zero) are rejected when the space is built: a zero
/// hidden multiple, and a zero pipeline degree without vocabulary padding.
#[test]
fn zero_settings_are_rejected_without_panicking() {
    let b = ShapeSpace::around(1_000_000, 0.5, Architecture::gpt2(), 1000)
        .unwrap()
        .to_builder();
    assert!(matches!(
        b.clone().hidden_multiple(0).build().unwrap_err(),
        lmshape::Error::ZeroSize {
            field: "hidden_multiple"
        }
    ));
    assert!(matches!(
        b.pp(0).pad_vocab(false).build().unwrap_err(),
        lmshape::Error::ZeroSize { field: "pp" }
    ));
}

/// Fine-grained mixture-of-experts shapes: a token's experts are exactly as wide as the
/// backbone's MLP; the active count is a brute-force recount (total minus the routed experts a
/// token skips); every shape splits over its space's expert layout; expansion and granularity
/// are what the settings say.
#[test]
fn moe_shapes_match_their_backbones_and_recount() {
    use lmshape::search::MoeSpace;
    let dense = ShapeSpace::around(7_000_000_000, 0.1, Architecture::llama(), 32000)
        .unwrap()
        .to_builder()
        .seq_len(4096)
        .build()
        .unwrap();
    let space = MoeSpace {
        ep: 8,
        ..MoeSpace::new(dense.clone())
    };
    let mut n = 0;
    for m in space.iter().unwrap().take(2000) {
        n += 1;
        let model = m.shape.model;
        let moe = model.moe().unwrap();
        let g = m.granularity;
        assert_eq!(
            (moe.top_k + moe.num_shared_experts) * moe.expert_ffn_size,
            model.ffn_size()
        );
        assert_eq!(model.ffn_size() / moe.expert_ffn_size, g);
        assert!(moe.top_k < moe.num_experts && moe.num_experts % 8 == 0);
        let c = model.param_counts().unwrap();
        let per_expert = c.routed_expert_params / (model.num_layers() * moe.num_experts);
        let skipped = per_expert * (moe.num_experts - moe.top_k) * model.num_layers();
        assert_eq!(m.active_params, c.total_params - skipped);
        assert!(m.active_in(dense.size_basis()) >= dense.min_params());
        assert!(m.active_in(dense.size_basis()) <= dense.max_params());
        let layout = ParallelLayout::builder()
            .dp(8)
            .ep(8)
            .etp(Some(1))
            .global_batch(8)
            .seq_len(4096)
            .build()
            .unwrap();
        layout.validate(&model).unwrap();
    }
    assert!(n > 100, "{n}");
}

/// With balanced pipelines the enumeration keeps every evenly split shape and adds the depths
/// that do not divide the stages; each of those validates on a balanced layout.
#[test]
fn balanced_pipelines_add_uneven_depths() {
    let even = ShapeSpace::bloom_reference().unwrap();
    let balanced = even.to_builder().balanced_pipeline(true).build().unwrap();
    let key = |s: &search::Shape| {
        (
            s.model.num_layers(),
            s.model.hidden_size(),
            s.model.num_heads(),
        )
    };
    let a: BTreeSet<_> = even.iter().unwrap().map(|s| key(&s)).collect();
    let b: Vec<search::Shape> = balanced.iter().unwrap().collect();
    let keys: BTreeSet<_> = b.iter().map(key).collect();
    assert!(a.is_subset(&keys) && keys.len() > a.len());
    for s in b.iter().filter(|s| (s.model.num_layers() + 2) % 12 != 0) {
        let layout = ParallelLayout::builder()
            .tp(4)
            .pp(12)
            .dp(8)
            .global_batch(2048)
            .embedding_pipeline_slots(true)
            .balanced_pipeline(true)
            .build()
            .unwrap();
        layout.validate(&s.model).unwrap();
    }
}
