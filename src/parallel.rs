//! Parallel layouts (tensor, pipeline, data, sequence parallelism, ZeRO, batches) and the rules
//! that make one valid for a model.
//!
//! Rules follow Megatron-LM (Shoeybi et al. 2019; Narayanan et al. 2021; Korthikanti et al.
//! 2022) and its argument checks: heads, hidden and FFN split over `tp`; key/value heads split
//! over `tp` or, when fewer than `tp`, replicated (`tp % kv == 0`); layers split over `pp`
//! (BigScience counted the two embeddings as pipeline slots: `(L + 2) % pp`); the global batch
//! splits into micro-batches over data-parallel replicas; the interleaved schedule needs
//! `L % (pp·v) == 0` and a micro-batch count divisible by `pp`. The vocabulary is padded to a
//! multiple of `128 · tp` (`--make-vocab-size-divisible-by 128`), never rejected.

use crate::error::{Error, Result, divisible, positive};
use crate::model::Transformer;
pub use crate::params::kv_heads_per_rank;
use itertools::Itertools;
use serde::{Deserialize, Serialize};

/// Activation recomputation strategy.
///
/// Sources: Chen et al. 2016 (full checkpointing of each layer's input); Korthikanti et al. 2022
/// §4 ("selective": only the attention core — `QKᵀ`, softmax, dropout, attention over `V` — is
/// recomputed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recompute {
    /// Keep every activation.
    #[default]
    None,
    /// Recompute the attention core only.
    Selective,
    /// Recompute each layer's forward from its input.
    Full,
}

crate::error::named!(Recompute, "recompute", [
    None => "none",
    Selective => "selective",
    Full => "full",
]);

/// ZeRO stage (Rajbhandari et al. 2020): what is sharded across data-parallel replicas.
/// Megatron-LM's distributed optimizer shards optimizer state like stage 1.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ZeroStage {
    /// Nothing sharded.
    #[default]
    None,
    /// Optimizer states (fp32 master weights and Adam moments) sharded.
    OptimizerStates,
    /// + gradients.
    Gradients,
    /// + weights.
    Weights,
}

impl ZeroStage {
    /// Stage from its number 0–3.
    ///
    /// ```
    /// assert_eq!(lmshape::ZeroStage::from_number(2)?, lmshape::ZeroStage::Gradients);
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a stage above 3.
    pub fn from_number(n: u64) -> Result<ZeroStage> {
        Ok(match n {
            0 => ZeroStage::None,
            1 => ZeroStage::OptimizerStates,
            2 => ZeroStage::Gradients,
            3 => ZeroStage::Weights,
            _ => {
                return Err(Error::InvalidValue {
                    field: "zero stage",
                    value: n as f64,
                    expected: "0, 1, 2 or 3",
                });
            }
        })
    }

    /// The stage's number.
    pub fn number(self) -> u64 {
        self as u64
    }
}

crate::error::named!(ZeroStage, "ZeRO stage", [
    None => "0",
    OptimizerStates => "1",
    Gradients => "2",
    Weights => "3",
]);

/// Pipeline schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Schedule {
    /// One-forward-one-backward (PipeDream-Flush; Narayanan et al. 2021 §2.2.1).
    #[default]
    OneFOneB,
    /// Interleaved 1F1B with `virtual_stages` model chunks per GPU (Narayanan et al. 2021
    /// §2.2.2).
    Interleaved {
        /// Model chunks per pipeline rank (`v`).
        virtual_stages: u64,
    },
}

/// How the ranks of a context-parallel group exchange what attention needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpComm {
    /// Ring attention: each rank passes its key/value chunk around the ring, `cp − 1` sends
    /// overlapped with the attention of the chunk in hand (Liu et al. 2023; Megatron-Core's
    /// default `p2p`).
    #[default]
    P2p,
    /// All-to-all (DeepSpeed-Ulysses, Jacobs et al. 2023): queries, keys and values
    /// redistributed from sequence chunks to head groups and the output back; needs the heads
    /// of a tensor-parallel rank to split over `cp`.
    A2a,
}

crate::error::named!(CpComm, "context-parallel communication", [P2p => "p2p", A2a => "a2a"]);

crate::checked::checked_type! {
    /// A parallel layout and batch configuration for training. Its own rules
    /// ([`ParallelLayout::validate_batch`]) hold once built, serde included; the rules that
    /// involve a model are checked where a model meets it ([`ParallelLayout::validate`]).
    ///
    /// ```
    /// use lmshape::{ParallelLayout, presets};
    /// let bloom = presets::by_name("bloom-176b")?;
    /// let layout = ParallelLayout::builder().tp(4).pp(12).dp(8).micro_batch(2)
    ///     .global_batch(2048).embedding_pipeline_slots(true).build()?;
    /// layout.validate(&bloom)?;
    /// assert_eq!(layout.gpus()?, 384);
    /// assert_eq!(layout.num_micro_batches()?, 128);
    /// // A global batch that does not split over the replicas cannot be built.
    /// assert!(layout.to_builder().global_batch(100).build().is_err());
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    #[derive(Copy, Eq, Hash)]
    pub struct ParallelLayout;
    /// The one way to set a [`ParallelLayout`]'s fields, and its serde form: `build` checks
    /// the layout's own rules ([`ParallelLayout::validate_batch`]).
    #[derive(Copy, Eq, Hash)]
    pub struct ParallelLayoutBuilder = "ParallelLayoutBuilder";
    check = validate_batch;
    fields {
        /// Tensor-parallel degree.
        tp: u64 [copy],
        /// Pipeline-parallel degree.
        pp: u64 [copy],
        /// Data-parallel degree.
        dp: u64 [copy],
        /// Sequence parallelism (Korthikanti et al. 2022 §4.2.2) over the tensor-parallel group.
        sequence_parallel: bool [copy],
        /// ZeRO stage over data parallelism.
        zero: ZeroStage [copy],
        /// Sequences per micro-batch.
        micro_batch: u64 [copy],
        /// Sequences per optimizer step (all replicas).
        global_batch: u64 [copy],
        /// Tokens per sequence.
        seq_len: u64 [copy],
        /// Activation recomputation.
        recompute: Recompute [copy],
        /// Pipeline schedule.
        schedule: Schedule [copy],
        /// Count the input embedding and the output head as one pipeline slot each, as
        /// BigScience did for BLOOM: `(L + 2) % pp == 0`; the first and last stages then hold
        /// one layer fewer.
        embedding_pipeline_slots: bool [copy],
        /// Balance layers that do not split evenly over the stages
        /// ([`PipelineSplit::balanced`]).
        balanced_pipeline: bool [copy, default = "Default::default"],
        /// Layers of the first stage (Megatron-Core's uneven first stage).
        first_stage_layers: Option<u64> [copy, default = "Default::default"],
        /// Layers of the last stage (Megatron-Core's uneven last stage).
        last_stage_layers: Option<u64> [copy, default = "Default::default"],
        /// Context-parallel degree: each sequence split over `cp` ranks (Megatron-Core
        /// `--context-parallel-size`; Liu et al. 2023, ring attention), into `2·cp` chunks for
        /// causal load balancing.
        cp: u64 [copy, default = "one"],
        /// How context-parallel ranks exchange keys and values.
        cp_comm: CpComm [copy, default = "Default::default"],
        /// Expert-parallel degree: routed experts spread over `ep` ranks of the `tp × dp` grid
        /// (Megatron-Core `--expert-model-parallel-size`).
        ep: u64 [copy, default = "one"],
        /// Expert-tensor-parallel degree (Megatron-Core `--expert-tensor-parallel-size`;
        /// `None`: equal to `tp`).
        etp: Option<u64> [copy, default = "Default::default"],
    }
}

