//! Plan a training run: budget → scaling-law bounds → target → every valid shape × layout →
//! memory → speed → tokens → predicted loss → ranking.
//!
//! `cargo run --release --example plan` plans the reference case: 384 A100 80GB (8 per node)
//! for 18 weeks, vocabulary 250880, sequence 2048, BLOOM architecture, token floor 350B.
//! Flags override each input: `--gpu NAME --gpus N --gpus-per-node N --weeks W | --hours H
//! --safety-margin F --mfu F --arch NAME --vocab V --seq-len S --global-batch B
//! --token-floor D --param-cap N --min-params N --max-params N --max-head-dim D
//! --head-dims A,B,.. --min-aspect A --max-aspect B --tp-options 1,2,4,8
//! --micro-batches 1,2,4 --recompute none|selective|full --zero 0..3 --sequence-parallel
//! --memory-fraction F --law kaplan|chinchilla|besiroglu --cluster selene|jean-zay
//! --software-efficiency F --inter-node-gbps G --table PATH (measured GEMM timings) --top N
//! --json --report-json --svg PATH`. `--json` prints the ranked candidates as an array;
//! `--report-json` the whole report (budget, bounds, target, counts, best per shape).

#[macro_use]
mod common;

use common::{Args, die, gib, or_die, si};
use lmshape::hardware::step::Cluster;
use lmshape::hardware::{AnalyticalTimer, GemmTimer, GpuSpec, Missing, TableTimer};
use lmshape::plan::{self, LawChoice, Plan, PlanRequest};
use lmshape::{Architecture, Recompute, ZeroStage};
use serde_json::json;

const USAGE: &str = "usage: plan [--gpu NAME] [--gpus N] [--gpus-per-node N] [--weeks W | --hours H] [--safety-margin F] [--mfu F] [--arch NAME] [--vocab V] [--seq-len S] [--global-batch B] [--token-floor D] [--param-cap N] [--min-params N --max-params N] [--max-head-dim D] [--head-dims A,B] [--min-aspect A] [--max-aspect B] [--tp-options 1,2,4,8] [--micro-batches 1,2,4] [--recompute full] [--zero 1] [--sequence-parallel] [--memory-fraction F] [--law kaplan|chinchilla|besiroglu] [--cluster selene|jean-zay] [--software-efficiency F] [--inter-node-gbps G] [--table PATH] [--top N] [--json] [--report-json] [--svg PATH]";

