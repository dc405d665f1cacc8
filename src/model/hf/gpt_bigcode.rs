//! `GPTBigCodeConfig` (`modeling_gpt_bigcode.py`, StarCoder/SantaCoder): GPT-2's keys and
//! layers with multi-query attention (`multi_query`, default true: one key/value head in a fused
//! `c_attn` of `d×(d + 2·hd)`).

use super::Gpt2Config;
use crate::error::{Error, Result};
use crate::model::Transformer;
use serde::Deserialize;

/// The keys of a GPTBigCode `config.json`: GPT-2's, and `multi_query`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GptBigCodeConfig {
    /// The GPT-2 keys.
    #[serde(flatten)]
    pub gpt2: Gpt2Config,
    /// One key/value head (default true).
    pub multi_query: Option<bool>,
}

impl TryFrom<GptBigCodeConfig> for Transformer {
    type Error = Error;

    fn try_from(c: GptBigCodeConfig) -> Result<Transformer> {
        let m = Transformer::try_from(c.gpt2)?;
        if !c.multi_query.unwrap_or(true) {
            return Ok(m);
        }
        m.to_builder().num_kv_heads(1).build()
    }
}