fn one() -> u64 {
    1
}

impl std::fmt::Display for ParallelLayoutBuilder {
    /// The degrees and the micro-batch, as the tools print a layout: `tp 4 × pp 12 × dp 8,
    /// micro-batch 2` (context parallelism and virtual stages when used). A builder may hold a
    /// layout that breaks a rule (a rejected layout is reported this way).
    ///
    /// ```
    /// let b = lmshape::ParallelLayout::builder().tp(4).pp(12).dp(8).micro_batch(2);
    /// assert_eq!(b.to_string(), "tp 4 × pp 12 × dp 8, micro-batch 2");
    /// ```
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tp {}", self.tp)?;
        if self.cp > 1 {
            write!(f, " × cp {}", self.cp)?;
        }
        write!(
            f,
            " × pp {} × dp {}, micro-batch {}",
            self.pp, self.dp, self.micro_batch
        )?;
        if let Schedule::Interleaved { virtual_stages } = self.schedule {
            write!(f, ", {virtual_stages} virtual stages")?;
        }
        Ok(())
    }
}

impl ParallelLayout {
    /// A builder from the default layout (one GPU, micro-batch 1, global batch 1, sequence
    /// 2048, no recomputation).
    pub fn builder() -> ParallelLayoutBuilder {
        ParallelLayout::default().to_builder()
    }
}

impl Default for ParallelLayout {
    /// One GPU, micro-batch 1, global batch 1, sequence 2048, no recomputation.
    fn default() -> ParallelLayout {
        ParallelLayout {
            tp: 1,
            pp: 1,
            dp: 1,
            sequence_parallel: false,
            zero: ZeroStage::None,
            micro_batch: 1,
            global_batch: 1,
            seq_len: 2048,
            recompute: Recompute::None,
            schedule: Schedule::OneFOneB,
            embedding_pipeline_slots: false,
            balanced_pipeline: false,
            first_stage_layers: None,
            last_stage_layers: None,
            cp: 1,
            cp_comm: CpComm::P2p,
            ep: 1,
            etp: None,
        }
    }
}

/// A mixture-of-experts capacity factor: each expert takes at most `factor × tokens · k / E`
/// tokens per micro-batch and pads to that many (GShard, Lepikhin et al. 2021 §2.2; Switch
/// Transformer, Fedus et al. 2022 §2.2; Megatron-Core `--moe-expert-capacity-factor` with
/// `--moe-pad-expert-input-to-capacity`). Built only finite and in `(0, 64]`, serde included.
///
/// ```
/// use lmshape::parallel::CapacityFactor;
/// assert_eq!(CapacityFactor::new(1.25)?.get(), 1.25);
/// assert!(CapacityFactor::new(0.0).is_err());
/// assert!(serde_json::from_str::<CapacityFactor>("-1").is_err());
/// # Ok::<(), lmshape::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct CapacityFactor(f64);

impl CapacityFactor {
    /// A factor in `(0, 64]`; anything else is [`Error::InvalidValue`].
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a factor outside `(0, 64]`.
    pub fn new(factor: f64) -> Result<CapacityFactor> {
        if factor.is_finite() && factor > 0.0 && factor <= 64.0 {
            Ok(CapacityFactor(factor))
        } else {
            Err(Error::InvalidValue {
                field: "capacity factor",
                value: factor,
                expected: "in (0, 64]",
            })
        }
    }

    /// The factor.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for CapacityFactor {
    type Error = Error;

    fn try_from(f: f64) -> Result<CapacityFactor> {
        CapacityFactor::new(f)
    }
}

impl From<CapacityFactor> for f64 {
    fn from(c: CapacityFactor) -> f64 {
        c.0
    }
}

impl Eq for CapacityFactor {}

impl std::hash::Hash for CapacityFactor {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

/// How a mixture-of-experts layer routes tokens, for the size of each expert's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Routing {
    /// Dropless with balanced routing: every expert gets `tokens · k / E` (Gale et al. 2023,
    /// MegaBlocks; Megatron-Core's default; the rate NVIDIA's benchmarks force).
    #[default]
    Dropless,
    /// Each expert padded to its capacity ([`CapacityFactor`]).
    Capacity {
        /// The capacity factor.
        factor: CapacityFactor,
    },
}

impl Routing {
    /// Tokens one expert processes when `assignments` token–expert pairs are spread over
    /// `experts`: `⌈assignments / experts⌉` balanced and dropless, `⌈factor · assignments /
    /// experts⌉` padded to capacity. A capacity factor of 1 gives the dropless count.
    ///
    /// ```
    /// use lmshape::parallel::{CapacityFactor, Routing};
    /// assert_eq!(Routing::Dropless.tokens_per_expert(4096 * 8, 64)?, 512);
    /// let padded = Routing::Capacity { factor: CapacityFactor::new(1.25)? };
    /// assert_eq!(padded.tokens_per_expert(4096 * 8, 64)?, 640);
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    ///
    /// # Errors
    /// Zero experts, or a count that overflows `u64`.
    pub fn tokens_per_expert(self, assignments: u64, experts: u64) -> Result<u64> {
        crate::error::positive(experts, "experts")?;
        let balanced = assignments.div_ceil(experts);
        match self {
            Routing::Dropless => Ok(balanced),
            Routing::Capacity { factor } => {
                // A factor of 1 is the balanced count itself, exact in integers (the float
                // product below rounds counts above 2^53).
                if factor.get() == 1.0 {
                    return Ok(balanced);
                }
                let x = (factor.get() * assignments as f64 / experts as f64).ceil();
                crate::error::to_u64(x, "tokens per expert")
            }
        }
    }
}

