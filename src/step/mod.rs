//! A training step's time on a cluster: the GEMMs of each layer under tensor parallelism,
//! memory-bound kernels, tensor-parallel collectives, the pipeline (bubble and point-to-point
//! sends), the data-parallel gradient reduction and the optimizer step.
//!
//! Model (each term cited where it comes from):
//!
//! * **GEMMs per layer and micro-batch** on one tensor-parallel rank (Shoeybi et al. 2019 §3;
//!   Narayanan et al. 2021 §3.2): QKV `[sb × h] · [h × (q + 2k)/t]`, scores `b·a/t` batched
//!   `[s × hd] · [hd × s]`, attention×V `b·a/t` batched `[s × s] · [s × hd]`, output
//!   `[sb × q/t] · [q/t × h]`, MLP in `[sb × h] · [h × f/t]` (twice as wide when gated), MLP out
//!   `[sb × f/t] · [f/t × h]`; the last stage adds the logits `[sb × h] · [h × V/t]`. Backward
//!   runs a data-gradient and a weight-gradient GEMM for each ([`crate::hardware::Gemm::data_grad`],
//!   [`crate::hardware::Gemm::weight_grad`]); full recomputation runs the forward again, selective only the
//!   attention core (Korthikanti et al. 2022 §4).
//! * **Memory-bound kernels** (bytes over HBM bandwidth; Megatron-LM's fused kernels): each
//!   norm reads and writes `sbh`; each bias–dropout–residual reads two and writes one `sbh`
//!   (+ a 1-byte mask with dropout); the activation reads the MLP input (two of them when gated)
//!   and writes one `sb·f/t`; the fused scale–mask–softmax reads and writes `(a/t)·s²·b`, and
//!   attention dropout reads, writes and masks it (none of this with FlashAttention). Backward
//!   moves twice the forward bytes (assumption: read saved input and incoming gradient, write
//!   one gradient).
//! * **Tensor-parallel collectives**: two all-reduces of `sbh` per layer forward and two
//!   backward (Shoeybi et al. 2019 §3, the `f`/`g` operators), two more with full recomputation;
//!   with sequence parallelism the same volume moves as reduce-scatter + all-gather (Korthikanti
//!   et al. 2022 §4.2.2). Ring all-reduce moves `2(t−1)/t` of the buffer (Patarasuk & Yuan 2009).
//! * **Pipeline**: 1F1B takes `(m + p − 1)` stage-times for `m` micro-batches (bubble
//!   `(p − 1)/m`; Narayanan et al. 2021 §2.2.1), interleaved `(m + (p − 1)/v)`; each micro-batch
//!   sends its activation forward and its gradient backward between stages (`sbh/t` bytes with
//!   Megatron's scatter/gather optimisation, §4.1).
//! * **Data parallelism**: ring collectives over the data-parallel group on the fabric its
//!   ranks share ([`Cluster::ring_seconds`]): an all-reduce of the gradients, the distributed
//!   optimizer's reduce-scatter and all-gather (ZeRO 1–2), or ZeRO-3's per-micro-batch gathers
//!   hidden behind compute; routed experts over the expert-data-parallel group; optionally
//!   overlapped with the last backward and the first forward.
//! * **Mixture of experts**: router, grouped expert GEMMs and the all-to-all dispatch and
//!   combine over expert parallelism ([`layer_gemms`], [`crate::parallel::ExpertBatch`]).
//! * **Optimizer**: Adam's one pass over the rank's shard of the model states
//!   ([`crate::framework::Precision::optimizer_step_bytes`]: 30 bytes per parameter under
//!   Megatron-Core's counts).
//!
//! Reported TFLOPs count every matmul with the layout's recomputation
//! ([`crate::flops::matmul_flops_per_token`] under [`FlopsConvention::megatron`], which equals
//! Megatron-LM eq. 3, [`crate::flops::megatron_step_flops`], for GPT-style models),
//! MFU the per-matmul model FLOPs without recomputation over the dense peak of
//! [`StepOptions::dtype`] (the 16-bit peak, also when the GEMMs run in FP8).

