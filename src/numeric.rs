//! Small numerical helpers shared by the modules (crate-private).

use crate::error::{Error, Result};

/// Minimise a unimodal `f` on `[lo, hi]` by golden-section search (Kiefer 1953), `iters`
/// shrinking steps of ratio `(√5 − 1)/2`; returns the midpoint of the final bracket.
pub(crate) fn golden_section_min(
    mut f: impl FnMut(f64) -> Result<f64>,
    mut lo: f64,
    mut hi: f64,
    iters: usize,
) -> Result<f64> {
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    let mut x1 = hi - phi * (hi - lo);
    let mut x2 = lo + phi * (hi - lo);
    let (mut f1, mut f2) = (f(x1)?, f(x2)?);
    for _ in 0..iters {
        if f1 <= f2 {
            hi = x2;
            x2 = x1;
            f2 = f1;
            x1 = hi - phi * (hi - lo);
            f1 = f(x1)?;
        } else {
            lo = x1;
            x1 = x2;
            f1 = f2;
            x2 = lo + phi * (hi - lo);
            f2 = f(x2)?;
        }
        if hi - lo < 1e-12 {
            break;
        }
    }
    Ok(0.5 * (lo + hi))
}

/// Where [`lbfgs`] stopped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Minimum<const N: usize> {
    /// The best point found.
    pub x: [f64; N],
    /// The cost there.
    pub cost: f64,
    /// Whether a stopping rule was met before the iteration limit: the gradient norm or the
    /// cost change fell below its tolerance, or no step along a descent direction lowers the
    /// cost any more (a minimum to working precision).
    pub converged: bool,
}

/// Stopping rules of [`lbfgs`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tolerances {
    /// Stop when `‖∇f‖₂` falls below this.
    pub grad: f64,
    /// Stop when an iteration lowers the cost by less than this (absolute).
    pub cost: f64,
}

/// Pairs `(s, y)` kept by [`lbfgs`] (Nocedal & Wright 2006 recommend 3–20; 7 as argmin's and
/// SciPy's examples use).
const LBFGS_MEMORY: usize = 7;
/// Most cost evaluations one line search may spend (bracketing and zoom together).
const LINE_SEARCH_EVALS: usize = 40;
/// Armijo (sufficient decrease) and curvature constants of the strong Wolfe conditions
/// (Nocedal & Wright 2006 §3.1: `c1 = 1e-4`, `c2 = 0.9` for quasi-Newton methods).
const WOLFE_C1: f64 = 1e-4;
const WOLFE_C2: f64 = 0.9;