/// The mixture-of-experts block of one micro-batch on one rank (Megatron-Core's all-to-all
/// token dispatcher): the expert grid `etp × ep × edp` is folded into `tp × dp`, so a rank
/// dispatches `T_r = T · etp / tp` tokens (`T = s·b`) and each of its `E/ep` local experts
/// takes [`Routing::tokens_per_expert`] of the `ep · T_r · k` assignments of its
/// expert-parallel group, at width `f_e / etp`. Per rank this is `T·k·f_e/tp` of expert work,
/// the dense MLP's share under tensor parallelism.
///
/// ```
/// use lmshape::{model::Moe, parallel::{self, Routing}, ParallelLayout};
/// // 128 experts, top-8, over ep 8 with tp 2 and etp 1: a rank dispatches half of 4096 tokens.
/// let layout = ParallelLayout::builder().tp(2).dp(8).ep(8).etp(Some(1)).global_batch(8).build()?;
/// let x = parallel::expert_batch(&Moe::routed(128, 8, 768), &layout, Routing::Dropless, 4096)?;
/// assert_eq!((x.routed_tokens, x.local_experts, x.tokens_per_expert, x.width), (2048, 16, 1024, 768));
/// // Per rank: 16 experts × 1024 tokens = 2048 tokens × 8 experts each, half the micro-batch.
/// # Ok::<(), lmshape::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpertBatch {
    /// Tokens the rank routes and dispatches (`T_r`).
    pub routed_tokens: u64,
    /// Experts the rank holds (`E/ep`).
    pub local_experts: u64,
    /// Tokens each local expert processes.
    pub tokens_per_expert: u64,
    /// Width of each local expert's slice (`f_e/etp`).
    pub width: u64,
}

/// The expert batch of one micro-batch of `tokens` tokens on one rank ([`ExpertBatch`]).
///
/// # Errors
/// A layout whose expert degrees do not split the experts, or counts that overflow `u64`.
pub fn expert_batch(
    moe: &crate::model::Moe,
    layout: &ParallelLayout,
    routing: Routing,
    tokens: u64,
) -> Result<ExpertBatch> {
    positive(layout.tp, "tp")?;
    positive(layout.ep, "ep")?;
    let etp = layout.expert_tp();
    let routed_tokens = crate::error::mul(tokens, etp, "routed tokens")?
        .div_ceil(layout.tp)
        .max(1);
    let assignments = crate::error::mul(
        crate::error::mul(routed_tokens, layout.ep, "routed tokens")?,
        moe.top_k,
        "routed tokens",
    )?;
    Ok(ExpertBatch {
        routed_tokens,
        local_experts: moe.num_experts / layout.ep,
        tokens_per_expert: routing.tokens_per_expert(assignments, moe.num_experts)?,
        width: moe.expert_ffn_size / etp,
    })
}

/// Megatron-LM pads the vocabulary to a multiple of this per tensor-parallel rank
/// (`--make-vocab-size-divisible-by`, default 128; `_vocab_size_with_padding` multiplies it by
/// `tp`).
pub const VOCAB_PAD_PER_RANK: u64 = 128;

/// `vocab` rounded up to a multiple of `multiple` (Megatron-LM pads to `128 · tp`).
///
/// ```
/// assert_eq!(lmshape::parallel::padded_vocab(50257, 128 * 8)?, 51200);
/// assert_eq!(lmshape::parallel::padded_vocab(250880, 128 * 4)?, 250880);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// A zero multiple, or a padded size that overflows `u64`.
pub fn padded_vocab(vocab: u64, multiple: u64) -> Result<u64> {
    positive(multiple, "vocab padding multiple")?;
    vocab
        .div_ceil(multiple)
        .checked_mul(multiple)
        .ok_or(Error::Overflow {
            what: "padded vocabulary",
        })
}

/// Vocabulary rows after Megatron-LM's padding for `tp` ranks: a multiple of
/// [`VOCAB_PAD_PER_RANK`]` · tp`.
///
/// ```
/// assert_eq!(lmshape::parallel::megatron_padded_vocab(50257, 8)?, 51200);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// `tp = 0`, or a padded size that overflows `u64`.
pub fn megatron_padded_vocab(vocab: u64, tp: u64) -> Result<u64> {
    padded_vocab(
        vocab,
        crate::error::mul(VOCAB_PAD_PER_RANK, tp, "vocab padding")?,
    )
}

/// The tensor-parallel rules (Shoeybi et al. 2019 §3; Megatron-LM argument checks): query
/// heads, hidden size and FFN width split over `tp`; key/value heads split over `tp` or, when
/// fewer, `tp` is a multiple of them (each rank keeps one replica).
///
/// ```
/// use lmshape::parallel::check_tensor_split;
/// check_tensor_split(112, 112, 14336, 57344, 4)?;
/// assert!(check_tensor_split(96, 96, 12288, 49152, 5).is_err());
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// The first tensor-parallel rule broken, naming the quantity and `tp`.
pub fn check_tensor_split(
    num_heads: u64,
    num_kv_heads: u64,
    hidden_size: u64,
    ffn_size: u64,
    tp: u64,
) -> Result<()> {
    positive(tp, "tp")?;
    divisible(
        "attention heads must split over tensor parallelism",
        "num_heads",
        num_heads,
        "tp",
        tp,
    )?;
    if num_kv_heads >= tp {
        divisible(
            "kv heads must split over tensor parallelism",
            "num_kv_heads",
            num_kv_heads,
            "tp",
            tp,
        )?;
    } else {
        divisible(
            "kv heads fewer than tp are replicated, so tp must be a multiple of them",
            "tp",
            tp,
            "num_kv_heads",
            num_kv_heads,
        )?;
    }
    divisible(
        "hidden size must split over tensor parallelism",
        "hidden_size",
        hidden_size,
        "tp",
        tp,
    )?;
    divisible(
        "ffn size must split over tensor parallelism",
        "ffn_size",
        ffn_size,
        "tp",
        tp,
    )
}

