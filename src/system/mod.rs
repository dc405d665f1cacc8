//! System profiles: the measured facts of one machine that a step is composed from — GEMM
//! latencies by shape and precision, attention kernels, memory-bound kernels, collectives
//! inside a node and the network across nodes — with where each came from and how far the
//! profile's predictions were from measured runs ([`Validation`]).
//!
//! A profile describes a machine, not a GPU model: the same GPU reaches different fractions of
//! its peak on different machines (power cap, clocks, library versions; the shipped tables put
//! large bf16 GEMMs at 0.84 of peak on a DGX A100, 0.78 on a DGX H100 and 0.65 on a DGX B200,
//! and SimuMax's B200 node at about 0.49). Profiles ship for `dgx-a100`, `dgx-h100`, `dgx-h200`,
//! `dgx-b200`, `gb200-nvl72`, `dgx-b300`, `gb300-nvl72` (NVIDIA aiconfigurator's kernel
//! tables), `simumax-b200` (SimuMax's measured system file of one B200 node) and `jean-zay`
//! (the A100 tables with BigScience's network); a user brings their own as JSON
//! ([`SystemProfile::from_json`]) or fits one to their own steps
//! ([`crate::step::calibrate_profile`]).
//!
//! How each fact is used:
//!
//! * **GEMMs** ([`SystemProfile::gemm_seconds`]): measured latency by `(precision, m, n, k)`
//!   on a grid, interpolated linearly in `(log m, log n, log k)` on log latency, so the
//!   table's own values come back at its points and the off-by-one neighbours it measured
//!   (4096 and 4097) keep their step; the grid is made non-decreasing in `m` first (more tokens
//!   never take less time). Outside the grid, the analytical tile/wave model
//!   ([`crate::hardware::AnalyticalTimer`]) scaled to agree with the table at the nearest grid
//!   point. A grouped GEMM (a rank's local experts) is one kernel over all their tokens. FP8
//!   with per-tensor scales reads the `fp8` rows, block or MX scaling the `fp8_block` rows.
//!   Profiles measured per shape (SimuMax) give each measured shape and pass its own
//!   efficiency, and the nearest measured shape's for the others.
//! * **Attention** ([`SystemProfile::attention_seconds`]): the forward's efficiency over its
//!   causal FLOPs from measured prefill kernels by head size, sequence length and parallel
//!   work (batch × heads); the backward from the profile's backward/forward ratio.
//! * **Memory-bound kernels** ([`SystemProfile::memory_seconds`]): bytes over the attainable
//!   bandwidth, plus a latency per kernel.
//! * **Collectives** ([`SystemProfile::collective_seconds`]): nccl-tests latencies by
//!   operation, group size and message size inside one node (or NVLink domain), interpolated
//!   in log space; across nodes the node's NICs at their rate, with a latency (an assumption
//!   where nothing was measured).

mod attention;
mod builtin;
mod comm;
mod gemm;

use crate::error::{Error, Result, positive_f64};
use crate::hardware::{Gemm, GpuSpec};
use serde::{Deserialize, Serialize};

pub use attention::{AttentionGrid, AttentionSample, DecodeGrid};
pub use builtin::{SYSTEM_NAMES, default_system_for_gpu};
pub use comm::{CollectiveOp, CollectiveTable, Collectives, FittedCollective};
pub use gemm::{GemmGrid, GemmSample};

/// The GEMM timer of a measured machine: [`SystemProfile::gemm_seconds`] on the profile's GPU.
///
/// ```
/// use lmshape::hardware::{Gemm, GemmTimer};
/// use lmshape::system::{SystemProfile, SystemTimer};
/// let t = SystemTimer::new(SystemProfile::shared("dgx-a100")?)?;
/// let s = t.gemm_seconds(&Gemm::bf16(8192, 8192, 8192))?;
/// assert!(s > 0.0 && t.describe().contains("dgx-a100"));
/// # Ok::<(), lmshape::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SystemTimer {
    profile: std::sync::Arc<SystemProfile>,
    gpu: GpuSpec,
}

impl SystemTimer {
    /// The timer of `profile`.
    ///
    /// # Errors
    /// A profile whose GPU is not a preset.
    pub fn new(profile: std::sync::Arc<SystemProfile>) -> Result<SystemTimer> {
        let gpu = profile.gpu_spec()?;
        Ok(SystemTimer { profile, gpu })
    }

