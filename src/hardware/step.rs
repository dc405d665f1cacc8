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
//! * **Data parallelism**: ring all-reduce of the rank's gradients over `dp` replicas
//!   (reduce-scatter + all-gather for ZeRO 1/2, the same volume; ×1.5 for ZeRO-3's extra weight
//!   gathers, Rajbhandari et al. 2020 §7); optionally overlapped with the last backward.
//! * **Optimizer**: Adam touches 30 bytes per local parameter (read the fp32 gradient, read and
//!   write fp32 master weights and both moments, write the bf16 weights).
//!
//! Reported TFLOPs use the Megatron-LM eq. 3 accounting ([`crate::flops::megatron_step_flops`]),
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
    /// Multiplier on compute throughput for the software stack (1.0 = as fast as the timer and
    /// HBM model say; calibrate with [`calibrate_software_efficiency`]).
    pub software_efficiency: f64,
    /// Overlap the data-parallel gradient reduction with the last backward pass.
    pub overlap_dp_comm: bool,
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
        }
    }

    /// Jean Zay's A100 partition as BigScience used it for BLOOM
    /// (`bloom_throughput_tp8.json`: 8 A100 80GB per node on NVLink, 4 × 100 Gb/s Omni-Path per
    /// node), uncalibrated.
    pub fn jean_zay() -> Cluster {
        Cluster::dgx(GpuSpec::a100_80gb(), 4.0 * 100e9 / 8.0)
    }

    /// Check that every figure is physical: bandwidths between 1 kB/s and 1 PB/s, collective
    /// efficiency in `[0.01, 1]`, software efficiency in `[0.01, 10]`, latency between 0 and
    /// 1 s, at least one GPU per node. Values outside give a step time of zero or infinity,
    /// so they are errors.
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
            10.0,
            "software_efficiency",
            "in [0.01, 10]",
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

    /// Seconds of a ring all-reduce of `bytes` over `ranks` GPUs.
    fn all_reduce_seconds(&self, bytes: f64, ranks: u64, intra: bool) -> f64 {
        if ranks <= 1 {
            return 0.0;
        }
        let r = ranks as f64;
        2.0 * (r - 1.0) / r * bytes / self.link_bytes_per_s(intra) + self.collective_latency_seconds
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

/// The GEMMs of one layer's forward pass for one micro-batch on one tensor-parallel rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerGemms {
    /// Fused q, k, v projection.
    pub qkv: Gemm,
    /// Attention scores `QKᵀ`, batched over sequences and local heads.
    pub scores: Gemm,
    /// Attention over values, batched.
    pub attn_v: Gemm,
    /// Attention output projection.
    pub out: Gemm,
    /// MLP input (up, and gate when gated).
    pub mlp_in: Gemm,
    /// MLP output (down).
    pub mlp_out: Gemm,
}

impl LayerGemms {
    /// The six GEMMs in forward order.
    pub fn all(&self) -> [Gemm; 6] {
        [
            self.qkv,
            self.scores,
            self.attn_v,
            self.out,
            self.mlp_in,
            self.mlp_out,
        ]
    }
}

/// The forward GEMMs of one layer under `layout` (see the module docs).
///
/// ```
/// use lmshape::{hardware::step, presets, ParallelLayout};
/// let m = presets::by_name("bloom-176b")?;
/// let g = step::layer_gemms(&m, &ParallelLayout { tp: 4, micro_batch: 2, global_batch: 2, ..ParallelLayout::default() }, lmshape::hardware::Dtype::Bf16)?;
/// assert_eq!((g.qkv.m, g.qkv.n, g.qkv.k), (4096, 3 * 14336 / 4, 14336));
/// assert_eq!((g.scores.batch, g.scores.k), (2 * 112 / 4, 128));
/// # Ok::<(), lmshape::Error>(())
/// ```
pub fn layer_gemms(
    model: &Transformer,
    layout: &ParallelLayout,
    dtype: Dtype,
) -> Result<LayerGemms> {
    let t = layout.tp;
    crate::error::positive(t, "tp")?;
    let tokens = crate::error::mul(layout.seq_len, layout.micro_batch, "tokens per micro-batch")?;
    let heads = model.num_heads / t;
    let kv = crate::parallel::kv_heads_per_rank(model.num_kv_heads, t)?;
    let hd = model.head_dim;
    let q = heads * hd;
    let f = model.ffn_size / t;
    let d = model.hidden_size;
    let gated = if model.arch.mlp == MlpKind::Gated {
        2
    } else {
        1
    };
    let g = |m: u64, n: u64, k: u64, batch: u64| Gemm {
        m,
        n,
        k,
        batch,
        dtype,
    };
    let attn_batch = layout.micro_batch * heads;
    let s = layout.seq_len;
    let gemms = LayerGemms {
        qkv: g(tokens, q + 2 * kv * hd, d, 1),
        scores: g(s, s, hd, attn_batch),
        attn_v: g(s, hd, s, attn_batch),
        out: g(tokens, d, q, 1),
        mlp_in: g(tokens, gated * f, d, 1),
        mlp_out: g(tokens, d, f, 1),
    };
    for x in gemms.all() {
        x.validate()?;
    }
    Ok(gemms)
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
}

