//! `GPTNeoXConfig` (`configuration_gpt_neox.py`): untied `embed_out` by default,
//! `attention_bias` (default true) on `query_key_value` and `dense`, MLP biases always, two
//! LayerNorms per layer, parallel residual by default.

use super::{Count, head_dim_of, or};
use crate::error::{Error, Result};
use crate::model::{Architecture, BlockKind, LinearBiases, Transformer};
use serde::Deserialize;

/// The keys of a GPT-NeoX / Pythia `config.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GptNeoXConfig {
    /// Width (default 6144).
    pub hidden_size: Option<Count>,
    /// Heads (default 64).
    pub num_attention_heads: Option<Count>,
    /// Layers (default 44).
    pub num_hidden_layers: Option<Count>,
    /// MLP width (default 24576).
    pub intermediate_size: Option<Count>,
    /// Context (default 2048).
    pub max_position_embeddings: Option<Count>,
    /// Vocabulary (default 50432).
    pub vocab_size: Option<Count>,
    /// Biases on the attention linears (default true).
    pub attention_bias: Option<bool>,
    /// Parallel attention and MLP (default true).
    pub use_parallel_residual: Option<bool>,
    /// Tied head (default false).
    pub tie_word_embeddings: Option<bool>,
}

impl TryFrom<GptNeoXConfig> for Transformer {
    type Error = Error;

    fn try_from(c: GptNeoXConfig) -> Result<Transformer> {
        let d = or(c.hidden_size, 6144);
        let heads = or(c.num_attention_heads, 64);
        let attn_bias = c.attention_bias.unwrap_or(true);
        let arch = Architecture {
            tied_embeddings: c.tie_word_embeddings.unwrap_or(false),
            biases: LinearBiases {
                qkv: attn_bias,
                attn_out: attn_bias,
                mlp: true,
            },
            block: if c.use_parallel_residual.unwrap_or(true) {
                BlockKind::Parallel { shared_norm: false }
            } else {
                BlockKind::Sequential
            },
            ..Architecture::gpt_neox()
        };
        Transformer::builder()
            .vocab_size(or(c.vocab_size, 50432))
            .hidden_size(d)
            .num_layers(or(c.num_hidden_layers, 44))
            .num_heads(heads)
            .num_kv_heads(heads)
            .head_dim(head_dim_of(
                d,
                heads,
                ("hidden_size", "num_attention_heads"),
            )?)
            .ffn_size(or(c.intermediate_size, 24576))
            .max_positions(or(c.max_position_embeddings, 2048))
            .arch(arch)
            .build()
    }
}
