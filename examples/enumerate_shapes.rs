//! Enumerate every valid shape near a target size and rank it by the heuristics.
//!
//! `cargo run --release --example enumerate_shapes` runs the BLOOM case: ≈175B ± 5%, BLOOM
//! architecture, vocabulary 250880, sequence 2048, tp 4, pp 12 with embedding slots, head dim
//! ≥ 64, hidden a multiple of 128. Flags override each constraint:
//! `--target-params N --tolerance F --arch NAME --vocab V --seq-len S --tp N --pp N
//! --embedding-slots true|false --hidden-multiple M --head-dims 64,128 | --min-head-dim A
//! --max-head-dim B --head-dim-multiple K --kv-group G | --kv-heads K --ffn 4d|llama|N
//! --fused-softmax MICRO_BATCH --min-aspect A --max-aspect B --min-layers L --max-layers L
//! --sort levine|params|aspect|speed --limit N --all-heads --json`. `--sort speed` times each
//! shape's training step on a Selene-class A100 cluster (or `--gpu`) with the analytical timer,
//! for the layout `--tp`, `--pp`, `--dp N` (default 8), `--micro-batch N` (default 2),
//! `--global-batch N` (default 2048), full recomputation, and ranks by TFLOP/s per GPU.

#[macro_use]
mod common;

use common::{Args, die, or_die, si};
use lmshape::Architecture;
use lmshape::heuristics;
use lmshape::search::{self, FfnRule, KvHeads, ShapeSpace, SortKey};
use serde_json::json;

const USAGE: &str = "usage: enumerate_shapes [--target-params N] [--tolerance F] [--arch NAME] [--vocab V] [--seq-len S] [--tp N] [--pp N] [--embedding-slots true|false] [--hidden-multiple M] [--head-dims A,B,..] [--min-head-dim A] [--max-head-dim B] [--head-dim-multiple K] [--kv-group G | --kv-heads K] [--ffn 4d|llama|N] [--fused-softmax MB] [--min-aspect A] [--max-aspect B] [--min-layers L] [--max-layers L] [--sort levine|params|aspect|speed] [--dp N] [--micro-batch N] [--global-batch N] [--gpu NAME] [--limit N] [--all-heads] [--json]";

