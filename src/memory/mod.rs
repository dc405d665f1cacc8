//! Memory per GPU: training under a parallel layout (most loaded rank), and inference with a
//! KV cache.
//!
//! **Model states** (Rajbhandari et al. 2020, ZeRO §3): mixed-precision Adam keeps 16-bit
//! weights (2 bytes), gradients (2 bytes, or 4 when accumulated in fp32 as Megatron-LM does),
//! fp32 master weights (4) and two fp32 Adam moments (8): 16 or 18 bytes per parameter
//! ([`Precision::MIXED_16`], [`Precision::MIXED_18`]); each framework keeps its own counts
//! ([`Framework::precision`]: DeepSpeed adds an fp32 gradient partition,
//! [`Precision::DEEPSPEED_20`]; FSDP2 keeps fp32 shards and no 16-bit state,
//! [`Precision::FSDP2_16`]). Tensor parallelism splits weight
//! matrices and column-parallel biases; row-parallel biases and norms stay whole on every rank
//! (Megatron-LM `ColumnParallelLinear`/`RowParallelLinear`). Pipeline stages hold their layers;
//! the first adds the (vocab-parallel, padded) token embedding, the position table (replicated
//! over `tp`, as Megatron-LM's `Embedding` keeps it) and an embedding norm; the last adds the
//! final norm and the output head — a copy of the tied embedding when `pp > 1`. ZeRO stages
//! 1/2/3 divide optimizer states / + gradients / + weights by `dp`.
//!
//! **Activations** (Korthikanti et al. 2022, §4 and Table 2; 16-bit activations, 1-byte dropout
//! masks): per layer and micro-batch of `b` sequences of `s` tokens,
//!
//! | layout | bytes |
//! |---|---|
//! | no parallelism | `sbh(34 + 5as/h)` |
//! | tensor parallel | `sbh(10 + 24/t + 5as/(ht))` |
//! | tensor + sequence parallel | `sbh/t · (34 + 5as/h)` |
//! | tensor parallel + selective recompute | `sbh(10 + 24/t)` |
//! | tensor + sequence parallel + selective | `34·sbh/t` |
//! | full recompute | `2sbh` (the layer input; `/t` with sequence parallelism) |
//!
//! generalised term by term (see [`layer_activation_bytes`]) to grouped-query attention,
//! `head_dim ≠ h/a`, any FFN width, gated MLPs and models without dropout. With
//! FlashAttention (Dao et al. 2022) the `5as²b` scores/softmax/dropout term is not stored; the
//! fp32 log-sum-exp (`4·a·s·b`) is. Under full recomputation the layer being recomputed needs
//! its full activations once (working set); under selective, one layer's attention core.
//! With 1F1B the first stage holds `min(pp, m)` micro-batches in flight (Narayanan et al. 2021
//! §2.2.1; stage `i` holds `min(pp − i, m)`); the interleaved schedule holds
//! `L·(1 + (p − 1)/(p·v))` layers' worth on the first stage (Korthikanti et al. 2022 §4.2.3).
//! The last stage adds fp32 logits, `4·s·b·V/t` (Korthikanti §4.3).
//!
//! Stages split the layers as [`crate::parallel::stage_partition`] says (even, balanced, or
//! Megatron-Core's explicit first and last stages); routed experts are sharded over expert
//! parallelism and their states over the expert-data-parallel degree. FP8 GEMMs add the weight
//! copies ([`GemmPrecision`]).
//!
//! **Allocated, reserved, device.** The estimate above is the allocated figure of model
//! states, activations and the buffers alive at the peak. A [`FrameworkProfile`] sets the
//! framework's byte counts and adds the caching allocator's reserve and the runtime (CUDA
//! context, workspaces, NCCL) to give the reserved and device figures and a [`Verdict`]
//! against a card.
//!
//! **The peak moment.** Each stage's figure is taken at the moment it peaks, not as a sum of
//! maxima ([`PeakMoment`]): the first backward under 1F1B (every in-flight micro-batch held,
//! plus the backward's working set — one layer's intermediate gradients, its re-gathered
//! sequence-parallel input, the all-to-all and context-parallel exchange buffers); on the last
//! stage, which the backward reaches through the loss and the output head before its last
//! layer, the largest of the loss's backward (the fp32 softmax and its 16-bit gradient), the
//! head's (the logits' 16-bit gradient, the head's 16-bit weight gradient and its input's
//! gradient) and the layer's; the end of a forward (every in-flight micro-batch held, the data
//! loader's `s × s` attention mask on the first and last stages under Megatron-Core, the
//! logits in 16 bits and fp32 on the last), which the mask makes the peak at long context;
//! or on the first stage the embedding's backward (one micro-batch fewer held, the
//! embedding's dense gradient alive).
//!
//! **What the framework keeps.** Beyond the model states, Megatron-Core with Transformer
//! Engine keeps one 16-bit weight-gradient placeholder per distinct linear weight shape for
//! the whole run (gradient-accumulation fusion writes the real gradient into the fp32 buffer)
//! and, with sequence parallelism, the output layer's all-gather buffer
//! ([`TrainingMemory::framework_buffers_bytes`]). Against the four measured B200 runs
//! (Megatron-Core, nothing fitted to them) the allocated estimate of every stage is within
//! 0.4%: the pipelined run's first stage +0.35% and last −0.4%, the three unpipelined runs
//! −0.25% to −0.27%.

