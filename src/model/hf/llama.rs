//! `LlamaConfig`, `MistralConfig`, `Qwen2Config`, `GemmaConfig` (`transformers`): RMSNorm,
//! gated MLP, rotary, `num_key_value_heads` (None → heads), `head_dim` (None → hidden // heads,
//! floor division as in `transformers`). Biases: LLaMA `attention_bias` (q, k, v, o) and
//! `mlp_bias`; Qwen2 q/k/v always; Mistral and Gemma none. Mistral's `sliding_window` applies
//! to every layer. Defaults are each class's.

use super::{Count, or};
use crate::error::{Error, Result};
use crate::model::{Architecture, LinearBiases, Transformer};
use serde::Deserialize;

/// The keys of a LLaMA-family `config.json` (`llama`, `mistral`, `qwen2`, `gemma`: the same
/// keys, with each class's defaults).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LlamaConfig {
    /// Which class: `llama`, `mistral`, `qwen2` or `gemma`.
    pub model_type: String,
    /// Width.
    pub hidden_size: Option<Count>,
    /// MLP width.
    pub intermediate_size: Option<Count>,
    /// Query heads.
    pub num_attention_heads: Option<Count>,
    /// Layers.
    pub num_hidden_layers: Option<Count>,
    /// Key/value heads.
    pub num_key_value_heads: Option<Count>,
    /// Head width when it is not hidden / heads (Gemma, Mistral-Nemo).
    pub head_dim: Option<Count>,
    /// Context.
    pub max_position_embeddings: Option<Count>,
    /// Vocabulary.
    pub vocab_size: Option<Count>,
    /// Tied head.
    pub tie_word_embeddings: Option<bool>,
    /// LLaMA: biases on q, k, v and o.
    pub attention_bias: Option<bool>,
    /// LLaMA: biases on the MLP.
    pub mlp_bias: Option<bool>,
    /// Mistral: every layer attends to this many past tokens (Mistral 7B v0.1: 4096; null or
    /// absent in v0.2 and later: full attention). Not read for the other classes.
    pub sliding_window: Option<Count>,
}

/// A class's defaults: vocabulary, hidden, ffn, layers, heads, kv heads (None: heads),
/// head_dim (None: hidden // heads), positions, tied head.
type Defaults = (u64, u64, u64, u64, u64, Option<u64>, Option<u64>, u64, bool);

impl TryFrom<LlamaConfig> for Transformer {
    type Error = Error;

    fn try_from(c: LlamaConfig) -> Result<Transformer> {
        let (v, d0, f0, l0, h0, kv0, hd0, p0, tied0): Defaults = match c.model_type.as_str() {
            "mistral" => (32000, 4096, 14336, 32, 32, Some(8), None, 131072, false),
            "qwen2" => (151936, 4096, 22016, 32, 32, Some(32), None, 32768, false),
            "gemma" => (256000, 3072, 24576, 28, 16, Some(16), Some(256), 8192, true),
            _ => (32000, 4096, 11008, 32, 32, None, None, 2048, false),
        };
        let d = or(c.hidden_size, d0);
        let heads = or(c.num_attention_heads, h0);
        crate::error::positive(heads, "num_attention_heads")?;
        let kv = c.num_key_value_heads.map_or(kv0.unwrap_or(heads), |k| k.0);
        let head_dim = match (c.head_dim, hd0) {
            (Some(h), _) => h.0,
            (None, Some(h)) => h,
            (None, None) => {
                super::floor_head_dim(d, heads, ("hidden_size", "num_attention_heads"))?
            }
        };
        let biases = match c.model_type.as_str() {
            "qwen2" => LinearBiases::QKV_ONLY,
            "mistral" | "gemma" => LinearBiases::NONE,
            _ => {
                let a = c.attention_bias.unwrap_or(false);
                LinearBiases {
                    qkv: a,
                    attn_out: a,
                    mlp: c.mlp_bias.unwrap_or(false),
                }
            }
        };
        let base = if c.model_type == "gemma" {
            Architecture::gemma()
        } else {
            Architecture::llama()
        };
        let arch = Architecture {
            tied_embeddings: c.tie_word_embeddings.unwrap_or(tied0),
            biases,
            ..base
        };
        let m = Transformer::builder()
            .vocab_size(or(c.vocab_size, v))
            .hidden_size(d)
            .num_layers(or(c.num_hidden_layers, l0))
            .num_heads(heads)
            .num_kv_heads(kv)
            .head_dim(head_dim)
            .ffn_size(or(c.intermediate_size, f0))
            .max_positions(or(c.max_position_embeddings, p0))
            .arch(arch)
            .build()?;
        if c.model_type == "mistral" {
            super::with_window_on_every_layer(m, c.sliding_window)
        } else {
            Ok(m)
        }
    }
}
