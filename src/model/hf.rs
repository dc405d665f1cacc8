//! Reading a Hugging Face `config.json` into a [`Transformer`].
//!
//! Each family's key names, aliases and defaults follow the configuration classes of Hugging Face
//! `transformers` (`GPT2Config`, `GPTNeoXConfig`, `BloomConfig`, `OPTConfig`, `LlamaConfig`,
//! `MistralConfig`, `Qwen2Config`, `GemmaConfig`, `FalconConfig`), including their
//! `attribute_map` aliases (e.g. GPT-2's `n_embd` ↔ `hidden_size`, BLOOM's `n_embed`, Falcon's
//! `n_head_kv`) and the class default used when a key is absent. A key whose value is `null`
//! counts as absent, as in `transformers`. Falcon's pre-`transformers` configs
//! (`model_type` `RefinedWebModel` for 7B, `RefinedWeb` for 40B, which implies
//! `new_decoder_architecture`) are read too.
//!
//! ```
//! let cfg = r#"{"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
//!     "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
//!     "vocab_size": 32000, "max_position_embeddings": 4096, "tie_word_embeddings": false}"#;
//! let m = lmshape::model::hf::from_hf_config_str(cfg)?;
//! assert_eq!(m.total_params()?, 6_738_415_616); // Llama-2-7B
//! # Ok::<(), lmshape::Error>(())
//! ```

use super::{Architecture, BlockKind, LinearBiases, NormKind, PositionKind, Transformer};
use crate::error::{Error, Result};
use serde_json::{Map, Value};

/// `model_type` values this module reads.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &[
    "gpt2",
    "gpt_neox",
    "bloom",
    "opt",
    "llama",
    "mistral",
    "qwen2",
    "gemma",
    "falcon",
    "RefinedWeb",
    "RefinedWebModel",
];

/// Parse config text. Invalid JSON, a non-object, an unknown `model_type`, a missing or
/// ill-typed key, or a shape that breaks a model rule each give a typed error.
pub fn from_hf_config_str(text: &str) -> Result<Transformer> {
    let value: Value = serde_json::from_str(text).map_err(|e| Error::Json(e.to_string()))?;
    from_hf_config(&value)
}

/// Read an already parsed config.
pub fn from_hf_config(value: &Value) -> Result<Transformer> {
    let obj = value.as_object().ok_or_else(|| Error::InvalidKey {
        key: "<root>".into(),
        expected: "a json object",
        found: short(value),
    })?;
    let cfg = Cfg { obj };
    let model_type = match obj.get("model_type") {
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(Error::InvalidKey {
                key: "model_type".into(),
                expected: "a string",
                found: short(other),
            });
        }
        None => {
            return Err(Error::MissingKey {
                key: "model_type".into(),
            });
        }
    };
    match model_type {
        "gpt2" => gpt2(&cfg),
        "gpt_neox" => gpt_neox(&cfg),
        "bloom" => bloom(&cfg),
        "opt" => opt(&cfg),
        "llama" => llama_like(&cfg, Family::Llama),
        "mistral" => llama_like(&cfg, Family::Mistral),
        "qwen2" => llama_like(&cfg, Family::Qwen2),
        "gemma" => llama_like(&cfg, Family::Gemma),
        "falcon" => falcon(&cfg, false),
        "RefinedWebModel" => falcon(&cfg, false),
        "RefinedWeb" => falcon(&cfg, true),
        other => Err(Error::UnsupportedModelType {
            model_type: other.to_string(),
            supported: SUPPORTED_MODEL_TYPES.join(", "),
        }),
    }
}

struct Cfg<'a> {
    obj: &'a Map<String, Value>,
}