fn main() {
    let args = Args::parse(
        &[
            "gpu",
            "gpus",
            "gpus-per-node",
            "weeks",
            "hours",
            "safety-margin",
            "mfu",
            "arch",
            "vocab",
            "seq-len",
            "global-batch",
            "token-floor",
            "param-cap",
            "min-params",
            "max-params",
            "max-head-dim",
            "head-dims",
            "min-aspect",
            "max-aspect",
            "tp-options",
            "micro-batches",
            "recompute",
            "zero",
            "memory-fraction",
            "law",
            "cluster",
            "software-efficiency",
            "table",
            "top",
            "svg",
            "inter-node-gbps",
        ],
        &["json", "report-json", "sequence-parallel"],
        USAGE,
    );
    let mut req = PlanRequest::bloom_reference();
    let gpu = or_die(GpuSpec::by_name(args.raw("gpu").unwrap_or("a100-80gb")));
    req.cluster = match args.raw("cluster").unwrap_or("selene") {
        "selene" | "dgx" => Cluster::reference_node(gpu),
        "jean-zay" | "jean_zay" => Cluster::dgx(gpu, 50e9),
        other => die(&format!("unknown --cluster {other:?}")),
    };
    if let Some(g) = args.opt::<f64>("inter-node-gbps") {
        req.cluster.inter_node_bytes_per_s = g * 1e9 / 8.0;
    }
    req.cluster.gpus_per_node = args.get_u64("gpus-per-node", 8);
    req.cluster.software_efficiency = args.get("software-efficiency", 1.0);
    req.gpus = args.get_u64("gpus", req.gpus);
    req.hours = match (args.opt::<f64>("hours"), args.opt::<f64>("weeks")) {
        (Some(h), _) => h,
        (None, Some(w)) => w * 7.0 * 24.0,
        (None, None) => req.hours,
    };
    req.safety_margin = args.get("safety-margin", req.safety_margin);
    req.assumed_mfu = args.get("mfu", req.assumed_mfu);
    if let Some(a) = args.raw("arch") {
        req.arch = or_die(Architecture::by_name(a));
    }
    req.vocab_size = args.get_u64("vocab", req.vocab_size);
    req.seq_len = args.get_u64("seq-len", req.seq_len);
    req.global_batch = args.get_u64("global-batch", req.global_batch);
    req.token_floor = match args.raw("token-floor") {
        Some("none") => None,
        Some(_) => args.opt("token-floor"),
        None => req.token_floor,
    };
    req.param_cap = args.opt("param-cap");
    if let (Some(lo), Some(hi)) = (args.opt_u64("min-params"), args.opt_u64("max-params")) {
        req.param_range = Some((lo, hi));
    }
    req.max_head_dim = args.get_u64("max-head-dim", req.max_head_dim);
    if let Some(h) = args.opt_list("head-dims") {
        req.head_dims = h;
    }
    req.aspect_ratio_range = (
        args.get("min-aspect", req.aspect_ratio_range.0),
        args.get("max-aspect", req.aspect_ratio_range.1),
    );
    if let Some(t) = args.opt_list("tp-options") {
        req.tp_options = t;
    }
    if let Some(m) = args.opt_list("micro-batches") {
        req.micro_batches = m;
    }
    req.recompute = or_die(args.raw("recompute").unwrap_or("full").parse::<Recompute>());
    req.zero = or_die(ZeroStage::from_number(args.get_u64("zero", 1)));
    req.sequence_parallel = args.flag("sequence-parallel");
    req.memory_fraction = args.get("memory-fraction", req.memory_fraction);
    req.law = or_die(args.raw("law").unwrap_or("kaplan").parse::<LawChoice>());

    let analytical = AnalyticalTimer::new(req.cluster.gpu.clone());
    let table = args.raw("table").map(|path| {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| die(&format!("cannot read {path}: {e}")));
        or_die(TableTimer::from_json(&text, Missing::ScaleNearest))
    });
    let timer: &dyn GemmTimer = match &table {
        Some(t) => t,
        None => &analytical,
    };
    let started = std::time::Instant::now();
    let result = or_die(plan::plan(&req, timer));
    let seconds = started.elapsed().as_secs_f64();

    if let Some(path) = args.raw("svg") {
        if let Err(e) = write_svg(path, &result) {
            die(&format!("cannot write {path}: {e}"));
        }
    }
    let top = args.get_u64("top", 10) as usize;
    if args.flag("report-json") {
        let out = json!({
            "request": req,
            "budget": result.budget,
            "bounds": result.bounds,
            "target_params": result.target_params,
            "target_binding": result.target_binding,
            "param_range": result.param_range,
            "shapes": result.shapes,
            "evaluated": result.evaluated,
            "seconds": seconds,
            "rejection_counts": result.rejection_counts,
            "rejected_shapes": result.rejected_shapes.len(),
            "top": result.best_per_shape().into_iter().take(top).collect::<Vec<_>>(),
        });
        outln!("{}", serde_json::to_string_pretty(&out).unwrap());
        return;
    }
    if args.flag("json") {
        let out: Vec<_> = result
            .candidates
            .iter()
            .map(|c| {
                json!({
                    "hidden_size": c.shape.model.hidden_size,
                    "num_layers": c.shape.model.num_layers,
                    "num_heads": c.shape.model.num_heads,
                    "head_dim": c.shape.model.head_dim,
                    "ffn_size": c.shape.model.ffn_size,
                    "tp": c.layout.tp,
                    "pp": c.layout.pp,
                    "dp": c.layout.dp,
                    "micro_batch": c.layout.micro_batch,
                    "embedding_pipeline_slots": c.layout.embedding_pipeline_slots,
                    "params": c.shape.params,
                    "tflops_per_gpu": c.step.tflops_per_gpu,
                    "mfu": c.step.mfu,
                    "step_seconds": c.step.step_seconds,
                    "memory_bytes_per_gpu": c.memory_bytes_per_gpu,
                    "tokens": c.tokens,
                    "days": c.days,
                    "days_to_token_floor": c.days_to_token_floor,
                    "predicted_loss": c.predicted_loss,
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&out).unwrap());
        return;
    }
    report(&req, &result, timer, seconds, top);
}

fn report(req: &PlanRequest, p: &Plan, timer: &dyn GemmTimer, seconds: f64, top: usize) {
    let b = &p.budget;
    outln!("== budget");
    outln!(
        "{} × {} for {:.0} h ({:.1} weeks), {:.0}% held back: {} GPU-hours, {:.0} usable hours",
        req.gpus,
        req.cluster.gpu.name,
        req.hours,
        req.hours / 168.0,
        req.safety_margin * 100.0,
        si(b.gpu_hours),
        b.usable_hours
    );
    outln!(
        "at an assumed {:.0}% MFU: {:.3e} training FLOPs ({:.0} PF-days)",
        req.assumed_mfu * 100.0,
        b.compute_flops,
        b.compute_flops / lmshape::scaling::PF_DAY_FLOPS
    );
    outln!("\n== scaling-law bounds (compute-optimal params on tokens)");
    let l = &p.bounds;
    for (name, a) in [
        ("Kaplan et al. 2020 (non-embedding)", l.kaplan),
        ("Chinchilla approach 1", l.chinchilla_approach1),
        ("Chinchilla approach 2", l.chinchilla_approach2),
        ("Chinchilla approach 3", l.chinchilla_approach3),
        ("Besiroglu et al. 2024", l.besiroglu),
    ] {
        outln!("  {name:<36}{:>10} on {:>10}", si(a.params), si(a.tokens));
    }
    outln!(
        "  (Kaplan's N_opt and D_opt are separate published fits: 6·N·D = 1.81 × the budget, not 1 ×;\n   its D comes from the critical-batch fit. Constraints move along C = 6ND.)"
    );
    outln!("\n== target");
    outln!(
        "law {:?}; token floor {}: target {} {} params (binding: {:?}); searching {} .. {}",
        req.law,
        req.token_floor.map_or("none".into(), si),
        si(p.target_params),
        match req.law.size_basis() {
            lmshape::flops::ParamBasis::NonEmbedding => "non-embedding",
            lmshape::flops::ParamBasis::Total => "total",
        },
        p.target_binding,
        si(p.param_range.0 as f64),
        si(p.param_range.1 as f64)
    );
    outln!(
        "shapes: aspect ratio {:.0}..{:.0} (published large models), head dims ≤ {} accepted; layouts: tp {:?} (≤ {} per node), every pp, micro-batch {:?}, recompute {:?}, ZeRO {}",
        req.aspect_ratio_range.0,
        req.aspect_ratio_range.1,
        req.max_head_dim,
        req.tp_options,
        req.cluster.gpus_per_node,
        req.micro_batches,
        req.recompute,
        req.zero.number()
    );
    outln!(
        "evaluated {} (shape, layout) pairs over {} shapes in {:.3} s with {}; {} feasible",
        p.evaluated,
        p.shapes,
        seconds,
        timer.describe(),
        p.candidates.len()
    );
    outln!("\n== top {top} (best layout per shape)");
    outln!(
        "{:>3} {:>6} {:>6} {:>5} {:>4} {:>3} {:>3} {:>3} {:>3} {:>8} {:>10} {:>7} {:>6} {:>9} {:>8}",
        "#",
        "layers",
        "hidden",
        "heads",
        "hdim",
        "tp",
        "pp",
        "dp",
        "mb",
        "params",
        "mem/GPU",
        "TFLOPs",
        "MFU%",
        "tokens",
        "loss"
    );
    for (i, c) in p.best_per_shape().iter().take(top).enumerate() {
        outln!(
            "{:>3} {:>6} {:>6} {:>5} {:>4} {:>3} {:>3} {:>3} {:>3} {:>8} {:>10} {:>7.1} {:>6.1} {:>9} {:>8.4}",
            i + 1,
            c.shape.model.num_layers,
            c.shape.model.hidden_size,
            c.shape.model.num_heads,
            c.shape.model.head_dim,
            c.layout.tp,
            c.layout.pp,
            c.layout.dp,
            c.layout.micro_batch,
            si(c.shape.params as f64),
            gib(c.memory_bytes_per_gpu),
            c.step.tflops_per_gpu,
            c.step.mfu * 100.0,
            si(c.tokens),
            c.predicted_loss
        );
    }
    outln!("\n== rejected (shape, layout) pairs by reason");
    for (reason, n) in &p.rejection_counts {
        outln!("  {:<36}{n:>10}", reason.to_string());
    }
    if !p.invalid_layouts.is_empty() {
        outln!(
            "  layouts no shape can use: {} (e.g. tp {} × pp {} × dp {}, micro-batch {}: {})",
            p.invalid_layouts.len(),
            p.invalid_layouts[0].layout.tp,
            p.invalid_layouts[0].layout.pp,
            p.invalid_layouts[0].layout.dp,
            p.invalid_layouts[0].layout.micro_batch,
            p.invalid_layouts[0].reason
        );
    }
    outln!(
        "  shapes with no feasible layout: {}",
        p.rejected_shapes.len()
    );
    match p.best() {
        Some(c) => outln!(
            "\n== recommendation: {} layers × {} hidden, {} heads of {} ({} params) on tp {} × pp {} × dp {}, micro-batch {}{}: {:.1} TFLOP/s per GPU, {} tokens in {:.0} days (floor reached after {:.0} days), {} per GPU",
            c.shape.model.num_layers,
            c.shape.model.hidden_size,
            c.shape.model.num_heads,
            c.shape.model.head_dim,
            si(c.shape.params as f64),
            c.layout.tp,
            c.layout.pp,
            c.layout.dp,
            c.layout.micro_batch,
            if c.layout.embedding_pipeline_slots {
                " (embedding slots)"
            } else {
                ""
            },
            c.step.tflops_per_gpu,
            si(c.tokens),
            c.days,
            c.days_to_token_floor.unwrap_or(c.days),
            gib(c.memory_bytes_per_gpu)
        ),
        None => outln!("\n== no feasible candidate: see the rejection reasons above"),
    }
}

/// Predicted loss against size, feasible candidates (best layout per shape), the
/// recommendation marked.
fn write_svg(path: &str, p: &Plan) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let pts: Vec<(f64, f64)> = p
        .best_per_shape()
        .iter()
        .map(|c| (c.shape.params as f64 / 1e9, c.predicted_loss))
        .collect();
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let (x0, x1) = pts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
    let (y0, y1) = pts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    let (x0, x1, y0, y1) = if pts.is_empty() {
        (0.0, 1.0, 0.0, 1.0)
    } else {
        (x0 * 0.98, x1 * 1.02, y0 - 0.001, y1 + 0.001)
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "lmshape plan: predicted loss of feasible shapes (best layout each)",
            ("sans-serif", 20),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc("parameters (billions)")
        .y_desc("predicted loss")
        .draw()?;
    chart
        .draw_series(
            pts.iter()
                .map(|&(x, y)| Circle::new((x, y), 3, BLUE.mix(0.5).filled())),
        )?
        .label("feasible shape")
        .legend(|(x, y)| Circle::new((x, y), 3, BLUE.filled()));
    if let Some(best) = p.best() {
        let b = (best.shape.params as f64 / 1e9, best.predicted_loss);
        chart
            .draw_series(std::iter::once(Circle::new(b, 8, RED.filled())))?
            .label(format!(
                "recommended: {} layers × {} hidden",
                best.shape.model.num_layers, best.shape.model.hidden_size
            ))
            .legend(|(x, y)| Circle::new((x, y), 6, RED.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
