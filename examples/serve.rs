//! What a model costs to serve on a measured machine: time to first token, time per output
//! token, output tokens per second per user and per GPU, the concurrency the KV cache holds and
//! dollars per million tokens, each speed with the machine profile's band.
//!
//! `cargo run --release --example serve -- [--config PATH | --preset NAME] [--gpu NAME |
//! --system NAME|PATH] [--tp N --pp N --ep N --attention-dp N] [--weights bf16|fp8|fp8-block|nvfp4|mxfp4]
//! [--kv-cache bf16|fp8] [--isl N --osl N] [--concurrency N | --max-throughput]
//! [--kv-block-tokens N] [--static-batching] [--gpu-hour-cost D] [--sweep [--svg PATH]]
//! [--json]`. Without a model: Llama-2-7B on one H100 of a DGX H100, 1024 tokens in and out,
//! as many sequences as the cache holds.

#[macro_use]
mod common;

use clap::Parser;
use common::cli::{positive, positive_count, share};
use common::{gib, or_die, si};
use lmshape::Transformer;
use lmshape::serve::{
    self, Batching, Deployment, KvCacheDtype, ServeReport, WeightPrecision, Workload,
};
use lmshape::system::SystemProfile;

const DEFAULT_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/configs/llama-2-7b.json"
);

