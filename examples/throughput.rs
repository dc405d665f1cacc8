//! Predict a training step: seconds, TFLOP/s per GPU (every matmul with the layout's
//! recomputation: Megatron-LM eq. 3 for GPT-style models), MFU, tokens
//! per second and days for a token budget, with a breakdown, and whether the layout fits in
//! the GPU's memory.
//!
//! `cargo run --release --example throughput -- [--config PATH | --preset NAME | --arch NAME
//! --hidden H --layers L --heads A --vocab V --ffn F [--kv-heads K --head-dim D]] [--seq-len S]
//! [--tp N --pp N --dp N --micro-batch N --global-batch N --recompute full ...] [--gpu NAME]
//! [--cluster selene|jean-zay] [--cp N --cp-comm p2p|a2a] [--ep N --etp N --capacity-factor F] [--overlap-grad-reduce]
//! [--overlap-param-gather] [--tokens T] [--json]`. Without a model: BLOOM-176B as
//! BigScience launched it (tp 4, pp 12 with embedding slots, dp 8, micro-batch 2, global batch
//! 2048, full recomputation, ZeRO-1) on a DGX A100 cluster timed by its measured profile
//! (`--system NAME|PATH` for another machine, `--system analytical` for the analytical model).
//! With a model of the user's the layout starts from one GPU, as `inspect_config`'s does.

#[macro_use]
mod common;

use clap::Parser;
use common::cli::{StepArgs, parse_with_defaults, positive, positive_count, usage_error};
use common::{gib, load_config, or_die, si};
use lmshape::step::{self, StepOptions};
use lmshape::{Architecture, Transformer};

/// Predicted step time, TFLOP/s per GPU, MFU and days of a model on a layout.
#[derive(Parser, Debug)]
#[command(name = "throughput", version, long_about = None, after_help = common::cli::GLOSSARY, allow_negative_numbers = true)]
struct Cli {
    /// A Hugging Face config.json.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["preset", "arch"])]
    config: Option<String>,
    /// A named preset (e.g. bloom-176b, gpt3-175b).
    #[arg(long, value_name = "NAME", conflicts_with = "arch")]
    preset: Option<String>,
    /// Architecture family of a shape given by flags (gpt2, bloom, llama, ...); needs --hidden,
    /// --layers, --heads, --vocab and --ffn.
    #[arg(long, value_name = "NAME")]
    arch: Option<String>,
    /// Hidden size (with --arch).
    #[arg(long, value_name = "H", value_parser = positive_count)]
    hidden: Option<u64>,
    /// Layers (with --arch).
    #[arg(long, value_name = "L", value_parser = positive_count)]
    layers: Option<u64>,
    /// Attention heads (with --arch).
    #[arg(long, value_name = "A", value_parser = positive_count)]
    heads: Option<u64>,
    /// Vocabulary (with --arch).
    #[arg(long, value_name = "V", value_parser = positive_count)]
    vocab: Option<u64>,
    /// FFN width (with --arch; a gated MLP has three matrices of it).
    #[arg(long, value_name = "F", value_parser = positive_count)]
    ffn: Option<u64>,
    /// Key/value heads (with --arch) [default: --heads].
    #[arg(long, value_name = "K", value_parser = positive_count)]
    kv_heads: Option<u64>,
    /// Head width (with --arch) [default: hidden / heads].
    #[arg(long, value_name = "D", value_parser = positive_count)]
    head_dim: Option<u64>,
    #[command(flatten)]
    step: StepArgs,
    /// A named training setup, as the planner's scenarios set it (every flag still
    /// overrides): dense-2026 and moe-2026 (Megatron-Core with the distributed optimizer,
    /// sequence 8192, FlashAttention without dropout, sequence parallelism, the least
    /// recomputation that fits) or bloom-2022 (Megatron-DeepSpeed).
    #[arg(long, value_name = "NAME")]
    scenario: Option<String>,
    /// Tokens to train on, for the days.
    #[arg(long, value_name = "T", default_value_t = 350e9, value_parser = positive)]
    tokens: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The model the flags describe: a config, a preset, a full set of shape flags, or BLOOM-176B.
fn model_of(args: &Cli) -> Transformer {
    if let Some(path) = &args.config {
        return load_config(path);
    }
    if let Some(name) = &args.preset {
        return or_die(lmshape::presets::by_name(name));
    }
    let shape = [
        ("--hidden", args.hidden),
        ("--layers", args.layers),
        ("--heads", args.heads),
        ("--vocab", args.vocab),
        ("--ffn", args.ffn),
    ];
    let any_shape = args.arch.is_some()
        || shape.iter().any(|(_, v)| v.is_some())
        || args.kv_heads.is_some()
        || args.head_dim.is_some();
    if !any_shape {
        return or_die(lmshape::presets::by_name("bloom-176b"));
    }
    let mut missing: Vec<&str> = shape
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| *n)
        .collect();
    if args.arch.is_none() {
        missing.insert(0, "--arch");
    }
    if !missing.is_empty() {
        usage_error::<Cli>(format!(
            "a shape given by flags needs every one of --arch, --hidden, --layers, --heads, --vocab and --ffn; missing {}",
            missing.join(", ")
        ));
    }
    let (d, heads) = (args.hidden.unwrap_or(0), args.heads.unwrap_or(0));
    let arch = or_die(Architecture::by_name(args.arch.as_deref().unwrap_or("")));
    or_die(
        Transformer::builder()
            .vocab_size(args.vocab.unwrap_or(0))
            .hidden_size(d)
            .num_layers(args.layers.unwrap_or(0))
            .num_heads(heads)
            .num_kv_heads(args.kv_heads.unwrap_or(heads))
            .head_dim(args.head_dim.unwrap_or(d / heads.max(1)))
            .ffn_size(args.ffn.unwrap_or(0))
            .max_positions(args.step.seq_len)
            .arch(arch)
            .build(),
    )
}

