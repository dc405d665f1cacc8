//! GEMM latency from measured tables: a grid by `(m, n, k)` per precision, or single measured
//! shapes by pass (see the module docs of [`super`]).

use super::SystemProfile;
use crate::error::{Error, Result, positive_f64};
use crate::hardware::analytical::default_seconds;
use crate::hardware::{Dtype, Gemm, GemmPass, GpuSpec};
use serde::{Deserialize, Serialize};

/// Measured GEMM latencies of one precision on a grid: `micros[(i·|n| + j)·|k| + l]` is the
/// time of `C[m_i × n_j] = A[m_i × k_l]·B[k_l × n_j]` in microseconds. Axes are sorted and
/// positive; the latencies are made non-decreasing along `m` when read (the tables' noise can
/// put a larger `m` a hair below a smaller one; more tokens never take less time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GemmGrid {
    /// `bf16`, `fp8` (per-tensor scales), `fp8_block` (block or MX scales) or `nvfp4`.
    pub precision: String,
    /// Rows (tokens).
    pub m: Vec<u64>,
    /// Output features.
    pub n: Vec<u64>,
    /// Input features.
    pub k: Vec<u64>,
    /// Latencies, microseconds.
    pub micros: Vec<f64>,
    /// Grid cells the source did not measure, filled from the nearest measured `m` (reported).
    #[serde(default)]
    pub filled_cells: u64,
}

/// One measured GEMM shape with its efficiency (fraction of the precision's dense peak).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GemmSample {
    /// The pass (forward, data gradient, weight gradient: their layouts differ).
    pub pass: GemmPass,
    /// Rows.
    pub m: u64,
    /// Columns.
    pub n: u64,
    /// Inner dimension.
    pub k: u64,
    /// Independent products (a grouped GEMM's experts).
    #[serde(default = "one")]
    pub batch: u64,
    /// Fraction of the bf16 dense peak reached.
    pub efficiency: f64,
}

fn one() -> u64 {
    1
}

impl GemmSample {
    pub(crate) fn validate(&self) -> Result<()> {
        for (v, f) in [
            (self.m, "gemm sample m"),
            (self.n, "gemm sample n"),
            (self.k, "gemm sample k"),
            (self.batch, "gemm sample batch"),
        ] {
            crate::error::positive(v, f)?;
        }
        crate::error::in_range_f64(
            self.efficiency,
            1e-4,
            1.0,
            "gemm sample efficiency",
            "in (0, 1]",
        )?;
        Ok(())
    }
}

fn sorted_positive(axis: &[u64], name: &'static str) -> Result<()> {
    if axis.is_empty() || axis.contains(&0) || !axis.is_sorted_by(|a, b| a < b) {
        return Err(Error::Inconsistent {
            rule: "a table's axis is sorted, positive and not empty",
            detail: format!("{name} has {} values", axis.len()),
        });
    }
    Ok(())
}

impl GemmGrid {
    pub(crate) fn validate(&self) -> Result<()> {
        sorted_positive(&self.m, "m")?;
        sorted_positive(&self.n, "n")?;
        sorted_positive(&self.k, "k")?;
        let cells = self.m.len() * self.n.len() * self.k.len();
        if self.micros.len() != cells {
            return Err(Error::Inconsistent {
                rule: "a GEMM grid holds one latency per (m, n, k)",
                detail: format!(
                    "{} latencies for {} × {} × {} shapes",
                    self.micros.len(),
                    self.m.len(),
                    self.n.len(),
                    self.k.len()
                ),
            });
        }
        for &t in &self.micros {
            positive_f64(t, "gemm latency")?;
        }
        Ok(())
    }

    /// Make the latencies non-decreasing along `m` (a running maximum over rows).
    pub(crate) fn make_monotone(&mut self) {
        let row = self.n.len() * self.k.len();
        for i in 1..self.m.len() {
            for c in 0..row {
                let prev = self.micros[(i - 1) * row + c];
                let cur = &mut self.micros[i * row + c];
                if *cur < prev {
                    *cur = prev;
                }
            }
        }
    }