    /// The profile.
    pub fn profile(&self) -> &SystemProfile {
        &self.profile
    }
}

impl crate::hardware::GemmTimer for SystemTimer {
    fn gemm_seconds(&self, gemm: &Gemm) -> Result<f64> {
        self.profile.gemm_seconds(gemm, &self.gpu)
    }

    fn describe(&self) -> String {
        format!("measured kernels of {}", self.profile.name)
    }
}

/// Where a profile's facts come from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Provenance {
    /// The device as the measurements name it.
    pub device: String,
    /// The node: GPUs and their links.
    pub node: String,
    /// The scale-out network.
    pub network: String,
    /// Power cap, where known.
    #[serde(default)]
    pub power: String,
    /// Software versions of the measurements.
    #[serde(default)]
    pub software: String,
    /// The sources, one line each.
    #[serde(default)]
    pub sources: Vec<String>,
}

/// Memory-bound kernels: the attainable fraction of HBM bandwidth and a fixed cost per kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryBound {
    /// Fraction of the datasheet HBM bandwidth a streaming kernel reaches.
    pub bandwidth_fraction: f64,
    /// Seconds per kernel beyond its bytes.
    pub kernel_latency_seconds: f64,
    /// Measured, or an assumption.
    #[serde(default)]
    pub basis: String,
}

/// The scale-out network of one node.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// All NICs of a node together, bytes/s.
    pub nic_bytes_per_s: f64,
    /// Latency of one collective step across nodes, seconds.
    pub latency_seconds: f64,
}

/// Multipliers of a calibrated profile over its measured facts (1 where uncalibrated).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Multipliers {
    /// On GEMM seconds.
    pub gemm: f64,
    /// On attention seconds.
    pub attention: f64,
    /// On memory-bound seconds.
    pub memory: f64,
    /// On collective seconds.
    pub collectives: f64,
}

impl Default for Multipliers {
    fn default() -> Multipliers {
        Multipliers {
            gemm: 1.0,
            attention: 1.0,
            memory: 1.0,
            collectives: 1.0,
        }
    }
}

/// How far a profile's step times were from measured ones in this repository's validation:
/// the ratios `predicted / measured` of held-out runs. A speed figure's band is the prediction
/// divided by the largest and the smallest ratio ([`SystemProfile::band`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// Runs graded.
    pub runs: u64,
    /// Smallest `predicted / measured` step-time ratio among them.
    pub ratio_low: f64,
    /// Largest ratio.
    pub ratio_high: f64,
    /// Which runs, and where they are.
    pub basis: String,
}

/// The narrowest band a validation gives: ±10% around the prediction. A handful of graded runs
/// (four on the B200 node) says little about the next model or layout, so the band is at
/// least this wide.
pub const MIN_BAND_FRACTION: f64 = 0.10;

impl Validation {
    /// The validation of `ratios` (`predicted / measured` step times of graded runs): their
    /// range, widened to at least [`MIN_BAND_FRACTION`] on each side of 1.
    ///
    /// ```
    /// let v = lmshape::system::Validation::from_ratios(&[0.85, 0.95, 1.01], "three runs")?;
    /// assert_eq!((v.runs, v.ratio_low), (3, 0.85));
    /// assert!((v.ratio_high - 1.1).abs() < 1e-12);
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    ///
    /// # Errors
    /// No ratios, or a ratio that is not finite and positive.
    pub fn from_ratios(ratios: &[f64], basis: impl Into<String>) -> Result<Validation> {
        if ratios.is_empty() {
            return Err(Error::ZeroSize {
                field: "validation ratios",
            });
        }
        for &r in ratios {
            positive_f64(r, "validation ratio")?;
        }
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(0.0, f64::max);
        Ok(Validation {
            runs: ratios.len() as u64,
            ratio_low: lo.min(1.0 - MIN_BAND_FRACTION),
            ratio_high: hi.max(1.0 + MIN_BAND_FRACTION),
            basis: basis.into(),
        })
    }

    /// Whether another validation's band lies within this one's (to 0.001).
    pub fn covers(&self, other: &Validation) -> bool {
        self.ratio_low <= other.ratio_low + 1e-3 && other.ratio_high <= self.ratio_high + 1e-3
    }
}

