//! Calibration against measured runs: prediction errors and one fitted software efficiency.

use super::{Cluster, StepOptions, step_time};
use crate::error::{Error, Result, positive_f64};
use crate::hardware::GemmTimer;
use crate::model::Transformer;
use crate::parallel::ParallelLayout;
use serde::{Deserialize, Serialize};

/// A measured run to calibrate against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeasuredRun {
    /// The model.
    pub model: Transformer,
    /// Its layout.
    pub layout: ParallelLayout,
    /// Measured TFLOP/s per GPU in [`super::StepTime::tflops_per_gpu`]'s accounting (every matmul with
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
///
/// # Errors
/// As [`super::step_time`] for any run.
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
///
/// # Errors
/// No runs, a measured figure that is not finite and positive, or [`super::step_time`]'s errors.
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
