//! Shape heuristics: Kaplan's aspect ratio, Levine's width–depth relation, and published
//! large-model shapes to compare against.

use crate::error::{Result, positive_f64};
use crate::model::Transformer;
use serde::{Deserialize, Serialize};

/// Aspect ratios `d_model / n_layer` Kaplan et al. 2020 name as within 3% in loss of each other:
/// "an (n_layer, d_model) = (6, 4288) reaches a loss within 3% of the (48, 1600) model"
/// (§3.2, Figure 5 caption: aspect ratio "can vary by a factor of 40 while only slightly
/// impacting performance"). 1600/48 ≈ 33.3 to 4288/6 ≈ 714.7.
pub const KAPLAN_FLAT_ASPECT_RANGE: (f64, f64) = (1600.0 / 48.0, 4288.0 / 6.0);

/// Where a shape sits relative to Kaplan's flat range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AspectVerdict {
    /// Deeper and narrower than the flat range.
    TooDeep,
    /// Inside the range Kaplan found within ~3%.
    Flat,
    /// Wider and shallower than the range.
    TooWide,
}

/// Kaplan's verdict on an aspect ratio.
///
/// ```
/// use lmshape::heuristics::{aspect_verdict, AspectVerdict};
/// assert_eq!(aspect_verdict(12288.0 / 96.0), AspectVerdict::Flat); // GPT-3 175B
/// assert_eq!(aspect_verdict(10.0), AspectVerdict::TooDeep);
/// ```
pub fn aspect_verdict(aspect_ratio: f64) -> AspectVerdict {
    let (lo, hi) = KAPLAN_FLAT_ASPECT_RANGE;
    if aspect_ratio < lo {
        AspectVerdict::TooDeep
    } else if aspect_ratio > hi {
        AspectVerdict::TooWide
    } else {
        AspectVerdict::Flat
    }
}

/// Levine et al. 2020 ("Limits to Depth Efficiencies of Self-Attention") as BigScience applied
/// it (bigscience-workshop/bigscience, `math/README.md`): the optimal width for depth `L` is
/// `exp(5.039 + 0.0555 · L)`.
///
/// ```
/// let w = lmshape::heuristics::levine_optimal_width(80.0);
/// assert!((w - 13080.0).abs() < 10.0);
/// ```
pub fn levine_optimal_width(num_layers: f64) -> f64 {
    (5.039 + 0.0555 * num_layers).exp()
}

/// The depth whose Levine-optimal width gives `params` non-embedding parameters under
/// `N ≈ 12 · L · w²` (Kaplan et al. 2020 §2.1), solved by bisection (the product is increasing
/// in `L`). For 175B this is about 80 layers, as BigScience noted.
///
/// ```
/// let l = lmshape::heuristics::levine_depth_for_params(175e9)?;
/// assert!((l - 80.0).abs() < 2.0);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// A size that is not finite and positive.
pub fn levine_depth_for_params(params: f64) -> Result<f64> {
    positive_f64(params, "params")?;
    let n = |l: f64| crate::params::kaplan_approx_params_f64(l, levine_optimal_width(l));
    let (mut lo, mut hi) = (1e-6, 1.0);
    while n(hi) < params {
        hi *= 2.0;
        if hi > 1e6 {
            break;
        }
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if n(mid) < params {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(0.5 * (lo + hi))
}

/// How a shape compares with the heuristics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShapeHeuristics {
    /// `d / L`.
    pub aspect_ratio: f64,
    /// Kaplan's verdict.
    pub aspect_verdict: AspectVerdict,
    /// Levine-preferred depth for this shape's non-embedding parameter count.
    pub levine_depth: f64,
    /// `L − levine_depth` (negative: shallower than Levine prefers).
    pub levine_depth_delta: f64,
    /// `d / levine_optimal_width(L)` (> 1: wider than optimal for the depth).
    pub levine_width_ratio: f64,
}

/// Evaluate the heuristics for a model.
///
/// ```
/// let bloom = lmshape::presets::by_name("bloom-176b")?;
/// let h = lmshape::heuristics::evaluate(&bloom)?;
/// assert!(h.levine_depth_delta < 0.0); // BLOOM's 70 layers are shallower than ~80
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// A model that breaks one of its rules ([`crate::Transformer::validate`]) or counts that overflow `u64`.
pub fn evaluate(model: &Transformer) -> Result<ShapeHeuristics> {
    let n = model.param_counts()?.non_embedding_params as f64;
    let l = model.num_layers as f64;
    let levine_depth = levine_depth_for_params(n)?;
    let aspect_ratio = model.aspect_ratio();
    Ok(ShapeHeuristics {
        aspect_ratio,
        aspect_verdict: aspect_verdict(aspect_ratio),
        levine_depth,
        levine_depth_delta: l - levine_depth,
        levine_width_ratio: model.hidden_size as f64 / levine_optimal_width(l),
    })
}

/// A published large-model shape.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PublishedShape {
    /// Model name.
    pub name: &'static str,
    /// Nominal size as published.
    pub params_nominal: f64,
    /// Layers.
    pub num_layers: u64,
    /// Hidden size.
    pub hidden_size: u64,
    /// Attention heads.
    pub num_heads: u64,
    /// Where the shape is published.
    pub source: &'static str,
}

