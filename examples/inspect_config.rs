//! Inspect a Hugging Face `config.json`: exact parameters per component, FLOPs per token, and
//! memory per GPU for training under a parallel layout and for inference with a KV cache.
//!
//! `cargo run --release --example inspect_config -- PATH/config.json [--seq-len S] [--include-mtp]
//! [--tp N --pp N --dp N --zero 0..3 --sequence-parallel --micro-batch N --global-batch N
//! --recompute none|selective|full --embedding-slots --flash --no-dropout --bytes-per-param 16|18]
//! --virtual-stages V] [--batch N --context N] [--json]` (without PATH: the bundled
//! `examples/configs/llama-2-7b.json`; `--preset NAME` instead of a path: a published shape such
//! as `gpt3-175b` or `bloom-176b`). The training context defaults to 4096 tokens (or the
//! model's own limit when smaller), not the model's longest context.

#[macro_use]
mod common;

use clap::Parser;
use common::cli::{LayoutArgs, SetupArgs, positive_count};
use common::{gib, grouped, or_die, si};
use lmshape::flops::{self, FlopsConvention, ParamBasis};
use lmshape::memory::{self, MemoryOptions, Precision};
use lmshape::{ParallelLayout, Recompute, Transformer};
use serde_json::json;

/// The training context assumed when `--seq-len` is not given.
const DEFAULT_SEQ_LEN: u64 = 4096;
const DEFAULT_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/configs/llama-2-7b.json"
);

/// Exact parameters, FLOPs per token, training and inference memory of a model.
#[derive(Parser, Debug)]
#[command(name = "inspect_config", version, long_about = None, after_help = common::cli::GLOSSARY, allow_negative_numbers = true)]
struct Cli {
    /// A Hugging Face config.json [default: examples/configs/llama-2-7b.json].
    #[arg(conflicts_with = "preset")]
    config: Option<String>,
    /// A named preset instead of a config (e.g. gpt3-175b, bloom-176b).
    #[arg(long, value_name = "NAME")]
    preset: Option<String>,
    /// Training context in tokens [default: 4096, or the model's limit when smaller].
    #[arg(long, value_name = "S", value_parser = positive_count)]
    seq_len: Option<u64>,
    /// Count DeepSeek's multi-token-prediction modules in the total.
    #[arg(long)]
    include_mtp: bool,
    #[command(flatten)]
    layout: LayoutArgs,
    #[command(flatten)]
    setup: SetupArgs,
    /// Bytes per parameter of the model states: 16 (2+2+4+8) or 18 (fp32 gradients)
    /// [default: the framework's: 18 for megatron-core and fsdp, DeepSpeed's 2+2+(4+4+8)/dp
    /// for megatron-deepspeed and deepspeed].
    #[arg(long, value_name = "B", value_parser = bytes_per_param)]
    bytes_per_param: Option<u64>,
    /// GPU to check the device figure against (fits / tight / out of memory).
    #[arg(long, value_name = "NAME", value_parser = common::cli::GpuParser)]
    gpu: Option<lmshape::hardware::GpuSpec>,
    /// A measured machine profile (a shipped name or a path, as `throughput --system`): its
    /// GPU is the card the device figure is checked against.
    #[arg(long, value_name = "NAME|PATH", conflicts_with = "gpu")]
    system: Option<String>,
    /// Inference: sequences served at once.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive_count)]
    batch: u64,
    /// Inference: tokens per sequence [default: the training context].
    #[arg(long, value_name = "N", value_parser = positive_count)]
    context: Option<u64>,
    /// Draw the training memory of each stage as stacked bars against the card (SVG).
    #[arg(long, value_name = "PATH")]
    svg: Option<String>,
    /// Accepted as `throughput` takes it: overlapping the gradient reduction changes the step
    /// time, not the memory.
    #[arg(long)]
    overlap_grad_reduce: bool,
    /// Accepted as `throughput` takes it: overlapping the weight all-gather changes the step
    /// time, not the memory.
    #[arg(long)]
    overlap_param_gather: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// A named training setup, as the planner's scenarios set it (every flag still
    /// overrides): dense-2026 and moe-2026 (Megatron-Core with the distributed optimizer,
    /// sequence 8192, FlashAttention without dropout, sequence parallelism, the least
    /// recomputation that fits) or bloom-2022 (Megatron-DeepSpeed).
    #[arg(long, value_name = "NAME")]
    scenario: Option<String>,
}

