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
//!   runs a data-gradient and a weight-gradient GEMM for each ([`Gemm::data_grad`],
//!   [`Gemm::weight_grad`]); full recomputation runs the forward again, selective only the
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
//! * **Optimizer**: Adam touches 30 bytes per local parameter (read the fp32 gradient, read and
//!   write fp32 master weights and both moments, write the bf16 weights).
//!
//! Reported TFLOPs count every matmul with the layout's recomputation
//! ([`crate::flops::matmul_flops_per_token`] under [`FlopsConvention::megatron`], which equals
//! Megatron-LM eq. 3, [`crate::flops::megatron_step_flops`], for GPT-style models),
//! MFU the per-matmul model FLOPs without recomputation over the dense peak of
//! [`StepOptions::dtype`] (the 16-bit peak, also when the GEMMs run in FP8).

use super::analytical::ATTAINABLE_HBM_FRACTION;
use super::{Dtype, Gemm, GemmTimer, GpuSpec};
use crate::error::{Error, Result, positive_f64};
use crate::flops::{self, FlopsConvention, Recompute};
use crate::memory::{AttentionKernel, MemoryOptions};
use crate::model::{MlpKind, Transformer};
use crate::parallel::{ParallelLayout, ZeroStage};
use serde::{Deserialize, Serialize};

/// The cluster a step runs on. Deserializing validates ([`Cluster::validate`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ClusterFields")]
pub struct Cluster {
    /// GPU model.
    pub gpu: GpuSpec,
    /// GPUs per node (tensor parallelism stays inside a node up to this).
    pub gpus_per_node: u64,
    /// Per-direction NVLink bandwidth per GPU, bytes/s.
    pub intra_node_bytes_per_s: f64,
    /// Network bandwidth of one node (all NICs), bytes/s.
    pub inter_node_bytes_per_s: f64,
    /// Fraction of link bandwidth a collective achieves (NCCL bus bandwidth / link rate).
    pub collective_efficiency: f64,
    /// Fixed latency per collective or send, seconds.
    pub collective_latency_seconds: f64,
    /// Multiplier on compute throughput for the software stack, in `(0, 1]` (1.0 = as fast as
    /// the timer and HBM model say; calibrate with [`calibrate_software_efficiency`]).
    pub software_efficiency: f64,
    /// Overlap the data-parallel gradient reduction with the last backward pass
    /// (Megatron-Core `--overlap-grad-reduce`).
    pub overlap_dp_comm: bool,
    /// Overlap the distributed optimizer's weight all-gather with the next forward pass
    /// (Megatron-Core `--overlap-param-gather`).
    #[serde(default)]
    pub overlap_param_gather: bool,
    /// Overlap the mixture-of-experts all-to-all with the shared experts' GEMMs
    /// (Megatron-Core `--moe-shared-expert-overlap`).
    #[serde(default)]
    pub overlap_shared_experts: bool,
}

/// The fields of a [`Cluster`] as they arrive from serde, before validation.
#[derive(Deserialize)]
struct ClusterFields {
    gpu: GpuSpec,
    gpus_per_node: u64,
    intra_node_bytes_per_s: f64,
    inter_node_bytes_per_s: f64,
    collective_efficiency: f64,
    collective_latency_seconds: f64,
    software_efficiency: f64,
    overlap_dp_comm: bool,
    #[serde(default)]
    overlap_param_gather: bool,
    #[serde(default)]
    overlap_shared_experts: bool,
}

impl TryFrom<ClusterFields> for Cluster {
    type Error = Error;

    fn try_from(f: ClusterFields) -> Result<Cluster> {
        let c = Cluster {
            gpu: f.gpu,
            gpus_per_node: f.gpus_per_node,
            intra_node_bytes_per_s: f.intra_node_bytes_per_s,
            inter_node_bytes_per_s: f.inter_node_bytes_per_s,
            collective_efficiency: f.collective_efficiency,
            collective_latency_seconds: f.collective_latency_seconds,
            software_efficiency: f.software_efficiency,
            overlap_dp_comm: f.overlap_dp_comm,
            overlap_param_gather: f.overlap_param_gather,
            overlap_shared_experts: f.overlap_shared_experts,
        };
        c.validate()?;
        Ok(c)
    }
}

impl Cluster {
    /// A Selene-class DGX A100 cluster running well-tuned Megatron-LM (Narayanan et al. 2021
    /// §5: 8 A100 80GB per node on NVLink 3 — 600 GB/s, i.e. 300 GB/s each way — and 8 × 200
    /// Gb/s HDR InfiniBand per node). NCCL reaches ~77% of the NVLink rate in all-reduce
    /// (≈230 GB/s bus bandwidth on DGX A100 in nccl-tests); 10 µs per collective.
    pub fn selene() -> Cluster {
        Cluster::reference_node(GpuSpec::a100_80gb())
    }

    /// The vendor's reference node of `gpu` ([`GpuSpec::node_gpus`] GPUs and
    /// [`GpuSpec::node_network_bytes_per_s`] of network per node), other constants as
    /// [`Cluster::dgx`].
    ///
    /// ```
    /// use lmshape::hardware::{GpuSpec, step::Cluster};
    /// let c = Cluster::reference_node(GpuSpec::h100_sxm());
    /// assert_eq!(c.inter_node_bytes_per_s, 8.0 * 400e9 / 8.0); // DGX H100: 8 × 400 Gb/s
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    pub fn reference_node(gpu: GpuSpec) -> Cluster {
        let network = gpu.node_network_bytes_per_s;
        let gpus_per_node = gpu.node_gpus;
        Cluster {
            gpus_per_node,
            ..Cluster::dgx(gpu, network)
        }
    }

    /// A DGX-style node of `gpu` with `inter_node_bytes_per_s` of network per node, other
    /// constants as [`Cluster::selene`].
    pub fn dgx(gpu: GpuSpec, inter_node_bytes_per_s: f64) -> Cluster {
        Cluster {
            intra_node_bytes_per_s: gpu.nvlink_bytes_per_s / 2.0,
            gpu,
            gpus_per_node: 8,
            inter_node_bytes_per_s,
            collective_efficiency: 0.77,
            collective_latency_seconds: 10e-6,
            software_efficiency: 1.0,
            overlap_dp_comm: false,
            overlap_param_gather: false,
            overlap_shared_experts: false,
        }
    }

    /// Jean Zay's A100 partition as BigScience used it for BLOOM
    /// (`bloom_throughput_tp8.json`: 8 A100 80GB per node on NVLink, 4 × 100 Gb/s Omni-Path per
    /// node), uncalibrated.
    pub fn jean_zay() -> Cluster {
        Cluster::dgx(GpuSpec::a100_80gb(), 4.0 * 100e9 / 8.0)
    }

