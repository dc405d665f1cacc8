//! Vision encoders of vision-language checkpoints: the image tower and the projector into the
//! language model, counted tensor by tensor as the checkpoint stores them, and their forward
//! FLOPs per image.
//!
//! The module layouts follow Hugging Face `transformers`: `SiglipVisionModel` (Gemma 3),
//! `CLIPVisionModel` (LLaVA, LLaVA-NeXT), `PixtralVisionModel` (Pixtral, Mistral 3),
//! `Qwen2VisionTransformerPretrainedModel` and `Qwen2_5_VisionTransformerPretrainedModel`; the
//! projectors `Gemma3MultiModalProjector`, `LlavaMultiModalProjector` (LLaVA-OneVision's
//! alike), `Mistral3MultiModalProjector`, the Qwen patch mergers, `PaliGemmaMultiModalProjector`
//! and the Idefics3/SmolVLM connector (whose towers are SigLIP's layout without the head).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The image tower's module layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TowerKind {
    /// SigLIP: patch convolution with bias, a learned position per patch, pre-norm layers
    /// with LayerNorms and biased projections, a GELU MLP, a final LayerNorm and, when
    /// `use_head`, the attention-pooling head.
    Siglip {
        /// The multihead attention-pooling head (`vision_use_head`).
        use_head: bool,
    },
    /// CLIP: a class embedding, patch convolution without bias, a learned position per patch
    /// and the class token, a LayerNorm before and after the layers, layers as SigLIP's.
    Clip,
    /// Pixtral: patch convolution without bias, an RMSNorm before the layers, layers with
    /// RMSNorms, unbiased projections and a gated MLP; rotary positions, no final norm.
    Pixtral,
    /// Qwen2-VL: a 3-D patch convolution without bias over `temporal_patch_size` frames,
    /// layers with LayerNorms, a fused biased QKV, and a biased GELU MLP of `intermediate`.
    Qwen2Vl,
    /// Qwen2.5-VL: as Qwen2-VL with RMSNorms and a biased gated MLP.
    Qwen25Vl,
}

/// The image tower: its layout and sizes, as its `vision_config` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VisionTower {
    /// Module layout.
    pub kind: TowerKind,
    /// Width of the tower's layers.
    pub hidden_size: u64,
    /// MLP width.
    pub intermediate_size: u64,
    /// Layers.
    pub num_layers: u64,
    /// Attention heads.
    pub num_heads: u64,
    /// Patch side, pixels.
    pub patch_size: u64,
    /// Image side the tower was trained at, pixels (`None` for dynamic resolution).
    pub image_size: Option<u64>,
    /// Input channels.
    pub num_channels: u64,
    /// Frames per 3-D patch (Qwen's video patches; 1 otherwise).
    pub temporal_patch_size: u64,
}

/// The projector from the tower's width to the language model's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectorKind {
    /// Gemma 3: the patches average-pooled to `tokens_per_image`, an RMSNorm of the tower's
    /// width and one unbiased projection (`mm_soft_emb_norm`, `mm_input_projection_weight`).
    Gemma3 {
        /// Image tokens after pooling (`mm_tokens_per_image`).
        tokens_per_image: u64,
    },
    /// LLaVA: two linear layers (tower width × `feature_layers` → text, text → text) with a
    /// GELU between, biased when `bias`; LLaVA-NeXT adds one learned `image_newline` row.
    Llava {
        /// Tower layers concatenated as features (`vision_feature_layer` as a list).
        feature_layers: u64,
        /// `multimodal_projector_bias`.
        bias: bool,
        /// LLaVA-NeXT's `image_newline` parameter.
        image_newline: bool,
    },
    /// Mistral 3: an RMSNorm, a patch merger (`spatial_merge_size²` patches → one, an
    /// unbiased linear layer of the tower's width), then LLaVA's two linear layers.
    Mistral3 {
        /// Patches merged per side.
        spatial_merge: u64,
        /// `multimodal_projector_bias`.
        bias: bool,
    },
    /// Qwen's patch merger: a norm of the tower's width (LayerNorm for Qwen2-VL, RMSNorm for
    /// Qwen2.5-VL), then `spatial_merge²` patches concatenated through two biased linear
    /// layers to the language model's width.
    QwenMerger {
        /// Patches merged per side.
        spatial_merge: u64,
    },
    /// PaliGemma: one biased linear layer from the tower's width to the language model's
    /// (`PaliGemmaMultiModalProjector`).
    Linear,
    /// Idefics3 and SmolVLM: a pixel shuffle folding `scale²` patches into one token, then one
    /// unbiased linear layer of `scale²` × the tower's width to the language model's
    /// (`Idefics3Connector`, `SmolVLMConnector`).
    PixelShuffle {
        /// Patches folded per side (`scale_factor`).
        scale: u64,
    },
}