fn main() {
    let args = Args::parse(
        &[
            "target-params",
            "tolerance",
            "arch",
            "vocab",
            "seq-len",
            "tp",
            "pp",
            "embedding-slots",
            "hidden-multiple",
            "head-dims",
            "min-head-dim",
            "max-head-dim",
            "head-dim-multiple",
            "kv-group",
            "kv-heads",
            "ffn",
            "fused-softmax",
            "min-aspect",
            "max-aspect",
            "min-layers",
            "max-layers",
            "sort",
            "limit",
        ],
        &["json", "all-heads"],
        USAGE,
    );
    let base = or_die(ShapeSpace::bloom_reference());
    let arch = match args.raw("arch") {
        Some(a) => or_die(Architecture::by_name(a)),
        None => base.arch,
    };
    let target = args.get_u64("target-params", base.target_params);
    let tolerance: f64 = args.get("tolerance", 0.05);
    let mut space = or_die(ShapeSpace::around(
        target,
        tolerance,
        arch,
        args.get_u64("vocab", base.vocab_size),
    ));
    space.seq_len = args.get_u64("seq-len", base.seq_len);
    space.tp = args.get_u64("tp", base.tp);
    space.pp = args.get_u64("pp", base.pp);
    space.embedding_pipeline_slots = args.get("embedding-slots", base.embedding_pipeline_slots);
    space.hidden_multiple = args.get_u64("hidden-multiple", base.hidden_multiple);
    space.head_dims = match args.opt_list("head-dims") {
        Some(mut v) => {
            v.sort_unstable();
            v.dedup();
            v
        }
        None => or_die(search::head_dim_range(
            args.get_u64("min-head-dim", 64),
            args.get_u64("max-head-dim", 256),
            args.get_u64("head-dim-multiple", 8),
        )),
    };
    space.kv_heads = match (args.opt_u64("kv-group"), args.opt_u64("kv-heads")) {
        (Some(g), _) => KvHeads::GroupSize(g),
        (None, Some(k)) => KvHeads::Fixed(k),
        (None, None) => KvHeads::MultiHead,
    };
    if let Some(f) = args.raw("ffn") {
        space.ffn = match f {
            "4d" => FfnRule::FOUR_D,
            "llama" => FfnRule::LLAMA,
            n => FfnRule::Fixed(
                n.parse()
                    .unwrap_or_else(|_| die("--ffn: 4d, llama or a width")),
            ),
        };
    }
    space.fused_softmax_micro_batch = args.opt_u64("fused-softmax");
    space.min_aspect_ratio = args.get("min-aspect", 0.0);
    space.max_aspect_ratio = args.get("max-aspect", f64::INFINITY);
    space.min_layers = args.get_u64("min-layers", 1);
    space.max_layers = args.get_u64("max-layers", 1000);

    let mut iter = or_die(space.iter());
    let shapes: Vec<_> = iter.by_ref().collect();
    let candidates = iter.candidates();
    let mut scored: Vec<_> = shapes
        .iter()
        .map(|s| or_die(search::score(&space, s)))
        .collect();
    let by_speed = args.raw("sort") == Some("speed");
    let sort: Vec<SortKey> = match args.raw("sort").unwrap_or("levine") {
        "levine" | "speed" => vec![
            SortKey::LevineDistance,
            SortKey::HeadDimNear(128),
            SortKey::ParamError,
        ],
        "params" => vec![SortKey::ParamError, SortKey::LevineDistance],
        "aspect" => vec![SortKey::AspectRatio, SortKey::ParamError],
        other => die(&format!("unknown --sort {other:?}")),
    };
    search::rank(&mut scored, &sort);
    // Predicted TFLOP/s per GPU of each shape on the given layout (speed ranking).
    let mut speed: Vec<Option<f64>> = vec![None; scored.len()];
    if by_speed {
        let gpu = or_die(lmshape::hardware::GpuSpec::by_name(
            args.raw("gpu").unwrap_or("a100-80gb"),
        ));
        let cluster = lmshape::hardware::step::Cluster::reference_node(gpu.clone());
        let timer = lmshape::hardware::AnalyticalTimer::new(gpu);
        let layout = lmshape::ParallelLayout {
            tp: space.tp,
            pp: space.pp,
            dp: args.get_u64("dp", 8),
            micro_batch: args.get_u64("micro-batch", 2),
            global_batch: args.get_u64("global-batch", 2048),
            seq_len: space.seq_len,
            recompute: lmshape::Recompute::Full,
            embedding_pipeline_slots: space.embedding_pipeline_slots,
            ..lmshape::ParallelLayout::default()
        };
        let opts = lmshape::hardware::step::StepOptions::default();
        for (s, v) in scored.iter().zip(speed.iter_mut()) {
            let model = or_die(space.model_of(&s.shape));
            *v = lmshape::hardware::step::step_time(&model, &layout, &cluster, &timer, &opts)
                .ok()
                .map(|t| t.tflops_per_gpu);
        }
        let mut order: Vec<usize> = (0..scored.len()).collect();
        order.sort_by(|&a, &b| speed[b].unwrap_or(0.0).total_cmp(&speed[a].unwrap_or(0.0)));
        scored = order.iter().map(|&i| scored[i]).collect();
        speed = order.iter().map(|&i| speed[i]).collect();
    }
    let speed_of = |s: &search::ScoredShape| -> Option<f64> {
        scored
            .iter()
            .position(|x| x.shape == s.shape)
            .and_then(|i| speed[i])
    };
    let rows = if args.flag("all-heads") {
        scored.clone()
    } else if by_speed {
        // The fastest head configuration of each (layers, hidden).
        let mut seen = std::collections::HashSet::new();
        scored
            .iter()
            .filter(|s| seen.insert((s.shape.model.num_layers, s.shape.model.hidden_size)))
            .copied()
            .collect()
    } else {
        search::one_per_width_depth(&scored, 128)
    };
    if args.flag("json") {
        let limit = args.opt_u64("limit").map_or(usize::MAX, |n| n as usize);
        let out: Vec<_> = scored
            .iter()
            .take(limit)
            .map(|s| {
                let h = &s.heuristics;
                json!({
                    "hidden_size": s.shape.model.hidden_size,
                    "num_layers": s.shape.model.num_layers,
                    "num_heads": s.shape.model.num_heads,
                    "num_kv_heads": s.shape.model.num_kv_heads,
                    "head_dim": s.shape.model.head_dim,
                    "ffn_size": s.shape.model.ffn_size,
                    "vocab_size": s.shape.model.vocab_size,
                    "params": s.shape.params,
                    "param_error": s.param_error,
                    "aspect_ratio": h.aspect_ratio,
                    "kaplan_aspect_verdict": h.aspect_verdict,
                    "levine_depth": h.levine_depth,
                    "levine_depth_delta": h.levine_depth_delta,
                    "levine_width_ratio": h.levine_width_ratio,
                    "predicted_tflops_per_gpu": speed_of(s),
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&out).unwrap());
        return;
    }
    let limit = args.get_u64("limit", 40) as usize;
    outln!(
        "shapes of {} ± {:.1}% ({:?} MLP, {:?} positions), vocab {} (padded {}), seq {}, tp {}, pp {}{}, hidden % {}, head dims {}..{}",
        si(target as f64),
        tolerance * 100.0,
        space.arch.mlp,
        space.arch.position,
        space.vocab_size,
        or_die(space.padded_vocab()),
        space.seq_len,
        space.tp,
        space.pp,
        if space.embedding_pipeline_slots {
            " (embedding slots)"
        } else {
            ""
        },
        space.hidden_multiple,
        space.head_dims.first().unwrap_or(&0),
        space.head_dims.last().unwrap_or(&0),
    );
    outln!(
        "{} valid shapes ({} distinct depth × width) from {} candidates examined",
        shapes.len(),
        search::one_per_width_depth(&scored, 128).len(),
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
    outln!(
        "\n{:>4} {:>7} {:>6} {:>5} {:>6} {:>9} {:>8} {:>7} {:>9} {:>8} {:>7}",
        "rank",
        "layers",
        "hidden",
        "heads",
        "hdim",
        "ffn",
        "params",
        "err%",
        "aspect",
        "kaplan",
        "levineΔ"
    );
    for (i, s) in rows.iter().take(limit).enumerate() {
        let h = &s.heuristics;
        outln!(
            "{:>4} {:>7} {:>6} {:>5} {:>6} {:>9} {:>8} {:>+7.2} {:>9.1} {:>8} {:>+7.1} {:>8}",
            i + 1,
            s.shape.model.num_layers,
            s.shape.model.hidden_size,
            s.shape.model.num_heads,
            s.shape.model.head_dim,
            s.shape.model.ffn_size,
            si(s.shape.params as f64),
            s.param_error * 100.0,
            h.aspect_ratio,
            format!("{:?}", h.aspect_verdict).to_lowercase(),
            h.levine_depth_delta,
            speed_of(s).map_or("-".into(), |t| format!("{t:.1}")),
        );
    }
    if rows.len() > limit {
        outln!(
            "... {} more (--limit N, --all-heads, --json)",
            rows.len() - limit
        );
    }
}
