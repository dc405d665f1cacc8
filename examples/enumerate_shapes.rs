//! Enumerate every valid shape near a target size and rank it by the heuristics.
//!
//! `cargo run --release --example enumerate_shapes` runs the BLOOM case: ≈175B ± 5%, BLOOM
//! architecture, vocabulary 250880, sequence 2048, tp 4, pp 12 with embedding slots, head dim
//! ≥ 64, hidden a multiple of 128. Flags override each constraint:
//! `--target-params N --tolerance F --arch NAME --vocab V --seq-len S --tp N --pp N
//! --embedding-slots true|false --hidden-multiple M --head-dims 64,128 | --min-head-dim A
//! --max-head-dim B --head-dim-multiple K --kv-group G | --kv-heads K --ffn 4d|llama|N
//! --fused-softmax MICRO_BATCH --min-aspect A --max-aspect B --min-layers L --max-layers L
//! --sort levine|params|aspect|speed --law NAME | --law-file PATH --tokens T --limit N
//! --all-heads --json`. `--moe` lists
//! mixture-of-experts shapes on those backbones instead (`--experts`, `--granularities`,
//! `--shared-experts`, `--ep`, `--etp`, `--max-total-params`, ranked at `--tokens`). `--sort speed` times each
//! shape's training step on a DGX A100 timed by its measured profile (or `--gpu`, `--system`),
//! for the layout `--tp`, `--pp`, `--dp N` (default 8), `--micro-batch N` (default 2),
//! `--global-batch N` (default 2048), full recomputation, and ranks by TFLOP/s per GPU.

#[macro_use]
mod common;

use clap::{Parser, ValueEnum};
use common::cli::{ClusterArgs, FamilyArgs, count, non_negative, positive_count};
use common::{MOE_SHAPE_HEADER, moe_shape_columns, or_die, si};
use lmshape::heuristics;
use lmshape::search::{self, ShapeSpace, SortKey};

/// How to order the shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Sort {
    /// Closest to Levine's preferred depth, then head size near 128, then size.
    Levine,
    /// Closest to the target size.
    Params,
    /// Smallest aspect ratio first.
    Aspect,
    /// Fastest predicted TFLOP/s per GPU on the layout.
    Speed,
}