/// How a layout splits the layers over its pipeline stages, beyond an even split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct PipelineSplit {
    /// The input embedding and the output head count as one layer each (BigScience's
    /// `type:transformer|embedding` partition).
    pub embedding_slots: bool,
    /// When the layers (or slots) do not split evenly, stages hold ⌊n/pp⌋ or ⌈n/pp⌉ of them
    /// (DeepSpeed's balanced partition), the extra ones on the earliest stages — the stages
    /// that keep the most micro-batches in flight, so the memory bound is conservative.
    /// With the interleaved schedule the model chunks then differ by a layer too
    /// (Megatron-Core's `--pipeline-model-parallel-layout`; explicit first and last stages
    /// likewise), each stage holding at least one layer per chunk.
    pub balanced: bool,
    /// Layers of the first stage (Megatron-Core `--decoder-first-pipeline-num-layers`).
    pub first_stage_layers: Option<u64>,
    /// Layers of the last stage (Megatron-Core `--decoder-last-pipeline-num-layers`).
    pub last_stage_layers: Option<u64>,
}

/// The one home of the pipeline rules (Narayanan et al. 2021 §2.2; Megatron-LM and DeepSpeed
/// argument checks): which layers each of `pp` stages holds under `split`, or the rule it
/// breaks. An even split needs `L % pp == 0`; with embedding slots `(L + 2) % pp == 0`;
/// explicit first and last stages leave the other stages an even share of the rest; a
/// balanced split accepts any count. Every stage holds at least one layer. The interleaved
/// schedule needs an even split into `pp · v` chunks (`L % (pp·v) == 0`, Megatron-LM's
/// `num_layers_per_virtual_pipeline_stage` check).
///
/// ```
/// use lmshape::parallel::{stage_partition, PipelineSplit};
/// // Llama 3 405B: 126 layers on 16 stages, one layer fewer on the first and the last.
/// let split = PipelineSplit { first_stage_layers: Some(7), last_stage_layers: Some(7), ..Default::default() };
/// let s = stage_partition(126, 16, &split, 1)?;
/// assert_eq!((s.first, s.middle, s.last), (7, 8, 7));
/// // BigScience's 78 layers + 2 embedding slots on 12 stages, balanced: 80 = 8 × 7 + 4 × 6.
/// let bloom = PipelineSplit { embedding_slots: true, balanced: true, ..Default::default() };
/// let s = stage_partition(78, 12, &bloom, 1)?;
/// assert_eq!((0..12).map(|i| s.layers(i, 12)).sum::<u64>(), 78);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// The first pipeline rule broken, naming the layers, `pp` and the split asked for.
pub fn stage_partition(
    num_layers: u64,
    pp: u64,
    split: &PipelineSplit,
    virtual_stages: u64,
) -> Result<StageLayers> {
    positive(pp, "pp")?;
    positive(num_layers, "num_layers")?;
    positive(virtual_stages, "virtual_stages")?;
    let explicit = split.first_stage_layers.is_some() || split.last_stage_layers.is_some();
    if explicit && split.embedding_slots {
        return Err(Error::Inconsistent {
            rule: "explicit first and last stage layers replace the embedding slots",
            detail: "give one or the other".into(),
        });
    }
    let stages = if pp == 1 {
        single_stage(num_layers, split)?
    } else if explicit {
        explicit_partition(num_layers, pp, split)?
    } else {
        slot_partition(num_layers, pp, split)?
    };
    for (field, value) in [
        ("first stage layers", stages.first),
        ("last stage layers", stages.last),
        (
            "middle stage layers",
            if pp > 2 { stages.middle } else { 1 },
        ),
    ] {
        if value < 1 {
            return Err(Error::BelowMinimum {
                rule: "each pipeline stage must hold at least one layer",
                field,
                value,
                min: 1,
            });
        }
    }
    check_interleaving(&stages, num_layers, pp, split, virtual_stages)?;
    Ok(stages)
}

/// The one stage of an unpipelined model: every layer, which explicit first or last stage
/// layers must agree with.
fn single_stage(num_layers: u64, split: &PipelineSplit) -> Result<StageLayers> {
    let (first, last) = (split.first_stage_layers, split.last_stage_layers);
    if first.is_some_and(|f| f != num_layers) || last.is_some_and(|l| l != num_layers) {
        let named = |x: Option<u64>| x.map_or("unset".into(), |n| format!("{n} layers"));
        return Err(Error::Inconsistent {
            rule: "a single pipeline stage holds every layer",
            detail: format!(
                "first stage {}, last stage {} of {num_layers} layers",
                named(first),
                named(last),
            ),
        });
    }
    Ok(StageLayers::even(num_layers))
}

/// The interleaved schedule's rules on a partition into `pp` stages of `virtual_stages` model
/// chunks each: an even split into `pp · v` chunks (Megatron-LM's
/// `num_layers_per_virtual_pipeline_stage` check), or, under a balanced or explicit layout
/// (Megatron-Core's `--pipeline-model-parallel-layout`), a layer per chunk on every stage.
fn check_interleaving(
    stages: &StageLayers,
    num_layers: u64,
    pp: u64,
    split: &PipelineSplit,
    virtual_stages: u64,
) -> Result<()> {
    if virtual_stages <= 1 {
        return Ok(());
    }
    let explicit = split.first_stage_layers.is_some() || split.last_stage_layers.is_some();
    if split.balanced || explicit {
        let lightest = if pp > 2 {
            stages.first.min(stages.last).min(stages.middle)
        } else {
            stages.first.min(stages.last)
        };
        if lightest < virtual_stages {
            return Err(Error::BelowMinimum {
                rule: "the interleaved schedule needs a layer per model chunk on every stage",
                field: "layers of the lightest stage",
                value: lightest,
                min: virtual_stages,
            });
        }
        return Ok(());
    }
    divisible(
        "interleaved schedule splits each stage's layers into virtual stages",
        "num_layers",
        num_layers,
        "pp × virtual_stages",
        crate::error::mul(pp, virtual_stages, "pp × virtual stages")?,
    )?;
    if !stages.is_even() {
        return Err(Error::Inconsistent {
            rule: "the interleaved schedule needs the same layers on every stage",
            detail: format!(
                "first {}, middle {}, last {}",
                stages.first, stages.middle, stages.last
            ),
        });
    }
    Ok(())
}

