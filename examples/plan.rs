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
//! --memory-fraction F --law kaplan|chinchilla-1|chinchilla-2|chinchilla-3|besiroglu|chinchilla --law-file PATH --kv-heads K | --kv-group G --ffn RULE --cluster selene|jean-zay
//! --software-efficiency F --inter-node-gbps G --table PATH (measured GEMM timings) --top N
//! --embedding-slots never|when-needed --json --report-json --svg PATH --mark H,L,A`
//! (`--help` lists each with its default). `--json` prints the best layout of the top shapes as
//! an array; `--report-json` the whole report (budget, bounds, target, counts, best per shape);
//! `--svg` the decision chart, with `--mark` a shape to compare.

#[macro_use]
mod common;

use clap::{Parser, ValueEnum};
use common::cli::{
    ClusterArgs, FamilyArgs, PrecisionArg, RecomputeArg, SetupArgs, count, fraction, non_negative,
    parse_with_defaults, positive, positive_count, share, usage_error, zero_stage,
};
use common::{MOE_SHAPE_HEADER, die, gib, moe_shape_columns, or_die, si};
use lmshape::ZeroStage;
use lmshape::hardware::{GemmTimer, Missing, TableTimer};
use lmshape::parallel::EmbeddingSlots;
use lmshape::plan::{self, EquivalentOrder, LawChoice, Plan, PlanRequest};
use serde_json::json;

/// When layouts count the embeddings as pipeline slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Slots {
    /// Layers split evenly over the pipeline.
    Never,
    /// BigScience's partition when the layers do not split evenly but L + 2 does.
    WhenNeeded,
}

/// A shape to mark on the chart: `HIDDEN,LAYERS,HEADS`.
fn mark(s: &str) -> Result<(u64, u64, u64), String> {
    let parts: Vec<&str> = s.split(',').collect();
    match parts.as_slice() {
        [h, l, a] => Ok((count(h)?, count(l)?, count(a)?)),
        _ => Err(format!(
            "expected HIDDEN,LAYERS,HEADS such as 14336,70,112, got {s:?}"
        )),
    }
}

