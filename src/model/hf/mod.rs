//! Reading a Hugging Face `config.json` into a [`Transformer`].
//!
//! Each family is one plain serde struct whose fields are named as the family's `config.json`
//! keys (aliases as `#[serde(alias)]`, every key optional so that the class default applies
//! when it is absent or `null`), converted into the model with `TryFrom`: a new family is one
//! file with one struct and one conversion, and one line in the registry of readers.
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

use super::{LocalAttention, Transformer};
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

mod bloom;
mod cohere;
mod dbrx;
mod deepseek;
mod falcon;
mod gemma2;
mod gpt2;
mod gpt_bigcode;
mod gpt_neox;
mod gpt_oss;
mod llama;
mod mixtral;
mod olmo2;
mod opt;
mod phi3;
mod qwen;
mod starcoder2;
mod vision;

pub use bloom::BloomConfig;
pub use cohere::CohereConfig;
pub use dbrx::{DbrxAttnConfig, DbrxConfig, DbrxFfnConfig};
pub use deepseek::DeepseekConfig;
pub use falcon::FalconConfig;
pub use gemma2::GemmaNextConfig;
pub use gpt_bigcode::GptBigCodeConfig;
pub use gpt_neox::GptNeoXConfig;
pub use gpt_oss::GptOssConfig;
pub use gpt2::Gpt2Config;
pub use llama::LlamaConfig;
pub use mixtral::MixtralConfig;
pub use olmo2::OlmoConfig;
pub use opt::OptConfig;
pub use phi3::Phi3Config;
pub use qwen::QwenConfig;
pub use starcoder2::Starcoder2Config;
pub use vision::{Checkpoint, CheckpointCounts, MULTIMODAL_MODEL_TYPES};

/// How one family's config becomes a model.
type Reader = fn(&Value) -> Result<Transformer>;

/// The registry: each `model_type` this module reads, with its reader. The supported list and
/// the dispatch of [`from_hf_config`] both come from it, so they cannot disagree.
const READERS: [(&str, Reader); 37] = [
    ("gpt2", reader::<Gpt2Config>),
    ("gpt_neox", reader::<GptNeoXConfig>),
    ("bloom", reader::<BloomConfig>),
    ("opt", reader::<OptConfig>),
    ("llama", reader::<LlamaConfig>),
    ("mistral", reader::<LlamaConfig>),
    ("qwen2", reader::<LlamaConfig>),
    ("gemma", reader::<LlamaConfig>),
    ("falcon", reader::<FalconConfig>),
    ("RefinedWeb", reader::<FalconConfig>),
    ("RefinedWebModel", reader::<FalconConfig>),
    ("mixtral", reader::<MixtralConfig>),
    ("qwen2_moe", reader::<QwenConfig>),
    ("qwen3", reader::<QwenConfig>),
    ("qwen3_moe", reader::<QwenConfig>),
    ("deepseek_v2", reader::<DeepseekConfig>),
    ("deepseek_v3", reader::<DeepseekConfig>),
    ("gpt_oss", reader::<GptOssConfig>),
    ("gemma2", reader::<GemmaNextConfig>),
    ("gemma3_text", reader::<GemmaNextConfig>),
    ("gemma3", read_language_model),
    ("llava", read_language_model),
    ("llava_next", read_language_model),
    ("llava_onevision", read_language_model),
    ("paligemma", read_language_model),
    ("idefics3", read_language_model),
    ("smolvlm", read_language_model),
    ("mistral3", read_language_model),
    ("qwen2_vl", read_language_model),
    ("qwen2_5_vl", read_language_model),
    ("phi3", reader::<Phi3Config>),
    ("olmo2", reader::<OlmoConfig>),
    ("olmoe", reader::<OlmoConfig>),
    ("dbrx", reader::<DbrxConfig>),
    ("starcoder2", reader::<Starcoder2Config>),
    ("gpt_bigcode", reader::<GptBigCodeConfig>),
    ("cohere", reader::<CohereConfig>),
];

/// `model_type` values this module reads (the first column of the registry).
pub const SUPPORTED_MODEL_TYPES: [&str; READERS.len()] = {
    let mut out = [""; READERS.len()];
    let mut i = 0;
    while i < READERS.len() {
        out[i] = READERS[i].0;
        i += 1;
    }
    out
};

/// Read a family's config struct and convert it.
fn reader<C>(value: &Value) -> Result<Transformer>
where
    C: DeserializeOwned,
    Transformer: TryFrom<C, Error = Error>,
{
    read::<C>(value)?.try_into()
}

/// A vision-language config's language model (its vision encoder read and checked too, so
/// that an unknown `vision_config` is an error, not dropped).
fn read_language_model(value: &Value) -> Result<Transformer> {
    Ok(checkpoint_from_hf_config(value)?.language_model)
}

