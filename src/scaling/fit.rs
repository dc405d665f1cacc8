//! Fitting scaling laws to runs.
//!
//! The parametric fit follows Hoffmann et al. 2022 §3.3 and Appendix D.2: minimise
//! `Σ Huber_δ(LSE(a − α·log N, b − β·log D, e) − log L)` over `(a, b, e, α, β)` with
//! `A = exp(a)`, `B = exp(b)`, `E = exp(e)`, `δ = 1e-3`, by L-BFGS from a grid of initial values,
//! keeping the best result. The optimiser is L-BFGS with a strong-Wolfe line search, every
//! loop of it bounded (at most [`FitOptions::max_iters`] iterations of at most 40 evaluations
//! per start), so a fit ends on any input; a start that meets no stopping rule within its
//! iterations does not count, and a fit where no start converged is an error.
//!
//! With many runs the grid is pruned after a coarse pass: every start is optimised on an even
//! subsample of at most [`FitOptions::coarse_runs`] runs, and only the best
//! [`FitOptions::refine_starts`] optima are refined on all runs (with few runs the coarse pass
//! is the whole fit). The starts run on [`FitOptions::threads`] threads; the result does not
//! depend on their number.

use super::{Allocation, ParametricLaw, Run};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Options of [`fit_parametric`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitOptions {
    /// Huber threshold on log-loss residuals (Hoffmann et al.: 1e-3).
    pub delta: f64,
    /// Initial `α` values.
    pub alpha_grid: Vec<f64>,
    /// Initial `β` values.
    pub beta_grid: Vec<f64>,
    /// Initial `e = log E` values.
    pub e_grid: Vec<f64>,
    /// Initial `a = log A` values.
    pub a_grid: Vec<f64>,
    /// Initial `b = log B` values.
    pub b_grid: Vec<f64>,
    /// L-BFGS iterations per start.
    pub max_iters: u64,
    /// Runs of the coarse pass (an even subsample when there are more).
    #[serde(default = "default_coarse_runs")]
    pub coarse_runs: usize,
    /// Optima of the coarse pass refined on all runs.
    #[serde(default = "default_refine_starts")]
    pub refine_starts: usize,
    /// Threads for the starts (0: as many as the machine offers).
    #[serde(default)]
    pub threads: usize,
}

fn default_coarse_runs() -> usize {
    512
}

fn default_refine_starts() -> usize {
    8
}

/// Fewest runs a five-parameter fit accepts (twice the parameters, so that residuals remain).
pub const MIN_RUNS: usize = 10;

impl Default for FitOptions {
    /// Hoffmann et al. 2022 Appendix D.2 grid: `α, β ∈ {0, 0.5, …, 2}`, `e ∈ {−1, −0.5, …, 1}`,
    /// `a, b ∈ {0, 5, …, 25}` (4500 starts).
    fn default() -> FitOptions {
        let range = |lo: f64, step: f64, n: usize| (0..n).map(|i| lo + step * i as f64).collect();
        FitOptions {
            delta: 1e-3,
            alpha_grid: range(0.0, 0.5, 5),
            beta_grid: range(0.0, 0.5, 5),
            e_grid: range(-1.0, 0.5, 5),
            a_grid: range(0.0, 5.0, 6),
            b_grid: range(0.0, 5.0, 6),
            max_iters: 500,
            coarse_runs: default_coarse_runs(),
            refine_starts: default_refine_starts(),
            threads: 0,
        }
    }
}

/// The outcome of a parametric fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitResult {
    /// The fitted law.
    pub law: ParametricLaw,
    /// Best objective (sum of Huber losses).
    pub objective: f64,
    /// Residuals `log L_pred − log L_obs`, one per run, in input order.
    pub residuals: Vec<f64>,
    /// Root mean square of the residuals.
    pub rms_residual: f64,
    /// Starts tried.
    pub starts: usize,
    /// Starts whose optimisation ran to completion.
    pub completed: usize,
}

struct Objective<'a> {
    x: &'a [(f64, f64, f64)], // (log N, log D, log L)
    delta: f64,
}

fn huber(r: f64, delta: f64) -> (f64, f64) {
    if r.abs() <= delta {
        (0.5 * r * r, r)
    } else {
        (delta * (r.abs() - 0.5 * delta), delta * r.signum())
    }
}

