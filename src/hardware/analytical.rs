//! The default analytical GEMM timer: tile and wave quantization plus a roofline.
//!
//! Following NVIDIA's "Matrix Multiplication Background" user guide (Deep Learning Performance
//! documentation):
//!
//! * **Tile quantization**: the output is computed in tiles (cuBLAS uses 256×128, 128×256,
//!   128×128, 64×128, 64×64, ...); a partial tile costs a full one. The timer tries every tile
//!   of [`AnalyticalTimer::tiles`] and keeps the fastest, as cuBLAS heuristics pick a kernel.
//! * **Wave quantization**: tiles run in waves of one per SM: `waves = ceil(tiles / SMs)`.
//! * **k quantization**: the main loop steps through `k` in slices of 128 bytes (64 elements of
//!   a 16-bit type: the guide's "multiples of 64 on A100" advice), so `k` is rounded up to that.
//! * **Alignment**: Tensor Cores need the leading dimensions — the feature dimensions `k` (of
//!   `A[m×k]`) and `n` (of `B[k×n]` and `C[m×n]`) in row-major storage — to be multiples of 16
//!   bytes (8 fp16 elements); otherwise the GEMM runs on CUDA cores at the fp32 peak. This is
//!   cuBLAS's behaviour before 11.0 and, in the BigScience measurements
//!   (`bloom_throughput_tp8.json`: hidden 13824 with 128 heads, head size 108, ran at 99.8
//!   TFLOPs against 133.9 with 64 heads), still the order of the penalty seen with head sizes
//!   that are not a multiple of 8. The row count `m` (tokens, or tokens per expert) needs no
//!   alignment: it only strides along the leading dimension.
//! * **Roofline**: a GEMM also takes at least its minimal traffic over HBM bandwidth.
//!
//! Constants: [`AnalyticalTimer::efficiency`] is the fraction of dense peak that a large,
//! aligned, wave-filling GEMM reaches (default from [`GpuSpec::gemm_efficiency`]);
//! [`TILE_REUSE_HALF`] shapes how much slower small tiles run per SM (assumed, see its docs);
//! [`AnalyticalTimer::memory_efficiency`] is the attainable fraction of HBM bandwidth;
//! [`AnalyticalTimer::launch_seconds`] the fixed cost of a kernel launch.

use super::{Dtype, Gemm, GemmTimer, GpuSpec};
use crate::error::{Error, Result};
use itertools::Itertools;
use serde::{Deserialize, Serialize};

/// Per-element operand reuse `r = tm·tn/(tm + tn)` at which a tile reaches half of its
/// saturation throughput in the model `r / (r + TILE_REUSE_HALF)` (normalised to the largest
/// tile). Assumed, not measured: it makes 128×128 tiles ~5% and 64×64 tiles ~21% slower per SM
/// than 256×128, so small tiles win only where quantization makes the big ones waste more.
pub const TILE_REUSE_HALF: f64 = 16.0;

/// cuBLAS-like output tiles (rows × columns), NVIDIA "Matrix Multiplication Background".
pub const DEFAULT_TILES: &[(u64, u64)] = &[
    (256, 128),
    (128, 256),
    (128, 128),
    (256, 64),
    (64, 256),
    (128, 64),
    (64, 128),
    (64, 64),
];

/// Bytes of `k` consumed per main-loop step (64 elements of a 16-bit type).
pub const K_SLICE_BYTES: u64 = 128;

/// Fraction of HBM bandwidth that streaming kernels attain, used for GEMM rooflines and
/// memory-bound kernels alike. An assumption, not a measurement of this repository: copy
/// kernels are commonly reported at 85–90% of the datasheet bandwidth on A100 and H100.
pub const ATTAINABLE_HBM_FRACTION: f64 = 0.85;

/// Bytes that every dimension must be a multiple of for Tensor Cores.
pub const TENSOR_CORE_ALIGN_BYTES: u64 = 16;

/// The analytical timer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyticalTimer {
    /// The GPU.
    pub gpu: GpuSpec,
    /// Candidate output tiles.
    pub tiles: Vec<(u64, u64)>,
    /// Fraction of dense peak reached by a large aligned GEMM.
    pub efficiency: f64,
    /// Fraction of HBM bandwidth attainable.
    pub memory_efficiency: f64,
    /// Fixed seconds per kernel launch.
    pub launch_seconds: f64,
}

impl AnalyticalTimer {
    /// Default constants for a GPU: its [`GpuSpec::gemm_efficiency`],
    /// [`ATTAINABLE_HBM_FRACTION`] of HBM bandwidth, [`DEFAULT_LAUNCH_SECONDS`] per launch.
    pub fn new(gpu: GpuSpec) -> AnalyticalTimer {
        AnalyticalTimer {
            efficiency: gpu.gemm_efficiency,
            gpu,
            tiles: DEFAULT_TILES.to_vec(),
            memory_efficiency: ATTAINABLE_HBM_FRACTION,
            launch_seconds: DEFAULT_LAUNCH_SECONDS,
        }
    }

    fn validate(&self) -> Result<()> {
        crate::error::positive(self.gpu.sm_count, "sm_count")?;
        for (field, v) in [
            ("efficiency", self.efficiency),
            ("memory_efficiency", self.memory_efficiency),
            ("memory_bytes_per_s", self.gpu.memory_bytes_per_s),
        ] {
            crate::error::positive_f64(v, field)?;
        }
        crate::error::non_negative_f64(self.launch_seconds, "launch_seconds")?;
        if self.tiles.is_empty() || self.tiles.iter().any(|&(a, b)| a == 0 || b == 0) {
            return Err(Error::Inconsistent {
                rule: "tile list must be non-empty with positive tiles",
                detail: format!(
                    "tiles {}",
                    self.tiles
                        .iter()
                        .map(|(a, b)| format!("{a}×{b}"))
                        .join(", ")
                ),
            });
        }
        Ok(())
    }

