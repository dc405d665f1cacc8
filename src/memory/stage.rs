//! Each pipeline stage's memory at its peak moment: model states, held activations and the
//! working set.

use super::activations::ActivationParts;
use super::{
    Framework, MemoryOptions, PeakMoment, Precision, StageKind, TrainingMemory,
    TrainingMemoryReport,
};
use crate::error::{Result, add, mul};
use crate::flops::Recompute;
use crate::model::Transformer;
use crate::parallel::{ParallelLayout, Placement, ZeroStage};
use crate::params::LayerKind;

/// Training memory of every stage and the most loaded rank.
///
/// ```
/// use lmshape::{memory::{self, MemoryOptions}, presets, ParallelLayout};
/// let gpt3 = presets::by_name("gpt3-175b")?;
/// let layout = ParallelLayout::builder().tp(8).pp(8).dp(1).global_batch(8).build()?;
/// let report = memory::training_memory(&gpt3, &layout, &MemoryOptions::default())?;
/// let states = report.last.weights_bytes + report.last.gradients_bytes + report.last.optimizer_bytes;
/// assert!((states as f64 / (1u64 << 30) as f64 - 46.9).abs() < 0.05);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// A layout that breaks a rule for the model ([`crate::ParallelLayout::validate`]), or bytes that overflow `u64`.
pub fn training_memory(
    model: &Transformer,
    layout: &ParallelLayout,
    opts: &MemoryOptions,
) -> Result<TrainingMemoryReport> {
    training_memory_placed(&Placement::new(model, layout)?, opts)
}

/// [`training_memory`] of a model and layout already checked together ([`Placement`]): the
/// pair is not checked, nor its stage partition and padded vocabulary derived, again.
///
/// ```
/// use lmshape::{memory::{self, MemoryOptions}, parallel::Placement, presets, ParallelLayout};
/// let gpt3 = presets::by_name("gpt3-175b")?;
/// let layout = ParallelLayout::builder().tp(8).pp(8).global_batch(8).build()?;
/// let placed = Placement::new(&gpt3, &layout)?;
/// let opts = MemoryOptions::default();
/// assert_eq!(memory::training_memory_placed(&placed, &opts)?, memory::training_memory(&gpt3, &layout, &opts)?);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// Optimizer byte counts the layout's ZeRO stage does not allow, or bytes that overflow `u64`.
pub fn training_memory_placed(
    placed: &Placement<'_>,
    opts: &MemoryOptions,
) -> Result<TrainingMemoryReport> {
    let layout = placed.layout();
    opts.precision.check_zero(layout.zero)?;
    let inputs = StageInputs::new(placed, opts)?;
    let stages = placed.stages();
    let pp = layout.pp;
    let (first, middle, last) = if pp == 1 {
        let only = inputs.stage(StageKind::Only, 0, stages.layers(0, pp))?;
        (only, only, only)
    } else {
        let first = inputs.stage(StageKind::First, 0, stages.layers(0, pp))?;
        let last = inputs.stage(StageKind::Last, pp - 1, stages.layers(pp - 1, pp))?;
        let middle = if pp >= 3 {
            // Stage 1 holds the most middle layers and the most micro-batches in flight.
            inputs.stage(StageKind::Middle, 1, stages.layers(1, pp))?
        } else {
            last
        };
        (first, middle, last)
    };
    let peak = [first, middle, last]
        .into_iter()
        .max_by_key(|s| s.total_bytes)
        .unwrap_or(first);
    Ok(TrainingMemoryReport {
        peak,
        first,
        middle,
        last,
    })
}

pub(crate) const W: &str = "training memory";