impl Objective<'_> {
    /// Objective and gradient with respect to `(a, b, e, α, β)`.
    fn eval(&self, p: &[f64; 5]) -> (f64, [f64; 5]) {
        let (a, b, e, al, be) = (p[0], p[1], p[2], p[3], p[4]);
        let mut f = 0.0;
        let mut g = [0.0; 5];
        for &(ln_n, ln_d, ln_l) in self.x {
            let t1 = a - al * ln_n;
            let t2 = b - be * ln_d;
            let t3 = e;
            let m = t1.max(t2).max(t3);
            let (e1, e2, e3) = ((t1 - m).exp(), (t2 - m).exp(), (t3 - m).exp());
            let s = e1 + e2 + e3;
            let pred = m + s.ln();
            let (h, dh) = huber(pred - ln_l, self.delta);
            f += h;
            let (w1, w2, w3) = (e1 / s, e2 / s, e3 / s);
            g[0] += dh * w1;
            g[1] += dh * w2;
            g[2] += dh * w3;
            g[3] -= dh * w1 * ln_n;
            g[4] -= dh * w2 * ln_d;
        }
        (f, g)
    }
}

/// Most bootstrap resamples [`bootstrap_standard_errors`] accepts: the standard error of a
/// standard error falls as `1/√(2n)`, 0.7% at this size, so more buys nothing but time.
pub const MAX_BOOTSTRAP_RESAMPLES: usize = 10_000;

/// Most starts a grid may hold (the default grid has 4,500).
pub const MAX_STARTS: usize = 1_000_000;

/// Most L-BFGS iterations per start.
pub const MAX_ITERS: u64 = 100_000;

/// Largest magnitude of a start value: the grid holds logarithms of `A`, `B`, `E` and the
/// exponents, and `exp(±100)` is still finite in `f64` with room for the objective.
pub const MAX_START_MAGNITUDE: f64 = 100.0;

/// Largest fitted exponent accepted. Published fits sit between 0.03 and 0.8 (Kaplan et al.
/// 2020: 0.076 and 0.095; Hoffmann et al. 2022: 0.34 and 0.28; Besiroglu et al. 2024: 0.35 and
/// 0.37); an exponent above 3 means the loss does not fall with that input in these runs, and
/// the law's optimum would be meaningless.
pub const MAX_FITTED_EXPONENT: f64 = 3.0;

/// Fewest distinct model sizes, and fewest distinct token counts, a parametric fit accepts:
/// each power-law term has a coefficient and an exponent beside the shared `E`, so two points
/// along an axis fit any curve exactly.
pub const MIN_DISTINCT_VALUES: usize = 3;

impl FitOptions {
    /// Check the options: `delta` finite and positive; every grid non-empty, its values finite
    /// and within ±[`MAX_START_MAGNITUDE`], at most [`MAX_STARTS`] starts in all; `max_iters`
    /// in `1..=`[`MAX_ITERS`]; `refine_starts` at least 1.
    ///
    /// # Errors
    /// [`Error::InvalidValue`], [`Error::ZeroSize`] or [`Error::Inconsistent`] naming the option.
    pub fn validate(&self) -> Result<()> {
        crate::error::positive_f64(self.delta, "delta")?;
        let grids = [
            ("alpha_grid", &self.alpha_grid),
            ("beta_grid", &self.beta_grid),
            ("e_grid", &self.e_grid),
            ("a_grid", &self.a_grid),
            ("b_grid", &self.b_grid),
        ];
        let mut starts = 1usize;
        for (name, grid) in grids {
            if grid.is_empty() {
                return Err(Error::ZeroSize { field: name });
            }
            for &v in grid.iter() {
                crate::error::in_range_f64(
                    v,
                    -MAX_START_MAGNITUDE,
                    MAX_START_MAGNITUDE,
                    name,
                    "a start value between -100 and 100 (a logarithm or an exponent)",
                )?;
            }
            starts = starts.saturating_mul(grid.len());
        }
        if starts > MAX_STARTS {
            return Err(Error::Inconsistent {
                rule: "a fit's grid holds at most 1,000,000 starts",
                detail: format!("the grids give {starts} starts"),
            });
        }
        if !(1..=MAX_ITERS).contains(&self.max_iters) {
            return Err(Error::Inconsistent {
                rule: "iterations per start must be between 1 and 100,000",
                detail: format!("max_iters = {}", self.max_iters),
            });
        }
        crate::error::positive(self.refine_starts as u64, "refine_starts")?;
        Ok(())
    }
}