/// Plan a training run: budget → scaling-law bounds → target → every valid shape × layout →
/// memory → speed → tokens → predicted loss → ranking (defaults: BigScience's BLOOM case).
#[derive(Parser, Debug)]
#[command(name = "plan", version, long_about = None, after_help = common::cli::GLOSSARY, allow_negative_numbers = true)]
struct Cli {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// GPUs to use.
    #[arg(long, value_name = "N", default_value_t = 384, value_parser = positive_count)]
    gpus: u64,
    /// Weeks of wall-clock.
    #[arg(long, value_name = "W", default_value_t = 18.0, value_parser = positive, conflicts_with = "hours")]
    weeks: f64,
    /// Hours of wall-clock instead of weeks.
    #[arg(long, value_name = "H", value_parser = positive)]
    hours: Option<f64>,
    /// Share of the wall-clock held back for failures and restarts.
    #[arg(long, value_name = "F", default_value_t = 0.1, value_parser = fraction)]
    safety_margin: f64,
    /// MFU assumed to turn the budget into FLOPs for the laws, or `predicted`: the
    /// recommendation's own predicted MFU, planned again until it settles.
    #[arg(long, value_name = "U|predicted", default_value = "0.4", value_parser = mfu)]
    mfu: Mfu,
    #[command(flatten)]
    family: FamilyArgs,
    /// Sequences per step.
    #[arg(long, value_name = "B", default_value_t = 2048, value_parser = positive_count)]
    global_batch: u64,
    /// Train on at least this many tokens (`none` for no floor).
    #[arg(long, value_name = "D", default_value = "350e9", value_parser = token_floor)]
    token_floor: TokenFloor,
    /// At most this many parameters.
    #[arg(long, value_name = "N", value_parser = positive)]
    param_cap: Option<f64>,
    /// Search from this many parameters (with --max-params; in the law's count).
    #[arg(long, value_name = "N", requires = "max_params", value_parser = count)]
    min_params: Option<u64>,
    /// Search up to this many parameters (with --min-params).
    #[arg(long, value_name = "N", requires = "min_params", value_parser = count)]
    max_params: Option<u64>,
    /// Reject shapes with heads larger than this ("heads too large").
    #[arg(long, value_name = "D", default_value_t = 128, value_parser = positive_count)]
    max_head_dim: u64,
    /// Head sizes enumerated [default: 64..256 in steps of 16].
    #[arg(long, value_name = "A,B,..", value_delimiter = ',', value_parser = positive_count)]
    head_dims: Option<Vec<u64>>,
    /// Smallest aspect ratio hidden / layers [default: that of published ≥60B models].
    #[arg(long, value_name = "A", value_parser = non_negative)]
    min_aspect: Option<f64>,
    /// Largest aspect ratio [default: that of published ≥60B models].
    #[arg(long, value_name = "B", value_parser = non_negative)]
    max_aspect: Option<f64>,
    /// Tensor-parallel degrees tried.
    #[arg(long, value_name = "1,2,..", value_delimiter = ',', default_value = "1,2,4,8", value_parser = positive_count)]
    tp_options: Vec<u64>,
    /// Micro-batches tried.
    #[arg(long, value_name = "1,2,..", value_delimiter = ',', default_value = "1,2,4", value_parser = positive_count)]
    micro_batches: Vec<u64>,
    /// Context-parallel degrees tried [default: 1].
    #[arg(long, value_name = "1,2,..", value_delimiter = ',', value_parser = positive_count)]
    cp_options: Vec<u64>,
    /// Virtual stages per pipeline rank tried (above 1: the interleaved schedule) [default: 1].
    #[arg(long, value_name = "1,2,..", value_delimiter = ',', value_parser = positive_count)]
    virtual_stage_options: Vec<u64>,
    /// GEMM precisions tried per layout, the fastest that fits kept (bf16, fp8, mxfp8)
    /// [default: --precision].
    #[arg(long, value_name = "P,..", value_delimiter = ',', value_enum)]
    precisions: Vec<PrecisionArg>,
    /// Accept depths that do not split evenly over the pipeline (DeepSpeed's balanced
    /// partition, some stages one layer more).
    #[arg(long)]
    balanced_pipeline: bool,
    /// Also search mixture-of-experts shapes (fine-grained experts on the dense backbones,
    /// ranked by Krajewski et al. 2024's law).
    #[arg(long)]
    moe: bool,
    /// Routed experts tried with --moe [default: 8,16,32,64,128].
    #[arg(long, value_name = "E,..", value_delimiter = ',', value_parser = positive_count, requires = "moe")]
    moe_experts: Vec<u64>,
    /// Granularities tried with --moe (expert width = FFN width / G, G experts per token)
    /// [default: 1,2,4,8].
    #[arg(long, value_name = "G,..", value_delimiter = ',', value_parser = positive_count, requires = "moe")]
    moe_granularities: Vec<u64>,
    /// Expert-parallel degrees tried with --moe [default: 1,8].
    #[arg(long, value_name = "N,..", value_delimiter = ',', value_parser = positive_count, requires = "moe")]
    ep_options: Vec<u64>,
    /// Activation recomputation of every layout.
    #[arg(long, value_enum, default_value_t = RecomputeArg::Full)]
    recompute: RecomputeArg,
    /// ZeRO stage of every layout (0–3). Without --optimizer, the framework's engine picks the
    /// optimizer for bf16: under megatron-deepspeed or deepspeed, stage 0 is DeepSpeed's
    /// BF16_Optimizer (its own stage-1 sharding, as BLOOM trained), stages 1–3 its ZeRO
    /// optimizer.
    #[arg(long, value_name = "STAGE", default_value = "0", value_parser = zero_stage)]
    zero: ZeroStage,
    /// Sequence parallelism.
    #[arg(long)]
    sequence_parallel: bool,
    /// Embedding pipeline slots.
    #[arg(long, value_enum, default_value_t = Slots::WhenNeeded)]
    embedding_slots: Slots,
    /// Share of the card the device figure may fill (the rest is the margin kept).
    #[arg(long, value_name = "F", default_value_t = 0.9, value_parser = share)]
    memory_fraction: f64,
    #[command(flatten)]
    setup: SetupArgs,
    #[command(flatten)]
    rules: common::cli::ShapeRuleArgs,
    /// A named set of assumptions (every flag still overrides): bloom-2022 (the default:
    /// BigScience's 2022 decision), dense-2026 (Llama-3-style: GQA, SwiGLU, RoPE, vocabulary
    /// 128k, sequence 8192, FlashAttention, Megatron-Core, distributed optimizer, recompute
    /// auto, no token floor, the Besiroglu refit) or moe-2026 (the same with
    /// mixture-of-experts variants).
    #[arg(long, value_name = "NAME", default_value = "bloom-2022")]
    scenario: String,
    /// The law that sets the target and predicts the loss: kaplan (as BigScience's 2021–22
    /// planning used it), chinchilla-1, chinchilla-2, chinchilla-3 (Hoffmann et al. 2022's
    /// approaches), besiroglu (their 2024 refit of approach 3), or chinchilla, an alias of
    /// besiroglu (the one Chinchilla-form law that agrees with approaches 1 and 2 and has a loss
    /// to rank by).
    #[arg(long, value_name = "LAW", default_value = "kaplan", value_parser = common::cli::law)]
    law: LawChoice,
    /// How the shapes the prediction cannot tell from the best (≈) are ordered among
    /// themselves, the first becoming the recommendation: loss (the predicted loss), robust
    /// (the loss at the slow end of the speed band), speed (TFLOP/s per GPU, BigScience's
    /// criterion among its equally good finalists), time (days to the token floor, so also
    /// the fewest GPU-hours; needs a floor) or margin (memory margin on the card).
    #[arg(long, value_name = "ORDER", default_value = "loss", value_parser = equivalent_order)]
    order_equivalents: EquivalentOrder,
    /// A law fitted to your runs (`fit_scaling_law --out LAW.json`), instead of --law.
    #[arg(long, value_name = "LAW.json", conflicts_with = "law")]
    law_file: Option<String>,
    /// Measured GEMM timings (JSON, as gemm_probe writes) instead of the analytical model.
    #[arg(long, value_name = "PATH")]
    table: Option<String>,
    /// Shapes shown (and printed by --json).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = count)]
    top: u64,
    /// Print the ranked candidates as JSON.
    #[arg(long, conflicts_with = "report_json")]
    json: bool,
    /// Print the whole report as JSON.
    #[arg(long)]
    report_json: bool,
    /// Output tokens the model will serve over its life: each shape the prediction cannot tell
    /// from the best is also served on the same machine, and those shapes are ranked by
    /// training plus serving GPU-hours.
    #[arg(long, value_name = "N", value_parser = positive)]
    serve_tokens: Option<f64>,
    /// Prompt tokens per served request (with --serve-tokens).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = positive_count)]
    serve_isl: u64,
    /// Output tokens per served request (with --serve-tokens).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = positive_count)]
    serve_osl: u64,
    /// The serving SLO: output tokens per second each user sees, at least (with --serve-tokens).
    #[arg(long, value_name = "R", default_value_t = 20.0, value_parser = positive)]
    serve_min_tokens_per_user: f64,
    /// Draw the decision chart to this SVG file.
    #[arg(long, value_name = "PATH")]
    svg: Option<String>,
    /// A shape to compare on the chart: HIDDEN,LAYERS,HEADS (e.g. BigScience's 14336,70,112).
    #[arg(long, value_name = "H,L,A", value_parser = mark)]
    mark: Option<(u64, u64, u64)>,
}

fn equivalent_order(s: &str) -> Result<EquivalentOrder, String> {
    s.parse().map_err(|e: lmshape::Error| e.to_string())
}

/// A token floor, or none.
#[derive(Debug, Clone, Copy)]
struct TokenFloor(Option<f64>);

fn token_floor(s: &str) -> Result<TokenFloor, String> {
    match s {
        "none" => Ok(TokenFloor(None)),
        other => positive(other).map(|x| TokenFloor(Some(x))),
    }
}

/// What the recommendation line adds to tp × pp × dp: embedding slots, context parallelism,
/// the interleaved schedule and the GEMM precision, when not the defaults.
fn layout_extras(c: &lmshape::plan::Candidate) -> String {
    let mut out = String::new();
    if c.layout.embedding_pipeline_slots() {
        out.push_str(" (embedding slots)");
    }
    if c.layout.cp() > 1 {
        out.push_str(&format!(", cp {}", c.layout.cp()));
    }
    if c.layout.virtual_stages() > 1 {
        out.push_str(&format!(", {} virtual stages", c.layout.virtual_stages()));
    }
    if c.precision != lmshape::memory::GemmPrecision::Bf16 {
        out.push_str(&format!(", {} GEMMs", c.precision));
    }
    out
}

