//! From a compute budget to each scaling law's compute-optimal (parameters, tokens), and the
//! choice under your constraints.
//!
//! `cargo run --release --example budget -- [--gpu a100-80gb --gpus 384 --hours 3024 |
//! --gpu-hours H | --flops C] [--mfu 0.4] [--token-floor 350e9] [--param-cap N]
//! [--law chinchilla|besiroglu] [--target-loss L --inference-tokens T] [--json]`

#[macro_use]
mod common;

use common::{Args, die, or_die, si};
use lmshape::hardware::{Dtype, GpuSpec};
use lmshape::scaling::{self, Allocation, Constraints, ParametricLaw, PowerLawFrontier};
use serde_json::json;

const USAGE: &str = "usage: budget [--gpu NAME --gpus N --hours H | --gpu-hours H | --flops C] [--dtype bf16] [--mfu U] [--token-floor D] [--param-cap N] [--law chinchilla|besiroglu] [--target-loss L --inference-tokens T] [--json]";

fn main() {
    let args = Args::parse(
        &[
            "gpu",
            "gpus",
            "hours",
            "gpu-hours",
            "flops",
            "mfu",
            "dtype",
            "token-floor",
            "param-cap",
            "law",
            "target-loss",
            "inference-tokens",
        ],
        &["json"],
        USAGE,
    );
    let gpu = or_die(GpuSpec::by_name(args.raw("gpu").unwrap_or("a100-80gb")));
    let dtype = or_die(args.raw("dtype").unwrap_or("bf16").parse::<Dtype>());
    let mfu: f64 = args.get("mfu", 0.4);
    let peak = or_die(gpu.peak_flops_per_s(dtype));
    let gpu_hours = match (args.opt::<f64>("gpu-hours"), args.opt::<f64>("flops")) {
        (Some(h), _) => h,
        (None, Some(c)) => or_die(scaling::gpu_hours_for(c, peak, mfu)),
        (None, None) => args.get_u64("gpus", 384) as f64 * args.get("hours", 3024.0),
    };
    let flops = match args.opt::<f64>("flops") {
        Some(c) => c,
        None => or_die(scaling::training_flops(gpu_hours, peak, mfu)),
    };
    let law = match args.raw("law").unwrap_or("chinchilla") {
        "chinchilla" | "chinchilla3" | "hoffmann" => ParametricLaw::CHINCHILLA,
        "besiroglu" => ParametricLaw::BESIROGLU,
        other => die(&format!("unknown --law {other:?} (chinchilla, besiroglu)")),
    };
    let cons = Constraints {
        token_floor: args.opt("token-floor"),
        param_cap: args.opt("param-cap"),
        param_floor: None,
    };
    let kaplan = or_die(PowerLawFrontier::KAPLAN.optimal(flops));
    let a1 = or_die(PowerLawFrontier::CHINCHILLA_APPROACH1.optimal(flops));
    let a2 = or_die(PowerLawFrontier::CHINCHILLA_APPROACH2.optimal(flops));
    let a3 = or_die(ParametricLaw::CHINCHILLA.compute_optimal(flops));
    let be = or_die(ParametricLaw::BESIROGLU.compute_optimal(flops));
    let choice = or_die(law.constrained(flops, &cons));
    let inference = match (
        args.opt::<f64>("target-loss"),
        args.opt::<f64>("inference-tokens"),
    ) {
        (Some(l), t) => Some(or_die(law.inference_optimal(l, t.unwrap_or(0.0)))),
        _ => None,
    };
    let alloc = |a: &Allocation, loss: Option<f64>| {
        let mut v = json!({"params": a.params, "tokens": a.tokens});
        if let Some(l) = loss {
            v["predicted_loss"] = json!(l);
        }
        v
    };
    if args.flag("json") {
        let mut out = json!({
            "compute_flops": flops,
            "gpu_hours": gpu_hours,
            "pf_days": flops / scaling::PF_DAY_FLOPS,
            "gpu": gpu.name,
            "mfu": mfu,
            "kaplan": alloc(&kaplan, None),
            "chinchilla_approach1": alloc(&a1, None),
            "chinchilla_approach2": alloc(&a2, None),
            "chinchilla_approach3": alloc(&a3, Some(or_die(ParametricLaw::CHINCHILLA.loss(a3.params, a3.tokens)))),
            "besiroglu": alloc(&be, Some(or_die(ParametricLaw::BESIROGLU.loss(be.params, be.tokens)))),
            "constrained": {
                "params": choice.params,
                "tokens": choice.tokens,
                "binding": choice.binding,
                "predicted_loss": choice.predicted_loss,
                "optimal_loss": choice.optimal_loss,
                "loss_cost": choice.loss_cost,
                "law": args.raw("law").unwrap_or("chinchilla"),
            },
        });
        if let Some(i) = inference {
            out["inference_aware"] = json!(i);
        }
        outln!("{}", serde_json::to_string_pretty(&out).unwrap());
        return;
    }
    outln!(
        "budget: {} GPU-hours of {} at {:.0}% MFU of {:.0} TFLOP/s = {:.3e} FLOPs ({:.0} PF-days)",
        si(gpu_hours),
        gpu.name,
        mfu * 100.0,
        peak / 1e12,
        flops,
        flops / scaling::PF_DAY_FLOPS
    );
    outln!(
        "\n{:<34}{:>12}{:>12}{:>10}",
        "law",
        "params",
        "tokens",
        "loss"
    );
    let row = |name: &str, a: &Allocation, loss: Option<f64>| {
        outln!(
            "{name:<34}{:>12}{:>12}{:>10}",
            si(a.params),
            si(a.tokens),
            loss.map_or("-".into(), |l| format!("{l:.3}"))
        )
    };
    row("Kaplan 2020 (non-embedding N)", &kaplan, None);
    outln!("  (Kaplan's N and D are separate published fits: 6·N·D = 1.81 × the budget)");
    row("Chinchilla approach 1", &a1, None);
    row("Chinchilla approach 2", &a2, None);
    row(
        "Chinchilla approach 3",
        &a3,
        ParametricLaw::CHINCHILLA.loss(a3.params, a3.tokens).ok(),
    );
    row(
        "Besiroglu et al. 2024 refit",
        &be,
        ParametricLaw::BESIROGLU.loss(be.params, be.tokens).ok(),
    );
    outln!(
        "\nconstrained ({}): {} params on {} tokens, binding: {:?}, predicted loss {:.4} (+{:.4} vs optimum)",
        args.raw("law").unwrap_or("chinchilla"),
        si(choice.params),
        si(choice.tokens),
        choice.binding,
        choice.predicted_loss,
        choice.loss_cost
    );
    if let Some(i) = inference {
        outln!(
            "inference-aware (Sardana et al. 2023): {} params on {} tokens; training {:.3e} + inference {:.3e} FLOPs",
            si(i.params),
            si(i.tokens),
            i.training_flops,
            i.inference_flops
        );
    }
}
