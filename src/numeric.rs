//! Small numerical helpers shared by the modules (crate-private).

use crate::error::Result;

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

#[cfg(test)]
mod tests {
    #[test]
    fn finds_parabola_minimum() {
        let x = super::golden_section_min(|x| Ok((x - 1.5).powi(2)), -10.0, 10.0, 200).unwrap();
        assert!((x - 1.5).abs() < 1e-9);
    }
}