/// The budget's MFU: a share, or the pick's predicted one.
#[derive(Debug, Clone, Copy)]
enum Mfu {
    Assumed(f64),
    Predicted,
}

fn mfu(s: &str) -> Result<Mfu, String> {
    if s == "predicted" {
        return Ok(Mfu::Predicted);
    }
    share(s).map(Mfu::Assumed)
}

/// Run the example with the process's command line.
pub fn main() {
    let scenario = common::scenario::named::<Cli>();
    let args: Cli = parse_with_defaults(scenario.defaults);
    let args = Cli {
        moe: args.moe || scenario.name == "moe-2026",
        ..args
    };
    outln_scenario(&args, scenario);
    let machine = args.cluster.machine(args.setup.framework);
    let mut req = request(&args, &machine);
    let table = args.table.as_deref().map(|path| {
        let t = or_die(TableTimer::from_json(
            &common::read_input(path),
            Missing::ScaleNearest,
        ));
        or_die(t.check_gpu(&req.cluster().gpu));
        t
    });
    let timer: &dyn GemmTimer = match &table {
        Some(t) => t,
        None => machine.timer.as_ref(),
    };
    let started = std::time::Instant::now();
    let (result, mfus) = match args.mfu {
        Mfu::Assumed(_) => (or_die(plan::plan(&req, timer)), Vec::new()),
        Mfu::Predicted => or_die(plan::plan_with_predicted_mfu(&req, timer)),
    };
    if let Some(&last) = mfus.last() {
        req = or_die(req.to_builder().assumed_mfu(last).build());
    }
    let seconds = started.elapsed().as_secs_f64();

    if let Some(path) = &args.svg {
        if let Err(e) = write_svg(path, &result, args.mark) {
            die(&format!("cannot write {path}: {e}"));
        }
    }
    let top = usize::try_from(args.top).unwrap_or(usize::MAX);
    if args.report_json || args.json {
        let run = Run {
            scenario: scenario.name,
            mfus: &mfus,
            seconds,
            top,
        };
        print_json(&args, &req, &machine, &result, &run);
        return;
    }
    if mfus.len() > 1 {
        let rounds: Vec<String> = mfus.iter().map(|m| format!("{:.1}%", m * 100.0)).collect();
        outln!(
            "== MFU: the budget's assumed MFU replaced by the pick's predicted one, planned again until it settled: {}",
            rounds.join(" → ")
        );
    }
    report(&req, &result, timer, seconds, top);
    if let Some(n) = args.serve_tokens {
        report_serving(&req, &result, &args, n);
    }
}

/// The planner's request from the flags on `machine`.
fn request(args: &Cli, machine: &common::cli::Machine) -> PlanRequest {
    let base = PlanRequest::bloom_reference();
    let mut req = base
        .to_builder()
        .cluster(machine.cluster.clone())
        .gpus(args.gpus)
        .hours(args.hours.unwrap_or(args.weeks * 7.0 * 24.0))
        .safety_margin(args.safety_margin)
        .arch(or_die(args.family.architecture()))
        .vocab_size(args.family.vocab)
        .seq_len(args.family.seq_len)
        .global_batch(args.global_batch)
        .token_floor(args.token_floor.0)
        .param_cap(args.param_cap)
        .max_head_dim(args.max_head_dim);
    if let Mfu::Assumed(u) = args.mfu {
        req = req.assumed_mfu(u);
    }
    if let (Some(lo), Some(hi)) = (args.min_params, args.max_params) {
        if lo > hi {
            usage_error::<Cli>(format!("--min-params {lo} is above --max-params {hi}"));
        }
        req = req.param_range(Some((lo, hi)));
    }
    if let Some(h) = &args.head_dims {
        req = req.head_dims(h.clone());
    }
    let aspect = (
        args.min_aspect.unwrap_or(base.aspect_ratio_range().0),
        args.max_aspect.unwrap_or(base.aspect_ratio_range().1),
    );
    if aspect.0 > aspect.1 {
        usage_error::<Cli>(format!(
            "the aspect window is empty: --min-aspect {} is above --max-aspect {}",
            aspect.0, aspect.1
        ));
    }
    if args.moe {
        let mut search = lmshape::plan::MoeSearch::default();
        if !args.moe_experts.is_empty() {
            search.num_experts = args.moe_experts.clone();
        }
        if !args.moe_granularities.is_empty() {
            search.granularities = args.moe_granularities.clone();
        }
        if !args.ep_options.is_empty() {
            search.ep_options = args.ep_options.clone();
        }
        req = req.moe(Some(search));
    }
    let mut step_options = base.step_options();
    step_options.memory = args.setup.memory_options(
        lmshape::MemoryOptions {
            optimizer: None,
            ..step_options.memory
        },
        args.zero,
    );
    let req = req
        .aspect_ratio_range(aspect)
        .tp_options(args.tp_options.clone())
        .micro_batches(args.micro_batches.clone())
        .cp_options(args.cp_options.clone())
        .balanced_pipeline(args.balanced_pipeline)
        .virtual_stage_options(args.virtual_stage_options.clone())
        .precisions(args.precisions.iter().map(|&p| p.into()).collect())
        .recompute(args.recompute.into())
        .recompute_auto(args.recompute == RecomputeArg::Auto)
        .zero(args.zero)
        .sequence_parallel(args.sequence_parallel)
        .embedding_slots(match args.embedding_slots {
            Slots::Never => EmbeddingSlots::Never,
            Slots::WhenNeeded => EmbeddingSlots::WhenLayersDoNotDivide,
        })
        .memory_fraction(args.memory_fraction)
        .framework(args.setup.framework)
        .step_options(step_options)
        .kv_heads(args.rules.kv_rule())
        .ffn(args.rules.ffn)
        .law(
            args.law_file
                .as_deref()
                .map_or(args.law, common::cli::law_file),
        )
        .law_samples(
            args.law_file
                .as_deref()
                .map_or_else(Vec::new, common::cli::law_file_samples),
        )
        .equivalent_order(args.order_equivalents);
    or_die(req.build())
}

/// What a run of the planner adds to its JSON: the scenario, the MFU rounds, the time taken
/// and how many shapes to show.
struct Run<'a> {
    scenario: &'static str,
    mfus: &'a [f64],
    seconds: f64,
    top: usize,
}

