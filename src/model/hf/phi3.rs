//! `Phi3Config` (`modeling_phi3.py`): LLaMA-style layers with a fused `qkv_proj` (`d×(H·hd +
//! 2·KV·hd)`) and a fused `gate_up_proj` (`d×2f`) — the same counts as separate projections —
//! no biases, RMSNorm, untied head; a sliding window on every layer when the config sets one.

use super::{Count, or, with_window_on_every_layer};
use crate::error::{Error, Result};
use crate::model::{Architecture, Transformer};
use serde::Deserialize;

/// The keys of a Phi-3 `config.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Phi3Config {
    /// Width (default 3072).
    pub hidden_size: Option<Count>,
    /// MLP width (default 8192).
    pub intermediate_size: Option<Count>,
    /// Layers (default 32).
    pub num_hidden_layers: Option<Count>,
    /// Query heads (default 32).
    pub num_attention_heads: Option<Count>,
    /// Key/value heads (default: the query heads).
    pub num_key_value_heads: Option<Count>,
    /// Vocabulary (default 32064).
    pub vocab_size: Option<Count>,
    /// Context (default 4096).
    pub max_position_embeddings: Option<Count>,
    /// Sliding window of every layer.
    pub sliding_window: Option<Count>,
    /// Tied head (default false).
    pub tie_word_embeddings: Option<bool>,
}

impl TryFrom<Phi3Config> for Transformer {
    type Error = Error;

    fn try_from(c: Phi3Config) -> Result<Transformer> {
        let d = or(c.hidden_size, 3072);
        let heads = or(c.num_attention_heads, 32);
        crate::error::positive(heads, "num_attention_heads")?;
        let arch = Architecture {
            tied_embeddings: c.tie_word_embeddings.unwrap_or(false),
            ..Architecture::llama()
        };
        let m = Transformer::builder()
            .vocab_size(or(c.vocab_size, 32064))
            .hidden_size(d)
            .num_layers(or(c.num_hidden_layers, 32))
            .num_heads(heads)
            .num_kv_heads(or(c.num_key_value_heads, heads))
            .head_dim(super::floor_head_dim(
                d,
                heads,
                ("hidden_size", "num_attention_heads"),
            )?)
            .ffn_size(or(c.intermediate_size, 8192))
            .max_positions(or(c.max_position_embeddings, 4096))
            .arch(arch)
            .build()?;
        with_window_on_every_layer(m, c.sliding_window)
    }
}