/// The predicted step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepTime {
    /// Seconds per optimizer step.
    pub step_seconds: f64,
    /// Megatron-LM eq. 3 TFLOP/s per GPU (with the layout's recomputation).
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

/// Per-micro-batch times of one layer on one rank.
#[derive(Debug, Clone, Copy)]
struct LayerTimes {
    gemm: f64,
    memory: f64,
    tp_comm: f64,
}

fn timed(timer: &dyn GemmTimer, g: &Gemm) -> Result<f64> {
    let s = timer.gemm_seconds(g)?;
    if s.is_finite() && s > 0.0 {
        Ok(s)
    } else {
        Err(Error::Gpu(format!("timer returned {s} seconds for {g:?}")))
    }
}

fn layer_times(
    model: &Transformer,
    layout: &ParallelLayout,
    cluster: &Cluster,
    timer: &dyn GemmTimer,
    opts: &StepOptions,
) -> Result<LayerTimes> {
    let g = layer_gemms(model, layout, opts.gemm_dtype())?;
    // Attention's score and value GEMMs stay in 16 bits (Transformer Engine casts only the
    // linear layers).
    let g = LayerGemms {
        scores: Gemm {
            dtype: opts.dtype,
            ..g.scores
        },
        attn_v: Gemm {
            dtype: opts.dtype,
            ..g.attn_v
        },
        ..g
    };
    let fwd_of = |x: &Gemm| timed(timer, x);
    let bwd_of = |x: &Gemm| -> Result<f64> {
        Ok(timed(timer, &x.data_grad())? + timed(timer, &x.weight_grad())?)
    };
    let mut fwd = 0.0;
    let mut bwd = 0.0;
    for x in g.all() {
        fwd += fwd_of(&x)?;
        bwd += bwd_of(&x)?;
    }
    let core = fwd_of(&g.scores)? + fwd_of(&g.attn_v)?;
    // Memory-bound bytes of the forward pass.
    let e = opts.dtype.bytes() as f64;
    let t = layout.tp as f64;
    let (s, b, h) = (
        layout.seq_len as f64,
        layout.micro_batch as f64,
        model.hidden_size as f64,
    );
    let sbh = if layout.sequence_parallel {
        s * b * h / t
    } else {
        s * b * h
    };
    let norms = model.arch.block.norms_per_layer() as f64;
    let mask = if opts.dropout() { 1.0 } else { 0.0 };
    let f = (model.ffn_size / layout.tp) as f64;
    let act_inputs = if model.arch.mlp == MlpKind::Gated {
        2.0
    } else {
        1.0
    };
    let heads = (model.num_heads / layout.tp) as f64;
    let scores = heads * s * s * b;
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
        norms * 2.0 * e * sbh + 2.0 * (3.0 * e + mask) * sbh + (act_inputs + 1.0) * e * s * b * f;
    // FP8: each linear GEMM's input is cast (read 16 bits, write 8 bits and its scale): the
    // QKV and MLP inputs (s·b·h, gathered under sequence parallelism), the attention-output
    // input (s·b·q/t) and the MLP-output input (s·b·f/t). The backward casts the four output
    // gradients and transposes the inputs for the weight gradients: twice as many bytes
    // again (an assumption; Transformer Engine fuses some casts into norms and activations).
    let cast = opts.memory.gemm_precision.cast_bytes();
    let q = (model.num_heads / layout.tp * model.head_dim) as f64;
    let cast_fwd = if cast > 0.0 {
        (e + cast) * (2.0 * s * b * h + s * b * q + s * b * f)
    } else {
        0.0
    };
    let bw = cluster.gpu.memory_bytes_per_s * ATTAINABLE_HBM_FRACTION;
    let mem_fwd = (dense_bytes + softmax + cast_fwd) / bw;
    let mem_core = softmax / bw;
    let (re_gemm, re_mem, re_comm) = match layout.recompute {
        Recompute::None => (0.0, 0.0, 0.0),
        Recompute::Selective => (core, mem_core, 0.0),
        Recompute::Full => (fwd, mem_fwd, 2.0),
    };
    let intra = layout.tp <= cluster.gpus_per_node;
    let ar = cluster.all_reduce_seconds(s * b * h * e, layout.tp, intra);
    Ok(LayerTimes {
        gemm: fwd + bwd + re_gemm,
        memory: 3.0 * mem_fwd + re_mem,
        tp_comm: (4.0 + re_comm) * ar,
    })
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
    let tokens_per_step = validate_inputs(model, layout, cluster)?;
    let lt = layer_times(model, layout, cluster, timer, opts)?;
    let ends = end_times(model, layout, cluster, timer, opts)?;
    let slowest = slowest_stage(layout, &layout.stage_layers(model)?, &lt, &ends, cluster);
    let p2p = p2p_seconds(model, layout, cluster, opts);
    let stage_seconds = slowest.gemm + slowest.memory + slowest.tp_comm + p2p;
    let m = layout.num_micro_batches()?;
    let slots = pipeline_slots(layout, m);
    let local_params = crate::memory::training_memory(model, layout, &opts.memory)?
        .peak
        .params_on_rank as f64;
    let dp_comm = data_parallel_seconds(layout, cluster, opts, local_params, stage_seconds)?;
    let optimizer = optimizer_seconds(layout, cluster, local_params)
        + weight_cast_seconds(layout, cluster, opts, local_params);
    let step_seconds = slots * stage_seconds + dp_comm + optimizer;
    if !(step_seconds.is_finite() && step_seconds > 0.0) {
        return Err(Error::InvalidValue {
            field: "predicted step seconds",
            value: step_seconds,
            expected: "finite and positive (check the cluster and timer figures)",
        });
    }
    let gpus = layout.gpus()? as f64;
    let eq3 =
        flops::megatron_step_flops(model, layout.global_batch, layout.seq_len, layout.recompute)?;
    let model_flops = flops::matmul_flops_per_token(
        model,
        &FlopsConvention::megatron(layout.seq_len, Recompute::None),
    )?
    .model_flops()
        * tokens_per_step;
    let peak = cluster.gpu.peak_flops_per_s(opts.dtype)?;
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
            pipeline_bubble_seconds: (slots - mf) * stage_seconds,
            dp_comm_seconds: dp_comm,
            optimizer_seconds: optimizer,
        },
    })
}