/// `plan --report-json`: the request as it ran (its machine by name), the budget, the
/// laws' bounds, the target, what was searched and rejected, and the best layout of each top
/// shape as the library serialises it.
#[derive(serde::Serialize)]
struct ReportRecord<'a> {
    scenario: &'a str,
    equivalent_order: EquivalentOrder,
    mfu_rounds: &'a [f64],
    request: serde_json::Value,
    budget: &'a plan::PlanBudget,
    bounds: &'a plan::LawBounds,
    target_params: f64,
    target_binding: lmshape::scaling::Binding,
    param_range: (u64, u64),
    shapes: u64,
    evaluated: u64,
    seconds: f64,
    rejection_counts: &'a [(plan::RejectReason, u64)],
    rejected_shapes: usize,
    top: Vec<plan::Candidate>,
}

/// `--report-json` (the whole plan) or `--json` (the best layout of each top shape).
fn print_json(
    args: &Cli,
    req: &PlanRequest,
    machine: &common::cli::Machine,
    result: &Plan,
    run: &Run<'_>,
) {
    if args.report_json {
        let mut request = serde_json::to_value(req).unwrap_or_default();
        // The machine by name and provenance, not its whole kernel tables.
        request["cluster"]["system"] = machine.system_json();
        let record = ReportRecord {
            scenario: run.scenario,
            equivalent_order: req.equivalent_order(),
            mfu_rounds: run.mfus,
            request,
            budget: &result.budget,
            bounds: &result.bounds,
            target_params: result.target_params,
            target_binding: result.target_binding,
            param_range: result.param_range,
            shapes: result.shapes,
            evaluated: result.evaluated,
            seconds: run.seconds,
            rejection_counts: &result.rejection_counts,
            rejected_shapes: result.rejected_shapes.len(),
            top: result.best_per_shape().into_iter().take(run.top).collect(),
        };
        // Through a JSON value, so the keys print sorted as every tool prints them.
        let value = serde_json::to_value(&record).unwrap_or_default();
        outln!("{}", serde_json::to_string_pretty(&value).unwrap());
    } else {
        // The best layout of each of the top shapes, as the table shows them.
        let moe = result.moe.as_ref().map(|m| m.best_per_shape());
        let out: Vec<_> = result
            .best_per_shape()
            .iter()
            .take(run.top)
            .chain(moe.iter().flatten().take(run.top))
            .map(|c| {
                let mut v = serde_json::to_value(c.record()).unwrap_or_default();
                v["scenario"] = json!(run.scenario);
                v["equivalent_order"] = json!(req.equivalent_order());
                v
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&out).unwrap());
    }
}

/// A shape's cheapest way to serve within the SLO on the request's machine: over tp 1–8, the
/// most sequences whose per-user speed still meets it (more sequences never speed a user
/// up), and the output tokens per second per GPU there.
fn best_serving(
    model: &lmshape::Transformer,
    profile: &lmshape::system::SystemProfile,
    w: &lmshape::serve::Workload,
    slo: f64,
) -> Option<(lmshape::serve::Deployment, lmshape::serve::ServeReport)> {
    use lmshape::serve::{self, Deployment, Workload};
    let mut best: Option<(Deployment, serve::ServeReport)> = None;
    for tp in [1u64, 2, 4, 8] {
        let d = Deployment {
            tp,
            ..Deployment::default()
        };
        let at = |c: u64| {
            serve::serve(
                model,
                profile,
                &d,
                &Workload {
                    concurrency: Some(c),
                    ..*w
                },
            )
            .ok()
        };
        let Some(most) = serve::serve(model, profile, &d, w).ok() else {
            continue;
        };
        let (mut lo, mut hi) = (1u64, most.max_concurrency);
        if at(lo).is_none_or(|r| r.output_tokens_per_second_per_user < slo) {
            continue;
        }
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            match at(mid) {
                Some(r) if r.output_tokens_per_second_per_user >= slo => lo = mid,
                _ => hi = mid - 1,
            }
        }
        if let Some(r) = at(lo) {
            if best.is_none_or(|(_, b)| {
                r.output_tokens_per_second_per_gpu > b.output_tokens_per_second_per_gpu
            }) {
                best = Some((d, r));
            }
        }
    }
    best
}

/// Training plus serving: the shapes equivalent to the best, each served at its cheapest
/// deployment within the SLO, ranked by total GPU-hours; and Sardana et al.'s analytic
/// inference-aware size beside.
fn report_serving(req: &PlanRequest, p: &Plan, args: &Cli, serve_tokens: f64) {
    let Some(profile) = req.cluster().system.as_deref() else {
        common::die(
            "--serve-tokens times serving from a measured machine profile; this machine has none (--system analytical)",
        )
    };
    let w = lmshape::serve::Workload {
        isl: args.serve_isl,
        osl: args.serve_osl,
        ..lmshape::serve::Workload::default()
    };
    let slo = args.serve_min_tokens_per_user;
    let train_gpu_hours = p.budget.gpu_hours;
    let mut rows: Vec<(
        f64,
        lmshape::plan::Candidate,
        lmshape::serve::Deployment,
        lmshape::serve::ServeReport,
    )> = p
        .best_per_shape()
        .into_iter()
        .filter(|c| c.equivalent_to_best)
        .take(200)
        .filter_map(|c| {
            let (d, r) = best_serving(&c.shape.model, profile, &w, slo)?;
            let serve_gpu_hours = serve_tokens / r.output_tokens_per_second_per_gpu / 3600.0;
            Some((serve_gpu_hours, c, d, r))
        })
        .collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    outln!(
        "\n== training plus serving {} output tokens ({} in / {} out per request, at least {slo} tokens/s per user) on {}",
        si(serve_tokens),
        w.isl,
        w.osl,
        profile.name
    );
    if rows.is_empty() {
        outln!("  no shape equivalent to the best meets the SLO on one to eight GPUs per replica");
        return;
    }
    outln!(
        "  {:>6} {:>6} {:>9} {:>3} {:>6} {:>11} {:>11} {:>13} {:>13}",
        "layers",
        "hidden",
        "params",
        "tp",
        "seqs",
        "tok/s/GPU",
        "tok/s/user",
        "serve GPU-h",
        "total GPU-h"
    );
    for (h, c, d, r) in rows.iter().take(10) {
        outln!(
            "  {:>6} {:>6} {:>9} {:>3} {:>6} {:>11.0} {:>11.1} {:>13} {:>13}",
            c.shape.model.num_layers(),
            c.shape.model.hidden_size(),
            si(c.shape.params as f64),
            d.tp,
            r.concurrency,
            r.output_tokens_per_second_per_gpu,
            r.output_tokens_per_second_per_user,
            si(*h),
            si(train_gpu_hours + h)
        );
    }
    let (h, c, _, _) = &rows[0];
    let pick = p.best().map_or(0, |b| b.shape.params);
    outln!(
        "  cheapest in total: {} params ({} GPU-hours of serving); the loss-ranked pick has {} params",
        si(c.shape.params as f64),
        si(*h),
        si(pick as f64)
    );
    if let Some(law) = req.law().parametric() {
        match law.inference_optimal(c.predicted_loss, serve_tokens) {
            Ok(i) => outln!(
                "  Sardana et al. 2023 for the same loss and {} inference tokens: {} params on {} training tokens — the analytic answer counts 2N FLOPs per served token at one utilisation; the table prices each shape's serving on this machine, where width, kv heads and the KV cache change the speed (tile and wave effects, batching limits)",
                si(serve_tokens),
                si(i.params),
                si(i.tokens)
            ),
            Err(e) => outln!("  Sardana et al. 2023: {e}"),
        }
    } else {
        outln!(
            "  (Sardana et al. 2023's sizing needs a Chinchilla-form law; Kaplan's has another form)"
        );
    }
}

