//! The planner: from a cluster and a time budget to a ranked, explained recommendation.
//!
//! Steps (each delegated to its module):
//! 1. **Budget** ([`crate::scaling`]): GPU-hours × peak × an assumed MFU → training FLOPs, and
//!    each published law's compute-optimal (parameters, tokens).
//! 2. **Target**: the chosen law's optimum moved along the iso-FLOP curve by the token floor and
//!    a size cap ([`crate::scaling::ParametricLaw::constrained`]; for Kaplan's law the frontier
//!    of Kaplan et al. 2020 clamped the same way), widened to a search range (or a range you
//!    give). A token floor that no shape of the range reaches even at the GPU's peak ends
//!    the plan here, before the search ([`most_tokens_at_peak`]).
//! 3. **Shapes** ([`crate::search`]): every shape in the range; shapes with heads larger than
//!    the limit are rejected ("heads too large", as BigScience rejected a finalist).
//! 4. **Layouts** ([`crate::parallel::LayoutSpace`]): every `tp ≤ GPUs per node` from the
//!    options, every `pp` dividing the rest, `dp` filling the cluster, every micro-batch
//!    option, found once; layouts that break a rule of their own (the global batch does not
//!    split over `dp`) are listed in [`Plan::invalid_layouts`], and a request none of whose
//!    layouts keeps its own rules ends the plan before the search; with BigScience's embedding
//!    slots ([`PlanRequest::embedding_slots`]) when only `(L + 2) % pp` holds; a layout that
//!    breaks a rule for the shape is "indivisible".
//! 5. **Memory** ([`crate::memory`]): the device figure of the most loaded GPU under the
//!    request's framework (allocated estimate, allocator, runtime) must fit a share of the
//!    card.
//! 6. **Speed** ([`crate::step`]) with the timer you pass: tokens reachable in the
//!    usable wall-clock; below the token floor is "too slow".
//! 7. **Rank** by the law's predicted loss at those tokens (ties: more tokens first); the
//!    candidates the prediction cannot tell from the best ([`mark_equivalents`]) come first,
//!    ordered among themselves by [`PlanRequest::equivalent_order`] (loss unless set), the
//!    others after them in loss order.

use crate::error::{Error, Result, positive, positive_f64};
use crate::hardware::GemmTimer;
use crate::memory::{self, Framework, FrameworkProfile, GemmPrecision, Verdict};
use crate::model::Architecture;
use crate::parallel::Recompute;
use crate::parallel::{EmbeddingSlots, LayoutSpace, ParallelLayout, Placement, ZeroStage};
use crate::scaling::{self, Binding, Constraints, ParametricLaw};
pub use crate::scaling::{LawBounds, LawChoice};
use crate::search::{Shape, ShapeSpace};
use crate::step::{self, Cluster, StepOptions};
use itertools::Itertools;
use serde::{Deserialize, Serialize};

crate::checked::checked_type! {
    /// Everything the planner needs; its rules hold once built ([`PlanRequest::validate`]).
    /// Start from [`PlanRequest::builder`] (generic defaults) or [`PlanRequest::bloom_reference`]
    /// and derive variants with [`PlanRequest::to_builder`].
    ///
    /// ```
    /// use lmshape::{plan::PlanRequest, step::Cluster, Architecture};
    /// let req = PlanRequest::bloom_reference().to_builder().gpus(512).build()?;
    /// assert_eq!(req.gpus(), 512);
    /// assert!(req.to_builder().hours(-1.0).build().is_err());
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    pub struct PlanRequest;
    /// The one way to set a [`PlanRequest`]'s fields, and its serde form: `build` checks the
    /// request's rules ([`PlanRequest::validate`]).
    pub struct PlanRequestBuilder = "PlanRequestBuilder";
    check = validate;
    fields {
        /// Cluster description (GPU, GPUs per node, interconnect, software efficiency).
        cluster: Cluster [ref],
        /// GPUs to use.
        gpus: u64 [copy],
        /// Wall-clock hours available.
        hours: f64 [copy],
        /// Fraction of the wall-clock held back for failures, restarts and evaluation.
        safety_margin: f64 [copy],
        /// MFU assumed when turning the budget into FLOPs for the scaling laws (the
        /// candidates' real speed comes from the timer).
        assumed_mfu: f64 [copy],
        /// Architecture family.
        arch: Architecture [copy],
        /// Vocabulary (Megatron pads it per layout).
        vocab_size: u64 [copy],
        /// Sequence length.
        seq_len: u64 [copy],
        /// Sequences per optimizer step.
        global_batch: u64 [copy],
        /// Minimum training tokens.
        token_floor: Option<f64> [copy],
        /// Maximum parameters (serving).
        param_cap: Option<f64> [copy],
        /// Explicit parameter range (in the law's own count); otherwise
        /// `[target·(1 − range_below), target·(1 + range_above)]`.
        param_range: Option<(u64, u64)> [copy],
        /// Fraction below the target searched.
        range_below: f64 [copy],
        /// Fraction above the target searched.
        range_above: f64 [copy],
        /// Head dimensions enumerated.
        head_dims: Vec<u64> [ref],
        /// Larger heads are rejected ("heads too large").
        max_head_dim: u64 [copy],
        /// Hidden size multiple.
        hidden_multiple: u64 [copy],
        /// Key/value heads of each shape (multi-head, a group size, or a fixed count).
        kv_heads: crate::search::KvHeads [copy, default = "Default::default"],
        /// FFN width rule (`None`: `4d`, or LLaMA's `8/3·d` for gated MLPs).
        ffn: Option<crate::search::FfnRule> [copy, default = "Default::default"],
        /// Aspect ratio window `d / L` of the shapes searched.
        aspect_ratio_range: (f64, f64) [copy],
        /// Tensor-parallel degrees tried (those above GPUs per node are skipped).
        tp_options: Vec<u64> [ref],
        /// Micro-batch sizes tried.
        micro_batches: Vec<u64> [ref],
        /// Recomputation of every layout.
        recompute: Recompute [copy],
        /// ZeRO stage of every layout.
        zero: ZeroStage [copy],
        /// Sequence parallelism.
        sequence_parallel: bool [copy],
        /// Share of the card the device figure may fill (the rest is the stated margin).
        memory_fraction: f64 [copy],
        /// Step-model options, with the memory assumptions the memory estimate uses too
        /// (`step_options.memory`).
        step_options: StepOptions [copy],
        /// The law for the target and the loss.
        law: LawChoice [copy],
        /// When a layout counts the embeddings as pipeline slots (BigScience's partition for
        /// BLOOM); never by default.
        embedding_slots: EmbeddingSlots [copy, default = "Default::default"],
        /// Instead of `recompute`, each layout takes the least recomputation that fits
        /// ([`memory::least_recompute`]).
        recompute_auto: bool [copy, default = "Default::default"],
        /// The training framework whose buffers and allocator turn the estimate into the
        /// device figure that must fit `memory_fraction` of the card.
        framework: Framework [copy, default = "default_framework"],
        /// Context-parallel degrees tried (none: 1).
        cp_options: Vec<u64> [ref, default = "Default::default"],
        /// Virtual stages per pipeline rank tried (none: 1F1B only).
        virtual_stage_options: Vec<u64> [ref, default = "Default::default"],
        /// GEMM precisions tried per layout, the fastest that fits kept (none: that of
        /// `step_options.memory`).
        precisions: Vec<GemmPrecision> [ref, default = "Default::default"],
        /// Also search mixture-of-experts shapes under the same budget.
        moe: Option<MoeSearch> [ref, default = "Default::default"],
        /// Accept depths that do not split evenly over the pipeline, balanced (DeepSpeed's
        /// partition; the most loaded stage bounds memory and time).
        balanced_pipeline: bool [copy, default = "Default::default"],
        /// Refits of the law that carry its own uncertainty (`fit_scaling_law`'s bootstrap,
        /// which `--law-file` brings): the dense candidates the refits cannot rank below the
        /// best are marked equivalent too ([`mark_equivalents_under`]). None: the speed band
        /// alone decides.
        law_samples: Vec<ParametricLaw> [ref, default = "Default::default"],
        /// How the candidates the prediction cannot tell from the best are ordered among
        /// themselves ([`order_equivalents`]); by predicted loss unless set.
        equivalent_order: EquivalentOrder [copy, default = "Default::default"],
    }
}

