//! Hardware: GPU facts (and, with the timing modules, GEMM timers).

pub mod gpu;

pub use gpu::{Dtype, GpuSpec};
