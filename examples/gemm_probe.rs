//! Time GEMMs on a real GPU with cuBLAS and compare with the analytical model (feature `cuda`).
//!
//! `cargo run --release --features cuda --example gemm_probe -- [--gpu h200] [--dtype bf16]
//! [--out table.json] [--json]`: sweeps a set of transformer-like shapes (aligned and
//! misaligned, wave-quantized pairs, attention batches), prints analytical vs measured side
//! by side, and with `--out` writes the measurements in the `TableTimer` JSON format.

#[macro_use]
mod common;

use clap::Parser;
use common::cli::GpuParser;
use common::{die, or_die};
use lmshape::hardware::cuda::CudaTimer;
use lmshape::hardware::table::{TableEntry, TimingTable};
use lmshape::hardware::{AnalyticalTimer, Dtype, Gemm, GemmTimer, GpuSpec};
use serde_json::json;

/// Time GEMMs with cuBLAS next to the analytical model.
#[derive(Parser, Debug)]
#[command(name = "gemm_probe", version, long_about = None)]
struct Cli {
    /// The GPU preset the analytical model describes.
    #[arg(long, value_name = "NAME", default_value = "h200", value_parser = GpuParser)]
    gpu: GpuSpec,
    /// Element type: fp32, tf32, fp16, bf16 or fp8.
    #[arg(long, value_name = "DTYPE", default_value = "bf16", value_parser = |s: &str| s.parse::<Dtype>().map_err(|e| e.to_string()))]
    dtype: Dtype,
    /// Write the measurements as a timing table (JSON) for the table timer.
    #[arg(long, value_name = "PATH")]
    out: Option<String>,
    /// Time a grid of shapes and write it as a system profile's GEMM grid (JSON).
    #[arg(long, value_name = "PATH")]
    grid: Option<String>,
    /// Rows of the grid.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "128,1024,4096,4097,8192,16384"
    )]
    grid_m: Vec<u64>,
    /// Output features of the grid.
    #[arg(long, value_delimiter = ',', default_value = "1024,4096,8192,16384")]
    grid_n: Vec<u64>,
    /// Input features of the grid.
    #[arg(long, value_delimiter = ',', default_value = "1024,4096,8192,16384")]
    grid_k: Vec<u64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn shapes(dtype: Dtype) -> Vec<Gemm> {
    let g = |m, n, k, batch| Gemm {
        pass: lmshape::hardware::GemmPass::Forward,
        block_scaled: false,
        m,
        n,
        k,
        batch,
        dtype,
    };
    vec![
        // Square, growing.
        g(1024, 1024, 1024, 1),
        g(2048, 2048, 2048, 1),
        g(4096, 4096, 4096, 1),
        g(8192, 8192, 8192, 1),
        // BLOOM-like QKV at tp 8: 13824 (= 128·108) vs 14400 hidden.
        g(2048, 3 * 13824 / 8, 13824, 1),
        g(2048, 3 * 14400 / 8, 14400, 1),
        // MLP in/out at tp 4 for BLOOM-176B (micro-batch 2).
        g(4096, 4 * 14336 / 4, 14336, 1),
        g(4096, 14336, 4 * 14336 / 4, 1),
        // Wave quantization: 132 vs 133 tiles of 128×256 on an H100/H200.
        g(128 * 132, 256, 8192, 1),
        g(128 * 133, 256, 8192, 1),
        // k alignment: multiple of 64, multiple of 8, not a multiple of 8.
        g(4096, 4096, 4096 + 64, 1),
        g(4096, 4096, 4096 + 8, 1),
        g(4096, 4096, 4096 + 4, 1),
        // Attention batches: head size 128, 150 (misaligned), 108 (misaligned).
        g(2048, 2048, 128, 56),
        g(2048, 2048, 150, 48),
        g(2048, 2048, 108, 64),
        g(2048, 128, 2048, 56),
    ]
}

/// Run the example with the process's command line.
pub fn main() {
    let args: Cli = common::parse();
    let dtype = args.dtype;
    let timer = CudaTimer::new(0).unwrap_or_else(|e| die(&format!("no GPU to probe: {e}")));
    let model = AnalyticalTimer::new(args.gpu.clone());
    let mut rows = Vec::new();
    for g in shapes(dtype) {
        let measured = or_die(timer.gemm_seconds(&g));
        let predicted = or_die(model.gemm_seconds(&g));
        rows.push((g, measured, predicted));
    }
    if let Some(path) = &args.out {
        let table = TimingTable {
            gpu: timer.device_name().to_string(),
            entries: rows
                .iter()
                .map(|(g, s, _)| TableEntry {
                    m: g.m,
                    n: g.n,
                    k: g.k,
                    batch: g.batch,
                    dtype: g.dtype,
                    seconds: *s,
                })
                .collect(),
        };
        std::fs::write(path, serde_json::to_string_pretty(&table).unwrap())
            .unwrap_or_else(|e| die(&format!("cannot write {path}: {e}")));
    }
    if let Some(path) = &args.grid {
        let sorted = |v: &[u64]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            v.dedup();
            v
        };
        let (ms, ns, ks) = (
            sorted(&args.grid_m),
            sorted(&args.grid_n),
            sorted(&args.grid_k),
        );
        let mut micros = Vec::new();
        for &m in &ms {
            for &n in &ns {
                for &k in &ks {
                    let g = Gemm {
                        m,
                        n,
                        k,
                        ..Gemm::bf16(1, 1, 1)
                    };
                    let g = Gemm { dtype, ..g };
                    micros.push(or_die(timer.gemm_seconds(&g)) * 1e6);
                }
            }
        }
        let grid = lmshape::system::GemmGrid {
            precision: dtype.to_string(),
            m: ms,
            n: ns,
            k: ks,
            micros,
            filled_cells: 0,
        };
        std::fs::write(path, serde_json::to_string_pretty(&grid).unwrap())
            .unwrap_or_else(|e| die(&format!("cannot write {path}: {e}")));
    }
    if args.json {
        let out: Vec<_> = rows
            .iter()
            .map(|(g, s, p)| {
                json!({"m": g.m, "n": g.n, "k": g.k, "batch": g.batch, "dtype": g.dtype,
                    "measured_seconds": s, "analytical_seconds": p,
                    "measured_tflops": g.flops() / s / 1e12, "analytical_tflops": g.flops() / p / 1e12})
            })
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({"device": timer.device_name(), "rows": out}))
                .unwrap()
        );
        return;
    }
    outln!(
        "{} vs the analytical model of {}",
        timer.describe(),
        model.gpu.name
    );
    outln!(
        "{:>7} {:>7} {:>7} {:>5} {:>12} {:>12} {:>10} {:>10} {:>7}",
        "m",
        "n",
        "k",
        "batch",
        "measured µs",
        "model µs",
        "meas TF/s",
        "model TF/s",
        "ratio"
    );
    for (g, s, p) in rows {
        outln!(
            "{:>7} {:>7} {:>7} {:>5} {:>12.1} {:>12.1} {:>10.1} {:>10.1} {:>7.2}",
            g.m,
            g.n,
            g.k,
            g.batch,
            s * 1e6,
            p * 1e6,
            g.flops() / s / 1e12,
            g.flops() / p / 1e12,
            p / s
        );
    }
}