    /// Whether the leading dimensions (`n` and `k`) meet the Tensor Core alignment.
    pub fn aligned(gemm: &Gemm) -> bool {
        let bits = gemm.dtype.bits();
        [gemm.n, gemm.k].iter().all(|&d| {
            (u128::from(d) * u128::from(bits)) % (8 * u128::from(TENSOR_CORE_ALIGN_BYTES)) == 0
        })
    }

    /// Compute-bound seconds with the best tile (no launch cost, no roofline).
    ///
    /// # Errors
    /// A GEMM with a zero dimension, or a dtype the GPU has no peak for.
    pub fn compute_seconds(&self, gemm: &Gemm) -> Result<f64> {
        self.validate()?;
        compute_seconds(&self.gpu, &self.tiles, self.efficiency, gemm)
    }
}

/// [`AnalyticalTimer::compute_seconds`] with the timer's constants as arguments (no
/// allocation: the system profiles anchor it per GEMM).
pub(crate) fn compute_seconds(
    gpu: &GpuSpec,
    tiles: &[(u64, u64)],
    efficiency: f64,
    gemm: &Gemm,
) -> Result<f64> {
    gemm.validate()?;
    let tc = gemm.dtype != Dtype::Fp32 && AnalyticalTimer::aligned(gemm);
    let peak = if tc {
        gpu.peak_flops_per_s(gemm.dtype)?
    } else {
        gpu.peak_flops_per_s(Dtype::Fp32)?
    };
    let sms = gpu.sm_count as f64;
    let per_sm = peak * efficiency / sms;
    let slice = (8 * K_SLICE_BYTES / gemm.dtype.bits()).max(1);
    let k_eff = gemm.k.div_ceil(slice) as f64 * slice as f64;
    let reuse = |tm: f64, tn: f64| {
        let r = tm * tn / (tm + tn);
        r / (r + TILE_REUSE_HALF)
    };
    let best_reuse = tiles
        .iter()
        .map(|&(a, b)| reuse(a as f64, b as f64))
        .fold(0.0f64, f64::max);
    let mut best = f64::INFINITY;
    for &(tm, tn) in tiles {
        let tiles = gemm.m.div_ceil(tm) as f64 * gemm.n.div_ceil(tn) as f64 * gemm.batch as f64;
        let waves = (tiles / sms).ceil();
        let tile_eff = reuse(tm as f64, tn as f64) / best_reuse;
        let t = waves * 2.0 * tm as f64 * tn as f64 * k_eff / (per_sm * tile_eff);
        best = best.min(t);
    }
    Ok(best)
}

/// The analytical GEMM time of `gemm` on `gpu` with the default constants of
/// [`AnalyticalTimer::new`] (compute with the best tile, roofline, launch), without building a
/// timer.
pub(crate) fn default_seconds(gpu: &GpuSpec, gemm: &Gemm) -> Result<f64> {
    let compute = compute_seconds(gpu, DEFAULT_TILES, gpu.gemm_efficiency, gemm)?;
    let memory = gemm.min_bytes() / (gpu.memory_bytes_per_s * ATTAINABLE_HBM_FRACTION);
    Ok(compute.max(memory) + DEFAULT_LAUNCH_SECONDS)
}

/// Fixed seconds per kernel launch of the analytical timer: 5 µs, an assumption (a typical CUDA
/// launch plus cuBLAS setup).
pub const DEFAULT_LAUNCH_SECONDS: f64 = 5e-6;

impl GemmTimer for AnalyticalTimer {
    /// `max(compute with the best tile, minimal HBM traffic / attainable bandwidth) + launch`.
    fn gemm_seconds(&self, gemm: &Gemm) -> Result<f64> {
        let compute = self.compute_seconds(gemm)?;
        let memory = gemm.min_bytes() / (self.gpu.memory_bytes_per_s * self.memory_efficiency);
        Ok(compute.max(memory) + self.launch_seconds)
    }

    fn describe(&self) -> String {
        format!(
            "analytical tile/wave model of {} ({} SMs, {:.0}% of peak)",
            self.gpu.name,
            self.gpu.sm_count,
            self.efficiency * 100.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NVIDIA guide example: on a 108-SM A100 with 256×128 tiles, a GEMM with exactly 108
    /// tiles runs in one wave and one with 109 tiles takes two.
    #[test]
    fn wave_quantization() {
        let t = AnalyticalTimer {
            tiles: vec![(256, 128)],
            launch_seconds: 0.0,
            ..AnalyticalTimer::new(GpuSpec::a100_80gb())
        };
        let one = t
            .compute_seconds(&Gemm::bf16(256 * 108, 128, 4096))
            .unwrap();
        let two = t
            .compute_seconds(&Gemm::bf16(256 * 109, 128, 4096))
            .unwrap();
        assert!((two / one - 2.0).abs() < 1e-12);
    }

    #[test]
    fn misaligned_falls_back_to_cuda_cores() {
        let t = AnalyticalTimer::new(GpuSpec::a100_80gb());
        let a = t.compute_seconds(&Gemm::bf16(4096, 4096, 4096)).unwrap();
        let b = t.compute_seconds(&Gemm::bf16(4096, 4096, 4100)).unwrap();
        assert!(b / a > 10.0, "{}", b / a);
    }
}