/// The scenario's assumptions as the flags leave them, printed before anything else (text
/// output only).
fn outln_scenario(args: &Cli, scenario: &common::scenario::Scenario) {
    if args.json || args.report_json {
        return;
    }
    outln!("== scenario {}: {}", scenario.name, scenario.about);
    outln!(
        "   in effect: arch {}, vocabulary {}, sequence {}, kv heads {}, FFN {}, {}{}, {} under {}, ZeRO {}, recompute {}, law {}, token floor {}{}",
        args.family.arch,
        args.family.vocab,
        args.family.seq_len,
        match args.rules.kv_rule() {
            lmshape::search::KvHeads::MultiHead => "= heads".to_string(),
            lmshape::search::KvHeads::GroupSize(g) => format!("heads / {g}"),
            lmshape::search::KvHeads::Fixed(k) => k.to_string(),
        },
        args.rules
            .ffn
            .map_or("the architecture's".to_string(), ffn_words),
        if args.setup.flash {
            "FlashAttention"
        } else {
            "standard attention"
        },
        if args.setup.no_dropout {
            ", no dropout"
        } else {
            ", dropout"
        },
        args.setup
            .optimizer
            .map_or("the engine's optimizer".to_string(), |o| format!(
                "{o} optimizer"
            )),
        args.setup.framework,
        args.zero.number(),
        clap::ValueEnum::to_possible_value(&args.recompute)
            .map_or_else(String::new, |v| v.get_name().to_string()),
        args.law_file
            .clone()
            .unwrap_or_else(|| args.law.to_string()),
        args.token_floor.0.map_or("none".to_string(), si),
        if args.moe {
            ", mixture-of-experts variants"
        } else {
            ""
        }
    );
}

/// The architecture of a shape in words: positions, MLP and its width, key/value heads.
fn architecture_words(m: &lmshape::Transformer) -> String {
    use lmshape::{MlpKind, PositionKind};
    let a = m.arch();
    let positions = match a.position {
        PositionKind::Learned { .. } => "learned positions",
        PositionKind::Rotary => "RoPE",
        PositionKind::Alibi => "ALiBi",
        PositionKind::None => "no positions",
    };
    let mlp = match a.mlp {
        MlpKind::Standard => "MLP",
        MlpKind::Gated => "gated MLP",
    };
    let kv = if m.num_kv_heads() == m.num_heads() {
        "multi-head attention".to_string()
    } else {
        format!("{} kv heads", m.num_kv_heads())
    };
    format!("{positions}, {mlp} of {}, {kv}", m.ffn_size())
}

/// An FFN rule in words.
fn ffn_words(f: lmshape::search::FfnRule) -> String {
    match f {
        lmshape::search::FfnRule::Fixed(w) => format!("width {w}"),
        lmshape::search::FfnRule::Ratio { num, den, multiple } => {
            format!("{}·d rounded up to {multiple}", num as f64 / den as f64)
        }
    }
}

fn report(req: &PlanRequest, p: &Plan, timer: &dyn GemmTimer, seconds: f64, top: usize) {
    report_budget(req, p);
    report_target(req, p, timer, seconds);
    report_table(req, p, top);
    report_rejections(p);
    report_recommendation(req, p);
    if let Some(m) = &p.moe {
        report_moe(req, m, top);
    }
}