/// Whether the command line names a model (`--config`, `--preset` or `--arch`), read before
/// the flags so that the layout's defaults can follow it.
fn model_named() -> bool {
    ["--config", "--preset", "--arch"]
        .iter()
        .any(|f| common::flag_value(f).is_some())
}

/// Run the example with the process's command line.
pub fn main() {
    // BigScience's launch layout for the default model, unless the flags say otherwise; a
    // model of the user's starts from one GPU, as in inspect_config.
    let scenario = common::scenario::given::<Cli>();
    let bloom_launch: &[(&str, &str)] = if model_named() {
        &[]
    } else {
        &[
            ("tp", "4"),
            ("pp", "12"),
            ("dp", "8"),
            ("micro_batch", "2"),
            ("global_batch", "2048"),
            ("recompute", "full"),
            ("zero", "1"),
        ]
    };
    let args: Cli = parse_with_defaults(&common::scenario::setup_defaults(bloom_launch, scenario));
    let model = model_of(&args);
    let bloom_default = args.config.is_none() && args.preset.is_none() && args.arch.is_none();
    let mut layout = args.step.layout.layout(args.step.seq_len);
    if bloom_default {
        layout = or_die(layout.to_builder().embedding_pipeline_slots(true).build());
    }
    let machine = args.step.cluster.machine(args.step.setup.framework);
    let cluster = &machine.cluster;
    let timer = machine.timer.as_ref();
    // The framework's byte counts, for memory and for the step's traffic alike.
    let profile = lmshape::memory::FrameworkProfile::of(args.step.setup.framework);
    let memory_opts = args.step.setup.framework_options(layout.zero());
    let opts = StepOptions {
        memory: memory_opts,
        ..StepOptions::default()
    };
    if args.step.layout.recompute == common::cli::RecomputeArg::Auto {
        // The least recomputation whose device figure fits 90% of the card (full when none
        // does, and the verdict below says so).
        let recompute = or_die(lmshape::memory::least_recompute(
            &model,
            &layout,
            &memory_opts,
            &profile,
            cluster.gpu.memory_bytes,
            0.9,
        ))
        .map_or(lmshape::Recompute::Full, |(rc, _)| rc);
        layout = or_die(layout.to_builder().recompute(recompute).build());
    }
    let memory = or_die(lmshape::memory::training_memory(
        &model,
        &layout,
        &memory_opts,
    ));
    let device = or_die(profile.most_loaded(&memory));
    let (verdict, margin) = device.verdict(cluster.gpu.memory_bytes);
    let step = or_die(step::step_time(&model, &layout, cluster, timer, &opts));
    let e = Estimate {
        model,
        layout,
        opts,
        device,
        verdict,
        margin,
        step,
        profile,
    };
    if args.json {
        print_json(&args, &machine, &e);
    } else {
        print_text(&args, &machine, &e);
    }
}