/// The band a profile without validation gives: a step time between 0.5 and 2 times the
/// prediction's reciprocal ratios — wide on purpose, since nothing measured bounds it.
pub const UNVALIDATED_RATIOS: (f64, f64) = (0.5, 2.0);

/// The measured facts of one machine (see the module docs). Deserializing validates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ProfileFields")]
pub struct SystemProfile {
    /// Short name (`dgx-h100`).
    pub name: String,
    /// The GPU preset of the machine ([`GpuSpec::by_name`]).
    pub gpu: String,
    /// GPUs per node (or NVLink domain).
    pub gpus_per_node: u64,
    /// Where the facts come from.
    pub provenance: Provenance,
    /// GEMM latency grids by precision.
    pub gemm: Vec<GemmGrid>,
    /// GEMM efficiencies of single measured shapes (SimuMax's form).
    pub gemm_shapes: Vec<GemmSample>,
    /// Forward prefill attention efficiency grid.
    pub attention: Option<AttentionGrid>,
    /// Attention efficiencies of single measured shapes (forward and backward).
    pub attention_shapes: Vec<AttentionSample>,
    /// Backward over forward time of flash attention where no backward was measured.
    pub attention_backward_ratio: f64,
    /// Decode attention efficiency grid (serving).
    pub decode_attention: Option<DecodeGrid>,
    /// Memory-bound kernels.
    pub memory: MemoryBound,
    /// Collectives inside a node.
    pub collectives: Collectives,
    /// The network across nodes.
    pub network: Network,
    /// Seconds of host work per micro-batch beyond the kernels (0 unless calibrated).
    pub host_overhead_seconds: f64,
    /// Calibration multipliers.
    pub multipliers: Multipliers,
    /// Held-out error of the profile's predictions, if graded.
    pub validation: Option<Validation>,
}

/// The fields of a [`SystemProfile`] as they arrive from serde, before validation.
#[derive(Deserialize)]
struct ProfileFields {
    name: String,
    gpu: String,
    gpus_per_node: u64,
    #[serde(default)]
    provenance: Provenance,
    #[serde(default)]
    gemm: Vec<GemmGrid>,
    #[serde(default)]
    gemm_shapes: Vec<GemmSample>,
    #[serde(default)]
    attention: Option<AttentionGrid>,
    #[serde(default)]
    attention_shapes: Vec<AttentionSample>,
    #[serde(default = "default_backward_ratio")]
    attention_backward_ratio: f64,
    #[serde(default)]
    decode_attention: Option<DecodeGrid>,
    #[serde(default = "default_memory")]
    memory: MemoryBound,
    collectives: Collectives,
    network: Network,
    #[serde(default)]
    host_overhead_seconds: f64,
    #[serde(default)]
    multipliers: Multipliers,
    #[serde(default)]
    validation: Option<Validation>,
}

/// Flash attention's backward over forward time where no backward was measured: 2.54, SimuMax's
/// measured B200 node (`sdp_bwd` runs 2.5× the forward's FLOPs at 0.694 of peak against the
/// forward's 0.706: 2.5 × 0.706 / 0.694); FlashAttention-2 (Dao 2023 §3.2) counts the same
/// 2.5× FLOPs.
pub const ATTENTION_BACKWARD_RATIO: f64 = 2.54;

fn default_backward_ratio() -> f64 {
    ATTENTION_BACKWARD_RATIO
}

/// Memory-bound kernels where nothing was measured: 85% of the HBM bandwidth
/// ([`crate::hardware::analytical::ATTAINABLE_HBM_FRACTION`]) and 5 µs per kernel (a CUDA
/// launch) — assumptions.
fn default_memory() -> MemoryBound {
    MemoryBound {
        bandwidth_fraction: crate::hardware::analytical::ATTAINABLE_HBM_FRACTION,
        kernel_latency_seconds: 5e-6,
        basis: "assumption: 85% of the datasheet bandwidth, 5 us per kernel".into(),
    }
}

impl TryFrom<ProfileFields> for SystemProfile {
    type Error = Error;