/// Every valid shape near a target size, ranked by Kaplan's aspect ratio and Levine's
/// width–depth relation (defaults: the BLOOM case, ≈175B ± 5% on tp 4 × pp 12).
#[derive(Parser, Debug)]
#[command(name = "enumerate_shapes", version, long_about = None, after_help = common::cli::GLOSSARY, allow_negative_numbers = true)]
struct Cli {
    /// Size aimed at (total parameters).
    #[arg(long, value_name = "N", default_value = "175e9", value_parser = positive_count)]
    target_params: u64,
    /// Relative tolerance around the target.
    #[arg(long, value_name = "F", default_value_t = 0.05, value_parser = common::cli::fraction)]
    tolerance: f64,
    #[command(flatten)]
    family: FamilyArgs,
    /// Tensor-parallel degree the shapes must split over.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = positive_count)]
    tp: u64,
    /// Pipeline-parallel degree the layers must split over.
    #[arg(long, value_name = "N", default_value_t = 12, value_parser = positive_count)]
    pp: u64,
    /// Count the embeddings as pipeline slots ((L + 2) % pp = 0).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    embedding_slots: bool,
    /// Accept depths that do not split evenly over the pipeline (DeepSpeed's balanced
    /// partition, some stages one layer more).
    #[arg(long)]
    balanced_pipeline: bool,
    /// Hidden size a multiple of this.
    #[arg(long, value_name = "M", default_value_t = 128, value_parser = positive_count)]
    hidden_multiple: u64,
    /// Allowed head sizes, comma-separated (instead of the range below).
    #[arg(long, value_name = "A,B,..", value_delimiter = ',', value_parser = positive_count)]
    head_dims: Option<Vec<u64>>,
    /// Smallest head size of the range.
    #[arg(long, value_name = "A", default_value_t = 64, value_parser = positive_count)]
    min_head_dim: u64,
    /// Largest head size of the range.
    #[arg(long, value_name = "B", default_value_t = 256, value_parser = positive_count)]
    max_head_dim: u64,
    /// Step of the head-size range.
    #[arg(long, value_name = "K", default_value_t = 8, value_parser = positive_count)]
    head_dim_multiple: u64,
    #[command(flatten)]
    rules: common::cli::ShapeRuleArgs,
    /// Require Megatron's fused-softmax rule at this micro-batch.
    #[arg(long, value_name = "MICRO_BATCH", value_parser = positive_count)]
    fused_softmax: Option<u64>,
    /// Smallest aspect ratio hidden / layers.
    #[arg(long, value_name = "A", default_value_t = 0.0, value_parser = non_negative)]
    min_aspect: f64,
    /// Largest aspect ratio hidden / layers [default: none].
    #[arg(long, value_name = "B", value_parser = non_negative)]
    max_aspect: Option<f64>,
    /// Fewest layers.
    #[arg(long, value_name = "L", default_value_t = 1, value_parser = positive_count)]
    min_layers: u64,
    /// Most layers.
    #[arg(long, value_name = "L", default_value_t = 1000, value_parser = positive_count)]
    max_layers: u64,
    /// Order of the table.
    #[arg(long, value_enum, default_value_t = Sort::Levine)]
    sort: Sort,
    /// Data-parallel degree of the layout timed by --sort speed.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = positive_count)]
    dp: u64,
    /// Micro-batch of the layout timed by --sort speed.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = positive_count)]
    micro_batch: u64,
    /// Global batch of the layout timed by --sort speed.
    #[arg(long, value_name = "N", default_value_t = 2048, value_parser = positive_count)]
    global_batch: u64,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Rows shown (the table; JSON: shapes printed) [default: 40 rows, every shape in JSON].
    #[arg(long, value_name = "N", value_parser = count)]
    limit: Option<u64>,
    /// Show every head configuration of each depth × width.
    #[arg(long)]
    all_heads: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Mixture-of-experts shapes instead: fine-grained experts on the shapes above (the target
    /// is then the active size), ranked by Krajewski et al. 2024's law at --tokens.
    #[arg(long)]
    moe: bool,
    /// Routed experts tried with --moe.
    #[arg(long, value_name = "E,..", value_delimiter = ',', default_value = "8,16,32,64,128", value_parser = positive_count)]
    experts: Vec<u64>,
    /// Granularities tried with --moe (expert width = FFN width / G; G experts per token).
    #[arg(long, value_name = "G,..", value_delimiter = ',', default_value = "1,2,4,8", value_parser = positive_count)]
    granularities: Vec<u64>,
    /// Shared experts tried with --moe.
    #[arg(long, value_name = "S,..", value_delimiter = ',', default_value = "0,1", value_parser = count)]
    shared_experts: Vec<u64>,
    /// Expert-parallel degree the experts must split over (--moe).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive_count)]
    ep: u64,
    /// Expert-tensor-parallel degree the expert width must split over (--moe).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive_count)]
    etp: u64,
    /// Largest total parameter count (--moe).
    #[arg(long, value_name = "N", value_parser = positive_count)]
    max_total_params: Option<u64>,
    /// Training tokens at which --moe ranks by the law's loss, and at which --law or
    /// --law-file predict each dense shape's loss.
    #[arg(long, value_name = "T", default_value = "1e12", value_parser = common::cli::positive)]
    tokens: f64,
    /// A scaling law by name (kaplan, chinchilla-1, chinchilla-2, chinchilla-3, besiroglu,
    /// chinchilla): each dense shape's predicted loss at --tokens, a column and a JSON key
    /// (`predicted_loss`).
    #[arg(long, value_name = "NAME", value_parser = common::cli::law)]
    law: Option<lmshape::scaling::LawChoice>,
    /// A law fitted with `fit_scaling_law --out`, used as --law.
    #[arg(long, value_name = "PATH", conflicts_with = "law")]
    law_file: Option<String>,
}

impl Cli {
    /// The law the dense shapes' losses are predicted under: `--law-file`, else `--law`.
    fn law(&self) -> Option<lmshape::scaling::LawChoice> {
        match &self.law_file {
            Some(path) => Some(common::cli::law_file(path)),
            None => self.law,
        }
    }
}

/// `--moe`: the mixture-of-experts shapes of `space`, ranked by Krajewski et al. 2024's law at
/// `--tokens` (active non-embedding parameters, granularity).
fn list_moe(args: &Cli, space: ShapeSpace) {
    let moe = search::MoeSpace {
        num_experts: args.experts.clone(),
        granularities: args.granularities.clone(),
        shared_experts: args.shared_experts.clone(),
        ep: args.ep,
        etp: args.etp,
        max_total_params: args.max_total_params,
        ..search::MoeSpace::new(space)
    };
    let law = lmshape::scaling::GranularityLaw::KRAJEWSKI_2024;
    let shapes: Vec<(search::MoeShape, f64)> = or_die(moe.iter())
        .map(|m| {
            let loss = or_die(law.loss(
                m.active_non_embedding_params as f64,
                args.tokens,
                m.granularity as f64,
            ));
            (m, loss)
        })
        .collect();
    // The law ranks the expert setting: its loss at the target size depends only on the
    // granularity. Within a setting, the shape closest to Levine's depth for its active size
    // comes first (the law sees size and granularity, not the shape), then the smallest total.
    // Each key is computed once per shape, not once per comparison.
    let at_target = |m: &search::MoeShape| {
        or_die(law.loss(
            moe.backbone.target_params() as f64,
            args.tokens,
            m.granularity as f64,
        ))
    };
    let levine = |m: &search::MoeShape| {
        let depth = or_die(heuristics::levine_depth_for_params(
            m.active_non_embedding_params as f64,
        ));
        (m.shape.model.num_layers() as f64 - depth).abs()
    };
    let mut keyed: Vec<(f64, f64, (search::MoeShape, f64))> = shapes
        .into_iter()
        .map(|s| (at_target(&s.0), levine(&s.0), s))
        .collect();
    keyed.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then(a.1.total_cmp(&b.1))
            .then(a.2.0.shape.params.cmp(&b.2.0.shape.params))
    });
    let shapes: Vec<(search::MoeShape, f64)> = keyed.into_iter().map(|k| k.2).collect();
    let limit = args.limit.map_or(usize::MAX, |l| l as usize);
    if args.json {
        let out: Vec<_> = shapes
            .iter()
            .take(limit)
            .filter_map(|(m, loss)| m.record(*loss))
            .map(|r| serde_json::to_value(r).unwrap_or_default())
            .collect();
        outln!("{}", serde_json::to_string_pretty(&out).unwrap());
        return;
    }
    outln!(
        "{} mixture-of-experts shapes of {} active params ± {:.1}% (experts {}, granularity {}, shared {}, ep {}, etp {}); settings ranked by Krajewski et al. 2024's loss at the target and {} tokens, shapes by Levine's depth",
        shapes.len(),
        si(moe.backbone.target_params() as f64),
        args.tolerance * 100.0,
        list(&args.experts),
        list(&args.granularities),
        list(&args.shared_experts),
        args.ep,
        args.etp,
        si(args.tokens)
    );
    if shapes.is_empty() {
        outln!("no shape satisfies every constraint");
        return;
    }
    outln!(
        "{MOE_SHAPE_HEADER} {:>3} {:>9} {:>9} {:>8}",
        "G",
        "total",
        "active",
        "loss"
    );
    for (m, loss) in shapes.iter().take(limit.min(40)) {
        let Some(shape) = moe_shape_columns(&m.shape.model) else {
            continue;
        };
        outln!(
            "{shape} {:>3} {:>9} {:>9} {:>8.4}",
            m.granularity,
            si(m.shape.params as f64),
            si(m.active_params as f64),
            loss
        );
    }
}