/// The budget and the scaling laws' compute-optimal bounds.
fn report_budget(req: &PlanRequest, p: &Plan) {
    let b = &p.budget;
    outln!("== budget");
    outln!(
        "{} × {} for {:.0} h ({:.1} weeks) = {} GPU-hours; {:.0}% held back: {} GPU-hours ({:.0} h) to train",
        req.gpus(),
        req.cluster().gpu.name,
        req.hours(),
        req.hours() / 168.0,
        si(b.gpu_hours),
        req.safety_margin() * 100.0,
        si(b.usable_gpu_hours),
        b.usable_hours
    );
    outln!(
        "at an assumed {:.0}% MFU: {:.3e} training FLOPs ({:.0} PF-days)",
        req.assumed_mfu() * 100.0,
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
}

/// The size target, the search window and what was evaluated.
fn report_target(req: &PlanRequest, p: &Plan, timer: &dyn GemmTimer, seconds: f64) {
    let b = &p.budget;
    outln!("\n== target");
    let basis = match req.law().size_basis() {
        lmshape::flops::ParamBasis::NonEmbedding => "non-embedding",
        lmshape::flops::ParamBasis::Total => "total",
    };
    let on_curve = |n: f64| b.compute_flops / (lmshape::scaling::FLOPS_PER_PARAM_TOKEN * n);
    outln!(
        "{} law, token floor {}: target {} {basis} params, trained on C/6N = {} tokens ({})",
        req.law(),
        req.token_floor().map_or("none".into(), si),
        si(p.target_params),
        si(on_curve(p.target_params)),
        p.target_binding
    );
    if p.target_binding != lmshape::scaling::Binding::None {
        let optimal = match req.law() {
            LawChoice::Kaplan => p.bounds.kaplan.params,
            LawChoice::Chinchilla => p.bounds.chinchilla_approach3.params,
            LawChoice::Besiroglu => p.bounds.besiroglu.params,
            LawChoice::ChinchillaApproach1 => p.bounds.chinchilla_approach1.params,
            LawChoice::ChinchillaApproach2 => p.bounds.chinchilla_approach2.params,
            LawChoice::Fitted(_) => p.target_params,
        };
        outln!(
            "  (the law's optimum, {} params, would train on C/6N = {} tokens)",
            si(optimal),
            si(on_curve(optimal))
        );
    }
    outln!(
        "searching {} .. {} {basis} params",
        si(p.param_range.0 as f64),
        si(p.param_range.1 as f64)
    );
    outln!(
        "shapes: aspect ratio {:.0}..{:.0} (published large models), head dims ≤ {} accepted; layouts: tp {} (≤ {} per node), every pp, micro-batch {}, recompute {}, ZeRO {}, {} optimizer under {}",
        req.aspect_ratio_range().0,
        req.aspect_ratio_range().1,
        req.max_head_dim(),
        req.tp_options()
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        req.cluster().gpus_per_node,
        req.micro_batches()
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        if req.recompute_auto() {
            "auto (the least that fits)".to_string()
        } else {
            req.recompute().to_string()
        },
        req.zero().number(),
        req.step_options()
            .memory
            .optimizer
            .unwrap_or(req.framework().default_optimizer()),
        req.framework(),
    );
    outln!(
        "evaluated {} (shape, layout) pairs over {} shapes in {:.3} s with {}; {} feasible",
        p.evaluated,
        p.shapes,
        seconds,
        timer.describe(),
        p.candidates.len()
    );
}

/// The best layout of each of the top shapes.
fn report_table(req: &PlanRequest, p: &Plan, top: usize) {
    let best = p.best_per_shape();
    if best.is_empty() {
        outln!("\n== no feasible shape: the rejection reasons follow");
    } else {
        outln!(
            "\n== top {} of {} shapes (best layout of each)",
            top.min(best.len()),
            best.len()
        );
        outln!(
            "{:>3} {:>6} {:>6} {:>5} {:>4} {:>3} {:>4} {:>5} {:>3} {:>9} {:>13} {:>11} {:>6} {:>9} {:>8}",
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
            "device/GPU",
            "TFLOP/s/GPU",
            "MFU %",
            "tokens",
            "loss"
        );
    }
    for (i, c) in best.iter().take(top).enumerate() {
        outln!(
            "{:>3} {:>6} {:>6} {:>5} {:>4} {:>3} {:>4} {:>5} {:>3} {:>9} {:>13} {:>11.1} {:>6.1} {:>9} {:>8.4}{}",
            i + 1,
            c.shape.model.num_layers(),
            c.shape.model.hidden_size(),
            c.shape.model.num_heads(),
            c.shape.model.head_dim(),
            c.layout.tp(),
            c.layout.pp(),
            c.layout.dp(),
            c.layout.micro_batch(),
            si(c.shape.params as f64),
            gib(c.memory_device_bytes_per_gpu),
            c.step.tflops_per_gpu,
            c.step.mfu * 100.0,
            si(c.tokens),
            c.predicted_loss,
            if c.equivalent_to_best { " ≈" } else { "" }
        );
    }
    if best.is_empty() {
        return;
    }
    let equivalent = best.iter().filter(|c| c.equivalent_to_best).count();
    outln!(
        "  ≈: {equivalent} of the {} shapes are equivalent to the {} — their loss at the fast end of their speed band is no worse than the {}'s at the slow end{}, so the prediction cannot tell them apart (loss in nats per token)",
        best.len(),
        if req.equivalent_order() == EquivalentOrder::Loss {
            "first"
        } else {
            "best by loss"
        },
        if req.equivalent_order() == EquivalentOrder::Loss {
            "first"
        } else {
            "best"
        },
        match req.law_samples().len() {
            0 => String::new(),
            n => format!(
                ", or fewer than {:.0}% of the law's {n} bootstrap refits rank them below it",
                lmshape::plan::LAW_RESOLUTION_AGREEMENT * 100.0
            ),
        }
    );
    if let Some(words) = order_words(req.equivalent_order()) {
        outln!("  the ≈ shapes are ordered among themselves by {words} (--order-equivalents)");
    }
}

/// What `order` ranks the equivalent shapes by, in words (`None` for the loss order).
fn order_words(order: EquivalentOrder) -> Option<&'static str> {
    match order {
        EquivalentOrder::Loss => None,
        EquivalentOrder::Robust => {
            Some("their loss at the slow end of the speed band, lowest first")
        }
        EquivalentOrder::Speed => Some("TFLOP/s per GPU, highest first"),
        EquivalentOrder::Time => {
            Some("days to the token floor, fewest first (also the fewest GPU-hours)")
        }
        EquivalentOrder::Margin => Some("memory margin on the card, widest first"),
    }
}

/// Rejected pairs by reason.
fn report_rejections(p: &Plan) {
    outln!("\n== rejected (shape, layout) pairs by reason");
    for (reason, n) in &p.rejection_counts {
        outln!("  {:<36}{n:>10}", reason.to_string());
    }
    if !p.invalid_layouts.is_empty() {
        outln!(
            "  layouts no shape can use: {} (e.g. {}: {})",
            p.invalid_layouts.len(),
            p.invalid_layouts[0].layout,
            p.invalid_layouts[0].reason
        );
    }
    outln!(
        "  shapes with no feasible layout: {}",
        p.rejected_shapes.len()
    );
}

/// The recommendation and its speed band.
fn report_recommendation(req: &PlanRequest, p: &Plan) {
    match p.best() {
        Some(c) => outln!(
            "\n== recommendation: {} — {} layers × {} hidden, {} heads of {} ({} params) on tp {} × pp {} × dp {}, micro-batch {}{}: {:.1} TFLOP/s per GPU, {} tokens in {:.0} days (floor reached after {:.0} days); memory per GPU {} allocated, {} on the device under {}: {} on the {} GiB card, margin {}",
            architecture_words(&c.shape.model),
            c.shape.model.num_layers(),
            c.shape.model.hidden_size(),
            c.shape.model.num_heads(),
            c.shape.model.head_dim(),
            si(c.shape.params as f64),
            c.layout.tp(),
            c.layout.pp(),
            c.layout.dp(),
            c.layout.micro_batch(),
            layout_extras(c),
            c.step.tflops_per_gpu,
            si(c.tokens),
            c.days,
            c.days_to_token_floor.unwrap_or(c.days),
            gib(c.memory_bytes_per_gpu),
            gib(c.memory_device_bytes_per_gpu),
            req.framework(),
            c.verdict,
            req.cluster().gpu.memory_bytes >> 30,
            gib(c.memory_margin_bytes.unsigned_abs())
        ),
        None => outln!("\n== no feasible candidate: see the rejection reasons above"),
    }
    if let Some(c) = p.best() {
        let at = |step: f64| c.step.step_seconds / step;
        outln!(
            "   speed band: {:.1}..{:.1} TFLOP/s per GPU, {}..{} tokens ({})",
            c.step.tflops_per_gpu * at(c.step.step_seconds_high),
            c.step.tflops_per_gpu * at(c.step.step_seconds_low),
            si(c.tokens * at(c.step.step_seconds_high)),
            si(c.tokens * at(c.step.step_seconds_low)),
            match &req.cluster().system {
                Some(s) => s.band_basis(),
                None => "unvalidated analytical model: a wide default band".into(),
            }
        );
    }
}

