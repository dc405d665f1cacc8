//! A GEMM description and the pluggable timer trait.

use super::Dtype;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;

/// Which pass of a linear layer a GEMM computes (the three have different shapes, and measured
/// kernels differ by layout: forward `TN`, data gradient `NN`, weight gradient `NT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GemmPass {
    /// `Y = X·W`.
    #[default]
    Forward,
    /// `dX = dY·Wᵀ`.
    DataGrad,
    /// `dW = Xᵀ·dY`.
    WeightGrad,
}

/// `batch` independent products `C[m×n] = A[m×k] · B[k×n]` in `dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Gemm {
    /// Rows of the output.
    pub m: u64,
    /// Columns of the output.
    pub n: u64,
    /// Inner dimension.
    pub k: u64,
    /// Independent products (strided batched GEMM).
    pub batch: u64,
    /// Element type.
    pub dtype: Dtype,
    /// The pass it computes.
    #[serde(default)]
    pub pass: GemmPass,
    /// FP8 with block (MX or 128-block) scales instead of one scale per tensor.
    #[serde(default)]
    pub block_scaled: bool,
}

impl Gemm {
    /// A single (batch 1) GEMM in bf16.
    ///
    /// ```
    /// let g = lmshape::hardware::Gemm::bf16(2048, 4096, 4096);
    /// assert_eq!(g.flops(), 2.0 * 2048.0 * 4096.0 * 4096.0);
    /// ```
    pub fn bf16(m: u64, n: u64, k: u64) -> Gemm {
        Gemm {
            m,
            n,
            k,
            batch: 1,
            dtype: Dtype::Bf16,
            pass: GemmPass::Forward,
            block_scaled: false,
        }
    }

    /// `2·m·n·k·batch` FLOPs.
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64 * self.batch as f64
    }

    /// Bytes read and written at least once: `(m·k + k·n + m·n) · batch · bits / 8`.
    pub fn min_bytes(&self) -> f64 {
        let (m, n, k) = (self.m as f64, self.n as f64, self.k as f64);
        (m * k + k * n + m * n) * self.batch as f64 * self.dtype.bits() as f64 / 8.0
    }

    /// The data-gradient GEMM of `Y = X·W` in the backward pass: `dX[m×k] = dY[m×n]·Wᵀ`
    /// (inner dimension `n`).
    pub fn data_grad(&self) -> Gemm {
        Gemm {
            n: self.k,
            k: self.n,
            pass: GemmPass::DataGrad,
            ..*self
        }
    }

    /// The weight-gradient GEMM: `dW[k×n] = Xᵀ[k×m]·dY[m×n]` (inner dimension `m`).
    pub fn weight_grad(&self) -> Gemm {
        Gemm {
            m: self.k,
            n: self.n,
            k: self.m,
            pass: GemmPass::WeightGrad,
            ..*self
        }
    }

    /// Reject zero dimensions.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] naming the zero dimension.
    pub fn validate(&self) -> Result<()> {
        crate::error::positive(self.m, "gemm m")?;
        crate::error::positive(self.n, "gemm n")?;
        crate::error::positive(self.k, "gemm k")?;
        crate::error::positive(self.batch, "gemm batch")?;
        Ok(())
    }
}

/// Something that can say how long a GEMM takes. Object-safe: pass `&dyn GemmTimer`; `Send +
/// Sync`, so one timer can serve threads that plan or search in parallel.
///
/// ```
/// use lmshape::hardware::{AnalyticalTimer, Gemm, GemmTimer, GpuSpec};
/// let timer: &dyn GemmTimer = &AnalyticalTimer::new(GpuSpec::a100_80gb());
/// let s = timer.gemm_seconds(&Gemm::bf16(8192, 8192, 8192))?;
/// assert!(s > 0.0 && s.is_finite());
/// # Ok::<(), lmshape::Error>(())
/// ```
pub trait GemmTimer: Send + Sync {
    /// Seconds for one execution of `gemm`.
    ///
    /// # Errors
    /// A GEMM with a zero dimension, a dtype the timer cannot time, or a shape a measured table lacks ([`Error::MissingTiming`]).
    fn gemm_seconds(&self, gemm: &Gemm) -> Result<f64>;

    /// A short description of the timer (for reports).
    fn describe(&self) -> String {
        "gemm timer".into()
    }
}

/// Memoises another timer (useful for slow timers such as measurements). Thread-safe.
pub struct CachedTimer<T> {
    inner: T,
    cache: Mutex<HashMap<Gemm, f64>>,
}

impl<T: GemmTimer> CachedTimer<T> {
    /// Wrap a timer.
    pub fn new(inner: T) -> CachedTimer<T> {
        CachedTimer {
            inner,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Distinct GEMMs timed so far.
    pub fn len(&self) -> usize {
        self.cache.lock().map_or(0, |c| c.len())
    }

    /// Whether nothing was timed yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The wrapped timer.
    pub fn inner(&self) -> &T {
        &self.inner
    }
}

impl<T: GemmTimer> GemmTimer for CachedTimer<T> {
    fn gemm_seconds(&self, gemm: &Gemm) -> Result<f64> {
        if let Some(s) = self
            .cache
            .lock()
            .map_err(|_| Error::Gpu("timer cache lock poisoned".into()))?
            .get(gemm)
        {
            return Ok(*s);
        }
        let s = self.inner.gemm_seconds(gemm)?;
        self.cache
            .lock()
            .map_err(|_| Error::Gpu("timer cache lock poisoned".into()))?
            .insert(*gemm, s);
        Ok(s)
    }

    fn describe(&self) -> String {
        format!("cached {}", self.inner.describe())
    }
}