/// Step 0: the model, the layout and the cluster obey their rules, and the tokens of a step
/// and of a micro-batch fit `u64`. Returns the tokens per step.
fn validate_inputs(model: &Transformer, layout: &ParallelLayout, cluster: &Cluster) -> Result<f64> {
    model.validate()?;
    if model.moe.is_some() {
        return Err(Error::Unsupported {
            what: "step time",
            feature: "mixture-of-experts layers (expert GEMMs and all-to-all)",
        });
    }
    if model.attention != crate::model::Attention::Standard {
        return Err(Error::Unsupported {
            what: "step time",
            feature: "latent attention",
        });
    }
    layout.validate(model)?;
    cluster.validate()?;
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
        layout.seq_len as f64,
        layout.micro_batch as f64,
        model.hidden_size as f64,
    );
    let bw = cluster.gpu.memory_bytes_per_s * ATTAINABLE_HBM_FRACTION;
    let vocab_per_rank = layout.padded_vocab(model)? / layout.tp;
    let logits = Gemm {
        m: layout.seq_len * layout.micro_batch,
        n: vocab_per_rank,
        k: model.embed_dim(),
        batch: 1,
        dtype: opts.dtype,
    };
    Ok(EndTimes {
        logits_gemm: timed(timer, &logits)?
            + timed(timer, &logits.data_grad())?
            + timed(timer, &logits.weight_grad())?,
        logits_memory: 3.0 * 4.0 * s * b * vocab_per_rank as f64 * 2.0 / bw,
        embedding_memory: 3.0 * e * s * b * h / bw,
    })
}

/// One micro-batch's forward and backward on the slowest pipeline stage, by kind of work
/// (GEMM and memory-bound work after the software efficiency).
struct StageTimes {
    gemm: f64,
    memory: f64,
    tp_comm: f64,
}

fn slowest_stage(
    layout: &ParallelLayout,
    stages: &crate::parallel::StageLayers,
    lt: &LayerTimes,
    ends: &EndTimes,
    cluster: &Cluster,
) -> StageTimes {
    let sw = cluster.software_efficiency;
    let stage = |layers: u64, first: bool, last: bool| {
        let l = layers as f64;
        let mut gemm = l * lt.gemm;
        let mut memory = l * lt.memory;
        if last {
            gemm += ends.logits_gemm;
            memory += ends.logits_memory;
        }
        if first {
            memory += ends.embedding_memory;
        }
        StageTimes {
            gemm: gemm / sw,
            memory: memory / sw,
            tp_comm: l * lt.tp_comm,
        }
    };
    let all = if layout.pp == 1 {
        [
            stage(stages.first, true, true),
            stage(0, false, false),
            stage(0, false, false),
        ]
    } else {
        [
            stage(stages.first, true, false),
            stage(stages.heaviest_middle(), false, false),
            stage(stages.last, false, true),
        ]
    };
    let total = |t: &StageTimes| t.gemm + t.memory + t.tp_comm;
    all.into_iter()
        .max_by(|a, b| total(a).total_cmp(&total(b)))
        .unwrap_or(StageTimes {
            gemm: 0.0,
            memory: 0.0,
            tp_comm: 0.0,
        })
}

