//! Calibrate a measured machine profile to your own training steps.
//!
//! `cargo run --release --example calibrate -- --runs RUNS.json --system BASE --out
//! PROFILE.json [--json]`. `RUNS.json` is `{"runs": [{"config": {…a Hugging Face config.json
//! object…}, "args": ["--tp", "4", …throughput flags…], "step_seconds": 104.5}, …]}`; each
//! run's flags say its layout and setup as `throughput` takes them. The fit scales the base
//! profile's GEMMs, attention, memory-bound kernels and collectives by one multiplier each and
//! adds a host overhead per micro-batch (non-negative, on log error, regularised toward 1), and
//! grades each run leave-one-out; the written profile records the held-out error as its band
//! and is read back by `throughput`, `plan` and `inspect_config` with `--system PROFILE.json`.
//! Without flags: BigScience's 23 measured A100 runs on the `jean-zay` profile, printed.

#[macro_use]
mod common;

use clap::Parser;
use common::cli::StepArgs;
use common::{die, or_die, read_input};
use lmshape::step::{self, ProfileRun, StepOptions};
use lmshape::system::SystemProfile;

const DEFAULT_RUNS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/runs/bigscience_tp8.json"
);

/// Fit a machine profile's multipliers to measured training steps.
#[derive(Parser, Debug)]
#[command(name = "calibrate", version, long_about = None)]
struct Cli {
    /// The measured runs [default: BigScience's 23 A100 runs in examples/runs/].
    #[arg(long, value_name = "RUNS.json")]
    runs: Option<String>,
    /// The profile to calibrate: a shipped name or a path.
    #[arg(long, value_name = "NAME|PATH", default_value = "jean-zay")]
    system: String,
    /// Write the calibrated profile here.
    #[arg(long, value_name = "PROFILE.json")]
    out: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// One run's flags: those of `throughput` that set the layout, the machine and the setup.
#[derive(Parser, Debug)]
#[command(name = "run")]
struct RunFlags {
    #[command(flatten)]
    step: StepArgs,
}

/// The runs of a RUNS.json, on `system` unless a run names its own.
fn runs(text: &str, system: &str) -> Vec<ProfileRun> {
    let doc: serde_json::Value = or_die(serde_json::from_str(text).map_err(lmshape::Error::from));
    let Some(list) = doc["runs"].as_array() else {
        die("the runs file needs a \"runs\" list")
    };
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            let name = r["name"]
                .as_str()
                .map_or_else(|| format!("run {}", i + 1), str::to_string);
            let model = or_die(lmshape::model::hf::from_hf_config(&r["config"]));
            let mut args: Vec<String> = vec!["run".into()];
            for a in r["args"].as_array().into_iter().flatten() {
                match a.as_str() {
                    Some(s) => args.push(s.into()),
                    None => die(&format!("{name}: \"args\" holds strings, found {a}")),
                }
            }
            if !args.iter().any(|a| a == "--system") {
                args.extend(["--system".into(), system.into()]);
            }
            let flags = RunFlags::try_parse_from(&args)
                .unwrap_or_else(|e| die(&format!("{name}: {}", e.to_string().trim())));
            let machine = flags.step.cluster.machine(flags.step.setup.framework);
            if machine.cluster.system.is_none() {
                die(&format!(
                    "{name}: calibration needs a measured profile, not the analytical model"
                ));
            }
            let Some(step_seconds) = r["step_seconds"].as_f64() else {
                die(&format!("{name}: \"step_seconds\" must be a number"))
            };
            let layout = flags.step.layout.layout(flags.step.seq_len);
            ProfileRun {
                name,
                model,
                layout,
                cluster: machine.cluster,
                opts: StepOptions {
                    memory: flags
                        .step
                        .setup
                        .memory_options(lmshape::MemoryOptions::default(), layout.zero()),
                    ..StepOptions::default()
                },
                step_seconds,
            }
        })
        .collect()
}

/// Run the example with the process's command line.
pub fn main() {
    let args: Cli = common::parse();
    let path = args.runs.clone().unwrap_or_else(|| DEFAULT_RUNS.into());
    let runs = runs(&read_input(&path), &args.system);
    let shown = args
        .runs
        .as_deref()
        .unwrap_or("examples/runs/bigscience_tp8.json");
    let base = match &runs.first().and_then(|r| r.cluster.system.clone()) {
        Some(p) => (**p).clone(),
        None => or_die(SystemProfile::by_name(&args.system)),
    };
    let c = or_die(step::calibrate_profile(&base, &runs));
    if let Some(out) = &args.out {
        let text = or_die(serde_json::to_string(&c.profile).map_err(lmshape::Error::from));
        if let Err(e) = std::fs::write(out, text) {
            die(&format!("cannot write {out}: {e}"));
        }
    }
    let m = c.profile.multipliers;
    if args.json {
        let record = CalibrationRecord {
            base: &base.name,
            profile: &c.profile.name,
            multipliers: m,
            host_overhead_seconds: c.profile.host_overhead_seconds,
            validation: &c.profile.validation,
            runs: runs
                .iter()
                .enumerate()
                .map(|(i, r)| RunRecord {
                    name: &r.name,
                    step_seconds: r.step_seconds,
                    in_sample_error: c.in_sample[i],
                    held_out_error: c.held_out.get(i).copied(),
                })
                .collect(),
        };
        // Through a JSON value, so the keys print sorted as every tool prints them.
        let value = serde_json::to_value(&record).unwrap_or_default();
        outln!("{}", serde_json::to_string_pretty(&value).unwrap());
        return;
    }
    outln!(
        "{}: {} runs on {}; fitted multipliers: GEMMs x{:.3}, attention x{:.3}, memory-bound x{:.3}, collectives x{:.3}; host overhead {:.2} ms per micro-batch",
        shown,
        runs.len(),
        base.name,
        m.gemm,
        m.attention,
        m.memory,
        m.collectives,
        c.profile.host_overhead_seconds * 1e3
    );
    outln!(
        "{:<60} {:>10} {:>10} {:>10}",
        "run",
        "measured s",
        "in-sample",
        "held out"
    );
    for (i, r) in runs.iter().enumerate() {
        outln!(
            "{:<60} {:>10.2} {:>+9.1}% {:>10}",
            r.name.chars().take(60).collect::<String>(),
            r.step_seconds,
            100.0 * c.in_sample[i],
            c.held_out
                .get(i)
                .map_or("-".into(), |e| format!("{:+.1}%", 100.0 * e))
        );
    }
    if let Some(v) = &c.profile.validation {
        outln!("band recorded in the profile: {}", c.profile.band_basis());
        let _ = v;
    }
    match &args.out {
        Some(out) => outln!("wrote {out}: use it with --system {out}"),
        None => outln!("(--out PROFILE.json writes the calibrated profile)"),
    }
}

/// `calibrate --json`: the profile fitted, its multipliers and validation, and each run's
/// in-sample and held-out errors.
#[derive(serde::Serialize)]
struct CalibrationRecord<'a> {
    base: &'a str,
    profile: &'a str,
    multipliers: lmshape::system::Multipliers,
    host_overhead_seconds: f64,
    validation: &'a Option<lmshape::system::Validation>,
    runs: Vec<RunRecord<'a>>,
}

/// One measured step and the calibrated profile's errors on it.
#[derive(serde::Serialize)]
struct RunRecord<'a> {
    name: &'a str,
    step_seconds: f64,
    in_sample_error: f64,
    held_out_error: Option<f64>,
}
