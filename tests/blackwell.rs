//! Megatron-Core on Blackwell: the step model against measured runs — four layouts of a
//! truncated Llama-3-70B on 8 B200 (`megatron_core_b200_llama3_70b_l12.json`) and NVIDIA's
//! published GB200 throughput of dense and mixture-of-experts models
//! (`megatron_bridge_gb200.json`). One software efficiency is fitted per cluster on its dense
//! runs and graded leave-one-out; the GB200 mixture-of-experts runs are then predicted with the
//! GB200 factor, untouched.

mod common;

use lmshape::hardware::{AnalyticalTimer, GpuSpec};
use lmshape::memory::{AttentionKernel, GemmPrecision, MemoryOptions};
use lmshape::model::hf::from_hf_config_str;
use lmshape::parallel::Schedule;
use lmshape::step::{self, Cluster, MeasuredRun, StepOptions};
use lmshape::{ParallelLayout, Recompute, Transformer, ZeroStage};
use serde_json::Value;

fn data(file: &str) -> Value {
    let path = format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The Hugging Face configs of the models NVIDIA benchmarked (their published `config.json`
/// values; the mixture-of-experts ones are those of `published_counts.rs`).
fn model(name: &str) -> Option<Transformer> {
    let llama = |h: u64, f: u64, heads: u64, layers: u64| {
        format!(
            r#"{{"model_type":"llama","hidden_size":{h},"intermediate_size":{f},"num_attention_heads":{heads},"num_key_value_heads":8,"num_hidden_layers":{layers},"vocab_size":128256,"tie_word_embeddings":false,"max_position_embeddings":8192}}"#
        )
    };
    let config = match name {
        "llama3-8b" => llama(4096, 14336, 32, 32),
        "llama3-70b" => llama(8192, 28672, 64, 80),
        "llama3.1-405b" => llama(16384, 53248, 128, 126),
        "deepseek-v3" => r#"{"model_type":"deepseek_v3","hidden_size":7168,"intermediate_size":18432,"moe_intermediate_size":2048,"num_hidden_layers":61,"num_attention_heads":128,"num_key_value_heads":128,"n_shared_experts":1,"n_routed_experts":256,"num_experts_per_tok":8,"q_lora_rank":1536,"kv_lora_rank":512,"qk_nope_head_dim":128,"qk_rope_head_dim":64,"v_head_dim":128,"first_k_dense_replace":3,"moe_layer_freq":1,"vocab_size":129280,"max_position_embeddings":163840,"tie_word_embeddings":false}"#.into(),
        "gpt-oss-120b" => r#"{"model_type":"gpt_oss","hidden_size":2880,"intermediate_size":2880,"num_hidden_layers":36,"num_attention_heads":64,"num_key_value_heads":8,"head_dim":64,"num_local_experts":128,"num_experts_per_tok":4,"sliding_window":128,"attention_bias":true,"vocab_size":201088,"max_position_embeddings":131072,"tie_word_embeddings":false}"#.into(),
        "qwen3-30b-a3b" => r#"{"model_type":"qwen3_moe","hidden_size":2048,"intermediate_size":6144,"moe_intermediate_size":768,"num_attention_heads":32,"num_key_value_heads":4,"head_dim":128,"num_hidden_layers":48,"num_experts":128,"num_experts_per_tok":8,"decoder_sparse_step":1,"mlp_only_layers":[],"vocab_size":151936,"max_position_embeddings":40960,"tie_word_embeddings":false}"#.into(),
        "qwen3-235b-a22b" => r#"{"model_type":"qwen3_moe","hidden_size":4096,"intermediate_size":12288,"moe_intermediate_size":1536,"num_attention_heads":64,"num_key_value_heads":4,"head_dim":128,"num_hidden_layers":94,"num_experts":128,"num_experts_per_tok":8,"decoder_sparse_step":1,"mlp_only_layers":[],"vocab_size":151936,"max_position_embeddings":40960,"tie_word_embeddings":false}"#.into(),
        _ => return None,
    };
    Some(from_hf_config_str(&config).unwrap())
}

/// Megatron-Core with Transformer Engine: FlashAttention, no dropout, fp32 gradients.
fn options(precision: GemmPrecision) -> StepOptions {
    StepOptions {
        memory: MemoryOptions {
            attention: AttentionKernel::Flash,
            dropout: false,
            gemm_precision: precision,
            ..MemoryOptions::default()
        },
        ..StepOptions::default()
    }
}

/// A measured run: the model, its layout, the cluster, the options and the measured tokens per
/// second per GPU.
struct Run {
    name: String,
    model: Transformer,
    layout: ParallelLayout,
    cluster: Cluster,
    opts: StepOptions,
    tokens_per_s_per_gpu: f64,
}

impl Run {
    fn is_moe(&self) -> bool {
        self.model.moe().is_some()
    }

    /// The measured throughput in the step model's accounting, for calibration.
    fn measured(&self) -> MeasuredRun {
        let flops = lmshape::flops::matmul_flops_per_token(
            &self.model,
            &lmshape::flops::FlopsConvention::megatron(
                self.layout.seq_len(),
                self.layout.recompute(),
            ),
        )
        .unwrap()
        .training_flops();
        MeasuredRun {
            model: self.model,
            layout: self.layout,
            tflops_per_gpu: self.tokens_per_s_per_gpu * flops / 1e12,
        }
    }
}

/// The B200 runs (step time over 8 GPUs) and the GB200 runs.
fn runs() -> Vec<Run> {
    let mut out = Vec::new();
    let (m, b200) = common::b200_runs();
    for (layout, r) in b200 {
        let n = |k: &str| r[k].as_u64().unwrap();
        let tokens = (n("global_batch") * n("seq_len")) as f64;
        out.push(Run {
            name: format!("b200 70b-l12 tp{} pp{}", n("tp"), n("pp")),
            model: m,
            layout,
            cluster: Cluster::reference_node(GpuSpec::b200()),
            opts: options(GemmPrecision::Bf16),
            tokens_per_s_per_gpu: tokens / (r["real_step_ms"].as_f64().unwrap() / 1e3) / 8.0,
        });
    }
    let gb200 = data("megatron_bridge_gb200.json");
    for r in gb200["runs"].as_array().unwrap() {
        let n = |k: &str| r[k].as_u64().unwrap();
        let name = r["model"].as_str().unwrap();
        let Some(model) = model(name) else { continue };
        let (tp, pp, cp) = (n("tp"), n("pp"), n("cp"));
        let dp = n("gpus") / (tp * pp * cp);
        let v = r["vp"].as_u64().unwrap_or(1);
        let layout = ParallelLayout::builder()
            .tp(tp)
            .pp(pp)
            .dp(dp)
            .cp(cp)
            .micro_batch(n("mbs"))
            .global_batch(n("gbs"))
            .seq_len(n("seq_len"))
            .sequence_parallel(tp > 1)
            .zero(if n("fsdp") == 1 {
                ZeroStage::Weights
            } else {
                ZeroStage::OptimizerStates
            })
            .recompute(Recompute::None)
            .schedule(if v > 1 {
                Schedule::Interleaved { virtual_stages: v }
            } else {
                Schedule::OneFOneB
            })
            .balanced_pipeline(true)
            .ep(n("ep"))
            .etp(model.moe().map(|_| 1))
            .build()
            .unwrap();
        let precision = match r["precision"].as_str().unwrap() {
            "bf16" => GemmPrecision::Bf16,
            "fp8-mx" => GemmPrecision::Mxfp8,
            _ => GemmPrecision::Fp8,
        };
        out.push(Run {
            name: format!("gb200 {name} {}", r["precision"].as_str().unwrap()),
            model,
            layout,
            cluster: Cluster::reference_node(GpuSpec::gb200()),
            opts: options(precision),
            tokens_per_s_per_gpu: r["tokens_per_s_per_gpu"].as_f64().unwrap(),
        });
    }
    out
}

fn predicted_error(run: &Run, software_efficiency: f64) -> f64 {
    let cluster = Cluster {
        software_efficiency,
        ..run.cluster.clone()
    };
    let timer = AnalyticalTimer::new(cluster.gpu.clone());
    let s = step::step_time(&run.model, &run.layout, &cluster, &timer, &run.opts)
        .unwrap_or_else(|e| panic!("{}: {e}", run.name));
    let gpus = run.layout.gpus().unwrap() as f64;
    s.tokens_per_second / gpus / run.tokens_per_s_per_gpu - 1.0
}

/// Fit the software efficiency on `runs` (each on its own cluster and options): the value
/// minimising the squared log errors, by golden-section search over `[0.05, 1]`.
fn fit(runs: &[&Run]) -> f64 {
    let loss = |x: f64| -> f64 {
        runs.iter()
            .map(|r| (1.0 + predicted_error(r, x.exp())).ln().powi(2))
            .sum()
    };
    let (mut a, mut b) = (0.05f64.ln(), 0.0);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..60 {
        let c = b - g * (b - a);
        let d = a + g * (b - a);
        if loss(c) < loss(d) {
            b = d;
        } else {
            a = c;
        }
    }
    (0.5 * (a + b)).exp()
}

/// Leave-one-out errors of `runs` under one software efficiency fitted on all of them, and the
/// in-sample ones; returns the efficiency.
fn grade(label: &str, runs: &[&Run]) -> (f64, Vec<f64>) {
    let eff = fit(runs);
    eprintln!(
        "{label}: software efficiency {eff:.3} fitted on {} runs",
        runs.len()
    );
    let mut held_out = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let rest: Vec<&Run> = runs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, r)| *r)
            .collect();
        let out = predicted_error(r, fit(&rest));
        eprintln!(
            "  {:<30} in-sample {:+6.1}%  held out {:+6.1}%  untuned {:+6.1}%",
            r.name,
            100.0 * predicted_error(r, eff),
            100.0 * out,
            100.0 * predicted_error(r, 1.0)
        );
        held_out.push(out);
    }
    (eff, held_out)
}