/// A vision-language checkpoint's encoder: tower and projector into a language model of width
/// `text_hidden_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VisionEncoder {
    /// The image tower.
    pub tower: VisionTower,
    /// The projector.
    pub projector: ProjectorKind,
    /// The language model's width.
    pub text_hidden_size: u64,
}

/// Parameters of the encoder by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VisionCounts {
    /// The image tower.
    pub vision_encoder_params: u64,
    /// The projector (with LLaVA-NeXT's `image_newline`).
    pub multimodal_projector_params: u64,
}

const W: &str = "vision encoder parameters";

fn mul(a: u64, b: u64) -> Result<u64> {
    crate::error::mul(a, b, W)
}

fn sum(xs: &[u64]) -> Result<u64> {
    crate::error::sum(xs, W)
}

/// A linear layer `a → b`, with its bias when `bias`.
fn linear(a: u64, b: u64, bias: bool) -> Result<u64> {
    sum(&[mul(a, b)?, if bias { b } else { 0 }])
}

impl VisionTower {
    /// Patches per side at `side` pixels.
    fn patches_per_side(&self, side: u64) -> u64 {
        side / self.patch_size
    }

    /// Parameters of the tower, tensor by tensor.
    ///
    /// # Errors
    /// A zero patch size, or counts that overflow `u64`.
    pub fn params(&self) -> Result<u64> {
        crate::error::positive(self.patch_size, "vision_config.patch_size")?;
        let h = self.hidden_size;
        let i = self.intermediate_size;
        let patch_pixels = mul(mul(self.patch_size, self.patch_size)?, self.num_channels)?;
        let patch_pixels = mul(patch_pixels, self.temporal_patch_size)?;
        let conv = mul(patch_pixels, h)?;
        let positions = match self.image_size {
            Some(s) => mul(self.patches_per_side(s), self.patches_per_side(s))?,
            None => 0,
        };
        let layer_norm = mul(2, h)?;
        // Biased q, k, v and output projections, and a GELU MLP, as SigLIP, CLIP and Qwen2-VL
        // keep them (Qwen's QKV fused, the same count).
        let biased_attention = mul(4, linear(h, h, true)?)?;
        let biased_mlp = sum(&[linear(h, i, true)?, linear(i, h, true)?])?;
        let (stem, layer, tail) = match self.kind {
            TowerKind::Siglip { use_head } => {
                let head = if use_head {
                    // Probe, nn.MultiheadAttention (in_proj 3h×h with bias, out_proj), a
                    // LayerNorm and the MLP.
                    sum(&[
                        h,
                        linear(h, mul(3, h)?, true)?,
                        linear(h, h, true)?,
                        layer_norm,
                        biased_mlp,
                    ])?
                } else {
                    0
                };
                (
                    sum(&[conv, h, mul(positions, h)?])?,
                    sum(&[mul(2, layer_norm)?, biased_attention, biased_mlp])?,
                    sum(&[layer_norm, head])?,
                )
            }
            TowerKind::Clip => (
                sum(&[h, conv, mul(sum(&[positions, 1])?, h)?, layer_norm])?,
                sum(&[mul(2, layer_norm)?, biased_attention, biased_mlp])?,
                layer_norm,
            ),
            TowerKind::Pixtral => (
                sum(&[conv, h])?,
                sum(&[mul(2, h)?, mul(4, mul(h, h)?)?, mul(3, mul(h, i)?)?])?,
                0,
            ),
            TowerKind::Qwen2Vl => (
                conv,
                sum(&[mul(2, layer_norm)?, biased_attention, biased_mlp])?,
                0,
            ),
            TowerKind::Qwen25Vl => (
                conv,
                sum(&[
                    mul(2, h)?,
                    biased_attention,
                    mul(2, linear(h, i, true)?)?,
                    linear(i, h, true)?,
                ])?,
                0,
            ),
        };
        sum(&[stem, mul(layer, self.num_layers)?, tail])
    }

