//! Property tests of the model description, parameter counts, FLOPs and config reading.

mod common;

use lmshape::flops::{self, FlopsConvention};
use lmshape::model::hf::{SUPPORTED_MODEL_TYPES, from_hf_config};
use lmshape::{
    Architecture, BlockKind, LinearBiases, MlpKind, NormKind, PositionKind, Recompute, Transformer,
    model::{Attention, LatentAttention, LocalAttention, Moe, QkNorm},
};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn arch_strategy() -> impl Strategy<Value = Architecture> {
    (
        prop_oneof![Just(MlpKind::Standard), Just(MlpKind::Gated)],
        prop_oneof![
            Just(NormKind::LayerNorm),
            Just(NormKind::RmsNorm),
            Just(NormKind::LayerNormNoBias),
            Just(NormKind::NonParametric)
        ],
        prop_oneof![
            (0u64..4).prop_map(|offset| PositionKind::Learned { offset }),
            Just(PositionKind::Rotary),
            Just(PositionKind::Alibi),
            Just(PositionKind::None)
        ],
        (any::<bool>(), any::<bool>(), any::<bool>()),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        prop_oneof![
            Just(BlockKind::Sequential),
            Just(BlockKind::Sandwich),
            any::<bool>().prop_map(|shared_norm| BlockKind::Parallel { shared_norm })
        ],
        proptest::option::of(1u64..2048),
        (
            prop_oneof![
                Just(QkNorm::None),
                Just(QkNorm::PerHead),
                Just(QkNorm::Full)
            ],
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                mlp,
                norm,
                position,
                (qkv, attn_out, mlp_b),
                (tied, en, fin),
                block,
                proj,
                (qk_norm, sinks),
            )| {
                Architecture {
                    mlp,
                    norm,
                    position,
                    biases: LinearBiases {
                        qkv,
                        attn_out,
                        mlp: mlp_b,
                    },
                    tied_embeddings: tied,
                    embedding_norm: en,
                    block,
                    final_norm: fin,
                    embed_proj_dim: proj,
                    qk_norm,
                    attention_sinks: sinks,
                }
            },
        )
}

/// Valid models by construction: heads = kv heads × group size.
fn model_strategy() -> impl Strategy<Value = Transformer> {
    (
        1u64..300_000,
        1u64..16_384,
        1u64..128,
        1u64..16,
        1u64..16,
        1u64..512,
        1u64..65_536,
        1u64..65_536,
        arch_strategy(),
    )
        .prop_map(|(v, d, l, kv, group, hd, f, p, arch)| {
            Transformer::builder()
                .vocab_size(v)
                .hidden_size(d)
                .num_layers(l)
                .num_heads(kv * group)
                .num_kv_heads(kv)
                .head_dim(hd)
                .ffn_size(f)
                .max_positions(p)
                .arch(arch)
                .build()
                .unwrap()
        })
}

/// Models of every family: [`model_strategy`]'s, some with latent attention, a mixture of
/// experts or sliding-window layers.
fn family_strategy() -> impl Strategy<Value = Transformer> {
    (
        model_strategy(),
        proptest::option::of((
            proptest::option::of(1u64..512),
            1u64..512,
            1u64..128,
            1u64..64,
            1u64..128,
        )),
        proptest::option::of((
            (1u64..64, 1u64..8, 1u64..4096),
            (0u64..3, 0u64..4096, any::<bool>()),
            (any::<bool>(), any::<bool>(), any::<bool>()),
            (0u64..4, 1u64..4, 0u64..3),
        )),
        proptest::option::of((1u64..8192, 1u64..8, 0u64..8)),
        0u64..3,
    )
        .prop_map(|(m, mla, moe, local, mtp)| {
            let mut m = m;
            if let Some((
                q_lora_rank,
                kv_lora_rank,
                qk_nope_head_dim,
                qk_rope_head_dim,
                v_head_dim,
            )) = mla
            {
                m = m
                    .with_latent_attention(LatentAttention {
                        q_lora_rank,
                        kv_lora_rank,
                        qk_nope_head_dim,
                        qk_rope_head_dim,
                        v_head_dim,
                    })
                    .unwrap();
            }
            if let Some((
                (experts, k, f_e),
                (shared, f_s, gate),
                (rb, eb, cb),
                (first, period, offset),
            )) = moe
            {
                m = m
                    .with_moe(Moe {
                        num_experts: experts,
                        top_k: k.min(experts),
                        expert_ffn_size: f_e,
                        num_shared_experts: shared,
                        shared_ffn_size: if shared == 0 { 0 } else { f_s },
                        shared_expert_gate: gate,
                        router_bias: rb,
                        expert_biases: eb,
                        score_correction_bias: cb,
                        first_dense_layers: first.min(m.num_layers()),
                        layer_period: period,
                        layer_offset: offset,
                    })
                    .unwrap();
            }
            if let Some((window, period, local)) = local {
                m = m
                    .with_local_attention(LocalAttention {
                        window,
                        period,
                        local_layers: local.min(period),
                    })
                    .unwrap();
            }
            m.with_mtp_layers(mtp).unwrap()
        })
}