/// What every stage's figure is built from: per-rank parameters of a layer and of each end,
/// one layer's activations by part, the last stage's logits and the first stage's embedding
/// dropout mask (per micro-batch).
pub(crate) struct StageInputs<'a> {
    /// The model, the layout and what the layout derives for it.
    pub(crate) placed: &'a Placement<'a>,
    pub(crate) opts: &'a MemoryOptions,
    pub(crate) micro_batches: u64,
    pub(crate) first_extra_params: u64,
    pub(crate) last_extra_params: u64,
    pub(crate) parts: ActivationParts,
    pub(crate) moe_parts: Option<ActivationParts>,
    pub(crate) logits_bytes: u64,
    pub(crate) logits_grad_bytes: u64,
    /// The output head's 16-bit weight gradient and its input's gradient, alive at the
    /// head's backward.
    pub(crate) head_grads_bytes: u64,
    pub(crate) embedding_mask_bytes: u64,
    /// The data loader's attention mask of one micro-batch on the first and last stages.
    pub(crate) loader_mask_bytes: u64,
    /// The framework's weight-gradient placeholders of a stage with dense layers only, with
    /// mixture-of-experts layers only, and with both ([`StageInputs::framework_buffers`]).
    pub(crate) placeholder_bytes: [u64; 3],
    /// The output layer's all-gather buffer, on the last stage.
    pub(crate) gather_buffer_bytes: u64,
}