/// Even or balanced split of the layers (and embedding slots) over `pp ≥ 2` stages.
fn slot_partition(num_layers: u64, pp: u64, split: &PipelineSplit) -> Result<StageLayers> {
    let embed = u64::from(split.embedding_slots);
    let slots = crate::error::add(num_layers, 2 * embed, "pipeline slots")?;
    if !split.balanced {
        if split.embedding_slots {
            divisible(
                "layers plus the two embedding slots must split over pipeline stages",
                "num_layers + 2",
                slots,
                "pp",
                pp,
            )?;
        } else {
            divisible(
                "layers must split over pipeline stages",
                "num_layers",
                num_layers,
                "pp",
                pp,
            )?;
        }
    }
    let (base, extra) = (slots / pp, slots % pp);
    // Stage i holds base + 1 slots for i < extra.
    let first_slots = base + u64::from(extra > 0);
    Ok(StageLayers {
        first: first_slots.saturating_sub(embed),
        middle: base,
        middle_extra: extra.saturating_sub(1).min(pp - 2),
        last: base.saturating_sub(embed),
    })
}

/// Megatron-Core's explicit first and last stages over `pp ≥ 2` stages: the other stages share
/// the rest evenly (or balanced).
fn explicit_partition(num_layers: u64, pp: u64, split: &PipelineSplit) -> Result<StageLayers> {
    let given = split.first_stage_layers.unwrap_or(0) + split.last_stage_layers.unwrap_or(0);
    let open = pp
        - u64::from(split.first_stage_layers.is_some())
        - u64::from(split.last_stage_layers.is_some());
    let rest = num_layers
        .checked_sub(given)
        .ok_or_else(|| Error::Inconsistent {
            rule: "first and last stage layers cannot exceed the layers",
            detail: format!("{given} of {num_layers}"),
        })?;
    let (base, extra) = if open == 0 {
        if rest != 0 {
            return Err(Error::Inconsistent {
                rule: "first and last stage layers must add up to the layers of a two-stage pipeline",
                detail: format!("{given} of {num_layers}"),
            });
        }
        (0, 0)
    } else {
        if !split.balanced {
            divisible(
                "the layers left by the first and last stages must split over the other stages",
                "remaining layers",
                rest,
                "remaining stages",
                open,
            )?;
        }
        (rest / open, rest % open)
    };
    // The open stages in order; the earliest take the extra layers.
    let open_first = split.first_stage_layers.is_none();
    let first = split
        .first_stage_layers
        .unwrap_or(base + u64::from(extra > 0));
    let extra_after_first = if open_first {
        extra.saturating_sub(1)
    } else {
        extra
    };
    let middle_stages = pp - 2;
    let middle_extra = extra_after_first.min(middle_stages);
    let last = split
        .last_stage_layers
        .unwrap_or_else(|| base + u64::from(extra_after_first > middle_stages));
    Ok(StageLayers {
        first,
        middle: base,
        middle_extra,
        last,
    })
}

/// The pipeline rules for an even split or BigScience's embedding slots
/// ([`stage_partition`] with no balancing and no explicit stages).
///
/// ```
/// use lmshape::parallel::check_pipeline_split;
/// check_pipeline_split(70, 12, true, 1)?;   // BLOOM: 72 slots over 12 stages
/// assert!(check_pipeline_split(70, 12, false, 1).is_err());
/// assert!(check_pipeline_split(96, 8, false, 5).is_err()); // 96 layers in 40 chunks
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// As [`stage_partition`].
pub fn check_pipeline_split(
    num_layers: u64,
    pp: u64,
    embedding_pipeline_slots: bool,
    virtual_stages: u64,
) -> Result<()> {
    let split = PipelineSplit {
        embedding_slots: embedding_pipeline_slots,
        ..PipelineSplit::default()
    };
    stage_partition(num_layers, pp, &split, virtual_stages).map(|_| ())
}

/// Megatron-LM's fused masked-softmax kernel condition, an optional rule for searches:
/// `(heads / tp) · micro_batch % 4 == 0` (`megatron/fused_kernels`, `is_kernel_available`;
/// BigScience's shape search applied it). False for `tp = 0` or on overflow.
///
/// ```
/// assert!(lmshape::parallel::fused_softmax_ok(112, 4, 2)); // 28 heads per rank
/// assert!(!lmshape::parallel::fused_softmax_ok(104, 8, 1)); // 13 heads per rank
/// ```
pub fn fused_softmax_ok(num_heads: u64, tp: u64, micro_batch: u64) -> bool {
    tp > 0
        && (num_heads / tp)
            .checked_mul(micro_batch)
            .is_some_and(|x| x % 4 == 0)
}

impl ParallelLayout {
    /// GPUs used: `tp · cp · pp · dp`.
    ///
    /// # Errors
    /// [`Error::Overflow`] when the product does not fit `u64`.
    pub fn gpus(&self) -> Result<u64> {
        crate::error::mul(
            crate::error::mul(
                crate::error::mul(self.tp, self.cp, "gpu count")?,
                self.pp,
                "gpu count",
            )?,
            self.dp,
            "gpu count",
        )
    }

    /// Tokens of one sequence on one rank: `seq_len / cp`.
    pub fn local_seq_len(&self) -> u64 {
        self.seq_len / self.cp.max(1)
    }

    /// Ranks that hold the same dense weights and share their gradients and optimizer states:
    /// `dp · cp` (Megatron-Core reduces gradients over the data-and-context-parallel group).
    pub fn weight_dp(&self) -> u64 {
        self.dp.saturating_mul(self.cp)
    }

    /// Micro-batches per step per pipeline: `global / (micro · dp)`.
    ///
    /// # Errors
    /// A zero `micro_batch × dp`, or a product that overflows `u64`.
    pub fn num_micro_batches(&self) -> Result<u64> {
        let per_step = crate::error::mul(self.micro_batch, self.dp, "micro-batch × dp")?;
        positive(per_step, "micro_batch × dp")?;
        Ok(self.global_batch / per_step)
    }

    /// Vocabulary rows after Megatron's padding to `128 · tp`.
    ///
    /// # Errors
    /// As [`megatron_padded_vocab`].
    pub fn padded_vocab(&self, model: &Transformer) -> Result<u64> {
        megatron_padded_vocab(model.vocab_size, self.tp)
    }

    /// Virtual stages per pipeline rank (1 without interleaving).
    pub fn virtual_stages(&self) -> u64 {
        match self.schedule {
            Schedule::OneFOneB => 1,
            Schedule::Interleaved { virtual_stages } => virtual_stages,
        }
    }

    /// The expert-tensor-parallel degree (`etp`, or `tp` when unset).
    pub fn expert_tp(&self) -> u64 {
        self.etp.unwrap_or(self.tp)
    }

