//! From a compute budget to each scaling law's compute-optimal (parameters, tokens), and the
//! choice under your constraints.
//!
//! `cargo run --release --example budget -- [--gpu a100-80gb --gpus 384 --hours 3024 |
//! --gpu-hours H | --flops C] [--mfu 0.4] [--token-floor 350e9] [--param-cap N]
//! [--law kaplan|chinchilla-1|chinchilla-2|chinchilla-3|besiroglu|chinchilla] [--target-loss L --inference-tokens T] [--json]`

#[macro_use]
mod common;

use clap::Parser;
use common::cli::{GpuParser, count, non_negative, positive, positive_count, share};
use common::{or_die, si};
use lmshape::hardware::{Dtype, GpuSpec};
use lmshape::scaling::{self, Allocation, Constraints, LawBounds, LawChoice, ParametricLaw};
use serde_json::json;

/// Each scaling law's compute-optimal size for a budget, and the choice under constraints.
#[derive(Parser, Debug)]
#[command(name = "budget", version, long_about = None, allow_negative_numbers = true)]
struct Cli {
    /// GPU model (its dense peak turns GPU-hours into FLOPs).
    #[arg(long, value_name = "NAME", default_value = "a100-80gb", value_parser = GpuParser)]
    gpu: GpuSpec,
    /// GPUs.
    #[arg(long, value_name = "N", default_value_t = 384, value_parser = positive_count)]
    gpus: u64,
    /// Wall-clock hours.
    #[arg(long, value_name = "H", default_value_t = 3024.0, value_parser = positive)]
    hours: f64,
    /// GPU-hours instead of GPUs × hours.
    #[arg(long, value_name = "H", value_parser = positive, conflicts_with = "flops")]
    gpu_hours: Option<f64>,
    /// Training FLOPs instead of GPU-hours.
    #[arg(long, value_name = "C", value_parser = positive)]
    flops: Option<f64>,
    /// Precision of the peak: fp32, tf32, fp16, bf16 or fp8.
    #[arg(long, value_name = "DTYPE", default_value = "bf16", value_parser = |s: &str| s.parse::<Dtype>().map_err(|e| e.to_string()))]
    dtype: Dtype,
    /// Model FLOPs utilisation assumed.
    #[arg(long, value_name = "U", default_value_t = 0.4, value_parser = share)]
    mfu: f64,
    /// Train on at least this many tokens.
    #[arg(long, value_name = "D", value_parser = positive)]
    token_floor: Option<f64>,
    /// At most this many parameters.
    #[arg(long, value_name = "N", value_parser = count)]
    param_cap: Option<u64>,
    /// Law of the constrained choice: chinchilla (Hoffmann et al. 2022 approach 3; also
    /// chinchilla3, hoffmann), besiroglu (Besiroglu et al. 2024's refit) or kaplan (Kaplan et
    /// al. 2020, non-embedding parameters).
    #[arg(long, value_name = "LAW", default_value = "chinchilla", value_parser = common::cli::law)]
    law: LawChoice,
    /// A law fitted to your runs (`fit_scaling_law --out LAW.json`), instead of --law.
    #[arg(long, value_name = "LAW.json", conflicts_with = "law")]
    law_file: Option<String>,
    /// Inference-aware sizing (Sardana et al. 2023): the loss to reach.
    #[arg(long, value_name = "L", value_parser = positive)]
    target_loss: Option<f64>,
    /// Inference-aware sizing: tokens to serve over the model's life.
    #[arg(long, value_name = "T", requires = "target_loss", value_parser = non_negative)]
    inference_tokens: Option<f64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Run the example with the process's command line.
pub fn main() {
    let args: Cli = common::parse();
    let gpu = &args.gpu;
    let peak = or_die(gpu.peak_flops_per_s(args.dtype));
    let gpu_hours = match (args.gpu_hours, args.flops) {
        (Some(h), _) => h,
        (None, Some(c)) => or_die(scaling::gpu_hours_for(c, peak, args.mfu)),
        (None, None) => args.gpus as f64 * args.hours,
    };
    let flops = match args.flops {
        Some(c) => c,
        None => or_die(scaling::training_flops(gpu_hours, peak, args.mfu)),
    };
    let law = args
        .law_file
        .as_deref()
        .map_or(args.law, common::cli::law_file);
    let cons = Constraints {
        token_floor: args.token_floor,
        param_cap: args.param_cap.map(|n| n as f64),
        param_floor: None,
    };
    let bounds = or_die(LawBounds::for_flops(flops));
    let choice = or_die(law.constrained(flops, &cons));
    let inference = match args.target_loss {
        Some(l) => {
            let Some(parametric) = law.parametric() else {
                common::die(
                    "inference-aware sizing needs a law of the form E + A/N^alpha + B/D^beta; Kaplan's has another: use --law chinchilla or besiroglu",
                )
            };
            Some(or_die(
                parametric.inference_optimal(l, args.inference_tokens.unwrap_or(0.0)),
            ))
        }
        None => None,
    };
    let b = Budget {
        gpu_hours,
        peak,
        flops,
        law,
        bounds,
        choice,
        inference,
    };
    if args.json {
        print_json(&args, &b);
    } else {
        print_text(&args, &b);
    }
}

/// What the example found: the budget, every law's optimum, the constrained choice and the
/// inference-aware size.
struct Budget {
    gpu_hours: f64,
    peak: f64,
    flops: f64,
    law: LawChoice,
    bounds: LawBounds,
    choice: scaling::ConstrainedChoice,
    inference: Option<scaling::InferenceChoice>,
}

impl Budget {
    /// Each law's compute-optimal allocation: its JSON key, its name, the allocation and the
    /// loss the law predicts there (the parametric laws only).
    fn laws(&self) -> [(&'static str, &'static str, Allocation, Option<f64>); 5] {
        let l = &self.bounds;
        let loss = |law: ParametricLaw, a: Allocation| Some(or_die(law.loss(a.params, a.tokens)));
        [
            ("kaplan", "Kaplan 2020 (non-embedding N)", l.kaplan, None),
            (
                "chinchilla_approach1",
                "Chinchilla approach 1",
                l.chinchilla_approach1,
                None,
            ),
            (
                "chinchilla_approach2",
                "Chinchilla approach 2",
                l.chinchilla_approach2,
                None,
            ),
            (
                "chinchilla_approach3",
                "Chinchilla approach 3",
                l.chinchilla_approach3,
                loss(ParametricLaw::CHINCHILLA, l.chinchilla_approach3),
            ),
            (
                "besiroglu",
                "Besiroglu et al. 2024 refit",
                l.besiroglu,
                loss(ParametricLaw::BESIROGLU, l.besiroglu),
            ),
        ]
    }
}

/// A law's compute-optimal allocation as the JSON shows it: the library's `Allocation`, and
/// the loss the law predicts there (parametric laws only).
#[derive(serde::Serialize)]
struct LawRecord {
    #[serde(flatten)]
    allocation: Allocation,
    #[serde(skip_serializing_if = "Option::is_none")]
    predicted_loss: Option<f64>,
}

/// The constrained choice as the library serialises it, with the law's name.
#[derive(serde::Serialize)]
struct ChoiceRecord<'a> {
    #[serde(flatten)]
    choice: &'a scaling::ConstrainedChoice,
    law: String,
}