    /// Matmul parameters of one layer (what each patch token multiplies by).
    fn layer_matmul_params(&self) -> Result<u64> {
        let (h, i) = (self.hidden_size, self.intermediate_size);
        let mlp_matrices = match self.kind {
            TowerKind::Pixtral | TowerKind::Qwen25Vl => 3,
            _ => 2,
        };
        sum(&[mul(4, mul(h, h)?)?, mul(mlp_matrices, mul(h, i)?)?])
    }
}

impl VisionEncoder {
    /// Every size positive: a tower with no width, layer, head, patch or channel, or a
    /// projector with no output, merge or tokens, is not a vision encoder.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] naming the size.
    pub fn validate(&self) -> Result<()> {
        let t = &self.tower;
        let mut sizes = vec![
            (t.hidden_size, "vision_config.hidden_size"),
            (t.intermediate_size, "vision_config.intermediate_size"),
            (t.num_layers, "vision_config.num_hidden_layers"),
            (t.num_heads, "vision_config.num_attention_heads"),
            (t.patch_size, "vision_config.patch_size"),
            (t.num_channels, "vision_config.num_channels"),
            (t.temporal_patch_size, "vision_config.temporal_patch_size"),
            (self.text_hidden_size, "projector output width"),
        ];
        match self.projector {
            ProjectorKind::Gemma3 { tokens_per_image } => {
                sizes.push((tokens_per_image, "mm_tokens_per_image"));
            }
            ProjectorKind::Llava { feature_layers, .. } => {
                sizes.push((feature_layers, "vision_feature_layer count"));
            }
            ProjectorKind::Mistral3 { spatial_merge, .. }
            | ProjectorKind::QwenMerger { spatial_merge } => {
                sizes.push((spatial_merge, "spatial_merge_size"));
            }
            ProjectorKind::Linear => {}
            ProjectorKind::PixelShuffle { scale } => sizes.push((scale, "scale_factor")),
        }
        for (value, field) in sizes {
            crate::error::positive(value, field)?;
        }
        Ok(())
    }

    /// Parameters of the tower and of the projector.
    ///
    /// ```
    /// use lmshape::model::vision::*;
    /// // LLaVA-1.5-7B: CLIP ViT-L/14 at 336 px and a two-layer projector into 4096.
    /// let e = VisionEncoder {
    ///     tower: VisionTower { kind: TowerKind::Clip, hidden_size: 1024, intermediate_size: 4096,
    ///         num_layers: 24, num_heads: 16, patch_size: 14, image_size: Some(336),
    ///         num_channels: 3, temporal_patch_size: 1 },
    ///     projector: ProjectorKind::Llava { feature_layers: 1, bias: true, image_newline: false },
    ///     text_hidden_size: 4096,
    /// };
    /// let c = e.params()?;
    /// assert_eq!(c.vision_encoder_params, 303_507_456);
    /// assert_eq!(c.multimodal_projector_params, 20_979_712);
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    ///
    /// # Errors
    /// A zero size ([`VisionEncoder::validate`]), or counts that overflow `u64`.
    pub fn params(&self) -> Result<VisionCounts> {
        self.validate()?;
        let v = self.tower.hidden_size;
        let t = self.text_hidden_size;
        let projector = match self.projector {
            ProjectorKind::Gemma3 { .. } => sum(&[v, mul(v, t)?])?,
            ProjectorKind::Llava {
                feature_layers,
                bias,
                image_newline,
            } => sum(&[
                linear(mul(v, feature_layers)?, t, bias)?,
                linear(t, t, bias)?,
                if image_newline { t } else { 0 },
            ])?,
            ProjectorKind::Mistral3 {
                spatial_merge,
                bias,
            } => sum(&[
                v,
                mul(mul(v, mul(spatial_merge, spatial_merge)?)?, v)?,
                linear(v, t, bias)?,
                linear(t, t, bias)?,
            ])?,
            ProjectorKind::QwenMerger { spatial_merge } => {
                let norm = match self.tower.kind {
                    TowerKind::Qwen2Vl => mul(2, v)?,
                    _ => v,
                };
                let merged = mul(v, mul(spatial_merge, spatial_merge)?)?;
                sum(&[
                    norm,
                    linear(merged, merged, true)?,
                    linear(merged, t, true)?,
                ])?
            }
            ProjectorKind::Linear => linear(v, t, true)?,
            ProjectorKind::PixelShuffle { scale } => linear(mul(v, mul(scale, scale)?)?, t, false)?,
        };
        Ok(VisionCounts {
            vision_encoder_params: self.tower.params()?,
            multimodal_projector_params: projector,
        })
    }

