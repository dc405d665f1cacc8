//! `Gemma2Config` and `Gemma3TextConfig` (`modeling_gemma2.py`, `modeling_gemma3.py`): Gemma
//! layers with four RMSNorms each (before and after attention and MLP), GeGLU, a tied head,
//! and sliding-window layers: Gemma 2 alternates (even layers slide), Gemma 3 slides on five
//! of every six (`sliding_window_pattern`, or `layer_types`) and adds per-head q/k norms.
//! Soft-capping and the query scale change no count.

use super::{Count, or, pattern_from_layer_types, with_pattern};
use crate::error::{Error, Result};
use crate::model::{Architecture, BlockKind, LocalAttention, QkNorm, Transformer};
use serde::Deserialize;

/// The keys of a Gemma 2 or Gemma 3 (text) `config.json`; a multimodal Gemma 3 config is read
/// through its `text_config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GemmaNextConfig {
    /// `gemma2` or `gemma3_text`.
    pub model_type: String,
    /// Width (default 2304).
    pub hidden_size: Option<Count>,
    /// MLP width (default 9216).
    pub intermediate_size: Option<Count>,
    /// Layers (default 26).
    pub num_hidden_layers: Option<Count>,
    /// Query heads (default 8).
    pub num_attention_heads: Option<Count>,
    /// Key/value heads (default 4).
    pub num_key_value_heads: Option<Count>,
    /// Head width (default 256).
    pub head_dim: Option<Count>,
    /// Vocabulary (Gemma 2: 256000; Gemma 3: 262208).
    pub vocab_size: Option<Count>,
    /// Context (Gemma 2: 8192; Gemma 3: 131072).
    pub max_position_embeddings: Option<Count>,
    /// Sliding window (default 4096).
    pub sliding_window: Option<Count>,
    /// Gemma 3: one global layer every this many (default 6).
    pub sliding_window_pattern: Option<Count>,
    /// Which layers slide, when the config lists them.
    pub layer_types: Option<Vec<String>>,
    /// Tied head (default true).
    pub tie_word_embeddings: Option<bool>,
}

impl TryFrom<GemmaNextConfig> for Transformer {
    type Error = Error;

    fn try_from(c: GemmaNextConfig) -> Result<Transformer> {
        let gemma3 = c.model_type != "gemma2";
        let arch = Architecture {
            tied_embeddings: c.tie_word_embeddings.unwrap_or(true),
            block: BlockKind::Sandwich,
            qk_norm: if gemma3 {
                QkNorm::PerHead
            } else {
                QkNorm::None
            },
            ..Architecture::gemma()
        };
        let m = Transformer::builder()
            .vocab_size(or(c.vocab_size, if gemma3 { 262208 } else { 256000 }))
            .hidden_size(or(c.hidden_size, 2304))
            .num_layers(or(c.num_hidden_layers, 26))
            .num_heads(or(c.num_attention_heads, 8))
            .num_kv_heads(or(c.num_key_value_heads, 4))
            .head_dim(or(c.head_dim, 256))
            .ffn_size(or(c.intermediate_size, 9216))
            .max_positions(or(
                c.max_position_embeddings,
                if gemma3 { 131072 } else { 8192 },
            ))
            .arch(arch)
            .build()?;
        let window = or(c.sliding_window, 4096);
        let pattern = match &c.layer_types {
            Some(types) => pattern_from_layer_types(types, window, m.num_layers)?,
            None if gemma3 => {
                let period = or(c.sliding_window_pattern, 6);
                crate::error::positive(period, "sliding_window_pattern")?;
                Some(LocalAttention {
                    window,
                    period,
                    local_layers: period - 1,
                })
            }
            None => Some(LocalAttention {
                window,
                period: 2,
                local_layers: 1,
            }),
        };
        with_pattern(m, pattern)
    }
}