/// The mixture-of-experts section: each granularity's target, the best shapes and the pick.
fn report_moe(req: &PlanRequest, m: &lmshape::plan::MoePlan, top: usize) {
    outln!(
        "\n== mixture of experts (Krajewski et al. 2024's law: losses comparable among these only)"
    );
    outln!(
        "  fine-grained experts on the {} best dense shapes (the same active size and compute per token); the law's own optimum:",
        m.backbones
    );
    for (g, target, binding) in &m.targets {
        outln!(
            "  granularity {g}: {} active non-embedding params ({binding})",
            si(*target)
        );
    }
    let best = m.best_per_shape();
    outln!(
        "evaluated {} (shape, layout) pairs over {} mixture-of-experts shapes; {} feasible",
        m.evaluated,
        m.shapes,
        m.candidates.len()
    );
    if best.is_empty() {
        let reasons: Vec<String> = m
            .rejection_counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{r}: {n}"))
            .collect();
        outln!(
            "  no feasible mixture-of-experts shape ({})",
            reasons.join(", ")
        );
        return;
    }
    outln!(
        "{:>3} {MOE_SHAPE_HEADER} {:>3} {:>3} {:>4} {:>5} {:>9} {:>9} {:>13} {:>11} {:>9} {:>8}",
        "#",
        "tp",
        "ep",
        "pp",
        "dp",
        "total",
        "active",
        "device/GPU",
        "TFLOP/s/GPU",
        "tokens",
        "loss"
    );
    for (i, c) in best.iter().take(top).enumerate() {
        let Some(shape) = moe_shape_columns(&c.shape.model) else {
            continue;
        };
        outln!(
            "{:>3} {shape} {:>3} {:>3} {:>4} {:>5} {:>9} {:>9} {:>13} {:>11.1} {:>9} {:>8.4}",
            i + 1,
            c.layout.tp(),
            c.layout.ep(),
            c.layout.pp(),
            c.layout.dp(),
            si(c.shape.params as f64),
            si(c.active_params as f64),
            gib(c.memory_device_bytes_per_gpu),
            c.step.tflops_per_gpu,
            si(c.tokens),
            c.predicted_loss
        );
    }
    if let Some((c, e)) = best
        .first()
        .and_then(|c| c.shape.model.moe().map(|e| (c, e)))
    {
        outln!(
            "\n== mixture-of-experts pick: {} layers × {} hidden, {} experts of {} ({} routed + {} shared per token): {} total, {} active params, on tp {} × ep {} × pp {} × dp {}: {:.1} TFLOP/s per GPU, {} tokens in {:.0} days; {} on the device per GPU under {}: {}",
            c.shape.model.num_layers(),
            c.shape.model.hidden_size(),
            e.num_experts,
            e.expert_ffn_size,
            e.top_k,
            e.num_shared_experts,
            si(c.shape.params as f64),
            si(c.active_params as f64),
            c.layout.tp(),
            c.layout.ep(),
            c.layout.pp(),
            c.layout.dp(),
            c.step.tflops_per_gpu,
            si(c.tokens),
            c.days,
            gib(c.memory_device_bytes_per_gpu),
            req.framework(),
            c.verdict
        );
    }
}

/// Predicted loss against size, feasible candidates (best layout per shape), the
/// recommendation marked.
/// The decision chart: left, predicted loss against size for the best layout of each shape,
/// coloured by predicted TFLOP/s per GPU, with the recommendation, the best shape of each
/// hidden size and an optional marked shape; right, predicted TFLOP/s per GPU against hidden
/// size, where the steps of tile and wave quantization show.
fn write_svg(
    path: &str,
    p: &Plan,
    mark: Option<(u64, u64, u64)>,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let shapes = p.best_per_shape();
    let root = SVGBackend::new(path, (1400, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(800);
    let (right, bar) = right.split_horizontally(520);
    let span = |xs: &mut dyn Iterator<Item = f64>| {
        xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        })
    };
    let (x0, x1) = span(&mut shapes.iter().map(|c| c.shape.params as f64 / 1e9));
    let (y0, y1) = span(&mut shapes.iter().map(|c| c.predicted_loss));
    let (t0, t1) = span(&mut shapes.iter().map(|c| c.step.tflops_per_gpu));
    let (h0, h1) = span(&mut shapes.iter().map(|c| c.shape.model.hidden_size() as f64));
    if shapes.is_empty() {
        root.draw(&Text::new(
            "no feasible candidate: see the rejection reasons in the report",
            (40, 40),
            ("sans-serif", 20),
        ))?;
        root.present()?;
        return Ok(());
    }
    let marked = mark.and_then(|(h, l, a)| {
        shapes.iter().find(|c| {
            (
                c.shape.model.hidden_size(),
                c.shape.model.num_layers(),
                c.shape.model.num_heads(),
            ) == (h, l, a)
        })
    });
    let panel = Panel {
        shapes: &shapes,
        best: p.best(),
        marked,
        speed: (t0, t1),
    };
    draw_loss_panel(&left, &panel, pad(x0, x1), pad(y0, y1))?;
    draw_speed_panel(&right, &panel, pad(h0, h1))?;
    draw_colour_bar(&bar, (t0, t1))?;
    root.present()?;
    Ok(())
}

/// Slow (blue) to fast (red) over the speed range `(t0, t1)`.
fn speed_colour(t: f64, (t0, t1): (f64, f64)) -> plotters::style::HSLColor {
    let f = if t1 > t0 { (t - t0) / (t1 - t0) } else { 1.0 };
    plotters::style::HSLColor(0.66 * (1.0 - f), 0.8, 0.45)
}

/// A range widened by 5% on each side.
fn pad(a: f64, b: f64) -> (f64, f64) {
    let d = (b - a).abs().max(1e-9) * 0.05;
    (a - d, b + d)
}

