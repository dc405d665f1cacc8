//! `BloomConfig` (`configuration_bloom.py`): MLP always 4·d, ALiBi, embedding LayerNorm, tied
//! head. BLOOM has no position limit; the context defaults to `seq_length` or 2048 (its
//! training length).

use super::{Count, four_times, head_dim_of, or};
use crate::error::{Error, Result};
use crate::model::{Architecture, Transformer};
use serde::Deserialize;

/// The keys of a BLOOM `config.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BloomConfig {
    /// Width (default 64).
    #[serde(alias = "n_embed")]
    pub hidden_size: Option<Count>,
    /// Layers (default 2).
    #[serde(alias = "num_hidden_layers")]
    pub n_layer: Option<Count>,
    /// Heads (default 8).
    #[serde(alias = "num_attention_heads")]
    pub n_head: Option<Count>,
    /// Vocabulary (default 250880).
    pub vocab_size: Option<Count>,
    /// Training context (default 2048).
    #[serde(alias = "max_position_embeddings")]
    pub seq_length: Option<Count>,
    /// Tied head (default true).
    pub tie_word_embeddings: Option<bool>,
}

impl TryFrom<BloomConfig> for Transformer {
    type Error = Error;

    fn try_from(c: BloomConfig) -> Result<Transformer> {
        let d = or(c.hidden_size, 64);
        let heads = or(c.n_head, 8);
        let arch = Architecture {
            tied_embeddings: c.tie_word_embeddings.unwrap_or(true),
            ..Architecture::bloom()
        };
        Transformer::builder()
            .vocab_size(or(c.vocab_size, 250880))
            .hidden_size(d)
            .num_layers(or(c.n_layer, 2))
            .num_heads(heads)
            .num_kv_heads(heads)
            .head_dim(head_dim_of(d, heads, ("hidden_size", "n_head"))?)
            .ffn_size(four_times(d)?)
            .max_positions(or(c.seq_length, 2048))
            .arch(arch)
            .build()
    }
}