/// What orders the candidates the prediction cannot tell from the best (those marked
/// [`Candidate::equivalent_to_best`]): their predicted losses differ by less than the
/// prediction resolves, so another criterion may decide among them. The set itself is the
/// same under every order; only the order inside it, and so the recommendation, changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EquivalentOrder {
    /// The predicted loss at the predicted speed, lowest first (more tokens first on ties).
    #[default]
    Loss,
    /// The loss at the slow end of the speed band, lowest first: the best worst case.
    Robust,
    /// TFLOP/s per GPU, highest first: BigScience's criterion among its equally good
    /// finalists (the fastest was chosen).
    Speed,
    /// Days to the token floor, fewest first; on a fixed cluster also the fewest GPU-hours.
    /// Needs a token floor.
    Time,
    /// Memory margin on the card, widest first.
    Margin,
}

crate::error::named!(EquivalentOrder, "equivalent order", [
    Loss => "loss",
    Robust => "robust",
    Speed => "speed",
    Time => "time",
    Margin => "margin",
]);

/// Put the candidates marked equivalent to the best first, ordered among themselves by
/// `order`, then the others in their loss order. Each ordering is stable, so ties keep the
/// loss order. A candidate without a figure for the order (no token floor for
/// [`EquivalentOrder::Time`]) keeps its place relative to the others without one, after them.
///
/// ```
/// use lmshape::plan::{self, EquivalentOrder, PlanRequest};
/// let req = PlanRequest::bloom_reference().to_builder()
///     .param_range(Some((150_000_000_000, 190_000_000_000))).build()?;
/// let timer = lmshape::hardware::AnalyticalTimer::new(req.cluster().gpu.clone());
/// let mut p = plan::plan(&req, &timer)?;
/// plan::order_equivalents(&mut p.candidates, EquivalentOrder::Speed);
/// let set: Vec<_> = p.candidates.iter().take_while(|c| c.equivalent_to_best).collect();
/// assert!(set.windows(2).all(|w| w[0].step.tflops_per_gpu >= w[1].step.tflops_per_gpu));
/// # Ok::<(), lmshape::Error>(())
/// ```
pub fn order_equivalents(candidates: &mut [Candidate], order: EquivalentOrder) {
    // Equivalents first (a stable sort on the mark), keeping the loss order.
    candidates.sort_by_key(|c| !c.equivalent_to_best);
    let set = candidates
        .iter()
        .take_while(|c| c.equivalent_to_best)
        .count();
    let key = |c: &Candidate| -> f64 {
        match order {
            EquivalentOrder::Loss => c.predicted_loss,
            EquivalentOrder::Robust => c.loss_high,
            EquivalentOrder::Speed => -c.step.tflops_per_gpu,
            EquivalentOrder::Time => c.days_to_token_floor.unwrap_or(f64::INFINITY),
            EquivalentOrder::Margin => -(c.memory_margin_bytes as f64),
        }
    };
    candidates[..set].sort_by(|a, b| key(a).total_cmp(&key(b)));
}

/// The mixture-of-experts part of a plan: which expert settings to try, on which
/// expert-parallel degrees, ranked by which law.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoeSearch {
    /// Routed experts tried.
    pub num_experts: Vec<u64>,
    /// Granularities tried ([`crate::search::MoeSpace`]).
    pub granularities: Vec<u64>,
    /// Shared experts tried.
    pub shared_experts: Vec<u64>,
    /// Leading dense layers tried.
    pub first_dense_layers: Vec<u64>,
    /// Expert-parallel degrees tried (expert tensor parallelism 1).
    pub ep_options: Vec<u64>,
    /// Backbones: the best feasible dense shapes of the plan, this many (bounds the work).
    pub backbones: usize,
    /// Smallest expansion rate `(E + s)/G` (expert parameters over the dense MLP's) tried:
    /// the law was fitted at 64 and has no term for it, so near-dense settings (expansion
    /// close to 1) would be credited with the granularity gains of real mixtures.
    #[serde(default = "default_min_expansion")]
    pub min_expansion: u64,
    /// The law that ranks the mixture-of-experts candidates.
    pub law: crate::scaling::GranularityLaw,
}

fn default_min_expansion() -> u64 {
    4
}

impl Default for MoeSearch {
    /// 8 to 128 routed experts, granularity 1, 2, 4 or 8, with or without one shared expert,
    /// every layer a mixture-of-experts layer, expansion at least 4, ep 1 or 8, the 12 best
    /// dense shapes as backbones, Krajewski et al. 2024's law.
    fn default() -> MoeSearch {
        MoeSearch {
            num_experts: vec![8, 16, 32, 64, 128],
            granularities: vec![1, 2, 4, 8],
            shared_experts: vec![0, 1],
            first_dense_layers: vec![0],
            ep_options: vec![1, 8],
            backbones: 12,
            min_expansion: default_min_expansion(),
            law: crate::scaling::GranularityLaw::KRAJEWSKI_2024,
        }
    }
}

fn default_framework() -> Framework {
    Framework::MegatronCore
}

impl PlanRequest {
    /// The reference case: 384 A100 80GB (8 per node, Selene-class) for 18 weeks, 10% held
    /// back, BLOOM architecture, vocabulary 250880, sequence 2048, global batch 2048, token
    /// floor 350B, Kaplan's law (as the BigScience planning of 2021–22 used), 40% assumed MFU,
    /// aspect ratios inside the envelope of published ≥60B models ([`published_aspect_envelope`]),
    /// head dims 64–256 in steps of 16 with heads above 128 rejected, tp ∈ {1, 2, 4, 8},
    /// micro-batches {1, 2, 4}, full recomputation, BLOOM's embedding slots where needed, the
    /// device figure under Megatron-DeepSpeed with bf16 at ZeRO stage 0 and DeepSpeed's
    /// `BF16_Optimizer` (as BigScience trained from March 2022) within 90% of the card, search from 40% below to 10% above the target; the rest as
    /// [`PlanRequest::builder`].
    pub fn bloom_reference() -> PlanRequest {
        PlanRequest {
            safety_margin: 0.1,
            seq_len: 2048,
            global_batch: 2048,
            token_floor: Some(350e9),
            max_head_dim: 128,
            aspect_ratio_range: published_aspect_envelope(60e9),
            recompute: Recompute::Full,
            sequence_parallel: false,
            law: LawChoice::Kaplan,
            embedding_slots: EmbeddingSlots::WhenLayersDoNotDivide,
            framework: Framework::MegatronDeepspeed,
            zero: ZeroStage::None,
            step_options: StepOptions {
                memory: memory::MemoryOptions {
                    optimizer: Some(crate::framework::Optimizer::DeepspeedBf16),
                    ..memory::MemoryOptions::default()
                },
                ..StepOptions::default()
            },
            ..PlanRequest::generic(
                Cluster::selene(),
                384,
                18.0 * 7.0 * 24.0,
                Architecture::bloom(),
                250_880,
            )
        }
    }

