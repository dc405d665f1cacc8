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
use crate::flops::Recompute;
use crate::model::Transformer;
use itertools::Itertools;
use serde::{Deserialize, Serialize};

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

/// A parallel layout and batch configuration for training.
///
/// ```
/// use lmshape::{ParallelLayout, presets};
/// let bloom = presets::by_name("bloom-176b")?;
/// let layout = ParallelLayout { tp: 4, pp: 12, dp: 8, micro_batch: 2, global_batch: 2048,
///     embedding_pipeline_slots: true, ..ParallelLayout::default() };
/// layout.validate(&bloom)?;
/// assert_eq!(layout.gpus()?, 384);
/// assert_eq!(layout.num_micro_batches()?, 128);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// Deserializing checks the rules of the layout alone ([`ParallelLayout::validate_batch`]);
/// the rules that involve a model are checked where a model meets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "LayoutFields")]
pub struct ParallelLayout {
    /// Tensor-parallel degree.
    pub tp: u64,
    /// Pipeline-parallel degree.
    pub pp: u64,
    /// Data-parallel degree.
    pub dp: u64,
    /// Sequence parallelism (Korthikanti et al. 2022 §4.2.2) over the tensor-parallel group.
    pub sequence_parallel: bool,
    /// ZeRO stage over data parallelism.
    pub zero: ZeroStage,
    /// Sequences per micro-batch.
    pub micro_batch: u64,
    /// Sequences per optimizer step (all replicas).
    pub global_batch: u64,
    /// Tokens per sequence.
    pub seq_len: u64,
    /// Activation recomputation.
    pub recompute: Recompute,
    /// Pipeline schedule.
    pub schedule: Schedule,
    /// Count the input embedding and the output head as one pipeline slot each, as BigScience
    /// did for BLOOM: `(L + 2) % pp == 0`; the first and last stages then hold one layer fewer.
    pub embedding_pipeline_slots: bool,
}

/// The fields of a [`ParallelLayout`] as they arrive from serde, before validation.
#[derive(Deserialize)]
struct LayoutFields {
    tp: u64,
    pp: u64,
    dp: u64,
    sequence_parallel: bool,
    zero: ZeroStage,
    micro_batch: u64,
    global_batch: u64,
    seq_len: u64,
    recompute: Recompute,
    schedule: Schedule,
    embedding_pipeline_slots: bool,
}

impl TryFrom<LayoutFields> for ParallelLayout {
    type Error = Error;

    fn try_from(f: LayoutFields) -> Result<ParallelLayout> {
        let l = ParallelLayout {
            tp: f.tp,
            pp: f.pp,
            dp: f.dp,
            sequence_parallel: f.sequence_parallel,
            zero: f.zero,
            micro_batch: f.micro_batch,
            global_batch: f.global_batch,
            seq_len: f.seq_len,
            recompute: f.recompute,
            schedule: f.schedule,
            embedding_pipeline_slots: f.embedding_pipeline_slots,
        };
        l.validate_batch()?;
        Ok(l)
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
        }
    }
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
pub fn megatron_padded_vocab(vocab: u64, tp: u64) -> Result<u64> {
    padded_vocab(
        vocab,
        crate::error::mul(VOCAB_PAD_PER_RANK, tp, "vocab padding")?,
    )
}