    /// Check that every figure is physical: bandwidths between 1 kB/s and 1 PB/s, collective
    /// efficiency in `[0.01, 1]`, software efficiency in `[0.01, 1]` (software cannot make the
    /// hardware faster than the timer's kernels), latency between 0 and 1 s, at least one GPU
    /// per node. Values outside give impossible step times, so they are errors.
    pub fn validate(&self) -> Result<()> {
        use crate::error::in_range_f64;
        const BANDWIDTH: &str = "a bandwidth between 1e3 and 1e15 bytes/s";
        crate::error::positive(self.gpus_per_node, "gpus_per_node")?;
        in_range_f64(
            self.intra_node_bytes_per_s,
            1e3,
            1e15,
            "intra_node_bytes_per_s",
            BANDWIDTH,
        )?;
        in_range_f64(
            self.inter_node_bytes_per_s,
            1e3,
            1e15,
            "inter_node_bytes_per_s",
            BANDWIDTH,
        )?;
        in_range_f64(
            self.gpu.memory_bytes_per_s,
            1e3,
            1e15,
            "memory_bytes_per_s",
            BANDWIDTH,
        )?;
        in_range_f64(
            self.collective_efficiency,
            0.01,
            1.0,
            "collective_efficiency",
            "in [0.01, 1]",
        )?;
        in_range_f64(
            self.software_efficiency,
            0.01,
            1.0,
            "software_efficiency",
            "in [0.01, 1]",
        )?;
        in_range_f64(
            self.collective_latency_seconds,
            0.0,
            1.0,
            "collective_latency_seconds",
            "between 0 and 1 second",
        )?;
        Ok(())
    }

    /// Bandwidth available to one GPU in a collective over a group that stays inside a node
    /// (`intra`) or spans nodes (the node's network shared by its GPUs).
    fn link_bytes_per_s(&self, intra: bool) -> f64 {
        let raw = if intra {
            self.intra_node_bytes_per_s
        } else {
            self.inter_node_bytes_per_s / self.gpus_per_node as f64
        };
        raw * self.collective_efficiency
    }

    /// How many of a group's `ranks` GPUs, `stride` apart in the global rank order, share one
    /// node (or NVLink domain): `min(ranks, node / stride)`, at least 1. The group stays on
    /// NVLink when this is `ranks`.
    ///
    /// ```
    /// use lmshape::hardware::step::Cluster;
    /// let c = Cluster::selene(); // 8 GPUs per node
    /// assert_eq!(c.ranks_per_node(16, 2), 4); // data parallelism beside tp 2
    /// assert_eq!(c.ranks_per_node(4, 16), 1); // a group wider apart than a node
    /// ```
    pub fn ranks_per_node(&self, ranks: u64, stride: u64) -> u64 {
        (self.gpus_per_node / stride.max(1)).clamp(1, ranks.max(1))
    }

    /// Seconds of a ring collective over `ranks` GPUs whose ranks are `stride` apart in the
    /// global rank order (tensor parallelism innermost, then data parallelism: Megatron-Core's
    /// `tp-cp-ep-dp-pp`), each GPU holding `bytes`: `passes = 2` for an all-reduce
    /// (reduce-scatter then all-gather, `2(n−1)/n` of the buffer; Patarasuk & Yuan 2009), `1`
    /// for a reduce-scatter or an all-gather. `g = min(n, node/stride)` of the ranks share a
    /// node (an NVLink domain). Within a node the buffer moves over NVLink; across nodes NCCL
    /// runs one ring per NIC, so the group's `g` GPUs on a node share `g` NICs' worth of the
    /// node's network (the other groups on the node use the rest), and the slower of the two
    /// links bounds the pipelined ring: `passes · max((g−1)/g · B / nvlink, (n−1)/n · B /
    /// (g · nic))`, at the collective efficiency, plus the latency.
    ///
    /// ```
    /// use lmshape::hardware::{GpuSpec, step::Cluster};
    /// let c = Cluster::reference_node(GpuSpec::h100_sxm()); // 8 GPUs, 8 × 400 Gb/s
    /// // 16 ranks, one per node (tp 8 inside): each moves 15/16 of 1 GB over its 50 GB/s NIC.
    /// let one = c.ring_seconds(2.0, 1e9, 16, 8) - c.collective_latency_seconds;
    /// assert!((one - 2.0 * 15.0 / 16.0 * 1e9 / (50e9 * c.collective_efficiency)).abs() < 1e-12);
    /// // 128 ranks, eight per node: the eight share the node's eight NICs.
    /// let eight = c.ring_seconds(2.0, 1e9, 128, 1) - c.collective_latency_seconds;
    /// assert!(eight < one / 7.0);
    /// ```
    pub fn ring_seconds(&self, passes: f64, bytes: f64, ranks: u64, stride: u64) -> f64 {
        if ranks <= 1 {
            return 0.0;
        }
        let n = ranks as f64;
        let g = self.ranks_per_node(ranks, stride);
        let intra = if g > 1 {
            (g - 1) as f64 / g as f64 * bytes / self.link_bytes_per_s(true)
        } else {
            0.0
        };
        let inter = if g < ranks {
            (n - 1.0) / n * bytes / (g as f64 * self.link_bytes_per_s(false))
        } else {
            0.0
        };
        passes * intra.max(inter) + self.collective_latency_seconds
    }
}

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

    fn dropout(&self) -> bool {
        self.memory.dropout
    }

    fn flash_attention(&self) -> bool {
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
}

/// The predicted step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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
}

impl StepTime {
    /// Days to train on `tokens` at this speed.
    ///
    /// ```
    /// # use lmshape::hardware::step::{StepTime, StepBreakdown};
    /// let s = StepTime { step_seconds: 1.0, tflops_per_gpu: 0.0, mfu: 0.0, tokens_per_second: 86400.0,
    ///     num_micro_batches: 1, stage_seconds: 1.0, breakdown: StepBreakdown::default() };
    /// assert_eq!(s.days_for_tokens(86400.0 * 86400.0), 1.0);
    /// ```
    pub fn days_for_tokens(&self, tokens: f64) -> f64 {
        tokens / self.tokens_per_second / 86_400.0
    }
}

/// Per-micro-batch times of one layer on one rank (forward, backward and recomputation).
#[derive(Debug, Clone, Copy, Default)]
struct LayerTimes {
    gemm: f64,
    memory: f64,
    tp_comm: f64,
    all_to_all: f64,
    cp_comm: f64,
}