/// Parameters of a norm over `x` values, by hand.
fn norm_of(m: &Transformer, x: u64) -> u64 {
    match m.arch().norm {
        NormKind::LayerNorm => 2 * x,
        NormKind::RmsNorm | NormKind::LayerNormNoBias => x,
        NormKind::NonParametric => 0,
    }
}

/// One tensor at a time, layer by layer, as the Hugging Face modules list them: (total,
/// active). Written from the modules, not from the crate's formulas.
fn brute_force_count(m: &Transformer) -> (u64, u64) {
    let d = m.hidden_size();
    let (h, kvh, hd) = (m.num_heads(), m.num_kv_heads(), m.head_dim());
    let gated = m.arch().mlp == MlpKind::Gated;
    let mlp = |f: u64, bias: bool| -> u64 {
        let mut t = vec![d * f, f * d];
        if gated {
            t.push(d * f);
        }
        if bias {
            t.push(f);
            t.push(d);
            if gated {
                t.push(f);
            }
        }
        t.iter().sum()
    };
    let mut total = 0u64;
    let mut unused = 0u64;
    for i in 0..m.num_layers() {
        let mut tensors: Vec<u64> = Vec::new();
        match m.attention() {
            Attention::Standard => {
                tensors.extend([d * h * hd, d * kvh * hd, d * kvh * hd, h * hd * d]);
                if m.arch().biases.qkv {
                    tensors.extend([h * hd, kvh * hd, kvh * hd]);
                }
                match m.arch().qk_norm {
                    QkNorm::None => {}
                    QkNorm::PerHead => tensors.extend([norm_of(m, hd), norm_of(m, hd)]),
                    QkNorm::Full => tensors.extend([norm_of(m, h * hd), norm_of(m, kvh * hd)]),
                }
            }
            Attention::MultiLatent(a) => {
                match a.q_lora_rank {
                    Some(r) => tensors.extend([
                        d * r,
                        norm_of(m, r),
                        r * h * (a.qk_nope_head_dim + a.qk_rope_head_dim),
                    ]),
                    None => tensors.push(d * h * (a.qk_nope_head_dim + a.qk_rope_head_dim)),
                }
                tensors.extend([
                    d * (a.kv_lora_rank + a.qk_rope_head_dim),
                    norm_of(m, a.kv_lora_rank),
                    a.kv_lora_rank * h * (a.qk_nope_head_dim + a.v_head_dim),
                    h * a.v_head_dim * d,
                ]);
            }
        }
        if m.arch().biases.attn_out {
            tensors.push(d);
        }
        if m.arch().attention_sinks {
            tensors.push(h);
        }
        // The layer's norms as the modules hold them: one shared by both branches (Falcon-7B),
        // four around the branches (Gemma 2/3), two otherwise.
        let norms = match m.arch().block {
            BlockKind::Parallel { shared_norm: true } => 1,
            BlockKind::Sandwich => 4,
            BlockKind::Sequential | BlockKind::Parallel { shared_norm: false } => 2,
        };
        for _ in 0..norms {
            tensors.push(norm_of(m, d));
        }
        let is_moe = m.moe().is_some_and(|e| {
            i >= e.first_dense_layers && (i + e.layer_offset) % e.layer_period == 0
        });
        match m.moe() {
            Some(e) if is_moe => {
                tensors.push(d * e.num_experts);
                if e.router_bias {
                    tensors.push(e.num_experts);
                }
                if e.score_correction_bias {
                    tensors.push(e.num_experts);
                }
                for x in 0..e.num_experts {
                    let one = mlp(e.expert_ffn_size, e.expert_biases);
                    tensors.push(one);
                    if x >= e.top_k {
                        unused += one;
                    }
                }
                if e.shared_ffn_size > 0 {
                    tensors.push(mlp(e.shared_ffn_size, false));
                }
                if e.shared_ffn_size > 0 && e.shared_expert_gate {
                    tensors.push(d);
                }
            }
            _ => tensors.push(mlp(m.ffn_size(), m.arch().biases.mlp)),
        }
        total += tensors.iter().sum::<u64>();
    }
    let e = m.arch().embed_proj_dim.unwrap_or(d);
    total += m.vocab_size() * e;
    if !m.arch().tied_embeddings {
        total += m.vocab_size() * e;
    }
    if let PositionKind::Learned { offset } = m.arch().position {
        total += (m.max_positions() + offset) * d;
    }
    if m.arch().embedding_norm {
        total += norm_of(m, e);
    }
    if e != d {
        total += 2 * e * d;
    }
    if m.arch().final_norm {
        total += norm_of(m, d);
    }
    (total, total - unused)
}