impl<'a> StageInputs<'a> {
    fn model(&self) -> &'a Transformer {
        self.placed.model()
    }

    fn layout(&self) -> &'a ParallelLayout {
        self.placed.layout()
    }

    pub(crate) fn new(
        placed: &'a Placement<'a>,
        opts: &'a MemoryOptions,
    ) -> Result<StageInputs<'a>> {
        let (model, layout) = (placed.model(), placed.layout());
        let tp = layout.tp;
        let vocab = placed.padded_vocab();
        // A tied head is the embedding itself on a single stage, a copy on the last stage
        // otherwise.
        let separate_head = layout.pp > 1 || !model.arch.tied_embeddings;
        let tokens = mul(layout.local_seq_len(), layout.micro_batch, W)?;
        let out = OutputEnd::new(model, layout, opts, vocab, tokens)?;
        Ok(StageInputs {
            placed,
            opts,
            micro_batches: layout.num_micro_batches()?,
            first_extra_params: crate::params::input_end_params(model, vocab, tp)?.total_params(),
            last_extra_params: crate::params::output_end_params(model, vocab, tp, separate_head)?
                .total_params(),
            parts: ActivationParts::new(model, layout, opts, LayerKind::Dense)?,
            moe_parts: match model.moe {
                Some(_) => Some(ActivationParts::new(model, layout, opts, LayerKind::Moe)?),
                None => None,
            },
            logits_bytes: out.logits_bytes,
            logits_grad_bytes: out.logits_grad_bytes,
            head_grads_bytes: out.head_grads_bytes,
            // `b` masks of `s/cp` query rows by `s` keys, one byte each (Megatron-LM's
            // `get_batch_on_this_cp_rank` keeps the rank's query rows).
            loader_mask_bytes: if opts.framework == Framework::MegatronCore
                && opts.attention_mask_in_dataloader
            {
                mul(tokens, layout.seq_len, W)?
            } else {
                0
            },
            placeholder_bytes: placeholder_bytes(model, layout, opts)?,
            gather_buffer_bytes: out.gather_buffer_bytes,
            // The embedding's dropout mask, one byte per element (split with sequence
            // parallelism).
            embedding_mask_bytes: if opts.dropout {
                let x = mul(tokens, model.hidden_size, W)?;
                if layout.sequence_parallel { x / tp } else { x }
            } else {
                0
            },
        })
    }

    /// The figure of stage `index` (of kind `kind`) holding `layers` layers.
    pub(crate) fn stage(&self, kind: StageKind, index: u64, layers: u64) -> Result<TrainingMemory> {
        let (has_first, has_last) = match kind {
            StageKind::Only => (true, true),
            StageKind::First => (true, false),
            StageKind::Middle => (false, false),
            StageKind::Last => (false, true),
        };
        let range = self.placed.stages().range(index, self.layout().pp);
        debug_assert_eq!(range.end - range.start, layers);
        let (params, experts, layer_share) =
            self.stage_params(range.clone(), layers, has_first, has_last)?;
        let in_flight = (self.layout().pp - index).min(self.micro_batches).max(1);
        let held = self.layer_activations(index, range.clone(), in_flight)?;
        let Peak {
            mut act,
            mut transient,
            mut logits_bytes,
            mut moment,
        } = self.peak_before_end_of_backward(&held, in_flight, has_first, has_last)?;
        transient = add(
            transient,
            self.sharding_working_set(layer_share, add(params, experts, W)?)?,
            W,
        )?;
        // The end of a micro-batch's backward: one micro-batch fewer held, and what is alive
        // then ([`StageInputs::end_of_backward`]).
        let held_after = add(
            held.embedding,
            mul(self.embedding_mask_bytes, in_flight - 1, W)?,
            W,
        )?;
        if let Some((alive, at)) = self.end_of_backward(has_first, has_last)? {
            if add(held_after, alive, W)? > add(act, transient, W)? {
                (act, transient, logits_bytes) = (held_after, alive, 0);
                moment = at;
            }
        }
        let (weights_bytes, gradients_bytes, optimizer_bytes, experts_bytes) =
            self.model_states(params, experts)?;
        let framework_buffers_bytes = self.framework_buffers(range, has_last)?;
        let total_bytes = crate::error::sum(
            &[
                weights_bytes,
                gradients_bytes,
                optimizer_bytes,
                act,
                transient,
                framework_buffers_bytes,
                self.opts.overhead_bytes,
            ],
            W,
        )?;
        Ok(TrainingMemory {
            stage: kind,
            params_on_rank: add(params, experts, W)?,
            weights_bytes,
            gradients_bytes,
            optimizer_bytes,
            activations_bytes: act,
            transient_bytes: transient,
            framework_buffers_bytes,
            peak_moment: moment,
            logits_bytes,
            in_flight_micro_batches: in_flight,
            total_bytes,
            expert_params_on_rank: experts,
            experts_bytes,
        })
    }

    /// What the framework keeps from the first backward to the end of the run beyond the
    /// model states, on a rank of the stage holding the layers `range`. Under Megatron-Core:
    ///
    /// * Transformer Engine's weight-gradient placeholders: with Megatron-Core's data-parallel
    ///   wrapper and gradient-accumulation fusion (Megatron-LM's default), a linear module
    ///   adds its weight gradient straight into the fp32 main gradient and hands autograd a
    ///   placeholder of the weight's shape and type instead, one tensor cached per distinct
    ///   shape for the rest of the run (`get_dummy_wgrad`, `transformer_engine/pytorch/
    ///   module/base.py`, Transformer Engine 2.x, called by `Linear`, `LayerNormLinear` and
    ///   `GroupedLinear`): one 16-bit copy of each distinct weight shape of the stage's
    ///   layers ([`crate::params::linear_weight_shapes_on_rank`]);
    /// * on the stage holding the output layer, with sequence parallelism over more than one
    ///   rank, Megatron's global buffer that the output layer all-gathers its input into
    ///   (`get_global_memory_buffer`, `megatron/core/tensor_parallel/layers.py`), kept at its
    ///   largest request, `e·s·b·d`.
    fn framework_buffers(&self, range: std::ops::Range<u64>, has_last: bool) -> Result<u64> {
        let moe_layers = self
            .model()
            .moe
            .map_or(0, |m| m.moe_layers_in(range.clone()));
        let dense_layers = range.end.saturating_sub(range.start) - moe_layers;
        let placeholders = match (dense_layers > 0, moe_layers > 0) {
            (true, false) => self.placeholder_bytes[0],
            (false, true) => self.placeholder_bytes[1],
            (true, true) => self.placeholder_bytes[2],
            (false, false) => 0,
        };
        if has_last {
            add(placeholders, self.gather_buffer_bytes, W)
        } else {
            Ok(placeholders)
        }
    }

    /// The stage's largest moment before the end of a micro-batch's backward
    /// ([`StageInputs::end_of_backward`]), beyond the model states: the first backward under
    /// 1F1B (every in-flight micro-batch held, one layer's backward working set); on the last
    /// stage the loss's or the head's backward when larger, which the backward reaches before
    /// the last layer; the end of a forward (every in-flight micro-batch held, the loader's
    /// mask and, on the last stage, the logits in 16 bits and in fp32).
    fn peak_before_end_of_backward(
        &self,
        held: &HeldActivations,
        in_flight: u64,
        has_first: bool,
        has_last: bool,
    ) -> Result<Peak> {
        let embedding_masks = if has_first {
            mul(self.embedding_mask_bytes, in_flight, W)?
        } else {
            0
        };
        let mut peak = Peak {
            act: add(held.backward, embedding_masks, W)?,
            transient: held.working,
            logits_bytes: 0,
            moment: PeakMoment::Backward,
        };
        if has_last {
            // The loss, the head and then the last layer, one after the other, with every
            // layer's activations still held: the largest of the three.
            let loss = add(self.logits_bytes, self.logits_grad_bytes, W)?;
            let head = add(self.logits_grad_bytes, self.head_grads_bytes, W)?;
            if loss >= head && loss > peak.transient {
                peak.logits_bytes = self.logits_bytes;
                peak.act = add(peak.act, self.logits_bytes, W)?;
                (peak.transient, peak.moment) = (self.logits_grad_bytes, PeakMoment::LossBackward);
            } else if head > peak.transient {
                (peak.transient, peak.moment) = (head, PeakMoment::HeadBackward);
            }
        }
        // The end of a forward; the 16-bit logits are as large as their 16-bit gradient.
        let (mut act, mut transient) = (add(held.forward, embedding_masks, W)?, 0);
        if has_first || has_last {
            transient = self.loader_mask_bytes;
        }
        let mut logits_bytes = 0;
        if has_last {
            logits_bytes = self.logits_bytes;
            act = add(act, logits_bytes, W)?;
            transient = add(transient, self.logits_grad_bytes, W)?;
        }
        if add(act, transient, W)? > add(peak.act, peak.transient, W)? {
            peak = Peak {
                act,
                transient,
                logits_bytes,
                moment: PeakMoment::ForwardEnd,
            };
        }
        Ok(peak)
    }

    /// The parameters on a rank of the stage holding the layers `range` (`layers` of them):
    /// its dense parameters (with the embedding on the first stage and the head on the last)
    /// and routed experts, and one layer's share of both (the mean over the stage's layers
    /// where dense and mixture-of-experts layers mix).
    fn stage_params(
        &self,
        range: std::ops::Range<u64>,
        layers: u64,
        has_first: bool,
        has_last: bool,
    ) -> Result<(u64, u64, u64)> {
        let layout = self.layout();
        let (mut params, experts) = crate::params::layers_params_on_rank_by_part(
            self.model(),
            layout.tp,
            layout.ep,
            layout.expert_tp(),
            range,
        )?;
        let layer_share = add(params, experts, W)?.div_ceil(layers.max(1));
        if has_first {
            params = add(params, self.first_extra_params, W)?;
        }
        if has_last {
            params = add(params, self.last_extra_params, W)?;
        }
        Ok((params, experts, layer_share))
    }

    /// The rank's model states: weights (with FP8 copies of the weights it holds, after
    /// ZeRO-3 sharding), gradients and optimizer states of its dense parameters and routed
    /// experts, and the experts' share of all three.
    fn model_states(&self, params: u64, experts: u64) -> Result<(u64, u64, u64, u64)> {
        let layout = self.layout();
        let precision = &self.opts.precision;
        let dense = model_state_bytes(params, layout.weight_dp(), layout.zero, precision)?;
        let expert = model_state_bytes(experts, layout.expert_dp()?, layout.zero, precision)?;
        let held = |params: u64, dp: u64| {
            if layout.zero >= ZeroStage::Weights {
                params.div_ceil(dp)
            } else {
                params
            }
        };
        let copies = (held(params, layout.weight_dp()) + held(experts, layout.expert_dp()?)) as f64
            * self.opts.gemm_precision.weight_copy_bytes();
        let weights_bytes = crate::error::sum(
            &[
                dense.weights_bytes,
                expert.weights_bytes,
                crate::error::to_u64(copies.ceil(), W)?,
            ],
            W,
        )?;
        Ok((
            weights_bytes,
            add(dense.gradients_bytes, expert.gradients_bytes, W)?,
            add(dense.optimizer_bytes, expert.optimizer_bytes, W)?,
            crate::error::sum(
                &[
                    expert.weights_bytes,
                    expert.gradients_bytes,
                    expert.optimizer_bytes,
                ],
                W,
            )?,
        ))
    }

    /// What is alive at the end of a micro-batch's backward beside the held activations, and
    /// which moment that is, when it can be the peak: on the first stage the embedding's dense
    /// gradient (and under ZeRO-3 its gathered weights); under an optimizer with a full
    /// accumulation buffer the copy of the stage's largest gradient in the buffer's type
    /// ([`PeakMoment::GradientUpcast`]); the larger of the two.
    fn end_of_backward(
        &self,
        has_first: bool,
        has_last: bool,
    ) -> Result<Option<(u64, PeakMoment)>> {
        let precision = &self.opts.precision;
        let mut best = None;
        if has_first {
            let mut grad = mul(self.first_extra_params, precision.activation_bytes, W)?;
            if self.layout().zero >= ZeroStage::Weights {
                grad = mul(grad, 2, W)?;
            }
            best = Some((grad, PeakMoment::EmbeddingBackward));
        }
        if precision.full_grad_accum_bytes > 0 {
            let largest = self.largest_tensor(has_first, has_last)?;
            let copy = mul(largest, precision.full_grad_accum_bytes, W)?;
            if best.is_none_or(|(b, _)| copy > b) {
                best = Some((copy, PeakMoment::GradientUpcast));
            }
        }
        Ok(best)
    }

    /// The largest weight tensor on a rank of a stage: the word embedding on the first stage,
    /// the output head on the last (where it is its own tensor), else the layers' largest
    /// ([`crate::params::largest_layer_tensor_on_rank`]).
    fn largest_tensor(&self, has_first: bool, has_last: bool) -> Result<u64> {
        let tp = self.layout().tp;
        let layers = crate::params::largest_layer_tensor_on_rank(
            self.model(),
            tp,
            self.layout().expert_tp(),
        )?;
        let table = mul(self.placed.padded_vocab() / tp, self.model().hidden_size, W)?;
        let separate_head = self.layout().pp > 1 || !self.model().arch.tied_embeddings;
        let ends = if has_first || (has_last && separate_head) {
            table
        } else {
            0
        };
        Ok(layers.max(ends))
    }

    /// What sharded model states add to the backward's working set, for a layer of
    /// `layer_share` parameters on the rank and `params` on the stage's rank:
    ///
    /// * sharded gradients (ZeRO-2/3, FSDP): the layer's whole gradient until it is
    ///   reduce-scattered (Rajbhandari et al. 2020 §5.2); under DeepSpeed also its gradient
    ///   bucket, `reduce_bucket_size` elements (5·10⁸ by default, at most the rank's
    ///   parameters) in the gradients' precision;
    /// * sharded weights (ZeRO-3, FSDP): the layer's gathered 16-bit weights and the next
    ///   layer's,
    ///   gathered ahead — a whole layer under FSDP2's default one-layer prefetch and
    ///   Megatron-Core, at most DeepSpeed's `stage3_prefetch_bucket_size` (5·10⁷ elements by
    ///   default) under DeepSpeed. DeepSpeed's `stage3_param_persistence_threshold` (10⁵
    ///   elements) keeps norms and biases whole: a few `h` per layer, not counted;
    /// * unsharded weights with no 16-bit state ([`Precision::FSDP2_16`] below ZeRO-3): every
    ///   weight's 16-bit copy, from forward to backward.
    pub(crate) fn sharding_working_set(&self, layer_share: u64, params: u64) -> Result<u64> {
        const REDUCE_BUCKET_ELEMENTS: u64 = 500_000_000;
        const PREFETCH_BUCKET_ELEMENTS: u64 = 50_000_000;
        let p = &self.opts.precision;
        let zero = self.layout().zero;
        let deepspeed = matches!(
            self.opts.framework,
            Framework::Deepspeed | Framework::MegatronDeepspeed
        );
        let mut bytes = 0;
        if zero >= ZeroStage::Gradients {
            bytes = mul(layer_share, p.grad_bytes, W)?;
            if deepspeed {
                let bucket = mul(params.min(REDUCE_BUCKET_ELEMENTS), p.grad_bytes, W)?;
                bytes = add(bytes, bucket, W)?;
            }
        }
        if zero >= ZeroStage::Weights {
            let ahead = if deepspeed {
                layer_share.min(PREFETCH_BUCKET_ELEMENTS)
            } else {
                layer_share
            };
            bytes = add(
                bytes,
                mul(add(layer_share, ahead, W)?, p.activation_bytes, W)?,
                W,
            )?;
        } else if p.weight_bytes == 0 {
            // No 16-bit state and unsharded weights (FSDP2 without resharding after forward,
            // or no sharding): every weight's 16-bit copy lives from forward to backward.
            bytes = add(bytes, mul(params, p.activation_bytes, W)?, W)?;
        }
        Ok(bytes)
    }

    /// The layers' activations held at the stage's moments, and the working set of the layer
    /// whose backward runs. At the first backward of 1F1B, `in_flight` micro-batches of each
    /// layer are held. Under the interleaved schedule stage `i` runs
    /// `2(p − i − 1) + (v − 1)·p` warm-up forwards of its model chunks (Megatron-LM's
    /// `get_num_warmup_microbatches`, at most `m·v`) and holds one chunk-micro-batch more at
    /// its first backward, each of `L_stage / v` layers: on the first stage
    /// `L_stage · (p·v + p − 1) / v` layer-micro-batches (Korthikanti et al. 2022 §4.2.3).
    /// Under selective recomputation one layer's attention core is rebuilt at a time, under
    /// full recomputation one layer's full activations (the largest kind's). Dense and
    /// mixture-of-experts layers of the stage (`range`) are counted by kind; the working set
    /// is the largest kind's. At the end of a micro-batch's backward (its embedding's
    /// gradient) one micro-batch (one chunk's under interleaving) fewer is held and nothing is
    /// being recomputed.
    pub(crate) fn layer_activations(
        &self,
        index: u64,
        range: std::ops::Range<u64>,
        in_flight: u64,
    ) -> Result<HeldActivations> {
        let pp = self.layout().pp;
        let v = self.layout().virtual_stages();
        // Layer-micro-batches held at the first backward, and at the end of one.
        let units = |layers: u64| -> Result<(u64, u64)> {
            if v > 1 && pp > 1 {
                let warmup = add(mul(2, pp - index - 1, W)?, mul(v - 1, pp, W)?, W)?;
                let chunks = add(warmup, 1, W)?.min(mul(self.micro_batches, v, W)?);
                let all = mul(layers, chunks, W)?.div_ceil(v);
                Ok((all, all.saturating_sub(layers.div_ceil(v))))
            } else {
                Ok((mul(layers, in_flight, W)?, mul(layers, in_flight - 1, W)?))
            }
        };
        let layers = range.end.saturating_sub(range.start);
        let moe_layers = self.model().moe.map_or(0, |m| m.moe_layers_in(range));
        let (mut total, mut fewer) = (0, 0);
        let mut largest = 0;
        let mut checkpoint = 0;
        let mut working = 0;
        let kinds = [
            (&self.parts, layers - moe_layers),
            (self.moe_parts.as_ref().unwrap_or(&self.parts), moe_layers),
        ];
        for (parts, n) in kinds {
            if n == 0 {
                continue;
            }
            let stored = add(parts.replicated, parts.split, W)?;
            let per_layer = add(stored, parts.core, W)?;
            let (u, u_fewer) = units(n)?;
            checkpoint = checkpoint.max(parts.checkpoint);
            working = working.max(parts.backward);
            let per_unit = match self.layout().recompute {
                Recompute::None => per_layer,
                Recompute::Selective => {
                    largest = largest.max(parts.core);
                    stored
                }
                Recompute::Full => {
                    largest = largest.max(per_layer);
                    parts.checkpoint
                }
            };
            total = add(total, mul(u, per_unit, W)?, W)?;
            fewer = add(fewer, mul(u_fewer, per_unit, W)?, W)?;
        }
        let backward = match self.layout().recompute {
            Recompute::None => total,
            Recompute::Selective => add(total, largest, W)?,
            // One layer's checkpoint is its full activations while it is rebuilt.
            Recompute::Full => add(total.saturating_sub(checkpoint), largest, W)?,
        };
        Ok(HeldActivations {
            backward,
            working,
            embedding: fewer,
            forward: total,
        })
    }
}