/// 16 or 18 bytes per parameter.
fn bytes_per_param(s: &str) -> Result<u64, String> {
    match s {
        "16" => Ok(16),
        "18" => Ok(18),
        other => Err(format!("must be 16 or 18, got {other}")),
    }
}

/// Run the example with the process's command line.
pub fn main() {
    let scenario = common::scenario::given::<Cli>();
    let mut args: Cli =
        common::cli::parse_with_defaults(&common::scenario::setup_defaults(&[], scenario));
    if let Some(name) = &args.system {
        let profile = if std::path::Path::new(name).is_file() {
            or_die(lmshape::system::SystemProfile::from_json(
                &common::read_input(name),
            ))
        } else {
            or_die(lmshape::system::SystemProfile::by_name(name))
        };
        args.gpu = Some(or_die(profile.gpu_spec()));
    }
    let (path, model, vision) = match &args.preset {
        Some(name) => (
            format!("preset {name}"),
            or_die(lmshape::presets::by_name(name)),
            None,
        ),
        None => {
            let path = args
                .config
                .clone()
                .unwrap_or_else(|| DEFAULT_CONFIG.to_string());
            let checkpoint = or_die(lmshape::model::hf::checkpoint_from_hf_config_str(
                &common::read_input(&path),
            ));
            (path, checkpoint.language_model, checkpoint.vision)
        }
    };
    let seq = args
        .seq_len
        .unwrap_or_else(|| DEFAULT_SEQ_LEN.min(model.max_positions()));
    let mut report = or_die(Report::new(&model, seq, args.include_mtp));
    report.vision = vision;
    report.seq_is_default = args.seq_len.is_none();
    let mut layout = args.layout.layout(seq);
    let profile = memory::FrameworkProfile::of(args.setup.framework);
    let mut opts = profile.memory_options(
        &args
            .setup
            .memory_options(MemoryOptions::default(), layout.zero()),
    );
    match args.bytes_per_param {
        Some(16) => opts.precision = Precision::MIXED_16,
        Some(_) => opts.precision = Precision::MIXED_18,
        None => {}
    }
    if let Some(g) = &args.gpu {
        or_die(g.check_precision(opts.gemm_precision));
    }
    if args.layout.recompute == common::cli::RecomputeArg::Auto {
        let capacity = args.gpu.as_ref().map_or(u64::MAX, |g| g.memory_bytes);
        let recompute = or_die(memory::least_recompute(
            &model, &layout, &opts, &profile, capacity, 0.9,
        ))
        .map_or(Recompute::Full, |(rc, _)| rc);
        layout = or_die(layout.to_builder().recompute(recompute).build());
    }
    report.layout = layout;
    let training = or_die(memory::training_memory(&model, &layout, &opts));
    let device = |t: &lmshape::TrainingMemory| or_die(profile.device(t));
    report.device = Some(DeviceReport {
        framework: args.setup.framework,
        first: device(&training.first),
        middle: device(&training.middle),
        last: device(&training.last),
        gpu: args.gpu.clone(),
    });
    report.training = Some(training);
    report.inference = Some(or_die(memory::inference_memory(
        &model,
        &memory::InferenceQuery {
            batch: args.batch,
            context: args.context.unwrap_or(seq),
            tp: layout.tp(),
            pp: layout.pp(),
            ..memory::InferenceQuery::default()
        },
    )));
    if let Some(path) = &args.svg {
        if let Err(e) = report.write_svg(path) {
            common::die(&format!("cannot write {path}: {e}"));
        }
    }
    if args.json {
        let mut out = report.to_json();
        if let Some(s) = scenario {
            out["scenario"] = json!(s.name);
        }
        outln!("{}", serde_json::to_string_pretty(&out).unwrap());
    } else {
        if let Some(s) = scenario {
            let seq = args
                .seq_len
                .map_or("the model's default".to_string(), |s| s.to_string());
            outln!(
                "{}",
                common::scenario::setup_line(s, &args.setup, &args.layout, &seq)
            );
        }
        report.print(&path);
    }
}

