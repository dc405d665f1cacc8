//! A timer backed by measured GEMM timings (e.g. written by the `gemm_probe` example on a GPU).
//!
//! JSON format: `{"gpu": "h200", "entries": [{"m": .., "n": .., "k": .., "batch": 1,
//! "dtype": "bf16", "seconds": ..}, ...]}`. A shape that is not in the table is, by
//! [`Missing`] policy, either an error ([`Error::MissingTiming`]) or scaled from the nearest
//! measured shape of the same dtype by the FLOPs ratio (nearest in `log m, log n, log k,
//! log batch`) — a throughput-preserving extrapolation that ignores quantization effects of
//! the new shape, so prefer tables that cover the shapes you time.

use super::{Gemm, GemmTimer, GpuSpec};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TableEntry {
    /// Rows.
    pub m: u64,
    /// Columns.
    pub n: u64,
    /// Inner dimension.
    pub k: u64,
    /// Batch count.
    #[serde(default = "one")]
    pub batch: u64,
    /// Element type.
    pub dtype: super::Dtype,
    /// Measured seconds (median of several runs).
    pub seconds: f64,
}

fn one() -> u64 {
    1
}

/// What the table does with a shape it has not measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    /// Return [`Error::MissingTiming`].
    #[default]
    Error,
    /// Scale the nearest measured shape (same dtype) by the FLOPs ratio.
    ScaleNearest,
}

/// The serialised table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimingTable {
    /// GPU the timings were measured on.
    pub gpu: String,
    /// Measurements.
    pub entries: Vec<TableEntry>,
}

/// A [`GemmTimer`] that looks timings up: exact shapes in a hash map, the nearest shape of a
/// dtype through entries sorted by `log m` (the search walks outward from the nearest `m` and
/// stops once `m` alone is farther than the best match), both indexed once at construction.
#[derive(Debug, Clone)]
pub struct TableTimer {
    gpu: String,
    entries: Vec<TableEntry>,
    index: HashMap<Gemm, f64>,
    /// Per dtype: `(log m, log n, log k, log batch, seconds, flops)`, sorted by `log m`.
    by_dtype: HashMap<super::Dtype, Vec<[f64; 6]>>,
    missing: Missing,
}

impl TableTimer {
    /// Build from a table; every timing must be finite and positive.
    ///
    /// # Errors
    /// A timing that is not finite and positive, or an entry with a zero dimension.
    pub fn new(table: TimingTable, missing: Missing) -> Result<TableTimer> {
        let mut index = HashMap::new();
        let mut by_dtype: HashMap<super::Dtype, Vec<[f64; 6]>> = HashMap::new();
        for e in &table.entries {
            crate::error::positive_f64(e.seconds, "table seconds")?;
            let g = Gemm {
                m: e.m,
                n: e.n,
                k: e.k,
                batch: e.batch,
                dtype: e.dtype,
                pass: super::GemmPass::Forward,
                block_scaled: false,
            };
            g.validate()?;
            index.insert(g, e.seconds);
            let l = |x: u64| (x as f64).ln();
            by_dtype.entry(e.dtype).or_default().push([
                l(e.m),
                l(e.n),
                l(e.k),
                l(e.batch),
                e.seconds,
                g.flops(),
            ]);
        }
        for v in by_dtype.values_mut() {
            v.sort_by(|a, b| a[0].total_cmp(&b[0]));
        }
        Ok(TableTimer {
            gpu: table.gpu,
            entries: table.entries,
            index,
            by_dtype,
            missing,
        })
    }

    /// Parse the JSON format of the module docs.
    ///
    /// ```
    /// use lmshape::hardware::{Gemm, GemmTimer, TableTimer, Missing};
    /// let t = TableTimer::from_json(r#"{"gpu": "h200", "entries": [
    ///     {"m": 4096, "n": 4096, "k": 4096, "dtype": "bf16", "seconds": 2e-4}]}"#, Missing::ScaleNearest)?;
    /// assert_eq!(t.gemm_seconds(&Gemm::bf16(4096, 4096, 4096))?, 2e-4);
    /// assert!((t.gemm_seconds(&Gemm::bf16(8192, 4096, 4096))? - 4e-4).abs() < 1e-12);
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    ///
    /// # Errors
    /// Text above [`crate::error::MAX_INPUT_BYTES`], invalid JSON ([`Error::Json`]), or the rules of [`TableTimer::new`].
    pub fn from_json(text: &str, missing: Missing) -> Result<TableTimer> {
        crate::error::input_size(text, "timing table")?;
        let table: TimingTable = serde_json::from_str(text).map_err(Error::from)?;
        TableTimer::new(table, missing)
    }