/// What the example found for the layout: the memory under the framework and its verdict on
/// the card, and the step.
struct Estimate {
    model: lmshape::Transformer,
    layout: lmshape::ParallelLayout,
    opts: StepOptions,
    device: lmshape::memory::DeviceMemory,
    verdict: lmshape::memory::Verdict,
    margin: i64,
    step: step::StepTime,
    profile: lmshape::memory::FrameworkProfile,
}

/// The JSON record: the step as the library serialises it, with the band's rates, the memory
/// figures under the framework and the setup beside.
#[derive(serde::Serialize)]
struct Record<'a> {
    #[serde(flatten)]
    step: &'a step::StepTime,
    tokens_per_second_low: f64,
    tokens_per_second_high: f64,
    tflops_per_gpu_low: f64,
    tflops_per_gpu_high: f64,
    days_for_tokens: f64,
    tokens: f64,
    gpus: u64,
    precision: String,
    model: &'a lmshape::Transformer,
    layout: &'a lmshape::ParallelLayout,
    recompute: lmshape::Recompute,
    timer: String,
    system: serde_json::Value,
    memory_bytes_per_gpu: u64,
    memory_reserved_bytes: u64,
    memory_device_bytes: u64,
    memory_capacity_bytes: u64,
    memory_band_bytes: u64,
    memory_fits: bool,
    verdict: lmshape::memory::Verdict,
    margin_bytes: i64,
    optimizer: String,
    framework: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    scenario: Option<&'a str>,
}

fn print_json(args: &Cli, machine: &common::cli::Machine, e: &Estimate) {
    let (s, device) = (&e.step, &e.device);
    let (tokens_per_second_low, tokens_per_second_high) = s.rate_band(s.tokens_per_second);
    let (tflops_per_gpu_low, tflops_per_gpu_high) = s.rate_band(s.tflops_per_gpu);
    let framework = args.step.setup.framework;
    let record = Record {
        step: s,
        tokens_per_second_low,
        tokens_per_second_high,
        tflops_per_gpu_low,
        tflops_per_gpu_high,
        days_for_tokens: s.days_for_tokens(args.tokens),
        tokens: args.tokens,
        gpus: or_die(e.layout.gpus()),
        precision: e.opts.memory.gemm_precision.to_string(),
        model: &e.model,
        layout: &e.layout,
        recompute: e.layout.recompute(),
        timer: machine.timer.describe(),
        system: machine.system_json(),
        memory_bytes_per_gpu: device.allocated_bytes,
        memory_reserved_bytes: device.reserved_bytes,
        memory_device_bytes: device.device_bytes,
        memory_capacity_bytes: machine.cluster.gpu.memory_bytes,
        memory_band_bytes: device.band_bytes,
        memory_fits: e.verdict == lmshape::memory::Verdict::Fits,
        verdict: e.verdict,
        margin_bytes: e.margin,
        optimizer: e
            .opts
            .memory
            .optimizer
            .unwrap_or(framework.default_optimizer())
            .to_string(),
        framework: framework.to_string(),
        scenario: args.scenario.as_deref(),
    };
    // Through a JSON value, so the keys print sorted as every tool prints them.
    let out = serde_json::to_value(&record).unwrap_or_default();
    outln!("{}", serde_json::to_string_pretty(&out).unwrap());
}