/// What the output end of one micro-batch puts on the last stage beyond its weights.
struct OutputEnd {
    logits_bytes: u64,
    logits_grad_bytes: u64,
    head_grads_bytes: u64,
    gather_buffer_bytes: u64,
}

impl OutputEnd {
    /// For `tokens` tokens a micro-batch on the rank and the `vocab` rows padded for `tp`;
    /// nothing when the options leave the logits out.
    fn new(
        model: &Transformer,
        layout: &ParallelLayout,
        opts: &MemoryOptions,
        vocab: u64,
        tokens: u64,
    ) -> Result<OutputEnd> {
        if !opts.include_logits {
            return Ok(OutputEnd {
                logits_bytes: 0,
                logits_grad_bytes: 0,
                head_grads_bytes: 0,
                gather_buffer_bytes: 0,
            });
        }
        let (e, h, rows) = (
            opts.precision.activation_bytes,
            model.hidden_size,
            vocab / layout.tp,
        );
        let token_rows = mul(tokens, rows, W)?;
        let gathered = mul(mul(tokens, h, W)?, e, W)?;
        Ok(OutputEnd {
            // fp32 logits, vocab-parallel (Korthikanti et al. 2022 §4.3).
            logits_bytes: mul(4, token_rows, W)?,
            // Their gradient beside the saved fp32 softmax: computed in place over it and
            // handed to the head in 16 bits (Megatron-Core `_VocabParallelCrossEntropy.
            // backward`, unfused; the fused one's compiled `calculate_gradients` returns the
            // same 16-bit cast, `megatron/core/fusions/fused_cross_entropy.py`).
            logits_grad_bytes: mul(e, token_rows, W)?,
            // At the head's backward: the head's weight gradient in 16 bits, `V/t × d`
            // (Megatron-Core `LinearWithGradAccumulationAndAsyncCommunication.backward`: the
            // product `grad_output.t() @ input`, or with gradient-accumulation fusion a
            // weight-shaped placeholder, `torch.empty(main_grad.shape)` before release 0.14),
            // and the gradient of its input, `e·s·b·d` before any reduce-scatter.
            head_grads_bytes: add(mul(mul(e, rows, W)?, h, W)?, gathered, W)?,
            // Megatron's global buffer the output layer all-gathers its sequence-parallel
            // input into ([`StageInputs::framework_buffers`]).
            gather_buffer_bytes: if opts.framework == Framework::MegatronCore
                && layout.sequence_parallel
                && layout.tp > 1
            {
                gathered
            } else {
                0
            },
        })
    }
}

