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

/// An eight-layer model of Llama 3 8B's layer (hidden 4096, 32 heads and 8 key/value heads
/// of 128, gated FFN 14336, vocabulary 32000) with `max_positions` positions.
pub fn llama_8_layers(max_positions: u64) -> lmshape::Transformer {
    lmshape::Transformer::builder()
        .vocab_size(32000)
        .hidden_size(4096)
        .num_layers(8)
        .num_heads(32)
        .num_kv_heads(8)
        .head_dim(128)
        .ffn_size(14336)
        .max_positions(max_positions)
        .arch(lmshape::Architecture::llama())
        .build()
        .unwrap()
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
impl BloomRow {
    /// The row's layout under DeepSpeed's ZeRO stage 1, as BigScience's fp16 rounds ran.
    #[allow(dead_code)]
    pub fn zero1_layout(&self) -> lmshape::ParallelLayout {
        self.layout
            .to_builder()
            .zero(lmshape::ZeroStage::OptimizerStates)
            .build()
            .unwrap()
    }
}

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
                layout: lmshape::ParallelLayout::builder()
                    .tp(u("tp"))
                    .pp(u("pp"))
                    .dp(u("dp"))
                    .micro_batch(u("micro_batch"))
                    .global_batch(2048)
                    .seq_len(2048)
                    .recompute(lmshape::Recompute::Full)
                    .build()
                    .unwrap(),
                tflops_per_gpu: r["tflops_per_gpu"].as_f64().unwrap(),
                max_gpu_memory_gb: r["max_gpu_memory_gb"].as_f64(),
            }
        })
        .collect()
}

/// The four measured B200 runs of `tests/data/megatron_core_b200_llama3_70b_l12.json`: the
/// truncated Llama-3-70B and each run's layout (distributed optimizer, as launched) with its
/// JSON row.
pub fn b200_runs() -> (
    lmshape::Transformer,
    Vec<(lmshape::ParallelLayout, serde_json::Value)>,
) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/megatron_core_b200_llama3_70b_l12.json"
    ))
    .unwrap();
    let data: serde_json::Value = serde_json::from_str(&text).unwrap();
    let model = lmshape::model::hf::from_hf_config(&data["model"]).unwrap();
    let runs = data["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| {
            let n = |k: &str| run[k].as_u64().unwrap();
            let layout = lmshape::ParallelLayout::builder()
                .tp(n("tp"))
                .pp(n("pp"))
                .dp(n("dp"))
                .micro_batch(n("micro_batch"))
                .global_batch(n("global_batch"))
                .seq_len(n("seq_len"))
                .sequence_parallel(run["sequence_parallel"].as_bool().unwrap())
                .zero(lmshape::ZeroStage::OptimizerStates)
                .build()
                .unwrap();
            (layout, run.clone())
        })
        .collect();
    (model, runs)
}