    /// The GPU the table says it was measured on.
    pub fn gpu(&self) -> &str {
        &self.gpu
    }

    /// Check that the table was measured on `gpu` ([`GpuSpec::matches_device`]): timings of
    /// another GPU would give speeds, and MFUs, of that GPU against this one's peak.
    ///
    /// ```
    /// use lmshape::hardware::{GpuSpec, Missing, TableTimer};
    /// let t = TableTimer::from_json(r#"{"gpu": "NVIDIA H100 80GB HBM3", "entries": []}"#, Missing::Error)?;
    /// assert!(t.check_gpu(&GpuSpec::h100_sxm()).is_ok());
    /// assert!(t.check_gpu(&GpuSpec::a100_80gb()).is_err());
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Inconsistent`] naming both GPUs.
    pub fn check_gpu(&self, gpu: &GpuSpec) -> Result<()> {
        if gpu.matches_device(&self.gpu) {
            Ok(())
        } else {
            Err(Error::Inconsistent {
                rule: "a timing table times the GPU it was measured on",
                detail: format!(
                    "the table was measured on {:?}, the cluster's GPU is {}",
                    self.gpu, gpu.name
                ),
            })
        }
    }

    /// Measurements held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The row nearest `gemm` in `(log m, log n, log k, log batch)` among rows sorted by `log m`
/// (ties: the first in sorted order). Walks outward from where `log m` would sit and stops on
/// each side once the `m` distance alone reaches the best distance found.
fn nearest_row<'a>(rows: &'a [[f64; 6]], gemm: &Gemm) -> Option<&'a [f64; 6]> {
    let l = |x: u64| (x as f64).ln();
    let q = [l(gemm.m), l(gemm.n), l(gemm.k), l(gemm.batch)];
    let dist = |r: &[f64; 6]| (0..4).map(|i| (r[i] - q[i]).powi(2)).sum::<f64>();
    let start = rows.partition_point(|r| r[0] < q[0]);
    let mut best: Option<(f64, usize)> = None;
    let mut scan = |indices: &mut dyn Iterator<Item = usize>| {
        for i in indices {
            if best.is_some_and(|(bd, _)| (rows[i][0] - q[0]).powi(2) > bd) {
                break;
            }
            let d = dist(&rows[i]);
            if best.is_none_or(|(bd, bi)| d < bd || (d == bd && i < bi)) {
                best = Some((d, i));
            }
        }
    };
    scan(&mut (start..rows.len()));
    scan(&mut (0..start).rev());
    best.map(|(_, i)| &rows[i])
}

impl GemmTimer for TableTimer {
    fn gemm_seconds(&self, gemm: &Gemm) -> Result<f64> {
        gemm.validate()?;
        // A table measures shapes: the pass and the scaling recipe of a lookup do not matter.
        let key = Gemm {
            pass: super::GemmPass::Forward,
            block_scaled: false,
            ..*gemm
        };
        if let Some(s) = self.index.get(&key) {
            return Ok(*s);
        }
        let missing = Error::MissingTiming {
            m: gemm.m,
            n: gemm.n,
            k: gemm.k,
            batch: gemm.batch,
        };
        match self.missing {
            Missing::Error => Err(missing),
            Missing::ScaleNearest => {
                let nearest = self
                    .by_dtype
                    .get(&gemm.dtype)
                    .and_then(|rows| nearest_row(rows, gemm))
                    .ok_or(missing)?;
                Ok(nearest[4] * gemm.flops() / nearest[5])
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "table of {} timings measured on {}",
            self.entries.len(),
            self.gpu
        )
    }
}
