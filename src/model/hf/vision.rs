//! Vision-language configs: the language model from `text_config` (or, for Qwen2-VL and
//! Qwen2.5-VL, the top level), the vision encoder from `vision_config` and the projector keys.
//! Key names, aliases and class defaults follow `transformers`' `Gemma3Config`,
//! `LlavaConfig`, `LlavaNextConfig`, `Mistral3Config`, `Qwen2VLConfig`, `Qwen2_5_VLConfig` and
//! their vision configs (`SiglipVisionConfig`, `CLIPVisionConfig`, `PixtralVisionConfig`,
//! `Qwen2VLVisionConfig`, `Qwen2_5_VLVisionConfig`).

use super::{Count, from_hf_config, or, read, short};
use crate::error::{Error, Result};
use crate::model::Transformer;
use crate::model::vision::{ProjectorKind, TowerKind, VisionEncoder, VisionTower};
use serde::Deserialize;
use serde_json::Value;

/// The vision-language `model_type`s: their language model is read from `text_config`, their
/// encoder from `vision_config`.
pub const MULTIMODAL_MODEL_TYPES: [&str; 10] = [
    "gemma3",
    "llava",
    "llava_next",
    "llava_onevision",
    "mistral3",
    "qwen2_vl",
    "qwen2_5_vl",
    "paligemma",
    "idefics3",
    "smolvlm",
];

/// The top-level keys of a vision-language config.
#[derive(Debug, Default, Deserialize)]
struct Keys {
    text_config: Option<Value>,
    vision_config: Option<Value>,
    mm_tokens_per_image: Option<Count>,
    vision_feature_layer: Option<Value>,
    multimodal_projector_bias: Option<bool>,
    spatial_merge_size: Option<Count>,
    projection_dim: Option<Count>,
    scale_factor: Option<Count>,
}

/// The keys of a `vision_config`, under every family's names.
#[derive(Debug, Default, Deserialize)]
struct TowerKeys {
    model_type: Option<String>,
    hidden_size: Option<Count>,
    embed_dim: Option<Count>,
    intermediate_size: Option<Count>,
    mlp_ratio: Option<f64>,
    #[serde(alias = "depth")]
    num_hidden_layers: Option<Count>,
    #[serde(alias = "num_heads")]
    num_attention_heads: Option<Count>,
    patch_size: Option<Count>,
    image_size: Option<Count>,
    #[serde(alias = "in_chans", alias = "in_channels")]
    num_channels: Option<Count>,
    temporal_patch_size: Option<Count>,
    vision_use_head: Option<bool>,
    out_hidden_size: Option<Count>,
    spatial_merge_size: Option<Count>,
    projection_dim: Option<Count>,
}

/// A vision-language checkpoint: its language model and its vision encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The language model (what planning, FLOPs per token and training memory describe).
    pub language_model: Transformer,
    /// The vision encoder, for configs that have one.
    pub vision: Option<VisionEncoder>,
}

/// A sub-config object, `{}` when absent or `null`.
fn object(value: Option<&Value>, key: &str) -> Result<Value> {
    match value {
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        Some(Value::Null) | None => Ok(Value::Object(Default::default())),
        Some(other) => Err(Error::InvalidKey {
            key: key.into(),
            expected: "a json object",
            found: short(other),
        }),
    }
}

