//! From the allocated estimate to what the tools report: reserved and device figures under a
//! framework's profile, the verdict against a card, and the least recomputation that fits.

use super::{FrameworkProfile, MemoryOptions, TrainingMemory, TrainingMemoryReport};
use crate::error::{Result, add};
use crate::flops::Recompute;
use crate::model::Transformer;
use crate::parallel::ParallelLayout;
use serde::{Deserialize, Serialize};

impl FrameworkProfile {
    /// `opts` with the framework and the byte counts of its optimizer (`opts.optimizer`, else
    /// the framework's usual one, [`crate::framework::Framework::default_optimizer`]): the
    /// memory options its estimate is made under.
    ///
    /// ```
    /// use lmshape::memory::{Framework, FrameworkProfile, MemoryOptions, Precision};
    /// let p = FrameworkProfile::of(Framework::MegatronDeepspeed);
    /// assert_eq!(p.memory_options(&MemoryOptions::default()).precision, Precision::DEEPSPEED_20);
    /// ```
    pub fn memory_options(&self, opts: &MemoryOptions) -> MemoryOptions {
        let optimizer = opts.optimizer.unwrap_or(self.framework.default_optimizer());
        MemoryOptions {
            precision: optimizer.precision(),
            framework: self.framework,
            ..*opts
        }
    }

    /// The three figures of one GPU whose estimate is `memory`.
    ///
    /// # Errors
    /// A reserved factor outside `[1, 4]`, or figures that overflow `u64`.
    pub fn device(&self, memory: &TrainingMemory) -> Result<DeviceMemory> {
        const W: &str = "device memory";
        let allocated_bytes = memory.total_bytes;
        crate::error::in_range_f64(
            self.reserved_factor,
            1.0,
            4.0,
            "reserved_factor",
            "between 1 and 4",
        )?;
        let reserved = (allocated_bytes as f64 * self.reserved_factor).ceil();
        let reserved_bytes = crate::error::to_u64(reserved, W)?;
        let device_bytes = add(reserved_bytes, self.runtime_bytes, W)?;
        let (under, _) = self.device_error;
        crate::error::in_range_f64(under, -0.5, 0.0, "device_error.0", "in [-0.5, 0]")?;
        let band = (device_bytes as f64 * (1.0 / (1.0 + under) - 1.0)).ceil();
        Ok(DeviceMemory {
            allocated_bytes,
            reserved_bytes,
            device_bytes,
            band_bytes: crate::error::to_u64(band, W)?,
        })
    }

    /// The figures of the stage with the largest device figure in `report`.
    ///
    /// # Errors
    /// As [`FrameworkProfile::device`].
    pub fn most_loaded(&self, report: &TrainingMemoryReport) -> Result<DeviceMemory> {
        let mut most = self.device(&report.first)?;
        for stage in [&report.middle, &report.last] {
            let d = self.device(stage)?;
            if d.device_bytes > most.device_bytes {
                most = d;
            }
        }
        Ok(most)
    }
}

/// The least recomputation — none, then selective, then full (Korthikanti et al. 2022 §5:
/// selective costs the least extra compute, full the most) — whose device figure under
/// `profile` fits `fraction` of a card of `capacity_bytes`; `None` when even full
/// recomputation does not fit. Returns the choice and its figures.
///
/// ```
/// use lmshape::{memory::{self, Framework, FrameworkProfile, MemoryOptions}, presets, ParallelLayout, Recompute};
/// let m = presets::by_name("gpt3-175b")?;
/// let layout = ParallelLayout::builder().tp(8).pp(8).dp(2).micro_batch(1).global_batch(64).build()?;
/// let profile = FrameworkProfile::of(Framework::MegatronCore);
/// let (rc, _) = memory::least_recompute(&m, &layout, &MemoryOptions::default(), &profile, 80 << 30, 0.9)?
///     .expect("some recomputation fits");
/// assert_ne!(rc, Recompute::None); // 175B on 64 GPUs needs some recomputation
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// A fraction outside `[0, 1]`, or the errors of [`crate::memory::training_memory`].
pub fn least_recompute(
    model: &Transformer,
    layout: &ParallelLayout,
    opts: &MemoryOptions,
    profile: &FrameworkProfile,
    capacity_bytes: u64,
    fraction: f64,
) -> Result<Option<(Recompute, DeviceMemory)>> {
    let placed = crate::parallel::Placement::new(model, layout)?;
    least_recompute_placed(&placed, opts, profile, capacity_bytes, fraction)
}