    /// A request with generic defaults, not anyone's reference case: the cluster's
    /// reference-node layout limits, 5% of the time held back, 40% assumed MFU, sequence
    /// 4096, global batch 1024 sequences, no token floor or size cap, Chinchilla's law (Hoffmann
    /// et al. 2022 approach 3), head dims 64–256 in steps of 16 (none rejected above 128 but
    /// those above 256), hidden a multiple of 128, any aspect ratio of published ≥1B models,
    /// tp ∈ {1, 2, 4, 8}, micro-batches {1, 2, 4}, selective recomputation, the distributed
    /// optimizer (ZeRO-1), sequence parallelism, 90% of GPU memory, search from 40% below to
    /// 10% above the target, no embedding slots; a builder, so that any field can be set
    /// before the rules are checked.
    ///
    /// ```
    /// use lmshape::{plan::{LawChoice, PlanRequest}, step::Cluster, Architecture};
    /// let req = PlanRequest::builder(Cluster::selene(), 64, 24.0 * 7.0, Architecture::llama(), 32000)
    ///     .law(LawChoice::Besiroglu)
    ///     .token_floor(Some(20e9))
    ///     .build()?;
    /// assert_eq!(req.gpus(), 64);
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    pub fn builder(
        cluster: Cluster,
        gpus: u64,
        hours: f64,
        arch: Architecture,
        vocab_size: u64,
    ) -> PlanRequestBuilder {
        PlanRequest::generic(cluster, gpus, hours, arch, vocab_size).to_builder()
    }

    /// The generic defaults of [`PlanRequest::builder`], unchecked (the inputs are the
    /// caller's to check through the builder).
    fn generic(
        cluster: Cluster,
        gpus: u64,
        hours: f64,
        arch: Architecture,
        vocab_size: u64,
    ) -> PlanRequest {
        PlanRequest {
            cluster,
            gpus,
            hours,
            safety_margin: 0.05,
            assumed_mfu: 0.4,
            arch,
            vocab_size,
            seq_len: 4096,
            global_batch: 1024,
            token_floor: None,
            param_cap: None,
            param_range: None,
            range_below: 0.4,
            range_above: 0.1,
            head_dims: (4..=16).map(|k| 16 * k).collect(),
            max_head_dim: 256,
            hidden_multiple: 128,
            kv_heads: crate::search::KvHeads::MultiHead,
            ffn: None,
            aspect_ratio_range: published_aspect_envelope(1e9),
            tp_options: vec![1, 2, 4, 8],
            micro_batches: vec![1, 2, 4],
            recompute: Recompute::Selective,
            zero: ZeroStage::OptimizerStates,
            sequence_parallel: true,
            memory_fraction: 0.9,
            step_options: StepOptions::default(),
            law: LawChoice::Chinchilla,
            embedding_slots: EmbeddingSlots::Never,
            framework: Framework::MegatronCore,
            recompute_auto: false,
            cp_options: Vec::new(),
            virtual_stage_options: Vec::new(),
            precisions: Vec::new(),
            moe: None,
            balanced_pipeline: false,
            law_samples: Vec::new(),
            equivalent_order: EquivalentOrder::Loss,
        }
    }

    /// The layouts the plan tries.
    pub fn layout_space(&self) -> LayoutSpace {
        LayoutSpace {
            gpus: self.gpus,
            max_tp: self.cluster.gpus_per_node,
            tp_options: self.tp_options.clone(),
            micro_batches: self.micro_batches.clone(),
            template: ParallelLayout {
                sequence_parallel: self.sequence_parallel,
                zero: self.zero,
                global_batch: self.global_batch,
                seq_len: self.seq_len,
                recompute: self.recompute,
                ..ParallelLayout::default()
            },
            embedding_slots: self.embedding_slots,
            cp_options: self.cp_options.clone(),
            virtual_stage_options: self.virtual_stage_options.clone(),
            balanced_pipeline: self.balanced_pipeline,
        }
    }

    /// Check the request's own settings (what a built request always passes; the planner's
    /// entry points check it again for requests built inside the crate).
    ///
    /// # Errors
    /// The first setting out of its domain, naming it and its value.
    pub fn validate(&self) -> Result<()> {
        positive(self.gpus, "gpus")?;
        positive_f64(self.hours, "hours")?;
        positive_f64(self.assumed_mfu, "assumed_mfu")?;
        positive(self.global_batch, "global_batch")?;
        positive(self.seq_len, "seq_len")?;
        for (f, v) in [
            ("safety_margin", self.safety_margin),
            ("range_below", self.range_below),
        ] {
            if !(v.is_finite() && (0.0..1.0).contains(&v)) {
                return Err(Error::InvalidValue {
                    field: f,
                    value: v,
                    expected: "in [0, 1)",
                });
            }
        }
        crate::error::non_negative_f64(self.range_above, "range_above")?;
        if !(self.memory_fraction > 0.0 && self.memory_fraction <= 1.0) {
            return Err(Error::InvalidValue {
                field: "memory_fraction",
                value: self.memory_fraction,
                expected: "in (0, 1]",
            });
        }
        if self.tp_options.is_empty() || self.micro_batches.is_empty() {
            return Err(Error::Inconsistent {
                rule: "tp and micro-batch options must not be empty",
                detail: format!(
                    "{} tp options, {} micro-batch options",
                    self.tp_options.len(),
                    self.micro_batches.len()
                ),
            });
        }
        if self.equivalent_order == EquivalentOrder::Time && self.token_floor.is_none() {
            return Err(Error::Inconsistent {
                rule: "ordering equivalent shapes by time to the token floor needs a token floor",
                detail: "equivalent_order = time, token_floor = none".to_string(),
            });
        }
        self.cluster.validate()?;
        // A precision the GPU lacks is the request's error, before any search.
        self.cluster.gpu.peak_flops_per_s(self.step_options.dtype)?;
        for &p in self.gemm_precisions() {
            self.cluster.gpu.check_precision(p)?;
        }
        Ok(())
    }

    /// The GEMM precisions the planner tries: [`PlanRequest::precisions`], or the step
    /// options' own when that is empty.
    pub fn gemm_precisions(&self) -> &[GemmPrecision] {
        if self.precisions.is_empty() {
            std::slice::from_ref(&self.step_options.memory.gemm_precision)
        } else {
            &self.precisions
        }
    }
}

/// The smallest and largest aspect ratio `d / L` among published models of at least
/// `min_params` ([`crate::heuristics::PUBLISHED_SHAPES`]): "what other large models look like".
///
/// ```
/// let (lo, hi) = lmshape::plan::published_aspect_envelope(60e9);
/// // LLaMA-65B and Chinchilla (8192 / 80) to BLOOM and Gopher (14336 / 70 = 16384 / 80).
/// assert_eq!((lo, hi), (8192.0 / 80.0, 14336.0 / 70.0));
/// ```
pub fn published_aspect_envelope(min_params: f64) -> (f64, f64) {
    crate::heuristics::PUBLISHED_SHAPES
        .iter()
        .filter(|s| s.params_nominal >= min_params)
        .map(|s| s.aspect_ratio())
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), a| {
            (lo.min(a), hi.max(a))
        })
}

/// Why a candidate was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Head dimension above the limit.
    HeadsTooLarge,
    /// The layout breaks a divisibility rule for the shape.
    Indivisible,
    /// The most loaded GPU does not fit.
    DoesNotFit,
    /// The memory or time estimate failed for this pair (e.g. a timing table without one of
    /// its GEMMs); the error is kept in the shape's [`Rejection::error`].
    EstimateFailed,
    /// The step is too slow to reach the token floor in the usable time.
    TooSlowForTokenFloor,
}