/// Megatron-Core's weight-gradient placeholders ([`StageInputs::framework_buffers`]) of a
/// stage holding dense layers only, mixture-of-experts layers only, and both: one copy in the
/// weights' type of each distinct linear weight shape the stage's layer kinds have.
fn placeholder_bytes(
    model: &Transformer,
    layout: &ParallelLayout,
    opts: &MemoryOptions,
) -> Result<[u64; 3]> {
    if opts.framework != Framework::MegatronCore {
        return Ok([0; 3]);
    }
    let shapes = |kind| {
        crate::params::linear_weight_shapes_on_rank(model, layout.tp, layout.expert_tp(), kind)
    };
    let dense = shapes(LayerKind::Dense)?;
    let moe = match model.moe {
        Some(_) => shapes(LayerKind::Moe)?,
        None => crate::params::LinearShapes::default(),
    };
    let bytes = |sets: &[&[(u64, u64)]]| -> Result<u64> {
        let mut total = 0;
        for (i, set) in sets.iter().enumerate() {
            for (j, &shape) in set.iter().enumerate() {
                // Counted once: skip a shape met earlier in this set or in an earlier one.
                let earlier = set[..j].contains(&shape)
                    || sets[..i].iter().any(|other| other.contains(&shape));
                if !earlier {
                    let elements = mul(shape.0, shape.1, W)?;
                    total = add(total, mul(elements, opts.precision.weight_bytes, W)?, W)?;
                }
            }
        }
        Ok(total)
    };
    Ok([
        bytes(&[dense.as_slice()])?,
        bytes(&[moe.as_slice()])?,
        bytes(&[dense.as_slice(), moe.as_slice()])?,
    ])
}

