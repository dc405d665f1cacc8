//! `Starcoder2Config` (`modeling_starcoder2.py`): grouped-query attention and a two-matrix
//! GELU MLP (`c_fc`, `c_proj`), biases on every linear when `use_bias`, LayerNorms with bias,
//! rotary, a sliding window on every layer when set, tied head by default.

use super::{Count, or, with_window_on_every_layer};
use crate::error::{Error, Result};
use crate::model::{Architecture, LinearBiases, MlpKind, NormKind, Transformer};
use serde::Deserialize;

/// The keys of a StarCoder2 `config.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Starcoder2Config {
    /// Width (default 3072).
    pub hidden_size: Option<Count>,
    /// MLP width (default 12288).
    pub intermediate_size: Option<Count>,
    /// Layers (default 30).
    pub num_hidden_layers: Option<Count>,
    /// Query heads (default 24).
    pub num_attention_heads: Option<Count>,
    /// Key/value heads (default 2).
    pub num_key_value_heads: Option<Count>,
    /// Vocabulary (default 49152).
    pub vocab_size: Option<Count>,
    /// Context (default 4096).
    pub max_position_embeddings: Option<Count>,
    /// Biases on every linear (default true).
    pub use_bias: Option<bool>,
    /// Sliding window of every layer.
    pub sliding_window: Option<Count>,
    /// Tied head (default true).
    pub tie_word_embeddings: Option<bool>,
}

impl TryFrom<Starcoder2Config> for Transformer {
    type Error = Error;

    fn try_from(c: Starcoder2Config) -> Result<Transformer> {
        let d = or(c.hidden_size, 3072);
        let heads = or(c.num_attention_heads, 24);
        crate::error::positive(heads, "num_attention_heads")?;
        let arch = Architecture {
            mlp: MlpKind::Standard,
            norm: NormKind::LayerNorm,
            biases: if c.use_bias.unwrap_or(true) {
                LinearBiases::ALL
            } else {
                LinearBiases::NONE
            },
            tied_embeddings: c.tie_word_embeddings.unwrap_or(true),
            ..Architecture::llama()
        };
        let m = Transformer::builder()
            .vocab_size(or(c.vocab_size, 49152))
            .hidden_size(d)
            .num_layers(or(c.num_hidden_layers, 30))
            .num_heads(heads)
            .num_kv_heads(or(c.num_key_value_heads, 2))
            .head_dim(super::floor_head_dim(
                d,
                heads,
                ("hidden_size", "num_attention_heads"),
            )?)
            .ffn_size(or(c.intermediate_size, 12288))
            .max_positions(or(c.max_position_embeddings, 4096))
            .arch(arch)
            .build()?;
        with_window_on_every_layer(m, c.sliding_window)
    }
}