impl RejectReason {
    /// Every reason, in order of how far a candidate got.
    pub const ALL: [RejectReason; 5] = [
        RejectReason::HeadsTooLarge,
        RejectReason::Indivisible,
        RejectReason::DoesNotFit,
        RejectReason::EstimateFailed,
        RejectReason::TooSlowForTokenFloor,
    ];
}

impl std::fmt::Display for RejectReason {
    /// A short phrase.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RejectReason::HeadsTooLarge => "heads too large",
            RejectReason::Indivisible => "indivisible (layout rules)",
            RejectReason::EstimateFailed => "estimate failed",
            RejectReason::DoesNotFit => "does not fit in memory",
            RejectReason::TooSlowForTokenFloor => "too slow to reach the token floor",
        })
    }
}

/// A shape with no feasible layout: the furthest stage any of its layouts reached, and that
/// layout (for "too slow", the fastest one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// The shape.
    pub shape: Shape,
    /// The layout, when the reason concerns one.
    pub layout: Option<ParallelLayout>,
    /// Why.
    pub reason: RejectReason,
    /// The error, when an estimate failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A layout no shape can use (it breaks a rule of the layout alone, such as the global batch
/// not splitting over data parallelism).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvalidLayout {
    /// The layout (as a builder: a layout that breaks a rule cannot be built).
    pub layout: crate::parallel::ParallelLayoutBuilder,
    /// The rule it breaks.
    pub reason: String,
}

/// A feasible (shape, layout) with its figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The shape (params: exact total with the unpadded vocabulary).
    pub shape: Shape,
    /// The layout.
    pub layout: ParallelLayout,
    /// Allocated bytes on the most loaded GPU.
    pub memory_bytes_per_gpu: u64,
    /// What `nvidia-smi` would show on the GPU with the largest device figure, under the
    /// request's framework.
    pub memory_device_bytes_per_gpu: u64,
    /// That figure against the whole card.
    pub verdict: Verdict,
    /// Card capacity minus the device figure.
    pub memory_margin_bytes: i64,
    /// The predicted step.
    pub step: step::StepTime,
    /// Days of the usable wall-clock spent training.
    pub days: f64,
    /// Days needed to reach the token floor (when one is set).
    pub days_to_token_floor: Option<f64>,
    /// Tokens reachable in the usable wall-clock.
    pub tokens: f64,
    /// Predicted loss at those tokens.
    pub predicted_loss: f64,
    /// The GEMM precision of the step (the fastest of the request's precisions that fits).
    #[serde(default)]
    pub precision: GemmPrecision,
    /// Parameters one token uses (the total for a dense model).
    #[serde(default)]
    pub active_params: u64,
    /// Predicted loss at the tokens the fast end of the speed band reaches.
    #[serde(default)]
    pub loss_low: f64,
    /// Predicted loss at the tokens the slow end of the speed band reaches.
    #[serde(default)]
    pub loss_high: f64,
    /// Its loss range overlaps the best candidate's: the prediction cannot tell them apart
    /// ([`mark_equivalents`]).
    #[serde(default)]
    pub equivalent_to_best: bool,
}

/// The budget as the planner read it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlanBudget {
    /// GPUs × hours.
    pub gpu_hours: f64,
    /// Wall-clock hours after the safety margin.
    pub usable_hours: f64,
    /// GPU-hours after the safety margin.
    pub usable_gpu_hours: f64,
    /// Training FLOPs at the assumed MFU over the usable time.
    pub compute_flops: f64,
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Budget.
    pub budget: PlanBudget,
    /// Each law's bound.
    pub bounds: LawBounds,
    /// Target size from the chosen law and constraints (in the law's count, see
    /// [`LawChoice::size_basis`]).
    pub target_params: f64,
    /// The constraint that set the target.
    pub target_binding: Binding,
    /// Parameter range searched (in the law's count).
    pub param_range: (u64, u64),
    /// Shapes enumerated.
    pub shapes: u64,
    /// (shape, layout) pairs evaluated.
    pub evaluated: u64,
    /// Feasible candidates, best first.
    pub candidates: Vec<Candidate>,
    /// Each shape without a feasible layout, with its reason.
    pub rejected_shapes: Vec<Rejection>,
    /// Rejections per reason over every (shape, layout) pair (shapes with heads too large
    /// count once).
    pub rejection_counts: Vec<(RejectReason, u64)>,
    /// Layouts of the GPU count that no shape can use, with the rule each breaks.
    #[serde(default)]
    pub invalid_layouts: Vec<InvalidLayout>,
    /// The mixture-of-experts search, when requested.
    #[serde(default)]
    pub moe: Option<MoePlan>,
}

/// What the mixture-of-experts search found. Its losses come from its own law (fitted on
/// other data than the dense laws), so its candidates are ranked among themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoePlan {
    /// Per granularity: the law's own constrained optimum (active non-embedding parameters)
    /// and the constraint that set it; the search itself stays at the dense backbones' size.
    pub targets: Vec<(u64, f64, Binding)>,
    /// Dense backbones the experts were put on.
    pub backbones: u64,
    /// Mixture-of-experts shapes evaluated.
    pub shapes: u64,
    /// (shape, layout) pairs evaluated.
    pub evaluated: u64,
    /// Feasible candidates, best first by the law's predicted loss.
    pub candidates: Vec<Candidate>,
    /// Rejections per reason over every pair.
    pub rejection_counts: Vec<(RejectReason, u64)>,
}

impl Plan {
    /// The recommendation, if any candidate is feasible.
    pub fn best(&self) -> Option<&Candidate> {
        self.candidates.first()
    }

    /// The best layout of each shape, best first ([`best_per_shape`]).
    pub fn best_per_shape(&self) -> Vec<Candidate> {
        best_per_shape(&self.candidates)
    }
}

/// One candidate as the planner's tools print it (`plan --json`): a flat record of the
/// shape, the layout, memory, speed with the band's ends ([`step::StepTime::rate_band`]),
/// tokens and loss, and the mixture-of-experts keys (`None` for a dense shape). Built by
/// [`Candidate::record`]; the key names are a public interface.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandidateRecord {
    /// Hidden size.
    pub hidden_size: u64,
    /// Layers.
    pub num_layers: u64,
    /// Query heads.
    pub num_heads: u64,
    /// Head width.
    pub head_dim: u64,
    /// Key/value heads.
    pub kv_heads: u64,
    /// FFN width.
    pub ffn_size: u64,
    /// Tensor parallelism.
    pub tp: u64,
    /// Pipeline stages.
    pub pp: u64,
    /// Data parallelism.
    pub dp: u64,
    /// Micro-batch size.
    pub micro_batch: u64,
    /// The embeddings count as pipeline slots.
    pub embedding_pipeline_slots: bool,
    /// Exact total parameters.
    pub params: u64,
    /// TFLOP/s per GPU.
    pub tflops_per_gpu: f64,
    /// MFU against the 16-bit peak.
    pub mfu: f64,
    /// Predicted step time.
    pub step_seconds: f64,
    /// The band's fast end.
    pub step_seconds_low: f64,
    /// The band's slow end.
    pub step_seconds_high: f64,
    /// Tokens at the slow end of the band.
    pub tokens_low: f64,
    /// Tokens at the fast end of the band.
    pub tokens_high: f64,
    /// TFLOP/s per GPU at the slow end of the band.
    pub tflops_per_gpu_low: f64,
    /// TFLOP/s per GPU at the fast end of the band.
    pub tflops_per_gpu_high: f64,
    /// MFU against the peak of the GEMMs' precision.
    pub mfu_at_precision_peak: f64,
    /// Allocated bytes on the most loaded GPU.
    pub memory_bytes_per_gpu: u64,
    /// The device figure on that GPU.
    pub memory_device_bytes_per_gpu: u64,
    /// Fits, tight or out of memory.
    pub verdict: Verdict,
    /// Card capacity minus the device figure.
    pub memory_margin_bytes: i64,
    /// Recomputation.
    pub recompute: Recompute,
    /// Context parallelism.
    pub cp: u64,
    /// Virtual stages per pipeline rank.
    pub virtual_stages: u64,
    /// GEMM precision.
    pub precision: GemmPrecision,
    /// Tokens reachable in the usable time.
    pub tokens: f64,
    /// Days of training.
    pub days: f64,
    /// Days to the token floor (when one is set).
    pub days_to_token_floor: Option<f64>,
    /// Predicted loss (nats per token).
    pub predicted_loss: f64,
    /// Loss at the fast end of the band.
    pub predicted_loss_low: f64,
    /// Loss at the slow end of the band.
    pub predicted_loss_high: f64,
    /// The prediction cannot tell it from the best.
    pub equivalent_to_best: bool,
    /// A mixture-of-experts shape.
    pub moe: bool,
    /// Routed experts.
    pub num_experts: Option<u64>,
    /// Experts per token.
    pub top_k: Option<u64>,
    /// Expert FFN width.
    pub expert_ffn_size: Option<u64>,
    /// Shared experts.
    pub num_shared_experts: Option<u64>,
    /// Parameters one token uses.
    pub active_params: u64,
    /// Expert parallelism.
    pub ep: u64,
    /// Expert tensor parallelism.
    pub etp: u64,
}