/// Run the example with the process's command line.
pub fn main() {
    let args: Cli = common::parse();
    let space = build_space(&args);
    if args.moe {
        if args.law.is_some() || args.law_file.is_some() {
            common::cli::usage_error::<Cli>(
                "--moe ranks by Krajewski et al. 2024's granularity law; --law and --law-file are for dense shapes".into(),
            );
        }
        list_moe(&args, space);
        return;
    }
    let mut iter = or_die(space.iter());
    let shapes: Vec<_> = iter.by_ref().collect();
    let candidates = iter.candidates();
    let mut scored: Vec<_> = shapes
        .iter()
        .map(|s| or_die(search::score(&space, s)))
        .collect();
    let by_speed = args.sort == Sort::Speed;
    let sort: Vec<SortKey> = match args.sort {
        Sort::Levine | Sort::Speed => vec![
            SortKey::LevineDistance,
            SortKey::HeadDimNear(128),
            SortKey::ParamError,
        ],
        Sort::Params => vec![SortKey::ParamError, SortKey::LevineDistance],
        Sort::Aspect => vec![SortKey::AspectRatio, SortKey::ParamError],
    };
    search::rank(&mut scored, &sort);
    // Predicted TFLOP/s per GPU of each shape on the given layout (speed ranking).
    let speed = if by_speed {
        rank_by_speed(&args, &space, &mut scored)
    } else {
        vec![None; scored.len()]
    };
    let speed_index: std::collections::HashMap<search::Shape, usize> = scored
        .iter()
        .enumerate()
        .map(|(i, s)| (s.shape, i))
        .collect();
    let speed_of = |s: &search::ScoredShape| -> Option<f64> {
        speed_index.get(&s.shape).and_then(|&i| speed[i])
    };
    let law = args.law();
    let loss_of = |s: &search::ScoredShape| -> Option<f64> {
        let law = law?;
        Some(or_die(
            law.loss(&or_die(space.model_of(&s.shape)), args.tokens),
        ))
    };
    let columns = Columns {
        speed: &speed_of,
        loss: &loss_of,
        law: law.map(|l| l.to_string()),
    };
    if args.json {
        print_json(&args, &scored, &columns);
        return;
    }
    let rows = if args.all_heads {
        scored.clone()
    } else if by_speed {
        // The fastest head configuration of each (layers, hidden).
        let mut seen = std::collections::HashSet::new();
        scored
            .iter()
            .filter(|s| seen.insert((s.shape.model.num_layers(), s.shape.model.hidden_size())))
            .copied()
            .collect()
    } else {
        search::one_per_width_depth(&scored, 128)
    };
    print_header(&args, &space, shapes.len(), &scored, candidates);
    if rows.is_empty() {
        outln!(
            "\nno shape satisfies every constraint: widen the size tolerance, the head sizes or the layer range"
        );
        return;
    }
    print_table(&args, &rows, &columns);
}