mod calibrate;
mod cluster;
mod data_parallel;
mod gemms;
mod layer;
mod pipeline;
mod profile_fit;

use crate::error::{Error, Result};
use crate::flops::{self, FlopsConvention, Recompute};
pub use crate::framework::SpeedProfile;
use crate::hardware::{Dtype, GemmTimer};
use crate::memory::{AttentionKernel, MemoryOptions};
use crate::model::Transformer;
use crate::parallel::{ParallelLayout, Placement};
pub use calibrate::{
    CalibrationReport, MeasuredRun, calibrate_software_efficiency, prediction_errors,
};
pub use cluster::Cluster;
use data_parallel::{HeldParams, data_parallel_seconds, optimizer_seconds, weight_cast_seconds};
pub use gemms::{GemmRole, LayerGemms, layer_gemms};
use pipeline::{end_times, p2p_seconds, pipeline_slots, slowest_stage};
pub use profile_fit::{
    CALIBRATION_PRIOR_WEIGHT, ProfileCalibration, ProfileRun, calibrate_profile,
};
use serde::{Deserialize, Serialize};

/// Knobs of the step model beyond the layout. The training setup it shares with the memory
/// estimate — dropout, the attention kernel, bytes per gradient element — lives once, in
/// [`StepOptions::memory`], so a plan cannot time one setup and size another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOptions {
    /// GEMM and activation dtype.
    pub dtype: Dtype,
    /// The training setup: dropout kernels run (and masks are written) when
    /// `memory.dropout`; FlashAttention (no materialised scores; the attention GEMMs are still
    /// timed) when `memory.attention` is [`AttentionKernel::Flash`]; the data-parallel
    /// reduction moves `memory.precision.grad_bytes` per gradient element.
    pub memory: MemoryOptions,
}

impl Default for StepOptions {
    /// bf16 with [`MemoryOptions::default`]: dropout on, standard attention, fp32 gradients
    /// (Megatron-LM 2021–22).
    fn default() -> StepOptions {
        StepOptions {
            dtype: Dtype::Bf16,
            memory: MemoryOptions::default(),
        }
    }
}

impl StepOptions {
    /// The dtype the linear layers' GEMMs run in: FP8 when the memory options say so, else
    /// [`StepOptions::dtype`].
    pub fn gemm_dtype(&self) -> Dtype {
        match self.memory.gemm_precision {
            crate::memory::GemmPrecision::Bf16 => self.dtype,
            _ => Dtype::Fp8,
        }
    }

    pub(crate) fn dropout(&self) -> bool {
        self.memory.dropout
    }

    pub(crate) fn flash_attention(&self) -> bool {
        self.memory.attention == AttentionKernel::Flash
    }
}

/// Where the step's time goes (seconds per step, summed over the whole step).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct StepBreakdown {
    /// GEMMs of the slowest stage over all micro-batches (after software efficiency).
    pub gemm_seconds: f64,
    /// Memory-bound kernels of the slowest stage.
    pub memory_bound_seconds: f64,
    /// Tensor-parallel collectives.
    pub tp_comm_seconds: f64,
    /// Pipeline point-to-point sends.
    pub p2p_seconds: f64,
    /// Pipeline bubble (idle stage-times).
    pub pipeline_bubble_seconds: f64,
    /// Exposed data-parallel gradient reduction.
    pub dp_comm_seconds: f64,
    /// Optimizer step (and, in FP8, the once-per-step weight casts).
    pub optimizer_seconds: f64,
    /// Mixture-of-experts all-to-all dispatch and combine of the slowest stage (exposed).
    #[serde(default)]
    pub all_to_all_seconds: f64,
    /// Context-parallel key/value exchange of the slowest stage (exposed).
    #[serde(default)]
    pub cp_comm_seconds: f64,
    /// Host work per micro-batch beyond the kernels ([`crate::system::SystemProfile::host_overhead_seconds`]).
    #[serde(default)]
    pub host_overhead_seconds: f64,
}