fn check_runs(runs: &[Run], min: usize) -> Result<()> {
    if runs.len() < min {
        return Err(Error::Fit(format!(
            "need at least {min} runs for a five-parameter fit, got {}",
            runs.len()
        )));
    }
    for r in runs {
        Run::new(r.params, r.tokens, r.loss).map_err(|e| Error::FitRejected {
            context: "a run",
            source: Box::new(e),
        })?;
    }
    // α needs runs of several sizes, β runs of several token counts, and both a loss that
    // changes.
    let distinct = |f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        v.len()
    };
    let (sizes, tokens) = (distinct(|r| r.params), distinct(|r| r.tokens));
    if sizes < MIN_DISTINCT_VALUES || tokens < MIN_DISTINCT_VALUES {
        return Err(Error::Fit(format!(
            "the runs do not constrain the fit: they hold {sizes} distinct model sizes and {tokens} distinct token counts, and a five-parameter law needs at least {MIN_DISTINCT_VALUES} of each"
        )));
    }
    if distinct(|r| r.loss) < 2 {
        return Err(Error::Fit(format!(
            "every run has the same loss ({}): the runs carry no information on how loss falls with size or data",
            crate::error::readable(runs[0].loss)
        )));
    }
    Ok(())
}

/// Fit `L = E + A/N^α + B/D^β` to runs (Hoffmann et al. 2022 §3.3): Huber loss on log loss,
/// L-BFGS from every point of the grid (pruned after a coarse pass with many runs; see the
/// module docs), best kept. Needs at least [`MIN_RUNS`] runs with at least
/// [`MIN_DISTINCT_VALUES`] sizes and token counts and a loss that varies.
///
/// ```
/// use lmshape::scaling::{fit_parametric, FitOptions, ParametricLaw, Run};
/// // Runs generated from a known law are recovered.
/// let truth = ParametricLaw::new(1.8, 400.0, 1000.0, 0.34, 0.36)?;
/// let mut runs = Vec::new();
/// for n in [1e8, 3e8, 1e9, 3e9] {
///     for d in [1e9, 1e10, 1e11] {
///         runs.push(Run::new(n, d, truth.loss(n, d)?)?);
///     }
/// }
/// let opts = FitOptions { a_grid: vec![5.0], b_grid: vec![5.0, 10.0], e_grid: vec![0.5], ..FitOptions::default() };
/// let fit = fit_parametric(&runs, &opts)?;
/// assert!((fit.law.alpha - 0.34).abs() < 0.01 && (fit.law.e - 1.8).abs() < 0.01);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// [`Error::Fit`] when the runs are too few or carry no information, when no start converges
/// within [`FitOptions::max_iters`], or when the fitted exponents exceed
/// [`MAX_FITTED_EXPONENT`]; the options' own errors ([`FitOptions::validate`]).
pub fn fit_parametric(runs: &[Run], opts: &FitOptions) -> Result<FitResult> {
    fit_parametric_with_progress(runs, opts, &|_, _| {})
}