impl Candidate {
    /// The candidate as the planner's tools print it ([`CandidateRecord`]).
    ///
    /// ```
    /// use lmshape::plan::{self, PlanRequest};
    /// let req = PlanRequest::bloom_reference().to_builder()
    ///     .param_range(Some((170_000_000_000, 180_000_000_000))).build()?;
    /// let timer = lmshape::hardware::AnalyticalTimer::new(req.cluster().gpu.clone());
    /// let best = plan::plan(&req, &timer)?.best().unwrap().record();
    /// assert_eq!(best.tp * best.pp * best.dp, 384);
    /// assert!(best.tokens_low <= best.tokens && best.tokens <= best.tokens_high);
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    pub fn record(&self) -> CandidateRecord {
        let (m, l, s) = (&self.shape.model, &self.layout, &self.step);
        let moe = m.moe();
        let (tokens_low, tokens_high) = s.rate_band(self.tokens);
        let (tflops_per_gpu_low, tflops_per_gpu_high) = s.rate_band(s.tflops_per_gpu);
        CandidateRecord {
            hidden_size: m.hidden_size(),
            num_layers: m.num_layers(),
            num_heads: m.num_heads(),
            head_dim: m.head_dim(),
            kv_heads: m.num_kv_heads(),
            ffn_size: m.ffn_size(),
            tp: l.tp,
            pp: l.pp,
            dp: l.dp,
            micro_batch: l.micro_batch,
            embedding_pipeline_slots: l.embedding_pipeline_slots,
            params: self.shape.params,
            tflops_per_gpu: s.tflops_per_gpu,
            mfu: s.mfu,
            step_seconds: s.step_seconds,
            step_seconds_low: s.step_seconds_low,
            step_seconds_high: s.step_seconds_high,
            tokens_low,
            tokens_high,
            tflops_per_gpu_low,
            tflops_per_gpu_high,
            mfu_at_precision_peak: s.mfu_at_precision_peak,
            memory_bytes_per_gpu: self.memory_bytes_per_gpu,
            memory_device_bytes_per_gpu: self.memory_device_bytes_per_gpu,
            verdict: self.verdict,
            memory_margin_bytes: self.memory_margin_bytes,
            recompute: l.recompute,
            cp: l.cp,
            virtual_stages: l.virtual_stages(),
            precision: self.precision,
            tokens: self.tokens,
            days: self.days,
            days_to_token_floor: self.days_to_token_floor,
            predicted_loss: self.predicted_loss,
            predicted_loss_low: self.loss_low,
            predicted_loss_high: self.loss_high,
            equivalent_to_best: self.equivalent_to_best,
            moe: moe.is_some(),
            num_experts: moe.map(|e| e.num_experts),
            top_k: moe.map(|e| e.top_k),
            expert_ffn_size: moe.map(|e| e.expert_ffn_size),
            num_shared_experts: moe.map(|e| e.num_shared_experts),
            active_params: self.active_params,
            ep: l.ep,
            etp: l.expert_tp(),
        }
    }
}

impl MoePlan {
    /// The best layout of each mixture-of-experts shape, best first ([`best_per_shape`]).
    pub fn best_per_shape(&self) -> Vec<Candidate> {
        best_per_shape(&self.candidates)
    }
}

/// The first (best) candidate of each shape among `candidates` ranked best first.
pub fn best_per_shape(candidates: &[Candidate]) -> Vec<Candidate> {
    candidates.iter().unique_by(|c| c.shape).copied().collect()
}

/// Step 1: the budget and the FLOPs it buys at the assumed MFU.
fn read_budget(req: &PlanRequest) -> Result<PlanBudget> {
    let peak = req.cluster.gpu.peak_flops_per_s(req.step_options.dtype)?;
    let usable_hours = req.hours * (1.0 - req.safety_margin);
    let usable_gpu_hours = req.gpus as f64 * usable_hours;
    Ok(PlanBudget {
        gpu_hours: req.gpus as f64 * req.hours,
        usable_hours,
        usable_gpu_hours,
        compute_flops: scaling::training_flops(usable_gpu_hours, peak, req.assumed_mfu)?,
    })
}

/// Step 2–3: the shape space around the target (or over the given range).
fn shape_space(req: &PlanRequest, target: f64) -> Result<ShapeSpace> {
    let (lo, hi) = match req.param_range {
        Some(r) => r,
        None => (
            (target * (1.0 - req.range_below)).max(1.0) as u64,
            (target * (1.0 + req.range_above)) as u64,
        ),
    };
    let mut space = ShapeSpace::around(target.max(1.0) as u64, 0.0, req.arch, req.vocab_size)?
        .to_builder()
        .min_params(lo)
        .max_params(hi)
        .target_params((target as u64).clamp(lo.min(hi), hi.max(lo)))
        .size_basis(req.law.size_basis())
        .pad_vocab(false)
        .seq_len(req.seq_len)
        .head_dims(req.head_dims.iter().copied().sorted().dedup().collect())
        .hidden_multiple(req.hidden_multiple)
        .kv_heads(req.kv_heads)
        .min_aspect_ratio(req.aspect_ratio_range.0)
        .max_aspect_ratio(req.aspect_ratio_range.1);
    if let Some(f) = req.ffn {
        space = space.ffn(f);
    }
    space.build()
}

/// What the planner keeps while it walks the shapes.
struct Tally {
    candidates: Vec<Candidate>,
    rejected_shapes: Vec<Rejection>,
    counts: [u64; RejectReason::ALL.len()],
    shapes: u64,
    evaluated: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            candidates: Vec::new(),
            rejected_shapes: Vec::new(),
            counts: [0; RejectReason::ALL.len()],
            shapes: 0,
            evaluated: 0,
        }
    }

    /// Rejections per reason, in [`RejectReason::ALL`]'s order.
    fn rejection_counts(&self) -> Vec<(RejectReason, u64)> {
        RejectReason::ALL
            .into_iter()
            .map(|r| (r, self.counts[r as usize]))
            .collect()
    }
}

