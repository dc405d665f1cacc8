//! Shared test helpers.
#![allow(dead_code)]

use proptest::test_runner::{Config, FileFailurePersistence};

/// Proptest configuration that records failing cases in `proptest-regressions/NAME.txt`
/// (integration tests have no `lib.rs` beside them for proptest's default location).
pub fn proptest_config(file: &'static str, cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))),
        ..Config::default()
    }
}

/// One row of `tests/data/bloom_throughput_tp8.json` (BigScience `chronicles-prequel.md`).
pub struct BloomRow {
    /// The model (BLOOM architecture, vocabulary 250880, sequence 2048).
    pub model: lmshape::Transformer,
    /// The layout (tp/pp/dp/micro-batch as recorded, global batch 2048, full recomputation).
    pub layout: lmshape::ParallelLayout,
    /// Measured TFLOP/s per GPU.
    pub tflops_per_gpu: f64,
    /// Measured peak memory, when recorded.
    pub max_gpu_memory_gb: Option<f64>,
}

/// The BigScience rows. Rows whose head count was not recorded take the count recorded for the
/// same hidden size and depth, else for the same hidden size (BigScience varied one thing at a
/// time).
pub fn bloom_rows() -> Vec<BloomRow> {
    use serde_json::Value;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/bloom_throughput_tp8.json"
    ))
    .unwrap();
    let d: Value = serde_json::from_str(&text).unwrap();
    let runs = d["runs"].as_array().unwrap().clone();
    runs.iter()
        .map(|r| {
            let same = |o: &&Value, depth: bool| {
                o["hidden_size"] == r["hidden_size"]
                    && o["num_heads"].is_u64()
                    && (!depth || o["num_layers"] == r["num_layers"])
            };
            let heads = r["num_heads"].as_u64().unwrap_or_else(|| {
                runs.iter()
                    .find(|o| same(o, true))
                    .or_else(|| runs.iter().find(|o| same(o, false)))
                    .and_then(|o| o["num_heads"].as_u64())
                    .unwrap()
            });
            let u = |k: &str| r[k].as_u64().unwrap();
            BloomRow {
                model: lmshape::Transformer::standard(
                    250880,
                    u("hidden_size"),
                    u("num_layers"),
                    heads,
                    2048,
                    lmshape::Architecture::bloom(),
                )
                .unwrap(),
                layout: lmshape::ParallelLayout {
                    tp: u("tp"),
                    pp: u("pp"),
                    dp: u("dp"),
                    micro_batch: u("micro_batch"),
                    global_batch: 2048,
                    seq_len: 2048,
                    recompute: lmshape::Recompute::Full,
                    ..lmshape::ParallelLayout::default()
                },
                tflops_per_gpu: r["tflops_per_gpu"].as_f64().unwrap(),
                max_gpu_memory_gb: r["max_gpu_memory_gb"].as_f64(),
            }
        })
        .collect()
}