/// One GEMM's seconds from the timer, checked: finite, positive, and no faster than the GPU's
/// dense peak for the GEMM's dtype (a table measured on a faster GPU, or a broken timer, would
/// otherwise give utilisations above 100%).
fn timed(timer: &dyn GemmTimer, g: &Gemm, gpu: &GpuSpec) -> Result<f64> {
    let s = timer.gemm_seconds(g)?;
    let shape = || {
        format!(
            "the {} GEMM m={} n={} k={} batch={}",
            g.dtype, g.m, g.n, g.k, g.batch
        )
    };
    if !(s.is_finite() && s > 0.0) {
        return Err(Error::Gpu(format!(
            "timer returned {} seconds for {}",
            crate::error::readable(s),
            shape()
        )));
    }
    let peak = gpu.peak_flops_per_s(g.dtype)?;
    if g.flops() / s > peak * (1.0 + 1e-9) {
        return Err(Error::Inconsistent {
            rule: "a GEMM cannot run faster than the GPU's dense peak",
            detail: format!(
                "{} times {} at {:.0} TFLOP/s, above {}'s {} peak of {:.0}; are its timings for another GPU?",
                timer.describe(),
                shape(),
                g.flops() / s / 1e12,
                gpu.name,
                g.dtype,
                peak / 1e12
            ),
        });
    }
    Ok(s)
}

/// What differs between the layers of one model for timing: the feed-forward block (dense or
/// mixture of experts) and the attention span (global or sliding window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LayerVariant {
    moe: bool,
    local: bool,
}

impl LayerVariant {
    fn of(model: &Transformer, i: u64) -> LayerVariant {
        LayerVariant {
            moe: model.moe.is_some_and(|m| m.is_moe_layer(i)),
            local: model.local_attention.is_some_and(|w| w.is_local_layer(i)),
        }
    }

    fn index(self) -> usize {
        usize::from(self.moe) * 2 + usize::from(self.local)
    }
}

/// What a GEMM of a layer computes, for how it is timed and cast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GemmRole {
    /// A linear layer of attention or a dense MLP (in FP8 when the GEMMs run in FP8).
    Linear,
    /// The attention core: scores or attention×V (16 bits; rerun by selective recomputation).
    AttentionCore,
    /// The mixture-of-experts router (16 bits).
    Router,
    /// Routed experts, batched over the rank's local experts (grouped GEMM).
    Expert,
    /// Shared experts (a dense MLP every token uses).
    SharedExpert,
}

/// The forward GEMMs of one layer for one micro-batch on one rank, in order (at most twelve:
/// latent attention's five projections and two core GEMMs, a router, two expert and two
/// shared-expert GEMMs). Fixed-size, so timing a layer allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerGemms {
    items: [(Gemm, GemmRole); 12],
    len: usize,
}

impl LayerGemms {
    fn new() -> LayerGemms {
        LayerGemms {
            items: [(Gemm::bf16(1, 1, 1), GemmRole::Linear); 12],
            len: 0,
        }
    }

    fn push(&mut self, gemm: Gemm, role: GemmRole) -> Result<()> {
        gemm.validate()?;
        let slot = self.items.get_mut(self.len).ok_or(Error::Overflow {
            what: "GEMMs of a layer",
        })?;
        *slot = (gemm, role);
        self.len += 1;
        Ok(())
    }

    /// The GEMMs with their roles, in forward order.
    pub fn as_slice(&self) -> &[(Gemm, GemmRole)] {
        &self.items[..self.len]
    }
}

/// Keys each query's attention GEMMs cover: the sequence, or the window of a sliding-window
/// layer; with FlashAttention the causal mask's skipped blocks leave half the sequence
/// (FlashAttention-2, Dao 2023 §3.1: blocks above the diagonal are not computed), and
/// `w − w²/(2s)` of a window `w < s` (the band's average, as
/// [`crate::flops::matmul_flops_per_token`] counts it). Standard attention computes every score
/// and masks them.
fn attended_keys(
    model: &Transformer,
    layout: &ParallelLayout,
    opts: &StepOptions,
    variant: LayerVariant,
) -> u64 {
    let s = layout.seq_len;
    let window = match model.local_attention {
        Some(w) if variant.local => w.window.min(s),
        _ => s,
    };
    if !opts.flash_attention() {
        return window;
    }
    let (w, sf) = (window as f64, s as f64);
    ((w - w * w / (2.0 * sf)).ceil() as u64).max(1)
}

/// The forward GEMMs of layer `layer` (from 0) of `model` under `layout`, for one micro-batch
/// on one rank (see the module docs and [`GemmRole`]).
///
/// ```
/// use lmshape::hardware::step::{self, GemmRole, StepOptions};
/// use lmshape::{presets, ParallelLayout};
/// let m = presets::by_name("bloom-176b")?;
/// let layout = ParallelLayout { tp: 4, micro_batch: 2, global_batch: 2, ..ParallelLayout::default() };
/// let g = step::layer_gemms(&m, &layout, &StepOptions::default(), 0)?;
/// let (qkv, _) = g.as_slice()[0];
/// assert_eq!((qkv.m, qkv.n, qkv.k), (4096, 3 * 14336 / 4, 14336));
/// let (scores, role) = g.as_slice()[1];
/// assert_eq!((scores.batch, scores.k, role), (2 * 112 / 4, 128, GemmRole::AttentionCore));
/// # Ok::<(), lmshape::Error>(())
/// ```
pub fn layer_gemms(
    model: &Transformer,
    layout: &ParallelLayout,
    opts: &StepOptions,
    layer: u64,
) -> Result<LayerGemms> {
    model.validate()?;
    layout.validate(model)?;
    Ok(variant_gemms(model, layout, opts, LayerVariant::of(model, layer))?.0)
}