    /// The expert-data-parallel degree: the ranks of the `tp × cp × dp` grid that hold the
    /// same experts, `tp · cp · dp / (ep · etp)` (Megatron-Core folds the expert grid into the
    /// dense one); the routed experts' gradients and optimizer states are sharded over it.
    ///
    /// # Errors
    /// A grid that `ep × etp` does not divide, or products that overflow `u64`.
    pub fn expert_dp(&self) -> Result<u64> {
        let grid = crate::error::mul(
            crate::error::mul(self.tp, self.cp, "tp × cp × dp")?,
            self.dp,
            "tp × cp × dp",
        )?;
        let experts = crate::error::mul(self.ep, self.expert_tp(), "ep × etp")?;
        divisible(
            "expert parallelism times expert tensor parallelism must divide tp × cp × dp",
            "tp × cp × dp",
            grid,
            "ep × etp",
            experts,
        )?;
        Ok(grid / experts)
    }

    /// Megatron-Core's expert rules: a model without experts has `ep = 1` and `etp = tp`; with
    /// experts, `E % ep == 0`, the expert width splits over `etp`, and `ep · etp` divides
    /// `tp · dp` ([`ParallelLayout::expert_dp`]).
    fn check_experts(&self, model: &Transformer) -> Result<()> {
        match &model.moe {
            None => {
                if self.ep != 1 || self.expert_tp() != self.tp {
                    return Err(Error::Inconsistent {
                        rule: "expert parallelism needs a model with experts",
                        detail: format!("ep = {}, etp = {}", self.ep, self.expert_tp()),
                    });
                }
                Ok(())
            }
            Some(moe) => {
                divisible(
                    "routed experts must split over expert parallelism",
                    "num_experts",
                    moe.num_experts,
                    "ep",
                    self.ep,
                )?;
                divisible(
                    "expert width must split over expert tensor parallelism",
                    "expert_ffn_size",
                    moe.expert_ffn_size,
                    "etp",
                    self.expert_tp(),
                )?;
                self.expert_dp().map(|_| ())
            }
        }
    }

    /// How this layout splits the layers over its stages.
    pub fn pipeline_split(&self) -> PipelineSplit {
        PipelineSplit {
            embedding_slots: self.embedding_pipeline_slots,
            balanced: self.balanced_pipeline,
            first_stage_layers: self.first_stage_layers,
            last_stage_layers: self.last_stage_layers,
        }
    }

    /// Layers held by each pipeline stage ([`stage_partition`]).
    ///
    /// # Errors
    /// As [`stage_partition`].
    pub fn stage_layers(&self, model: &Transformer) -> Result<StageLayers> {
        stage_partition(model.num_layers, self.pp, &self.pipeline_split(), 1)
    }

    /// Check every rule against `model`: first the rules of the layout alone
    /// ([`ParallelLayout::validate_batch`]), then how the model splits over it
    /// ([`check_tensor_split`], [`check_pipeline_split`]). The first rule broken is returned.
    ///
    /// # Errors
    /// The first rule broken, naming it and its values.
    pub fn validate(&self, model: &Transformer) -> Result<()> {
        self.checked_stages(model).map(|_| ())
    }

    /// [`ParallelLayout::validate`], returning the stage partition its last check computes
    /// (what [`ParallelLayout::stage_layers`] gives: the virtual stages only add checks).
    fn checked_stages(&self, model: &Transformer) -> Result<StageLayers> {
        self.validate_batch()?;
        model.check_context(self.seq_len, "seq_len")?;
        self.check_experts(model)?;
        if self.cp > 1 && self.cp_comm == CpComm::A2a {
            divisible(
                "all-to-all context parallelism splits each tensor-parallel rank's heads over cp",
                "num_heads / tp",
                model.num_heads / self.tp,
                "cp",
                self.cp,
            )?;
        }
        check_tensor_split(
            model.num_heads,
            model.num_kv_heads,
            model.hidden_size,
            model.ffn_size,
            self.tp,
        )?;
        stage_partition(
            model.num_layers,
            self.pp,
            &self.pipeline_split(),
            self.virtual_stages(),
        )
    }

    /// The rules that do not depend on the model: positive degrees and batches, a GPU count
    /// that fits `u64`, the sequence split of sequence parallelism (Korthikanti et al. 2022
    /// §4.2.2), the global batch split into micro-batches over data-parallel replicas, and the
    /// interleaved schedule's need for a pipeline and for micro-batches in multiples of `pp`
    /// (Narayanan et al. 2021 §2.2.2; Megatron-LM's argument checks).
    ///
    /// ```
    /// use lmshape::ParallelLayout;
    /// // The builder runs these rules: dp = 7 cannot split a global batch of 2048.
    /// let e = ParallelLayout::builder().dp(7).global_batch(2048).build().unwrap_err();
    /// assert!(e.to_string().contains("global batch must split"));
    /// ```
    ///
    /// # Errors
    /// The first rule broken, naming it and its values.
    pub fn validate_batch(&self) -> Result<()> {
        positive(self.tp, "tp")?;
        positive(self.ep, "ep")?;
        positive(self.expert_tp(), "etp")?;
        positive(self.pp, "pp")?;
        positive(self.dp, "dp")?;
        positive(self.micro_batch, "micro_batch")?;
        positive(self.global_batch, "global_batch")?;
        positive(self.seq_len, "seq_len")?;
        positive(self.virtual_stages(), "virtual_stages")?;
        positive(self.cp, "cp")?;
        self.gpus()?;
        if self.cp > 1 {
            divisible(
                "context parallelism splits each sequence into 2 × cp chunks (causal load balancing)",
                "seq_len",
                self.seq_len,
                "2 × cp",
                crate::error::mul(2, self.cp, "2 × cp")?,
            )?;
        }
        if self.sequence_parallel {
            divisible(
                "sequence parallelism splits the sequence over tp (and cp)",
                "seq_len",
                self.seq_len,
                "tp × cp",
                crate::error::mul(self.tp, self.cp, "tp × cp")?,
            )?;
        }
        let per_step = crate::error::mul(self.micro_batch, self.dp, "micro-batch × dp")?;
        divisible(
            "global batch must split into micro-batches over data parallelism",
            "global_batch",
            self.global_batch,
            "micro_batch × dp",
            per_step,
        )?;
        if self.virtual_stages() > 1 {
            if self.pp < 2 {
                return Err(Error::BelowMinimum {
                    rule: "the interleaved schedule needs a pipeline",
                    field: "pp",
                    value: self.pp,
                    min: 2,
                });
            }
            divisible(
                "interleaved schedule needs micro-batches in multiples of pp",
                "num_micro_batches",
                self.num_micro_batches()?,
                "pp",
                self.pp,
            )?;
        }
        Ok(())
    }