/// The reserved and device figures of each stage under a framework, and the card to check.
struct DeviceReport {
    framework: memory::Framework,
    first: memory::DeviceMemory,
    middle: memory::DeviceMemory,
    last: memory::DeviceMemory,
    gpu: Option<lmshape::hardware::GpuSpec>,
}

impl Report {
    /// Per-stage stacked bars — weights, gradients, optimizer states, activations, transient
    /// buffers at the peak moment, allocator, runtime — with the card's capacity as a line when
    /// a GPU is given.
    fn write_svg(&self, path: &str) -> Result<(), Box<dyn std::error::Error>> {
        use plotters::prelude::*;
        let (Some(t), Some(d)) = (&self.training, &self.device) else {
            return Ok(());
        };
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let stages: Vec<(String, &lmshape::TrainingMemory, &memory::DeviceMemory)> =
            if self.layout.pp() == 1 {
                vec![("only".into(), &t.first, &d.first)]
            } else {
                vec![
                    ("first".into(), &t.first, &d.first),
                    ("middle".into(), &t.middle, &d.middle),
                    ("last".into(), &t.last, &d.last),
                ]
            };
        let parts = |m: &lmshape::TrainingMemory, dev: &memory::DeviceMemory| {
            [
                ("weights", gib(m.weights_bytes), BLUE),
                ("gradients", gib(m.gradients_bytes), CYAN),
                ("optimizer states", gib(m.optimizer_bytes), GREEN),
                ("activations", gib(m.activations_bytes), YELLOW),
                (
                    "transient buffers",
                    gib(m.transient_bytes),
                    RGBColor(255, 140, 0),
                ),
                (
                    "allocator (reserved - allocated)",
                    gib(dev.reserved_bytes - dev.allocated_bytes),
                    RGBColor(150, 150, 150),
                ),
                (
                    "runtime (context, workspaces, NCCL)",
                    gib(dev.device_bytes - dev.reserved_bytes),
                    BLACK,
                ),
            ]
        };
        let capacity = d.gpu.as_ref().map(|g| gib(g.memory_bytes));
        let top = stages
            .iter()
            .map(|(_, _, dev)| gib(dev.device_bytes))
            .fold(capacity.unwrap_or(0.0), f64::max)
            // The legend fills the top ~40% of the plot: keep the bars below it.
            * 1.75;
        let root = SVGBackend::new(path, (800, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "training memory per GPU under {} (tp {} pp {} dp {})",
                    d.framework,
                    self.layout.tp(),
                    self.layout.pp(),
                    self.layout.dp()
                ),
                ("sans-serif", 18),
            )
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..stages.len() as f64, 0.0..top.max(1.0))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("GiB")
            .draw()?;
        for (i, (_, m, dev)) in stages.iter().enumerate() {
            let mut base = 0.0;
            for (name, value, colour) in parts(m, dev) {
                let x = i as f64;
                let bar =
                    Rectangle::new([(x + 0.2, base), (x + 0.8, base + value)], colour.filled());
                let series = chart.draw_series(std::iter::once(bar))?;
                if i == 0 {
                    series.label(name).legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled())
                    });
                }
                base += value;
            }
            chart.draw_series(std::iter::once(Text::new(
                format!("{} stage: {:.1} GiB", stages[i].0, base),
                (i as f64 + 0.2, base + top * 0.06),
                ("sans-serif", 14),
            )))?;
        }
        if let (Some(cap), Some(g)) = (capacity, &d.gpu) {
            chart
                .draw_series(LineSeries::new(
                    vec![(0.0, cap), (stages.len() as f64, cap)],
                    RED.stroke_width(2),
                ))?
                .label(format!("{} capacity", g.name))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], RED.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    }
}