/// Serving cost of a model on a measured machine.
#[derive(Parser, Debug)]
#[command(name = "serve", version, long_about = None, after_help = common::cli::GLOSSARY)]
struct Cli {
    /// A Hugging Face config.json [default: Llama-2-7B].
    #[arg(long, value_name = "PATH", conflicts_with = "preset")]
    config: Option<String>,
    /// A named preset (e.g. gpt3-175b).
    #[arg(long, value_name = "NAME")]
    preset: Option<String>,
    /// GPU: its DGX or NVL72 profile (a100-80gb, h100-sxm, h200, b200, gb200, b300, gb300).
    #[arg(long, value_name = "NAME", conflicts_with = "system")]
    gpu: Option<String>,
    /// Measured machine profile: a shipped name or a path [default: dgx-h100].
    #[arg(long, value_name = "NAME|PATH")]
    system: Option<String>,
    /// Attention tensor parallelism.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive_count)]
    tp: u64,
    /// Pipeline stages.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive_count)]
    pp: u64,
    /// Expert parallelism (divides tp × attention-dp).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive_count)]
    ep: u64,
    /// Attention data parallelism beside expert parallelism.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive_count)]
    attention_dp: u64,
    /// Linear-layer weights: bf16, fp8, fp8-block, nvfp4 or mxfp4 (FP4 on Blackwell and later).
    #[arg(long, value_name = "P", default_value = "bf16", value_parser = weights)]
    weights: WeightPrecision,
    /// KV cache: bf16 or fp8.
    #[arg(long, value_name = "P", default_value = "bf16", value_parser = kv_dtype)]
    kv_cache: KvCacheDtype,
    /// Prompt tokens per request.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = positive_count)]
    isl: u64,
    /// Output tokens per request.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = positive_count)]
    osl: u64,
    /// Sequences in flight per replica.
    #[arg(long, value_name = "N", value_parser = positive_count, conflicts_with = "max_throughput")]
    concurrency: Option<u64>,
    /// As many sequences as the KV cache holds (the default without --concurrency).
    #[arg(long)]
    max_throughput: bool,
    /// Tokens per KV-cache page.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = positive_count)]
    kv_block_tokens: u64,
    /// Share of the card the engine may use.
    #[arg(long, value_name = "F", default_value_t = 0.9, value_parser = share)]
    memory_utilization: f64,
    /// Prompt tokens per prefill chunk.
    #[arg(long, value_name = "N", default_value_t = 8192, value_parser = positive_count)]
    prefill_chunk: u64,
    /// Static batches (prefill the batch, then decode it) instead of continuous batching.
    #[arg(long)]
    static_batching: bool,
    /// Dollars per GPU-hour, for the cost per million tokens.
    #[arg(long, value_name = "D", value_parser = positive)]
    gpu_hour_cost: Option<f64>,
    /// The frontier of tokens/s per GPU against tokens/s per user over concurrency and tp.
    #[arg(long)]
    sweep: bool,
    /// Draw the sweep's frontier as an SVG chart.
    #[arg(long, value_name = "PATH", requires = "sweep")]
    svg: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn weights(s: &str) -> Result<WeightPrecision, String> {
    s.parse().map_err(|e: lmshape::Error| e.to_string())
}

fn kv_dtype(s: &str) -> Result<KvCacheDtype, String> {
    s.parse().map_err(|e: lmshape::Error| e.to_string())
}

fn profile(args: &Cli) -> SystemProfile {
    let name = match (&args.system, &args.gpu) {
        (Some(s), _) => s.clone(),
        (None, Some(g)) => match lmshape::system::default_system_for_gpu(g) {
            Some(n) => n.to_string(),
            None => common::die(&format!(
                "serving is timed from a machine's measured kernels; {g} has no shipped profile (pass --system PATH)"
            )),
        },
        (None, None) => "dgx-h100".to_string(),
    };
    if std::path::Path::new(&name).is_file() {
        return or_die(SystemProfile::from_json(&common::read_input(&name)));
    }
    or_die(SystemProfile::by_name(&name))
}

/// Every (tp, concurrency) point that runs, and the Pareto frontier of tokens/s per GPU
/// against tokens/s per user.
fn sweep(
    model: &Transformer,
    p: &SystemProfile,
    base: &Deployment,
    w: &Workload,
) -> Vec<(Deployment, ServeReport)> {
    let mut points = Vec::new();
    for tp in [1u64, 2, 4, 8] {
        let d = Deployment { tp, ..*base };
        let Ok(most) = serve::serve(
            model,
            p,
            &d,
            &Workload {
                concurrency: None,
                ..*w
            },
        ) else {
            continue;
        };
        let mut c = 1u64;
        loop {
            let c_now = c.min(most.max_concurrency);
            if let Ok(r) = serve::serve(
                model,
                p,
                &d,
                &Workload {
                    concurrency: Some(c_now),
                    ..*w
                },
            ) {
                points.push((d, r));
            }
            if c_now == most.max_concurrency {
                break;
            }
            c = c.saturating_mul(2);
        }
    }
    // The frontier: no other point is at least as fast per user and per GPU.
    let mut frontier: Vec<(Deployment, ServeReport)> = points
        .iter()
        .filter(|(_, a)| {
            !points.iter().any(|(_, b)| {
                b.output_tokens_per_second_per_user >= a.output_tokens_per_second_per_user
                    && b.output_tokens_per_second_per_gpu >= a.output_tokens_per_second_per_gpu
                    && (b.output_tokens_per_second_per_user > a.output_tokens_per_second_per_user
                        || b.output_tokens_per_second_per_gpu > a.output_tokens_per_second_per_gpu)
            })
        })
        .cloned()
        .collect();
    frontier.sort_by(|a, b| {
        a.1.output_tokens_per_second_per_user
            .total_cmp(&b.1.output_tokens_per_second_per_user)
    });
    frontier
}

fn write_svg(path: &str, frontier: &[(Deployment, ServeReport)], title: &str) {
    let (w, h, m) = (720.0, 440.0, 60.0);
    let xs: Vec<f64> = frontier
        .iter()
        .map(|p| p.1.output_tokens_per_second_per_user)
        .collect();
    let ys: Vec<f64> = frontier
        .iter()
        .map(|p| p.1.output_tokens_per_second_per_gpu)
        .collect();
    let xmax = xs.iter().cloned().fold(1.0, f64::max) * 1.1;
    let ymax = ys.iter().cloned().fold(1.0, f64::max) * 1.1;
    let px = |x: f64| m + x / xmax * (w - 2.0 * m);
    let py = |y: f64| h - m - y / ymax * (h - 2.0 * m);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{m}\" y=\"24\" font-size=\"14\">{title}</text>\n<line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">output tokens/s per user</text>\n<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">output tokens/s per GPU</text>\n",
        h - m,
        w - m,
        h - m,
        h - m,
        w / 2.0,
        h - 18.0,
        h / 2.0,
        h / 2.0
    );
    let line: Vec<String> = xs
        .iter()
        .zip(&ys)
        .map(|(&x, &y)| format!("{:.1},{:.1}", px(x), py(y)))
        .collect();
    s.push_str(&format!(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>\n",
        line.join(" ")
    ));
    for ((d, r), (&x, &y)) in frontier.iter().zip(xs.iter().zip(&ys)) {
        s.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"#1f77b4\"><title>tp {} × {} sequences: {:.0} tok/s/user, {:.0} tok/s/GPU</title></circle>\n",
            px(x), py(y), d.tp, r.concurrency, x, y
        ));
    }
    for k in 0..=4 {
        let (xv, yv) = (xmax * k as f64 / 4.0, ymax * k as f64 / 4.0);
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.0}</text>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.0}</text>\n",
            px(xv), h - m + 16.0, xv, m - 6.0, py(yv) + 4.0, yv
        ));
    }
    s.push_str("</svg>\n");
    if let Err(e) = std::fs::write(path, s) {
        common::die(&format!("cannot write {path}: {e}"));
    }
}