/// Point-to-point sends per micro-batch between stages: the activation forward and its
/// gradient backward, `sbh/t` bytes with Megatron-LM's scatter/gather (Narayanan et al. 2021
/// §4.1), over NVLink when the whole pipeline sits in one node.
fn p2p_seconds(
    model: &Transformer,
    layout: &ParallelLayout,
    cluster: &Cluster,
    opts: &StepOptions,
) -> f64 {
    if layout.pp == 1 {
        return 0.0;
    }
    let sbh_bytes = layout.seq_len as f64
        * layout.micro_batch as f64
        * model.hidden_size as f64
        * opts.dtype.bytes() as f64;
    let bytes = sbh_bytes / layout.tp as f64;
    let intra = layout.tp.saturating_mul(layout.pp) <= cluster.gpus_per_node;
    2.0 * (bytes / cluster.link_bytes_per_s(intra) + cluster.collective_latency_seconds)
}

/// Stage-times of a step: `m + p − 1` under 1F1B, `m + (p − 1)/v` interleaved (Narayanan et
/// al. 2021 §2.2).
fn pipeline_slots(layout: &ParallelLayout, m: u64) -> f64 {
    m as f64 + (layout.pp - 1) as f64 / layout.virtual_stages() as f64
}

/// The exposed data-parallel gradient reduction of the most loaded rank's parameters: a ring
/// all-reduce over `dp` (×1.5 for ZeRO-3's extra weight gathers), hidden behind the last
/// backward (two thirds of a stage-time) when the cluster overlaps it.
fn data_parallel_seconds(
    layout: &ParallelLayout,
    cluster: &Cluster,
    opts: &StepOptions,
    local_params: f64,
    stage_seconds: f64,
) -> Result<f64> {
    let grad_bytes = local_params * opts.memory.precision.grad_bytes as f64;
    let intra = layout.gpus()? <= cluster.gpus_per_node;
    let zero3 = if layout.zero == ZeroStage::Weights {
        1.5
    } else {
        1.0
    };
    let full = zero3 * cluster.all_reduce_seconds(grad_bytes, layout.dp, intra);
    Ok(if cluster.overlap_dp_comm {
        (full - stage_seconds * 2.0 / 3.0).max(0.0)
    } else {
        full
    })
}

/// Adam's step: 30 bytes per local parameter over HBM (read the fp32 gradient, read and write
/// fp32 master weights and both moments, write the bf16 weights), on the rank's shard under
/// ZeRO.
fn optimizer_seconds(layout: &ParallelLayout, cluster: &Cluster, local_params: f64) -> f64 {
    let params = if layout.zero >= ZeroStage::OptimizerStates {
        local_params / layout.dp as f64
    } else {
        local_params
    };
    30.0 * params / (cluster.gpu.memory_bytes_per_s * ATTAINABLE_HBM_FRACTION)
}

/// FP8 weight casts: once per step (Transformer Engine caches the cast weights over the
/// micro-batches of a step), each local weight read in 16 bits and written twice in 8 bits
/// (the weight and its transpose, with MXFP8's scales).
fn weight_cast_seconds(
    layout: &ParallelLayout,
    cluster: &Cluster,
    opts: &StepOptions,
    local_params: f64,
) -> f64 {
    let cast = opts.memory.gemm_precision.cast_bytes();
    if cast == 0.0 {
        return 0.0;
    }
    let held = if layout.zero >= ZeroStage::Weights {
        local_params / layout.dp as f64
    } else {
        local_params
    };
    (opts.dtype.bytes() as f64 + 2.0 * cast) * held
        / (cluster.gpu.memory_bytes_per_s * ATTAINABLE_HBM_FRACTION)
}

/// A measured run to calibrate against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeasuredRun {
    /// The model.
    pub model: Transformer,
    /// Its layout.
    pub layout: ParallelLayout,
    /// Measured TFLOP/s per GPU (Megatron eq. 3 accounting).
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

/// Fit [`Cluster::software_efficiency`] to measured runs: the value in `[0.05, 2]` minimising
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
    let eff =
        crate::numeric::golden_section_min(|x| loss(x.exp()), 0.05f64.ln(), 2.0f64.ln(), 80)?.exp();
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