fn print_json(args: &Cli, b: &Budget) {
    let mut out = json!({
        "compute_flops": b.flops,
        "gpu_hours": b.gpu_hours,
        "pf_days": b.flops / scaling::PF_DAY_FLOPS,
        "gpu": args.gpu.name,
        "mfu": args.mfu,
        "constrained": ChoiceRecord {
            choice: &b.choice,
            law: b.law.to_string(),
        },
    });
    for (key, _, allocation, predicted_loss) in b.laws() {
        out[key] = json!(LawRecord {
            allocation,
            predicted_loss
        });
    }
    if let Some(i) = &b.inference {
        out["inference_aware"] = json!(i);
    }
    outln!("{}", serde_json::to_string_pretty(&out).unwrap());
}

fn print_text(args: &Cli, b: &Budget) {
    let (flops, gpu_hours, gpu, law, choice, peak) =
        (b.flops, b.gpu_hours, &args.gpu, &b.law, &b.choice, b.peak);
    outln!(
        "budget: {} GPU-hours of {} at {:.0}% MFU of {:.0} TFLOP/s = {:.3e} FLOPs ({} PF-days)",
        si(gpu_hours),
        gpu.name,
        args.mfu * 100.0,
        peak / 1e12,
        flops,
        si(flops / scaling::PF_DAY_FLOPS)
    );
    outln!(
        "\n{:<34}{:>12}{:>12}{:>10}",
        "law (compute-optimal)",
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
    for (key, name, a, loss) in b.laws() {
        row(name, &a, loss);
        if key == "kaplan" {
            outln!("  (Kaplan's N and D are separate published fits: 6·N·D = 1.81 × the budget)");
        }
    }
    outln!(
        "\nconstrained ({law}): {} params on {} tokens ({}), predicted loss {:.4} (+{:.4} vs the optimum on the same budget)",
        si(choice.params),
        si(choice.tokens),
        choice.binding,
        choice.predicted_loss,
        choice.loss_cost
    );
    if let Some(i) = &b.inference {
        outln!(
            "inference-aware (Sardana et al. 2023): {} params on {} tokens; training {:.3e} + inference {:.3e} FLOPs",
            si(i.params),
            si(i.tokens),
            i.training_flops,
            i.inference_flops
        );
    }
}