/// The figures a row may carry beside the shape: predicted TFLOP/s per GPU (`--sort speed`)
/// and predicted loss (`--law`, `--law-file`, `--sort loss`).
struct Columns<'a> {
    speed: &'a dyn Fn(&search::ScoredShape) -> Option<f64>,
    loss: &'a dyn Fn(&search::ScoredShape) -> Option<f64>,
    /// The law's name, when losses are predicted.
    law: Option<String>,
}

/// The shape space the flags describe.
fn build_space(args: &Cli) -> ShapeSpace {
    let arch = or_die(args.family.architecture());
    let head_dims = match &args.head_dims {
        Some(v) => {
            let mut v = v.clone();
            v.sort_unstable();
            v.dedup();
            v
        }
        None => or_die(search::head_dim_range(
            args.min_head_dim,
            args.max_head_dim,
            args.head_dim_multiple,
        )),
    };
    let mut space = or_die(ShapeSpace::around(
        args.target_params,
        args.tolerance,
        arch,
        args.family.vocab,
    ))
    .to_builder()
    .seq_len(args.family.seq_len)
    .tp(args.tp)
    .pp(args.pp)
    .embedding_pipeline_slots(args.embedding_slots)
    .balanced_pipeline(args.balanced_pipeline)
    .hidden_multiple(args.hidden_multiple)
    .head_dims(head_dims)
    .kv_heads(args.rules.kv_rule())
    .fused_softmax_micro_batch(args.fused_softmax)
    .min_aspect_ratio(args.min_aspect)
    .max_aspect_ratio(args.max_aspect.unwrap_or(f64::INFINITY))
    .min_layers(args.min_layers)
    .max_layers(args.max_layers);
    if let Some(f) = args.rules.ffn {
        space = space.ffn(f);
    }
    or_die(space.build())
}

