//! Enumeration of every valid shape near a target size, and ranking.
//!
//! A [`ShapeSpace`] states the target size (a range), the architecture and every constraint:
//! tensor/pipeline degrees, allowed head dimensions, hidden a multiple of `M`, key/value
//! grouping, the FFN rule, Megatron-LM's vocabulary padding, the fused-softmax rule and an
//! aspect-ratio window. [`ShapeSpace::check`] is the single validity predicate;
//! [`ShapeSpace::iter`] walks depths, head sizes and widths lazily (no allocation per
//! candidate), jumping to the first in-range width by bisection since the count grows with the
//! width, and yields every shape `check` accepts exactly once, with its exact parameter count.

use crate::error::{Error, Result, positive};
use crate::flops::ParamBasis;
use crate::heuristics::{self, ShapeHeuristics};
use crate::model::{Architecture, Transformer};
use crate::parallel;
use itertools::Itertools;
use serde::{Deserialize, Serialize};

/// How many key/value heads a shape with `h` query heads has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum KvHeads {
    /// Multi-head attention: as many as query heads.
    #[default]
    MultiHead,
    /// Grouped-query attention with this many query heads per kv head (`h % g == 0`).
    GroupSize(u64),
    /// A fixed number of kv heads (1: multi-query) dividing `h`.
    Fixed(u64),
}

/// The FFN width as a function of the hidden size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FfnRule {
    /// `f = ceil(floor(num · d / den) / multiple) · multiple`: `4·d` is `{4, 1, 1}`; LLaMA's
    /// SwiGLU `8/3·d` rounded up to 256 is `{8, 3, 256}` (Touvron et al. 2023,
    /// `multiple_of` in the reference `model.py`).
    Ratio {
        /// Numerator.
        num: u64,
        /// Denominator.
        den: u64,
        /// Round up to a multiple of this.
        multiple: u64,
    },
    /// A fixed width.
    Fixed(u64),
}

impl FfnRule {
    /// GPT-style `4·d`.
    pub const FOUR_D: FfnRule = FfnRule::Ratio {
        num: crate::model::STANDARD_FFN_MULTIPLIER,
        den: 1,
        multiple: 1,
    };
    /// LLaMA-style `8/3·d` rounded up to 256.
    pub const LLAMA: FfnRule = FfnRule::Ratio {
        num: 8,
        den: 3,
        multiple: 256,
    };

    /// The FFN width for hidden size `d` (`None` on overflow or a zero rule).
    pub fn width(self, d: u64) -> Option<u64> {
        match self {
            FfnRule::Fixed(f) => Some(f),
            FfnRule::Ratio { num, den, multiple } => {
                if den == 0 || multiple == 0 {
                    return None;
                }
                let raw = d.checked_mul(num)? / den;
                raw.div_ceil(multiple).checked_mul(multiple)
            }
        }
    }
}

crate::checked::checked_type! {
    /// A region of shape space: its rules hold once built ([`ShapeSpace::validate`]); start
    /// from [`ShapeSpace::around`] or [`ShapeSpace::bloom_reference`] and derive variants with
    /// [`ShapeSpace::to_builder`].
    ///
    /// ```
    /// use lmshape::search::ShapeSpace;
    /// let space = ShapeSpace::bloom_reference()?.to_builder().tp(8).build()?;
    /// assert_eq!(space.tp(), 8);
    /// assert!(space.to_builder().tp(0).build().is_err());
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    pub struct ShapeSpace;
    /// The one way to set a [`ShapeSpace`]'s fields, and its serde form: `build` checks the
    /// space's rules ([`ShapeSpace::validate`]).
    pub struct ShapeSpaceBuilder = "ShapeSpaceBuilder";
    check = validate;
    fields {
        /// The size aimed at (for parameter error), counted in `size_basis`.
        target_params: u64 [copy],
        /// Smallest parameter count accepted, counted in `size_basis`.
        min_params: u64 [copy],
        /// Largest parameter count accepted, counted in `size_basis`.
        max_params: u64 [copy],
        /// Which count the size window applies to: every parameter, or Kaplan et al.'s
        /// non-embedding `N` (the size Kaplan's laws speak of).
        size_basis: ParamBasis [copy, default = "total_basis"],
        /// Architecture knobs of every shape.
        arch: Architecture [copy],
        /// Vocabulary before padding.
        vocab_size: u64 [copy],
        /// Pad the vocabulary to a multiple of `128 · tp` (Megatron-LM).
        pad_vocab: bool [copy],
        /// Sequence length (learned position rows).
        seq_len: u64 [copy],
        /// Tensor-parallel degree.
        tp: u64 [copy],
        /// Pipeline-parallel degree.
        pp: u64 [copy],
        /// Count the embeddings as pipeline slots: `(L + 2) % pp == 0`.
        embedding_pipeline_slots: bool [copy],
        /// Accept depths that do not split evenly over `pp`, balanced
        /// ([`parallel::PipelineSplit`]).
        balanced_pipeline: bool [copy, default = "Default::default"],
        /// Allowed head dimensions (sorted, unique).
        head_dims: Vec<u64> [ref],
        /// Hidden size must be a multiple of this.
        hidden_multiple: u64 [copy],
        /// Key/value heads rule.
        kv_heads: KvHeads [copy],
        /// FFN rule.
        ffn: FfnRule [copy],
        /// When set, require Megatron's fused-softmax rule `(heads/tp) · micro_batch % 4 == 0`
        /// at this micro-batch.
        fused_softmax_micro_batch: Option<u64> [copy],
        /// Smallest `d / L`.
        min_aspect_ratio: f64 [copy],
        /// Largest `d / L` (infinite: no bound; `null` in JSON).
        max_aspect_ratio: f64 [copy, with = "crate::checked::unbounded"],
        /// Fewest layers.
        min_layers: u64 [copy],
        /// Most layers.
        max_layers: u64 [copy],
    }
}