/// [`fit_parametric`], calling `progress(done, total)` as starts finish (from the worker
/// threads; `total` counts the coarse and the refining starts).
///
/// # Errors
/// As [`fit_parametric`].
pub fn fit_parametric_with_progress(
    runs: &[Run],
    opts: &FitOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<FitResult> {
    check_runs(runs, MIN_RUNS)?;
    opts.validate()?;
    let x: Vec<(f64, f64, f64)> = runs
        .iter()
        .map(|r| (r.params.ln(), r.tokens.ln(), r.loss.ln()))
        .collect();
    let grid: Vec<[f64; 5]> = itertools::iproduct!(
        &opts.alpha_grid,
        &opts.beta_grid,
        &opts.e_grid,
        &opts.a_grid,
        &opts.b_grid
    )
    .map(|(&al, &be, &e, &a, &b)| [a, b, e, al, be])
    .collect();
    let coarse_n = opts.coarse_runs.max(MIN_RUNS);
    let pruned = x.len() > coarse_n;
    let refine = if pruned { opts.refine_starts.max(1) } else { 0 };
    let total = grid.len() + refine;
    let done = std::sync::atomic::AtomicUsize::new(0);
    let tick = || {
        progress(
            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
            total,
        )
    };
    // Coarse pass (the whole fit when the runs are few).
    let sample: Vec<(f64, f64, f64)> = if pruned {
        (0..coarse_n).map(|i| x[i * x.len() / coarse_n]).collect()
    } else {
        x.clone()
    };
    let coarse = run_starts(&sample, opts, &grid, &tick);
    let mut best = pick_best(&coarse, if pruned { refine } else { 1 });
    let mut completed = coarse.iter().filter(|r| r.is_some()).count();
    if pruned {
        let starts: Vec<[f64; 5]> = best.iter().map(|(_, p)| *p).collect();
        let fine = run_starts(&x, opts, &starts, &tick);
        completed += fine.iter().filter(|r| r.is_some()).count();
        best = pick_best(&fine, 1);
    }
    let (objective, p) = best.into_iter().next().ok_or_else(|| {
        Error::Fit(format!(
            "no start converged within {} iterations",
            opts.max_iters
        ))
    })?;
    let law = fitted_law(&p)?;
    let residuals: Vec<f64> = runs
        .iter()
        .map(|r| law.loss(r.params, r.tokens).map(|l| l.ln() - r.loss.ln()))
        .collect::<Result<_>>()?;
    let rms_residual =
        (residuals.iter().map(|r| r * r).sum::<f64>() / residuals.len() as f64).sqrt();
    Ok(FitResult {
        law,
        objective,
        residuals,
        rms_residual,
        starts: total,
        completed,
    })
}

/// The law at the optimum `p = [ln A, ln B, ln E, α, β]`, refused when it is invalid or an
/// exponent exceeds [`MAX_FITTED_EXPONENT`] (the runs then do not show a power law).
fn fitted_law(p: &[f64; 5]) -> Result<ParametricLaw> {
    let law = ParametricLaw::new(p[2].exp(), p[0].exp(), p[1].exp(), p[3], p[4]).map_err(|e| {
        Error::FitRejected {
            context: "the fitted law is invalid, so the runs do not constrain it",
            source: Box::new(e),
        }
    })?;
    for (name, v, input) in [
        ("alpha", law.alpha, "model size"),
        ("beta", law.beta, "training tokens"),
    ] {
        if v > MAX_FITTED_EXPONENT {
            return Err(Error::Fit(format!(
                "the fitted {name} = {} is above {MAX_FITTED_EXPONENT}: in these runs the loss does not fall with {input} as a power law",
                crate::error::readable(v)
            )));
        }
    }
    Ok(law)
}

/// L-BFGS from every start, on [`FitOptions::threads`] workers; results in start order, so the
/// outcome does not depend on the number of threads.
fn run_starts(
    x: &[(f64, f64, f64)],
    opts: &FitOptions,
    starts: &[[f64; 5]],
    tick: &(dyn Fn() + Sync),
) -> Vec<Option<(f64, [f64; 5])>> {
    parallel_map(starts.len(), opts.threads, |i| {
        let r = run_lbfgs(x, opts, starts[i]);
        tick();
        r
    })
}

/// `f(0..len)` on `threads` workers (0: as many as the machine offers) that take indices in
/// turn; the results in index order.
fn parallel_map<T: Send>(len: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, len.max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<(usize, T)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= len {
                            break;
                        }
                        mine.push((i, f(i)));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, t)| t).collect()
}

/// The `k` lowest finite costs (ties: the earlier start), best first.
fn pick_best(results: &[Option<(f64, [f64; 5])>], k: usize) -> Vec<(f64, [f64; 5])> {
    let mut ok: Vec<(usize, f64, [f64; 5])> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.map(|(c, p)| (i, c, p)))
        .filter(|(_, c, _)| c.is_finite())
        .collect();
    ok.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    ok.into_iter().take(k).map(|(_, c, p)| (c, p)).collect()
}

