//! A fitted law with its bootstrap refits, as a file: what `fit_scaling_law --out` writes and
//! `budget`, `plan` and `enumerate_shapes --law-file` read; and the compute-optimal allocation
//! with the interval its refits give.

use super::ParametricLaw;
use crate::error::{Result, positive_f64};
use serde::{Deserialize, Deserializer, Serialize};

/// A fitted law and its bootstrap refits ([`super::bootstrap_laws`]). The laws are checked as
/// they are read (a [`ParametricLaw`] cannot be built invalid, serde included).
///
/// ```
/// use lmshape::scaling::{LawFile, ParametricLaw};
/// let file = LawFile {
///     law: ParametricLaw::BESIROGLU,
///     bootstrap: vec![ParametricLaw::CHINCHILLA],
///     source: "example".into(),
///     runs_used: 245,
/// };
/// let text = serde_json::to_string(&file).unwrap();
/// assert_eq!(LawFile::from_json(&text)?, file);
/// # Ok::<(), lmshape::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LawFile {
    /// The law fitted to all runs.
    pub law: ParametricLaw,
    /// The law refitted on each bootstrap resample of the runs (empty, or `null` in the file,
    /// when none were drawn).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub bootstrap: Vec<ParametricLaw>,
    /// Where the runs came from, in words.
    #[serde(default)]
    pub source: String,
    /// Runs the fit used.
    #[serde(default)]
    pub runs_used: usize,
}

fn null_as_empty<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<ParametricLaw>, D::Error> {
    Ok(Option::<Vec<ParametricLaw>>::deserialize(d)?.unwrap_or_default())
}

impl LawFile {
    /// Read a law file's text.
    ///
    /// # Errors
    /// Text over [`crate::error::MAX_INPUT_BYTES`], invalid JSON, a missing `law`, or a law
    /// that breaks a rule of [`ParametricLaw`].
    pub fn from_json(text: &str) -> Result<LawFile> {
        crate::error::input_size(text, "law file")?;
        Ok(serde_json::from_str(text)?)
    }

    /// The law's compute-optimal allocation at `flops` with the interval its refits give
    /// ([`optimum_interval`]).
    ///
    /// # Errors
    /// As [`optimum_interval`].
    pub fn optimum(&self, flops: f64) -> Result<OptimumInterval> {
        optimum_interval(&self.law, &self.bootstrap, flops)
    }
}

/// A compute-optimal allocation with a 90% interval from bootstrap refits: the 5th and 95th
/// percentiles (nearest rank) of the refits' own optima. The key names are a public interface
/// (`fit_scaling_law --json`'s `optima`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OptimumInterval {
    /// The budget, FLOPs.
    pub flops: f64,
    /// The law's optimal parameters.
    pub params: f64,
    /// The law's optimal tokens.
    pub tokens: f64,
    /// 5th percentile of the refits' optimal parameters (the point value without refits).
    pub params_low: f64,
    /// 95th percentile of the refits' optimal parameters.
    pub params_high: f64,
    /// 5th percentile of the refits' optimal tokens.
    pub tokens_low: f64,
    /// 95th percentile of the refits' optimal tokens.
    pub tokens_high: f64,
    /// Refits the interval was read from.
    pub resamples: usize,
}

/// `law`'s compute-optimal allocation at `flops` (Hoffmann et al. 2022 eq. 4,
/// [`ParametricLaw::compute_optimal`]) and the 90% bootstrap percentile interval (Efron &
/// Tibshirani 1993 §13.3) of the same optimum under each of `samples`; a refit with no finite
/// optimum is skipped. Without samples the interval is the point.
///
/// ```
/// use lmshape::scaling::{optimum_interval, ParametricLaw};
/// let refits = [ParametricLaw::CHINCHILLA, ParametricLaw::BESIROGLU];
/// let o = optimum_interval(&ParametricLaw::BESIROGLU, &refits, 1e24)?;
/// assert!(o.params_low <= o.params && o.params <= o.params_high);
/// assert_eq!(o.resamples, 2);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// A non-positive or non-finite budget, or a law with no finite optimum there.
pub fn optimum_interval(
    law: &ParametricLaw,
    samples: &[ParametricLaw],
    flops: f64,
) -> Result<OptimumInterval> {
    positive_f64(flops, "flops")?;
    let opt = law.compute_optimal(flops)?;
    let optima: Vec<_> = samples
        .iter()
        .filter_map(|s| s.compute_optimal(flops).ok())
        .collect();
    let mut ns: Vec<f64> = optima.iter().map(|a| a.params).collect();
    let mut ds: Vec<f64> = optima.iter().map(|a| a.tokens).collect();
    let (params_low, params_high) = percentiles(&mut ns, opt.params);
    let (tokens_low, tokens_high) = percentiles(&mut ds, opt.tokens);
    Ok(OptimumInterval {
        flops,
        params: opt.params,
        tokens: opt.tokens,
        params_low,
        params_high,
        tokens_low,
        tokens_high,
        resamples: samples.len(),
    })
}

/// The 5th and 95th percentiles of `v` by nearest rank (`point` twice when `v` is empty).
fn percentiles(v: &mut [f64], point: f64) -> (f64, f64) {
    if v.is_empty() {
        return (point, point);
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.05), at(0.95))
}