proptest! {
    #![proptest_config(common::proptest_config("proptest-regressions/model_properties.txt", 256))]

    /// Every family: the exact counts equal a layer-by-layer recount, the components add up,
    /// and active ≤ total.
    #[test]
    fn every_family_recounts_exactly(m in family_strategy()) {
        let c = m.param_counts().unwrap();
        let (total, active) = brute_force_count(&m);
        prop_assert_eq!(c.total_params, total);
        prop_assert_eq!(c.active_params, active);
        let sizes = lmshape::params::sizes(&m).unwrap();
        prop_assert_eq!(sizes.total_params, c.total_params);
        prop_assert_eq!(sizes.non_embedding_params, c.non_embedding_params);
        prop_assert!(c.active_params <= c.total_params);
        prop_assert_eq!(c.active_params - c.active_non_embedding_input_params, c.token_embedding_params);
        let sum = c.token_embedding_params + c.position_embedding_params + c.embedding_norm_params
            + c.embedding_projection_params + c.attention_params + c.mlp_params + c.router_params
            + c.routed_expert_params + c.shared_expert_params + c.layer_norm_params
            + c.final_norm_params + c.output_head_params;
        prop_assert_eq!(sum, c.total_params);
        // Serde keeps every knob and validates.
        let back: Transformer = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        prop_assert_eq!(back, m);
    }

    /// More experts never mean fewer parameters; routing to every expert makes active = total.
    #[test]
    fn expert_properties(m in family_strategy(), extra in 1u64..8) {
        if let Some(moe) = m.moe() {
            let base = m.param_counts().unwrap();
            let more = m.with_moe(Moe { num_experts: moe.num_experts + extra, ..moe }).unwrap();
            prop_assert!(more.param_counts().unwrap().total_params >= base.total_params);
            let all = m.with_moe(Moe { top_k: moe.num_experts, ..moe }).unwrap().param_counts().unwrap();
            prop_assert_eq!(all.active_params, all.total_params);
        } else {
            let c = m.param_counts().unwrap();
            prop_assert_eq!(c.active_params, c.total_params);
        }
    }

    #[test]
    fn components_add_up(m in model_strategy()) {
        let c = m.param_counts().unwrap();
        let sum = c.token_embedding_params + c.position_embedding_params + c.embedding_norm_params
            + c.embedding_projection_params + c.attention_params + c.mlp_params
            + c.layer_norm_params + c.final_norm_params + c.output_head_params;
        prop_assert_eq!(sum, c.total_params);
        prop_assert_eq!(c.embedding_params + c.non_embedding_params, c.total_params);
        prop_assert_eq!(c.layer.total_params() * m.num_layers(),
            c.attention_params + c.mlp_params + c.layer_norm_params);
    }

    /// Tensor-parallel shards put back together: every split tensor once, every replicated one
    /// (row-parallel biases, norms) on each of the `tp` ranks.
    #[test]
    fn tensor_parallel_shards_add_up(m in model_strategy(), tp in prop::sample::select(vec![2u64, 4, 8])) {
        // Heads, kv heads and FFN width made to split over tp.
        let m = Transformer::builder().vocab_size(m.vocab_size()).hidden_size(m.hidden_size()).num_layers(m.num_layers()).num_heads(m.num_heads() * tp).num_kv_heads(m.num_kv_heads() * tp).head_dim(m.head_dim()).ffn_size(m.ffn_size() * tp).max_positions(m.max_positions()).arch(m.arch()).build().unwrap();
        let whole = lmshape::params::layer_params(&m).unwrap().total_params();
        let rank = lmshape::params::layer_params_on_rank(&m, tp).unwrap().total_params();
        let d = m.hidden_size();
        let norm = match m.arch().norm {
            NormKind::LayerNorm => 2 * d,
            NormKind::LayerNormNoBias | NormKind::RmsNorm => d,
            NormKind::NonParametric => 0,
        };
        let norms = match m.arch().block {
            BlockKind::Parallel { shared_norm: true } => 1,
            BlockKind::Sandwich => 4,
            _ => 2,
        };
        // Per-head q/k norms are shared by the heads, so every rank keeps them whole.
        let qk = if m.arch().qk_norm == QkNorm::PerHead { 2 * norm_of(&m, m.head_dim()) } else { 0 };
        let replicated = u64::from(m.arch().biases.attn_out) * d + u64::from(m.arch().biases.mlp) * d
            + norms * norm + qk;
        prop_assert_eq!(rank * tp, whole + (tp - 1) * replicated);
    }

    #[test]
    fn bigger_never_means_fewer(m in model_strategy(), extra in 1u64..8) {
        let base = m.total_params().unwrap();
        let more_layers = m.to_builder().num_layers(m.num_layers() + extra).build().unwrap();
        prop_assert!(more_layers.total_params().unwrap() >= base);
        let wider_ffn = m.to_builder().ffn_size(m.ffn_size() + extra).build().unwrap();
        prop_assert!(wider_ffn.total_params().unwrap() >= base);
        // One more kv group keeps heads divisible by kv heads.
        let group = m.num_heads() / m.num_kv_heads();
        let more_heads = m.to_builder().num_heads(m.num_heads() + extra * group).num_kv_heads(m.num_kv_heads() + extra).build();
        prop_assert!(more_heads.is_ok());
        let more_heads = more_heads.unwrap();
        prop_assert!(more_heads.total_params().unwrap() >= base);
        let more_query_heads = m.to_builder().num_heads(m.num_heads() + extra * m.num_kv_heads()).build().unwrap();
        prop_assert!(more_query_heads.total_params().unwrap() >= base);
    }

    #[test]
    fn json_round_trips(m in model_strategy()) {
        let text = serde_json::to_string(&m).unwrap();
        let back: Transformer = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back, m);
    }

    #[test]
    fn flops_are_positive_and_ordered(m in model_strategy(), seq in 1u64..32_768) {
        let none = flops::matmul_flops_per_token(&m, &FlopsConvention::megatron(seq, Recompute::None)).unwrap();
        let sel = flops::matmul_flops_per_token(&m, &FlopsConvention::megatron(seq, Recompute::Selective)).unwrap();
        let full = flops::matmul_flops_per_token(&m, &FlopsConvention::megatron(seq, Recompute::Full)).unwrap();
        prop_assert!(none.forward_flops > 0.0 && none.forward_flops.is_finite());
        prop_assert!(none.training_flops() <= sel.training_flops());
        prop_assert!(sel.training_flops() <= full.training_flops());
        prop_assert_eq!(none.backward_flops, 2.0 * none.forward_flops);
        let causal = flops::matmul_flops_per_token(&m, &FlopsConvention { causal: true, ..FlopsConvention::megatron(seq, Recompute::None) }).unwrap();
        prop_assert!(causal.forward_flops < none.forward_flops);
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (0u64..100_000).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-z_]{0,12}".prop_map(Value::String),
        Just(Value::Array(vec![Value::from(1)])),
        Just(Value::Object(Map::new())),
    ]
}