/// One bounded L-BFGS run from `init` ([`crate::numeric::lbfgs`], gradient tolerance 1e-10,
/// cost tolerance 1e-14); `None` when it did not converge within [`FitOptions::max_iters`].
fn run_lbfgs(x: &[(f64, f64, f64)], opts: &FitOptions, init: [f64; 5]) -> Option<(f64, [f64; 5])> {
    let problem = Objective {
        x,
        delta: opts.delta,
    };
    let tol = crate::numeric::Tolerances {
        grad: 1e-10,
        cost: 1e-14,
    };
    let m = crate::numeric::lbfgs(|p| problem.eval(p), init, opts.max_iters, tol);
    (m.converged && m.cost.is_finite()).then_some((m.cost, m.x))
}

/// A power law `y = coef · x^exponent` fitted by least squares on `(log x, log y)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerLawFit {
    /// `coef`.
    pub coef: f64,
    /// `exponent`.
    pub exponent: f64,
    /// Residuals `log y_pred − log y_obs`.
    pub residuals: Vec<f64>,
    /// Coefficient of determination in log space.
    pub r_squared: f64,
}

/// Ordinary least squares of `log y` on `log x` (Hoffmann et al. 2022 approaches 1 and 2 fit
/// `N_opt ∝ C^a` this way).
///
/// ```
/// let xs = [1e18, 1e19, 1e20, 1e21];
/// let ys: Vec<f64> = xs.iter().map(|c: &f64| 0.1 * c.powf(0.5)).collect();
/// let fit = lmshape::scaling::fit_power_law(&xs, &ys)?;
/// assert!((fit.exponent - 0.5).abs() < 1e-12 && (fit.coef / 0.1 - 1.0).abs() < 1e-9);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// Fewer than two paired points, values that are not finite and positive, or equal `x` values.
pub fn fit_power_law(xs: &[f64], ys: &[f64]) -> Result<PowerLawFit> {
    if xs.len() != ys.len() || xs.len() < 2 {
        return Err(Error::Fit(format!(
            "need at least 2 paired points, got {} x and {} y",
            xs.len(),
            ys.len()
        )));
    }
    for (&x, &y) in xs.iter().zip(ys) {
        crate::error::positive_f64(x, "x")?;
        crate::error::positive_f64(y, "y")?;
    }
    let n = xs.len() as f64;
    let lx: Vec<f64> = xs.iter().map(|x| x.ln()).collect();
    let ly: Vec<f64> = ys.iter().map(|y| y.ln()).collect();
    let mx = lx.iter().sum::<f64>() / n;
    let my = ly.iter().sum::<f64>() / n;
    let sxx: f64 = lx.iter().map(|x| (x - mx).powi(2)).sum();
    if sxx == 0.0 {
        return Err(Error::Fit("all x values are equal".into()));
    }
    let sxy: f64 = lx.iter().zip(&ly).map(|(x, y)| (x - mx) * (y - my)).sum();
    let exponent = sxy / sxx;
    let intercept = my - exponent * mx;
    let residuals: Vec<f64> = lx
        .iter()
        .zip(&ly)
        .map(|(x, y)| intercept + exponent * x - y)
        .collect();
    let ss_res: f64 = residuals.iter().map(|r| r * r).sum();
    let ss_tot: f64 = ly.iter().map(|y| (y - my).powi(2)).sum();
    Ok(PowerLawFit {
        coef: intercept.exp(),
        exponent,
        residuals,
        r_squared: if ss_tot > 0.0 {
            1.0 - ss_res / ss_tot
        } else {
            1.0
        },
    })
}

/// The loss-minimising size of one IsoFLOP group (Hoffmann et al. 2022 approach 2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IsoflopMinimum {
    /// Mean training FLOPs of the group.
    pub flops: f64,
    /// Runs in the group.
    pub runs: usize,
    /// The optimum.
    pub optimal: Allocation,
    /// Loss at the optimum of the parabola.
    pub loss: f64,
}