/// One valid shape: the model the space builds (its vocabulary padded as the space pads it)
/// and its exact parameter counts. The shape's layers, width, heads, head size and FFN width
/// are the model's; JSON shows them at the top level, as before.
///
/// ```
/// use lmshape::search::ShapeSpace;
/// let space = ShapeSpace::bloom_reference()?;
/// let s = space.check(70, 14336, 112).unwrap();
/// assert_eq!((s.model.num_layers(), s.model.head_dim()), (70, 128));
/// assert_eq!(s.model.total_params()?, s.params);
/// # Ok::<(), lmshape::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shape {
    /// The model.
    #[serde(flatten)]
    pub model: Transformer,
    /// Exact total parameters.
    pub params: u64,
    /// Exact non-embedding parameters (Kaplan et al. 2020 §2.1).
    pub non_embedding_params: u64,
}

impl Shape {
    /// The parameter count in `basis`.
    pub fn params_in(&self, basis: ParamBasis) -> u64 {
        match basis {
            ParamBasis::Total => self.params,
            ParamBasis::NonEmbedding => self.non_embedding_params,
        }
    }
}

fn total_basis() -> ParamBasis {
    ParamBasis::Total
}

/// Most head sizes a space may allow (every multiple of 8 up to 8192 is 1,024 of them; real
/// models use 64 to 256).
pub const MAX_HEAD_DIMS: usize = 4096;

/// Most depths a space may span (`max_layers − min_layers + 1`): the deepest published models
/// have under 200 layers.
pub const MAX_LAYER_SPAN: u64 = 100_000;

