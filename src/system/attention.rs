//! Attention kernels from measured tables: the causal prefill forward's efficiency by head
//! size, sequence length and parallel work, single measured shapes (forward and backward), and
//! decode attention's bandwidth efficiency (for serving).

use super::SystemProfile;
use crate::error::{Error, Result, positive_f64};
use crate::hardware::{Dtype, GpuSpec};
use serde::{Deserialize, Serialize};

/// The forward of causal flash attention measured on a grid: `efficiency[(h·|s| + i)·|w| + j]`
/// is the fraction of the bf16 dense peak reached over the causal FLOPs `2·b·H·s²·d` (the two
/// GEMMs of each head, halved by the mask) with head size `head_dims[h]`, sequence length
/// `seq_lens[i]` and `b·H` about `batch_heads[j]` (the median over the measured batches,
/// head counts and key/value groupings of that bucket).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionGrid {
    /// Head sizes.
    pub head_dims: Vec<u64>,
    /// Sequence lengths.
    pub seq_lens: Vec<u64>,
    /// Sequences × heads, powers of two.
    pub batch_heads: Vec<u64>,
    /// Efficiencies.
    pub efficiency: Vec<f64>,
}

/// One measured attention shape (SimuMax's form): forward and backward efficiencies over the
/// causal FLOPs (the backward counts 2.5 times the forward's).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AttentionSample {
    /// Sequences.
    pub batch: u64,
    /// Tokens per sequence.
    pub seq_len: u64,
    /// Query heads.
    pub heads: u64,
    /// Key/value heads.
    pub kv_heads: u64,
    /// Query/key width.
    pub d_qk: u64,
    /// Value width.
    pub d_v: u64,
    /// Forward efficiency.
    pub forward: f64,
    /// Backward efficiency.
    pub backward: f64,
}

/// Decode attention (one new token per sequence over a KV cache) measured on a grid:
/// `efficiency` is the fraction of the HBM bandwidth reached reading the cache, by cache dtype,
/// head size, cached tokens and sequences × kv heads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodeGrid {
    /// `bf16` or `fp8`.
    pub kv_dtypes: Vec<String>,
    /// Head sizes.
    pub head_dims: Vec<u64>,
    /// Cached tokens.
    pub kv_lens: Vec<u64>,
    /// Sequences × kv heads, powers of two.
    pub batch_kv_heads: Vec<u64>,
    /// Efficiencies.
    pub efficiency: Vec<f64>,
}

fn axis(a: &[u64], name: &'static str) -> Result<()> {
    if a.is_empty() || a.contains(&0) || !a.is_sorted_by(|x, y| x < y) {
        return Err(Error::Inconsistent {
            rule: "a table's axis is sorted, positive and not empty",
            detail: format!("{name} has {} values", a.len()),
        });
    }
    Ok(())
}

fn efficiencies(v: &[f64], cells: usize, what: &'static str) -> Result<()> {
    if v.len() != cells {
        return Err(Error::Inconsistent {
            rule: "an efficiency grid holds one value per cell",
            detail: format!("{what}: {} values for {cells} cells", v.len()),
        });
    }
    for &e in v {
        crate::error::in_range_f64(e, 1e-9, 4.0, what, "in (0, 4]")?;
    }
    Ok(())
}

impl AttentionGrid {
    pub(crate) fn validate(&self) -> Result<()> {
        axis(&self.head_dims, "attention head_dims")?;
        axis(&self.seq_lens, "attention seq_lens")?;
        axis(&self.batch_heads, "attention batch_heads")?;
        efficiencies(
            &self.efficiency,
            self.head_dims.len() * self.seq_lens.len() * self.batch_heads.len(),
            "attention efficiency",
        )
    }

    /// Efficiency at head size `d`, sequence `s` and parallel work `bh`, interpolated in log
    /// space on log efficiency and clamped to the grid's box.
    fn at(&self, d: u64, s: u64, bh: u64) -> f64 {
        let (h0, h1, wh) = bracket(&self.head_dims, d as f64);
        let (i0, i1, wi) = bracket(&self.seq_lens, s as f64);
        let (j0, j1, wj) = bracket(&self.batch_heads, bh as f64);
        let (ns, nb) = (self.seq_lens.len(), self.batch_heads.len());
        let e = |h: usize, i: usize, j: usize| self.efficiency[(h * ns + i) * nb + j].ln();
        let lerp = |a: f64, b: f64, w: f64| a + (b - a) * w;
        let plane = |h: usize| {
            lerp(
                lerp(e(h, i0, j0), e(h, i0, j1), wj),
                lerp(e(h, i1, j0), e(h, i1, j1), wj),
                wi,
            )
        };
        lerp(plane(h0), plane(h1), wh).exp()
    }
}

impl AttentionSample {
    pub(crate) fn validate(&self) -> Result<()> {
        for (v, f) in [
            (self.batch, "attention sample batch"),
            (self.seq_len, "attention sample seq_len"),
            (self.heads, "attention sample heads"),
            (self.kv_heads, "attention sample kv_heads"),
            (self.d_qk, "attention sample d_qk"),
            (self.d_v, "attention sample d_v"),
        ] {
            crate::error::positive(v, f)?;
        }
        crate::error::in_range_f64(self.forward, 1e-6, 4.0, "attention forward", "in (0, 4]")?;
        crate::error::in_range_f64(self.backward, 1e-6, 4.0, "attention backward", "in (0, 4]")?;
        Ok(())
    }
}