/// The GEMMs of a layer of `variant` and, for a mixture-of-experts layer, its expert batch.
fn variant_gemms(
    model: &Transformer,
    layout: &ParallelLayout,
    opts: &StepOptions,
    variant: LayerVariant,
) -> Result<(LayerGemms, Option<crate::parallel::ExpertBatch>)> {
    let t = layout.tp;
    crate::error::positive(t, "tp")?;
    let local = layout.local_seq_len();
    let tokens = crate::error::mul(local, layout.micro_batch, "tokens per micro-batch")?;
    let (s, b) = (layout.seq_len, layout.micro_batch);
    let d = model.hidden_size;
    let heads = model.num_heads / t;
    let linear = opts.gemm_dtype();
    // Context parallelism: ring attention computes the rank's `s/cp` queries against every
    // key; all-to-all attention the whole sequence's queries for `1/cp` of the heads.
    let (queries, core_heads) = match layout.cp_comm {
        crate::parallel::CpComm::A2a if layout.cp > 1 => (s, heads / layout.cp),
        _ => (local, heads),
    };
    let g = |m: u64, n: u64, k: u64, batch: u64, dtype: Dtype| Gemm {
        m,
        n,
        k,
        batch,
        dtype,
    };
    let ctx = attended_keys(model, layout, opts, variant);
    let mut list = LayerGemms::new();
    use GemmRole::{AttentionCore, Expert, Linear, Router, SharedExpert};
    // Attention: projections, core, output.
    const W: &str = "a layer's GEMM shapes";
    let (mul, add) = (
        |a: u64, b: u64| crate::error::mul(a, b, W),
        |a: u64, b: u64| crate::error::add(a, b, W),
    );
    let (q_width, qk_dim, v_dim) = match &model.attention {
        crate::model::Attention::Standard => {
            let kv = crate::parallel::kv_heads_per_rank(model.num_kv_heads, t)?;
            let hd = model.head_dim;
            let q = mul(heads, hd)?;
            let n = add(q, mul(mul(kv, hd)?, 2)?)?;
            list.push(g(tokens, n, d, 1, linear), Linear)?;
            (q, hd, hd)
        }
        crate::model::Attention::MultiLatent(mla) => {
            let qk = add(mla.qk_nope_head_dim, mla.qk_rope_head_dim)?;
            match mla.q_lora_rank {
                Some(r) => {
                    list.push(g(tokens, r, d, 1, linear), Linear)?;
                    list.push(g(tokens, mul(heads, qk)?, r, 1, linear), Linear)?;
                }
                None => list.push(g(tokens, mul(heads, qk)?, d, 1, linear), Linear)?,
            }
            let latent = mla.kv_lora_rank;
            list.push(
                g(tokens, add(latent, mla.qk_rope_head_dim)?, d, 1, linear),
                Linear,
            )?;
            let kv_up = mul(heads, add(mla.qk_nope_head_dim, mla.v_head_dim)?)?;
            list.push(g(tokens, kv_up, latent, 1, linear), Linear)?;
            (mul(heads, mla.v_head_dim)?, qk, mla.v_head_dim)
        }
    };
    // Attention's score and value GEMMs stay in 16 bits (Transformer Engine casts only the
    // linear layers).
    let attn_batch = mul(b, core_heads)?;
    list.push(
        g(queries, ctx, qk_dim, attn_batch, opts.dtype),
        AttentionCore,
    )?;
    list.push(
        g(queries, v_dim, ctx, attn_batch, opts.dtype),
        AttentionCore,
    )?;
    list.push(g(tokens, d, q_width, 1, linear), Linear)?;
    // Feed-forward.
    let gated = if model.arch.mlp == MlpKind::Gated {
        2
    } else {
        1
    };
    match model.moe {
        Some(moe) if variant.moe => {
            let x = crate::parallel::expert_batch(&moe, layout, opts.memory.routing, tokens)?;
            list.push(
                g(x.routed_tokens, moe.num_experts, d, 1, opts.dtype),
                Router,
            )?;
            let (batch, te) = (x.local_experts, x.tokens_per_expert);
            list.push(g(te, mul(gated, x.width)?, d, batch, linear), Expert)?;
            list.push(g(te, d, x.width, batch, linear), Expert)?;
            let fs = moe.shared_ffn_size / t;
            if fs > 0 {
                list.push(g(tokens, mul(gated, fs)?, d, 1, linear), SharedExpert)?;
                list.push(g(tokens, d, fs, 1, linear), SharedExpert)?;
            }
            Ok((list, Some(x)))
        }
        _ => {
            let f = model.ffn_size / t;
            list.push(g(tokens, mul(gated, f)?, d, 1, linear), Linear)?;
            list.push(g(tokens, d, f, 1, linear), Linear)?;
            Ok((list, None))
        }
    }
}

/// One layer of `variant` for one micro-batch on one rank (see the module docs for the dense
/// terms). Beyond them:
///
/// * **Latent attention** (DeepSeek-V2 §2.1; Megatron-Core's `MLASelfAttention`): the
///   down-projections `q_a` (or a full `q`), `kv_a` are replicated over `tp`, the
///   up-projections `q_b`, `kv_b` and the output split by heads; scores at width
///   `qk_nope + qk_rope`, attention×V at `v_head_dim`.
/// * **Sliding windows**: a local layer's scores and attention×V cover `min(w, s)` keys per
///   query (FlashAttention-2's windowed kernel skips the blocks outside the band).
/// * **Mixture of experts** ([`crate::parallel::ExpertBatch`]): the router `[T_r × h]·[h × E]`, the grouped
///   expert GEMMs batched over the local experts, the shared experts as a dense MLP split over
///   `tp`; memory-bound permutation and un-permutation (`T_r·h` read and `T_r·k·h` written, and
///   back), the router's fp32 softmax, the experts' activation; the expert block's
///   tensor-parallel collective over `etp` in place of the MLP's over `tp`; four all-to-alls
///   (dispatch and combine, forward and backward; two more under full recomputation) of
///   `T_r·k·h` elements, of which `(ep − 1)/ep` leave the GPU, optionally overlapped with the
///   shared experts ([`Cluster::overlap_shared_experts`]).
fn variant_times(
    model: &Transformer,
    layout: &ParallelLayout,
    cluster: &Cluster,
    timer: &dyn GemmTimer,
    opts: &StepOptions,
    variant: LayerVariant,
) -> Result<LayerTimes> {
    let (list, experts) = variant_gemms(model, layout, opts, variant)?;
    let (mut fwd, mut bwd, mut core_fwd, mut linear_inputs) = (0.0, 0.0, 0.0, 0.0);
    let mut shared_fwd = 0.0;
    for (gemm, role) in list.as_slice() {
        let f = timed(timer, gemm, &cluster.gpu)?;
        fwd += f;
        bwd += timed(timer, &gemm.data_grad(), &cluster.gpu)?
            + timed(timer, &gemm.weight_grad(), &cluster.gpu)?;
        match role {
            GemmRole::AttentionCore => core_fwd += f,
            GemmRole::Linear | GemmRole::Expert | GemmRole::SharedExpert => {
                linear_inputs += gemm.m as f64 * gemm.k as f64 * gemm.batch as f64;
                if *role == GemmRole::SharedExpert {
                    shared_fwd += f;
                }
            }
            GemmRole::Router => {}
        }
    }
    let t = layout.tp;
    let (s, b) = (layout.local_seq_len(), layout.micro_batch);
    let d = model.hidden_size;
    let heads = model.num_heads / t;
    let ctx = attended_keys(model, layout, opts, variant);
    let tokens = s as f64 * b as f64;
    let e = opts.dtype.bytes() as f64;
    let act_inputs = if model.arch.mlp == MlpKind::Gated {
        2.0
    } else {
        1.0
    };
    let (mlp_act_bytes, moe_bytes, a2a_elements, ff_tp) = match (model.moe, experts) {
        (Some(moe), Some(x)) => {
            let fs = (moe.shared_ffn_size / t) as f64;
            let held = x.local_experts as f64 * x.tokens_per_expert as f64;
            let routed = x.routed_tokens as f64;
            let (h, k) = (d as f64, moe.top_k as f64);
            let act = (act_inputs + 1.0) * e * (held * x.width as f64 + tokens * fs);
            let permute = 2.0 * e * (routed * h + held * h);
            let router = 2.0 * 4.0 * routed * moe.num_experts as f64;
            (act, permute + router, routed * k * h, layout.expert_tp())
        }
        _ => {
            let f = (model.ffn_size / t) as f64;
            ((act_inputs + 1.0) * e * tokens * f, 0.0, 0.0, t)
        }
    };
    // Memory-bound bytes of the forward pass.
    let tf = t as f64;
    let (sf, bf, h) = (s as f64, b as f64, d as f64);
    let sbh = if layout.sequence_parallel {
        sf * bf * h / tf
    } else {
        sf * bf * h
    };
    let norms = model.arch.block.norms_per_layer() as f64;
    let mask = if opts.dropout() { 1.0 } else { 0.0 };
    let scores = heads as f64 * sf * ctx as f64 * bf;
    let softmax = if opts.flash_attention() {
        0.0
    } else {
        2.0 * e * scores
            + if opts.dropout() {
                (2.0 * e + 1.0) * scores
            } else {
                0.0
            }
    };
    let dense_bytes =
        norms * 2.0 * e * sbh + 2.0 * (3.0 * e + mask) * sbh + mlp_act_bytes + moe_bytes;
    // FP8: each linear GEMM's input is cast (read 16 bits, write 8 bits and its scale; current
    // scaling reads it once more for its amax). The
    // backward casts the output gradients and transposes the inputs for the weight gradients:
    // twice as many bytes again (an assumption; Transformer Engine fuses some casts into norms
    // and activations).
    let precision = opts.memory.gemm_precision;
    let cast = precision.cast_bytes();
    let cast_fwd = if cast > 0.0 {
        (e + cast + precision.scale_pass_bytes(e)) * linear_inputs
    } else {
        0.0
    };
    let bw = cluster.gpu.memory_bytes_per_s * ATTAINABLE_HBM_FRACTION;
    let mem_fwd = (dense_bytes + softmax + cast_fwd) / bw;
    let mem_core = softmax / bw;
    let (re_gemm, re_mem, full) = match layout.recompute {
        Recompute::None => (0.0, 0.0, false),
        Recompute::Selective => (core_fwd, mem_core, false),
        Recompute::Full => (fwd, mem_fwd, true),
    };
    let passes = if full { 3.0 } else { 2.0 };
    let ar = |ranks: u64| cluster.ring_seconds(2.0, sf * bf * h * e, ranks, 1);
    let a2a = if a2a_elements > 0.0 {
        // Dispatch and combine, per pass. With the overlap they run beside the shared experts'
        // GEMMs of the same pass (backward: twice the forward's work) and only the excess
        // shows (Megatron-Core `--moe-shared-expert-overlap`).
        let per_pass = 2.0 * all_to_all_seconds(cluster, layout, a2a_elements * e);
        let shared = if cluster.overlap_shared_experts {
            shared_fwd
        } else {
            0.0
        };
        (passes - 1.0) * (per_pass - shared).max(0.0) + (per_pass - 2.0 * shared).max(0.0)
    } else {
        0.0
    };
    let cp_comm = context_parallel_seconds(model, layout, cluster, opts, core_fwd, passes)?;
    Ok(LayerTimes {
        gemm: fwd + bwd + re_gemm,
        memory: 3.0 * mem_fwd + re_mem,
        tp_comm: passes * (ar(t) + ar(ff_tp)),
        all_to_all: a2a,
        cp_comm,
    })
}

