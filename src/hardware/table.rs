//! A timer backed by measured GEMM timings (e.g. written by the `gemm_probe` example on a GPU).
//!
//! JSON format: `{"gpu": "h200", "entries": [{"m": .., "n": .., "k": .., "batch": 1,
//! "dtype": "bf16", "seconds": ..}, ...]}`. A shape that is not in the table is, by
//! [`Missing`] policy, either an error ([`Error::MissingTiming`]) or scaled from the nearest
//! measured shape of the same dtype by the FLOPs ratio (nearest in `log m, log n, log k,
//! log batch`) — a throughput-preserving extrapolation that ignores quantization effects of
//! the new shape, so prefer tables that cover the shapes you time.

use super::{Gemm, GemmTimer};
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

/// A [`GemmTimer`] that looks timings up.
#[derive(Debug, Clone)]
pub struct TableTimer {
    gpu: String,
    entries: Vec<TableEntry>,
    index: HashMap<Gemm, f64>,
    missing: Missing,
}

impl TableTimer {
    /// Build from a table; every timing must be finite and positive.
    pub fn new(table: TimingTable, missing: Missing) -> Result<TableTimer> {
        let mut index = HashMap::new();
        for e in &table.entries {
            crate::error::positive_f64(e.seconds, "table seconds")?;
            let g = Gemm {
                m: e.m,
                n: e.n,
                k: e.k,
                batch: e.batch,
                dtype: e.dtype,
            };
            g.validate()?;
            index.insert(g, e.seconds);
        }
        Ok(TableTimer {
            gpu: table.gpu,
            entries: table.entries,
            index,
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
    pub fn from_json(text: &str, missing: Missing) -> Result<TableTimer> {
        let table: TimingTable =
            serde_json::from_str(text).map_err(|e| Error::Json(e.to_string()))?;
        TableTimer::new(table, missing)
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

impl GemmTimer for TableTimer {
    fn gemm_seconds(&self, gemm: &Gemm) -> Result<f64> {
        gemm.validate()?;
        if let Some(s) = self.index.get(gemm) {
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
                let l = |x: u64| (x as f64).ln();
                let dist = |e: &TableEntry| {
                    (l(e.m) - l(gemm.m)).powi(2)
                        + (l(e.n) - l(gemm.n)).powi(2)
                        + (l(e.k) - l(gemm.k)).powi(2)
                        + (l(e.batch) - l(gemm.batch)).powi(2)
                };
                let nearest = self
                    .entries
                    .iter()
                    .filter(|e| e.dtype == gemm.dtype)
                    .min_by(|a, b| dist(a).total_cmp(&dist(b)))
                    .ok_or(missing)?;
                let f = |e: &TableEntry| e.m as f64 * e.n as f64 * e.k as f64 * e.batch as f64;
                Ok(nearest.seconds * gemm.flops() / (2.0 * f(nearest)))
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