/// The predicted step.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct StepTime {
    /// Seconds per optimizer step.
    pub step_seconds: f64,
    /// TFLOP/s per GPU of every matmul with the layout's recomputation (Megatron-LM eq. 3 for
    /// GPT-style models).
    pub tflops_per_gpu: f64,
    /// Model FLOPs utilisation (matmul model FLOPs without recomputation / peak).
    pub mfu: f64,
    /// Tokens per second over the whole cluster.
    pub tokens_per_second: f64,
    /// Micro-batches per step per pipeline.
    pub num_micro_batches: u64,
    /// Seconds of the slowest stage for one micro-batch (forward + backward).
    pub stage_seconds: f64,
    /// Where the time goes.
    pub breakdown: StepBreakdown,
    /// Model FLOPs utilisation against the peak of the precision the GEMMs run in (the FP8
    /// peak under FP8; equal to [`StepTime::mfu`] in bf16).
    #[serde(default)]
    pub mfu_at_precision_peak: f64,
    /// The band of the step time from the system profile's measured error
    /// ([`crate::system::SystemProfile::band`]; the wide unvalidated band without one): the
    /// fastest the step plausibly is.
    #[serde(default)]
    pub step_seconds_low: f64,
    /// The slowest the step plausibly is.
    #[serde(default)]
    pub step_seconds_high: f64,
}

impl StepTime {
    /// Days to train on `tokens` at this speed.
    ///
    /// ```
    /// # use lmshape::step::{StepTime, StepBreakdown};
    /// let s = StepTime { step_seconds: 1.0, tokens_per_second: 86400.0, ..StepTime::default() };
    /// assert_eq!(s.days_for_tokens(86400.0 * 86400.0), 1.0);
    /// ```
    pub fn days_for_tokens(&self, tokens: f64) -> f64 {
        tokens / self.tokens_per_second / 86_400.0
    }

    /// A rate of this step (tokens/s, TFLOP/s, tokens in a fixed time: anything inversely
    /// proportional to the step time) at the slow and the fast end of the speed band
    /// ([`StepTime::step_seconds_high`], [`StepTime::step_seconds_low`]).
    ///
    /// ```
    /// # use lmshape::step::StepTime;
    /// let s = StepTime { step_seconds: 1.0, step_seconds_low: 0.8, step_seconds_high: 1.25, ..StepTime::default() };
    /// assert_eq!(s.rate_band(100.0), (80.0, 125.0));
    /// ```
    pub fn rate_band(&self, rate: f64) -> (f64, f64) {
        (
            rate * self.step_seconds / self.step_seconds_high,
            rate * self.step_seconds / self.step_seconds_low,
        )
    }
}

/// Per-micro-batch times of one layer on one rank (forward, backward and recomputation).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LayerTimes {
    pub(crate) gemm: f64,
    pub(crate) memory: f64,
    pub(crate) tp_comm: f64,
    pub(crate) all_to_all: f64,
    pub(crate) cp_comm: f64,
}

/// Predict one training step of `model` under `layout` on `cluster`, timing GEMMs with
/// `timer`. The layout is validated first.
///
/// ```
/// use lmshape::hardware::AnalyticalTimer;
/// use lmshape::step::{self, Cluster, StepOptions};
/// use lmshape::{presets, ParallelLayout, Recompute};
/// let cluster = Cluster::selene();
/// let timer = AnalyticalTimer::new(cluster.gpu.clone());
/// let m = presets::by_name("gpt3-175b")?;
/// let layout = ParallelLayout::builder().tp(8).pp(8).dp(16).micro_batch(1)
///     .global_batch(1536).recompute(Recompute::Full).build()?;
/// let s = step::step_time(&m, &layout, &cluster, &timer, &StepOptions::default())?;
/// assert!(s.tflops_per_gpu > 80.0 && s.tflops_per_gpu < 250.0);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// A model, layout or cluster that breaks a rule, a precision the GPU lacks, a timer result that is not finite or is faster than the GPU's peak, or figures that overflow.
pub fn step_time(
    model: &Transformer,
    layout: &ParallelLayout,
    cluster: &Cluster,
    timer: &dyn GemmTimer,
    opts: &StepOptions,
) -> Result<StepTime> {
    step_time_placed(&Placement::new(model, layout)?, cluster, timer, opts)
}