/// Head dimensions `min..=max` in steps of `multiple`; at most [`MAX_HEAD_DIMS`] of them.
///
/// ```
/// assert_eq!(lmshape::search::head_dim_range(64, 128, 32)?, vec![64, 96, 128]);
/// assert!(lmshape::search::head_dim_range(1, 1_000_000_000, 1).is_err());
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// A zero bound or step, an empty range, or a range of more than [`MAX_HEAD_DIMS`] sizes.
pub fn head_dim_range(min: u64, max: u64, multiple: u64) -> Result<Vec<u64>> {
    positive(multiple, "head dim multiple")?;
    positive(min, "min head dim")?;
    if min > max {
        return Err(Error::Inconsistent {
            rule: "head dim range must not be empty",
            detail: format!("min {min} > max {max}"),
        });
    }
    let (first, last) = (min.div_ceil(multiple), max / multiple);
    let count = last.saturating_sub(first).saturating_add(1);
    if first > last || count > MAX_HEAD_DIMS as u64 {
        return Err(Error::Inconsistent {
            rule: "a head-size range holds between 1 and 4096 sizes",
            detail: format!(
                "{min}..={max} in steps of {multiple} holds {}",
                if first > last { 0 } else { count }
            ),
        });
    }
    Ok((first..=last).map(|k| k * multiple).collect())
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl ShapeSpace {
    /// Shapes of `target ± tolerance` (relative) with GPT-style defaults: tp = pp = 1, head
    /// dims 64–256 in steps of 8 (Tensor Core alignment, NVIDIA "Matrix Multiplication
    /// Background"), hidden a multiple of 128, multi-head attention, FFN from the
    /// architecture (4·d, or LLaMA's 8/3·d for gated MLPs), vocabulary padded, sequence 2048.
    ///
    /// # Errors
    /// A zero target or vocabulary, or a tolerance outside `[0, 1)`.
    pub fn around(
        target_params: u64,
        tolerance: f64,
        arch: Architecture,
        vocab_size: u64,
    ) -> Result<ShapeSpace> {
        positive(target_params, "target_params")?;
        if !(tolerance.is_finite() && (0.0..1.0).contains(&tolerance)) {
            return Err(Error::InvalidValue {
                field: "tolerance",
                value: tolerance,
                expected: "in [0, 1)",
            });
        }
        let t = target_params as f64;
        let space = ShapeSpace {
            target_params,
            min_params: (t * (1.0 - tolerance)).ceil() as u64,
            max_params: (t * (1.0 + tolerance)).floor() as u64,
            size_basis: ParamBasis::Total,
            arch,
            vocab_size,
            pad_vocab: true,
            seq_len: 2048,
            tp: 1,
            pp: 1,
            embedding_pipeline_slots: false,
            balanced_pipeline: false,
            head_dims: head_dim_range(64, 256, 8)?,
            hidden_multiple: 128,
            kv_heads: KvHeads::MultiHead,
            ffn: match arch.mlp {
                crate::model::MlpKind::Standard => FfnRule::FOUR_D,
                crate::model::MlpKind::Gated => FfnRule::LLAMA,
            },
            fused_softmax_micro_batch: None,
            min_aspect_ratio: 0.0,
            max_aspect_ratio: f64::INFINITY,
            min_layers: 1,
            max_layers: 1000,
        };
        space.validate()?;
        Ok(space)
    }

    /// The BLOOM case: ≈175B ± 5%, BLOOM architecture, vocabulary 250880, sequence
    /// 2048, tp 4, pp 12 with embedding slots, head dim ≥ 64, hidden a multiple of 128.
    ///
    /// ```
    /// let space = lmshape::search::ShapeSpace::bloom_reference()?;
    /// assert!(space.iter()?.any(|s| (s.model.hidden_size(), s.model.num_layers(), s.model.num_heads()) == (14336, 70, 112)));
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    ///
    /// # Errors
    /// None in practice: the reference space is valid.
    pub fn bloom_reference() -> Result<ShapeSpace> {
        ShapeSpace::around(175_000_000_000, 0.05, Architecture::bloom(), 250_880)?
            .to_builder()
            .tp(4)
            .pp(12)
            .embedding_pipeline_slots(true)
            .build()
    }

    /// Check the space's own settings.
    ///
    /// # Errors
    /// The first setting out of its domain, naming it.
    pub fn validate(&self) -> Result<()> {
        positive(self.tp, "tp")?;
        positive(self.pp, "pp")?;
        positive(self.vocab_size, "vocab_size")?;
        positive(self.seq_len, "seq_len")?;
        positive(self.hidden_multiple, "hidden_multiple")?;
        if self.head_dims.is_empty()
            || self.head_dims.contains(&0)
            || self.head_dims.len() > MAX_HEAD_DIMS
            || !self.head_dims.is_sorted_by(|a, b| a < b)
        {
            return Err(Error::Inconsistent {
                rule: "allowed head dims are 1 to 4096 positive sizes, sorted and unique",
                detail: format!(
                    "{} sizes: {}",
                    self.head_dims.len(),
                    self.head_dims.iter().take(8).join(", ")
                ),
            });
        }
        positive(self.min_layers, "min_layers")?;
        if self.min_layers > self.max_layers || self.max_layers - self.min_layers >= MAX_LAYER_SPAN
        {
            return Err(Error::Inconsistent {
                rule: "the depth range holds between 1 and 100,000 depths",
                detail: format!("layers {}..={}", self.min_layers, self.max_layers),
            });
        }
        match self.kv_heads {
            KvHeads::GroupSize(0) | KvHeads::Fixed(0) => {
                return Err(Error::ZeroSize {
                    field: "kv heads rule",
                });
            }
            _ => {}
        }
        if let FfnRule::Ratio { den: 0, .. }
        | FfnRule::Ratio { multiple: 0, .. }
        | FfnRule::Fixed(0) = self.ffn
        {
            return Err(Error::ZeroSize { field: "ffn rule" });
        }
        if self.min_params > self.max_params {
            return Err(Error::Inconsistent {
                rule: "parameter range must not be empty",
                detail: format!("min {} > max {}", self.min_params, self.max_params),
            });
        }
        if self.min_aspect_ratio.is_nan() || self.max_aspect_ratio.is_nan() {
            return Err(Error::InvalidValue {
                field: "aspect ratio bound",
                value: f64::NAN,
                expected: "a number",
            });
        }
        if self.min_aspect_ratio > self.max_aspect_ratio {
            return Err(Error::Inconsistent {
                rule: "the aspect-ratio window must not be empty",
                detail: format!(
                    "min {} > max {}",
                    self.min_aspect_ratio, self.max_aspect_ratio
                ),
            });
        }
        Ok(())
    }

    /// Vocabulary rows after padding.
    ///
    /// # Errors
    /// As [`crate::parallel::megatron_padded_vocab`].
    pub fn padded_vocab(&self) -> Result<u64> {
        if self.pad_vocab {
            parallel::megatron_padded_vocab(self.vocab_size, self.tp)
        } else {
            Ok(self.vocab_size)
        }
    }

    fn kv_for(&self, heads: u64) -> Option<u64> {
        match self.kv_heads {
            KvHeads::MultiHead => Some(heads),
            KvHeads::GroupSize(g) => (g > 0 && heads % g == 0).then(|| heads / g),
            KvHeads::Fixed(k) => (k > 0 && k <= heads && heads % k == 0).then_some(k),
        }
    }

    /// The depth window and the pipeline rule ([`parallel::check_pipeline_split`]).
    fn layers_ok(&self, l: u64) -> bool {
        (self.min_layers..=self.max_layers).contains(&l)
            && parallel::stage_partition(
                l,
                self.pp,
                &parallel::PipelineSplit {
                    embedding_slots: self.embedding_pipeline_slots,
                    balanced: self.balanced_pipeline,
                    ..parallel::PipelineSplit::default()
                },
                1,
            )
            .is_ok()
    }

    /// The model of a shape (not validated; counts are exact).
    fn model(&self, l: u64, d: u64, heads: u64, kv: u64, ffn: u64, vocab: u64) -> Transformer {
        Transformer {
            vocab_size: vocab,
            hidden_size: d,
            num_layers: l,
            num_heads: heads,
            num_kv_heads: kv,
            head_dim: d / heads.max(1),
            ffn_size: ffn,
            max_positions: self.seq_len,
            arch: self.arch,
            attention: crate::model::Attention::Standard,
            moe: None,
            local_attention: None,
            mtp_layers: 0,
        }
    }

    /// The validity predicate: the shape with `layers`, `hidden` and `heads` if it satisfies
    /// every constraint of the space, with its exact parameter count (`None` as well when the
    /// space itself is invalid, see [`ShapeSpace::validate`]). The layout rules are
    /// [`crate::parallel`]'s, called here, so a shape accepted here passes
    /// [`crate::ParallelLayout::validate`] on the space's `tp` and `pp`.
    pub fn check(&self, layers: u64, hidden: u64, heads: u64) -> Option<Shape> {
        self.validate().ok()?;
        let vocab = self.padded_vocab().ok()?;
        self.check_with_vocab(layers, hidden, heads, vocab)
    }

    fn check_with_vocab(&self, l: u64, d: u64, heads: u64, vocab: u64) -> Option<Shape> {
        if !self.layers_ok(l) || d == 0 || heads == 0 {
            return None;
        }
        if d % self.hidden_multiple != 0 {
            return None;
        }
        let hd = crate::model::split_into_heads(d, heads, ("hidden_size", "num_heads")).ok()?;
        if self.head_dims.binary_search(&hd).is_err() {
            return None;
        }
        let kv = self.kv_for(heads)?;
        let ffn = self.ffn.width(d).filter(|&f| f > 0)?;
        parallel::check_tensor_split(heads, kv, d, ffn, self.tp).ok()?;
        if let Some(mb) = self.fused_softmax_micro_batch {
            if !parallel::fused_softmax_ok(heads, self.tp, mb) {
                return None;
            }
        }
        let aspect = d as f64 / l as f64;
        if aspect < self.min_aspect_ratio || aspect > self.max_aspect_ratio {
            return None;
        }
        let model = self.model(l, d, heads, kv, ffn, vocab);
        // Every shape a space yields is a valid model (its rules and its counts).
        model.validate().ok()?;
        let counts = crate::params::sizes(&model).ok()?;
        let size = match self.size_basis {
            ParamBasis::Total => counts.total_params,
            ParamBasis::NonEmbedding => counts.non_embedding_params,
        };
        (self.min_params..=self.max_params)
            .contains(&size)
            .then_some(Shape {
                model,
                params: counts.total_params,
                non_embedding_params: counts.non_embedding_params,
            })
    }

    /// Parameters of the width-`d` shape at depth `l` with head size `hd`, for bracketing: kv
    /// heads follow the rule without its divisibility (monotone in `d`). `None` on overflow.
    fn bracket_params(&self, l: u64, d: u64, hd: u64, vocab: u64) -> Option<u64> {
        let heads = (d / hd).max(1);
        let kv = match self.kv_heads {
            KvHeads::MultiHead => heads,
            KvHeads::GroupSize(g) => (heads / g).max(1),
            KvHeads::Fixed(k) => k.min(heads),
        };
        let ffn = self.ffn.width(d)?;
        let m = Transformer {
            head_dim: hd,
            ..self.model(l, d, heads, kv, ffn, vocab)
        };
        let c = crate::params::sizes_checked(&m)?;
        Some(match self.size_basis {
            ParamBasis::Total => c.total_params,
            ParamBasis::NonEmbedding => c.non_embedding_params,
        })
    }

    /// A lazy iterator over every valid shape, by depth, then head size, then width.
    ///
    /// # Errors
    /// The space's own rules ([`ShapeSpace::validate`]) and its padded vocabulary.
    pub fn iter(&self) -> Result<ShapeIter<&ShapeSpace>> {
        ShapeIter::new(self)
    }

    /// [`ShapeSpace::iter`] owning the space (to return from a function or keep beside other
    /// state).
    ///
    /// # Errors
    /// As [`ShapeSpace::iter`].
    pub fn into_shapes(self) -> Result<ShapeIter<ShapeSpace>> {
        ShapeIter::new(self)
    }

    /// The model of a shape from this space.
    ///
    /// ```
    /// use lmshape::search::ShapeSpace;
    /// let space = ShapeSpace::bloom_reference()?;
    /// let s = space.check(70, 14336, 112).unwrap();
    /// assert_eq!(space.model_of(&s)?.total_params()?, s.params);
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    ///
    /// # Errors
    /// A model that breaks one of its rules ([`crate::Transformer::validate`]) or counts that overflow `u64`.
    pub fn model_of(&self, s: &Shape) -> Result<Transformer> {
        s.model.validate()?;
        Ok(s.model)
    }
}

/// Lazy enumeration of a [`ShapeSpace`] (borrowed or owned); see [`ShapeSpace::iter`]. Each
/// call to `next` does bounded work: the depths and head sizes are bounded by
/// [`ShapeSpace::validate`], and the widths of one depth and head size by [`MAX_HIDDEN`].
#[derive(Debug, Clone)]
pub struct ShapeIter<S> {
    space: S,
    state: IterState,
}

/// Largest hidden size the enumeration walks to (the widest published models are under 30k).
pub const MAX_HIDDEN: u64 = 1 << 20;

/// Where a [`ShapeIter`] stands.
#[derive(Debug, Clone, Copy)]
struct IterState {
    vocab: u64,
    layers: u64,
    hd_index: usize,
    /// Current width multiple (`d = k · step`).
    k: u64,
    k_end: u64,
    step: u64,
    fresh: bool,
    done: bool,
    candidates: u64,
}

impl<S: std::borrow::Borrow<ShapeSpace>> ShapeIter<S> {
    fn new(space: S) -> Result<ShapeIter<S>> {
        let s = space.borrow();
        s.validate()?;
        let state = IterState {
            vocab: s.padded_vocab()?,
            layers: s.min_layers.max(1),
            hd_index: 0,
            k: 0,
            k_end: 0,
            step: 0,
            fresh: true,
            done: false,
            candidates: 0,
        };
        Ok(ShapeIter { space, state })
    }

    /// Candidates (depth, head size, width) examined so far.
    pub fn candidates(&self) -> u64 {
        self.state.candidates
    }
}

impl IterState {
    /// Set up the width range of the current (depth, head size): `[k, k_end)` in multiples of
    /// `step = lcm(M, hd · tp)`, from the first width whose count reaches `min_params` (by
    /// bisection) to the first above `max_params`, inside the aspect window and below
    /// [`MAX_HIDDEN`].
    fn start_widths(&mut self, s: &ShapeSpace) -> bool {
        let hd = s.head_dims[self.hd_index];
        let Some(unit) = hd.checked_mul(s.tp) else {
            return false;
        };
        let g = gcd(s.hidden_multiple, unit);
        let Some(step) = (s.hidden_multiple / g).checked_mul(unit) else {
            return false;
        };
        let l = self.layers;
        let lo_aspect = (s.min_aspect_ratio * l as f64).max(0.0);
        let mut k_lo = ((lo_aspect / step as f64).ceil() as u64).max(1);
        let k_hi_aspect = if s.max_aspect_ratio.is_finite() {
            (s.max_aspect_ratio * l as f64 / step as f64).floor() as u64
        } else {
            u64::MAX
        }
        .min(MAX_HIDDEN / step);
        let params = |k: u64| s.bracket_params(l, k * step, hd, self.vocab);
        // First k with params ≥ min (exponential then binary search).
        match params(k_lo) {
            None => return false,
            Some(p) if p > s.max_params => return false,
            Some(p) if p < s.min_params => {
                let mut hi = k_lo.saturating_mul(2).max(k_lo + 1);
                loop {
                    match params(hi) {
                        Some(p) if p < s.min_params && hi < k_hi_aspect => {
                            k_lo = hi;
                            hi = hi.saturating_mul(2).min(k_hi_aspect.max(k_lo + 1));
                        }
                        _ => break,
                    }
                }
                while hi - k_lo > 1 {
                    let mid = k_lo + (hi - k_lo) / 2;
                    match params(mid) {
                        Some(p) if p < s.min_params => k_lo = mid,
                        _ => hi = mid,
                    }
                }
                k_lo = hi;
            }
            Some(_) => {}
        }
        if k_lo > k_hi_aspect {
            return false;
        }
        self.k = k_lo;
        self.k_end = k_hi_aspect.saturating_add(1);
        self.step = step;
        true
    }

    /// Whether any width at this depth can still be small enough: the smallest allowed width
    /// over all head sizes is already above the range once depth grows past it.
    fn depth_exhausted(&self, s: &ShapeSpace) -> bool {
        let l = self.layers;
        let min_d = s.head_dims.iter().filter_map(|&hd| {
            let unit = hd.checked_mul(s.tp)?;
            let step = (s.hidden_multiple / gcd(s.hidden_multiple, unit)).checked_mul(unit)?;
            let lo_aspect = (s.min_aspect_ratio * l as f64).max(0.0);
            let k = ((lo_aspect / step as f64).ceil() as u64).max(1);
            Some((k.checked_mul(step)?, hd))
        });
        min_d
            .filter_map(|(d, hd)| s.bracket_params(l, d, hd, self.vocab))
            .all(|p| p > s.max_params)
    }

    /// The next depth, or the end when the depths run out.
    fn next_depth(&mut self, s: &ShapeSpace) {
        match self.layers.checked_add(1) {
            Some(l) if l <= s.max_layers => self.layers = l,
            _ => self.done = true,
        }
    }

    fn next_shape(&mut self, s: &ShapeSpace) -> Option<Shape> {
        loop {
            if self.done || self.layers > s.max_layers {
                self.done = true;
                return None;
            }
            if !s.layers_ok(self.layers) {
                // Exhaustion is checked after each valid depth; invalid ones are skipped.
                self.next_depth(s);
                continue;
            }
            if self.fresh {
                self.fresh = false;
                if !self.start_widths(s) {
                    self.k_end = 0;
                }
            }
            if self.k < self.k_end {
                let d = self.k.saturating_mul(self.step);
                self.k += 1;
                self.candidates += 1;
                let hd = s.head_dims[self.hd_index];
                match s.check_with_vocab(self.layers, d, d / hd, self.vocab) {
                    Some(shape) => return Some(shape),
                    None => {
                        // Past the top of the range: stop this head size.
                        if s.bracket_params(self.layers, d, hd, self.vocab)
                            .is_none_or(|p| p > s.max_params)
                        {
                            self.k = self.k_end;
                        }
                        continue;
                    }
                }
            }
            // Next head size, or next depth.
            self.hd_index += 1;
            self.fresh = true;
            if self.hd_index >= s.head_dims.len() {
                self.hd_index = 0;
                if self.depth_exhausted(s) {
                    self.done = true;
                    return None;
                }
                self.next_depth(s);
            }
        }
    }
}

impl<S: std::borrow::Borrow<ShapeSpace>> Iterator for ShapeIter<S> {
    type Item = Shape;

    fn next(&mut self) -> Option<Shape> {
        self.state.next_shape(self.space.borrow())
    }
}

/// A shape with its scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoredShape {
    /// The shape.
    pub shape: Shape,
    /// `(params − target) / target`, counted in the space's size basis.
    pub param_error: f64,
    /// Heuristics.
    pub heuristics: ShapeHeuristics,
}