/// A stage's moment: held activations (with the logits when held), the buffers alive then,
/// the logits among the activations, and which moment it is.
struct Peak {
    act: u64,
    transient: u64,
    logits_bytes: u64,
    moment: PeakMoment,
}

/// What [`StageInputs::layer_activations`] finds: the layers' activations held at the first
/// backward and the working set then, and those held at the end of a micro-batch's backward
/// (the embedding's backward, the gradient upcast).
pub(crate) struct HeldActivations {
    pub(crate) backward: u64,
    pub(crate) working: u64,
    pub(crate) embedding: u64,
    /// Held at the end of the forward that completes the in-flight set (no layer being
    /// recomputed).
    pub(crate) forward: u64,
}

/// Weights, gradients and optimizer states of `params` parameters on one rank.
pub(crate) struct ModelStateBytes {
    pub(crate) weights_bytes: u64,
    pub(crate) gradients_bytes: u64,
    pub(crate) optimizer_bytes: u64,
}

/// Mixed-precision Adam's model states of `params` parameters, sharded over `dp` data-parallel
/// ranks (the expert-data-parallel degree for routed experts) by the ZeRO stage (Rajbhandari et al. 2020 §5: stage 1 optimizer states, 2 also
/// gradients, 3 also weights).
pub(crate) fn model_state_bytes(
    params: u64,
    dp: u64,
    zero: ZeroStage,
    p: &Precision,
) -> Result<ModelStateBytes> {
    let states = p.state_sharding(zero);
    let shard = |stage_min: ZeroStage| {
        let at = if stage_min == ZeroStage::OptimizerStates {
            states
        } else {
            zero
        };
        if at >= stage_min {
            params.div_ceil(dp)
        } else {
            params
        }
    };
    Ok(ModelStateBytes {
        weights_bytes: mul(shard(ZeroStage::Weights), p.weight_bytes, W)?,
        gradients_bytes: crate::error::sum(
            &[
                mul(shard(ZeroStage::Gradients), p.grad_bytes, W)?,
                mul(params, p.full_grad_accum_bytes, W)?,
                mul(shard(ZeroStage::OptimizerStates), p.partition_grad_bytes, W)?,
            ],
            W,
        )?,
        optimizer_bytes: mul(
            shard(ZeroStage::OptimizerStates),
            add(p.master_weight_bytes, p.optimizer_state_bytes, W)?,
            W,
        )?,
    })
}
