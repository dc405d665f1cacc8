//! `DeepseekV2Config` and `DeepseekV3Config` (`modeling_deepseek.py`): multi-head latent
//! attention, `first_k_dense_replace` dense layers then mixture-of-experts layers every
//! `moe_layer_freq` (`layer_idx % moe_layer_freq == 0`), `n_routed_experts` routed experts of
//! `moe_intermediate_size`, `n_shared_experts` shared ones (one MLP of
//! `n_shared_experts · moe_intermediate_size`), router `d×E` without bias; V3 routes with
//! `noaux_tc`, whose `e_score_correction_bias` (`E` values) is a parameter. V3's
//! `num_nextn_predict_layers` multi-token-prediction modules are not part of
//! `DeepseekV3ForCausalLM`: they are kept aside and counted only on request.

use super::{Count, or};
use crate::error::{Error, Result};
use crate::model::{Architecture, LatentAttention, Moe, Transformer};
use serde::Deserialize;

/// The keys of a DeepSeek-V2 or -V3 `config.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DeepseekConfig {
    /// `deepseek_v2` or `deepseek_v3`.
    pub model_type: String,
    /// Width.
    pub hidden_size: Option<Count>,
    /// Dense MLP width.
    pub intermediate_size: Option<Count>,
    /// Routed expert width.
    pub moe_intermediate_size: Option<Count>,
    /// Layers.
    pub num_hidden_layers: Option<Count>,
    /// Heads.
    pub num_attention_heads: Option<Count>,
    /// Shared experts.
    pub n_shared_experts: Option<Count>,
    /// Routed experts (`null`: a dense model).
    pub n_routed_experts: Option<Count>,
    /// Experts per token.
    pub num_experts_per_tok: Option<Count>,
    /// Query compression rank (`null`: a full `q_proj`).
    pub q_lora_rank: Option<Count>,
    /// Key/value compression rank.
    pub kv_lora_rank: Option<Count>,
    /// Per-head width without rotary.
    pub qk_nope_head_dim: Option<Count>,
    /// Per-head rotary width.
    pub qk_rope_head_dim: Option<Count>,
    /// Per-head value width.
    pub v_head_dim: Option<Count>,
    /// Leading dense layers.
    pub first_k_dense_replace: Option<Count>,
    /// Period of the mixture-of-experts layers.
    pub moe_layer_freq: Option<Count>,
    /// Routing method (`noaux_tc` has a correction bias).
    pub topk_method: Option<String>,
    /// Multi-token-prediction modules shipped with the weights.
    pub num_nextn_predict_layers: Option<Count>,
    /// Vocabulary.
    pub vocab_size: Option<Count>,
    /// Context.
    pub max_position_embeddings: Option<Count>,
    /// Tied head (default false).
    pub tie_word_embeddings: Option<bool>,
}

impl TryFrom<DeepseekConfig> for Transformer {
    type Error = Error;

    fn try_from(c: DeepseekConfig) -> Result<Transformer> {
        let v3 = c.model_type == "deepseek_v3";
        // Class defaults of DeepseekV3Config / DeepseekV2Config: (vocab, hidden, ffn, expert
        // width, layers, heads, shared, routed, top-k, dense layers).
        let (v0, d0, f0, fe0, l0, h0, s0, e0, k0, k_dense0) = if v3 {
            (129280, 7168, 18432, 2048, 61, 128, 1, 256, 8, 3)
        } else {
            (102400, 5120, 12288, 1536, 60, 128, 2, 160, 6, 1)
        };
        let heads = or(c.num_attention_heads, h0);
        let mla = LatentAttention {
            q_lora_rank: match c.q_lora_rank {
                Some(r) => Some(r.0),
                None if v3 => Some(1536),
                None => None,
            },
            kv_lora_rank: or(c.kv_lora_rank, 512),
            qk_nope_head_dim: or(c.qk_nope_head_dim, 128),
            qk_rope_head_dim: or(c.qk_rope_head_dim, 64),
            v_head_dim: or(c.v_head_dim, 128),
        };
        let arch = Architecture {
            tied_embeddings: c.tie_word_embeddings.unwrap_or(false),
            ..Architecture::llama()
        };
        let mut m = Transformer::builder()
            .vocab_size(or(c.vocab_size, v0))
            .hidden_size(or(c.hidden_size, d0))
            .num_layers(or(c.num_hidden_layers, l0))
            .num_heads(heads)
            .num_kv_heads(heads)
            .head_dim(mla.qk_nope_head_dim.saturating_add(mla.qk_rope_head_dim))
            .ffn_size(or(c.intermediate_size, f0))
            .max_positions(or(c.max_position_embeddings, 4096))
            .arch(arch)
            .build()?
            .with_latent_attention(mla)?;
        let routed = c.n_routed_experts.map_or(e0, |x| x.0);
        if routed > 0 {
            let expert = or(c.moe_intermediate_size, fe0);
            let shared = or(c.n_shared_experts, s0);
            m = m.with_moe(Moe {
                num_shared_experts: shared,
                shared_ffn_size: crate::error::mul(shared, expert, "shared expert width")?,
                score_correction_bias: c.topk_method.as_deref().map_or(v3, |t| t == "noaux_tc"),
                first_dense_layers: or(c.first_k_dense_replace, k_dense0).min(m.num_layers),
                layer_period: or(c.moe_layer_freq, 1),
                ..Moe::routed(routed, or(c.num_experts_per_tok, k0), expert)
            })?;
        }
        m.with_mtp_layers(or(c.num_nextn_predict_layers, 0))
    }
}