/// A ranked shape as the shape tools print it (`enumerate_shapes --json`): a flat record of
/// the shape, its distance from the target and its heuristics, with the tool's predicted
/// speed and loss when it has them. Built by [`ScoredShape::record`]; the key names are a
/// public interface.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShapeRecord {
    /// Hidden size.
    pub hidden_size: u64,
    /// Layers.
    pub num_layers: u64,
    /// Query heads.
    pub num_heads: u64,
    /// Key/value heads.
    pub num_kv_heads: u64,
    /// Head width.
    pub head_dim: u64,
    /// FFN width.
    pub ffn_size: u64,
    /// Vocabulary.
    pub vocab_size: u64,
    /// Exact total parameters.
    pub params: u64,
    /// `(params − target) / target` in the space's size basis.
    pub param_error: f64,
    /// `d / L`.
    pub aspect_ratio: f64,
    /// Kaplan et al. 2020's verdict on the aspect ratio.
    pub kaplan_aspect_verdict: heuristics::AspectVerdict,
    /// Levine et al. 2020's preferred depth.
    pub levine_depth: f64,
    /// `L −` that depth.
    pub levine_depth_delta: f64,
    /// `d` over Levine's optimal width for the depth.
    pub levine_width_ratio: f64,
    /// Predicted TFLOP/s per GPU on the tool's layout (when timed).
    pub predicted_tflops_per_gpu: Option<f64>,
    /// Predicted loss under the tool's law (when one is given).
    pub predicted_loss: Option<f64>,
}

