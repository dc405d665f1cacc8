//! Calibrating a measured machine profile to a user's own steps: a few named multipliers of the
//! profile's facts fitted on log error, regularised toward 1, graded leave-one-out.

use super::{Cluster, StepOptions, step_time};
use crate::error::{Error, Result, positive_f64};
use crate::model::Transformer;
use crate::parallel::ParallelLayout;
use crate::system::{Multipliers, SystemProfile, SystemTimer, Validation};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One measured step of a user's: the model, its layout, the cluster it ran on (its profile is
/// replaced by the one being fitted), the options, and the measured seconds per step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileRun {
    /// A name for reports.
    pub name: String,
    /// The model.
    pub model: Transformer,
    /// Its layout.
    pub layout: ParallelLayout,
    /// The cluster: GPUs per node, overlaps, software efficiency.
    pub cluster: Cluster,
    /// The training setup.
    pub opts: StepOptions,
    /// Measured seconds per optimizer step.
    pub step_seconds: f64,
}

/// What calibration found: the calibrated profile and each run's relative error of the step
/// time (`predicted / measured − 1`) in sample and held out (each run predicted by a fit on the
/// others).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileCalibration {
    /// The base profile with the fitted multipliers, host overhead and held-out validation.
    pub profile: SystemProfile,
    /// In-sample relative errors, in run order.
    pub in_sample: Vec<f64>,
    /// Leave-one-out relative errors (empty with fewer than three runs).
    pub held_out: Vec<f64>,
}

/// Weight of the regularisation toward 1 of each multiplier's logarithm, against the sum of
/// squared log errors of the runs: small, so the runs decide where they can, and a multiplier
/// the runs cannot see stays at 1.
pub const CALIBRATION_PRIOR_WEIGHT: f64 = 0.02;

/// The fitted parameters: log multipliers of GEMMs, attention, memory-bound kernels and
/// collectives, and `u` with a host overhead of `u²` milliseconds per micro-batch (never
/// negative).
type Params = [f64; 5];

fn apply(base: &SystemProfile, p: &Params) -> SystemProfile {
    SystemProfile {
        multipliers: Multipliers {
            gemm: base.multipliers.gemm * p[0].exp(),
            attention: base.multipliers.attention * p[1].exp(),
            memory: base.multipliers.memory * p[2].exp(),
            collectives: base.multipliers.collectives * p[3].exp(),
        },
        host_overhead_seconds: base.host_overhead_seconds + 1e-3 * p[4] * p[4],
        ..base.clone()
    }
}

/// `ln(predicted / measured)` of each run under `profile`.
fn log_errors(profile: &Arc<SystemProfile>, runs: &[ProfileRun]) -> Result<Vec<f64>> {
    let timer = SystemTimer::new(profile.clone())?;
    runs.iter()
        .map(|r| {
            let cluster = Cluster {
                system: Some(profile.clone()),
                ..r.cluster.clone()
            };
            let s = step_time(&r.model, &r.layout, &cluster, &timer, &r.opts)?;
            Ok((s.step_seconds / r.step_seconds).ln())
        })
        .collect()
}

/// The fit on `runs`: the parameters minimising the squared log errors plus the prior
/// ([`CALIBRATION_PRIOR_WEIGHT`]), by L-BFGS ([`crate::numeric::lbfgs`]) with central
/// differences.
fn fit(base: &SystemProfile, runs: &[ProfileRun]) -> Result<Params> {
    let cost = |p: &Params| -> f64 {
        let prof = Arc::new(apply(base, p));
        match log_errors(&prof, runs) {
            Ok(e) => {
                e.iter().map(|x| x * x).sum::<f64>()
                    + CALIBRATION_PRIOR_WEIGHT * p[..4].iter().map(|x| x * x).sum::<f64>()
            }
            Err(_) => f64::INFINITY,
        }
    };
    let f = |p: &Params| {
        let c = cost(p);
        let mut g = [0.0; 5];
        for (i, gi) in g.iter_mut().enumerate() {
            let h = 1e-4;
            let (mut a, mut b) = (*p, *p);
            a[i] += h;
            b[i] -= h;
            *gi = (cost(&a) - cost(&b)) / (2.0 * h);
        }
        (c, g)
    };
    let start = [0.0, 0.0, 0.0, 0.0, 0.1];
    let tol = crate::numeric::Tolerances {
        grad: 1e-8,
        cost: 1e-12,
    };
    let m = crate::numeric::lbfgs(f, start, 200, tol);
    if !m.cost.is_finite() {
        return Err(Error::Fit(
            "the profile could not predict the runs at any multipliers".into(),
        ));
    }
    Ok(m.x)
}

/// Calibrate `base` to `runs`: fit the multipliers of GEMMs, attention, memory-bound kernels
/// and collectives and a host overhead per micro-batch on log error, regularised toward 1
/// ([`CALIBRATION_PRIOR_WEIGHT`]); grade each run leave-one-out (with at least three runs) and
/// record the held-out ratios as the profile's validation.
///
/// # Errors
/// No runs, a measured step that is not finite and positive, a run the profile cannot time,
/// or a fit that fails.
pub fn calibrate_profile(base: &SystemProfile, runs: &[ProfileRun]) -> Result<ProfileCalibration> {
    if runs.is_empty() {
        return Err(Error::Fit("no measured runs to calibrate on".into()));
    }
    for r in runs {
        positive_f64(r.step_seconds, "measured step_seconds")?;
    }
    base.validate()?;
    let all = fit(base, runs)?;
    let mut profile = apply(base, &all);
    let in_sample: Vec<f64> = log_errors(&Arc::new(profile.clone()), runs)?
        .iter()
        .map(|e| e.exp() - 1.0)
        .collect();
    let mut held_out = Vec::new();
    if runs.len() >= 3 {
        for i in 0..runs.len() {
            let rest: Vec<ProfileRun> = runs
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, r)| r.clone())
                .collect();
            let p = Arc::new(apply(base, &fit(base, &rest)?));
            held_out.push(log_errors(&p, &runs[i..=i])?[0].exp() - 1.0);
        }
    }
    let graded = if held_out.is_empty() {
        &in_sample
    } else {
        &held_out
    };
    let ratios: Vec<f64> = graded.iter().map(|e| 1.0 + e).collect();
    profile.validation = Some(Validation::from_ratios(
        &ratios,
        format!(
            "{} of the {} measured runs it was calibrated on",
            if held_out.is_empty() {
                "in-sample errors"
            } else {
                "leave-one-out errors"
            },
            runs.len()
        ),
    )?);
    profile.name = format!("{}-calibrated", base.name);
    Ok(ProfileCalibration {
        profile,
        in_sample,
        held_out,
    })
}
