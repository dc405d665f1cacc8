//! `GPT2Config` (Hugging Face `transformers`, `configuration_gpt2.py`).

use super::{Count, four_times, head_dim_of, or};
use crate::error::{Error, Result};
use crate::model::{Architecture, Transformer};
use serde::Deserialize;

/// The keys of a GPT-2 `config.json`; `attribute_map` aliases as serde aliases.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Gpt2Config {
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
    /// Tied head (default true).
    pub tie_word_embeddings: Option<bool>,
}

impl TryFrom<Gpt2Config> for Transformer {
    type Error = Error;

    fn try_from(c: Gpt2Config) -> Result<Transformer> {
        let d = or(c.n_embd, 768);
        let heads = or(c.n_head, 12);
        let ffn = match c.n_inner {
            Some(f) => f.0,
            None => four_times(d)?,
        };
        let arch = Architecture {
            tied_embeddings: c.tie_word_embeddings.unwrap_or(true),
            ..Architecture::gpt2()
        };
        Transformer::builder()
            .vocab_size(or(c.vocab_size, 50257))
            .hidden_size(d)
            .num_layers(or(c.n_layer, 12))
            .num_heads(heads)
            .num_kv_heads(heads)
            .head_dim(head_dim_of(d, heads, ("n_embd", "n_head"))?)
            .ffn_size(ffn)
            .max_positions(or(c.n_positions, 1024))
            .arch(arch)
            .build()
    }
}