/// Hoffmann et al. 2022 approach 2: group runs of (nearly) equal compute — a run joins a group
/// while its `6ND` is within `rel_tol` of the group's smallest — fit a parabola of loss against
/// `log N` in each group of at least 3 runs, and take its vertex as that budget's `N_opt`.
/// Groups whose parabola opens downward or whose vertex falls outside the sizes tried are
/// skipped. Feed the result to [`fit_power_law`] for `N_opt ∝ C^a`.
///
/// # Errors
/// Fewer than three runs, runs that do not constrain a fit, or a tolerance that is not finite and positive.
pub fn isoflop_frontier(runs: &[Run], rel_tol: f64) -> Result<Vec<IsoflopMinimum>> {
    check_runs(runs, 3)?;
    crate::error::positive_f64(rel_tol, "rel_tol")?;
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.flops().total_cmp(&b.flops()));
    let mut out = Vec::new();
    let mut start = 0;
    while start < sorted.len() {
        let c0 = sorted[start].flops();
        let mut end = start;
        while end < sorted.len() && sorted[end].flops() <= c0 * (1.0 + rel_tol) {
            end += 1;
        }
        if let Some(m) = parabola_minimum(&sorted[start..end]) {
            out.push(m);
        }
        start = end;
    }
    Ok(out)
}

fn parabola_minimum(group: &[Run]) -> Option<IsoflopMinimum> {
    if group.len() < 3 {
        return None;
    }
    // Least squares of loss = c0 + c1 x + c2 x², x = ln N (centred for conditioning).
    let n = group.len() as f64;
    let mx = group.iter().map(|r| r.params.ln()).sum::<f64>() / n;
    let mut s = [0.0f64; 5];
    let mut t = [0.0f64; 3];
    for r in group {
        let x = r.params.ln() - mx;
        let mut p = 1.0;
        for (k, sk) in s.iter_mut().enumerate() {
            *sk += p;
            if k < 3 {
                t[k] += p * r.loss;
            }
            p *= x;
        }
    }
    let m = [[s[0], s[1], s[2]], [s[1], s[2], s[3]], [s[2], s[3], s[4]]];
    let c = solve3(m, t)?;
    if c[2].is_nan() || c[2] <= 0.0 {
        return None;
    }
    let xv = -c[1] / (2.0 * c[2]);
    let (lo, hi) = group
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| {
            let x = r.params.ln() - mx;
            (lo.min(x), hi.max(x))
        });
    if xv < lo || xv > hi {
        return None;
    }
    let flops = group.iter().map(Run::flops).sum::<f64>() / n;
    let params = (xv + mx).exp();
    Some(IsoflopMinimum {
        flops,
        runs: group.len(),
        optimal: Allocation {
            params,
            tokens: flops / (super::FLOPS_PER_PARAM_TOKEN * params),
        },
        loss: c[0] + c[1] * xv + c[2] * xv * xv,
    })
}