fn print_text(args: &Cli, machine: &common::cli::Machine, e: &Estimate) {
    let (s, b, layout, opts, device) = (&e.step, &e.step.breakdown, &e.layout, &e.opts, &e.device);
    let (model, verdict, margin, profile) = (&e.model, e.verdict, e.margin, &e.profile);
    let (tokens, timer, cluster) = (args.tokens, machine.timer.as_ref(), &machine.cluster);
    let (tokens_per_second_low, tokens_per_second_high) = s.rate_band(s.tokens_per_second);
    let (tflops_per_gpu_low, tflops_per_gpu_high) = s.rate_band(s.tflops_per_gpu);
    let memory_bytes = device.allocated_bytes;
    let capacity = cluster.gpu.memory_bytes;
    if let Some(scenario) = common::scenario::given::<Cli>() {
        outln!(
            "{}",
            common::scenario::setup_line(
                scenario,
                &args.step.setup,
                &args.step.layout,
                &args.step.seq_len.to_string()
            )
        );
    }
    outln!(
        "{} params: {} layers × {} hidden, {} heads; tp {}{} × pp {} × dp {} ({} GPUs), micro-batch {}, global batch {}, sequence {}, recompute {}",
        si(or_die(model.total_params()) as f64),
        model.num_layers(),
        model.hidden_size(),
        model.num_heads(),
        layout.tp(),
        if layout.cp() > 1 {
            format!(" × cp {}", layout.cp())
        } else {
            String::new()
        },
        layout.pp(),
        layout.dp(),
        or_die(layout.gpus()),
        layout.micro_batch(),
        layout.global_batch(),
        layout.seq_len(),
        layout.recompute()
    );
    outln!(
        "machine: {} ({}); GEMMs timed by {}",
        machine.system_name(),
        cluster.gpu.name,
        timer.describe()
    );
    outln!(
        "memory under {}: {} allocated, {} on the device, of {} — {verdict}{}",
        args.step.setup.framework,
        gib(memory_bytes),
        gib(device.device_bytes),
        gib(capacity),
        match verdict {
            lmshape::memory::Verdict::Fits => String::new(),
            lmshape::memory::Verdict::Tight => format!(
                " (within the card, but the estimate's measured error, +{}, could take it out: {})",
                gib(device.band_bytes),
                profile.band_basis()
            ),
            lmshape::memory::Verdict::Oom => format!(
                ": {} short, this layout cannot run (try more tp/pp, ZeRO or recomputation)",
                gib(margin.unsigned_abs())
            ),
        }
    );
    let precision = opts.memory.gemm_precision;
    outln!(
        "step {:.2} s, {:.1} TFLOP/s per GPU (matmul count, eq. 3 for GPT-style), MFU {:.1}% of the bf16 peak{}, {:.0} tokens/s, {:.1} days for {} tokens{}",
        s.step_seconds,
        s.tflops_per_gpu,
        s.mfu * 100.0,
        if precision == lmshape::hardware::GemmPrecision::Bf16 {
            String::new()
        } else {
            format!(
                " ({:.1}% of the {precision} peak)",
                s.mfu_at_precision_peak * 100.0
            )
        },
        s.tokens_per_second,
        s.days_for_tokens(tokens),
        si(tokens),
        if verdict == lmshape::memory::Verdict::Oom {
            " (if it fit)"
        } else {
            ""
        }
    );
    outln!(
        "  band: step {:.2}..{:.2} s, {:.0}..{:.0} tokens/s, {:.1}..{:.1} TFLOP/s per GPU ({})",
        s.step_seconds_low,
        s.step_seconds_high,
        tokens_per_second_low,
        tokens_per_second_high,
        tflops_per_gpu_low,
        tflops_per_gpu_high,
        machine.band_basis()
    );
    let rows = [
        ("GEMMs", b.gemm_seconds),
        ("memory-bound kernels", b.memory_bound_seconds),
        ("tensor-parallel collectives", b.tp_comm_seconds),
        ("expert all-to-all", b.all_to_all_seconds),
        ("context-parallel exchange", b.cp_comm_seconds),
        ("pipeline sends", b.p2p_seconds),
        ("pipeline bubble", b.pipeline_bubble_seconds),
        ("data-parallel reduction", b.dp_comm_seconds),
        ("optimizer", b.optimizer_seconds),
        ("host overhead", b.host_overhead_seconds),
    ];
    for (name, secs) in rows {
        outln!(
            "  {name:<30}{secs:>9.2} s  {:>5.1}%",
            100.0 * secs / s.step_seconds
        );
    }
}