    /// Seconds at a point inside the grid's box, interpolated linearly in `(log m, log n,
    /// log k)` on log latency; the table's value at its points.
    fn interpolate(&self, m: u64, n: u64, k: u64) -> f64 {
        let (i0, i1, wi) = bracket(&self.m, m);
        let (j0, j1, wj) = bracket(&self.n, n);
        let (l0, l1, wl) = bracket(&self.k, k);
        let (nn, nk) = (self.n.len(), self.k.len());
        let at = |i: usize, j: usize, l: usize| self.micros[(i * nn + j) * nk + l].ln();
        let lerp = |a: f64, b: f64, w: f64| a + (b - a) * w;
        let plane = |i: usize| {
            lerp(
                lerp(at(i, j0, l0), at(i, j0, l1), wl),
                lerp(at(i, j1, l0), at(i, j1, l1), wl),
                wj,
            )
        };
        lerp(plane(i0), plane(i1), wi).exp() * 1e-6
    }

    /// The point of the grid's box nearest `(m, n, k)` (each coordinate clamped).
    fn clamp(&self, m: u64, n: u64, k: u64) -> (u64, u64, u64) {
        let c = |axis: &[u64], x: u64| x.clamp(axis[0], axis[axis.len() - 1]);
        (c(&self.m, m), c(&self.n, n), c(&self.k, k))
    }
}

/// The grid indices around `x` and the weight of the upper one, in log space (`x` clamped to
/// the axis).
fn bracket(axis: &[u64], x: u64) -> (usize, usize, f64) {
    let last = axis.len() - 1;
    let hi = axis.partition_point(|&a| a < x).min(last);
    if axis[hi] == x || hi == 0 {
        return (hi, hi, 0.0);
    }
    let lo = hi - 1;
    if x >= axis[last] {
        return (last, last, 0.0);
    }
    let (a, b) = ((axis[lo] as f64).ln(), (axis[hi] as f64).ln());
    (lo, hi, ((x as f64).ln() - a) / (b - a))
}

/// The grid name a GEMM reads: `bf16` for 16-bit, `fp8` per-tensor, `fp8_block` for block or
/// MX scales (falling back to `fp8` where the profile has no block rows), `nvfp4` for 4-bit
/// (MXFP4 too: the tables measure NVFP4 only, and both run on the same Tensor Core path; an
/// assumption).
fn grid_for<'a>(p: &'a SystemProfile, g: &Gemm) -> Option<&'a GemmGrid> {
    let find = |name: &str| p.gemm.iter().find(|t| t.precision == name);
    match g.dtype {
        Dtype::Bf16 | Dtype::Fp16 => find("bf16"),
        Dtype::Fp8 if g.block_scaled => find("fp8_block").or_else(|| find("fp8")),
        Dtype::Fp8 => find("fp8"),
        Dtype::Fp4 => find("nvfp4"),
        Dtype::Fp32 | Dtype::Tf32 => None,
    }
}

/// The GEMM as one kernel: a grouped GEMM's `batch` products of `m` rows as one of
/// `batch · m` rows (the rank's local experts in one launch).
fn as_one_kernel(g: &Gemm) -> Result<Gemm> {
    Ok(Gemm {
        m: crate::error::mul(g.m, g.batch, "grouped GEMM rows")?,
        batch: 1,
        ..*g
    })
}

/// The same GEMM with its feature dimensions rounded up to the Tensor Core alignment: the
/// measured tables hold aligned shapes, so a misaligned one pays the analytical model's
/// penalty on top (`A(g) / A(aligned g)`).
fn aligned(g: &Gemm) -> Gemm {
    let a = g.dtype.alignment_elements();
    Gemm {
        n: g.n.div_ceil(a) * a,
        k: g.k.div_ceil(a) * a,
        ..*g
    }
}

