//! The `lmshape` command: each example as a subcommand, the same code and the same flags
//! (`lmshape plan --gpus 64` is `cargo run --release --example plan -- --gpus 64`).
//! Install with `cargo install --path . --features cli`.

// Each example brings its own copy of the shared helpers, as it does when built alone.
#![allow(clippy::duplicate_mod)]

#[path = "../../examples/plan.rs"]
mod plan;

#[path = "../../examples/inspect_config.rs"]
mod inspect_config;

#[path = "../../examples/throughput.rs"]
mod throughput;

#[path = "../../examples/budget.rs"]
mod budget;

#[path = "../../examples/fit_scaling_law.rs"]
mod fit_scaling_law;

#[path = "../../examples/enumerate_shapes.rs"]
mod enumerate_shapes;

#[path = "../../examples/calibrate.rs"]
mod calibrate;

#[path = "../../examples/serve.rs"]
mod serve;

/// The subcommands, the example each runs, and what it does.
const COMMANDS: [(&str, fn(), &str); 8] = [
    (
        "plan",
        plan::main,
        "plan a training run: budget, laws, shapes, layouts, memory, speed, ranking",
    ),
    (
        "inspect",
        inspect_config::main,
        "parameters, FLOPs per token and memory of a config.json",
    ),
    (
        "throughput",
        throughput::main,
        "a training step's time, TFLOP/s, MFU and memory on a layout",
    ),
    (
        "budget",
        budget::main,
        "a compute budget's compute-optimal size and tokens under each law",
    ),
    (
        "fit",
        fit_scaling_law::main,
        "fit a Chinchilla-form law to your runs",
    ),
    (
        "shapes",
        enumerate_shapes::main,
        "every valid shape near a size",
    ),
    (
        "calibrate",
        calibrate::main,
        "fit a machine profile to your measured steps",
    ),
    (
        "serve",
        serve::main,
        "what a model costs to serve on a machine",
    ),
];

fn main() {
    let sub = std::env::args().nth(1);
    match COMMANDS
        .iter()
        .find(|(name, _, _)| Some(*name) == sub.as_deref())
    {
        Some((_, run, _)) => run(),
        None => {
            let known = matches!(sub.as_deref(), None | Some("-h" | "--help" | "help"));
            let mut text = String::from(
                "lmshape: which transformer to train with a compute budget, and how\n\nUsage: lmshape <COMMAND> [FLAGS]  (lmshape <COMMAND> --help for its flags)\n\nCommands:\n",
            );
            for (name, _, about) in COMMANDS {
                text.push_str(&format!("  {name:<11} {about}\n"));
            }
            if known {
                print!("{text}");
            } else {
                eprint!(
                    "error: unknown command {:?}\n\n{text}",
                    sub.unwrap_or_default()
                );
                std::process::exit(2);
            }
        }
    }
}
