//! `GptOssConfig` (`modeling_gpt_oss.py`): grouped-query attention with biases and a learned
//! sink per head, alternating sliding-window (128 tokens) and full attention layers
//! (`layer_types`), every layer a mixture of `num_local_experts` experts of width
//! `intermediate_size` (fused gate/up `d×2f` and down `f×d`, each with a bias) behind a router
//! with a bias; RMSNorm; untied head.

use super::{Count, or, pattern_from_layer_types, with_pattern};
use crate::error::{Error, Result};
use crate::model::{Architecture, LinearBiases, LocalAttention, Moe, Transformer};
use serde::Deserialize;

/// The keys of a gpt-oss `config.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GptOssConfig {
    /// Width (default 2880).
    pub hidden_size: Option<Count>,
    /// Expert width (default 2880).
    pub intermediate_size: Option<Count>,
    /// Layers (default 36).
    pub num_hidden_layers: Option<Count>,
    /// Query heads (default 64).
    pub num_attention_heads: Option<Count>,
    /// Key/value heads (default 8).
    pub num_key_value_heads: Option<Count>,
    /// Head width (default 64).
    pub head_dim: Option<Count>,
    /// Experts (default 128).
    pub num_local_experts: Option<Count>,
    /// Experts per token (default 4).
    pub num_experts_per_tok: Option<Count>,
    /// The same, as the released configs also write it.
    pub experts_per_token: Option<Count>,
    /// Sliding window (default 128).
    pub sliding_window: Option<Count>,
    /// Which layers slide.
    pub layer_types: Option<Vec<String>>,
    /// Biases on q, k, v and o (default true).
    pub attention_bias: Option<bool>,
    /// Vocabulary (default 201088).
    pub vocab_size: Option<Count>,
    /// Context (default 131072).
    pub max_position_embeddings: Option<Count>,
    /// Tied head (default false).
    pub tie_word_embeddings: Option<bool>,
}

impl TryFrom<GptOssConfig> for Transformer {
    type Error = Error;

    fn try_from(c: GptOssConfig) -> Result<Transformer> {
        let f = or(c.intermediate_size, 2880);
        let bias = c.attention_bias.unwrap_or(true);
        let arch = Architecture {
            tied_embeddings: c.tie_word_embeddings.unwrap_or(false),
            biases: LinearBiases {
                qkv: bias,
                attn_out: bias,
                mlp: false,
            },
            attention_sinks: true,
            ..Architecture::llama()
        };
        let m = Transformer::builder()
            .vocab_size(or(c.vocab_size, 201088))
            .hidden_size(or(c.hidden_size, 2880))
            .num_layers(or(c.num_hidden_layers, 36))
            .num_heads(or(c.num_attention_heads, 64))
            .num_kv_heads(or(c.num_key_value_heads, 8))
            .head_dim(or(c.head_dim, 64))
            .ffn_size(f)
            .max_positions(or(c.max_position_embeddings, 131072))
            .arch(arch)
            .build()?
            .with_moe(Moe {
                router_bias: true,
                expert_biases: true,
                ..Moe::routed(
                    or(c.num_local_experts, 128),
                    or(c.num_experts_per_tok.or(c.experts_per_token), 4),
                    f,
                )
            })?;
        let window = or(c.sliding_window, 128);
        let pattern = match &c.layer_types {
            Some(types) => pattern_from_layer_types(types, window, m.num_layers)?,
            // The released models alternate, starting with a sliding layer.
            None => Some(LocalAttention {
                window,
                period: 2,
                local_layers: 1,
            }),
        };
        with_pattern(m, pattern)
    }
}
