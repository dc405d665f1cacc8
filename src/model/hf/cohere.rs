//! `CohereConfig` (`modeling_cohere.py`, Command R): a parallel block fed by one LayerNorm
//! without bias (`input_layernorm`), SwiGLU MLP, no biases, rotary, tied head; with
//! `use_qk_norm`, LayerNorms without bias over each head's own values (`q_norm` of `H·hd`,
//! `k_norm` of `KV·hd` weights).

use super::{Count, or};
use crate::error::{Error, Result};
use crate::model::{Architecture, BlockKind, NormKind, QkNorm, Transformer};
use serde::Deserialize;

/// The keys of a Cohere `config.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CohereConfig {
    /// Width (default 8192).
    pub hidden_size: Option<Count>,
    /// MLP width (default 22528).
    pub intermediate_size: Option<Count>,
    /// Layers (default 40).
    pub num_hidden_layers: Option<Count>,
    /// Query heads (default 64).
    pub num_attention_heads: Option<Count>,
    /// Key/value heads (default: the query heads).
    pub num_key_value_heads: Option<Count>,
    /// Vocabulary (default 256000).
    pub vocab_size: Option<Count>,
    /// Context (default 8192).
    pub max_position_embeddings: Option<Count>,
    /// Per-head q/k norms (default false).
    pub use_qk_norm: Option<bool>,
    /// Tied head (default true).
    pub tie_word_embeddings: Option<bool>,
}

impl TryFrom<CohereConfig> for Transformer {
    type Error = Error;

    fn try_from(c: CohereConfig) -> Result<Transformer> {
        let d = or(c.hidden_size, 8192);
        let heads = or(c.num_attention_heads, 64);
        crate::error::positive(heads, "num_attention_heads")?;
        let arch = Architecture {
            tied_embeddings: c.tie_word_embeddings.unwrap_or(true),
            norm: NormKind::LayerNormNoBias,
            block: BlockKind::Parallel { shared_norm: true },
            qk_norm: if c.use_qk_norm.unwrap_or(false) {
                QkNorm::Full
            } else {
                QkNorm::None
            },
            ..Architecture::llama()
        };
        Transformer::builder()
            .vocab_size(or(c.vocab_size, 256000))
            .hidden_size(d)
            .num_layers(or(c.num_hidden_layers, 40))
            .num_heads(heads)
            .num_kv_heads(or(c.num_key_value_heads, heads))
            .head_dim(super::floor_head_dim(
                d,
                heads,
                ("hidden_size", "num_attention_heads"),
            )?)
            .ffn_size(or(c.intermediate_size, 22528))
            .max_positions(or(c.max_position_embeddings, 8192))
            .arch(arch)
            .build()
    }
}