fn short(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 60 {
        let mut cut = 57;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

impl Cfg<'_> {
    /// The first of `keys` present and not null.
    fn find(&self, keys: &[&'static str]) -> Option<(&'static str, &Value)> {
        keys.iter().find_map(|k| match self.obj.get(*k) {
            Some(Value::Null) | None => None,
            Some(v) => Some((*k, v)),
        })
    }

    fn opt_u64(&self, keys: &[&'static str]) -> Result<Option<u64>> {
        let Some((key, v)) = self.find(keys) else {
            return Ok(None);
        };
        let n = match v {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 9.0e15)
                    .map(|f| f as u64)
            }),
            _ => None,
        };
        n.map(Some).ok_or_else(|| Error::InvalidKey {
            key: key.to_string(),
            expected: "a non-negative integer",
            found: short(v),
        })
    }

    fn u64_or(&self, keys: &[&'static str], default: u64) -> Result<u64> {
        Ok(self.opt_u64(keys)?.unwrap_or(default))
    }

    fn bool_or(&self, keys: &[&'static str], default: bool) -> Result<bool> {
        match self.find(keys) {
            None => Ok(default),
            Some((_, Value::Bool(b))) => Ok(*b),
            Some((key, v)) => Err(Error::InvalidKey {
                key: key.to_string(),
                expected: "a boolean",
                found: short(v),
            }),
        }
    }
}

/// `hidden / heads` as `transformers` computes it, requiring an exact split where the family's
/// code asserts one.
fn head_dim_of(hidden: u64, heads: u64) -> Result<u64> {
    crate::error::positive(heads, "num_heads")?;
    crate::error::divisible(
        "hidden size must split evenly into heads",
        "hidden_size",
        hidden,
        "num_heads",
        heads,
    )?;
    Ok(hidden / heads)
}

fn four_times(d: u64) -> Result<u64> {
    crate::error::mul(d, 4, "ffn_size")
}

/// `GPT2Config`: `n_embd`, `n_layer`, `n_head`, `n_positions`, `n_inner` (None → 4·d).
fn gpt2(c: &Cfg) -> Result<Transformer> {
    let d = c.u64_or(&["n_embd", "hidden_size"], 768)?;
    let heads = c.u64_or(&["n_head", "num_attention_heads"], 12)?;
    let ffn = match c.opt_u64(&["n_inner"])? {
        Some(f) => f,
        None => four_times(d)?,
    };
    let arch = Architecture {
        tied_embeddings: c.bool_or(&["tie_word_embeddings"], true)?,
        ..Architecture::gpt2()
    };
    Transformer::new(
        c.u64_or(&["vocab_size"], 50257)?,
        d,
        c.u64_or(&["n_layer", "num_hidden_layers"], 12)?,
        heads,
        heads,
        head_dim_of(d, heads)?,
        ffn,
        c.u64_or(&["n_positions", "max_position_embeddings"], 1024)?,
        arch,
    )
}

/// `GPTNeoXConfig`: untied `embed_out` by default, `attention_bias` (default true) on
/// `query_key_value` and `dense`, MLP biases always, two LayerNorms per layer.
fn gpt_neox(c: &Cfg) -> Result<Transformer> {
    let d = c.u64_or(&["hidden_size"], 6144)?;
    let heads = c.u64_or(&["num_attention_heads"], 64)?;
    let attn_bias = c.bool_or(&["attention_bias"], true)?;
    let parallel = c.bool_or(&["use_parallel_residual"], true)?;
    let arch = Architecture {
        tied_embeddings: c.bool_or(&["tie_word_embeddings"], false)?,
        biases: LinearBiases {
            qkv: attn_bias,
            attn_out: attn_bias,
            mlp: true,
        },
        block: if parallel {
            BlockKind::Parallel { shared_norm: false }
        } else {
            BlockKind::Sequential
        },
        ..Architecture::gpt_neox()
    };
    Transformer::new(
        c.u64_or(&["vocab_size"], 50432)?,
        d,
        c.u64_or(&["num_hidden_layers"], 44)?,
        heads,
        heads,
        head_dim_of(d, heads)?,
        c.u64_or(&["intermediate_size"], 24576)?,
        c.u64_or(&["max_position_embeddings"], 2048)?,
        arch,
    )
}

/// `BloomConfig`: `hidden_size`/`n_embed`, `n_layer`/`num_hidden_layers`,
/// `n_head`/`num_attention_heads`; MLP always 4·d; ALiBi; embedding LayerNorm; tied head.
/// BLOOM has no position limit; the context defaults to `seq_length` or 2048 (its training
/// length).
fn bloom(c: &Cfg) -> Result<Transformer> {
    let d = c.u64_or(&["n_embed", "hidden_size"], 64)?;
    let heads = c.u64_or(&["n_head", "num_attention_heads"], 8)?;
    let arch = Architecture {
        tied_embeddings: c.bool_or(&["tie_word_embeddings"], true)?,
        ..Architecture::bloom()
    };
    Transformer::new(
        c.u64_or(&["vocab_size"], 250880)?,
        d,
        c.u64_or(&["n_layer", "num_hidden_layers"], 2)?,
        heads,
        heads,
        head_dim_of(d, heads)?,
        four_times(d)?,
        c.u64_or(&["seq_length", "max_position_embeddings"], 2048)?,
        arch,
    )
}

/// `OPTConfig`: positions with 2 extra rows; final LayerNorm only when `do_layer_norm_before`
/// and not `_remove_final_layer_norm`; `project_in`/`project_out` when `word_embed_proj_dim`
/// differs from `hidden_size`; `enable_bias`; `layer_norm_elementwise_affine`.
fn opt(c: &Cfg) -> Result<Transformer> {
    let d = c.u64_or(&["hidden_size"], 768)?;
    let heads = c.u64_or(&["num_attention_heads"], 12)?;
    let proj = c.u64_or(&["word_embed_proj_dim"], d)?;
    let bias = c.bool_or(&["enable_bias"], true)?;
    let affine = c.bool_or(&["layer_norm_elementwise_affine"], true)?;
    let pre_ln = c.bool_or(&["do_layer_norm_before"], true)?;
    let remove_final = c.bool_or(&["_remove_final_layer_norm"], false)?;
    let arch = Architecture {
        tied_embeddings: c.bool_or(&["tie_word_embeddings"], true)?,
        biases: if bias {
            LinearBiases::ALL
        } else {
            LinearBiases::NONE
        },
        norm: if affine {
            NormKind::LayerNorm
        } else {
            NormKind::NonParametric
        },
        final_norm: pre_ln && !remove_final,
        embed_proj_dim: if proj != d { Some(proj) } else { None },
        ..Architecture::opt()
    };
    Transformer::new(
        c.u64_or(&["vocab_size"], 50272)?,
        d,
        c.u64_or(&["num_hidden_layers"], 12)?,
        heads,
        heads,
        head_dim_of(d, heads)?,
        c.u64_or(&["ffn_dim"], 3072)?,
        c.u64_or(&["max_position_embeddings"], 2048)?,
        arch,
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Family {
    Llama,
    Mistral,
    Qwen2,
    Gemma,
}

/// `LlamaConfig`, `MistralConfig`, `Qwen2Config`, `GemmaConfig`: RMSNorm, gated MLP, rotary,
/// `num_key_value_heads` (None → heads), `head_dim` (None → hidden // heads, floor division as
/// in `transformers`). Biases: LLaMA `attention_bias` (q, k, v, o) and `mlp_bias`; Qwen2 q/k/v
/// always; Mistral and Gemma none. Defaults are each class's.
fn llama_like(c: &Cfg, fam: Family) -> Result<Transformer> {
    // (vocab, hidden, ffn, layers, heads, kv heads or None, head_dim or None, positions, tied)
    let (v, d0, f0, l0, h0, kv0, hd0, p0, tied0) = match fam {
        Family::Llama => (32000, 4096, 11008, 32, 32, None, None, 2048, false),
        Family::Mistral => (32000, 4096, 14336, 32, 32, Some(8), None, 131072, false),
        Family::Qwen2 => (151936, 4096, 22016, 32, 32, Some(32), None, 32768, false),
        Family::Gemma => (256000, 3072, 24576, 28, 16, Some(16), Some(256), 8192, true),
    };
    let d = c.u64_or(&["hidden_size"], d0)?;
    let heads = c.u64_or(&["num_attention_heads"], h0)?;
    crate::error::positive(heads, "num_attention_heads")?;
    let kv = match c.opt_u64(&["num_key_value_heads"])? {
        Some(k) => k,
        None => kv0.unwrap_or(heads),
    };
    let head_dim = match c.opt_u64(&["head_dim"])? {
        Some(h) => h,
        None => hd0.unwrap_or(d / heads),
    };
    let biases = match fam {
        Family::Llama => {
            let a = c.bool_or(&["attention_bias"], false)?;
            LinearBiases {
                qkv: a,
                attn_out: a,
                mlp: c.bool_or(&["mlp_bias"], false)?,
            }
        }
        Family::Qwen2 => LinearBiases::QKV_ONLY,
        Family::Mistral | Family::Gemma => LinearBiases::NONE,
    };
    let base = match fam {
        Family::Gemma => Architecture::gemma(),
        _ => Architecture::llama(),
    };
    let arch = Architecture {
        tied_embeddings: c.bool_or(&["tie_word_embeddings"], tied0)?,
        biases,
        ..base
    };
    Transformer::new(
        c.u64_or(&["vocab_size"], v)?,
        d,
        c.u64_or(&["num_hidden_layers"], l0)?,
        heads,
        kv,
        head_dim,
        c.u64_or(&["intermediate_size"], f0)?,
        c.u64_or(&["max_position_embeddings"], p0)?,
        arch,
    )
}

/// `FalconConfig` (+ the older RefinedWeb configs). KV heads: `num_kv_heads`/`n_head_kv` when
/// `new_decoder_architecture`, 1 when `multi_query`, else all heads. Norms
/// (`FalconDecoderLayer`): two (`ln_attn`, `ln_mlp`) when `new_decoder_architecture` and
/// `num_ln_in_parallel_attn` is 2 or unset; else `input_layernorm`, plus
/// `post_attention_layernorm` when not `parallel_attn`. `bias` covers every linear.
/// `ffn_hidden_size` (None → 4·d). ALiBi when `alibi`, else rotary.
fn falcon(c: &Cfg, refined_web_40b: bool) -> Result<Transformer> {
    let d = c.u64_or(&["hidden_size", "n_embed"], 4544)?;
    let heads = c.u64_or(&["num_attention_heads", "n_head"], 71)?;
    let new_arch = c.bool_or(&["new_decoder_architecture"], refined_web_40b)?;
    let multi_query = c.bool_or(&["multi_query"], true)?;
    let parallel = c.bool_or(&["parallel_attn"], true)?;
    let kv = if new_arch {
        c.u64_or(&["num_kv_heads", "n_head_kv"], heads)?
    } else if multi_query {
        1
    } else {
        heads
    };
    let lns = c.opt_u64(&["num_ln_in_parallel_attn"])?;
    let block = if new_arch && lns.unwrap_or(2) == 2 {
        BlockKind::Parallel { shared_norm: false }
    } else if parallel || new_arch {
        BlockKind::Parallel { shared_norm: true }
    } else {
        BlockKind::Sequential
    };
    let bias = c.bool_or(&["bias"], false)?;
    let ffn = match c.opt_u64(&["ffn_hidden_size"])? {
        Some(f) => f,
        None => four_times(d)?,
    };
    let arch = Architecture {
        tied_embeddings: c.bool_or(&["tie_word_embeddings"], true)?,
        biases: if bias {
            LinearBiases::ALL
        } else {
            LinearBiases::NONE
        },
        position: if c.bool_or(&["alibi"], false)? {
            PositionKind::Alibi
        } else {
            PositionKind::Rotary
        },
        block,
        ..Architecture::falcon()
    };
    Transformer::new(
        c.u64_or(&["vocab_size"], 65024)?,
        d,
        c.u64_or(&["num_hidden_layers", "n_layer"], 32)?,
        heads,
        kv,
        head_dim_of(d, heads)?,
        ffn,
        c.u64_or(&["max_position_embeddings"], 2048)?,
        arch,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_model_type_lists_supported() {
        let e = from_hf_config_str(r#"{"model_type": "mamba"}"#).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("mamba") && s.contains("gpt_neox") && s.contains("falcon"));
    }

    #[test]
    fn ill_typed_key_is_named() {
        let e = from_hf_config_str(r#"{"model_type": "gpt2", "n_layer": "12"}"#).unwrap_err();
        assert!(matches!(e, Error::InvalidKey { ref key, .. } if key == "n_layer"));
    }

    #[test]
    fn missing_model_type() {
        let e = from_hf_config_str(r#"{"n_layer": 12}"#).unwrap_err();
        assert_eq!(
            e,
            Error::MissingKey {
                key: "model_type".into()
            }
        );
    }

    #[test]
    fn null_means_absent() {
        let a = from_hf_config_str(r#"{"model_type": "llama", "head_dim": null}"#).unwrap();
        assert_eq!(a.head_dim, 128);
    }

    #[test]
    fn bad_json() {
        assert!(matches!(from_hf_config_str("{"), Err(Error::Json(_))));
        assert!(matches!(
            from_hf_config_str("[1]"),
            Err(Error::InvalidKey { .. })
        ));
    }
}
