//! Predict a training step: seconds, TFLOP/s per GPU (Megatron eq. 3), MFU, tokens per second
//! and days for a token budget, with a breakdown.
//!
//! `cargo run --release --example throughput -- [--config PATH | --arch bloom --hidden H
//! --layers L --heads A --vocab V] --seq-len S --tp N --pp N --dp N --micro-batch N
//! --global-batch N --recompute full --gpu a100-80gb [--cluster selene|jean-zay]
//! [--gpus-per-node 8] [--inter-node-gbps G] [--software-efficiency F] [--sequence-parallel]
//! [--zero 0..3] [--embedding-slots] [--flash] [--no-dropout] [--tokens T] [--json]`.
//! Defaults: BLOOM-176B as BigScience launched it (tp 4, pp 12, dp 8, micro-batch 2, global
//! batch 2048, full recomputation) on a Selene-class A100 80GB cluster.

#[macro_use]
mod common;

use common::{Args, die, load_config, or_die, si};
use lmshape::hardware::step::{self, Cluster, StepOptions};
use lmshape::hardware::{AnalyticalTimer, GpuSpec};
use lmshape::{Architecture, ParallelLayout, Recompute, Transformer, ZeroStage};
use serde_json::json;

const USAGE: &str = "usage: throughput [--config PATH | --arch NAME --hidden H --layers L --heads A --vocab V] [--seq-len S] [--tp N] [--pp N] [--dp N] [--micro-batch N] [--global-batch N] [--recompute none|selective|full] [--gpu NAME] [--cluster selene|jean-zay] [--gpus-per-node N] [--inter-node-gbps G] [--software-efficiency F] [--sequence-parallel] [--zero 0..3] [--embedding-slots] [--flash] [--no-dropout] [--tokens T] [--json]";

fn main() {
    let args = Args::parse(
        &[
            "config",
            "arch",
            "hidden",
            "layers",
            "heads",
            "vocab",
            "seq-len",
            "tp",
            "pp",
            "dp",
            "micro-batch",
            "global-batch",
            "recompute",
            "gpu",
            "cluster",
            "gpus-per-node",
            "inter-node-gbps",
            "software-efficiency",
            "zero",
            "tokens",
        ],
        &[
            "json",
            "sequence-parallel",
            "embedding-slots",
            "flash",
            "no-dropout",
        ],
        USAGE,
    );
    let model: Transformer = match args.raw("config") {
        Some(path) => load_config(path),
        None => or_die(Transformer::standard(
            args.get_u64("vocab", 250880),
            args.get_u64("hidden", 14336),
            args.get_u64("layers", 70),
            args.get_u64("heads", 112),
            args.get_u64("seq-len", 2048),
            or_die(Architecture::by_name(args.raw("arch").unwrap_or("bloom"))),
        )),
    };
    let default_bloom = args.raw("config").is_none() && args.raw("layers").is_none();
    let layout = ParallelLayout {
        tp: args.get_u64("tp", 4),
        pp: args.get_u64("pp", 12),
        dp: args.get_u64("dp", 8),
        micro_batch: args.get_u64("micro-batch", 2),
        global_batch: args.get_u64("global-batch", 2048),
        seq_len: args.get_u64("seq-len", 2048),
        recompute: or_die(args.raw("recompute").unwrap_or("full").parse::<Recompute>()),
        sequence_parallel: args.flag("sequence-parallel"),
        zero: or_die(ZeroStage::from_number(args.get_u64("zero", 0))),
        embedding_pipeline_slots: args.flag("embedding-slots") || default_bloom,
        ..ParallelLayout::default()
    };
    let gpu = or_die(GpuSpec::by_name(args.raw("gpu").unwrap_or("a100-80gb")));
    let mut cluster = match args.raw("cluster").unwrap_or("selene") {
        "selene" | "dgx" => Cluster::reference_node(gpu.clone()),
        "jean-zay" | "jean_zay" => Cluster::dgx(gpu.clone(), 50e9),
        other => die(&format!("unknown --cluster {other:?} (selene, jean-zay)")),
    };
    cluster.gpus_per_node = args.get_u64("gpus-per-node", cluster.gpus_per_node);
    if let Some(g) = args.opt::<f64>("inter-node-gbps") {
        cluster.inter_node_bytes_per_s = g * 1e9 / 8.0;
    }
    cluster.software_efficiency = args.get("software-efficiency", cluster.software_efficiency);
    let opts = StepOptions {
        memory: lmshape::MemoryOptions {
            attention: if args.flag("flash") {
                lmshape::memory::AttentionKernel::Flash
            } else {
                lmshape::memory::AttentionKernel::Standard
            },
            dropout: !args.flag("no-dropout"),
            ..lmshape::MemoryOptions::default()
        },
        ..StepOptions::default()
    };
    let timer = AnalyticalTimer::new(gpu);
    let s = or_die(step::step_time(&model, &layout, &cluster, &timer, &opts));
    let tokens: f64 = args.get("tokens", 350e9);
    let b = &s.breakdown;
    if args.flag("json") {
        let out = json!({
            "step_seconds": s.step_seconds,
            "tflops_per_gpu": s.tflops_per_gpu,
            "mfu": s.mfu,
            "tokens_per_second": s.tokens_per_second,
            "days_for_tokens": s.days_for_tokens(tokens),
            "tokens": tokens,
            "num_micro_batches": s.num_micro_batches,
            "stage_seconds": s.stage_seconds,
            "gpus": or_die(layout.gpus()),
            "breakdown": b,
            "model": model,
            "layout": layout,
            "timer": lmshape::hardware::GemmTimer::describe(&timer),
        });
        outln!("{}", serde_json::to_string_pretty(&out).unwrap());
        return;
    }
    outln!(
        "{} params: {} layers × {} hidden, {} heads; tp {} pp {} dp {} ({} GPUs), micro-batch {}, global batch {}, seq {}, recompute {:?}",
        si(or_die(model.total_params()) as f64),
        model.num_layers,
        model.hidden_size,
        model.num_heads,
        layout.tp,
        layout.pp,
        layout.dp,
        or_die(layout.gpus()),
        layout.micro_batch,
        layout.global_batch,
        layout.seq_len,
        layout.recompute
    );
    outln!("timer: {}", lmshape::hardware::GemmTimer::describe(&timer));
    outln!(
        "step {:.2} s, {:.1} TFLOP/s per GPU (Megatron eq. 3), MFU {:.1}%, {:.0} tokens/s, {:.1} days for {} tokens",
        s.step_seconds,
        s.tflops_per_gpu,
        s.mfu * 100.0,
        s.tokens_per_second,
        s.days_for_tokens(tokens),
        si(tokens)
    );
    let rows = [
        ("GEMMs", b.gemm_seconds),
        ("memory-bound kernels", b.memory_bound_seconds),
        ("tensor-parallel collectives", b.tp_comm_seconds),
        ("pipeline sends", b.p2p_seconds),
        ("pipeline bubble", b.pipeline_bubble_seconds),
        ("data-parallel reduction", b.dp_comm_seconds),
        ("optimizer", b.optimizer_seconds),
    ];
    for (name, secs) in rows {
        outln!(
            "  {name:<30}{secs:>9.2} s  {:>5.1}%",
            100.0 * secs / s.step_seconds
        );
    }
}
