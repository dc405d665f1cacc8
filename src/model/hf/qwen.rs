//! `Qwen2MoeConfig`, `Qwen3Config`, `Qwen3MoeConfig` (`transformers`): LLaMA-style layers.
//! Qwen3 adds per-head q/k RMSNorms (`q_norm`, `k_norm` of `head_dim`) and takes `head_dim`
//! from the config (default 128); Qwen2-MoE keeps q/k/v biases and adds a shared expert of
//! `shared_expert_intermediate_size` with a `d×1` sigmoid gate. In the MoE classes layer `i` is
//! sparse when it is not in `mlp_only_layers` and `(i + 1) % decoder_sparse_step == 0`.

use super::{Count, or, pattern_from_layer_types, with_pattern};
use crate::error::{Error, Result};
use crate::model::{Architecture, LinearBiases, Moe, QkNorm, Transformer};
use serde::Deserialize;

/// The keys of a Qwen2-MoE, Qwen3 or Qwen3-MoE `config.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct QwenConfig {
    /// `qwen2_moe`, `qwen3` or `qwen3_moe`.
    pub model_type: String,
    /// Width.
    pub hidden_size: Option<Count>,
    /// Dense MLP width.
    pub intermediate_size: Option<Count>,
    /// Query heads.
    pub num_attention_heads: Option<Count>,
    /// Key/value heads.
    pub num_key_value_heads: Option<Count>,
    /// Head width (Qwen3: default 128).
    pub head_dim: Option<Count>,
    /// Layers.
    pub num_hidden_layers: Option<Count>,
    /// Vocabulary (default 151936).
    pub vocab_size: Option<Count>,
    /// Context (default 32768).
    pub max_position_embeddings: Option<Count>,
    /// Tied head (default false).
    pub tie_word_embeddings: Option<bool>,
    /// Qwen3: biases on q, k, v and o (default false).
    pub attention_bias: Option<bool>,
    /// Routed experts.
    pub num_experts: Option<Count>,
    /// Experts per token.
    pub num_experts_per_tok: Option<Count>,
    /// Routed expert width.
    pub moe_intermediate_size: Option<Count>,
    /// Qwen2-MoE: shared expert width.
    pub shared_expert_intermediate_size: Option<Count>,
    /// Every this many layers is sparse (default 1).
    pub decoder_sparse_step: Option<Count>,
    /// Layers kept dense.
    pub mlp_only_layers: Option<Vec<Count>>,
    /// Sliding-window layers, when the config lists them.
    pub layer_types: Option<Vec<String>>,
    /// Sliding window.
    pub sliding_window: Option<Count>,
    /// Whether any layer slides (default false).
    pub use_sliding_window: Option<bool>,
}

impl TryFrom<QwenConfig> for Transformer {
    type Error = Error;

    fn try_from(c: QwenConfig) -> Result<Transformer> {
        // Class defaults: (hidden, ffn, layers, heads, kv heads, head_dim, experts, top-k,
        // expert width, shared width).
        let (d0, f0, l0, h0, kv0, hd0, e0, k0, fe0, fs0) = match c.model_type.as_str() {
            "qwen2_moe" => (2048, 5632, 24, 16, 16, None, 60, 4, 1408, 5632),
            "qwen3_moe" => (2048, 6144, 24, 32, 4, Some(128), 128, 8, 768, 0),
            _ => (4096, 22016, 32, 32, 32, Some(128), 0, 0, 0, 0),
        };
        let d = or(c.hidden_size, d0);
        let heads = or(c.num_attention_heads, h0);
        crate::error::positive(heads, "num_attention_heads")?;
        let qwen3 = c.model_type != "qwen2_moe";
        let bias = c.attention_bias.unwrap_or(false);
        let arch = Architecture {
            tied_embeddings: c.tie_word_embeddings.unwrap_or(false),
            biases: if qwen3 {
                LinearBiases {
                    qkv: bias,
                    attn_out: bias,
                    mlp: false,
                }
            } else {
                LinearBiases::QKV_ONLY
            },
            qk_norm: if qwen3 { QkNorm::PerHead } else { QkNorm::None },
            ..Architecture::llama()
        };
        let layers = or(c.num_hidden_layers, l0);
        let mut m = Transformer::builder()
            .vocab_size(or(c.vocab_size, 151936))
            .hidden_size(d)
            .num_layers(layers)
            .num_heads(heads)
            .num_kv_heads(or(c.num_key_value_heads, kv0))
            .head_dim(match (c.head_dim, hd0) {
                (Some(h), _) => h.0,
                (None, Some(h)) => h,
                (None, None) => {
                    super::floor_head_dim(d, heads, ("hidden_size", "num_attention_heads"))?
                }
            })
            .ffn_size(or(c.intermediate_size, f0))
            .max_positions(or(c.max_position_embeddings, 32768))
            .arch(arch)
            .build()?;
        let experts = or(c.num_experts, e0);
        if c.model_type != "qwen3" && experts > 0 {
            m = m.with_moe(qwen_moe(&c, experts, k0, fe0, fs0)?)?;
        }
        let window = or(c.sliding_window, 4096);
        if let Some(types) = &c.layer_types {
            m = with_pattern(m, pattern_from_layer_types(types, window, m.num_layers)?)?;
        } else if c.use_sliding_window.unwrap_or(false) {
            return Err(Error::Unsupported {
                what: "reading use_sliding_window",
                feature: "sliding windows on the layers from max_window_layers on",
            });
        }
        Ok(m)
    }
}

/// The mixture of `experts` routed experts of a Qwen MoE config, with the class defaults for
/// the experts per token `k0`, the expert width `fe0` and the shared expert's width `fs0`
/// (`modeling_qwen2_moe.py`, `modeling_qwen3_moe.py`): the layers in `mlp_only_layers` dense
/// (a leading run), sparse every `decoder_sparse_step` layers after them.
fn qwen_moe(c: &QwenConfig, experts: u64, k0: u64, fe0: u64, fs0: u64) -> Result<Moe> {
    // Dense layers must be a leading run for the periodic rule of `Moe`.
    let dense: Vec<u64> = c
        .mlp_only_layers
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|x| x.0)
        .collect();
    if dense.iter().enumerate().any(|(i, &x)| x != i as u64) {
        return Err(Error::Unsupported {
            what: "reading mlp_only_layers",
            feature: "dense layers other than a leading run",
        });
    }
    let shared = or(c.shared_expert_intermediate_size, fs0);
    Ok(Moe {
        num_shared_experts: u64::from(shared > 0),
        shared_ffn_size: shared,
        shared_expert_gate: shared > 0,
        first_dense_layers: dense.len() as u64,
        layer_period: or(c.decoder_sparse_step, 1),
        layer_offset: 1,
        ..Moe::routed(
            experts,
            or(c.num_experts_per_tok, k0),
            or(c.moe_intermediate_size, fe0),
        )
    })
}