/// The language model of a vision-language config of `model_type`.
fn language_model(model_type: &str, value: &Value, keys: &Keys) -> Result<Transformer> {
    let mut text = match (model_type, &keys.text_config) {
        // Qwen2-VL configs before `transformers` 4.52 keep the language model's keys at the
        // top level.
        ("qwen2_vl" | "qwen2_5_vl", None | Some(Value::Null)) => value.clone(),
        _ => object(keys.text_config.as_ref(), "text_config")?,
    };
    let default_type = match model_type {
        "gemma3" => "gemma3_text",
        "mistral3" => "mistral",
        "qwen2_vl" | "qwen2_5_vl" | "llava_onevision" => "qwen2",
        "paligemma" => "gemma",
        _ => "llama",
    };
    let inner = text.get("model_type").and_then(Value::as_str);
    let text_type = match inner {
        None => default_type,
        Some("qwen2_vl_text" | "qwen2_5_vl_text" | "qwen2_vl" | "qwen2_5_vl") => "qwen2",
        Some(t) if MULTIMODAL_MODEL_TYPES.contains(&t) => {
            return Err(Error::InvalidKey {
                key: "text_config.model_type".into(),
                expected: "a language model's model_type",
                found: t.into(),
            });
        }
        Some(t) => t,
    };
    let text_type = text_type.to_string();
    text["model_type"] = Value::from(text_type);
    from_hf_config(&text)
}

/// The count `vision_feature_layer` concatenates: one for an index, the list's length for a
/// list.
fn feature_layers(v: Option<&Value>) -> Result<u64> {
    match v {
        None | Some(Value::Null) | Some(Value::Number(_)) => Ok(1),
        Some(Value::Array(a)) if !a.is_empty() => Ok(a.len() as u64),
        Some(other) => Err(Error::InvalidKey {
            key: "vision_feature_layer".into(),
            expected: "a layer index or a non-empty list of them",
            found: short(other),
        }),
    }
}

/// A tower class's defaults: hidden size, MLP width, layers, heads, patch size, image side.
type TowerDefaults = (u64, u64, u64, u64, u64, u64);

/// The tower of a `vision_config` whose module layout is `kind`, with its class's defaults.
fn tower(kind: TowerKind, k: &TowerKeys, family_defaults: TowerDefaults) -> Result<VisionTower> {
    let (hidden, inter, layers, heads, patch, image) = match kind {
        TowerKind::Siglip { .. } | TowerKind::Clip => family_defaults,
        TowerKind::Pixtral => (1024, 4096, 24, 16, 16, 1024),
        TowerKind::Qwen2Vl | TowerKind::Qwen25Vl => (1280, 3420, 32, 16, 14, 0),
    };
    let hidden = match kind {
        // Qwen2-VL's tower width is `embed_dim`; its `hidden_size` is the merger's output.
        TowerKind::Qwen2Vl => or(k.embed_dim, 1280),
        TowerKind::Qwen25Vl => or(k.hidden_size, 3584),
        _ => or(k.hidden_size, hidden),
    };
    let intermediate = match (kind, k.mlp_ratio) {
        (TowerKind::Qwen2Vl, ratio) => {
            let r = ratio.unwrap_or(4.0);
            if !(r.is_finite() && r > 0.0 && r <= 64.0) {
                return Err(Error::InvalidKey {
                    key: "vision_config.mlp_ratio".into(),
                    expected: "a ratio in (0, 64]",
                    found: r.to_string(),
                });
            }
            crate::error::to_u64((hidden as f64 * r).floor(), "vision MLP width")?
        }
        _ => or(k.intermediate_size, inter),
    };
    let t = VisionTower {
        kind,
        hidden_size: hidden,
        intermediate_size: intermediate,
        num_layers: or(k.num_hidden_layers, layers),
        num_heads: or(k.num_attention_heads, heads),
        patch_size: or(k.patch_size, patch),
        image_size: match kind {
            TowerKind::Qwen2Vl | TowerKind::Qwen25Vl => None,
            _ => Some(or(k.image_size, image)),
        },
        num_channels: or(k.num_channels, 3),
        temporal_patch_size: match kind {
            TowerKind::Qwen2Vl | TowerKind::Qwen25Vl => or(k.temporal_patch_size, 2),
            _ => 1,
        },
    };
    Ok(t)
}