/// Seconds of `g` on the profile's machine (before its multiplier).
pub(crate) fn seconds(p: &SystemProfile, g: &Gemm, gpu: &GpuSpec) -> Result<f64> {
    g.validate()?;
    let one = as_one_kernel(g)?;
    let fitted = aligned(&one);
    let misaligned = if fitted == one {
        1.0
    } else {
        default_seconds(gpu, &one)? / default_seconds(gpu, &fitted)?
    };
    if let Some(grid) = grid_for(p, &fitted) {
        let (m, n, k) = grid.clamp(fitted.m, fitted.n, fitted.k);
        let inside = grid.interpolate(m, n, k);
        let mut t = inside;
        if m != fitted.m {
            // Rows outside the grid: the analytical model's growth in rows from the box's edge.
            let edge = Gemm { m, n, k, ..fitted };
            t *= default_seconds(
                gpu,
                &Gemm {
                    m: fitted.m,
                    ..edge
                },
            )? / default_seconds(gpu, &edge)?;
        }
        if (n, k) != (fitted.n, fitted.k) {
            // Features outside the grid: the analytical model's ratio taken at the grid's
            // largest row count, one factor for every `m` so the time stays monotone in rows.
            let rows = grid.m[grid.m.len() - 1];
            let edge = Gemm {
                m: rows,
                n,
                k,
                ..fitted
            };
            t *= default_seconds(
                gpu,
                &Gemm {
                    n: fitted.n,
                    k: fitted.k,
                    ..edge
                },
            )? / default_seconds(gpu, &edge)?;
        }
        return Ok(t * misaligned);
    }
    if !p.gemm_shapes.is_empty() && matches!(g.dtype, Dtype::Bf16 | Dtype::Fp16) {
        return Ok(sample_seconds(p, g, gpu)? * misaligned.max(1.0));
    }
    Err(Error::Inconsistent {
        rule: "a system profile times GEMMs only in the precisions it measured",
        detail: format!(
            "{} has no {}{} GEMMs (measured: {})",
            p.name,
            g.dtype,
            if g.block_scaled { " block-scaled" } else { "" },
            p.gemm
                .iter()
                .map(|t| t.precision.as_str())
                .chain((!p.gemm_shapes.is_empty()).then_some("bf16 shapes"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// A GEMM from single measured shapes: the shape itself when measured for its pass, else the
/// analytical model scaled to agree with the nearest measured shape of the same pass (nearest
/// in `(log m, log n, log k, log batch)`).
fn sample_seconds(p: &SystemProfile, g: &Gemm, gpu: &GpuSpec) -> Result<f64> {
    let peak = gpu.peak_flops_per_s(Dtype::Bf16)?;
    let l = |x: u64| (x as f64).ln();
    let dist = |s: &GemmSample| {
        (l(s.m) - l(g.m)).powi(2)
            + (l(s.n) - l(g.n)).powi(2)
            + (l(s.k) - l(g.k)).powi(2)
            + (l(s.batch) - l(g.batch)).powi(2)
    };
    let nearest = p
        .gemm_shapes
        .iter()
        .filter(|s| s.pass == g.pass)
        .min_by(|a, b| dist(a).total_cmp(&dist(b)))
        .or_else(|| {
            p.gemm_shapes
                .iter()
                .min_by(|a, b| dist(a).total_cmp(&dist(b)))
        })
        .ok_or(Error::Inconsistent {
            rule: "a system profile with measured shapes has at least one",
            detail: p.name.clone(),
        })?;
    let measured = |s: &GemmSample| {
        2.0 * s.m as f64 * s.n as f64 * s.k as f64 * s.batch as f64 / (s.efficiency * peak)
    };
    if dist(nearest) == 0.0 {
        return Ok(measured(nearest));
    }
    let shape = |s: &GemmSample| Gemm {
        m: s.m,
        n: s.n,
        k: s.k,
        batch: s.batch,
        ..*g
    };
    Ok(default_seconds(gpu, g)? * measured(nearest) / default_seconds(gpu, &shape(nearest))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> GemmGrid {
        // t = m·n·k / 1e9 µs, a perfectly linear machine.
        let (m, n, k) = (vec![128, 256, 1024], vec![64, 4096], vec![64, 4096]);
        let mut micros = Vec::new();
        for &a in &m {
            for &b in &n {
                for &c in &k {
                    micros.push((a * b * c) as f64 / 1e9);
                }
            }
        }
        GemmGrid {
            precision: "bf16".into(),
            m,
            n,
            k,
            micros,
            filled_cells: 0,
        }
    }

    /// The table's value at its points, and log-linear interpolation between them (exact for
    /// a power law).
    #[test]
    fn interpolation_returns_points_and_power_laws() {
        let g = grid();
        assert!((g.interpolate(256, 4096, 64) * 1e6 - (256 * 4096 * 64) as f64 / 1e9).abs() < 1e-9);
        let mid = g.interpolate(512, 512, 512) * 1e6;
        assert!(
            (mid / ((512u64 * 512 * 512) as f64 / 1e9) - 1.0).abs() < 1e-9,
            "{mid}"
        );
    }

    #[test]
    fn monotone_in_rows() {
        let mut g = grid();
        g.micros[(2 * 2 + 1) * 2 + 1] = 0.001; // m = 1024 faster than m = 256
        g.make_monotone();
        assert!(g.interpolate(1024, 4096, 4096) >= g.interpolate(256, 4096, 4096));
    }
}
