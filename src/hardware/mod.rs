//! Hardware: GPU facts and GEMM timers (the training step that uses them is [`crate::step`]).
//!
//! * [`gpu`]: GPU presets;
//! * [`gemm`]: the GEMM description and the object-safe [`GemmTimer`] trait (+ a cache);
//! * [`analytical`]: the default tile/wave-quantization + roofline timer;
//! * [`table`]: measured timings loaded from JSON;
//! * `cuda` (feature `cuda`): real cuBLAS timings.

pub mod analytical;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod gemm;
pub mod gpu;
pub mod table;

pub use analytical::AnalyticalTimer;
pub use gemm::{CachedTimer, Gemm, GemmPass, GemmTimer};
pub use gpu::{Dtype, GemmPrecision, GpuSpec};
pub use table::{Missing, TableTimer};
