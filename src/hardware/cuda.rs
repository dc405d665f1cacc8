//! Real GEMM timings with cuBLAS (feature `cuda`).
//!
//! Built on `cudarc` with dynamic loading, so it compiles without a CUDA toolkit. Before
//! touching the driver, [`CudaTimer::new`] checks that the driver and cuBLAS libraries can be
//! loaded (`is_culib_present`) and returns [`Error::Gpu`] otherwise — with dynamic loading a
//! missing library would otherwise panic on first use.
//!
//! Each timing: `warmup` untimed runs, then `repeats` runs each between two CUDA events created
//! with `CU_EVENT_DEFAULT` (events created without timing cannot be measured); the median is
//! returned. cuBLAS is column-major: `C[m×n] = A[m×k] · B[k×n]` is issued as
//! `cublasGemmStridedBatchedEx(N, N, m, n, k, A, lda = m, B, ldb = k, C, ldc = m)` with fp32
//! accumulation (`CUBLAS_COMPUTE_32F`; TF32 uses `CUBLAS_COMPUTE_32F_FAST_TF32`).

use super::{Dtype, Gemm, GemmTimer};
use crate::error::{Error, Result};
use cudarc::cublas::{CudaBlas, result as blas, sys as bsys};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, sys};
use std::ffi::c_void;
use std::sync::Arc;

/// A [`GemmTimer`] that runs the GEMM on a GPU.
pub struct CudaTimer {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    /// Untimed runs before measuring.
    pub warmup: u32,
    /// Timed runs; the median is reported.
    pub repeats: u32,
    device_name: String,
}

fn gpu_err<E: std::fmt::Debug>(what: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Gpu(format!("{what}: {e:?}"))
}

impl CudaTimer {
    /// Open device `ordinal`.
    ///
    /// # Errors
    /// [`Error::Gpu`] (never a panic) when no driver or cuBLAS is present, or the device cannot
    /// be opened.
    pub fn new(ordinal: usize) -> Result<CudaTimer> {
        // SAFETY: these only try to load the shared libraries.
        if !unsafe { sys::is_culib_present() } {
            return Err(Error::Gpu(
                "the CUDA driver library (libcuda) is not available".into(),
            ));
        }
        if !unsafe { bsys::is_culib_present() } {
            return Err(Error::Gpu(
                "the cuBLAS library (libcublas) is not available".into(),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(gpu_err("cuda context"))?;
        let device_name = ctx.name().unwrap_or_else(|_| format!("cuda:{ordinal}"));
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(gpu_err("cublas handle"))?;
        Ok(CudaTimer {
            ctx,
            stream,
            blas,
            warmup: 3,
            repeats: 10,
            device_name,
        })
    }

    /// The device's name as the driver reports it.
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    fn run(
        &self,
        g: &Gemm,
        a: &CudaSlice<u8>,
        b: &CudaSlice<u8>,
        c: &mut CudaSlice<u8>,
    ) -> Result<()> {
        let (dt, compute) = match g.dtype {
            Dtype::Bf16 => (
                bsys::cudaDataType_t::CUDA_R_16BF,
                bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            ),
            Dtype::Fp16 => (
                bsys::cudaDataType_t::CUDA_R_16F,
                bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            ),
            Dtype::Fp32 => (
                bsys::cudaDataType_t::CUDA_R_32F,
                bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            ),
            Dtype::Tf32 => (
                bsys::cudaDataType_t::CUDA_R_32F,
                bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
            ),
            Dtype::Fp8 | Dtype::Fp4 => {
                return Err(Error::Gpu(format!(
                    "{} GEMMs are not timed by this backend",
                    g.dtype
                )));
            }
        };
        let int = |x: u64, what: &'static str| -> Result<i32> {
            i32::try_from(x).map_err(|_| Error::Inconsistent {
                rule: "cuBLAS dimensions must fit in a 32-bit int",
                detail: format!("{what} = {x}"),
            })
        };
        let (m, n, k) = (int(g.m, "m")?, int(g.n, "n")?, int(g.k, "k")?);
        let batch = int(g.batch, "batch")?;
        let alpha = 1.0f32;
        let beta = 0.0f32;
        let (pa, _ga) = a.device_ptr(&self.stream);
        let (pb, _gb) = b.device_ptr(&self.stream);
        let (pc, _gc) = c.device_ptr_mut(&self.stream);
        // SAFETY: buffers hold batch·m·k, batch·k·n and batch·m·n elements of the dtype
        // (allocated by the caller from the same GEMM), leading dimensions match column-major
        // storage, and alpha/beta are f32 as CUBLAS_COMPUTE_32F(_FAST_TF32) requires.
        unsafe {
            blas::gemm_strided_batched_ex(
                *self.blas.handle(),
                bsys::cublasOperation_t::CUBLAS_OP_N,
                bsys::cublasOperation_t::CUBLAS_OP_N,
                m,
                n,
                k,
                (&alpha) as *const f32 as *const c_void,
                pa as *const c_void,
                dt,
                m,
                (g.m * g.k) as i64,
                pb as *const c_void,
                dt,
                k,
                (g.k * g.n) as i64,
                (&beta) as *const f32 as *const c_void,
                pc as *mut c_void,
                dt,
                m,
                (g.m * g.n) as i64,
                batch,
                compute,
                bsys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(gpu_err("cublasGemmStridedBatchedEx"))
    }
}

impl GemmTimer for CudaTimer {
    fn gemm_seconds(&self, gemm: &Gemm) -> Result<f64> {
        gemm.validate()?;
        let bytes = |rows: u64, cols: u64| -> Result<usize> {
            rows.checked_mul(cols)
                .and_then(|x| x.checked_mul(gemm.batch))
                .and_then(|x| x.checked_mul(gemm.dtype.bytes()))
                .and_then(|x| usize::try_from(x).ok())
                .ok_or(Error::Overflow {
                    what: "gemm buffer bytes",
                })
        };
        let a = self
            .stream
            .alloc_zeros::<u8>(bytes(gemm.m, gemm.k)?)
            .map_err(gpu_err("alloc A"))?;
        let b = self
            .stream
            .alloc_zeros::<u8>(bytes(gemm.k, gemm.n)?)
            .map_err(gpu_err("alloc B"))?;
        let mut c = self
            .stream
            .alloc_zeros::<u8>(bytes(gemm.m, gemm.n)?)
            .map_err(gpu_err("alloc C"))?;
        for _ in 0..self.warmup {
            self.run(gemm, &a, &b, &mut c)?;
        }
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.ctx.new_event(flags).map_err(gpu_err("event"))?;
        let end = self.ctx.new_event(flags).map_err(gpu_err("event"))?;
        let mut times = Vec::with_capacity(self.repeats.max(1) as usize);
        for _ in 0..self.repeats.max(1) {
            start.record(&self.stream).map_err(gpu_err("record"))?;
            self.run(gemm, &a, &b, &mut c)?;
            end.record(&self.stream).map_err(gpu_err("record"))?;
            let ms = start.elapsed_ms(&end).map_err(gpu_err("elapsed"))?;
            times.push(ms as f64 / 1e3);
        }
        self.stream.synchronize().map_err(gpu_err("synchronize"))?;
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }

    fn describe(&self) -> String {
        format!(
            "cuBLAS on {} (median of {} runs)",
            self.device_name, self.repeats
        )
    }
}