/// The vision encoder of a vision-language config.
fn encoder(model_type: &str, keys: &Keys, text_hidden: u64) -> Result<VisionEncoder> {
    let vision = object(keys.vision_config.as_ref(), "vision_config")?;
    let k: TowerKeys = read(&vision)?;
    let (kind, defaults) = tower_kind(model_type, keys, &k)?;
    let tower = tower(kind, &k, defaults)?;
    let (projector, text_hidden_size) = projector(model_type, kind, keys, &k, text_hidden)?;
    let encoder = VisionEncoder {
        tower,
        projector,
        text_hidden_size,
    };
    encoder.validate()?;
    Ok(encoder)
}

/// The tower's module layout for `model_type` and the `vision_config`'s own `model_type`,
/// with the class defaults of the keys it leaves out; an unknown tower is an error naming it.
fn tower_kind(model_type: &str, keys: &Keys, k: &TowerKeys) -> Result<(TowerKind, TowerDefaults)> {
    let tower_type = k.model_type.as_deref();
    let unknown = |found: &str| Error::InvalidKey {
        key: "vision_config.model_type".into(),
        expected: "a vision tower this reader counts (siglip_vision_model, clip_vision_model, pixtral, idefics3_vision, smolvlm_vision, or Qwen's own)",
        found: found.into(),
    };
    // The tower's class defaults for keys the config leaves out (`transformers`): LLaVA's
    // CLIP ViT-L/14 at 336 px when `vision_config` is absent, else CLIPVisionConfig's;
    // LLaVA-OneVision's SigLIP (26 layers at 384 px), PaliGemma's (27 layers, MLP 4096, 224 px),
    // Idefics3VisionConfig's and SmolVLMVisionConfig's, else SiglipVisionConfig's.
    let defaults = match (model_type, tower_type) {
        ("llava" | "llava_next", None) if keys.vision_config.is_none() => {
            (1024, 4096, 24, 16, 14, 336)
        }
        ("llava_onevision", _) => (1152, 4304, 26, 16, 14, 384),
        ("paligemma", _) => (1152, 4096, 27, 16, 14, 224),
        ("idefics3", _) => (1152, 3072, 12, 16, 32, 224),
        ("smolvlm", _) => (1152, 3072, 12, 16, 32, 224),
        (_, Some("clip_vision_model")) | ("llava" | "llava_next", None) => {
            (768, 3072, 12, 12, 32, 224)
        }
        _ => (768, 3072, 12, 12, 16, 224),
    };
    let siglip = |head_by_default: bool| TowerKind::Siglip {
        use_head: k.vision_use_head.unwrap_or(head_by_default),
    };
    let kind = match (model_type, tower_type) {
        ("gemma3", None | Some("siglip_vision_model")) => siglip(true),
        ("llava" | "llava_next", Some("siglip_vision_model")) => siglip(true),
        ("llava_onevision", None) => siglip(false),
        ("llava_onevision", Some("siglip_vision_model")) => siglip(true),
        ("paligemma", None | Some("siglip_vision_model")) => siglip(false),
        // Idefics3's and SmolVLM's towers are SigLIP's layers without the head.
        // (their released configs name the tower `idefics3` and `smolvlm_vision`).
        ("idefics3", None | Some("idefics3" | "idefics3_vision"))
        | ("smolvlm", None | Some("smolvlm" | "smolvlm_vision")) => {
            TowerKind::Siglip { use_head: false }
        }
        ("llava" | "llava_next", None | Some("clip_vision_model")) => TowerKind::Clip,
        ("llava" | "llava_next" | "mistral3", Some("pixtral")) | ("mistral3", None) => {
            TowerKind::Pixtral
        }
        ("qwen2_vl", None | Some("qwen2_vl")) => TowerKind::Qwen2Vl,
        ("qwen2_5_vl", None | Some("qwen2_5_vl")) => TowerKind::Qwen25Vl,
        (_, Some(t)) => return Err(unknown(t)),
        (t, None) => return Err(unknown(t)),
    };
    Ok((kind, defaults))
}