impl DeviceReport {
    /// The stage with the largest device figure.
    fn peak(&self) -> memory::DeviceMemory {
        [self.first, self.middle, self.last]
            .into_iter()
            .max_by_key(|d| d.device_bytes)
            .unwrap_or(self.first)
    }

    /// A stage's figures (and verdict when a GPU is given) as JSON keys.
    fn stage_json(&self, d: &memory::DeviceMemory) -> serde_json::Value {
        let mut v = json!({
            "allocated_bytes": d.allocated_bytes,
            "reserved_bytes": d.reserved_bytes,
            "device_bytes": d.device_bytes,
            "band_bytes": d.band_bytes,
        });
        if let Some(g) = &self.gpu {
            let (verdict, margin) = d.verdict(g.memory_bytes);
            v["fits"] = json!(verdict == memory::Verdict::Fits);
            v["verdict"] = json!(verdict);
            v["margin_bytes"] = json!(margin);
        }
        v
    }
}

struct Report {
    model: Transformer,
    counts: lmshape::ParamCounts,
    include_mtp: bool,
    seq: u64,
    seq_is_default: bool,
    matmul: lmshape::TokenFlops,
    summary: flops::FlopsSummary,
    palm_non_embedding: f64,
    causal: lmshape::TokenFlops,
    layout: ParallelLayout,
    training: Option<memory::TrainingMemoryReport>,
    device: Option<DeviceReport>,
    inference: Option<memory::InferenceMemory>,
    vision: Option<lmshape::model::vision::VisionEncoder>,
}

impl Report {
    fn new(model: &Transformer, seq: u64, include_mtp: bool) -> lmshape::Result<Report> {
        let conv = FlopsConvention::megatron(seq, Recompute::None);
        Ok(Report {
            model: *model,
            counts: model.param_counts()?,
            include_mtp,
            seq,
            seq_is_default: false,
            matmul: flops::matmul_flops_per_token(model, &conv)?,
            summary: flops::summary(model, seq)?,
            palm_non_embedding: flops::palm_flops_per_token(
                model,
                seq,
                ParamBasis::NonEmbedding,
                false,
            )?,
            causal: flops::matmul_flops_per_token(
                model,
                &FlopsConvention {
                    causal: true,
                    ..conv
                },
            )?,
            layout: ParallelLayout::default(),
            training: None,
            device: None,
            inference: None,
            vision: None,
        })
    }

    /// The language model's parameters, with the multi-token-prediction modules when asked
    /// for.
    fn language_total(&self) -> u64 {
        self.counts.total_params
            + if self.include_mtp {
                self.counts.mtp_params
            } else {
                0
            }
    }

    /// The vision encoder's parameters: tower and projector (zero without one).
    fn vision_counts(&self) -> lmshape::model::vision::VisionCounts {
        self.vision.map(|v| or_die(v.params())).unwrap_or_default()
    }

    /// Everything the checkpoint stores: the language model and the vision encoder.
    fn total(&self) -> u64 {
        let v = self.vision_counts();
        self.language_total() + v.vision_encoder_params + v.multimodal_projector_params
    }

    /// The vision encoder as JSON: its shape, parameters and forward FLOPs per image.
    fn vision_json(&self) -> serde_json::Value {
        match &self.vision {
            Some(v) => {
                let side = v.image_side();
                json!({
                    "encoder": v,
                    "image_side_pixels": side,
                    "image_side_assumed": v.tower.image_size.is_none(),
                    "forward_flops_per_image": or_die(v.forward_flops_per_image(side)),
                })
            }
            None => serde_json::Value::Null,
        }
    }