/// [`least_recompute`] of a model and layout already checked together
/// ([`crate::parallel::Placement`]).
///
/// # Errors
/// A fraction outside `[0, 1]`, or the errors of [`crate::memory::training_memory_placed`].
pub fn least_recompute_placed(
    placed: &crate::parallel::Placement<'_>,
    opts: &MemoryOptions,
    profile: &FrameworkProfile,
    capacity_bytes: u64,
    fraction: f64,
) -> Result<Option<(Recompute, DeviceMemory)>> {
    crate::error::in_range_f64(fraction, 0.0, 1.0, "fraction", "in [0, 1]")?;
    for recompute in [Recompute::None, Recompute::Selective, Recompute::Full] {
        let report = super::training_memory_placed(&placed.with_recompute(recompute), opts)?;
        let device = profile.most_loaded(&report)?;
        if device.device_bytes as f64 <= capacity_bytes as f64 * fraction {
            return Ok(Some((recompute, device)));
        }
    }
    Ok(None)
}

/// One GPU's memory as the tools report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMemory {
    /// `torch.cuda.max_memory_allocated`: model states, activations and the buffers alive at
    /// the peak.
    pub allocated_bytes: u64,
    /// `torch.cuda.max_memory_reserved`: the caching allocator's pool.
    pub reserved_bytes: u64,
    /// What `nvidia-smi` shows: the pool plus the runtime.
    pub device_bytes: u64,
    /// How far above `device_bytes` the measured figure may lie: the estimate's largest
    /// held-out underestimate under its framework profile
    /// ([`FrameworkProfile::device_error`]), as bytes. The verdict is "tight" inside it.
    #[serde(default)]
    pub band_bytes: u64,
}

/// Whether a GPU's memory fits its card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The device figure and its band ([`DeviceMemory::band_bytes`]) are within the card.
    Fits,
    /// The device figure is within the card, its band is not: the estimate's own measured
    /// error could take it out of memory.
    Tight,
    /// Above the card: out of memory.
    Oom,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Fits => "fits",
            Verdict::Tight => "tight",
            Verdict::Oom => "out of memory",
        })
    }
}

impl DeviceMemory {
    /// The verdict against a card of `capacity_bytes`, and the margin (capacity − device;
    /// negative when it does not fit): "fits" when the estimate and its band
    /// ([`DeviceMemory::band_bytes`]) are within the card, "tight" when only the estimate is,
    /// "out of memory" when the estimate is not.
    ///
    /// ```
    /// use lmshape::memory::{DeviceMemory, Verdict};
    /// let m = DeviceMemory { allocated_bytes: 60 << 30, reserved_bytes: 70 << 30, device_bytes: 76 << 30, band_bytes: 6 << 30 };
    /// assert_eq!(m.verdict(80 << 30).0, Verdict::Tight);
    /// assert_eq!(m.verdict(80 << 30).1, 4 << 30);
    /// assert_eq!(m.verdict(82 << 30).0, Verdict::Fits);
    /// assert_eq!(m.verdict(75 << 30).0, Verdict::Oom);
    /// ```
    pub fn verdict(&self, capacity_bytes: u64) -> (Verdict, i64) {
        let margin = i128::from(capacity_bytes) - i128::from(self.device_bytes);
        let margin = margin.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        let high = i128::from(self.device_bytes) + i128::from(self.band_bytes);
        let v = if high <= i128::from(capacity_bytes) {
            Verdict::Fits
        } else if self.device_bytes <= capacity_bytes {
            Verdict::Tight
        } else {
            Verdict::Oom
        };
        (v, margin)
    }
}
