//! `MixtralConfig` (`configuration_mixtral.py`, `modeling_mixtral.py`): LLaMA layers whose MLP
//! is `num_local_experts` SwiGLU experts of width `intermediate_size`, `num_experts_per_tok`
//! per token, router `d×E` without bias; every layer sparse.

use super::{Count, or, with_window_on_every_layer};
use crate::error::{Error, Result};
use crate::model::{Architecture, Moe, Transformer};
use serde::Deserialize;

/// The keys of a Mixtral `config.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MixtralConfig {
    /// Width (default 4096).
    pub hidden_size: Option<Count>,
    /// Expert width (default 14336).
    pub intermediate_size: Option<Count>,
    /// Query heads (default 32).
    pub num_attention_heads: Option<Count>,
    /// Key/value heads (default 8).
    pub num_key_value_heads: Option<Count>,
    /// Head width (default hidden / heads).
    pub head_dim: Option<Count>,
    /// Layers (default 32).
    pub num_hidden_layers: Option<Count>,
    /// Vocabulary (default 32000).
    pub vocab_size: Option<Count>,
    /// Context (default 131072).
    pub max_position_embeddings: Option<Count>,
    /// Experts (default 8).
    pub num_local_experts: Option<Count>,
    /// Experts per token (default 2).
    pub num_experts_per_tok: Option<Count>,
    /// Sliding window of every layer (default none).
    pub sliding_window: Option<Count>,
    /// Tied head (default false).
    pub tie_word_embeddings: Option<bool>,
}

impl TryFrom<MixtralConfig> for Transformer {
    type Error = Error;

    fn try_from(c: MixtralConfig) -> Result<Transformer> {
        let d = or(c.hidden_size, 4096);
        let heads = or(c.num_attention_heads, 32);
        crate::error::positive(heads, "num_attention_heads")?;
        let f = or(c.intermediate_size, 14336);
        let arch = Architecture {
            tied_embeddings: c.tie_word_embeddings.unwrap_or(false),
            ..Architecture::llama()
        };
        let m = Transformer::builder()
            .vocab_size(or(c.vocab_size, 32000))
            .hidden_size(d)
            .num_layers(or(c.num_hidden_layers, 32))
            .num_heads(heads)
            .num_kv_heads(or(c.num_key_value_heads, 8))
            .head_dim(super::head_dim_or_derived(
                c.head_dim,
                d,
                heads,
                ("hidden_size", "num_attention_heads"),
            )?)
            .ffn_size(f)
            .max_positions(or(c.max_position_embeddings, 131072))
            .arch(arch)
            .build()?
            .with_moe(Moe::routed(
                or(c.num_local_experts, 8),
                or(c.num_experts_per_tok, 2),
                f,
            ))?;
        with_window_on_every_layer(m, c.sliding_window)
    }
}