/// Key/value heads held by one of `tp` tensor-parallel ranks: `kv / tp` when they split, one
/// (replicated) when there are fewer kv heads than ranks (Megatron-LM `num_query_groups`;
/// the rule itself is [`check_tensor_split`]).
///
/// ```
/// use lmshape::parallel::kv_heads_per_rank;
/// assert_eq!(kv_heads_per_rank(8, 4)?, 2);
/// assert_eq!(kv_heads_per_rank(2, 8)?, 1);
/// assert!(kv_heads_per_rank(8, 0).is_err());
/// # Ok::<(), lmshape::Error>(())
/// ```
pub fn kv_heads_per_rank(num_kv_heads: u64, tp: u64) -> Result<u64> {
    positive(tp, "tp")?;
    Ok(if num_kv_heads >= tp {
        num_kv_heads / tp
    } else {
        1
    })
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

/// The pipeline rules (Narayanan et al. 2021 §2.2): layers split evenly over `pp` stages, or,
/// with BigScience's embedding slots (the input embedding and the output head each count as
/// one layer, `(L + 2) % pp == 0`), every stage still holds at least one transformer layer; the
/// interleaved schedule splits each stage into `virtual_stages` chunks (`L % (pp·v) == 0`,
/// Megatron-LM's `num_layers_per_virtual_pipeline_stage` check).
///
/// ```
/// use lmshape::parallel::check_pipeline_split;
/// check_pipeline_split(70, 12, true, 1)?;   // BLOOM: 72 slots over 12 stages
/// assert!(check_pipeline_split(70, 12, false, 1).is_err());
/// assert!(check_pipeline_split(96, 8, false, 5).is_err()); // 96 layers in 40 chunks
/// # Ok::<(), lmshape::Error>(())
/// ```
pub fn check_pipeline_split(
    num_layers: u64,
    pp: u64,
    embedding_pipeline_slots: bool,
    virtual_stages: u64,
) -> Result<()> {
    positive(pp, "pp")?;
    positive(num_layers, "num_layers")?;
    positive(virtual_stages, "virtual_stages")?;
    if embedding_pipeline_slots && pp > 1 {
        let slots = crate::error::add(num_layers, 2, "pipeline slots")?;
        divisible(
            "layers plus the two embedding slots must split over pipeline stages",
            "num_layers + 2",
            slots,
            "pp",
            pp,
        )?;
        if slots / pp < 2 {
            return Err(Error::BelowMinimum {
                rule: "each pipeline stage must hold at least one layer besides an embedding slot",
                field: "(num_layers + 2) / pp",
                value: slots / pp,
                min: 2,
            });
        }
    } else {
        divisible(
            "layers must split over pipeline stages",
            "num_layers",
            num_layers,
            "pp",
            pp,
        )?;
    }
    if virtual_stages > 1 {
        divisible(
            "interleaved schedule splits each stage's layers into virtual stages",
            "num_layers",
            num_layers,
            "pp × virtual_stages",
            crate::error::mul(pp, virtual_stages, "pp × virtual stages")?,
        )?;
    }
    Ok(())
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
    /// GPUs used: `tp · pp · dp`.
    pub fn gpus(&self) -> Result<u64> {
        crate::error::mul(
            crate::error::mul(self.tp, self.pp, "gpu count")?,
            self.dp,
            "gpu count",
        )
    }

    /// Micro-batches per step per pipeline: `global / (micro · dp)`.
    pub fn num_micro_batches(&self) -> Result<u64> {
        let per_step = crate::error::mul(self.micro_batch, self.dp, "micro-batch × dp")?;
        positive(per_step, "micro_batch × dp")?;
        Ok(self.global_batch / per_step)
    }

    /// Vocabulary rows after Megatron's padding to `128 · tp`.
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

    /// Layers held by each pipeline stage, first to last (before interleaving). With
    /// embedding slots the first and last stages hold one layer fewer than the others.
    pub fn stage_layers(&self, model: &Transformer) -> Result<StageLayers> {
        let l = model.num_layers;
        check_pipeline_split(l, self.pp, self.embedding_pipeline_slots, 1)?;
        if self.embedding_pipeline_slots && self.pp > 1 {
            let slots = (l + 2) / self.pp;
            Ok(StageLayers {
                first: slots.saturating_sub(1),
                middle: slots,
                last: slots.saturating_sub(1),
            })
        } else {
            let per = l / self.pp;
            Ok(StageLayers {
                first: per,
                middle: per,
                last: per,
            })
        }
    }

    /// Check every rule against `model`: first the rules of the layout alone
    /// ([`ParallelLayout::validate_batch`]), then how the model splits over it
    /// ([`check_tensor_split`], [`check_pipeline_split`]). The first rule broken is returned.
    pub fn validate(&self, model: &Transformer) -> Result<()> {
        self.validate_batch()?;
        check_tensor_split(
            model.num_heads,
            model.num_kv_heads,
            model.hidden_size,
            model.ffn_size,
            self.tp,
        )?;
        check_pipeline_split(
            model.num_layers,
            self.pp,
            self.embedding_pipeline_slots,
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
    /// let l = ParallelLayout { dp: 7, global_batch: 2048, ..ParallelLayout::default() };
    /// let e = l.validate_batch().unwrap_err();
    /// assert!(e.to_string().contains("global batch must split"));
    /// ```
    pub fn validate_batch(&self) -> Result<()> {
        positive(self.tp, "tp")?;
        positive(self.pp, "pp")?;
        positive(self.dp, "dp")?;
        positive(self.micro_batch, "micro_batch")?;
        positive(self.global_batch, "global_batch")?;
        positive(self.seq_len, "seq_len")?;
        positive(self.virtual_stages(), "virtual_stages")?;
        self.gpus()?;
        if self.sequence_parallel {
            divisible(
                "sequence parallelism splits the sequence over tp",
                "seq_len",
                self.seq_len,
                "tp",
                self.tp,
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

/// Layers held by the first, middle and last pipeline stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageLayers {
    /// First stage (also holds the input embedding).
    pub first: u64,
    /// Any middle stage.
    pub middle: u64,
    /// Last stage (also holds the final norm and the output head).
    pub last: u64,
}

impl StageLayers {
    /// The layers (from 0) held by stage `index` of `pp`: the first stage's, then the middle
    /// stages' in turn, the last stage's at the end.
    ///
    /// ```
    /// use lmshape::parallel::StageLayers;
    /// let s = StageLayers { first: 5, middle: 6, last: 5 }; // 70 layers on 12 stages
    /// assert_eq!(s.range(0, 12), 0..5);
    /// assert_eq!(s.range(1, 12), 5..11);
    /// assert_eq!(s.range(11, 12), 65..70);
    /// ```
    pub fn range(&self, index: u64, pp: u64) -> std::ops::Range<u64> {
        if index == 0 {
            return 0..self.first;
        }
        let total = self.first + self.middle * pp.saturating_sub(2) + self.last;
        if index + 1 >= pp {
            return total - self.last..total;
        }
        let start = self.first + (index - 1) * self.middle;
        start..start + self.middle
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
///     template: ParallelLayout { global_batch: 2048, ..ParallelLayout::default() },
///     embedding_slots: Default::default(),
/// };
/// let layouts = space.enumerate()?;
/// assert!(layouts.valid.iter().any(|l| (l.tp, l.pp, l.dp, l.micro_batch) == (4, 12, 8, 2)));
/// // dp = 3 cannot split a global batch of 2048.
/// assert!(layouts.invalid.iter().any(|(l, _)| l.dp == 3));
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
}

/// The layouts of a [`LayoutSpace`], split by the rules that do not depend on the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Layouts {
    /// Layouts that pass [`ParallelLayout::validate_batch`].
    pub valid: Vec<ParallelLayout>,
    /// Layouts that do not, with the rule each breaks.
    pub invalid: Vec<(ParallelLayout, Error)>,
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
        let mut layouts = Layouts {
            valid: Vec::new(),
            invalid: Vec::new(),
        };
        for tp in tps {
            let rest = self.gpus / tp;
            for (pp, &mb) in divisors(rest)
                .into_iter()
                .cartesian_product(&self.micro_batches)
            {
                let layout = ParallelLayout {
                    tp,
                    pp,
                    dp: rest / pp,
                    micro_batch: mb,
                    ..self.template
                };
                match layout.validate_batch() {
                    Ok(()) => layouts.valid.push(layout),
                    Err(e) => layouts.invalid.push((layout, e)),
                }
            }
        }
        Ok(layouts)
    }

    /// `layout` (one of [`LayoutSpace::enumerate`]'s) as used for `model`: the embedding
    /// slots set by the space's policy, then every rule checked.
    pub fn for_model(
        &self,
        layout: &ParallelLayout,
        model: &Transformer,
    ) -> Result<ParallelLayout> {
        let l = ParallelLayout {
            embedding_pipeline_slots: self.embedding_slots.applies(model.num_layers, layout.pp),
            ..*layout
        };
        l.validate(model)?;
        Ok(l)
    }
}