fn dot<const N: usize>(a: &[f64; N], b: &[f64; N]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy<const N: usize>(x: &[f64; N], t: f64, d: &[f64; N]) -> [f64; N] {
    let mut out = *x;
    for (o, di) in out.iter_mut().zip(d) {
        *o += t * di;
    }
    out
}

fn finite<const N: usize>(cost: f64, g: &[f64; N]) -> bool {
    cost.is_finite() && g.iter().all(|v| v.is_finite())
}

/// Minimise `f` (returning the cost and its gradient) from `x0` by L-BFGS (Nocedal 1980;
/// Nocedal & Wright 2006, Algorithm 7.4, the two-loop recursion, with the initial scaling
/// `γ = sᵀy / yᵀy` of eq. 7.20) and a strong-Wolfe line search (Algorithms 3.5 and 3.6, zoom
/// by safeguarded cubic interpolation). Every loop is bounded: at most `max_iters` iterations
/// of at most [`LINE_SEARCH_EVALS`] evaluations each, so the work is bounded whatever `f`
/// returns. A non-finite cost or gradient counts as "too far" in the line search and, at `x0`,
/// ends the search unconverged. Allocates nothing.
pub(crate) fn lbfgs<const N: usize>(
    f: impl Fn(&[f64; N]) -> (f64, [f64; N]),
    x0: [f64; N],
    max_iters: u64,
    tol: Tolerances,
) -> Minimum<N> {
    let (mut cost, mut g) = f(&x0);
    let mut x = x0;
    let unconverged = |x, cost| Minimum {
        x,
        cost,
        converged: false,
    };
    if !finite(cost, &g) {
        return unconverged(x, cost);
    }
    let mut s_hist = [[0.0; N]; LBFGS_MEMORY];
    let mut y_hist = [[0.0; N]; LBFGS_MEMORY];
    let mut rho = [0.0; LBFGS_MEMORY];
    let (mut stored, mut newest) = (0usize, 0usize);
    for _ in 0..max_iters {
        let gnorm = dot(&g, &g).sqrt();
        if gnorm < tol.grad {
            return Minimum {
                x,
                cost,
                converged: true,
            };
        }
        // Two-loop recursion: r = H·g.
        let mut q = g;
        let mut alpha = [0.0; LBFGS_MEMORY];
        for j in 0..stored {
            let i = (newest + LBFGS_MEMORY - j) % LBFGS_MEMORY;
            alpha[i] = rho[i] * dot(&s_hist[i], &q);
            q = axpy(&q, -alpha[i], &y_hist[i]);
        }
        let gamma = if stored > 0 {
            dot(&s_hist[newest], &y_hist[newest]) / dot(&y_hist[newest], &y_hist[newest])
        } else {
            1.0 / gnorm.max(1.0)
        };
        let mut r = q.map(|v| gamma * v);
        for j in (0..stored).rev() {
            let i = (newest + LBFGS_MEMORY - j) % LBFGS_MEMORY;
            let b = rho[i] * dot(&y_hist[i], &r);
            r = axpy(&r, alpha[i] - b, &s_hist[i]);
        }
        let mut d = r.map(|v| -v);
        let mut slope = dot(&d, &g);
        if !(slope < 0.0 && slope.is_finite()) {
            // Not a descent direction: forget the curvature pairs, go downhill.
            stored = 0;
            d = g.map(|v| -v);
            slope = -gnorm * gnorm;
        }
        let Some((x_new, cost_new, g_new)) = wolfe_search(&f, &x, cost, &d, slope) else {
            if stored > 0 {
                // Retry once from steepest descent with the memory cleared.
                stored = 0;
                continue;
            }
            // No step lowers the cost along the gradient: a minimum to working precision.
            return Minimum {
                x,
                cost,
                converged: true,
            };
        };
        let s = axpy(&x_new, -1.0, &x);
        let y = axpy(&g_new, -1.0, &g);
        let sy = dot(&s, &y);
        if sy > 1e-16 * dot(&s, &s).sqrt() * dot(&y, &y).sqrt() {
            newest = if stored == 0 {
                0
            } else {
                (newest + 1) % LBFGS_MEMORY
            };
            s_hist[newest] = s;
            y_hist[newest] = y;
            rho[newest] = 1.0 / sy;
            stored = (stored + 1).min(LBFGS_MEMORY);
        }
        let decrease = cost - cost_new;
        (x, cost, g) = (x_new, cost_new, g_new);
        if decrease.abs() < tol.cost {
            return Minimum {
                x,
                cost,
                converged: true,
            };
        }
    }
    unconverged(x, cost)
}

/// A point of the line search: step, cost, slope along the direction, and the point itself
/// with its gradient.
#[derive(Clone, Copy)]
struct LinePoint<const N: usize> {
    t: f64,
    cost: f64,
    slope: f64,
    x: [f64; N],
    g: [f64; N],
}

/// Strong-Wolfe line search along `d` from `x` (Nocedal & Wright 2006, Algorithms 3.5 and
/// 3.6) in at most [`LINE_SEARCH_EVALS`] evaluations; `None` when no step with a lower cost
/// was found. When the budget runs out after a decrease, the best Armijo point is taken.
#[allow(clippy::type_complexity)]
fn wolfe_search<const N: usize>(
    f: &impl Fn(&[f64; N]) -> (f64, [f64; N]),
    x: &[f64; N],
    cost0: f64,
    d: &[f64; N],
    slope0: f64,
) -> Option<([f64; N], f64, [f64; N])> {
    let evals = std::cell::Cell::new(0usize);
    let eval = |t: f64| -> LinePoint<N> {
        evals.set(evals.get() + 1);
        let xt = axpy(x, t, d);
        let (c, g) = f(&xt);
        let (cost, slope) = if finite(c, &g) {
            (c, dot(&g, d))
        } else {
            (f64::INFINITY, f64::NAN)
        };
        LinePoint {
            t,
            cost,
            slope,
            x: xt,
            g,
        }
    };
    let armijo = |p: &LinePoint<N>| p.cost <= cost0 + WOLFE_C1 * p.t * slope0;
    let curvature = |p: &LinePoint<N>| p.slope.abs() <= -WOLFE_C2 * slope0;
    let start = LinePoint {
        t: 0.0,
        cost: cost0,
        slope: slope0,
        x: *x,
        g: [0.0; N],
    };
    let mut prev = start;
    let mut t = 1.0;
    let (mut lo, mut hi);
    // Bracketing (Algorithm 3.5).
    loop {
        if evals.get() >= LINE_SEARCH_EVALS {
            return None;
        }
        let p = eval(t);
        if !armijo(&p) || (prev.t > 0.0 && p.cost >= prev.cost) {
            (lo, hi) = (prev, p);
            break;
        }
        if curvature(&p) {
            return Some((p.x, p.cost, p.g));
        }
        if p.slope >= 0.0 {
            (lo, hi) = (p, prev);
            break;
        }
        prev = p;
        t *= 2.0;
        if !t.is_finite() || t > 1e12 {
            return Some((p.x, p.cost, p.g));
        }
    }
    // Zoom (Algorithm 3.6): `lo` satisfies Armijo with the lowest cost so far.
    while evals.get() < LINE_SEARCH_EVALS {
        let (a, b) = (lo.t.min(hi.t), lo.t.max(hi.t));
        if b - a <= 1e-14 * b.max(1.0) {
            break;
        }
        let t = cubic_step(&lo, &hi).filter(|t| *t > a + 0.1 * (b - a) && *t < b - 0.1 * (b - a));
        let p = eval(t.unwrap_or(0.5 * (a + b)));
        if !armijo(&p) || p.cost >= lo.cost {
            hi = p;
        } else {
            if curvature(&p) {
                return Some((p.x, p.cost, p.g));
            }
            if p.slope * (hi.t - lo.t) >= 0.0 {
                hi = lo;
            }
            lo = p;
        }
    }
    (lo.t > 0.0 && lo.cost < cost0).then_some((lo.x, lo.cost, lo.g))
}

/// The minimiser of the cubic through two line points with their slopes (Nocedal & Wright
/// 2006, eq. 3.59), when it exists and is finite.
fn cubic_step<const N: usize>(p: &LinePoint<N>, q: &LinePoint<N>) -> Option<f64> {
    if !(p.cost.is_finite() && q.cost.is_finite() && p.slope.is_finite() && q.slope.is_finite()) {
        return None;
    }
    let d1 = p.slope + q.slope - 3.0 * (p.cost - q.cost) / (p.t - q.t);
    let disc = d1 * d1 - p.slope * q.slope;
    if disc < 0.0 {
        return None;
    }
    let d2 = (q.t - p.t).signum() * disc.sqrt();
    let t = q.t - (q.t - p.t) * (q.slope + d2 - d1) / (q.slope - p.slope + 2.0 * d2);
    t.is_finite().then_some(t)
}

/// An exact count held in `u128` whose arithmetic carries an overflow to the end, so a formula
/// reads as its paper writes it (`c(s) * b * h * e`) and is checked once, where the result is
/// taken out ([`Checked::get`]). Division by zero counts as an overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checked(Option<u128>);

/// A [`Checked`] count.
pub(crate) fn c(x: u64) -> Checked {
    Checked(Some(u128::from(x)))
}

impl Checked {
    /// Zero.
    pub(crate) const ZERO: Checked = Checked(Some(0));

    /// The count as `u64`; [`Error::Overflow`] naming `what` when any step overflowed or the
    /// result does not fit.
    pub(crate) fn get(self, what: &'static str) -> Result<u64> {
        self.0
            .and_then(|x| u64::try_from(x).ok())
            .ok_or(Error::Overflow { what })
    }

    /// The larger of two counts.
    pub(crate) fn max(self, other: Checked) -> Checked {
        Checked(self.0.zip(other.0).map(|(a, b)| a.max(b)))
    }

    /// `⌈self / d⌉`.
    pub(crate) fn div_ceil(self, d: u64) -> Checked {
        Checked(
            self.0
                .and_then(|x| (d > 0).then(|| x.div_ceil(u128::from(d)))),
        )
    }
}

impl From<u64> for Checked {
    fn from(x: u64) -> Checked {
        c(x)
    }
}

impl std::ops::Add for Checked {
    type Output = Checked;
    fn add(self, o: Checked) -> Checked {
        Checked(self.0.zip(o.0).and_then(|(a, b)| a.checked_add(b)))
    }
}

impl std::ops::Add<u64> for Checked {
    type Output = Checked;
    fn add(self, o: u64) -> Checked {
        self + c(o)
    }
}

impl std::ops::Mul for Checked {
    type Output = Checked;
    fn mul(self, o: Checked) -> Checked {
        Checked(self.0.zip(o.0).and_then(|(a, b)| a.checked_mul(b)))
    }
}

impl std::ops::Mul<u64> for Checked {
    type Output = Checked;
    fn mul(self, o: u64) -> Checked {
        self * c(o)
    }
}

impl std::ops::Div<u64> for Checked {
    type Output = Checked;
    /// Floor division.
    fn div(self, d: u64) -> Checked {
        Checked(self.0.and_then(|x| x.checked_div(u128::from(d))))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_parabola_minimum() {
        let x = super::golden_section_min(|x| Ok((x - 1.5).powi(2)), -10.0, 10.0, 200).unwrap();
        assert!((x - 1.5).abs() < 1e-9);
    }

    #[test]
    fn checked_carries_overflow_to_the_end() {
        use super::c;
        assert_eq!((c(3) * 4 + 5).get("x"), Ok(17));
        let big = c(u64::MAX) * u64::MAX * u64::MAX;
        assert!(big.get("x").is_err());
        assert!((big / u64::MAX).get("x").is_err());
        assert!((c(1) / 0).get("x").is_err());
        assert_eq!(c(7).div_ceil(2).get("x"), Ok(4));
        // Wide intermediates are exact when the result fits.
        assert_eq!((c(u64::MAX) * 4 / 8).get("x"), Ok(u64::MAX / 2));
    }

    /// Rosenbrock's function (minimum 0 at (1, 1)) from the textbook start (−1.2, 1).
    #[test]
    fn lbfgs_finds_rosenbrock_minimum() {
        let f = |p: &[f64; 2]| {
            let (x, y) = (p[0], p[1]);
            let cost = (1.0 - x).powi(2) + 100.0 * (y - x * x).powi(2);
            let g = [
                -2.0 * (1.0 - x) - 400.0 * x * (y - x * x),
                200.0 * (y - x * x),
            ];
            (cost, g)
        };
        let tol = super::Tolerances {
            grad: 1e-10,
            cost: 0.0,
        };
        let m = super::lbfgs(f, [-1.2, 1.0], 500, tol);
        assert!(m.converged);
        assert!(
            (m.x[0] - 1.0).abs() < 1e-6 && (m.x[1] - 1.0).abs() < 1e-6,
            "{:?}",
            m.x
        );
    }

    /// A cost that is NaN everywhere but at the start, or whose gradient never vanishes on an
    /// unbounded slope, ends within the iteration budget.
    #[test]
    fn lbfgs_work_is_bounded() {
        let tol = super::Tolerances {
            grad: 1e-10,
            cost: 0.0,
        };
        let nan = |p: &[f64; 1]| {
            if p[0] == 0.0 {
                (1.0, [1.0])
            } else {
                (f64::NAN, [f64::NAN])
            }
        };
        let m = super::lbfgs(nan, [0.0], 50, tol);
        assert_eq!(m.x, [0.0]);
        let slope = |p: &[f64; 1]| (-p[0], [-1.0]);
        let m = super::lbfgs(slope, [0.0], 50, tol);
        assert!(!m.converged && m.cost.is_finite());
    }
}
