//! Property tests of the model description, parameter counts, FLOPs and config reading.

mod common;

use lmshape::flops::{self, FlopsConvention};
use lmshape::model::hf::{SUPPORTED_MODEL_TYPES, from_hf_config};
use lmshape::{
    Architecture, BlockKind, LinearBiases, MlpKind, NormKind, PositionKind, Recompute, Transformer,
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
            any::<bool>().prop_map(|shared_norm| BlockKind::Parallel { shared_norm })
        ],
        proptest::option::of(1u64..2048),
    )
        .prop_map(
            |(mlp, norm, position, (qkv, attn_out, mlp_b), (tied, en, fin), block, proj)| {
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
            Transformer::new(v, d, l, kv * group, kv, hd, f, p, arch).unwrap()
        })
}

proptest! {
    #![proptest_config(common::proptest_config("proptest-regressions/model_properties.txt", 256))]

    #[test]
    fn components_add_up(m in model_strategy()) {
        let c = m.param_counts().unwrap();
        let sum = c.token_embedding_params + c.position_embedding_params + c.embedding_norm_params
            + c.embedding_projection_params + c.attention_params + c.mlp_params
            + c.layer_norm_params + c.final_norm_params + c.output_head_params;
        prop_assert_eq!(sum, c.total_params);
        prop_assert_eq!(c.embedding_params + c.non_embedding_params, c.total_params);
        prop_assert_eq!(c.layer.total_params() * m.num_layers,
            c.attention_params + c.mlp_params + c.layer_norm_params);
    }

    /// Tensor-parallel shards put back together: every split tensor once, every replicated one
    /// (row-parallel biases, norms) on each of the `tp` ranks.
    #[test]
    fn tensor_parallel_shards_add_up(m in model_strategy(), tp in prop::sample::select(vec![2u64, 4, 8])) {
        // Heads, kv heads and FFN width made to split over tp.
        let m = Transformer::new(m.vocab_size, m.hidden_size, m.num_layers, m.num_heads * tp,
            m.num_kv_heads * tp, m.head_dim, m.ffn_size * tp, m.max_positions, m.arch).unwrap();
        let whole = lmshape::params::layer_params(&m).unwrap().total_params();
        let rank = lmshape::params::layer_params_on_rank(&m, tp).unwrap().total_params();
        let d = m.hidden_size;
        let norm = match m.arch.norm {
            NormKind::LayerNorm => 2 * d,
            NormKind::LayerNormNoBias | NormKind::RmsNorm => d,
            NormKind::NonParametric => 0,
        };
        let norms = match m.arch.block {
            BlockKind::Parallel { shared_norm: true } => 1,
            _ => 2,
        };
        let replicated = u64::from(m.arch.biases.attn_out) * d + u64::from(m.arch.biases.mlp) * d
            + norms * norm;
        prop_assert_eq!(rank * tp, whole + (tp - 1) * replicated);
    }

    /// A brute-force recount: one tensor at a time, as the modules of the layer list them.
    #[test]
    fn brute_force_layer_recount(m in model_strategy()) {
        let d = m.hidden_size;
        let mut tensors: Vec<u64> = vec![
            d * m.num_heads * m.head_dim,       // q
            d * m.num_kv_heads * m.head_dim,    // k
            d * m.num_kv_heads * m.head_dim,    // v
            m.num_heads * m.head_dim * d,       // o
            m.ffn_size * d,                     // down
            d * m.ffn_size,                     // up
        ];
        if m.arch.mlp == MlpKind::Gated { tensors.push(d * m.ffn_size); }
        if m.arch.biases.qkv {
            tensors.extend([m.num_heads * m.head_dim, m.num_kv_heads * m.head_dim, m.num_kv_heads * m.head_dim]);
        }
        if m.arch.biases.attn_out { tensors.push(d); }
        if m.arch.biases.mlp {
            tensors.push(d);
            tensors.push(m.ffn_size);
            if m.arch.mlp == MlpKind::Gated { tensors.push(m.ffn_size); }
        }
        for _ in 0..m.arch.block.norms_per_layer() {
            match m.arch.norm {
                NormKind::LayerNorm => { tensors.push(d); tensors.push(d); }
                NormKind::RmsNorm | NormKind::LayerNormNoBias => tensors.push(d),
                NormKind::NonParametric => {}
            }
        }
        prop_assert_eq!(tensors.iter().sum::<u64>(), m.param_counts().unwrap().layer.total_params());
    }

    #[test]
    fn bigger_never_means_fewer(m in model_strategy(), extra in 1u64..8) {
        let base = m.total_params().unwrap();
        let more_layers = Transformer { num_layers: m.num_layers + extra, ..m };
        prop_assert!(more_layers.total_params().unwrap() >= base);
        let wider_ffn = Transformer { ffn_size: m.ffn_size + extra, ..m };
        prop_assert!(wider_ffn.total_params().unwrap() >= base);
        // One more kv group keeps heads divisible by kv heads.
        let group = m.num_heads / m.num_kv_heads;
        let more_heads = Transformer { num_heads: m.num_heads + extra * group, num_kv_heads: m.num_kv_heads + extra, ..m };
        prop_assert!(more_heads.validate().is_ok());
        prop_assert!(more_heads.total_params().unwrap() >= base);
        let more_query_heads = Transformer { num_heads: m.num_heads + extra * m.num_kv_heads, ..m };
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
            proptest::sample::select(SUPPORTED_MODEL_TYPES).prop_map(|s| Value::String(s.to_string())),
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