/// Calibrated once per cluster: the B200 node's four runs graded leave-one-out; NVIDIA's GB200
/// dense runs graded leave-one-out, then the mixture-of-experts runs predicted with the
/// efficiency of the dense runs alone (fixed before they are looked at).
#[test]
fn blackwell_runs_in_and_out_of_sample() {
    let all = runs();
    assert_eq!(all.len(), 4 + 9);
    for r in &all {
        let _ = r.measured();
    }
    let b200: Vec<&Run> = all.iter().filter(|r| r.name.starts_with("b200")).collect();
    let (_, held_b200) = grade("B200 node", &b200);
    let dense: Vec<&Run> = all
        .iter()
        .filter(|r| r.name.starts_with("gb200") && !r.is_moe())
        .collect();
    let (eff, held_dense) = grade("GB200 dense", &dense);
    // The Megatron-Core speed profile is this fit.
    let profile = lmshape::step::SpeedProfile::of(lmshape::memory::Framework::MegatronCore);
    assert!((profile.software_efficiency - eff).abs() < 0.005, "{eff}");
    let moe: Vec<&Run> = all.iter().filter(|r| r.is_moe()).collect();
    for r in &moe {
        let e = predicted_error(r, eff);
        eprintln!(
            "  {:<30} held out (MoE) {:+6.1}%  untuned {:+6.1}%",
            r.name,
            100.0 * e,
            100.0 * predicted_error(r, 1.0)
        );
        // The README's claim: the mixture-of-experts runs come out +14% to +45% too fast
        // (untuned all-to-all: NCCL's all-to-all efficiency is taken equal to its ring's).
        within(&r.name, e, 0.135, 0.465);
    }
    // The README's claims: GB200 dense held out −17% to +20%; the B200 node held out −18% to
    // +29%; untuned, every run 25–100% too fast.
    for (r, e) in dense.iter().zip(&held_dense) {
        within(&r.name, *e, -0.175, 0.205);
    }
    for (r, e) in b200.iter().zip(&held_b200) {
        within(&r.name, *e, -0.185, 0.295);
    }
    for r in &all {
        within(&r.name, predicted_error(r, 1.0), 0.245, 1.0);
    }
}