    /// `N_active` of the `6·N_active` rule of thumb: the parameters a token multiplies by (the
    /// input embedding is a lookup, not a matmul).
    fn matmul_active(&self) -> f64 {
        self.counts.active_non_embedding_input_params as f64
    }

    fn to_json(&self) -> serde_json::Value {
        let c = &self.counts;
        let s = &self.summary;
        let mut model = serde_json::to_value(self.model).unwrap_or_default();
        if let (Some(moe), Some(obj)) = (self.model.moe(), model.get_mut("moe")) {
            let dense = self.model.num_layers() - moe.moe_layers_in(0..self.model.num_layers());
            obj["dense_layers"] = json!(dense);
        }
        let by_component = json!({
            "token_embedding": c.token_embedding_params,
            "position_embedding": c.position_embedding_params,
            "embedding_norm": c.embedding_norm_params,
            "embedding_projection": c.embedding_projection_params,
            "attention": c.attention_params,
            "mlp": c.mlp_params,
            "router": c.router_params,
            "routed_experts": c.routed_expert_params,
            "shared_experts": c.shared_expert_params,
            "layer_norms": c.layer_norm_params,
            "final_norm": c.final_norm_params,
            "output_head": c.output_head_params,
            "vision_encoder": self.vision_counts().vision_encoder_params,
            "multimodal_projector": self.vision_counts().multimodal_projector_params,
        });
        let mut params = json!({
            "total": self.total(),
            "language_model": self.language_total(),
            "active": c.active_params,
            "active_non_embedding_input": c.active_non_embedding_input_params,
            "mtp": c.mtp_params,
            "mtp_included": self.include_mtp,
            "non_embedding": c.non_embedding_params,
            "embedding": c.embedding_params,
            "per_layer": c.layer.total_params(),
        });
        // Each component also sits at the top level, where scripts have read it.
        for (key, value) in by_component.as_object().into_iter().flatten() {
            params[key.as_str()] = value.clone();
        }
        params["by_component"] = by_component;
        json!({
            "model": model,
            "vision": self.vision_json(),
            "params": params,
            "flops_per_token": {
                "seq_len": self.seq,
                "convention": "every matmul of the layers and the logits, full attention, backward = 2x forward (Narayanan et al. 2021 derivation of eq. 3)",
                "forward": self.matmul.forward_flops,
                "training": self.matmul.model_flops(),
                "forward_active": 2.0 * self.matmul_active(),
                "training_active": lmshape::scaling::FLOPS_PER_PARAM_TOKEN * self.matmul_active(),
                "training_causal": self.causal.model_flops(),
                "kaplan_forward": s.kaplan_forward,
                "kaplan_training": s.kaplan_training,
                "palm_model": s.palm_model,
                "palm_model_non_embedding": self.palm_non_embedding,
                "megatron_full_recompute": s.megatron_full_recompute,
                "chinchilla_forward": s.chinchilla.forward_flops,
                "chinchilla_training": s.chinchilla.model_flops(),
            },
            "memory": self.training.map(|t| {
                let mut v = json!({
                "layout": self.layout,
                "training": {
                    "weights_bytes": t.peak.weights_bytes,
                    "gradients_bytes": t.peak.gradients_bytes,
                    "optimizer_bytes": t.peak.optimizer_bytes,
                    "activations_bytes": t.peak.activations_bytes,
                    "logits_bytes": t.peak.logits_bytes,
                    "transient_bytes": t.peak.transient_bytes,
                    "peak_moment": t.peak.peak_moment,
                    "total_bytes": t.peak.total_bytes,
                    "stage": t.peak.stage,
                    "params_on_rank": t.peak.params_on_rank,
                    "in_flight_micro_batches": t.peak.in_flight_micro_batches,
                    "stages": {"first": t.first, "middle": t.middle, "last": t.last},
                    "by_part": {
                        "weights_bytes": t.peak.weights_bytes,
                        "gradients_bytes": t.peak.gradients_bytes,
                        "optimizer_bytes": t.peak.optimizer_bytes,
                        "activations_bytes": t.peak.activations_bytes,
                        "transient_bytes": t.peak.transient_bytes,
                        "experts_bytes": t.peak.experts_bytes,
                    },
                },
                "inference": self.inference,
                });
                if let Some(d) = &self.device {
                    let training = &mut v["training"];
                    training["framework"] = json!(d.framework.to_string());
                    let peak = d.peak();
                    for (key, value) in d.stage_json(&peak).as_object().into_iter().flatten() {
                        if key != "allocated_bytes" {
                            training[key.as_str()] = value.clone();
                        }
                    }
                    // The buffers alive at the peak moment, inside the allocated peak.
                    training["buffers_bytes"] = json!(t.peak.transient_bytes);
                    training["total_bytes"] = json!(peak.allocated_bytes);
                    for (name, stage) in [("first", &d.first), ("middle", &d.middle), ("last", &d.last)] {
                        if let (Some(obj), Some(extra)) = (
                            training["stages"][name].as_object_mut(),
                            d.stage_json(stage).as_object().cloned(),
                        ) {
                            obj.extend(extra);
                        }
                    }
                }
                v
            }),
        })
    }