/// Cramer's rule for a 3×3 system; `None` when singular.
fn solve3(m: [[f64; 3]; 3], t: [f64; 3]) -> Option<[f64; 3]> {
    let det = |m: &[[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(&m);
    if d.abs() < 1e-300 || !d.is_finite() {
        return None;
    }
    let mut out = [0.0; 3];
    for (k, o) in out.iter_mut().enumerate() {
        let mut mk = m;
        for (row, tv) in mk.iter_mut().zip(t) {
            row[k] = tv;
        }
        *o = det(&mk) / d;
    }
    Some(out)
}

/// Standard errors of a parametric fit by the bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StandardErrors {
    /// SE of `E`.
    pub e: f64,
    /// SE of `A`.
    pub a: f64,
    /// SE of `B`.
    pub b: f64,
    /// SE of `α`.
    pub alpha: f64,
    /// SE of `β`.
    pub beta: f64,
    /// Resamples whose refit completed.
    pub resamples: usize,
}

/// SplitMix64 (Steele, Lea & Flood 2014): a small, seedable generator for resampling.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The laws refitted on `resamples` bootstrap samples of the runs (drawn with replacement
/// from one seeded sequence, each refit started from the full-data `fit`): what
/// [`bootstrap_standard_errors`] summarises, and what a confidence interval of any derived
/// figure (an optimum at another budget) is read from.
///
/// # Errors
/// As [`bootstrap_standard_errors`].
pub fn bootstrap_laws(
    runs: &[Run],
    fit: &FitResult,
    opts: &FitOptions,
    resamples: usize,
    seed: u64,
) -> Result<Vec<ParametricLaw>> {
    check_runs(runs, MIN_RUNS)?;
    opts.validate()?;
    if !(2..=MAX_BOOTSTRAP_RESAMPLES).contains(&resamples) {
        return Err(Error::Fit(format!(
            "bootstrap resamples must be between 2 and {MAX_BOOTSTRAP_RESAMPLES}, got {resamples}"
        )));
    }
    let l = fit.law;
    let start = [l.a.ln(), l.b.ln(), l.e.ln(), l.alpha, l.beta];
    // Each resample's draws come from one seeded sequence, in resample order, so the result
    // does not depend on the number of threads.
    let mut rng = SplitMix64(seed);
    let picks: Vec<Vec<usize>> = (0..resamples)
        .map(|_| {
            (0..runs.len())
                .map(|_| (rng.next() % runs.len() as u64) as usize)
                .collect()
        })
        .collect();
    let draws: Vec<[f64; 5]> = parallel_map(resamples, opts.threads, |i| {
        let x: Vec<(f64, f64, f64)> = picks[i]
            .iter()
            .map(|&j| (runs[j].params.ln(), runs[j].tokens.ln(), runs[j].loss.ln()))
            .collect();
        run_lbfgs(&x, opts, start).map(|(_, p)| [p[2].exp(), p[0].exp(), p[1].exp(), p[3], p[4]])
    })
    .into_iter()
    .flatten()
    .collect();
    let laws: Vec<ParametricLaw> = draws
        .iter()
        .filter_map(|d| ParametricLaw::new(d[0], d[1], d[2], d[3], d[4]).ok())
        .collect();
    if laws.len() < 2 {
        return Err(Error::Fit("fewer than 2 bootstrap refits completed".into()));
    }
    Ok(laws)
}

/// Bootstrap standard errors (Efron & Tibshirani 1993): refit the law on `resamples` samples
/// of the runs drawn with replacement, each started from the full-data `fit` (one L-BFGS run
/// per resample, not the whole grid — the full-data optimum is a good start for a resample),
/// and report the standard deviation of each parameter across the refits. Besiroglu et al.
/// 2024 report bootstrap standard errors this way for the Chinchilla data.
///
/// ```
/// use lmshape::scaling::{bootstrap_standard_errors, fit_parametric, FitOptions, ParametricLaw, Run};
/// let truth = ParametricLaw::new(1.8, 400.0, 1000.0, 0.34, 0.36)?;
/// let mut runs = Vec::new();
/// for (i, n) in [1e8, 3e8, 1e9, 3e9].iter().enumerate() {
///     for (j, d) in [1e9, 1e10, 1e11].iter().enumerate() {
///         let noise = 1.0 + 0.01 * (((i * 3 + j) % 5) as f64 - 2.0);
///         runs.push(Run::new(*n, *d, truth.loss(*n, *d)? * noise)?);
///     }
/// }
/// let opts = FitOptions { a_grid: vec![5.0], b_grid: vec![5.0, 10.0], e_grid: vec![0.5], ..FitOptions::default() };
/// let fit = fit_parametric(&runs, &opts)?;
/// let se = bootstrap_standard_errors(&runs, &fit, &opts, 20, 7)?;
/// assert!(se.alpha.is_finite() && se.alpha >= 0.0 && se.resamples > 10);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// Too few or uninformative runs, invalid options, a size outside `2..=MAX_BOOTSTRAP_RESAMPLES`, or fewer than two refits that converged.
pub fn bootstrap_standard_errors(
    runs: &[Run],
    fit: &FitResult,
    opts: &FitOptions,
    resamples: usize,
    seed: u64,
) -> Result<StandardErrors> {
    let laws = bootstrap_laws(runs, fit, opts, resamples, seed)?;
    let draws: Vec<[f64; 5]> = laws
        .iter()
        .map(|l| [l.e, l.a, l.b, l.alpha, l.beta])
        .collect();
    let sd = |k: usize| {
        let n = draws.len() as f64;
        let mean = draws.iter().map(|d| d[k]).sum::<f64>() / n;
        (draws.iter().map(|d| (d[k] - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    };
    Ok(StandardErrors {
        e: sd(0),
        a: sd(1),
        b: sd(2),
        alpha: sd(3),
        beta: sd(4),
        resamples: draws.len(),
    })
}