/// Run the example with the process's command line.
pub fn main() {
    let args: Cli = common::parse();
    let model = match (&args.preset, &args.config) {
        (Some(name), _) => or_die(lmshape::presets::by_name(name)),
        (None, path) => common::load_config(path.as_deref().unwrap_or(DEFAULT_CONFIG)),
    };
    let p = profile(&args);
    let (d, w) = deployment_and_workload(&args);
    let r = or_die(serve::serve(&model, &p, &d, &w));
    let frontier = if args.sweep {
        sweep(&model, &p, &d, &w)
    } else {
        Vec::new()
    };
    if let Some(path) = &args.svg {
        write_svg(
            path,
            &frontier,
            &format!(
                "{} on {}: throughput against interactivity",
                si(or_die(model.total_params()) as f64),
                p.name
            ),
        );
    }
    if args.json {
        print_json(&args, &p, &d, &w, &r, &frontier);
    } else {
        print_text(&args, &model, &p, (&d, &w), &r, &frontier);
    }
}

/// The replica and the workload the flags describe.
fn deployment_and_workload(args: &Cli) -> (Deployment, Workload) {
    let d = Deployment {
        tp: args.tp,
        pp: args.pp,
        ep: args.ep,
        attention_dp: args.attention_dp,
        weights: args.weights,
        kv_cache: args.kv_cache,
        kv_block_tokens: args.kv_block_tokens,
        memory_utilization: args.memory_utilization,
    };
    let w = Workload {
        isl: args.isl,
        osl: args.osl,
        concurrency: if args.max_throughput {
            None
        } else {
            args.concurrency
        },
        prefill_chunk_tokens: args.prefill_chunk,
        batching: if args.static_batching {
            Batching::Static
        } else {
            Batching::Continuous
        },
    };
    (d, w)
}

fn print_json(
    args: &Cli,
    p: &SystemProfile,
    d: &Deployment,
    w: &Workload,
    r: &serve::ServeReport,
    frontier: &[(Deployment, serve::ServeReport)],
) {
    let out = ServeOut {
        record: r.record(d, args.gpu_hour_cost),
        system: SystemRecord {
            name: &p.name,
            gpu: &p.gpu,
            provenance: &p.provenance,
        },
        band_basis: serve::SERVING_BAND_BASIS,
        isl: w.isl,
        osl: w.osl,
        weights: d.weights.to_string(),
        kv_cache: d.kv_cache.to_string(),
        frontier: args.sweep.then(|| {
            frontier
                .iter()
                .map(|(d, r)| r.record(d, args.gpu_hour_cost))
                .collect()
        }),
    };
    // Through a JSON value, so the keys print sorted as every tool prints them.
    let value = serde_json::to_value(&out).unwrap_or_default();
    outln!(
        "{}",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    );
}