    /// The vision encoder's lines: the language model, tower, projector and checkpoint total,
    /// and the FLOPs of one image.
    fn print_vision(&self) {
        let Some(v) = &self.vision else {
            return;
        };
        let c = self.vision_counts();
        let t = &v.tower;
        outln!(
            "\nvision encoder: {} tower, {} layers × {} hidden (mlp {}, {} heads), patch {}{}",
            match t.kind {
                lmshape::model::vision::TowerKind::Siglip { .. } => "SigLIP",
                lmshape::model::vision::TowerKind::Clip => "CLIP",
                lmshape::model::vision::TowerKind::Pixtral => "Pixtral",
                lmshape::model::vision::TowerKind::Qwen2Vl => "Qwen2-VL",
                lmshape::model::vision::TowerKind::Qwen25Vl => "Qwen2.5-VL",
            },
            t.num_layers,
            t.hidden_size,
            t.intermediate_size,
            t.num_heads,
            t.patch_size,
            t.image_size
                .map_or(", dynamic resolution".to_string(), |s| format!(", {s} px"))
        );
        for (name, n) in [
            ("language model", self.language_total()),
            ("vision encoder", c.vision_encoder_params),
            ("multimodal projector", c.multimodal_projector_params),
            ("checkpoint total", self.total()),
        ] {
            outln!("  {name:<24}{:>20} {:>8}", grouped(n), si(n as f64));
        }
        let side = v.image_side();
        outln!(
            "  forward FLOPs per image: {:.3e} at {side} × {side} px{}",
            or_die(v.forward_flops_per_image(side)),
            if t.image_size.is_none() {
                " (assumed: the tower takes any resolution)"
            } else {
                ""
            }
        );
        outln!("  (FLOPs per token, memory and planning below describe the language model)");
    }

    fn print(&self, path: &str) {
        self.print_architecture(path);
        self.print_params();
        self.print_vision();
        self.print_flops();
        self.print_training();
        self.print_inference();
    }