/// Exposed context-parallel communication of one layer for one micro-batch (`passes` = 2
/// forward-equivalents, 3 with full recomputation). The group's ranks are `tp` apart, on
/// NVLink when the group fits a node ([`Cluster::ranks_per_node`]).
///
/// * **Ring** ([`crate::parallel::CpComm::P2p`]; Liu et al. 2023): `cp − 1` sends of the
///   rank's key/value chunk (`s/cp · b` tokens of `2·kv·hd/tp`, or with latent attention the
///   up-projected `H/tp·(d_qk + d_v)`) per forward, hidden behind the attention of the chunk in
///   hand; the backward moves keys, values and their gradients, twice the bytes behind twice
///   the work. Only what exceeds the attention core is exposed.
/// * **All-to-all** ([`crate::parallel::CpComm::A2a`]; Jacobs et al. 2023 §3): q, k, v in and
///   the output back, `(cp − 1)/cp` of `s/cp · b · (2q + 2k)` elements, per forward and twice
///   per backward, not hidden.
fn context_parallel_seconds(
    model: &Transformer,
    layout: &ParallelLayout,
    cluster: &Cluster,
    opts: &StepOptions,
    core_fwd: f64,
    passes: f64,
) -> Result<f64> {
    let cp = layout.cp;
    if cp <= 1 {
        return Ok(0.0);
    }
    let t = layout.tp;
    let e = opts.dtype.bytes() as f64;
    let tokens = (layout.local_seq_len() * layout.micro_batch) as f64;
    let heads = (model.num_heads / t) as f64;
    let (q_width, kv_width) = match &model.attention {
        crate::model::Attention::Standard => {
            let kv = crate::parallel::kv_heads_per_rank(model.num_kv_heads, t)? as f64;
            let hd = model.head_dim as f64;
            (heads * hd, 2.0 * kv * hd)
        }
        crate::model::Attention::MultiLatent(mla) => (
            heads * (mla.qk_nope_head_dim + mla.qk_rope_head_dim) as f64,
            heads * (mla.qk_nope_head_dim + mla.qk_rope_head_dim + mla.v_head_dim) as f64,
        ),
    };
    let link = cluster.link_bytes_per_s(cluster.ranks_per_node(cp, t) == cp);
    let lat = cluster.collective_latency_seconds;
    let c = cp as f64;
    Ok(match layout.cp_comm {
        crate::parallel::CpComm::P2p => {
            let fwd = (c - 1.0) * (tokens * kv_width * e / link + lat);
            // Forward passes hide behind the forward core, the backward behind twice it.
            (passes - 1.0) * (fwd - core_fwd).max(0.0) + 2.0 * (fwd - core_fwd).max(0.0)
        }
        crate::parallel::CpComm::A2a => {
            let fwd = (c - 1.0) / c * tokens * (2.0 * q_width + kv_width) * e / link + 4.0 * lat;
            (passes - 1.0) * fwd + 2.0 * fwd
        }
    })
}

/// Seconds of one all-to-all in which each GPU of the expert-parallel group sends `bytes` split
/// evenly over the `ep` ranks (its own share stays). The group's ranks are `etp` apart
/// (Megatron-Core orders expert tensor parallelism innermost), so `min(ep, node/etp)` of them
/// share a node (an NVLink domain): the shares to those move over NVLink, the rest over the
/// node's network, both at the collective efficiency, whichever takes longer.
fn all_to_all_seconds(cluster: &Cluster, layout: &ParallelLayout, bytes: f64) -> f64 {
    let ep = layout.ep;
    if ep <= 1 {
        return 0.0;
    }
    let in_node = cluster.ranks_per_node(ep, layout.expert_tp());
    let share = bytes / ep as f64;
    let nvlink = share * (in_node - 1) as f64 / cluster.link_bytes_per_s(true);
    let network = share * (ep - in_node) as f64 / cluster.link_bytes_per_s(false);
    nvlink.max(network) + cluster.collective_latency_seconds
}