/// What the chart's panels draw: the feasible shapes (best layout each), the recommendation,
/// the shape `--mark` names, and the speed range the colours span.
struct Panel<'a> {
    shapes: &'a [lmshape::plan::Candidate],
    best: Option<&'a lmshape::plan::Candidate>,
    marked: Option<&'a lmshape::plan::Candidate>,
    speed: (f64, f64),
}

type Area<'a> =
    plotters::drawing::DrawingArea<plotters::prelude::SVGBackend<'a>, plotters::coord::Shift>;

/// Left panel: predicted loss against parameters, coloured by speed.
fn draw_loss_panel(
    left: &Area<'_>,
    panel: &Panel<'_>,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let (shapes, (t0, t1)) = (panel.shapes, panel.speed);
    let colour = |t: f64| speed_colour(t, panel.speed);
    let mut chart = ChartBuilder::on(left)
        .caption(
            format!(
                "predicted loss of {} feasible shapes (best layout each), colour: TFLOP/s per GPU {:.0}..{:.0}",
                shapes.len(),
                t0,
                t1
            ),
            ("sans-serif", 16),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc("parameters (billions)")
        .y_desc("predicted loss (nats per token)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.3}"))
        .draw()?;
    // The shapes the prediction cannot tell from the recommendation.
    chart
        .draw_series(shapes.iter().filter(|c| c.equivalent_to_best).map(|c| {
            Circle::new(
                (c.shape.params as f64 / 1e9, c.predicted_loss),
                5,
                RGBColor(150, 150, 150).stroke_width(1),
            )
        }))?
        .label("equivalent to the recommendation within the speed band (≈)")
        .legend(|(x, y)| Circle::new((x, y), 5, RGBColor(150, 150, 150).stroke_width(1)));
    chart.draw_series(shapes.iter().map(|c| {
        Circle::new(
            (c.shape.params as f64 / 1e9, c.predicted_loss),
            3,
            colour(c.step.tflops_per_gpu).filled(),
        )
    }))?;
    // The best shape of each hidden size (the first, as candidates are ranked).
    let mut seen = std::collections::HashSet::new();
    let per_width: Vec<_> = shapes
        .iter()
        .filter(|c| seen.insert(c.shape.model.hidden_size()))
        .collect();
    chart
        .draw_series(per_width.iter().map(|c| {
            Circle::new(
                (c.shape.params as f64 / 1e9, c.predicted_loss),
                6,
                BLACK.stroke_width(1),
            )
        }))?
        .label("best shape of its hidden size")
        .legend(|(x, y)| Circle::new((x, y), 5, BLACK.stroke_width(1)));
    if let Some(best) = panel.best {
        let b = (best.shape.params as f64 / 1e9, best.predicted_loss);
        chart
            .draw_series(std::iter::once(TriangleMarker::new(b, 10, RED.filled())))?
            .label(format!(
                "recommended: {} layers × {} hidden, {} heads ({:.0} TFLOP/s)",
                best.shape.model.num_layers(),
                best.shape.model.hidden_size(),
                best.shape.model.num_heads(),
                best.step.tflops_per_gpu
            ))
            .legend(|(x, y)| TriangleMarker::new((x, y), 8, RED.filled()));
    }
    if let Some(m) = panel.marked {
        let pt = (m.shape.params as f64 / 1e9, m.predicted_loss);
        chart
            .draw_series(std::iter::once(Cross::new(pt, 9, BLACK.stroke_width(3))))?
            .label(format!(
                "marked: {} layers × {} hidden, {} heads ({:.0} TFLOP/s)",
                m.shape.model.num_layers(),
                m.shape.model.hidden_size(),
                m.shape.model.num_heads(),
                m.step.tflops_per_gpu
            ))
            .legend(|(x, y)| Cross::new((x, y), 6, BLACK.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Right panel: speed against width (tile and wave quantization).
fn draw_speed_panel(
    right: &Area<'_>,
    panel: &Panel<'_>,
    (h0, h1): (f64, f64),
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let shapes = panel.shapes;
    let colour = |t: f64| speed_colour(t, panel.speed);
    let (t0p, t1p) = pad(panel.speed.0, panel.speed.1);
    let mut speed = ChartBuilder::on(right)
        .caption(
            "TFLOP/s per GPU by hidden size (tile, wave quantization)",
            ("sans-serif", 16),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(h0..h1, t0p..t1p)?;
    speed
        .configure_mesh()
        .x_desc("hidden size")
        .y_desc("TFLOP/s per GPU")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    speed.draw_series(shapes.iter().map(|c| {
        Circle::new(
            (c.shape.model.hidden_size() as f64, c.step.tflops_per_gpu),
            3,
            colour(c.step.tflops_per_gpu).filled(),
        )
    }))?;
    if let Some(best) = panel.best {
        speed.draw_series(std::iter::once(TriangleMarker::new(
            (
                best.shape.model.hidden_size() as f64,
                best.step.tflops_per_gpu,
            ),
            10,
            RED.filled(),
        )))?;
    }
    if let Some(m) = panel.marked {
        speed.draw_series(std::iter::once(Cross::new(
            (m.shape.model.hidden_size() as f64, m.step.tflops_per_gpu),
            9,
            BLACK.stroke_width(3),
        )))?;
    }
    Ok(())
}

/// The colour bar: slow (blue) to fast (red), in TFLOP/s per GPU.
fn draw_colour_bar(bar: &Area<'_>, (t0, t1): (f64, f64)) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let colour = |t: f64| speed_colour(t, (t0, t1));
    let (top, bottom) = (80i32, 520i32);
    let steps = 60;
    for i in 0..steps {
        let f0 = i as f64 / steps as f64;
        let y = bottom - ((bottom - top) as f64 * f0) as i32;
        let h = ((bottom - top) as f64 / steps as f64).ceil() as i32 + 1;
        bar.draw(&Rectangle::new(
            [(20, y - h), (40, y)],
            colour(t0 + (t1 - t0) * f0).filled(),
        ))?;
    }
    for (t, y) in [
        (t0, bottom),
        ((t0 + t1) / 2.0, (top + bottom) / 2),
        (t1, top),
    ] {
        bar.draw(&Text::new(
            format!("{t:.0}"),
            (44, y - 6),
            ("sans-serif", 12),
        ))?;
    }
    bar.draw(&Text::new("TFLOP/s", (10, top - 30), ("sans-serif", 12)))?;
    bar.draw(&Text::new("per GPU", (10, top - 16), ("sans-serif", 12)))?;
    Ok(())
}
