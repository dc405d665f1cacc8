//! `GPTBigCodeConfig` (`modeling_gpt_bigcode.py`, StarCoder/SantaCoder): GPT-2 layers with
//! multi-query attention (`multi_query`: one key/value head in a fused `c_attn` of
//! `d×(d + 2·hd)`), learned positions, tied head.

use super::{Count, four_times, head_dim_of, or};
use crate::error::{Error, Result};
use crate::model::{Architecture, Transformer};
use serde::Deserialize;

/// The keys of a GPTBigCode `config.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GptBigCodeConfig {
    /// Width (default 768).
    #[serde(alias = "hidden_size")]
    pub n_embd: Option<Count>,
    /// Layers (default 12).
    #[serde(alias = "num_hidden_layers")]
    pub n_layer: Option<Count>,
    /// Heads (default 12).
    #[serde(alias = "num_attention_heads")]
    pub n_head: Option<Count>,
    /// Learned positions (default 1024).
    #[serde(alias = "max_position_embeddings")]
    pub n_positions: Option<Count>,
    /// MLP width (`None` → 4·d).
    pub n_inner: Option<Count>,
    /// Vocabulary (default 50257).
    pub vocab_size: Option<Count>,
    /// One key/value head (default true).
    pub multi_query: Option<bool>,
}

impl TryFrom<GptBigCodeConfig> for Transformer {
    type Error = Error;

    fn try_from(c: GptBigCodeConfig) -> Result<Transformer> {
        let d = or(c.n_embd, 768);
        let heads = or(c.n_head, 12);
        let ffn = match c.n_inner {
            Some(f) => f.0,
            None => four_times(d)?,
        };
        Transformer::new(
            or(c.vocab_size, 50257),
            d,
            or(c.n_layer, 12),
            heads,
            if c.multi_query.unwrap_or(true) {
                1
            } else {
                heads
            },
            head_dim_of(d, heads)?,
            ffn,
            or(c.n_positions, 1024),
            Architecture::gpt2(),
        )
    }
}