/// `serve --json`: the deployment's record as the library serialises it, the machine, the
/// band's basis, the workload and the precisions, and with `--sweep` the frontier's records.
#[derive(serde::Serialize)]
struct ServeOut<'a> {
    #[serde(flatten)]
    record: serve::ServeRecord,
    system: SystemRecord<'a>,
    band_basis: &'static str,
    isl: u64,
    osl: u64,
    weights: String,
    kv_cache: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    frontier: Option<Vec<serve::ServeRecord>>,
}

/// The machine by name, GPU and provenance (not its kernel tables).
#[derive(serde::Serialize)]
struct SystemRecord<'a> {
    name: &'a str,
    gpu: &'a str,
    provenance: &'a lmshape::system::Provenance,
}

fn print_text(
    args: &Cli,
    model: &lmshape::Transformer,
    p: &SystemProfile,
    (d, w): (&Deployment, &Workload),
    r: &serve::ServeReport,
    frontier: &[(Deployment, serve::ServeReport)],
) {
    outln!(
        "{} params on {} ({}): tp {} × pp {} × ep {} × attention-dp {} = {} GPUs per replica; weights {}, KV cache {}",
        si(or_die(model.total_params()) as f64),
        p.name,
        p.gpu,
        d.tp,
        d.pp,
        d.ep,
        d.attention_dp,
        r.gpus,
        d.weights,
        d.kv_cache
    );
    outln!(
        "memory per GPU: weights {}, KV cache room {} — {} sequences of {} + {} tokens at most",
        gib(r.weights_bytes_per_gpu),
        gib(r.kv_cache_bytes_per_gpu),
        r.max_concurrency,
        w.isl,
        w.osl
    );
    let (lo, hi) = r.time_band;
    outln!(
        "{} sequences in flight ({} batching):",
        r.concurrency,
        if args.static_batching {
            "static"
        } else {
            "continuous"
        }
    );
    outln!(
        "  time to first token   {:>9.1} ms  ({:.1}..{:.1})",
        r.ttft_seconds * 1e3,
        r.ttft_seconds * lo * 1e3,
        r.ttft_seconds * hi * 1e3
    );
    outln!(
        "  time per output token {:>9.1} ms  ({:.1}..{:.1}); {:.1} ms between a user's tokens with prefills mixed in",
        r.tpot_seconds * 1e3,
        r.tpot_seconds * lo * 1e3,
        r.tpot_seconds * hi * 1e3,
        r.inter_token_seconds * 1e3
    );
    outln!(
        "  output tokens/s per user {:>8.1}  ({:.1}..{:.1})",
        r.output_tokens_per_second_per_user,
        r.output_tokens_per_second_per_user / hi,
        r.output_tokens_per_second_per_user / lo
    );
    outln!(
        "  output tokens/s per GPU  {:>8.1}  ({:.1}..{:.1}); {:.0} per replica; prefill takes {:.0}% of the time",
        r.output_tokens_per_second_per_gpu,
        r.output_tokens_per_second_per_gpu / hi,
        r.output_tokens_per_second_per_gpu / lo,
        r.output_tokens_per_second_per_replica,
        r.prefill_share * 100.0
    );
    if let Some(c) = args.gpu_hour_cost {
        let (out, input) = r.cost_per_million(c);
        outln!(
            "  at ${c:.2} per GPU-hour: ${out:.3} per million output tokens ({:.3}..{:.3}), ${input:.3} per million input tokens",
            out * lo,
            out * hi
        );
    }
    outln!("  band: {}", serve::SERVING_BAND_BASIS);
    if args.sweep {
        outln!("\nfrontier (tokens/s per GPU against tokens/s per user):");
        outln!(
            "  {:>3} {:>7} {:>14} {:>13} {:>9}",
            "tp",
            "seqs",
            "tok/s/user",
            "tok/s/GPU",
            "TTFT ms"
        );
        for (d, r) in frontier {
            outln!(
                "  {:>3} {:>7} {:>14.1} {:>13.1} {:>9.1}",
                d.tp,
                r.concurrency,
                r.output_tokens_per_second_per_user,
                r.output_tokens_per_second_per_gpu,
                r.ttft_seconds * 1e3
            );
        }
    }
}