/// Read a whole checkpoint's config: the language model and, for the vision-language
/// `model_type`s ([`MULTIMODAL_MODEL_TYPES`]), the vision encoder and projector its
/// `vision_config` describes, so that counts match what the checkpoint stores. For a
/// language-only config the encoder is `None`.
///
/// ```
/// let cfg = r#"{"model_type": "llava", "text_config": {"model_type": "llama", "vocab_size": 32064},
///     "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024, "image_size": 336,
///     "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24, "patch_size": 14}}"#;
/// let c = lmshape::model::hf::checkpoint_from_hf_config(&serde_json::from_str(cfg).unwrap())?;
/// let counts = c.param_counts()?;
/// assert_eq!(counts.total_params, 7_063_427_072); // llava-1.5-7b-hf
/// assert_eq!(counts.language_model_params, 6_738_939_904);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// As [`from_hf_config`], and a `vision_config` of a tower this reader does not count
/// ([`Error::InvalidKey`] naming `vision_config.model_type`).
pub fn checkpoint_from_hf_config(value: &Value) -> Result<Checkpoint> {
    let model_type = value.get("model_type").and_then(Value::as_str);
    match model_type {
        Some(t) if MULTIMODAL_MODEL_TYPES.contains(&t) => vision::read_checkpoint(t, value),
        _ => Ok(Checkpoint {
            language_model: from_hf_config(value)?,
            vision: None,
        }),
    }
}

/// [`checkpoint_from_hf_config`] of config text.
///
/// # Errors
/// As [`from_hf_config_str`] and [`checkpoint_from_hf_config`].
pub fn checkpoint_from_hf_config_str(text: &str) -> Result<Checkpoint> {
    crate::error::input_size(text, "config")?;
    let value: Value = serde_json::from_str(text).map_err(Error::from)?;
    checkpoint_from_hf_config(&value)
}

/// Parse config text. Invalid JSON, a non-object, an unknown `model_type`, a missing or
/// ill-typed key, or a shape that breaks a model rule each give a typed error.
///
/// # Errors
/// Text above [`crate::error::MAX_INPUT_BYTES`], invalid JSON, or the errors of [`from_hf_config`].
pub fn from_hf_config_str(text: &str) -> Result<Transformer> {
    crate::error::input_size(text, "config")?;
    let value: Value = serde_json::from_str(text).map_err(Error::from)?;
    from_hf_config(&value)
}

/// Read an already parsed config.
///
/// # Errors
/// A non-object, a missing or unknown `model_type` ([`Error::UnsupportedModelType`]), an ill-typed key ([`Error::InvalidKey`] naming it), or a shape that breaks a model rule.
pub fn from_hf_config(value: &Value) -> Result<Transformer> {
    let obj = value.as_object().ok_or_else(|| Error::InvalidKey {
        key: "<root>".into(),
        expected: "a json object",
        found: short(value),
    })?;
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
    match READERS.iter().find(|(t, _)| *t == model_type) {
        Some((_, read)) => read(value),
        None => Err(Error::UnsupportedModelType {
            model_type: model_type.to_string(),
            supported: SUPPORTED_MODEL_TYPES.join(", "),
        }),
    }
}

/// Deserialize a family's struct, naming the key of an ill-typed value.
fn read<C: DeserializeOwned>(value: &Value) -> Result<C> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        let found = value
            .get(key.as_str())
            .map_or_else(|| e.inner().to_string(), short);
        Error::InvalidKey {
            key,
            expected: "a value of the type the family's config class declares",
            found,
        }
    })
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

/// A count as configs write it: a non-negative integer, or a float without a fraction (some
/// exporters write `4096.0`). `null` is read as absent by the `Option` around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count(pub u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Count, D::Error> {
        let v = serde_json::Number::deserialize(d)?;
        v.as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 9.0e15)
                    .map(|f| f as u64)
            })
            .map(Count)
            .ok_or_else(|| {
                serde::de::Error::custom(format!("expected a non-negative integer, found {v}"))
            })
    }
}

/// The value of an optional count, or the class default.
fn or(c: Option<Count>, default: u64) -> u64 {
    c.map_or(default, |c| c.0)
}

/// The config keys of the width and the head count, for errors that name what the user wrote.
type WidthKeys = (&'static str, &'static str);

/// `hidden / heads` where the family's code asserts an exact split
/// ([`crate::model::split_into_heads`]), errors naming the config's keys.
fn head_dim_of(hidden: u64, heads: u64, keys: WidthKeys) -> Result<u64> {
    crate::model::split_into_heads(hidden, heads, keys)
}

/// `hidden // heads` (floor division, as `transformers` derives `head_dim` when the config sets
/// none), which must be at least 1; errors name the config's keys.
fn floor_head_dim(hidden: u64, heads: u64, keys: WidthKeys) -> Result<u64> {
    crate::error::positive(heads, keys.1)?;
    if hidden < heads {
        return Err(Error::Inconsistent {
            rule: "without a head_dim key each head is hidden // heads wide, at least 1",
            detail: format!("{} = {hidden} < {} = {heads}", keys.0, keys.1),
        });
    }
    Ok(hidden / heads)
}