/// What every (shape, layout) is evaluated against.
struct Walk<'a> {
    req: &'a PlanRequest,
    timer: &'a dyn GemmTimer,
    space: &'a ShapeSpace,
    layout_space: &'a LayoutSpace,
    layouts: &'a [ParallelLayout],
    usable_seconds: f64,
    memory_bytes: u64,
    /// For mixture-of-experts shapes: the law at their granularity, over active
    /// non-embedding parameters.
    moe_law: Option<ParametricLaw>,
}

/// The furthest a shape's layouts got: (reason, layout, tokens, error).
type Furthest = Option<(RejectReason, ParallelLayout, f64, Option<String>)>;

/// Steps 4–6 for one (shape, layout): memory, then speed, then tokens — under each of the
/// request's GEMM precisions, keeping the one that reaches the most tokens (the first
/// rejection when none passes).
fn evaluate_pair(
    walk: &Walk<'_>,
    shape: Shape,
    placed: &Placement<'_>,
) -> Result<std::result::Result<Candidate, (RejectReason, f64)>> {
    let req = walk.req;
    let precisions = req.gemm_precisions();
    let mut best: Option<std::result::Result<Candidate, (RejectReason, f64)>> = None;
    let mut first_error = None;
    for &precision in precisions {
        // A precision the GPU lacks fails alone; the others are still tried.
        let outcome = match evaluate_precision(walk, shape, placed, precision) {
            Ok(outcome) => outcome,
            Err(e) => {
                first_error.get_or_insert(e);
                continue;
            }
        };
        best = match (best, outcome) {
            (Some(Ok(a)), Ok(b)) => Some(Ok(if b.tokens > a.tokens { b } else { a })),
            (Some(Ok(a)), Err(_)) => Some(Ok(a)),
            (Some(Err(a)), Err(_)) => Some(Err(a)),
            (_, outcome) => Some(outcome),
        };
    }
    match (best, first_error) {
        (Some(outcome), _) => Ok(outcome),
        (None, Some(e)) => Err(e),
        (None, None) => Ok(Err((RejectReason::DoesNotFit, 0.0))),
    }
}

/// [`evaluate_pair`] under one GEMM precision.
fn evaluate_precision(
    walk: &Walk<'_>,
    shape: Shape,
    placed: &Placement<'_>,
    precision: GemmPrecision,
) -> Result<std::result::Result<Candidate, (RejectReason, f64)>> {
    let model = placed.model();
    let req = walk.req;
    let opts = StepOptions {
        memory: memory::MemoryOptions {
            gemm_precision: precision,
            ..req.step_options.memory
        },
        ..req.step_options
    };
    let profile = FrameworkProfile::of(req.framework);
    // The memory estimate counts the framework's bytes per parameter.
    let memory_opts = profile.memory_options(&opts.memory);
    let mut placed = *placed;
    if req.recompute_auto {
        match memory::least_recompute_placed(
            &placed,
            &memory_opts,
            &profile,
            req.cluster.gpu.memory_bytes,
            req.memory_fraction,
        )? {
            Some((rc, _)) => placed = placed.with_recompute(rc),
            None => return Ok(Err((RejectReason::DoesNotFit, 0.0))),
        }
    }
    let layout = *placed.layout();
    let mem = memory::training_memory_placed(&placed, &memory_opts)?;
    let device = profile.most_loaded(&mem)?;
    if device.device_bytes > walk.memory_bytes {
        return Ok(Err((RejectReason::DoesNotFit, 0.0)));
    }
    let (verdict, memory_margin_bytes) = device.verdict(req.cluster.gpu.memory_bytes);
    // The step is timed under the same byte counts the memory was sized with.
    let opts = StepOptions {
        memory: memory_opts,
        ..opts
    };
    let st = step::step_time_placed(&placed, &req.cluster, walk.timer, &opts)?;
    let tokens = st.tokens_per_second * walk.usable_seconds;
    if req.token_floor.is_some_and(|f| tokens < f) {
        return Ok(Err((RejectReason::TooSlowForTokenFloor, tokens)));
    }
    let counts = model.param_counts()?;
    let loss = Losses::of(walk, &counts, &st, tokens)?;
    Ok(Ok(Candidate {
        shape,
        layout,
        memory_bytes_per_gpu: device.allocated_bytes.max(mem.peak.total_bytes),
        memory_device_bytes_per_gpu: device.device_bytes,
        verdict,
        memory_margin_bytes,
        step: st,
        days: walk.usable_seconds / 86_400.0,
        days_to_token_floor: req.token_floor.map(|f| st.days_for_tokens(f)),
        tokens,
        predicted_loss: loss.predicted,
        precision,
        active_params: match &walk.moe_law {
            Some(_) => counts.active_params,
            None => shape.params,
        },
        loss_low: loss.low,
        loss_high: loss.high,
        equivalent_to_best: false,
    }))
}

/// A candidate's predicted loss at the tokens it reaches, and at the tokens the ends of its
/// step-time band reach (a step as fast as the band's low end reaches more tokens).
struct Losses {
    predicted: f64,
    low: f64,
    high: f64,
}

impl Losses {
    /// Under the plan's law: the dense law of the model's size, or the mixture-of-experts law
    /// of its active non-embedding parameters (`counts` are the model's).
    fn of(
        walk: &Walk<'_>,
        counts: &crate::params::ParamCounts,
        st: &step::StepTime,
        tokens: f64,
    ) -> Result<Losses> {
        let loss_at = |t: f64| match &walk.moe_law {
            Some(law) => law.loss(
                counts.active_params.saturating_sub(counts.embedding_params) as f64,
                t,
            ),
            None => walk.req.law.loss_of_counts(counts, t),
        };
        let predicted = loss_at(tokens)?;
        let (slow, fast) = st.rate_band(tokens);
        Ok(Losses {
            predicted,
            low: loss_at(fast)?.min(predicted),
            high: loss_at(slow)?.max(predicted),
        })
    }
}

/// Steps 3–6 for one shape over every layout; a per-pair failure is a rejection, not an
/// error of the plan.
fn evaluate_shape(walk: &Walk<'_>, shape: Shape, tally: &mut Tally) {
    tally.shapes += 1;
    let req = walk.req;
    if shape.model.head_dim > req.max_head_dim {
        tally.counts[RejectReason::HeadsTooLarge as usize] += 1;
        tally.rejected_shapes.push(Rejection {
            shape,
            layout: None,
            reason: RejectReason::HeadsTooLarge,
            error: None,
        });
        return;
    }
    let model = match walk.space.model_of(&shape) {
        Ok(m) => m,
        Err(e) => {
            tally.counts[RejectReason::EstimateFailed as usize] += 1;
            tally.rejected_shapes.push(Rejection {
                shape,
                layout: None,
                reason: RejectReason::EstimateFailed,
                error: Some(e.to_string()),
            });
            return;
        }
    };
    let feasible_before = tally.candidates.len();
    let mut furthest: Furthest = None;
    for base in walk.layouts {
        tally.evaluated += 1;
        let outcome = match walk.layout_space.for_model(base, &model) {
            Err(_) => Err((RejectReason::Indivisible, *base, 0.0, None)),
            Ok(placed) => match evaluate_pair(walk, shape, &placed) {
                Ok(Ok(c)) => Ok(c),
                Ok(Err((reason, tokens))) => Err((reason, *placed.layout(), tokens, None)),
                Err(e) => Err((
                    RejectReason::EstimateFailed,
                    *placed.layout(),
                    0.0,
                    Some(e.to_string()),
                )),
            },
        };
        match outcome {
            Ok(c) => tally.candidates.push(c),
            Err(r) => {
                tally.counts[r.0 as usize] += 1;
                let further = furthest
                    .as_ref()
                    .is_none_or(|f| r.0 > f.0 || (r.0 == f.0 && r.2 > f.2));
                if further {
                    furthest = Some(r);
                }
            }
        }
    }
    if tally.candidates.len() == feasible_before {
        if let Some((reason, layout, _, error)) = furthest {
            tally.rejected_shapes.push(Rejection {
                shape,
                layout: Some(layout),
                reason,
                error,
            });
        }
    }
}