impl ScoredShape {
    /// The shape as the shape tools print it, with the tool's own speed and loss figures
    /// ([`ShapeRecord`]).
    ///
    /// ```
    /// use lmshape::search::{score, ShapeSpace};
    /// let space = ShapeSpace::around(7_000_000_000, 0.02, lmshape::Architecture::llama(), 32000)?;
    /// let shape = space.iter()?.next().unwrap();
    /// let scored = score(&space, &shape)?;
    /// let r = scored.record(None, Some(2.0));
    /// assert_eq!((r.hidden_size, r.params), (shape.model.hidden_size(), shape.params));
    /// assert_eq!(r.predicted_loss, Some(2.0));
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    pub fn record(
        &self,
        predicted_tflops_per_gpu: Option<f64>,
        predicted_loss: Option<f64>,
    ) -> ShapeRecord {
        let (m, h) = (&self.shape.model, &self.heuristics);
        ShapeRecord {
            hidden_size: m.hidden_size(),
            num_layers: m.num_layers(),
            num_heads: m.num_heads(),
            num_kv_heads: m.num_kv_heads(),
            head_dim: m.head_dim(),
            ffn_size: m.ffn_size(),
            vocab_size: m.vocab_size(),
            params: self.shape.params,
            param_error: self.param_error,
            aspect_ratio: h.aspect_ratio,
            kaplan_aspect_verdict: h.aspect_verdict,
            levine_depth: h.levine_depth,
            levine_depth_delta: h.levine_depth_delta,
            levine_width_ratio: h.levine_width_ratio,
            predicted_tflops_per_gpu,
            predicted_loss,
        }
    }
}