mod activations;
mod device;
mod inference;
mod stage;

pub use crate::framework::{Framework, FrameworkProfile, Precision};
use crate::parallel::Routing;
use serde::{Deserialize, Serialize};

/// Attention kernel, for activation memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKernel {
    /// Scores, softmax and its dropout are materialised (`5as²b`).
    #[default]
    Standard,
    /// FlashAttention: only the fp32 log-sum-exp per row is kept.
    Flash,
}

pub use crate::hardware::GemmPrecision;

/// What the memory estimate assumes beyond the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemoryOptions {
    /// Bytes per parameter state.
    pub precision: Precision,
    /// Attention kernel.
    pub attention: AttentionKernel,
    /// Dropout masks are stored (Korthikanti et al. assume dropout; LLaMA-style training has
    /// none).
    pub dropout: bool,
    /// Count the last stage's fp32 logits.
    pub include_logits: bool,
    /// Fixed bytes per GPU added to the total (CUDA context, framework reserve).
    pub overhead_bytes: u64,
    /// GEMM precision (FP8 keeps low-precision weight copies).
    #[serde(default)]
    pub gemm_precision: GemmPrecision,
    /// Mixture-of-experts routing (the size of each expert's batch).
    #[serde(default)]
    pub routing: Routing,
    /// The framework whose buffers the working set counts (its prefetch under ZeRO-3, its
    /// gradient buckets); its bytes per parameter are [`MemoryOptions::precision`], set by
    /// [`FrameworkProfile::memory_options`].
    #[serde(default)]
    pub framework: Framework,
    /// The data loader builds each sequence's causal attention mask, `s × s` booleans, and the
    /// batch brings it to the GPU for the micro-batch's forward on the first and last stages
    /// (Megatron-Core `GPTDatasetConfig.create_attention_mask`, default on, Megatron-LM's
    /// `--no-create-attention-mask-in-dataloader` turns it off; FlashAttention's causal kernels
    /// do not read it). Counted under Megatron-Core, `b·(s/cp)·s` bytes at the end of a
    /// forward.
    #[serde(default = "crate::memory::on")]
    pub attention_mask_in_dataloader: bool,
    /// The optimizer, where it is not the framework's usual one
    /// ([`Framework::default_optimizer`]); [`FrameworkProfile::memory_options`] sets
    /// [`MemoryOptions::precision`] from it.
    #[serde(default)]
    pub optimizer: Option<crate::framework::Optimizer>,
}

impl Default for MemoryOptions {
    /// 18 bytes per parameter, standard attention with dropout, logits counted, no overhead.
    fn default() -> MemoryOptions {
        MemoryOptions {
            precision: Precision::MIXED_18,
            attention: AttentionKernel::Standard,
            dropout: true,
            include_logits: true,
            attention_mask_in_dataloader: true,
            overhead_bytes: 0,
            gemm_precision: GemmPrecision::Bf16,
            routing: Routing::Dropless,
            framework: Framework::MegatronCore,
            optimizer: None,
        }
    }
}

/// Serde's default for options that are on unless a file says otherwise.
pub(crate) fn on() -> bool {
    true
}

/// Which pipeline stage a figure describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// The only stage (`pp = 1`).
    Only,
    /// The first stage.
    First,
    /// The second stage (the most loaded of the middle ones).
    Middle,
    /// The last stage.
    Last,
}

impl std::fmt::Display for StageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StageKind::Only => "only",
            StageKind::First => "first",
            StageKind::Middle => "middle",
            StageKind::Last => "last",
        })
    }
}

/// The moment of the step at which a stage's allocated memory peaks.
///
/// ```
/// use lmshape::{memory::{self, MemoryOptions, PeakMoment}, presets, ParallelLayout};
/// let gpt3 = presets::by_name("gpt3-175b")?;
/// let layout = ParallelLayout::builder().tp(8).pp(8).global_batch(64).build()?;
/// let r = memory::training_memory(&gpt3, &layout, &MemoryOptions::default())?;
/// // Without recomputation the first stage holds eight micro-batches at its first backward.
/// assert_eq!(r.first.peak_moment, PeakMoment::Backward);
/// assert_eq!(r.first.peak_moment.to_string(), "first backward");
/// # Ok::<(), lmshape::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeakMoment {
    /// The first backward pass under 1F1B: every in-flight micro-batch's activations held,
    /// plus the backward's working set.
    #[default]
    Backward,
    /// The last stage's loss backward: every layer's activations held, the fp32 softmax of
    /// the logits and its 16-bit gradient.
    LossBackward,
    /// The last stage's output-head backward: every layer's activations held, the logits'
    /// 16-bit gradient, the head's 16-bit weight gradient and its input's gradient.
    HeadBackward,
    /// The end of a micro-batch's forward: every in-flight micro-batch held, the
    /// micro-batch's attention mask from the data loader alive, and on the last stage its
    /// logits in 16 bits and in fp32.
    ForwardEnd,
    /// The first stage's embedding backward at the end of a micro-batch: one micro-batch
    /// fewer held, the embedding's dense gradient alive (large vocabularies, little held).
    EmbeddingBackward,
    /// After a micro-batch's backward, where the optimizer adds each 16-bit gradient into its
    /// full accumulation buffer through a copy in the buffer's type (DeepSpeed's
    /// `BF16_Optimizer.update_hp_grads`, 77b649d L274-291): one micro-batch fewer held, the
    /// stage's largest tensor's copy alive.
    GradientUpcast,
}