/// Predict one training step of `model` under `layout` on `cluster`, timing GEMMs with
/// `timer`. The layout is validated first.
///
/// ```
/// use lmshape::hardware::{AnalyticalTimer, step::{self, Cluster, StepOptions}};
/// use lmshape::{presets, ParallelLayout, Recompute};
/// let cluster = Cluster::selene();
/// let timer = AnalyticalTimer::new(cluster.gpu.clone());
/// let m = presets::by_name("gpt3-175b")?;
/// let layout = ParallelLayout { tp: 8, pp: 8, dp: 16, micro_batch: 1, global_batch: 1536,
///     recompute: Recompute::Full, ..ParallelLayout::default() };
/// let s = step::step_time(&m, &layout, &cluster, &timer, &StepOptions::default())?;
/// assert!(s.tflops_per_gpu > 80.0 && s.tflops_per_gpu < 250.0);
/// # Ok::<(), lmshape::Error>(())
/// ```
pub fn step_time(
    model: &Transformer,
    layout: &ParallelLayout,
    cluster: &Cluster,
    timer: &dyn GemmTimer,
    opts: &StepOptions,
) -> Result<StepTime> {
    let tokens_per_step = validate_inputs(model, layout, cluster, opts)?;
    let ends = end_times(model, layout, cluster, timer, opts)?;
    let slowest = slowest_stage(model, layout, cluster, timer, opts, &ends)?;
    let p2p = p2p_seconds(model, layout, cluster, opts);
    let stage_seconds = slowest.total() + p2p;
    let m = layout.num_micro_batches()?;
    let slots = pipeline_slots(layout, m);
    let peak = crate::memory::training_memory(model, layout, &opts.memory)?.peak;
    let held = HeldParams {
        dense: (peak.params_on_rank - peak.expert_params_on_rank) as f64,
        experts: peak.expert_params_on_rank as f64,
        expert_dp: layout.expert_dp()?,
    };
    let stage_layers = layout.stage_layers(model)?.heaviest();
    let dp_comm = data_parallel_seconds(layout, cluster, opts, &held, stage_seconds, stage_layers)?;
    let optimizer = optimizer_seconds(layout, cluster, &held)
        + weight_cast_seconds(layout, cluster, opts, &held);
    let step_seconds = slots * stage_seconds + dp_comm + optimizer;
    if !(step_seconds.is_finite() && step_seconds > 0.0) {
        return Err(Error::InvalidValue {
            field: "predicted step seconds",
            value: step_seconds,
            expected: "finite and positive (check the cluster and timer figures)",
        });
    }
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
    let mfu_at_gemm_peak = model_flops / (step_seconds * gpus * gemm_peak);
    if mfu_at_gemm_peak > 1.0 {
        return Err(Error::Inconsistent {
            rule: "a step cannot run the model's matmuls faster than the GPU's peak",
            detail: format!(
                "{} predicts {:.0}% of {}'s {} peak; are its timings for another GPU?",
                timer.describe(),
                mfu_at_gemm_peak * 100.0,
                cluster.gpu.name,
                opts.gemm_dtype()
            ),
        });
    }
    let mf = m as f64;
    Ok(StepTime {
        step_seconds,
        tflops_per_gpu: eq3 / step_seconds / gpus / 1e12,
        mfu: model_flops / (step_seconds * gpus * peak),
        tokens_per_second: tokens_per_step / step_seconds,
        num_micro_batches: m,
        stage_seconds,
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
        },
    })
}

/// Step 0: the model, the layout and the cluster obey their rules, and the tokens of a step
/// and of a micro-batch fit `u64`. Returns the tokens per step.
fn validate_inputs(
    model: &Transformer,
    layout: &ParallelLayout,
    cluster: &Cluster,
    opts: &StepOptions,
) -> Result<f64> {
    model.validate()?;
    layout.validate(model)?;
    cluster.validate()?;
    cluster.gpu.peak_flops_per_s(opts.dtype)?;
    cluster.gpu.check_precision(opts.memory.gemm_precision)?;
    crate::error::mul(layout.seq_len, layout.micro_batch, "tokens per micro-batch")?;
    Ok(crate::error::mul(layout.global_batch, layout.seq_len, "tokens per step")? as f64)
}

/// Per-micro-batch times of the work outside the layers: the last stage's logits (forward
/// GEMM, its two backward GEMMs and the fp32 cross-entropy's reads and writes) and the first
/// stage's embedding gather and scatter-add.
struct EndTimes {
    logits_gemm: f64,
    logits_memory: f64,
    embedding_memory: f64,
}

fn end_times(
    model: &Transformer,
    layout: &ParallelLayout,
    cluster: &Cluster,
    timer: &dyn GemmTimer,
    opts: &StepOptions,
) -> Result<EndTimes> {
    let e = opts.dtype.bytes() as f64;
    let (s, b, h) = (
        layout.local_seq_len() as f64,
        layout.micro_batch as f64,
        model.hidden_size as f64,
    );
    let bw = cluster.gpu.memory_bytes_per_s * ATTAINABLE_HBM_FRACTION;
    let vocab_per_rank = layout.padded_vocab(model)? / layout.tp;
    let logits = Gemm {
        m: layout.local_seq_len() * layout.micro_batch,
        n: vocab_per_rank,
        k: model.embed_dim(),
        batch: 1,
        dtype: opts.dtype,
    };
    Ok(EndTimes {
        logits_gemm: timed(timer, &logits, &cluster.gpu)?
            + timed(timer, &logits.data_grad(), &cluster.gpu)?
            + timed(timer, &logits.weight_grad(), &cluster.gpu)?,
        logits_memory: 3.0 * 4.0 * s * b * vocab_per_rank as f64 * 2.0 / bw,
        embedding_memory: 3.0 * e * s * b * h / bw,
    })
}

/// One micro-batch's forward and backward on the slowest pipeline stage, by kind of work
/// (GEMM and memory-bound work after the software efficiency).
#[derive(Debug, Clone, Copy, Default)]
struct StageTimes {
    gemm: f64,
    memory: f64,
    tp_comm: f64,
    all_to_all: f64,
    cp_comm: f64,
}

impl StageTimes {
    fn total(&self) -> f64 {
        self.gemm + self.memory + self.tp_comm + self.all_to_all + self.cp_comm
    }
}