/// `e` within `[lo, hi]` (the README's rounded range).
fn within(name: &str, e: f64, lo: f64, hi: f64) {
    assert!(
        (lo..=hi).contains(&e),
        "{name}: {:+.1}% outside [{:+.1}%, {:+.1}%]",
        100.0 * e,
        100.0 * lo,
        100.0 * hi
    );
}

/// Every layout in the data ran, so none may be judged out of memory under every
/// recomputation: the device figure under Megatron-Core (its byte counts, allocator and
/// runtime) of the most loaded GPU fits the card with no recomputation, selective or full. The
/// recipes' recomputation and offloading flags are not in the data; the test reports the least
/// recomputation that fits.
#[test]
fn every_measured_layout_fits_some_recomputation() {
    use lmshape::memory::{self, Framework, FrameworkProfile};
    let profile = FrameworkProfile::of(Framework::MegatronCore);
    for run in runs() {
        let opts = profile.memory_options(&run.opts.memory);
        let capacity = run.cluster.gpu.memory_bytes;
        let least =
            memory::least_recompute(&run.model, &run.layout, &opts, &profile, capacity, 1.0)
                .unwrap();
        let Some((recompute, device)) = least else {
            panic!("{}: out of memory even with full recomputation", run.name);
        };
        eprintln!(
            "{}: {recompute:?} recomputation, {:.1} of {:.1} GiB on the device",
            run.name,
            device.device_bytes as f64 / (1u64 << 30) as f64,
            capacity as f64 / (1u64 << 30) as f64
        );
    }
}