/// The projector of `model_type` and the width it writes (the language model's, but for
/// PaliGemma's `projection_dim` and Qwen's merger output).
fn projector(
    model_type: &str,
    kind: TowerKind,
    keys: &Keys,
    k: &TowerKeys,
    text_hidden: u64,
) -> Result<(ProjectorKind, u64)> {
    let merge = |default: u64, key: Option<Count>| or(key, default);
    Ok(match model_type {
        "gemma3" => (
            ProjectorKind::Gemma3 {
                tokens_per_image: or(keys.mm_tokens_per_image, 256),
            },
            text_hidden,
        ),
        "llava" | "llava_next" | "llava_onevision" => (
            ProjectorKind::Llava {
                feature_layers: feature_layers(keys.vision_feature_layer.as_ref())?,
                bias: keys.multimodal_projector_bias.unwrap_or(true),
                image_newline: model_type != "llava",
            },
            text_hidden,
        ),
        // `vision_config.projection_dim` (the top level's when absent), the language model's
        // width by default.
        "paligemma" => (
            ProjectorKind::Linear,
            or(k.projection_dim.or(keys.projection_dim), text_hidden),
        ),
        "idefics3" | "smolvlm" => (
            ProjectorKind::PixelShuffle {
                scale: or(keys.scale_factor, 2),
            },
            text_hidden,
        ),
        "mistral3" => (
            ProjectorKind::Mistral3 {
                spatial_merge: merge(2, keys.spatial_merge_size),
                bias: keys.multimodal_projector_bias.unwrap_or(false),
            },
            text_hidden,
        ),
        _ => {
            // The merger writes the language model's width: `out_hidden_size` (Qwen2.5-VL) or
            // `hidden_size` (Qwen2-VL's vision config).
            let out = match kind {
                TowerKind::Qwen2Vl => or(k.hidden_size, 3584),
                _ => or(k.out_hidden_size, 3584),
            };
            (
                ProjectorKind::QwenMerger {
                    spatial_merge: merge(2, k.spatial_merge_size),
                },
                out,
            )
        }
    })
}

/// Read a vision-language config of `model_type` (one of [`MULTIMODAL_MODEL_TYPES`]).
pub(super) fn read_checkpoint(model_type: &str, value: &Value) -> Result<Checkpoint> {
    let keys: Keys = read(value)?;
    let language_model = language_model(model_type, value, &keys)?;
    let vision = encoder(model_type, &keys, language_model.hidden_size)?;
    vision.params()?;
    Ok(Checkpoint {
        language_model,
        vision: Some(vision),
    })
}

/// A checkpoint's parameters: the language model's by component, and what the vision encoder
/// adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CheckpointCounts {
    /// Everything the checkpoint stores: language model, vision encoder and projector.
    pub total_params: u64,
    /// The language model.
    pub language_model_params: u64,
    /// The image tower.
    pub vision_encoder_params: u64,
    /// The projector into the language model.
    pub multimodal_projector_params: u64,
    /// The language model by component.
    pub language: crate::model::params::ParamCounts,
}

impl Checkpoint {
    /// The checkpoint's parameters (the language model's without its multi-token-prediction
    /// modules, as [`Transformer::param_counts`]).
    ///
    /// # Errors
    /// Counts that overflow `u64`, or a model that breaks a rule.
    pub fn param_counts(&self) -> Result<CheckpointCounts> {
        let language = self.language_model.param_counts()?;
        let vision = match &self.vision {
            Some(v) => v.params()?,
            None => Default::default(),
        };
        Ok(CheckpointCounts {
            total_params: crate::error::sum(
                &[
                    language.total_params,
                    vision.vision_encoder_params,
                    vision.multimodal_projector_params,
                ],
                "checkpoint parameters",
            )?,
            language_model_params: language.total_params,
            vision_encoder_params: vision.vision_encoder_params,
            multimodal_projector_params: vision.multimodal_projector_params,
            language,
        })
    }
}
