//! Fit `L = E + A/N^α + B/D^β` to your own runs (Hoffmann et al. 2022 §3.3: Huber δ = 1e-3 on
//! log loss, L-BFGS from a grid of starts, pruned after a coarse pass when the runs are many).
//!
//! `cargo run --release --example fit_scaling_law -- runs.csv [--exclude-highest-loss N]
//! [--bootstrap N] [--threads N] [--json]`. The CSV has columns `params`, `loss` and `tokens`
//! or `training_flops`. Without a path it fits the Chinchilla Figure 4 data bundled in
//! `tests/data/`. A progress bar shows on standard error while it works (not with `--json`, nor
//! when standard error is not a terminal).

#[macro_use]
mod common;

use clap::Parser;
use common::cli::count;
use common::{die, or_die, si};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lmshape::scaling::{self, FitOptions};
use std::io::IsTerminal;

const DEFAULT_CSV: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/chinchilla_fig4_extracted.csv"
);

/// Fit a Chinchilla-form scaling law to training runs.
#[derive(Parser, Debug)]
#[command(name = "fit_scaling_law", version, long_about = None)]
struct Cli {
    /// CSV of runs: columns `params`, `loss`, and `tokens` or `training_flops`
    /// [default: the Chinchilla Figure 4 runs in tests/data/].
    csv: Option<String>,
    /// Leave out the N runs with the highest loss (Besiroglu et al. left out 5).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = count)]
    exclude_highest_loss: u64,
    /// Bootstrap resamples for standard errors (0 or 1: none; at most 10,000).
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = resamples)]
    bootstrap: u64,
    /// Threads for the starts (0: every core).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = count)]
    threads: u64,
    /// A compute budget in FLOPs to give the optimum at, with a 90% bootstrap interval
    /// (repeatable) [default: 1e24].
    #[arg(long, value_name = "C", value_parser = common::cli::positive)]
    flops: Vec<f64>,
    /// Write the fitted law and its bootstrap refits here, for --law-file of budget and plan.
    #[arg(long, value_name = "LAW.json")]
    out: Option<String>,
    /// Print the fit as JSON.
    #[arg(long)]
    json: bool,
}

/// A bootstrap size from 0 to [`scaling::MAX_BOOTSTRAP_RESAMPLES`].
fn resamples(s: &str) -> Result<u64, String> {
    let n = count(s)?;
    let max = scaling::MAX_BOOTSTRAP_RESAMPLES as u64;
    if n > max {
        return Err(format!(
            "at most {max} resamples (the standard errors are within 1% of their limit by then), got {s}"
        ));
    }
    Ok(n)
}