/// The slowest pipeline stage: every stage's layers summed by [`LayerVariant`] (each variant
/// timed once, when a stage first holds it), the first stage's embedding and the last stage's
/// logits added.
fn slowest_stage(
    model: &Transformer,
    layout: &ParallelLayout,
    cluster: &Cluster,
    timer: &dyn GemmTimer,
    opts: &StepOptions,
    ends: &EndTimes,
) -> Result<StageTimes> {
    let stages = layout.stage_layers(model)?;
    let uniform = model.moe.is_none() && model.local_attention.is_none();
    let mut times: [Option<LayerTimes>; 4] = [None; 4];
    let sw = cluster.software_efficiency;
    let pp = layout.pp;
    let mut slowest = StageTimes::default();
    for index in 0..pp {
        let range = stages.range(index, pp);
        let mut sum = LayerTimes::default();
        let mut add = |variant: LayerVariant, layers: u64| -> Result<()> {
            if layers == 0 {
                return Ok(());
            }
            let lt = match times[variant.index()] {
                Some(lt) => lt,
                None => {
                    let lt = variant_times(model, layout, cluster, timer, opts, variant)?;
                    times[variant.index()] = Some(lt);
                    lt
                }
            };
            let l = layers as f64;
            sum.gemm += l * lt.gemm;
            sum.memory += l * lt.memory;
            sum.tp_comm += l * lt.tp_comm;
            sum.all_to_all += l * lt.all_to_all;
            sum.cp_comm += l * lt.cp_comm;
            Ok(())
        };
        if uniform {
            add(
                LayerVariant {
                    moe: false,
                    local: false,
                },
                range.end - range.start,
            )?;
        } else {
            let mut counts = [0u64; 4];
            for i in range {
                counts[LayerVariant::of(model, i).index()] += 1;
            }
            for (idx, &n) in counts.iter().enumerate() {
                add(
                    LayerVariant {
                        moe: idx >= 2,
                        local: idx % 2 == 1,
                    },
                    n,
                )?;
            }
        }
        if index + 1 == pp {
            sum.gemm += ends.logits_gemm;
            sum.memory += ends.logits_memory;
        }
        if index == 0 {
            sum.memory += ends.embedding_memory;
        }
        let stage = StageTimes {
            gemm: sum.gemm / sw,
            memory: sum.memory / sw,
            tp_comm: sum.tp_comm,
            all_to_all: sum.all_to_all,
            cp_comm: sum.cp_comm,
        };
        if stage.total() > slowest.total() {
            slowest = stage;
        }
    }
    Ok(slowest)
}

/// Point-to-point sends per micro-batch between stages: the activation forward and its
/// gradient backward, `sbh/t` bytes with Megatron-LM's scatter/gather (Narayanan et al. 2021
/// §4.1; `s/cp` tokens under context parallelism), over NVLink when the whole pipeline group
/// sits in one node; the interleaved schedule sends at every model chunk's boundary, `v` times as often (§2.2.2: "the amount of communication
/// also increases by v").
fn p2p_seconds(
    model: &Transformer,
    layout: &ParallelLayout,
    cluster: &Cluster,
    opts: &StepOptions,
) -> f64 {
    if layout.pp == 1 {
        return 0.0;
    }
    let sbh_bytes = layout.local_seq_len() as f64
        * layout.micro_batch as f64
        * model.hidden_size as f64
        * opts.dtype.bytes() as f64;
    let bytes = sbh_bytes / layout.tp as f64;
    // Neighbouring stages are `tp · cp · dp` ranks apart (pipeline outermost).
    let stride = layout
        .tp
        .saturating_mul(layout.cp)
        .saturating_mul(layout.dp);
    let intra = cluster.ranks_per_node(layout.pp, stride) == layout.pp;
    let v = layout.virtual_stages() as f64;
    2.0 * v * (bytes / cluster.link_bytes_per_s(intra) + cluster.collective_latency_seconds)
}

/// Stage-times of a step: `m + p − 1` under 1F1B, `m + (p − 1)/v` interleaved (Narayanan et
/// al. 2021 §2.2).
fn pipeline_slots(layout: &ParallelLayout, m: u64) -> f64 {
    m as f64 + (layout.pp - 1) as f64 / layout.virtual_stages() as f64
}

/// Parameters the most loaded rank holds: the dense part (reduced and sharded over `dp`) and
/// the routed experts (over the expert-data-parallel degree).
struct HeldParams {
    dense: f64,
    experts: f64,
    expert_dp: u64,
}

impl HeldParams {
    /// Parameters of this rank's optimizer shard (ZeRO ≥ `stage` shards over the data-parallel
    /// degrees).
    fn sharded(&self, layout: &ParallelLayout, stage: ZeroStage) -> f64 {
        if layout.zero >= stage {
            self.dense / layout.weight_dp() as f64 + self.experts / self.expert_dp as f64
        } else {
            self.dense + self.experts
        }
    }
}

/// The exposed data-parallel communication of the most loaded rank: its dense parameters over
/// `dp` (ranks `tp` apart) and its routed experts over the expert-data-parallel degree (ranks
/// `ep · etp` apart), each by [`Cluster::ring_seconds`]:
///
/// * **ZeRO 0**: an all-reduce of the gradients (`grad_bytes` each).
/// * **ZeRO 1–2** (Megatron-Core's distributed optimizer, Rajbhandari et al. 2020 §5): a
///   reduce-scatter of the gradients and an all-gather of the updated weights
///   (`weight_bytes`). With [`Cluster::overlap_dp_comm`] the reduce-scatter hides behind the
///   last micro-batch's backward (two thirds of a stage-time); with
///   [`Cluster::overlap_param_gather`] the all-gather behind the first forward (one third).
/// * **ZeRO 3 / FSDP** (§5.3; Zhao et al. 2023 §3): per micro-batch the weights are gathered
///   for the forward and again for the backward and the gradients reduce-scattered, layer by
///   layer with prefetch, so the traffic hides behind the compute of the micro-batches; what
///   exceeds it is exposed, and never less than one layer's share (the first gather).
fn data_parallel_seconds(
    layout: &ParallelLayout,
    cluster: &Cluster,
    opts: &StepOptions,
    held: &HeldParams,
    stage_seconds: f64,
    stage_layers: u64,
) -> Result<f64> {
    let grad = opts.memory.precision.grad_bytes as f64;
    let weight = opts.memory.precision.weight_bytes as f64;
    let groups = [
        (held.dense, layout.weight_dp(), layout.tp),
        (
            held.experts,
            held.expert_dp,
            layout.ep.saturating_mul(layout.expert_tp()),
        ),
    ];
    let (mut grads, mut weights) = (0.0, 0.0);
    for (params, ranks, stride) in groups {
        if params <= 0.0 {
            continue;
        }
        if layout.zero == ZeroStage::None {
            grads += cluster.ring_seconds(2.0, params * grad, ranks, stride);
        } else {
            grads += cluster.ring_seconds(1.0, params * grad, ranks, stride);
            weights += cluster.ring_seconds(1.0, params * weight, ranks, stride);
        }
    }
    if layout.zero == ZeroStage::Weights {
        let m = layout.num_micro_batches()? as f64;
        let traffic = m * (grads + 2.0 * weights);
        let first_gather = traffic / (m * 3.0 * stage_layers.max(1) as f64);
        return Ok((traffic - m * stage_seconds).max(first_gather));
    }
    let hidden = |on: bool, fraction: f64| if on { stage_seconds * fraction } else { 0.0 };
    Ok(
        (grads - hidden(cluster.overlap_dp_comm, 2.0 / 3.0)).max(0.0)
            + (weights - hidden(cluster.overlap_param_gather, 1.0 / 3.0)).max(0.0),
    )
}