    /// The model's dimensions, experts, latent attention and sliding windows.
    fn print_architecture(&self, path: &str) {
        let m = &self.model;
        outln!("{path}");
        outln!(
            "  vocab {}  hidden {}  layers {}  heads {} (kv {}, dim {})  ffn {}  positions {}",
            m.vocab_size(),
            m.hidden_size(),
            m.num_layers(),
            m.num_heads(),
            m.num_kv_heads(),
            m.head_dim(),
            m.ffn_size(),
            m.max_positions()
        );
        if let Some(e) = &m.moe() {
            outln!(
                "  experts {} (top {}, width {}), shared {} (width {}), dense layers {}",
                e.num_experts,
                e.top_k,
                e.expert_ffn_size,
                e.num_shared_experts,
                e.shared_ffn_size,
                m.num_layers() - e.moe_layers_in(0..m.num_layers())
            );
        }
        if let lmshape::model::Attention::MultiLatent(a) = &m.attention() {
            outln!(
                "  latent attention: q rank {}, kv rank {}, qk {} + rope {}, v {}",
                a.q_lora_rank.map_or("none".to_string(), |r| r.to_string()),
                a.kv_lora_rank,
                a.qk_nope_head_dim,
                a.qk_rope_head_dim,
                a.v_head_dim
            );
        }
        if let Some(w) = &m.local_attention() {
            outln!(
                "  sliding window {} tokens on {} of every {} layers ({} of {})",
                w.window,
                w.local_layers,
                w.period,
                w.local_layer_count(m.num_layers()),
                m.num_layers()
            );
        }
    }

    /// Parameters by component, total and active per token.
    fn print_params(&self) {
        let m = &self.model;
        let c = &self.counts;
        outln!("\nparameters {:>42}  {:>20}", "total", "active per token");
        let used_share = m
            .moe()
            .map_or(1.0, |e| e.top_k as f64 / e.num_experts as f64);
        let rows = [
            (
                "token embedding",
                c.token_embedding_params,
                c.token_embedding_params,
            ),
            (
                "position embedding",
                c.position_embedding_params,
                c.position_embedding_params,
            ),
            (
                "embedding norm",
                c.embedding_norm_params,
                c.embedding_norm_params,
            ),
            (
                "embedding projections",
                c.embedding_projection_params,
                c.embedding_projection_params,
            ),
            ("attention", c.attention_params, c.attention_params),
            ("dense mlp", c.mlp_params, c.mlp_params),
            ("router", c.router_params, c.router_params),
            (
                "routed experts",
                c.routed_expert_params,
                (c.routed_expert_params as f64 * used_share).round() as u64,
            ),
            (
                "shared experts",
                c.shared_expert_params,
                c.shared_expert_params,
            ),
            ("layer norms", c.layer_norm_params, c.layer_norm_params),
            ("final norm", c.final_norm_params, c.final_norm_params),
            (
                "output head (untied)",
                c.output_head_params,
                c.output_head_params,
            ),
        ];
        for (name, n, a) in rows {
            if n == 0 {
                continue;
            }
            outln!(
                "  {name:<24}{:>20} {:>8}  {:>20}",
                grouped(n),
                si(n as f64),
                grouped(a)
            );
        }
        outln!(
            "  {:<24}{:>20} {:>8}  {:>20} {:>8}",
            if self.vision.is_some() {
                "language model total"
            } else {
                "total"
            },
            grouped(c.total_params),
            si(c.total_params as f64),
            grouped(c.active_params),
            si(c.active_params as f64)
        );
        outln!(
            "  {:<24}{:>20} {:>8}  {:>20} {:>8}",
            "without input embedding",
            "",
            "",
            grouped(c.active_non_embedding_input_params),
            si(c.active_non_embedding_input_params as f64)
        );
        outln!(
            "  {:<24}{:>20} {:>8}",
            "non-embedding (Kaplan N)",
            grouped(c.non_embedding_params),
            si(c.non_embedding_params as f64)
        );
        if c.mtp_params > 0 {
            outln!(
                "  {:<24}{:>20} {:>8}  ({})",
                "multi-token prediction",
                grouped(c.mtp_params),
                si(c.mtp_params as f64),
                if self.include_mtp {
                    "counted: --include-mtp"
                } else {
                    "not in the total; --include-mtp counts it"
                }
            );
            if self.include_mtp {
                outln!(
                    "  {:<24}{:>20} {:>8}",
                    "total with MTP",
                    grouped(self.language_total()),
                    si(self.language_total() as f64)
                );
            }
        }
    }

