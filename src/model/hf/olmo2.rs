//! `Olmo2Config` and `OlmoeConfig` (`modeling_olmo2.py`, `modeling_olmoe.py`): LLaMA-style
//! layers with q/k RMSNorms over the whole query (`H·hd`) and key (`KV·hd`) widths. OLMo 2
//! normalises after attention and after the MLP (two norms per layer, none before); OLMoE
//! before them, and its MLP is `num_experts` SwiGLU experts of `intermediate_size`, `top_k` =
//! `num_experts_per_tok`, router without bias.

use super::{Count, or};
use crate::error::{Error, Result};
use crate::model::{Architecture, LinearBiases, Moe, QkNorm, Transformer};
use serde::Deserialize;

/// The keys of an OLMo 2 or OLMoE `config.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OlmoConfig {
    /// `olmo2` or `olmoe`.
    pub model_type: String,
    /// Width.
    pub hidden_size: Option<Count>,
    /// MLP (OLMoE: expert) width.
    pub intermediate_size: Option<Count>,
    /// Layers.
    pub num_hidden_layers: Option<Count>,
    /// Query heads.
    pub num_attention_heads: Option<Count>,
    /// Key/value heads (default: the query heads).
    pub num_key_value_heads: Option<Count>,
    /// Vocabulary (default 50304).
    pub vocab_size: Option<Count>,
    /// Context.
    pub max_position_embeddings: Option<Count>,
    /// Biases on q, k, v and o (default false).
    pub attention_bias: Option<bool>,
    /// OLMoE: experts (default 64).
    pub num_experts: Option<Count>,
    /// OLMoE: experts per token (default 8).
    pub num_experts_per_tok: Option<Count>,
    /// Tied head (default false).
    pub tie_word_embeddings: Option<bool>,
}

impl TryFrom<OlmoConfig> for Transformer {
    type Error = Error;

    fn try_from(c: OlmoConfig) -> Result<Transformer> {
        let moe = c.model_type == "olmoe";
        let (d0, f0, l0, h0, p0) = if moe {
            (2048, 2048, 16, 16, 4096)
        } else {
            (4096, 11008, 32, 32, 2048)
        };
        let d = or(c.hidden_size, d0);
        let heads = or(c.num_attention_heads, h0);
        crate::error::positive(heads, "num_attention_heads")?;
        let bias = c.attention_bias.unwrap_or(false);
        let arch = Architecture {
            tied_embeddings: c.tie_word_embeddings.unwrap_or(false),
            biases: LinearBiases {
                qkv: bias,
                attn_out: bias,
                mlp: false,
            },
            qk_norm: QkNorm::Full,
            ..Architecture::llama()
        };
        let f = or(c.intermediate_size, f0);
        let m = Transformer::builder()
            .vocab_size(or(c.vocab_size, 50304))
            .hidden_size(d)
            .num_layers(or(c.num_hidden_layers, l0))
            .num_heads(heads)
            .num_kv_heads(or(c.num_key_value_heads, heads))
            .head_dim(super::floor_head_dim(
                d,
                heads,
                ("hidden_size", "num_attention_heads"),
            )?)
            .ffn_size(f)
            .max_positions(or(c.max_position_embeddings, p0))
            .arch(arch)
            .build()?;
        if !moe {
            return Ok(m);
        }
        m.with_moe(Moe::routed(
            or(c.num_experts, 64),
            or(c.num_experts_per_tok, 8),
            f,
        ))
    }
}
