//! `DbrxConfig` (`modeling_dbrx.py`): a fused bias-free `Wqkv` (`d×(d + 2·KV·hd)`) and
//! `out_proj`, LayerNorms without bias (`norm_1`, `norm_2`, `norm_f`), every layer a mixture of
//! `moe_num_experts` SwiGLU experts (`w1`, `v1`, `w2`) of `ffn_hidden_size`, `moe_top_k` per
//! token, router without bias; rotary; untied head. Attention and FFN settings sit in the
//! nested `attn_config` and `ffn_config`.

use super::{Count, or};
use crate::error::{Error, Result};
use crate::model::{Architecture, Moe, NormKind, Transformer};
use serde::Deserialize;

/// `attn_config` of a DBRX config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DbrxAttnConfig {
    /// Key/value heads (default 1).
    pub kv_n_heads: Option<Count>,
}

/// `ffn_config` of a DBRX config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DbrxFfnConfig {
    /// Expert width (default 3584).
    pub ffn_hidden_size: Option<Count>,
    /// Experts (default 4).
    pub moe_num_experts: Option<Count>,
    /// Experts per token (default 1).
    pub moe_top_k: Option<Count>,
}

/// The keys of a DBRX `config.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DbrxConfig {
    /// Width (default 2048).
    pub d_model: Option<Count>,
    /// Heads (default 16).
    pub n_heads: Option<Count>,
    /// Layers (default 24).
    pub n_layers: Option<Count>,
    /// Context (default 2048).
    pub max_seq_len: Option<Count>,
    /// Vocabulary (default 32000).
    pub vocab_size: Option<Count>,
    /// Attention settings.
    pub attn_config: DbrxAttnConfig,
    /// Feed-forward settings.
    pub ffn_config: DbrxFfnConfig,
    /// Tied head (default false).
    pub tie_word_embeddings: Option<bool>,
}

impl TryFrom<DbrxConfig> for Transformer {
    type Error = Error;

    fn try_from(c: DbrxConfig) -> Result<Transformer> {
        let d = or(c.d_model, 2048);
        let heads = or(c.n_heads, 16);
        crate::error::positive(heads, "n_heads")?;
        let f = or(c.ffn_config.ffn_hidden_size, 3584);
        let arch = Architecture {
            tied_embeddings: c.tie_word_embeddings.unwrap_or(false),
            norm: NormKind::LayerNormNoBias,
            ..Architecture::llama()
        };
        Transformer::builder()
            .vocab_size(or(c.vocab_size, 32000))
            .hidden_size(d)
            .num_layers(or(c.n_layers, 24))
            .num_heads(heads)
            .num_kv_heads(or(c.attn_config.kv_n_heads, 1))
            .head_dim(super::floor_head_dim(d, heads, ("d_model", "n_heads"))?)
            .ffn_size(f)
            .max_positions(or(c.max_seq_len, 2048))
            .arch(arch)
            .build()?
            .with_moe(Moe::routed(
                or(c.ffn_config.moe_num_experts, 4),
                or(c.ffn_config.moe_top_k, 1),
                f,
            ))
    }
}