/// Each shape's predicted TFLOP/s per GPU on the flags' layout (under Megatron-Core, the step
/// model's setup); reorders `scored` fastest first and returns the speeds in that order.
fn rank_by_speed(
    args: &Cli,
    space: &ShapeSpace,
    scored: &mut Vec<search::ScoredShape>,
) -> Vec<Option<f64>> {
    let machine = args
        .cluster
        .machine(lmshape::memory::Framework::MegatronCore);
    let (cluster, timer) = (&machine.cluster, machine.timer.as_ref());
    let layout = or_die(
        lmshape::ParallelLayout::builder()
            .tp(space.tp())
            .pp(space.pp())
            .dp(args.dp)
            .micro_batch(args.micro_batch)
            .global_batch(args.global_batch)
            .seq_len(space.seq_len())
            .recompute(lmshape::Recompute::Full)
            .embedding_pipeline_slots(space.embedding_pipeline_slots())
            .balanced_pipeline(space.balanced_pipeline())
            .build(),
    );
    let opts = lmshape::step::StepOptions::default();
    let speed: Vec<Option<f64>> = scored
        .iter()
        .map(|s| {
            let model = or_die(space.model_of(&s.shape));
            lmshape::step::step_time(&model, &layout, cluster, timer, &opts)
                .ok()
                .map(|t| t.tflops_per_gpu)
        })
        .collect();
    let mut order: Vec<usize> = (0..scored.len()).collect();
    order.sort_by(|&a, &b| speed[b].unwrap_or(0.0).total_cmp(&speed[a].unwrap_or(0.0)));
    *scored = order.iter().map(|&i| scored[i]).collect();
    order.iter().map(|&i| speed[i]).collect()
}

/// The ranked shapes as JSON (every head configuration, up to `--limit`).
fn print_json(args: &Cli, scored: &[search::ScoredShape], columns: &Columns<'_>) {
    let limit = args.limit.map_or(usize::MAX, |n| n as usize);
    let out: Vec<_> = scored
        .iter()
        .take(limit)
        // Through a JSON value, so the keys print sorted as every tool prints them.
        .map(|s| {
            serde_json::to_value(s.record((columns.speed)(s), (columns.loss)(s)))
                .unwrap_or_default()
        })
        .collect();
    outln!("{}", serde_json::to_string_pretty(&out).unwrap());
}

