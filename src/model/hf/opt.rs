//! `OPTConfig` (`configuration_opt.py`): positions with 2 extra rows; the final LayerNorm only
//! when `do_layer_norm_before` and not `_remove_final_layer_norm`; `project_in`/`project_out`
//! when `word_embed_proj_dim` differs from `hidden_size`; `enable_bias`;
//! `layer_norm_elementwise_affine`.

use super::{Count, head_dim_of, or};
use crate::error::{Error, Result};
use crate::model::{Architecture, LinearBiases, NormKind, Transformer};
use serde::Deserialize;

/// The keys of an OPT `config.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OptConfig {
    /// Width (default 768).
    pub hidden_size: Option<Count>,
    /// Heads (default 12).
    pub num_attention_heads: Option<Count>,
    /// Layers (default 12).
    pub num_hidden_layers: Option<Count>,
    /// MLP width (default 3072).
    pub ffn_dim: Option<Count>,
    /// Learned positions (default 2048).
    pub max_position_embeddings: Option<Count>,
    /// Vocabulary (default 50272).
    pub vocab_size: Option<Count>,
    /// Embedding width when it differs from the hidden size (default: the hidden size).
    pub word_embed_proj_dim: Option<Count>,
    /// Biases on every linear (default true).
    pub enable_bias: Option<bool>,
    /// LayerNorms with scale and bias (default true).
    pub layer_norm_elementwise_affine: Option<bool>,
    /// Pre-LN (default true).
    pub do_layer_norm_before: Option<bool>,
    /// No final LayerNorm (default false).
    pub _remove_final_layer_norm: Option<bool>,
    /// Tied head (default true).
    pub tie_word_embeddings: Option<bool>,
}

impl TryFrom<OptConfig> for Transformer {
    type Error = Error;

    fn try_from(c: OptConfig) -> Result<Transformer> {
        let d = or(c.hidden_size, 768);
        let heads = or(c.num_attention_heads, 12);
        let proj = or(c.word_embed_proj_dim, d);
        let pre_ln = c.do_layer_norm_before.unwrap_or(true);
        let arch = Architecture {
            tied_embeddings: c.tie_word_embeddings.unwrap_or(true),
            biases: if c.enable_bias.unwrap_or(true) {
                LinearBiases::ALL
            } else {
                LinearBiases::NONE
            },
            norm: if c.layer_norm_elementwise_affine.unwrap_or(true) {
                NormKind::LayerNorm
            } else {
                NormKind::NonParametric
            },
            final_norm: pre_ln && !c._remove_final_layer_norm.unwrap_or(false),
            embed_proj_dim: if proj != d { Some(proj) } else { None },
            ..Architecture::opt()
        };
        Transformer::builder()
            .vocab_size(or(c.vocab_size, 50272))
            .hidden_size(d)
            .num_layers(or(c.num_hidden_layers, 12))
            .num_heads(heads)
            .num_kv_heads(heads)
            .head_dim(head_dim_of(
                d,
                heads,
                ("hidden_size", "num_attention_heads"),
            )?)
            .ffn_size(or(c.ffn_dim, 3072))
            .max_positions(or(c.max_position_embeddings, 2048))
            .arch(arch)
            .build()
    }
}