/// Most rounds [`plan_with_predicted_mfu`] takes.
pub const MAX_MFU_ROUNDS: usize = 6;

/// Run the planner with the budget's assumed MFU replaced by the recommendation's predicted
/// MFU, again until the MFU the plan assumes and the one its pick predicts differ by less than
/// 1% (at most [`MAX_MFU_ROUNDS`] rounds): the target then rests on the speed the pick
/// reaches, not on a guess, and the pick does not sit at the edge of a window set by the
/// guess. Returns the last plan and the MFU of each round (the first is the request's).
///
/// # Errors
/// As [`plan`].
pub fn plan_with_predicted_mfu(
    req: &PlanRequest,
    timer: &dyn GemmTimer,
) -> Result<(Plan, Vec<f64>)> {
    let mut req = req.clone();
    let mut mfus = vec![req.assumed_mfu];
    let mut p = plan(&req, timer)?;
    for _ in 1..MAX_MFU_ROUNDS {
        let Some(mfu) = p.best().map(|c| c.step.mfu) else {
            break;
        };
        if !(mfu.is_finite() && mfu > 0.0 && mfu <= 1.0)
            || (mfu / req.assumed_mfu - 1.0).abs() < 0.01
        {
            break;
        }
        req.assumed_mfu = mfu;
        mfus.push(mfu);
        p = plan(&req, timer)?;
    }
    Ok((p, mfus))
}

/// Run the planner (see the module docs).
///
/// # Errors
/// A malformed request (a zero or non-finite figure, empty options, a precision the GPU
/// lacks), a target the law cannot reach, and, found before the search in one error each, a
/// token floor no shape of the window reaches even at the GPU's peak
/// ([`most_tokens_at_peak`]) or GPUs no layout of the options can use; any other impossible
/// request is a plan with no candidates and every
/// rejection's reason, not an error.
pub fn plan(req: &PlanRequest, timer: &dyn GemmTimer) -> Result<Plan> {
    req.validate()?;
    let layout_space = req.layout_space();
    let layouts = layout_space.enumerate()?;
    check_layouts(req, &layouts)?;
    let budget = read_budget(req)?;
    let bounds = LawBounds::for_flops(budget.compute_flops)?;
    let cons = Constraints {
        token_floor: req.token_floor,
        param_cap: req.param_cap,
        param_floor: None,
    };
    let (target, binding) = req.law.target(budget.compute_flops, &cons)?;
    let space = shape_space(req, target)?;
    if let Some(floor) = req.token_floor {
        check_token_floor(req, &budget, &space, floor, target, binding)?;
    }
    let walk = Walk {
        req,
        timer,
        space: &space,
        layout_space: &layout_space,
        layouts: &layouts.valid,
        usable_seconds: budget.usable_hours * 3600.0,
        memory_bytes: (req.cluster.gpu.memory_bytes as f64 * req.memory_fraction) as u64,
        moe_law: None,
    };
    let mut tally = Tally::new();
    for shape in space.iter()? {
        evaluate_shape(&walk, shape, &mut tally);
    }
    // Step 7: rank by predicted loss, more tokens first on ties.
    rank_by_loss(&mut tally.candidates);
    mark_equivalents_under(&mut tally.candidates, &req.law_samples);
    order_equivalents(&mut tally.candidates, req.equivalent_order);
    let moe = match &req.moe {
        Some(search) => {
            let backbones: Vec<Shape> = tally
                .candidates
                .iter()
                .map(|c| c.shape)
                .unique()
                .take(search.backbones)
                .collect();
            Some(plan_moe(
                &walk,
                search,
                &backbones,
                budget.compute_flops,
                &cons,
            )?)
        }
        None => None,
    };
    let rejection_counts = tally.rejection_counts();
    Ok(Plan {
        budget,
        bounds,
        target_params: target,
        target_binding: binding,
        param_range: (space.min_params, space.max_params),
        shapes: tally.shapes,
        evaluated: tally.evaluated,
        candidates: tally.candidates,
        rejected_shapes: tally.rejected_shapes,
        rejection_counts,
        invalid_layouts: layouts
            .invalid
            .into_iter()
            .map(|(layout, e)| InvalidLayout {
                layout,
                reason: e.to_string(),
            })
            .collect(),
        moe,
    })
}

/// The most tokens any shape of `space` could train on in the usable time: the request's
/// GPUs at the highest peak among its GEMM precisions, divided by the shape's model matmul
/// FLOPs per token (Megatron-LM's count without recomputation, the numerator of MFU). No
/// step runs faster, since the step model refuses a step above its precision's peak, so a
/// token floor above this bound is unreachable whatever the search finds; `None` when the
/// window holds no shape the head limit admits (or no precision has a peak on the GPU).
///
/// # Errors
/// A shape whose FLOPs cannot be counted.
pub fn most_tokens_at_peak(
    req: &PlanRequest,
    usable_gpu_hours: f64,
    space: &ShapeSpace,
) -> Result<Option<(Shape, f64)>> {
    let peak = req
        .gemm_precisions()
        .iter()
        .filter_map(|&p| {
            let opts = StepOptions {
                memory: memory::MemoryOptions {
                    gemm_precision: p,
                    ..req.step_options.memory
                },
                ..req.step_options
            };
            req.cluster.gpu.peak_flops_per_s(opts.gemm_dtype()).ok()
        })
        .fold(0.0_f64, f64::max);
    if peak <= 0.0 {
        return Ok(None);
    }
    // Every FLOP the usable time buys at the peak (MFU 1).
    let flops = scaling::training_flops(usable_gpu_hours, peak, 1.0)?;
    let mut best: Option<(Shape, f64)> = None;
    for shape in space.iter()? {
        if shape.model.head_dim > req.max_head_dim {
            continue;
        }
        let model = space.model_of(&shape)?;
        let per_token = crate::flops::matmul_flops_per_token(
            &model,
            &crate::flops::FlopsConvention::megatron(req.seq_len, Recompute::None),
        )?
        .model_flops();
        let tokens = flops / per_token;
        if best.is_none_or(|(_, t)| tokens > t) {
            best = Some((shape, tokens));
        }
    }
    Ok(best)
}

/// A request whose GPUs no layout of its options can use ends the plan before the search,
/// naming the node, the options and a rule the first rejected layout breaks.
fn check_layouts(req: &PlanRequest, layouts: &crate::parallel::Layouts) -> Result<()> {
    if !layouts.valid.is_empty() {
        return Ok(());
    }
    let reason = layouts.invalid.first().map_or(
        "no tensor-parallel option fits a node".to_string(),
        |(l, e)| format!("e.g. {l}: {e}"),
    );
    Err(Error::Inconsistent {
        rule: "the layout rules must leave some layout of the request's GPUs",
        detail: format!(
            "no layout of {} GPUs satisfies the layout rules ({} GPUs per node, tp options {}): {reason}",
            req.gpus,
            req.cluster.gpus_per_node,
            req.tp_options.iter().join(", ")
        ),
    })
}