    /// FLOPs per token under each convention.
    fn print_flops(&self) {
        let m = &self.model;
        let s = &self.summary;
        outln!(
            "\nFLOPs per token at context {}{}",
            self.seq,
            if self.seq_is_default {
                " (the default training context; --seq-len to change)"
            } else {
                ""
            }
        );
        let rows = [
            ("matmul forward", self.matmul.forward_flops),
            ("matmul training (3x)", self.matmul.model_flops()),
            ("  same, causal attention", self.causal.model_flops()),
            (
                "6·N_active (rule of thumb)",
                lmshape::scaling::FLOPS_PER_PARAM_TOKEN * self.matmul_active(),
            ),
            ("Kaplan forward", s.kaplan_forward),
            ("Kaplan training", s.kaplan_training),
            ("PaLM model FLOPs", s.palm_model),
            ("Megatron eq.3 (recompute)", s.megatron_full_recompute),
            ("Chinchilla app. F", s.chinchilla.model_flops()),
        ];
        // Eq. 3 is written for a dense GPT (ffn 4h, H·hd = h); it says nothing of experts.
        let dense_gpt = m.moe().is_none() && m.attention() == lmshape::model::Attention::Standard;
        for (name, f) in rows {
            if name.starts_with("Megatron") && !dense_gpt {
                continue;
            }
            outln!("  {name:<28}{f:>14.4e}");
        }
    }

    /// Training memory per stage and under the framework.
    fn print_training(&self) {
        if let Some(t) = &self.training {
            let l = &self.layout;
            outln!(
                "\ntraining memory per GPU: tp {} pp {} dp {} zero {} sp {} micro {} global {} seq {} recompute {}",
                l.tp(),
                l.pp(),
                l.dp(),
                l.zero().number(),
                l.sequence_parallel(),
                l.micro_batch(),
                l.global_batch(),
                l.seq_len(),
                l.recompute()
            );
            outln!(
                "  {:<10}{:>18}{:>18}{:>18}{:>18}{:>18}{:>18}  peak moment",
                "stage",
                "weights",
                "gradients",
                "optimizer",
                "activations",
                "transient",
                "total"
            );
            let mut shown = Vec::new();
            for s in [t.first, t.middle, t.last] {
                if shown.contains(&s.stage) {
                    continue;
                }
                shown.push(s.stage);
                outln!(
                    "  {:<10}{:>18}{:>18}{:>18}{:>18}{:>18}{:>18}  {}",
                    s.stage.to_string(),
                    gib(s.weights_bytes),
                    gib(s.gradients_bytes),
                    gib(s.optimizer_bytes),
                    gib(s.activations_bytes),
                    gib(s.transient_bytes),
                    gib(s.total_bytes),
                    s.peak_moment
                );
            }
            outln!(
                "  most loaded: {} stage, {}",
                t.peak.stage,
                gib(t.peak.total_bytes)
            );
            if let Some(d) = &self.device {
                let p = d.peak();
                outln!(
                    "  under {}: allocated {}, reserved {} (allocator), device {} (with CUDA context, workspaces, NCCL)",
                    d.framework,
                    gib(p.allocated_bytes),
                    gib(p.reserved_bytes),
                    gib(p.device_bytes)
                );
                if let Some(g) = &d.gpu {
                    let (verdict, margin) = p.verdict(g.memory_bytes);
                    outln!(
                        "  on {} ({}): {verdict}, margin {}{}; band +{} ({})",
                        g.name,
                        gib(g.memory_bytes),
                        if margin < 0 { "-" } else { "" },
                        gib(margin.unsigned_abs()),
                        gib(p.band_bytes),
                        memory::FrameworkProfile::of(d.framework).band_basis()
                    );
                }
            }
        }
    }

    /// Inference memory per GPU.
    fn print_inference(&self) {
        if let Some(i) = &self.inference {
            outln!(
                "\ninference memory per GPU: weights {} + KV cache {} = {}",
                gib(i.weights_bytes),
                gib(i.kv_cache_bytes),
                gib(i.total_bytes)
            );
        }
    }
}