/// Adam's step: 30 bytes per local parameter over HBM (read the fp32 gradient, read and write
/// fp32 master weights and both moments, write the bf16 weights), on the rank's shard under
/// ZeRO.
fn optimizer_seconds(layout: &ParallelLayout, cluster: &Cluster, held: &HeldParams) -> f64 {
    30.0 * held.sharded(layout, ZeroStage::OptimizerStates)
        / (cluster.gpu.memory_bytes_per_s * ATTAINABLE_HBM_FRACTION)
}

/// FP8 weight casts: once per step (Transformer Engine caches the cast weights over the
/// micro-batches of a step), each local weight read in 16 bits and written twice in 8 bits
/// (the weight and its transpose, with MXFP8's scales).
fn weight_cast_seconds(
    layout: &ParallelLayout,
    cluster: &Cluster,
    opts: &StepOptions,
    held: &HeldParams,
) -> f64 {
    let cast = opts.memory.gemm_precision.cast_bytes();
    if cast == 0.0 {
        return 0.0;
    }
    (opts.dtype.bytes() as f64 + 2.0 * cast) * held.sharded(layout, ZeroStage::Weights)
        / (cluster.gpu.memory_bytes_per_s * ATTAINABLE_HBM_FRACTION)
}

/// A framework's speed: one software efficiency ([`Cluster::software_efficiency`]) fitted once
/// to measured runs of that framework, with where it was fitted. Frameworks without measured
/// runs here keep 1.0 (the analytical model as it stands).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SpeedProfile {
    /// The framework.
    pub framework: crate::memory::Framework,
    /// The fitted software efficiency.
    pub software_efficiency: f64,
    /// The runs it was fitted on and its held-out error.
    pub calibrated_on: &'static str,
}

impl SpeedProfile {
    /// The profile of `framework`:
    ///
    /// * Megatron-Core (Transformer Engine, 2024–26): 0.69, fitted on NVIDIA's five dense
    ///   DGX-GB200 runs (`tests/data/megatron_bridge_gb200.json`; leave-one-out −17% to +20%;
    ///   the four mixture-of-experts runs, held out, +14% to +45%).
    /// * Megatron-DeepSpeed (2022): 0.745, fitted on BigScience's 23 A100 runs
    ///   (`tests/data/bloom_throughput_tp8.json`; leave-one-out median 2.4%, worst 12.7%).
    /// * DeepSpeed ZeRO-3 and FSDP2: 1.0, uncalibrated.
    ///
    /// ```
    /// use lmshape::{hardware::step::SpeedProfile, memory::Framework};
    /// assert_eq!(SpeedProfile::of(Framework::MegatronDeepspeed).software_efficiency, 0.745);
    /// ```
    pub fn of(framework: crate::memory::Framework) -> SpeedProfile {
        use crate::memory::Framework;
        let (software_efficiency, calibrated_on) = match framework {
            Framework::MegatronCore => (
                0.69,
                "NVIDIA's five dense DGX-GB200 runs (Megatron-Bridge 25.11); leave-one-out -17% to +20%",
            ),
            Framework::MegatronDeepspeed => (
                0.745,
                "BigScience's 23 A100 runs (Jean Zay, 2022); leave-one-out median 2.4%, worst 12.7%",
            ),
            Framework::Deepspeed | Framework::Fsdp => (1.0, "uncalibrated"),
        };
        SpeedProfile {
            framework,
            software_efficiency,
            calibrated_on,
        }
    }
}

/// A measured run to calibrate against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeasuredRun {
    /// The model.
    pub model: Transformer,
    /// Its layout.
    pub layout: ParallelLayout,
    /// Measured TFLOP/s per GPU in [`StepTime::tflops_per_gpu`]'s accounting (every matmul with
    /// the layout's recomputation; Megatron-LM eq. 3 for GPT-style models).
    pub tflops_per_gpu: f64,
}

/// How well a cluster description predicts measured runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationReport {
    /// The fitted software efficiency.
    pub software_efficiency: f64,
    /// `predicted / measured − 1` per run, in input order.
    pub relative_errors: Vec<f64>,
    /// Median of `|relative error|`.
    pub median_abs_error: f64,
    /// Largest `|relative error|`.
    pub max_abs_error: f64,
}

/// Relative errors of `cluster` on `runs`.
pub fn prediction_errors(
    cluster: &Cluster,
    timer: &dyn GemmTimer,
    runs: &[MeasuredRun],
    opts: &StepOptions,
) -> Result<Vec<f64>> {
    runs.iter()
        .map(|r| {
            let s = step_time(&r.model, &r.layout, cluster, timer, opts)?;
            Ok(s.tflops_per_gpu / r.tflops_per_gpu - 1.0)
        })
        .collect()
}

/// Fit [`Cluster::software_efficiency`] to measured runs: the value in `[0.05, 1]` minimising
/// the sum of squared log errors of TFLOP/s (golden-section search; the error is unimodal in
/// it since every step time is a positive compute term over the efficiency plus a fixed rest).
/// Bandwidths and the rest of the cluster stay as given.
pub fn calibrate_software_efficiency(
    cluster: &Cluster,
    timer: &dyn GemmTimer,
    runs: &[MeasuredRun],
    opts: &StepOptions,
) -> Result<(Cluster, CalibrationReport)> {
    if runs.is_empty() {
        return Err(Error::Fit("no measured runs to calibrate on".into()));
    }
    for r in runs {
        positive_f64(r.tflops_per_gpu, "measured tflops_per_gpu")?;
    }
    let loss = |eff: f64| -> Result<f64> {
        let c = Cluster {
            software_efficiency: eff,
            ..cluster.clone()
        };
        Ok(prediction_errors(&c, timer, runs, opts)?
            .iter()
            .map(|e| (1.0 + e).ln().powi(2))
            .sum())
    };
    let eff = crate::numeric::golden_section_min(|x| loss(x.exp()), 0.05f64.ln(), 0.0, 80)?.exp();
    let fitted = Cluster {
        software_efficiency: eff,
        ..cluster.clone()
    };
    let relative_errors = prediction_errors(&fitted, timer, runs, opts)?;
    let mut abs: Vec<f64> = relative_errors.iter().map(|e| e.abs()).collect();
    abs.sort_by(f64::total_cmp);
    let median_abs_error = if abs.len() % 2 == 1 {
        abs[abs.len() / 2]
    } else {
        0.5 * (abs[abs.len() / 2 - 1] + abs[abs.len() / 2])
    };
    Ok((
        fitted,
        CalibrationReport {
            software_efficiency: eff,
            max_abs_error: abs.last().copied().unwrap_or(0.0),
            median_abs_error,
            relative_errors,
        },
    ))
}