/// [`step_time`] of a model and layout already checked together ([`Placement`]): the pair is
/// not checked, nor its stage partition and padded vocabulary derived, again — by the step or
/// by the memory figure it reads.
///
/// ```
/// use lmshape::hardware::AnalyticalTimer;
/// use lmshape::step::{self, Cluster, StepOptions};
/// use lmshape::{parallel::Placement, presets, ParallelLayout};
/// let cluster = Cluster::selene();
/// let timer = AnalyticalTimer::new(cluster.gpu.clone());
/// let m = presets::by_name("gpt3-xl")?;
/// let layout = ParallelLayout::builder().tp(2).dp(4).global_batch(64).build()?;
/// let opts = StepOptions::default();
/// let placed = step::step_time_placed(&Placement::new(&m, &layout)?, &cluster, &timer, &opts)?;
/// assert_eq!(placed, step::step_time(&m, &layout, &cluster, &timer, &opts)?);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// A cluster that breaks a rule, a precision the GPU lacks, a timer result that is not finite or is faster than the GPU's peak, or figures that overflow.
pub fn step_time_placed(
    placed: &Placement<'_>,
    cluster: &Cluster,
    timer: &dyn GemmTimer,
    opts: &StepOptions,
) -> Result<StepTime> {
    let (model, layout) = (placed.model(), placed.layout());
    let tokens_per_step = check_run(layout, cluster, opts)?;
    let ends = end_times(placed, cluster, timer, opts)?;
    let slowest = slowest_stage(placed, cluster, timer, opts, &ends)?;
    let p2p = p2p_seconds(model, layout, cluster, opts);
    let host = cluster
        .system
        .as_ref()
        .map_or(0.0, |p| p.host_overhead_seconds);
    let stage_seconds = slowest.total() + p2p + host;
    let m = layout.num_micro_batches()?;
    let slots = pipeline_slots(layout, m);
    let peak = crate::memory::training_memory_placed(placed, &opts.memory)?.peak;
    let held = HeldParams {
        dense: (peak.params_on_rank - peak.expert_params_on_rank) as f64,
        experts: peak.expert_params_on_rank as f64,
        expert_dp: layout.expert_dp()?,
    };
    let stage_layers = placed.stages().heaviest();
    let dp_comm = data_parallel_seconds(layout, cluster, opts, &held, stage_seconds, stage_layers)?;
    let optimizer = optimizer_seconds(layout, cluster, opts, &held)
        + weight_cast_seconds(layout, cluster, opts, &held);
    let step_seconds = slots * stage_seconds + dp_comm + optimizer;
    if !(step_seconds.is_finite() && step_seconds > 0.0) {
        return Err(Error::InvalidValue {
            field: "predicted step seconds",
            value: step_seconds,
            expected: "finite and positive (check the cluster and timer figures)",
        });
    }
    let u = utilisation(
        model,
        layout,
        cluster,
        timer,
        opts,
        tokens_per_step,
        step_seconds,
    )?;
    let (step_seconds_low, step_seconds_high) = match &cluster.system {
        Some(p) => p.band(step_seconds),
        None => (
            step_seconds / crate::system::UNVALIDATED_RATIOS.1,
            step_seconds / crate::system::UNVALIDATED_RATIOS.0,
        ),
    };
    let mf = m as f64;
    Ok(StepTime {
        step_seconds,
        tflops_per_gpu: u.tflops_per_gpu,
        mfu: u.mfu,
        mfu_at_precision_peak: u.mfu_at_precision_peak,
        tokens_per_second: tokens_per_step / step_seconds,
        num_micro_batches: m,
        stage_seconds,
        step_seconds_low,
        step_seconds_high,
        breakdown: StepBreakdown {
            gemm_seconds: mf * slowest.gemm,
            memory_bound_seconds: mf * slowest.memory,
            tp_comm_seconds: mf * slowest.tp_comm,
            p2p_seconds: mf * p2p,
            all_to_all_seconds: mf * slowest.all_to_all,
            cp_comm_seconds: mf * slowest.cp_comm,
            pipeline_bubble_seconds: (slots - mf) * stage_seconds,
            dp_comm_seconds: dp_comm,
            optimizer_seconds: optimizer,
            host_overhead_seconds: mf * host,
        },
    })
}