/// What was searched, how many shapes passed, Levine's depth and the published neighbours.
fn print_header(
    args: &Cli,
    space: &ShapeSpace,
    valid: usize,
    scored: &[search::ScoredShape],
    candidates: u64,
) {
    let target = args.target_params;
    outln!(
        "shapes of {} ± {:.1}% ({} architecture), vocab {} (padded {}), seq {}, tp {}, pp {}{}, hidden a multiple of {}, head dims {}..{}",
        si(target as f64),
        args.tolerance * 100.0,
        args.family.arch,
        space.vocab_size(),
        or_die(space.padded_vocab()),
        space.seq_len(),
        space.tp(),
        space.pp(),
        match (space.embedding_pipeline_slots(), space.balanced_pipeline()) {
            (true, true) => " (embedding slots, balanced)",
            (true, false) => " (embedding slots)",
            (false, true) => " (balanced)",
            (false, false) => "",
        },
        space.hidden_multiple(),
        space.head_dims().first().unwrap_or(&0),
        space.head_dims().last().unwrap_or(&0),
    );
    outln!(
        "{} valid shapes ({} distinct depth × width) from {} candidates examined",
        valid,
        search::one_per_width_depth(scored, 128).len(),
        candidates
    );
    if let Ok(l) = heuristics::levine_depth_for_params(target as f64) {
        outln!(
            "Levine et al. 2020 (BigScience reading): preferred depth for {} is {:.1} layers; Kaplan's flat aspect range {:.0}..{:.0}",
            si(target as f64),
            l,
            heuristics::KAPLAN_FLAT_ASPECT_RANGE.0,
            heuristics::KAPLAN_FLAT_ASPECT_RANGE.1
        );
    }
    let near: Vec<String> = heuristics::nearest_published(target as f64)
        .iter()
        .take(4)
        .map(|p| {
            format!(
                "{} ({}L × {}, aspect {:.0})",
                p.name,
                p.num_layers,
                p.hidden_size,
                p.aspect_ratio()
            )
        })
        .collect();
    outln!("published neighbours: {}", near.join("; "));
}

/// The table of shapes, up to `--limit` (40 by default).
fn print_table(args: &Cli, rows: &[search::ScoredShape], columns: &Columns<'_>) {
    let by_speed = args.sort == Sort::Speed;
    let limit = args.limit.map_or(40, |n| n as usize);
    outln!(
        "\ncolumns: size error vs the target; aspect = hidden / layers and Kaplan et al.'s verdict on it (flat: within the range they found ~3% apart, {:.0}..{:.0}); Δ layers from Levine's preferred depth{}",
        heuristics::KAPLAN_FLAT_ASPECT_RANGE.0,
        heuristics::KAPLAN_FLAT_ASPECT_RANGE.1,
        if by_speed {
            "; predicted TFLOP/s per GPU on the layout".to_string()
        } else {
            String::new()
        } + &columns.law.as_ref().map_or(String::new(), |l| format!(
            "; predicted loss (nats per token) at {} tokens under {l}",
            si(args.tokens)
        ))
    );
    let loss_header = if columns.law.is_some() {
        "     loss"
    } else {
        ""
    };
    outln!(
        "{:>4} {:>7} {:>6} {:>5} {:>6} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>11}{loss_header}",
        "rank",
        "layers",
        "hidden",
        "heads",
        "hdim",
        "ffn",
        "params",
        "error %",
        "aspect",
        "kaplan",
        "Δ layers",
        "TFLOP/s/GPU"
    );
    for (i, s) in rows.iter().take(limit).enumerate() {
        let h = &s.heuristics;
        outln!(
            "{:>4} {:>7} {:>6} {:>5} {:>6} {:>9} {:>9} {:>+8.2} {:>8.1} {:>8} {:>+9.1} {:>11}{}",
            i + 1,
            s.shape.model.num_layers(),
            s.shape.model.hidden_size(),
            s.shape.model.num_heads(),
            s.shape.model.head_dim(),
            s.shape.model.ffn_size(),
            si(s.shape.params as f64),
            s.param_error * 100.0,
            h.aspect_ratio,
            format!("{:?}", h.aspect_verdict).to_lowercase(),
            h.levine_depth_delta,
            (columns.speed)(s).map_or("-".into(), |t| format!("{t:.1}")),
            (columns.loss)(s).map_or(String::new(), |l| format!(" {l:>8.4}")),
        );
    }
    if rows.len() > limit {
        outln!(
            "... {} more (--limit N, --all-heads, --json)",
            rows.len() - limit
        );
    }
}

/// Numbers as a person writes them: `8, 16, 32`.
fn list(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}