    /// The image side FLOPs are counted at: the tower's own resolution, else (dynamic
    /// resolution) 448 pixels — an assumption, the side of Qwen2-VL's examples.
    pub fn image_side(&self) -> u64 {
        self.tower.image_size.unwrap_or(448)
    }

    /// Forward FLOPs of one square image of `side` pixels through tower and projector: two per
    /// multiply-accumulate of every matmul (patch embedding, each layer's projections and MLP,
    /// the projector on the tokens it sees) plus full (non-causal) attention, `4·n²·h` per
    /// layer over `n` patches (Kaplan et al. 2020 Table 1's counting, bidirectional).
    ///
    /// # Errors
    /// A zero size, a side below one patch, or counts that overflow.
    pub fn forward_flops_per_image(&self, side: u64) -> Result<f64> {
        self.validate()?;
        let t = &self.tower;
        let per_side = t.patches_per_side(side);
        if per_side == 0 {
            return Err(Error::Inconsistent {
                rule: "an image holds at least one patch",
                detail: format!("side = {side} px, patch_size = {}", t.patch_size),
            });
        }
        let n = (per_side as f64).powi(2)
            + if matches!(t.kind, TowerKind::Clip) {
                1.0
            } else {
                0.0
            };
        let h = t.hidden_size as f64;
        let patch_pixels = (t.patch_size as f64).powi(2) * t.num_channels as f64;
        let layers = t.num_layers as f64;
        let tower = 2.0 * n * patch_pixels * h
            + layers * (2.0 * n * t.layer_matmul_params()? as f64 + 4.0 * n * n * h);
        let (v, txt) = (h, self.text_hidden_size as f64);
        // Each projector token's multiply-accumulates, and the tokens it sees.
        let (projector_macs, projector_tokens) = match self.projector {
            ProjectorKind::Gemma3 { tokens_per_image } => (v * txt, tokens_per_image as f64),
            ProjectorKind::Llava { feature_layers, .. } => {
                (v * feature_layers as f64 * txt + txt * txt, n)
            }
            ProjectorKind::Mistral3 { spatial_merge, .. } => {
                let merged = (spatial_merge as f64).powi(2);
                (v * merged * v + v * txt + txt * txt, n / merged)
            }
            ProjectorKind::QwenMerger { spatial_merge } => {
                let merged = (spatial_merge as f64).powi(2);
                let m = v * merged;
                (m * m + m * txt, n / merged)
            }
            ProjectorKind::Linear => (v * txt, n),
            ProjectorKind::PixelShuffle { scale } => {
                let folded = (scale as f64).powi(2);
                (v * folded * txt, n / folded)
            }
        };
        let flops = tower + 2.0 * projector_tokens * projector_macs;
        if !flops.is_finite() {
            return Err(Error::Overflow {
                what: "vision FLOPs per image",
            });
        }
        Ok(flops)
    }
}