/// Untuned, on each run's measured machine: the B200 node's runs with `simumax-b200` (the
/// system file of the node they were measured on), NVIDIA's GB200 runs with `gb200-nvl72`,
/// each layout with the least recomputation whose memory fits the card (the recipes' own
/// recomputation flags are not in the data). The B200 runs land within 10% each, the GB200
/// runs within 15% in the median; each profile's recorded validation band is these runs'
/// ratios (so it cannot drift from what the model predicts), and contains every one.
#[test]
fn measured_profiles_untuned() {
    use lmshape::memory::{self, Framework, FrameworkProfile};
    use lmshape::system::{SystemProfile, SystemTimer, Validation};
    let mp = FrameworkProfile::of(Framework::MegatronCore);
    let mut by_system: std::collections::BTreeMap<&str, Vec<(String, f64)>> = Default::default();
    for run in runs() {
        let system = if run.name.starts_with("b200") {
            "simumax-b200"
        } else {
            "gb200-nvl72"
        };
        let profile = SystemProfile::shared(system).unwrap();
        let cluster = Cluster::from_system(profile.clone()).unwrap();
        let timer = SystemTimer::new(profile).unwrap();
        let opts = mp.memory_options(&run.opts.memory);
        let capacity = cluster.gpu.memory_bytes;
        let (rc, _) = memory::least_recompute(&run.model, &run.layout, &opts, &mp, capacity, 1.0)
            .unwrap()
            .unwrap();
        let layout = run.layout.to_builder().recompute(rc).build().unwrap();
        let s = step::step_time(&run.model, &layout, &cluster, &timer, &run.opts)
            .unwrap_or_else(|e| panic!("{}: {e}", run.name));
        let measured_step = s.step_seconds
            * (s.tokens_per_second / run.layout.gpus().unwrap() as f64 / run.tokens_per_s_per_gpu);
        let e = s.step_seconds / measured_step - 1.0;
        eprintln!(
            "  {:<30} {system:<13} recompute {rc:<9} step {:+6.1}% (throughput {:+6.1}%), band {:.2}..{:.2} s around {:.2} s, measured {:.2} s",
            run.name,
            100.0 * e,
            100.0 * (measured_step / s.step_seconds - 1.0),
            s.step_seconds_low,
            s.step_seconds_high,
            s.step_seconds,
            measured_step
        );
        assert!(
            (s.step_seconds_low..=s.step_seconds_high).contains(&measured_step),
            "{}: measured outside the band",
            run.name
        );
        by_system
            .entry(system)
            .or_default()
            .push((run.name.clone(), s.step_seconds / measured_step));
    }
    for (system, graded) in &by_system {
        let ratios: Vec<f64> = graded.iter().map(|g| g.1).collect();
        let mut abs: Vec<f64> = ratios.iter().map(|r| (1.0 / r - 1.0).abs()).collect();
        abs.sort_by(f64::total_cmp);
        let median = abs[abs.len() / 2];
        let now = Validation::from_ratios(&ratios, "").unwrap();
        eprintln!(
            "{system}: median |throughput error| {:.1}%, ratios {:.5}..{:.5}",
            100.0 * median,
            now.ratio_low,
            now.ratio_high
        );
        let stored = SystemProfile::shared(system)
            .unwrap()
            .validation
            .clone()
            .unwrap();
        assert!(
            stored.covers(&now) && now.covers(&stored),
            "{system}: recorded {stored:?}, now {now:?}"
        );
        assert_eq!(stored.runs, ratios.len() as u64);
        if *system == "simumax-b200" {
            assert!(abs.iter().all(|e| *e < 0.10), "{abs:?}");
        } else {
            assert!(median < 0.15, "{median}");
        }
    }
}