    /// Megatron-LM's fused masked-softmax kernel condition, an optional rule for searches:
    /// `(heads / tp) · micro_batch % 4 == 0` (`megatron/fused_kernels`, `is_kernel_available`;
    /// BigScience's shape search applied it).
    pub fn fused_softmax_ok(&self, model: &Transformer) -> bool {
        fused_softmax_ok(model.num_heads, self.tp, self.micro_batch)
    }
}

/// Layers held by the pipeline stages: the first, the last, and the middle ones — of which the
/// earliest `middle_extra` hold one layer more than `middle` (a balanced uneven split).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageLayers {
    /// First stage (also holds the input embedding).
    pub first: u64,
    /// A middle stage (the earliest `middle_extra` of them hold one more).
    pub middle: u64,
    /// Middle stages, from the second stage on, that hold `middle + 1` layers.
    #[serde(default)]
    pub middle_extra: u64,
    /// Last stage (also holds the final norm and the output head).
    pub last: u64,
}

impl StageLayers {
    /// Every layer on one stage.
    pub fn even(layers: u64) -> StageLayers {
        StageLayers {
            first: layers,
            middle: layers,
            middle_extra: 0,
            last: layers,
        }
    }

    /// Whether every stage holds the same number of layers.
    pub fn is_even(&self) -> bool {
        self.middle_extra == 0 && self.first == self.middle && self.last == self.middle
    }

    /// The most layers a middle stage holds (that of stage 1, the earliest middle stage).
    pub fn heaviest_middle(&self) -> u64 {
        self.middle + u64::from(self.middle_extra > 0)
    }

    /// The most layers any stage holds.
    pub fn heaviest(&self) -> u64 {
        self.first.max(self.last).max(self.heaviest_middle())
    }

    /// Layers of stage `index` of `pp`.
    pub fn layers(&self, index: u64, pp: u64) -> u64 {
        let r = self.range(index, pp);
        r.end - r.start
    }

    /// The layers (from 0) held by stage `index` of `pp`: the first stage's, then the middle
    /// stages' in turn, the last stage's at the end.
    ///
    /// ```
    /// use lmshape::parallel::StageLayers;
    /// let s = StageLayers { first: 5, middle: 6, middle_extra: 0, last: 5 }; // 70 layers, 12 stages
    /// assert_eq!(s.range(0, 12), 0..5);
    /// assert_eq!(s.range(1, 12), 5..11);
    /// assert_eq!(s.range(11, 12), 65..70);
    /// ```
    pub fn range(&self, index: u64, pp: u64) -> std::ops::Range<u64> {
        if index == 0 || pp <= 1 {
            return 0..self.first;
        }
        let middles = pp.saturating_sub(2);
        let total = self.first + self.middle * middles + self.middle_extra.min(middles) + self.last;
        if index + 1 >= pp {
            return total - self.last..total;
        }
        let k = index - 1; // middle stages before this one
        let start = self.first + self.middle * k + self.middle_extra.min(k);
        start..start + self.middle + u64::from(k < self.middle_extra)
    }
}

/// When a layout counts the input embedding and the output head as pipeline slots
/// ([`ParallelLayout::embedding_pipeline_slots`], as BigScience did for BLOOM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingSlots {
    /// Never: layers split evenly over `pp` (Megatron-LM's default).
    #[default]
    Never,
    /// Only when the layers do not split evenly over `pp` but `L + 2` does (BigScience's
    /// `type:transformer|embedding` partition).
    WhenLayersDoNotDivide,
}

crate::error::named!(EmbeddingSlots, "embedding slots", [
    Never => "never",
    WhenLayersDoNotDivide => "when-layers-do-not-divide",
]);

impl EmbeddingSlots {
    /// Whether a model of `num_layers` layers on `pp` stages uses the slots.
    pub fn applies(self, num_layers: u64, pp: u64) -> bool {
        match self {
            EmbeddingSlots::Never => false,
            EmbeddingSlots::WhenLayersDoNotDivide => pp > 1 && num_layers % pp != 0,
        }
    }
}

/// Every layout of a GPU count: each tensor-parallel degree of `tp_options` that fits a node
/// and divides the GPUs, each pipeline degree dividing the rest, data parallelism filling
/// the GPUs, each micro-batch of `micro_batches`; the other settings come from `template`.
/// The divisors are found once (trial division up to `√n`), so a space over 10⁹ GPUs is
/// enumerated in microseconds.
///
/// ```
/// use lmshape::parallel::{LayoutSpace, ParallelLayout};
/// let space = LayoutSpace {
///     gpus: 384,
///     max_tp: 8,
///     tp_options: vec![1, 2, 4, 8],
///     micro_batches: vec![1, 2, 4],
///     template: ParallelLayout::builder().global_batch(2048).build()?,
///     embedding_slots: Default::default(),
///     cp_options: vec![],
///     virtual_stage_options: vec![],
///     balanced_pipeline: false,
/// };
/// let layouts = space.enumerate()?;
/// assert!(layouts.valid.iter().any(|l| (l.tp(), l.pp(), l.dp(), l.micro_batch()) == (4, 12, 8, 2)));
/// // dp = 3 cannot split a global batch of 2048.
/// assert!(layouts.invalid.iter().any(|(l, _)| l.to_string().contains("dp 3,")));
/// # Ok::<(), lmshape::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutSpace {
    /// GPUs to fill (`tp · pp · dp`).
    pub gpus: u64,
    /// Largest tensor-parallel degree (GPUs per node, or per NVLink domain).
    pub max_tp: u64,
    /// Tensor-parallel degrees tried.
    pub tp_options: Vec<u64>,
    /// Micro-batch sizes tried.
    pub micro_batches: Vec<u64>,
    /// Everything else of each layout (batch, sequence, recomputation, ZeRO, schedule).
    pub template: ParallelLayout,
    /// When layouts count the embeddings as pipeline slots.
    pub embedding_slots: EmbeddingSlots,
    /// Context-parallel degrees tried (none: the template's).
    #[serde(default)]
    pub cp_options: Vec<u64>,
    /// Virtual stages per pipeline rank tried (none: the template's schedule); `v > 1` is the
    /// interleaved schedule, tried only with a pipeline.
    #[serde(default)]
    pub virtual_stage_options: Vec<u64>,
    /// Accept layer counts that do not split evenly over the stages, with DeepSpeed's
    /// balanced partition ([`PipelineSplit::balanced`]).
    #[serde(default)]
    pub balanced_pipeline: bool,
}