const KEYS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "n_embd",
    "n_embed",
    "n_layer",
    "num_hidden_layers",
    "n_head",
    "num_attention_heads",
    "num_key_value_heads",
    "num_kv_heads",
    "n_head_kv",
    "head_dim",
    "intermediate_size",
    "ffn_dim",
    "n_inner",
    "ffn_hidden_size",
    "max_position_embeddings",
    "n_positions",
    "seq_length",
    "tie_word_embeddings",
    "attention_bias",
    "mlp_bias",
    "bias",
    "enable_bias",
    "word_embed_proj_dim",
    "do_layer_norm_before",
    "_remove_final_layer_norm",
    "layer_norm_elementwise_affine",
    "multi_query",
    "parallel_attn",
    "new_decoder_architecture",
    "num_ln_in_parallel_attn",
    "alibi",
    "use_parallel_residual",
];

proptest! {
    #![proptest_config(common::proptest_config("proptest-regressions/model_properties.txt", 256))]

    #[test]
    fn any_json_object_is_ok_or_typed_error(
        model_type in prop_oneof![
            proptest::sample::select(SUPPORTED_MODEL_TYPES.to_vec()).prop_map(|s| Value::String(s.to_string())),
            json_value(),
        ],
        entries in proptest::collection::vec((proptest::sample::select(KEYS), json_value()), 0..12),
        small_sizes in proptest::collection::vec((proptest::sample::select(KEYS), 0u64..64), 0..8),
    ) {
        let mut obj = Map::new();
        obj.insert("model_type".into(), model_type);
        for (k, v) in entries { obj.insert(k.to_string(), v); }
        for (k, v) in small_sizes { obj.insert(k.to_string(), Value::from(v)); }
        // Either a valid model whose counts work, or a typed error.
        if let Ok(m) = from_hf_config(&Value::Object(obj)) {
            prop_assert!(m.param_counts().is_ok());
        }
    }
}