    fn try_from(f: ProfileFields) -> Result<SystemProfile> {
        let mut gemm = f.gemm;
        for g in &mut gemm {
            g.validate()?;
            g.make_monotone();
        }
        let p = SystemProfile {
            name: f.name,
            gpu: f.gpu,
            gpus_per_node: f.gpus_per_node,
            provenance: f.provenance,
            gemm,
            gemm_shapes: f.gemm_shapes,
            attention: f.attention,
            attention_shapes: f.attention_shapes,
            attention_backward_ratio: f.attention_backward_ratio,
            decode_attention: f.decode_attention,
            memory: f.memory,
            collectives: f.collectives,
            network: f.network,
            host_overhead_seconds: f.host_overhead_seconds,
            multipliers: f.multipliers,
            validation: f.validation,
        };
        p.validate()?;
        Ok(p)
    }
}

impl SystemProfile {
    /// A shipped profile by name ([`SYSTEM_NAMES`]).
    ///
    /// ```
    /// let p = lmshape::system::SystemProfile::by_name("dgx-h100")?;
    /// assert_eq!((p.gpu.as_str(), p.gpus_per_node), ("h100-sxm", 8));
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownName`] listing the shipped profiles.
    pub fn by_name(name: &str) -> Result<SystemProfile> {
        builtin::load(name)
    }

    /// A shipped profile by name, parsed once and shared (cheap to call again).
    ///
    /// # Errors
    /// As [`SystemProfile::by_name`].
    pub fn shared(name: &str) -> Result<std::sync::Arc<SystemProfile>> {
        builtin::shared(name)
    }

    /// A profile from its JSON (the format the shipped profiles use, and that
    /// [`crate::step::calibrate_profile`] writes).
    ///
    /// # Errors
    /// Text above [`crate::error::MAX_INPUT_BYTES`], invalid JSON, or a profile that breaks a
    /// rule ([`SystemProfile::validate`]).
    pub fn from_json(text: &str) -> Result<SystemProfile> {
        crate::error::input_size(text, "system profile")?;
        serde_json::from_str(text).map_err(Error::from)
    }

    /// The GPU of the machine.
    ///
    /// # Errors
    /// [`Error::UnknownName`] when the profile names no preset.
    pub fn gpu_spec(&self) -> Result<GpuSpec> {
        GpuSpec::by_name(&self.gpu)
    }

    /// Check every figure: a known GPU, at least one GPU per node, grids whose sizes agree and
    /// whose values are finite and positive, efficiencies and ratios positive, bandwidths and
    /// latencies physical, multipliers positive, a validation whose ratios bracket 1.
    ///
    /// # Errors
    /// The first figure out of its domain, named.
    pub fn validate(&self) -> Result<()> {
        self.gpu_spec()?;
        crate::error::positive(self.gpus_per_node, "gpus_per_node")?;
        for g in &self.gemm {
            g.validate()?;
        }
        for s in &self.gemm_shapes {
            s.validate()?;
        }
        if let Some(a) = &self.attention {
            a.validate()?;
        }
        for s in &self.attention_shapes {
            s.validate()?;
        }
        if let Some(d) = &self.decode_attention {
            d.validate()?;
        }
        positive_f64(self.attention_backward_ratio, "attention_backward_ratio")?;
        crate::error::in_range_f64(
            self.memory.bandwidth_fraction,
            0.01,
            1.0,
            "memory.bandwidth_fraction",
            "in [0.01, 1]",
        )?;
        crate::error::in_range_f64(
            self.memory.kernel_latency_seconds,
            0.0,
            0.01,
            "memory.kernel_latency_seconds",
            "between 0 and 10 ms",
        )?;
        self.collectives.validate()?;
        crate::error::in_range_f64(
            self.network.nic_bytes_per_s,
            1e3,
            1e15,
            "network.nic_bytes_per_s",
            "a bandwidth between 1e3 and 1e15 bytes/s",
        )?;
        crate::error::in_range_f64(
            self.network.latency_seconds,
            0.0,
            0.01,
            "network.latency_seconds",
            "between 0 and 10 ms",
        )?;
        crate::error::in_range_f64(
            self.host_overhead_seconds,
            0.0,
            10.0,
            "host_overhead_seconds",
            "between 0 and 10 s",
        )?;
        let m = &self.multipliers;
        for (v, f) in [
            (m.gemm, "multipliers.gemm"),
            (m.attention, "multipliers.attention"),
            (m.memory, "multipliers.memory"),
            (m.collectives, "multipliers.collectives"),
        ] {
            crate::error::in_range_f64(v, 0.01, 100.0, f, "between 0.01 and 100")?;
        }
        if let Some(v) = &self.validation {
            positive_f64(v.ratio_low, "validation.ratio_low")?;
            positive_f64(v.ratio_high, "validation.ratio_high")?;
            if !(v.ratio_low <= 1.0 && 1.0 <= v.ratio_high) {
                return Err(Error::Inconsistent {
                    rule: "a validation band brackets the prediction (ratio_low <= 1 <= ratio_high)",
                    detail: format!("ratios {} to {}", v.ratio_low, v.ratio_high),
                });
            }
        }
        Ok(())
    }

    /// Seconds of one GEMM on this machine (see the module docs), after the GEMM multiplier.
    ///
    /// # Errors
    /// A zero dimension, a precision the profile has no GEMMs for, or the GPU's errors.
    pub fn gemm_seconds(&self, g: &Gemm, gpu: &GpuSpec) -> Result<f64> {
        Ok(gemm::seconds(self, g, gpu)? * self.multipliers.gemm)
    }

    /// Forward and backward seconds of one causal attention core on one rank: `batch`
    /// sequences of `queries` tokens attending over `keys` (the whole sequence under
    /// context parallelism), `heads` query heads and `kv_heads` key/value heads, widths `d_qk`
    /// and `d_v`; `attended` keys per query on average (a sliding window, or half the sequence
    /// for a causal mask). After the attention multiplier.
    ///
    /// # Errors
    /// A zero size, or the GPU's errors.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_seconds(
        &self,
        gpu: &GpuSpec,
        batch: u64,
        queries: u64,
        attended: f64,
        heads: u64,
        kv_heads: u64,
        d_qk: u64,
        d_v: u64,
    ) -> Result<(f64, f64)> {
        let (f, b) = attention::seconds(
            self, gpu, batch, queries, attended, heads, kv_heads, d_qk, d_v,
        )?;
        Ok((
            f * self.multipliers.attention,
            b * self.multipliers.attention,
        ))
    }

    /// Seconds of memory-bound work: `bytes` over the attainable bandwidth of `gpu`, plus the
    /// per-kernel latency of `kernels` kernels, after the memory multiplier.
    pub fn memory_seconds(&self, gpu: &GpuSpec, bytes: f64, kernels: f64) -> f64 {
        let bw = gpu.memory_bytes_per_s * self.memory.bandwidth_fraction;
        (bytes / bw + kernels * self.memory.kernel_latency_seconds) * self.multipliers.memory
    }

    /// Seconds of one collective over `ranks` GPUs of which `per_node` share a node, each
    /// holding `bytes` (the nccl-tests size: the whole buffer of an all-reduce, reduce-scatter's
    /// input, all-gather's output, an all-to-all's send buffer), after the collective
    /// multiplier. Inside a node: the measured tables; across nodes the slower of the node part
    /// and the network part.
    pub fn collective_seconds(
        &self,
        op: CollectiveOp,
        ranks: u64,
        per_node: u64,
        bytes: f64,
    ) -> f64 {
        comm::seconds(self, op, ranks, per_node, bytes) * self.multipliers.collectives
    }

    /// The band of a predicted step time: `(low, high)` seconds, from the held-out ratios of
    /// [`SystemProfile::validation`] or [`UNVALIDATED_RATIOS`]. It always contains the
    /// prediction.
    pub fn band(&self, step_seconds: f64) -> (f64, f64) {
        let (lo, hi) = self
            .validation
            .as_ref()
            .map_or(UNVALIDATED_RATIOS, |v| (v.ratio_low, v.ratio_high));
        (step_seconds / hi.max(1.0), step_seconds / lo.min(1.0))
    }

    /// What the band rests on, in words.
    pub fn band_basis(&self) -> String {
        match &self.validation {
            Some(v) => format!(
                "held-out error of {} measured runs ({}): predicted/measured step time {:.2}..{:.2}",
                v.runs, v.basis, v.ratio_low, v.ratio_high
            ),
            None => format!(
                "unvalidated: no measured runs of this machine in the repository, so a wide default band (x{:.1} to x{:.1})",
                UNVALIDATED_RATIOS.0, UNVALIDATED_RATIOS.1
            ),
        }
    }
}