/// Run the example with the process's command line.
pub fn main() {
    let args: Cli = common::parse();
    let (path, all, runs) = load_runs(&args);
    let opts = FitOptions {
        threads: usize::try_from(args.threads).unwrap_or(0),
        ..FitOptions::default()
    };
    let (fit, seconds) = fit_with_progress(&args, &runs, &opts);
    let boot = usize::try_from(args.bootstrap).unwrap_or(usize::MAX);
    let laws = if boot >= 2 {
        match scaling::bootstrap_laws(&runs, &fit, &opts, boot, 2024) {
            Ok(laws) => laws,
            Err(e) => {
                eprintln!("note: no bootstrap standard errors: {e}");
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    let se = if laws.len() >= 2 {
        scaling::bootstrap_standard_errors(&runs, &fit, &opts, boot, 2024).ok()
    } else {
        None
    };
    let frontier = scaling::isoflop_frontier(&runs, 0.25).ok().and_then(|m| {
        let cs: Vec<f64> = m.iter().map(|x| x.flops).collect();
        let ns: Vec<f64> = m.iter().map(|x| x.optimal.params).collect();
        scaling::fit_power_law(&cs, &ns).ok().map(|f| (m.len(), f))
    });
    let l = fit.law;
    let budgets = if args.flops.is_empty() {
        vec![1e24]
    } else {
        args.flops.clone()
    };
    let optima: Vec<scaling::OptimumInterval> = budgets
        .iter()
        .map(|&c| or_die(scaling::optimum_interval(&l, &laws, c)))
        .collect();
    if let Some(path) = &args.out {
        let file = scaling::LawFile {
            law: l,
            bootstrap: laws.clone(),
            source: path_label(&args),
            runs_used: runs.len(),
        };
        // Through a JSON value, so the keys print sorted as every tool prints them.
        let value = serde_json::to_value(&file).unwrap_or_default();
        if let Err(e) = std::fs::write(
            path,
            serde_json::to_string_pretty(&value).unwrap_or_default(),
        ) {
            common::die(&format!("cannot write {path}: {e}"));
        }
    }
    let r = Report {
        path,
        all_runs: all.len(),
        runs_used: runs.len(),
        fit,
        seconds,
        laws,
        se,
        frontier,
        optima,
    };
    if args.json {
        print_json(&r);
    } else {
        print_text(&args, &r);
    }
}

/// The runs from the CSV, and those left after the highest-loss outliers are dropped (the
/// path, every run, the runs kept); exits when too few remain for a fit.
fn load_runs(args: &Cli) -> (String, Vec<scaling::Run>, Vec<scaling::Run>) {
    let path = args.csv.clone().unwrap_or_else(|| DEFAULT_CSV.into());
    let text = common::read_input(&path);
    let all = or_die(scaling::runs_from_csv(&text));
    let excluded = usize::try_from(args.exclude_highest_loss).unwrap_or(usize::MAX);
    if all.len() < scaling::MIN_RUNS {
        die(&format!(
            "{path} holds {} runs; a five-parameter fit needs at least {}",
            all.len(),
            scaling::MIN_RUNS
        ));
    }
    if all.len().saturating_sub(excluded) < scaling::MIN_RUNS {
        die(&format!(
            "--exclude-highest-loss {excluded} leaves {} of {} runs; a five-parameter fit needs at least {}",
            all.len().saturating_sub(excluded),
            all.len(),
            scaling::MIN_RUNS
        ));
    }
    let runs = scaling::exclude_highest_loss(&all, excluded);
    (path, all, runs)
}

/// The fit, with a progress bar on a terminal, and the seconds it took.
fn fit_with_progress(
    args: &Cli,
    runs: &[scaling::Run],
    opts: &FitOptions,
) -> (scaling::FitResult, f64) {
    let bar = if args.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template(
                "fitting {bar:40} {pos}/{len} starts, {elapsed} elapsed, ~{eta} left",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    };
    let t = std::time::Instant::now();
    let fit = or_die(scaling::fit_parametric_with_progress(
        runs,
        opts,
        &|done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    ));
    bar.finish_and_clear();
    let seconds = t.elapsed().as_secs_f64();
    (fit, seconds)
}

/// What the fit found: the law, its bootstrap refits and standard errors, the IsoFLOP
/// frontier and the optima at the budgets asked for.
struct Report {
    path: String,
    all_runs: usize,
    runs_used: usize,
    fit: scaling::FitResult,
    seconds: f64,
    laws: Vec<scaling::ParametricLaw>,
    se: Option<scaling::StandardErrors>,
    frontier: Option<(usize, scaling::PowerLawFit)>,
    optima: Vec<scaling::OptimumInterval>,
}

/// `fit_scaling_law --json`: the law's parameters under the names of Hoffmann et al. 2022
/// eq. 2 (`E`, `A`, `B`, `alpha`, `beta`), the fit's figures, the compute-optimal frontier's
/// exponents, the optima asked for, and the bootstrap standard errors and IsoFLOP frontier
/// when there are some.
#[derive(serde::Serialize)]
struct FitRecord<'a> {
    #[serde(flatten)]
    law: LawTerms,
    objective: f64,
    rms_log_residual: f64,
    max_abs_log_residual: f64,
    runs_used: usize,
    runs_excluded: usize,
    starts: usize,
    fit_seconds: f64,
    params_exponent: f64,
    tokens_exponent: f64,
    optimal_at_1e24_flops: scaling::Allocation,
    optima: &'a [scaling::OptimumInterval],
    #[serde(skip_serializing_if = "Option::is_none")]
    standard_errors: Option<ErrorsRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    isoflop_frontier: Option<FrontierRecord>,
}

/// A figure per term of the law, under the names of Hoffmann et al. 2022 eq. 2.
#[derive(serde::Serialize)]
struct LawTerms {
    #[serde(rename = "E")]
    e: f64,
    #[serde(rename = "A")]
    a: f64,
    #[serde(rename = "B")]
    b: f64,
    alpha: f64,
    beta: f64,
}

/// Bootstrap standard errors under the same names as the law's parameters.
#[derive(serde::Serialize)]
struct ErrorsRecord {
    #[serde(flatten)]
    terms: LawTerms,
    resamples: usize,
}

/// The IsoFLOP (approach 2) frontier's power law over its groups.
#[derive(serde::Serialize)]
struct FrontierRecord {
    groups: usize,
    params_exponent: f64,
    coef: f64,
    r_squared: f64,
}

fn print_json(r: &Report) {
    let (fit, l) = (&r.fit, &r.fit.law);
    let (params_exponent, tokens_exponent) = l.optimal_exponents();
    let record = FitRecord {
        law: LawTerms {
            e: l.e,
            a: l.a,
            b: l.b,
            alpha: l.alpha,
            beta: l.beta,
        },
        objective: fit.objective,
        rms_log_residual: fit.rms_residual,
        max_abs_log_residual: fit.residuals.iter().fold(0.0f64, |m, r| m.max(r.abs())),
        runs_used: r.runs_used,
        runs_excluded: r.all_runs - r.runs_used,
        starts: fit.starts,
        fit_seconds: r.seconds,
        params_exponent,
        tokens_exponent,
        optimal_at_1e24_flops: or_die(l.compute_optimal(1e24)),
        optima: &r.optima,
        standard_errors: r.se.as_ref().map(|se| ErrorsRecord {
            terms: LawTerms {
                e: se.e,
                a: se.a,
                b: se.b,
                alpha: se.alpha,
                beta: se.beta,
            },
            resamples: se.resamples,
        }),
        isoflop_frontier: r.frontier.as_ref().map(|(groups, f)| FrontierRecord {
            groups: *groups,
            params_exponent: f.exponent,
            coef: f.coef,
            r_squared: f.r_squared,
        }),
    };
    // Through a JSON value, so the keys print sorted as every tool prints them.
    let value = serde_json::to_value(&record).unwrap_or_default();
    outln!("{}", serde_json::to_string_pretty(&value).unwrap());
}

fn print_text(args: &Cli, r: &Report) {
    let (fit, l, seconds, path) = (&r.fit, &r.fit.law, r.seconds, &r.path);
    let opt = or_die(l.compute_optimal(1e24));
    outln!(
        "{path}: {} runs, {} left out as highest-loss outliers",
        r.all_runs,
        r.all_runs - r.runs_used
    );
    outln!(
        "fit (Huber d=1e-3 on log loss, L-BFGS from {} starts, {seconds:.2} s):",
        fit.starts
    );
    outln!(
        "  E = {:.4}  A = {:.2}  B = {:.2}  alpha = {:.4}  beta = {:.4}",
        l.e,
        l.a,
        l.b,
        l.alpha,
        l.beta
    );
    if let Some(se) = &r.se {
        outln!(
            "  bootstrap SE ({} resamples): E {:.4}  A {:.2}  B {:.2}  alpha {:.4}  beta {:.4}",
            se.resamples,
            se.e,
            se.a,
            se.b,
            se.alpha,
            se.beta
        );
    }
    outln!(
        "  objective {:.6}, rms log residual {:.4}",
        fit.objective,
        fit.rms_residual
    );
    outln!(
        "  compute-optimal: N_opt ∝ C^{:.3}, D_opt ∝ C^{:.3}; at 1e24 FLOPs: {} params on {} tokens",
        l.optimal_exponents().0,
        l.optimal_exponents().1,
        si(opt.params),
        si(opt.tokens)
    );
    if let Some((groups, f)) = &r.frontier {
        outln!(
            "  IsoFLOP (approach 2) over {groups} groups: N_opt ∝ C^{:.3} (r² {:.3})",
            f.exponent,
            f.r_squared
        );
    }
    for o in &r.optima {
        outln!(
            "  at {:.3e} FLOPs: {} params ({}..{}) on {} tokens ({}..{}), 90% over {} bootstrap refits",
            o.flops,
            si(o.params),
            si(o.params_low),
            si(o.params_high),
            si(o.tokens),
            si(o.tokens_low),
            si(o.tokens_high),
            r.laws.len()
        );
    }
    if let Some(path) = &args.out {
        outln!("  wrote {path}: pass it to budget or plan with --law-file {path}");
    }
}

/// Where the runs came from, for the law file.
fn path_label(args: &Cli) -> String {
    args.csv
        .clone()
        .unwrap_or_else(|| "tests/data/chinchilla_fig4_extracted.csv".into())
}