proptest! {
    #![proptest_config(common::proptest_config("proptest-regressions/model_properties.txt", 256))]

    /// The closed-form layer counts agree with a layer-by-layer recount over any range.
    #[test]
    fn closed_form_layer_counts_match_a_recount(
        window in 1u64..5000, period in 1u64..8, local in 0u64..8,
        first_dense in 0u64..4, moe_period in 1u64..4, offset in 0u64..4, start in 0u64..40, len in 0u64..90,
    ) {
        let w = lmshape::model::LocalAttention { window, period, local_layers: local.min(period) };
        let end = start + len;
        let brute = (start..end).filter(|&i| w.is_local_layer(i)).count() as u64;
        prop_assert_eq!(w.local_layer_count(end) - w.local_layer_count(start), brute);
        let moe = lmshape::model::Moe { first_dense_layers: first_dense, layer_period: moe_period,
            layer_offset: offset, ..lmshape::model::Moe::routed(8, 2, 64) };
        let brute = (start..end).filter(|&i| moe.is_moe_layer(i)).count() as u64;
        prop_assert_eq!(moe.moe_layers_in(start..end), brute);
    }
}

fn vision_strategy() -> impl Strategy<Value = lmshape::model::vision::VisionEncoder> {
    use lmshape::model::vision::{ProjectorKind, TowerKind, VisionEncoder, VisionTower};
    let kind = prop_oneof![
        any::<bool>().prop_map(|use_head| TowerKind::Siglip { use_head }),
        Just(TowerKind::Clip),
        Just(TowerKind::Pixtral),
        Just(TowerKind::Qwen2Vl),
        Just(TowerKind::Qwen25Vl),
    ];
    let projector = prop_oneof![
        (1u64..1024).prop_map(|tokens_per_image| ProjectorKind::Gemma3 { tokens_per_image }),
        (1u64..4, any::<bool>(), any::<bool>()).prop_map(
            |(feature_layers, bias, image_newline)| {
                ProjectorKind::Llava {
                    feature_layers,
                    bias,
                    image_newline,
                }
            }
        ),
        (1u64..4, any::<bool>()).prop_map(|(spatial_merge, bias)| ProjectorKind::Mistral3 {
            spatial_merge,
            bias
        }),
        (1u64..4).prop_map(|spatial_merge| ProjectorKind::QwenMerger { spatial_merge }),
    ];
    (
        kind,
        projector,
        1u64..4096,
        1u64..16384,
        1u64..64,
        1u64..32,
        1u64..64,
        0u64..2048,
        1u64..8192,
    )
        .prop_map(
            |(kind, projector, h, i, layers, heads, patch, image, text)| VisionEncoder {
                tower: VisionTower {
                    kind,
                    hidden_size: h,
                    intermediate_size: i,
                    num_layers: layers,
                    num_heads: heads,
                    patch_size: patch,
                    image_size: (image > 0).then_some(image),
                    num_channels: 3,
                    temporal_patch_size: 1,
                },
                projector,
                text_hidden_size: text,
            },
        )
}

proptest! {
    #![proptest_config(common::proptest_config("proptest-regressions/model_properties.txt", 256))]

    /// A vision tower only adds parameters: every tower and projector counts something, one
    /// layer more counts more, and a checkpoint's total is its language model plus both. Its
    /// FLOPs per image are positive and grow with the image.
    #[test]
    fn vision_towers_only_add(v in vision_strategy()) {
        use lmshape::model::vision::VisionTower;
        let c = v.params().unwrap();
        prop_assert!(c.vision_encoder_params > 0 && c.multimodal_projector_params > 0);
        let deeper = lmshape::model::vision::VisionEncoder {
            tower: VisionTower { num_layers: v.tower.num_layers + 1, ..v.tower },
            ..v
        };
        prop_assert!(deeper.params().unwrap().vision_encoder_params > c.vision_encoder_params);
        let side = v.image_side().max(v.tower.patch_size);
        let f = v.forward_flops_per_image(side).unwrap();
        prop_assert!(f > 0.0 && f.is_finite());
        prop_assert!(v.forward_flops_per_image(side * 2).unwrap() > f);
        prop_assert!(v.forward_flops_per_image(v.tower.patch_size - 1).is_err() || v.tower.patch_size == 1);
    }
}