/// TFLOP/s per GPU and model FLOPs utilisation of a step.
struct Utilisation {
    tflops_per_gpu: f64,
    mfu: f64,
    mfu_at_precision_peak: f64,
}

/// TFLOP/s per GPU (every matmul with the layout's recomputation, Megatron-LM eq. 3 for
/// GPT-style models), MFU (model matmul FLOPs without recomputation over the dense peak of
/// [`StepOptions::dtype`]) and MFU against the peak of the GEMMs' precision, which must not
/// exceed 1.
fn utilisation(
    model: &Transformer,
    layout: &ParallelLayout,
    cluster: &Cluster,
    timer: &dyn GemmTimer,
    opts: &StepOptions,
    tokens_per_step: f64,
    step_seconds: f64,
) -> Result<Utilisation> {
    let gpus = layout.gpus()? as f64;
    let eq3 = flops::matmul_flops_per_token(
        model,
        &FlopsConvention::megatron(layout.seq_len, layout.recompute),
    )?
    .training_flops()
        * tokens_per_step;
    let model_flops = flops::matmul_flops_per_token(
        model,
        &FlopsConvention::megatron(layout.seq_len, Recompute::None),
    )?
    .model_flops()
        * tokens_per_step;
    let peak = cluster.gpu.peak_flops_per_s(opts.dtype)?;
    let gemm_peak = cluster.gpu.peak_flops_per_s(opts.gemm_dtype())?;
    let mfu_at_precision_peak = model_flops / (step_seconds * gpus * gemm_peak);
    if mfu_at_precision_peak > 1.0 {
        return Err(Error::Inconsistent {
            rule: "a step cannot run the model's matmuls faster than the GPU's peak",
            detail: format!(
                "{} predicts {:.0}% of {}'s {} peak; are its timings for another GPU?",
                timer.describe(),
                mfu_at_precision_peak * 100.0,
                cluster.gpu.name,
                opts.gemm_dtype()
            ),
        });
    }
    Ok(Utilisation {
        tflops_per_gpu: eq3 / step_seconds / gpus / 1e12,
        mfu: model_flops / (step_seconds * gpus * peak),
        mfu_at_precision_peak,
    })
}

/// Step 0 (the model and the layout were checked together by [`Placement::new`]): the
/// cluster obeys its rules, the GPU has the precisions, and the tokens of a step and of a
/// micro-batch fit `u64`. Returns the tokens per step.
fn check_run(layout: &ParallelLayout, cluster: &Cluster, opts: &StepOptions) -> Result<f64> {
    cluster.validate()?;
    cluster.gpu.peak_flops_per_s(opts.dtype)?;
    cluster.gpu.check_precision(opts.memory.gemm_precision)?;
    opts.memory.precision.check_zero(layout.zero)?;
    crate::error::mul(layout.seq_len, layout.micro_batch, "tokens per micro-batch")?;
    Ok(crate::error::mul(layout.global_batch, layout.seq_len, "tokens per step")? as f64)
}