/// The config's `head_dim`, or `hidden // heads` ([`floor_head_dim`]) when it sets none.
fn head_dim_or_derived(
    head_dim: Option<Count>,
    hidden: u64,
    heads: u64,
    keys: WidthKeys,
) -> Result<u64> {
    match head_dim {
        Some(h) => Ok(h.0),
        None => floor_head_dim(hidden, heads, keys),
    }
}

fn four_times(d: u64) -> Result<u64> {
    crate::model::standard_ffn_size(d)
}

/// The model with a sliding window of `window` tokens on every layer (`period` 1), as the
/// attention classes of `transformers` apply a config's `sliding_window` for Mistral-style
/// families (Mistral, Mixtral, Phi-3, StarCoder2); unchanged when the config sets none.
fn with_window_on_every_layer(m: Transformer, window: Option<Count>) -> Result<Transformer> {
    let every_layer = |w: Count| LocalAttention {
        window: w.0,
        period: 1,
        local_layers: 1,
    };
    with_pattern(m, window.map(every_layer))
}

/// The model with its sliding-window pattern, if the config gives one.
fn with_pattern(m: Transformer, pattern: Option<LocalAttention>) -> Result<Transformer> {
    match pattern {
        Some(p) => m.with_local_attention(p),
        None => Ok(m),
    }
}

/// The sliding-window pattern of a `layer_types` list (`"sliding_attention"` /
/// `"full_attention"`, as `transformers` writes it for Gemma 3, gpt-oss and Qwen3): a period of
/// `local` sliding layers then `global` full layers, repeated (the last period may be cut).
/// `None` when no layer slides; an error naming the key when the list is not periodic or does
/// not hold one entry per layer (`transformers` checks the length as well).
fn pattern_from_layer_types(
    types: &[String],
    window: u64,
    num_layers: u64,
) -> Result<Option<LocalAttention>> {
    if types.len() as u64 != num_layers {
        return Err(Error::InvalidKey {
            key: "layer_types".into(),
            expected: "one entry per layer (num_hidden_layers of them)",
            found: format!("{} entries for {num_layers} layers", types.len()),
        });
    }
    if let Some(bad) = types
        .iter()
        .find(|t| *t != "sliding_attention" && *t != "full_attention")
    {
        return Err(Error::InvalidKey {
            key: "layer_types".into(),
            expected: "entries \"sliding_attention\" or \"full_attention\"",
            found: short(&Value::from(bad.as_str())),
        });
    }
    let sliding = |t: &String| t == "sliding_attention";
    let local = types.iter().take_while(|t| sliding(t)).count() as u64;
    if local == 0 {
        return if types.iter().any(sliding) {
            Err(Error::InvalidKey {
                key: "layer_types".into(),
                expected: "a repeating pattern of sliding then full attention layers",
                found: short(&Value::from(types.to_vec())),
            })
        } else {
            Ok(None)
        };
    }
    let global = types
        .iter()
        .skip(local as usize)
        .take_while(|t| !sliding(t))
        .count() as u64;
    let period = local + global;
    let pattern = LocalAttention {
        window,
        period,
        local_layers: local,
    };
    let periodic = types
        .iter()
        .enumerate()
        .all(|(i, t)| sliding(t) == ((i as u64) % period < local));
    if !periodic {
        return Err(Error::InvalidKey {
            key: "layer_types".into(),
            expected: "a repeating pattern of sliding then full attention layers",
            found: short(&Value::from(types.to_vec())),
        });
    }
    Ok(Some(pattern))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every registered `model_type` reads a config that gives only its type (the class
    /// defaults), so the supported list never names a type the dispatch cannot read.
    #[test]
    fn every_supported_type_reads_its_defaults() {
        for t in SUPPORTED_MODEL_TYPES {
            let m = from_hf_config_str(&format!(r#"{{"model_type": "{t}"}}"#));
            assert!(m.is_ok(), "{t}: {:?}", m.err());
        }
    }

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
    fn integral_floats_are_counts_and_fractions_are_not() {
        let m = from_hf_config_str(r#"{"model_type": "gpt2", "n_layer": 12.0}"#).unwrap();
        assert_eq!(m.num_layers, 12);
        let e = from_hf_config_str(r#"{"model_type": "gpt2", "n_layer": 12.5}"#).unwrap_err();
        assert!(
            matches!(e, Error::InvalidKey { ref key, .. } if key == "n_layer"),
            "{e}"
        );
    }

    #[test]
    fn aliases_name_the_key_as_written() {
        let e = from_hf_config_str(r#"{"model_type": "bloom", "n_embed": true}"#).unwrap_err();
        assert!(
            matches!(e, Error::InvalidKey { ref key, .. } if key == "n_embed"),
            "{e}"
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