/// The layouts of a [`LayoutSpace`], split by the rules that do not depend on the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Layouts {
    /// Layouts that pass [`ParallelLayout::validate_batch`].
    pub valid: Vec<ParallelLayout>,
    /// Layouts that do not, with the rule each breaks (as builders: a layout that breaks a
    /// rule cannot be built).
    pub invalid: Vec<(ParallelLayoutBuilder, Error)>,
}

/// The divisors of `n` in increasing order (trial division up to `√n`).
///
/// ```
/// assert_eq!(lmshape::parallel::divisors(12), vec![1, 2, 3, 4, 6, 12]);
/// assert_eq!(lmshape::parallel::divisors(0), Vec::<u64>::new());
/// ```
pub fn divisors(n: u64) -> Vec<u64> {
    let mut low = Vec::new();
    let mut high = Vec::new();
    let mut d = 1u64;
    while d.checked_mul(d).is_some_and(|sq| sq <= n) {
        if n % d == 0 {
            low.push(d);
            if d != n / d {
                high.push(n / d);
            }
        }
        d += 1;
    }
    low.extend(high.into_iter().rev());
    low
}

impl LayoutSpace {
    /// Every layout of the space, valid or not for any model (see [`Layouts`]).
    ///
    /// # Errors
    /// No GPUs or options, or counts that overflow `u64`.
    pub fn enumerate(&self) -> Result<Layouts> {
        positive(self.gpus, "gpus")?;
        positive(self.max_tp, "max_tp")?;
        let tps: Vec<u64> = self
            .tp_options
            .iter()
            .copied()
            .filter(|&tp| tp > 0 && tp <= self.max_tp && self.gpus % tp == 0)
            .sorted()
            .dedup()
            .collect();
        let options = |given: &[u64], default: u64| -> Vec<u64> {
            if given.is_empty() {
                vec![default]
            } else {
                given.iter().copied().sorted().dedup().collect()
            }
        };
        let cps = options(&self.cp_options, self.template.cp);
        let vs = options(&self.virtual_stage_options, self.template.virtual_stages());
        let mut layouts = Layouts {
            valid: Vec::new(),
            invalid: Vec::new(),
        };
        for (&cp, &tp) in cps.iter().cartesian_product(&tps) {
            let group = tp.saturating_mul(cp);
            if cp == 0 || self.gpus % group != 0 {
                continue;
            }
            let rest = self.gpus / group;
            for pp in divisors(rest) {
                for (&v, &mb) in vs.iter().cartesian_product(&self.micro_batches) {
                    if v > 1 && pp < 2 {
                        continue;
                    }
                    let layout = self
                        .template
                        .to_builder()
                        .tp(tp)
                        .cp(cp)
                        .pp(pp)
                        .dp(rest / pp)
                        .micro_batch(mb)
                        .schedule(if v > 1 {
                            Schedule::Interleaved { virtual_stages: v }
                        } else {
                            Schedule::OneFOneB
                        });
                    match layout.build() {
                        Ok(l) => layouts.valid.push(l),
                        Err(e) => layouts.invalid.push((layout, e)),
                    }
                }
            }
        }
        Ok(layouts)
    }

    /// `layout` (one of [`LayoutSpace::enumerate`]'s) as used for `model`: the embedding
    /// slots set by the space's policy, then every rule checked, the pair returned as a
    /// [`Placement`].
    ///
    /// # Errors
    /// A layout that breaks a rule for the model ([`crate::ParallelLayout::validate`]).
    pub fn for_model<'m>(
        &self,
        layout: &ParallelLayout,
        model: &'m Transformer,
    ) -> Result<Placement<'m>> {
        let l = ParallelLayout {
            embedding_pipeline_slots: self.embedding_slots.applies(model.num_layers, layout.pp),
            balanced_pipeline: layout.balanced_pipeline || self.balanced_pipeline,
            ..*layout
        };
        Placement::new(model, &l)
    }
}

/// A model on a layout, checked together once ([`ParallelLayout::validate`]), with what the
/// layout derives for the model computed once: the stage partition
/// ([`ParallelLayout::stage_layers`]) and the padded vocabulary
/// ([`ParallelLayout::padded_vocab`]). Memory ([`crate::memory::training_memory_placed`]) and
/// the step model ([`crate::step::step_time_placed`]) take it and neither checks nor derives
/// these again; it cannot be built from a pair that breaks a rule.
///
/// ```
/// use lmshape::{parallel::Placement, presets, ParallelLayout};
/// let bloom = presets::by_name("bloom-176b")?;
/// let layout = ParallelLayout::builder().tp(4).pp(12).dp(8).micro_batch(2)
///     .global_batch(2048).embedding_pipeline_slots(true).build()?;
/// let placed = Placement::new(&bloom, &layout)?;
/// assert_eq!(placed.stages().first, 5); // 70 layers + 2 embedding slots over 12 stages
/// assert_eq!(placed.padded_vocab(), 250_880);
/// // tp 3 does not split 112 heads.
/// let tp3 = layout.to_builder().tp(3).dp(1).pp(1).global_batch(2).build()?;
/// assert!(Placement::new(&bloom, &tp3).is_err());
/// # Ok::<(), lmshape::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement<'m> {
    model: &'m Transformer,
    layout: ParallelLayout,
    stages: StageLayers,
    padded_vocab: u64,
}

impl<'m> Placement<'m> {
    /// `model` on `layout`, once every rule of the pair holds.
    ///
    /// # Errors
    /// The first rule broken ([`ParallelLayout::validate`]), or a vocabulary whose padding
    /// overflows `u64`.
    pub fn new(model: &'m Transformer, layout: &ParallelLayout) -> Result<Placement<'m>> {
        Ok(Placement {
            model,
            layout: *layout,
            stages: layout.checked_stages(model)?,
            padded_vocab: layout.padded_vocab(model)?,
        })
    }

    /// The model.
    pub fn model(&self) -> &'m Transformer {
        self.model
    }

    /// The layout.
    pub fn layout(&self) -> &ParallelLayout {
        &self.layout
    }

    /// Layers per pipeline stage.
    pub fn stages(&self) -> StageLayers {
        self.stages
    }

    /// Vocabulary rows after Megatron's padding to `128 · tp`.
    pub fn padded_vocab(&self) -> u64 {
        self.padded_vocab
    }

    /// The same pair under another recomputation, which no rule constrains and nothing derived
    /// depends on.
    pub fn with_recompute(&self, recompute: Recompute) -> Placement<'m> {
        Placement {
            layout: ParallelLayout {
                recompute,
                ..self.layout
            },
            ..*self
        }
    }
}