impl DecodeGrid {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.kv_dtypes.is_empty() {
            return Err(Error::ZeroSize {
                field: "decode kv_dtypes",
            });
        }
        axis(&self.head_dims, "decode head_dims")?;
        axis(&self.kv_lens, "decode kv_lens")?;
        axis(&self.batch_kv_heads, "decode batch_kv_heads")?;
        efficiencies(
            &self.efficiency,
            self.kv_dtypes.len()
                * self.head_dims.len()
                * self.kv_lens.len()
                * self.batch_kv_heads.len(),
            "decode efficiency",
        )
    }

    /// Bandwidth efficiency reading a cache of `kv_dtype` at head size `d`, `kv_len` cached
    /// tokens and `bk` sequences × kv heads (interpolated in log space, clamped to the box;
    /// the nearest dtype row when the dtype was not measured).
    pub fn efficiency_at(&self, kv_dtype: &str, d: u64, kv_len: u64, bk: u64) -> f64 {
        let t = self
            .kv_dtypes
            .iter()
            .position(|x| x == kv_dtype)
            .unwrap_or(0);
        let (h0, h1, wh) = bracket(&self.head_dims, d as f64);
        let (i0, i1, wi) = bracket(&self.kv_lens, kv_len as f64);
        let (j0, j1, wj) = bracket(&self.batch_kv_heads, bk as f64);
        let (nh, nl, nb) = (
            self.head_dims.len(),
            self.kv_lens.len(),
            self.batch_kv_heads.len(),
        );
        let e =
            |h: usize, i: usize, j: usize| self.efficiency[((t * nh + h) * nl + i) * nb + j].ln();
        let lerp = |a: f64, b: f64, w: f64| a + (b - a) * w;
        let plane = |h: usize| {
            lerp(
                lerp(e(h, i0, j0), e(h, i0, j1), wj),
                lerp(e(h, i1, j0), e(h, i1, j1), wj),
                wi,
            )
        };
        lerp(plane(h0), plane(h1), wh).exp()
    }
}

/// Indices around `x` on a sorted axis and the upper one's weight in log space, `x` clamped.
pub(crate) fn bracket(axis: &[u64], x: f64) -> (usize, usize, f64) {
    let last = axis.len() - 1;
    if x <= axis[0] as f64 {
        return (0, 0, 0.0);
    }
    if x >= axis[last] as f64 {
        return (last, last, 0.0);
    }
    let hi = axis.partition_point(|&a| (a as f64) < x);
    let lo = hi - 1;
    let (a, b) = ((axis[lo] as f64).ln(), (axis[hi] as f64).ln());
    (lo, hi, (x.ln() - a) / (b - a))
}

/// Forward and backward seconds (see [`SystemProfile::attention_seconds`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn seconds(
    p: &SystemProfile,
    gpu: &GpuSpec,
    batch: u64,
    queries: u64,
    attended: f64,
    heads: u64,
    kv_heads: u64,
    d_qk: u64,
    d_v: u64,
) -> Result<(f64, f64)> {
    for (v, f) in [
        (batch, "attention batch"),
        (queries, "attention queries"),
        (heads, "attention heads"),
        (kv_heads, "attention kv heads"),
        (d_qk, "attention d_qk"),
        (d_v, "attention d_v"),
    ] {
        crate::error::positive(v, f)?;
    }
    positive_f64(attended, "attended keys")?;
    let peak = gpu.peak_flops_per_s(Dtype::Bf16)?;
    // Two GEMMs per head over the keys each query attends.
    let flops = 2.0 * batch as f64 * heads as f64 * queries as f64 * attended * (d_qk + d_v) as f64;
    let d = (d_qk + d_v) / 2;
    let bh = batch.saturating_mul(heads);
    if !p.attention_shapes.is_empty() {
        let l = |x: u64| (x as f64).ln();
        let dist = |s: &AttentionSample| {
            (l(s.seq_len) - l(queries)).powi(2)
                + (l(s.batch * s.heads) - l(bh)).powi(2)
                + (l(s.d_qk + s.d_v) - l(d_qk + d_v)).powi(2)
                + (l(s.kv_heads) - l(kv_heads)).powi(2)
        };
        if let Some(s) = p
            .attention_shapes
            .iter()
            .min_by(|a, b| dist(a).total_cmp(&dist(b)))
        {
            return Ok((
                flops / (s.forward * peak),
                2.5 * flops / (s.backward * peak),
            ));
        }
    }
    let grid = p.attention.as_ref().ok_or(Error::Inconsistent {
        rule: "a system profile times attention from its measured kernels",
        detail: format!("{} has no attention table", p.name),
    })?;
    let forward = flops / (grid.at(d, queries, bh) * peak);
    Ok((forward, forward * p.attention_backward_ratio))
}