/// A token floor no shape of the window reaches even at the GPU's peak
/// ([`most_tokens_at_peak`]) ends the plan before the search, naming the floor.
fn check_token_floor(
    req: &PlanRequest,
    budget: &PlanBudget,
    space: &ShapeSpace,
    floor: f64,
    target: f64,
    binding: Binding,
) -> Result<()> {
    const RULE: &str =
        "the token floor must be reachable by some shape of the search window at the GPU's peak";
    let e = |x: f64| format!("{x:.3e}");
    let detail = match most_tokens_at_peak(req, budget.usable_gpu_hours, space)? {
        Some((_, most)) if most >= floor => return Ok(()),
        Some((shape, most)) => format!(
            "a floor of {} tokens; the cheapest shape per token, {} layers × {} hidden ({} params), \
             trains on at most {} tokens in {} usable GPU-hours at 100% MFU",
            e(floor),
            shape.model.num_layers,
            shape.model.hidden_size,
            e(shape.params as f64),
            e(most),
            e(budget.usable_gpu_hours),
        ),
        // Only the floor's doing when it moved the target out of every shape's reach.
        None if binding == Binding::TokenFloor => format!(
            "a floor of {} tokens moves the target to {} params (C/6D at {} FLOPs), \
             and the window {}..{} holds no shape of the architecture's rules",
            e(floor),
            e(target),
            e(budget.compute_flops),
            e(space.min_params as f64),
            e(space.max_params as f64),
        ),
        None => return Ok(()),
    };
    Err(Error::Inconsistent { rule: RULE, detail })
}

/// Best predicted loss first, more tokens first on ties; then [`mark_equivalents`].
fn rank_by_loss(candidates: &mut [Candidate]) {
    candidates.sort_by(|a, b| {
        a.predicted_loss
            .total_cmp(&b.predicted_loss)
            .then(b.tokens.total_cmp(&a.tokens))
    });
    mark_equivalents(candidates);
}

/// Mark the candidates the prediction cannot tell from the best: those whose loss at the fast
/// end of their speed band is no worse than the best's loss at the slow end of its band
/// (the loss ranges overlap). The speed band is the prediction's measured uncertainty
/// ([`crate::system::SystemProfile::band`]); differences of loss inside it are not evidence.
pub fn mark_equivalents(candidates: &mut [Candidate]) {
    let Some(worst_best) = candidates.first().map(|b| b.loss_high) else {
        return;
    };
    for c in candidates.iter_mut() {
        c.equivalent_to_best = c.loss_low <= worst_best;
    }
}

/// Share of a law's refits that must rank a candidate below the best before it stops being
/// equivalent: 95%, so the order the point law gives is kept only where its refits agree (an
/// assumption: the usual two-sided 90% interval's upper end).
pub const LAW_RESOLUTION_AGREEMENT: f64 = 0.95;

/// [`mark_equivalents`], then also mark the candidates (ranked, best first) whose loss, each
/// of the law's `samples` predicting it at the candidate's size and tokens, is no worse than
/// the best's in more than `1 − LAW_RESOLUTION_AGREEMENT` of the samples: the law's own
/// parameter uncertainty cannot put them below the best (its resolution, measured by refitting
/// resampled runs as Besiroglu et al. 2024 bootstrap the Chinchilla fit). Parametric laws count
/// every parameter.
///
/// ```
/// use lmshape::plan::{self, PlanRequest};
/// use lmshape::scaling::ParametricLaw;
/// let req = PlanRequest::bloom_reference().to_builder()
///     .param_range(Some((150_000_000_000, 190_000_000_000))).build()?;
/// let timer = lmshape::hardware::AnalyticalTimer::new(req.cluster().gpu.clone());
/// let mut p = plan::plan(&req, &timer)?;
/// let before = p.candidates.iter().filter(|c| c.equivalent_to_best).count();
/// // Refits that disagree on the exponents cannot rank these sizes apart.
/// let refits = [ParametricLaw::CHINCHILLA, ParametricLaw::BESIROGLU];
/// plan::mark_equivalents_under(&mut p.candidates, &refits);
/// assert!(p.candidates.iter().filter(|c| c.equivalent_to_best).count() >= before);
/// # Ok::<(), lmshape::Error>(())
/// ```
pub fn mark_equivalents_under(candidates: &mut [Candidate], samples: &[ParametricLaw]) {
    let Some(best) = candidates
        .first()
        .map(|b| (b.shape.params as f64, b.tokens))
    else {
        return;
    };
    if samples.is_empty() {
        return;
    }
    // Each refit's loss of the best, once.
    let best_losses: Vec<Option<f64>> = samples
        .iter()
        .map(|law| law.loss(best.0, best.1).ok())
        .collect();
    for c in candidates.iter_mut().skip(1) {
        if c.equivalent_to_best {
            continue;
        }
        let (n, d) = (c.shape.params as f64, c.tokens);
        let not_worse = samples
            .iter()
            .zip(&best_losses)
            .filter(|(law, best)| match (law.loss(n, d), best) {
                (Ok(x), Some(b)) => x <= *b,
                _ => false,
            })
            .count();
        c.equivalent_to_best =
            not_worse as f64 > (1.0 - LAW_RESOLUTION_AGREEMENT) * samples.len() as f64;
    }
}

/// The mixture-of-experts search: the best feasible dense shapes (`backbones`) take every
/// expert setting of [`crate::search::MoeSpace`] — the same active size, so the same compute
/// per token as the dense candidates; each shape is tried on the layouts with each
/// expert-parallel degree and ranked by the mixture-of-experts law's loss at its granularity
/// and the tokens it reaches. The law's own compute-optimal active size per granularity under
/// the budget and the constraints ([`ParametricLaw::constrained`]) is reported beside (its
/// small exponents put it far above the dense target at large budgets: an extrapolation of a
/// fit on small models).
fn plan_moe(
    walk: &Walk<'_>,
    search: &MoeSearch,
    backbones: &[Shape],
    flops: f64,
    cons: &Constraints,
) -> Result<MoePlan> {
    let req = walk.req;
    let mut layout_space = req.layout_space();
    let mut layouts = Vec::new();
    for &ep in &search.ep_options {
        layout_space.template.ep = ep;
        layout_space.template.etp = Some(1);
        layouts.extend(layout_space.enumerate()?.valid);
    }
    let mut tally = Tally::new();
    let mut targets = Vec::new();
    let space = crate::search::MoeSpace {
        num_experts: search.num_experts.clone(),
        shared_experts: search.shared_experts.clone(),
        first_dense_layers: search.first_dense_layers.clone(),
        // The backbones are the dense plan's own; the window is theirs.
        max_total_params: None,
        ..crate::search::MoeSpace::new(
            walk.space
                .to_builder()
                .min_params(0)
                .max_params(u64::MAX)
                .build()?,
        )
    };
    for &g in &search.granularities {
        let law = search.law.at(g as f64)?;
        let choice = law.constrained(flops, cons)?;
        targets.push((g, choice.params, choice.binding));
        let moe_walk = Walk {
            moe_law: Some(law),
            layouts: &layouts,
            layout_space: &layout_space,
            ..*walk
        };
        for b in backbones {
            for (e, s, fd) in itertools::iproduct!(
                space.num_experts.iter().copied(),
                space.shared_experts.iter().copied(),
                space.first_dense_layers.iter().copied()
            ) {
                if e.saturating_add(s) < search.min_expansion.saturating_mul(g) {
                    continue;
                }
                if let Some(m) = space.check(b, e, g, s, fd) {
                    evaluate_shape(&moe_walk, m.shape, &mut tally);
                }
            }
        }
    }
    rank_by_loss(&mut tally.candidates);
    let rejection_counts = tally.rejection_counts();
    Ok(MoePlan {
        targets,
        backbones: backbones.len() as u64,
        shapes: tally.shapes,
        evaluated: tally.evaluated,
        candidates: tally.candidates,
        rejection_counts,
    })
}