impl PublishedShape {
    /// The published shape named `name` (as in [`PUBLISHED_SHAPES`]).
    ///
    /// ```
    /// let s = lmshape::heuristics::PublishedShape::by_name("BLOOM 176B")?;
    /// assert_eq!((s.num_layers, s.hidden_size, s.num_heads), (70, 14336, 112));
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`crate::Error::UnknownName`] listing the published shapes.
    pub fn by_name(name: &str) -> Result<PublishedShape> {
        PUBLISHED_SHAPES
            .iter()
            .find(|s| s.name == name)
            .copied()
            .ok_or_else(|| crate::error::Error::UnknownName {
                kind: "published shape",
                name: name.to_string(),
                known: PUBLISHED_SHAPES
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// `d / L`.
    pub fn aspect_ratio(&self) -> f64 {
        self.hidden_size as f64 / self.num_layers as f64
    }
}

/// Published shapes of large decoder-only models (as collected in the project's
/// `large_model_shapes.json`, each row citing its paper or model card).
pub const PUBLISHED_SHAPES: &[PublishedShape] = &[
    PublishedShape {
        name: "GPT-3 175B",
        params_nominal: 175e9,
        num_layers: 96,
        hidden_size: 12288,
        num_heads: 96,
        source: "Brown et al. 2020 Table 2.1",
    },
    PublishedShape {
        name: "Jurassic-1 Jumbo",
        params_nominal: 178e9,
        num_layers: 76,
        hidden_size: 13824,
        num_heads: 96,
        source: "Lieber et al. 2021",
    },
    PublishedShape {
        name: "Gopher 280B",
        params_nominal: 280e9,
        num_layers: 80,
        hidden_size: 16384,
        num_heads: 128,
        source: "Rae et al. 2021; Hoffmann et al. 2022 Table 4",
    },
    PublishedShape {
        name: "Chinchilla 70B",
        params_nominal: 70e9,
        num_layers: 80,
        hidden_size: 8192,
        num_heads: 64,
        source: "Hoffmann et al. 2022 Table 4",
    },
    PublishedShape {
        name: "Megatron-Turing NLG 530B",
        params_nominal: 530e9,
        num_layers: 105,
        hidden_size: 20480,
        num_heads: 128,
        source: "Smith et al. 2022 §3",
    },
    PublishedShape {
        name: "BLOOM 176B",
        params_nominal: 176e9,
        num_layers: 70,
        hidden_size: 14336,
        num_heads: 112,
        source: "BigScience 2022 model card",
    },
    PublishedShape {
        name: "OPT 175B",
        params_nominal: 175e9,
        num_layers: 96,
        hidden_size: 12288,
        num_heads: 96,
        source: "Zhang et al. 2022 Table 1",
    },
    PublishedShape {
        name: "LLaMA 65B",
        params_nominal: 65.2e9,
        num_layers: 80,
        hidden_size: 8192,
        num_heads: 64,
        source: "Touvron et al. 2023 Table 2",
    },
    PublishedShape {
        name: "PaLM 540B",
        params_nominal: 540.35e9,
        num_layers: 118,
        hidden_size: 18432,
        num_heads: 48,
        source: "Chowdhery et al. 2022 Table 1",
    },
    PublishedShape {
        name: "Megatron-LM 145B",
        params_nominal: 145e9,
        num_layers: 80,
        hidden_size: 12288,
        num_heads: 96,
        source: "Narayanan et al. 2021 Table 1 (BigScience reference list)",
    },
    PublishedShape {
        name: "Megatron-LM 310B",
        params_nominal: 310e9,
        num_layers: 96,
        hidden_size: 16384,
        num_heads: 128,
        source: "Narayanan et al. 2021 Table 1 (BigScience reference list)",
    },
];

/// The published shapes ordered by how close their nominal size is to `params` (log ratio).
///
/// ```
/// let near = lmshape::heuristics::nearest_published(175e9);
/// assert!(near[0].params_nominal >= 170e9 && near[0].params_nominal <= 180e9);
/// ```
pub fn nearest_published(params: f64) -> Vec<PublishedShape> {
    let mut v = PUBLISHED_SHAPES.to_vec();
    let d = |s: &PublishedShape| (s.params_nominal / params).ln().abs();
    v.sort_by(|a, b| d(a).total_cmp(&d(b)));
    v
}