/// Orderings for [`rank`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum SortKey {
    /// Smallest `|param_error|` first.
    ParamError,
    /// Smallest `|L − Levine depth|` first.
    LevineDistance,
    /// Smallest aspect ratio first.
    AspectRatio,
    /// Head dimension closest to this first.
    HeadDimNear(u64),
}

/// Score a shape of `space`.
///
/// # Errors
/// A model that breaks one of its rules ([`crate::Transformer::validate`]) or counts that overflow `u64`.
pub fn score(space: &ShapeSpace, shape: &Shape) -> Result<ScoredShape> {
    let model = space.model_of(shape)?;
    Ok(ScoredShape {
        shape: *shape,
        param_error: (shape.params_in(space.size_basis) as f64 - space.target_params as f64)
            / space.target_params as f64,
        heuristics: heuristics::evaluate(&model)?,
    })
}

/// Sort by the keys in order (later keys break ties of earlier ones).
///
/// ```
/// use lmshape::search::{self, ShapeSpace, SortKey};
/// let space = ShapeSpace::bloom_reference()?;
/// let mut scored = space.iter()?.map(|s| search::score(&space, &s)).collect::<Result<Vec<_>, _>>()?;
/// search::rank(&mut scored, &[SortKey::LevineDistance, SortKey::ParamError]);
/// assert!(scored[0].heuristics.levine_depth_delta.abs() <= scored[scored.len() - 1].heuristics.levine_depth_delta.abs());
/// # Ok::<(), lmshape::Error>(())
/// ```
pub fn rank(scored: &mut [ScoredShape], keys: &[SortKey]) {
    let key = |s: &ScoredShape, k: &SortKey| -> f64 {
        match k {
            SortKey::ParamError => s.param_error.abs(),
            SortKey::LevineDistance => s.heuristics.levine_depth_delta.abs(),
            SortKey::AspectRatio => s.heuristics.aspect_ratio,
            SortKey::HeadDimNear(h) => (s.shape.model.head_dim as f64 - *h as f64).abs(),
        }
    };
    scored.sort_by(|a, b| {
        keys.iter()
            .map(|k| key(a, k).total_cmp(&key(b, k)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
}

/// Keep one shape per (layers, hidden): the one whose head dimension is closest to
/// `preferred_head_dim` (ties: more heads). Order of first appearance is kept.
pub fn one_per_width_depth(scored: &[ScoredShape], preferred_head_dim: u64) -> Vec<ScoredShape> {
    let mut out: Vec<ScoredShape> = Vec::new();
    let mut slot: std::collections::HashMap<(u64, u64), usize> = std::collections::HashMap::new();
    let rank = |x: &ScoredShape| {
        (
            x.shape.model.head_dim.abs_diff(preferred_head_dim),
            u64::MAX - x.shape.model.num_heads,
        )
    };
    for s in scored {
        let key = (s.shape.model.num_layers, s.shape.model.hidden_size);
        match slot.get(&key) {
            Some(&i) => {
                if rank(s) < rank(&out[i]) {
                    out[i] = *s;
                }
            }
            None => {
                slot.insert(key, out.len());
                out.push(*s);
            }
        }
    }
    out
}

/// A mixture-of-experts shape: the model (its MLP layers replaced by experts) and its counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MoeShape {
    /// The model and its total and non-embedding counts.
    #[serde(flatten)]
    pub shape: Shape,
    /// Parameters one token uses, the input embedding included.
    pub active_params: u64,
    /// Active parameters without the embeddings and the output head (Krajewski et al.'s `N`).
    pub active_non_embedding_params: u64,
    /// Granularity `G`: the backbone's FFN width over one expert's.
    pub granularity: u64,
}

/// A mixture-of-experts shape as the shape tools print it (`enumerate_shapes --moe --json`),
/// with the tool's predicted loss. Built by [`MoeShape::record`]; the key names are a public
/// interface.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoeShapeRecord {
    /// Layers.
    pub num_layers: u64,
    /// Hidden size.
    pub hidden_size: u64,
    /// Query heads.
    pub num_heads: u64,
    /// Head width.
    pub head_dim: u64,
    /// The dense backbone's FFN width.
    pub ffn_size: u64,
    /// Routed experts.
    pub num_experts: u64,
    /// Experts per token.
    pub top_k: u64,
    /// One expert's FFN width.
    pub expert_ffn_size: u64,
    /// Shared experts.
    pub num_shared_experts: u64,
    /// Granularity `G`.
    pub granularity: u64,
    /// Exact total parameters.
    pub params: u64,
    /// Parameters one token uses.
    pub active_params: u64,
    /// Active parameters without the embeddings and the output head.
    pub active_non_embedding_params: u64,
    /// Predicted loss under the tool's law.
    pub predicted_loss: f64,
}

impl MoeShape {
    /// The shape as the shape tools print it, with the tool's predicted loss
    /// ([`MoeShapeRecord`]); `None` for a shape without experts.
    pub fn record(&self, predicted_loss: f64) -> Option<MoeShapeRecord> {
        let m = &self.shape.model;
        let e = m.moe()?;
        Some(MoeShapeRecord {
            num_layers: m.num_layers(),
            hidden_size: m.hidden_size(),
            num_heads: m.num_heads(),
            head_dim: m.head_dim(),
            ffn_size: m.ffn_size(),
            num_experts: e.num_experts,
            top_k: e.top_k,
            expert_ffn_size: e.expert_ffn_size,
            num_shared_experts: e.num_shared_experts,
            granularity: self.granularity,
            params: self.shape.params,
            active_params: self.active_params,
            active_non_embedding_params: self.active_non_embedding_params,
            predicted_loss,
        })
    }

    /// The active parameter count in `basis` (the window a [`MoeSpace`] applies).
    pub fn active_in(&self, basis: ParamBasis) -> u64 {
        match basis {
            ParamBasis::Total => self.active_params,
            ParamBasis::NonEmbedding => self.active_non_embedding_params,
        }
    }
}

/// Fine-grained mixture-of-experts shapes built on the dense shapes of a [`ShapeSpace`]
/// (Krajewski et al. 2024 §2; DeepSeekMoE, Dai et al. 2024, for shared experts): each
/// mixture-of-experts layer replaces the backbone's MLP of width `f` by `E` routed experts of
/// width `f/G`, of which each token uses `G − s`, beside `s` shared experts of the same width —
/// so a token's expert compute equals the dense MLP's, and the active parameters are the
/// backbone's plus the routers. The backbone's size window applies to the active count (in
/// its size basis); `max_total_params` optionally bounds the total. Validity: `f % G == 0`,
/// the expert width a multiple of `expert_width_multiple` and of `etp`, `s < G`, `G − s < E`,
/// `E % ep == 0`, fewer leading dense layers than layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoeSpace {
    /// The dense backbones and the active-parameter window.
    pub backbone: ShapeSpace,
    /// Routed experts tried.
    pub num_experts: Vec<u64>,
    /// Granularities tried.
    pub granularities: Vec<u64>,
    /// Shared experts tried (each as wide as a routed expert, counted among the `G`).
    pub shared_experts: Vec<u64>,
    /// Leading dense layers tried.
    pub first_dense_layers: Vec<u64>,
    /// Expert width must be a multiple of this (Tensor Core alignment).
    pub expert_width_multiple: u64,
    /// Expert-parallel degree the experts must split over.
    pub ep: u64,
    /// Expert-tensor-parallel degree the expert width must split over.
    pub etp: u64,
    /// Largest total parameter count accepted.
    pub max_total_params: Option<u64>,
}

impl MoeSpace {
    /// Mixture-of-experts variants of `backbone`: 8, 16, 32, 64 or 128 experts, granularity 1,
    /// 2, 4 or 8, with or without one shared expert, every layer a mixture-of-experts layer,
    /// expert width a multiple of 64, no expert-parallel constraint.
    pub fn new(backbone: ShapeSpace) -> MoeSpace {
        MoeSpace {
            backbone,
            num_experts: vec![8, 16, 32, 64, 128],
            granularities: vec![1, 2, 4, 8],
            shared_experts: vec![0, 1],
            first_dense_layers: vec![0],
            expert_width_multiple: 64,
            ep: 1,
            etp: 1,
            max_total_params: None,
        }
    }

    /// The mixture-of-experts shape on `backbone` with `experts` routed experts, granularity
    /// `granularity`, `shared` shared experts and `first_dense` leading dense layers, if it
    /// obeys every rule of the space (see the type's docs), with its exact counts.
    ///
    /// ```
    /// use lmshape::{Architecture, search::{MoeSpace, ShapeSpace}};
    /// let dense = ShapeSpace::around(1_300_000_000, 0.3, Architecture::llama(), 32000)?;
    /// let space = MoeSpace::new(dense.clone());
    /// let backbone = dense.iter()?.next().unwrap();
    /// let m = space.check(&backbone, 64, 8, 1, 0).unwrap();
    /// let moe = m.shape.model.moe().unwrap();
    /// assert_eq!((moe.num_experts, moe.top_k), (64, 7));
    /// assert_eq!(moe.expert_ffn_size * 8, backbone.model.ffn_size());
    /// // Same expert compute per token: the active count is the backbone's plus the routers.
    /// let routers = backbone.model.num_layers() * backbone.model.hidden_size() * 64;
    /// assert_eq!(m.active_params, backbone.params + routers);
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    pub fn check(
        &self,
        backbone: &Shape,
        experts: u64,
        granularity: u64,
        shared: u64,
        first_dense: u64,
    ) -> Option<MoeShape> {
        let m = &backbone.model;
        let f = m.ffn_size;
        if granularity == 0 || experts == 0 || f % granularity != 0 {
            return None;
        }
        let width = f / granularity;
        let multiple = self.expert_width_multiple.max(1);
        if width % multiple != 0 || self.etp == 0 || width % self.etp != 0 {
            return None;
        }
        // At least one routed expert per token, and fewer than there are (else every token
        // uses every expert: a dense MLP split into pieces).
        if shared >= granularity || granularity - shared >= experts {
            return None;
        }
        if self.ep == 0 || experts % self.ep != 0 || first_dense >= m.num_layers {
            return None;
        }
        let moe = crate::model::Moe {
            num_shared_experts: shared,
            shared_ffn_size: shared * width,
            first_dense_layers: first_dense,
            ..crate::model::Moe::routed(experts, granularity - shared, width)
        };
        let model = m.to_builder().moe(Some(moe)).build().ok()?;
        let c = crate::params::param_counts(&model).ok()?;
        let shape = MoeShape {
            shape: Shape {
                model,
                params: c.total_params,
                non_embedding_params: c.non_embedding_params,
            },
            active_params: c.active_params,
            active_non_embedding_params: c.active_params.checked_sub(c.embedding_params)?,
            granularity,
        };
        let active = shape.active_in(self.backbone.size_basis);
        let in_window = (self.backbone.min_params..=self.backbone.max_params).contains(&active);
        let total_ok = self.max_total_params.is_none_or(|t| c.total_params <= t);
        (in_window && total_ok).then_some(shape)
    }

    /// Every shape of the space, lazily: the backbones of a copy of the dense space whose window
    /// reaches 5% lower (the routers add to the active count), each with every expert setting.
    ///
    /// # Errors
    /// The dense space's rules ([`ShapeSpace::validate`]).
    pub fn iter(&self) -> Result<impl Iterator<Item = MoeShape> + '_> {
        let dense = self
            .backbone
            .to_builder()
            .min_params(self.backbone.min_params - self.backbone.min_params / 20)
            .build()?;
        Ok(dense.into_shapes()?.flat_map(move |b| {
            itertools::iproduct!(
                self.num_experts.iter().copied(),
                self.granularities.iter().copied(),
                self.shared_experts.iter().copied(),
                self.first_dense_layers.iter().copied()
            )
            .filter_map(move |(e, g, s, fd)| self.check(&b, e, g, s, fd))
        }))
    }
}
