//! `FalconConfig` (`configuration_falcon.py`) and the older RefinedWeb configs (`model_type`
//! `RefinedWebModel` for 7B, `RefinedWeb` for 40B, which implies `new_decoder_architecture`).
//! KV heads: `num_kv_heads`/`n_head_kv` when `new_decoder_architecture`, 1 when `multi_query`,
//! else all heads. Norms (`FalconDecoderLayer`): two (`ln_attn`, `ln_mlp`) when
//! `new_decoder_architecture` and `num_ln_in_parallel_attn` is 2 or unset; else
//! `input_layernorm`, plus `post_attention_layernorm` when not `parallel_attn`. `bias` covers
//! every linear; `ffn_hidden_size` (None → 4·d); ALiBi when `alibi`, else rotary.

use super::{Count, four_times, head_dim_of, or};
use crate::error::{Error, Result};
use crate::model::{Architecture, BlockKind, LinearBiases, PositionKind, Transformer};
use serde::Deserialize;

/// The keys of a Falcon `config.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FalconConfig {
    /// `falcon`, `RefinedWebModel` or `RefinedWeb`.
    pub model_type: String,
    /// Width (default 4544).
    #[serde(alias = "n_embed")]
    pub hidden_size: Option<Count>,
    /// Heads (default 71).
    #[serde(alias = "n_head")]
    pub num_attention_heads: Option<Count>,
    /// Layers (default 32).
    #[serde(alias = "n_layer")]
    pub num_hidden_layers: Option<Count>,
    /// Key/value heads of the new decoder architecture.
    #[serde(alias = "n_head_kv")]
    pub num_kv_heads: Option<Count>,
    /// The 40B/180B decoder.
    pub new_decoder_architecture: Option<bool>,
    /// One kv head (default true).
    pub multi_query: Option<bool>,
    /// Parallel attention and MLP (default true).
    pub parallel_attn: Option<bool>,
    /// Norms feeding the parallel branches of the new decoder (default 2).
    pub num_ln_in_parallel_attn: Option<Count>,
    /// Biases on every linear (default false).
    pub bias: Option<bool>,
    /// MLP width (`None` → 4·d).
    pub ffn_hidden_size: Option<Count>,
    /// ALiBi instead of rotary (default false).
    pub alibi: Option<bool>,
    /// Vocabulary (default 65024).
    pub vocab_size: Option<Count>,
    /// Context (default 2048).
    pub max_position_embeddings: Option<Count>,
    /// Tied head (default true).
    pub tie_word_embeddings: Option<bool>,
}

impl TryFrom<FalconConfig> for Transformer {
    type Error = Error;

    fn try_from(c: FalconConfig) -> Result<Transformer> {
        let d = or(c.hidden_size, 4544);
        let heads = or(c.num_attention_heads, 71);
        let new_arch = c
            .new_decoder_architecture
            .unwrap_or(c.model_type == "RefinedWeb");
        let kv = if new_arch {
            or(c.num_kv_heads, heads)
        } else if c.multi_query.unwrap_or(true) {
            1
        } else {
            heads
        };
        let block = if new_arch && or(c.num_ln_in_parallel_attn, 2) == 2 {
            BlockKind::Parallel { shared_norm: false }
        } else if c.parallel_attn.unwrap_or(true) || new_arch {
            BlockKind::Parallel { shared_norm: true }
        } else {
            BlockKind::Sequential
        };
        let ffn = match c.ffn_hidden_size {
            Some(f) => f.0,
            None => four_times(d)?,
        };
        let arch = Architecture {
            tied_embeddings: c.tie_word_embeddings.unwrap_or(true),
            biases: if c.bias.unwrap_or(false) {
                LinearBiases::ALL
            } else {
                LinearBiases::NONE
            },
            position: if c.alibi.unwrap_or(false) {
                PositionKind::Alibi
            } else {
                PositionKind::Rotary
            },
            block,
            ..Architecture::falcon()
        };
        Transformer::builder()
            .vocab_size(or(c.vocab_size, 65024))
            .hidden_size(d)
            .num_layers(or(c.num_hidden_layers, 32))
            .num_heads(heads)
            .num_kv_heads(kv)
            .head_dim(head_dim_of(
                d,
                heads,
                ("hidden_size", "num_attention_heads"),
            )?)
            .ffn_size(ffn)
            .max_positions(or(c.max_position_embeddings, 2048))
            .arch(arch)
            .build()
    }
}