impl std::fmt::Display for PeakMoment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeakMoment::Backward => "first backward",
            PeakMoment::LossBackward => "loss backward",
            PeakMoment::HeadBackward => "head backward",
            PeakMoment::ForwardEnd => "forward end",
            PeakMoment::EmbeddingBackward => "embedding backward",
            PeakMoment::GradientUpcast => "gradient upcast",
        })
    }
}

/// Memory of one GPU of one pipeline stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingMemory {
    /// Which stage.
    pub stage: StageKind,
    /// Parameters held by the rank (before ZeRO sharding).
    pub params_on_rank: u64,
    /// Working weights (with the low-precision copies when the GEMMs run in FP8).
    pub weights_bytes: u64,
    /// Gradients.
    pub gradients_bytes: u64,
    /// Master weights and optimizer moments.
    pub optimizer_bytes: u64,
    /// Activations, including the last stage's logits.
    pub activations_bytes: u64,
    /// Of which logits.
    pub logits_bytes: u64,
    /// Buffers alive only at the peak moment: the working set of the layer whose backward
    /// runs (gradients of its intermediates, all-to-all buffers, re-gathered inputs; with
    /// sharded gradients its whole gradient, with sharded weights two gathered layers), or on
    /// the last stage the 16-bit logits gradient (with the head's weight and input gradients
    /// at the head's backward), or the embedding's dense gradient.
    #[serde(default)]
    pub transient_bytes: u64,
    /// Buffers the framework keeps for the whole run beyond the model states (Megatron-Core:
    /// Transformer Engine's weight-gradient placeholders and the output layer's all-gather
    /// buffer; see the stage estimate).
    #[serde(default)]
    pub framework_buffers_bytes: u64,
    /// When the stage peaks.
    #[serde(default)]
    pub peak_moment: PeakMoment,
    /// Micro-batches whose activations are held at the peak.
    pub in_flight_micro_batches: u64,
    /// Everything at the peak moment, plus [`MemoryOptions::overhead_bytes`].
    pub total_bytes: u64,
    /// Of the parameters, routed experts (sharded over the expert-data-parallel degree).
    #[serde(default)]
    pub expert_params_on_rank: u64,
    /// Of the model-state bytes, the routed experts' (weights, gradients, optimizer states).
    #[serde(default)]
    pub experts_bytes: u64,
}

/// Per-stage figures and the most loaded one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingMemoryReport {
    /// The rank with the largest total.
    pub peak: TrainingMemory,
    /// First stage (or the only one).
    pub first: TrainingMemory,
    /// Second stage (equal to first or last when `pp ≤ 2`).
    pub middle: TrainingMemory,
    /// Last stage (or the only one).
    pub last: TrainingMemory,
}

pub use activations::{korthikanti_table2_bytes, layer_activation_bytes};
pub use device::{DeviceMemory, Verdict, least_recompute, least_recompute_placed};
pub use inference::{
    InferenceMemory, InferenceQuery, inference_memory, kv_cache_bytes, max_inference_batch,
    max_inference_context,
};
pub use stage::{training_memory, training_memory_placed};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::{ParallelLayout, Recompute};
    use crate::presets;

    /// The generalised formula equals Table 2 for a standard GPT in every row.
    #[test]
    fn generalised_formula_is_table_2() {
        let m = presets::by_name("gpt3-175b").unwrap();
        for t in [1u64, 2, 4, 8] {
            for sp in [false, true] {
                for rc in [Recompute::None, Recompute::Selective, Recompute::Full] {
                    let layout = ParallelLayout {
                        tp: t,
                        sequence_parallel: sp,
                        micro_batch: 2,
                        global_batch: 2,
                        ..ParallelLayout::default()
                    };
                    let ours = layer_activation_bytes(&m, &layout, &MemoryOptions::default(), rc)
                        .unwrap() as f64;
                    let table = korthikanti_table2_bytes(2048, 2, 12288, 96, t, sp, rc).unwrap();
                    assert_eq!(ours, table, "t={t} sp={sp} {rc:?}");
                }
            }
        }
    }
}
