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
use lmshape::memory::{self, Precision};
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
    let mut opts = args.setup.framework_options(layout.zero());
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
        optimizer: opts
            .optimizer
            .unwrap_or(args.setup.framework.default_optimizer()),
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
    optimizer: lmshape::framework::Optimizer,
    first: memory::DeviceMemory,
    middle: memory::DeviceMemory,
    last: memory::DeviceMemory,
    gpu: Option<lmshape::hardware::GpuSpec>,
}

impl Report {
    /// Per-stage stacked bars — weights, gradients, optimizer states, activations, transient
    /// buffers at the peak moment, the framework's own buffers, allocator, runtime — with the
    /// card's capacity as a line when a GPU is given.
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
                    "framework buffers",
                    gib(m.framework_buffers_bytes),
                    RGBColor(160, 82, 45),
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

    /// A stage's device figures, and its verdict when a GPU is given.
    fn stage_record(&self, d: &memory::DeviceMemory) -> StageDeviceRecord {
        StageDeviceRecord {
            allocated_bytes: d.allocated_bytes,
            reserved_bytes: d.reserved_bytes,
            device_bytes: d.device_bytes,
            band_bytes: d.band_bytes,
            verdict: self.gpu.as_ref().map(|g| {
                let (verdict, margin_bytes) = d.verdict(g.memory_bytes);
                VerdictRecord {
                    fits: verdict == memory::Verdict::Fits,
                    verdict,
                    margin_bytes,
                }
            }),
        }
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

    /// The vision encoder: its shape, parameters and forward FLOPs per image.
    fn vision_record(&self) -> Option<VisionRecord<'_>> {
        self.vision.as_ref().map(|v| {
            let side = v.image_side();
            VisionRecord {
                encoder: v,
                image_side_pixels: side,
                image_side_assumed: v.tower.image_size.is_none(),
                forward_flops_per_image: or_die(v.forward_flops_per_image(side)),
            }
        })
    }

    /// `N_active` of the `6·N_active` rule of thumb: the parameters a token multiplies by (the
    /// input embedding is a lookup, not a matmul).
    fn matmul_active(&self) -> f64 {
        self.counts.active_non_embedding_input_params as f64
    }

    /// The model as the library serialises it, with its leading dense layers beside the
    /// mixture-of-experts settings.
    fn model_json(&self) -> serde_json::Value {
        let mut model = serde_json::to_value(self.model).unwrap_or_default();
        if let (Some(moe), Some(obj)) = (self.model.moe(), model.get_mut("moe")) {
            let dense = self.model.num_layers() - moe.moe_layers_in(0..self.model.num_layers());
            obj["dense_layers"] = serde_json::json!(dense);
        }
        model
    }

    fn params_record(&self) -> ParamsRecord {
        let c = &self.counts;
        let v = self.vision_counts();
        let components = Components {
            token_embedding: c.token_embedding_params,
            position_embedding: c.position_embedding_params,
            embedding_norm: c.embedding_norm_params,
            embedding_projection: c.embedding_projection_params,
            attention: c.attention_params,
            mlp: c.mlp_params,
            router: c.router_params,
            routed_experts: c.routed_expert_params,
            shared_experts: c.shared_expert_params,
            layer_norms: c.layer_norm_params,
            final_norm: c.final_norm_params,
            output_head: c.output_head_params,
            vision_encoder: v.vision_encoder_params,
            multimodal_projector: v.multimodal_projector_params,
        };
        ParamsRecord {
            total: self.total(),
            language_model: self.language_total(),
            active: c.active_params,
            active_non_embedding_input: c.active_non_embedding_input_params,
            mtp: c.mtp_params,
            mtp_included: self.include_mtp,
            non_embedding: c.non_embedding_params,
            embedding: c.embedding_params,
            per_layer: c.layer.total_params(),
            components,
            by_component: components,
        }
    }

    fn flops_record(&self) -> FlopsRecord {
        let s = &self.summary;
        FlopsRecord {
            seq_len: self.seq,
            convention: "every matmul of the layers and the logits, full attention, backward = 2x forward (Narayanan et al. 2021 derivation of eq. 3)",
            forward: self.matmul.forward_flops,
            training: self.matmul.model_flops(),
            forward_active: 2.0 * self.matmul_active(),
            training_active: lmshape::scaling::FLOPS_PER_PARAM_TOKEN * self.matmul_active(),
            training_causal: self.causal.model_flops(),
            kaplan_forward: s.kaplan_forward,
            kaplan_training: s.kaplan_training,
            palm_model: s.palm_model,
            palm_model_non_embedding: self.palm_non_embedding,
            megatron_full_recompute: s.megatron_full_recompute,
            chinchilla_forward: s.chinchilla.forward_flops,
            chinchilla_training: s.chinchilla.model_flops(),
        }
    }

    /// Training memory at the peak, per stage and by part, with the device figures and the
    /// verdict under the framework when there are some.
    fn training_record(&self, t: &memory::TrainingMemoryReport) -> TrainingRecord {
        let p = &t.peak;
        let d = self.device.as_ref();
        let stage = |m: &memory::TrainingMemory, dev: Option<&memory::DeviceMemory>| StageRecord {
            memory: *m,
            device: d.zip(dev).map(|(d, dev)| d.stage_record(dev)),
        };
        TrainingRecord {
            weights_bytes: p.weights_bytes,
            gradients_bytes: p.gradients_bytes,
            optimizer_bytes: p.optimizer_bytes,
            activations_bytes: p.activations_bytes,
            logits_bytes: p.logits_bytes,
            transient_bytes: p.transient_bytes,
            peak_moment: p.peak_moment,
            // With a framework, the allocated figure of the stage whose device figure is the
            // largest.
            total_bytes: d.map_or(p.total_bytes, |d| d.peak().allocated_bytes),
            stage: p.stage,
            params_on_rank: p.params_on_rank,
            in_flight_micro_batches: p.in_flight_micro_batches,
            stages: StagesRecord {
                first: stage(&t.first, d.map(|d| &d.first)),
                middle: stage(&t.middle, d.map(|d| &d.middle)),
                last: stage(&t.last, d.map(|d| &d.last)),
            },
            by_part: PartsRecord {
                weights_bytes: p.weights_bytes,
                gradients_bytes: p.gradients_bytes,
                optimizer_bytes: p.optimizer_bytes,
                activations_bytes: p.activations_bytes,
                transient_bytes: p.transient_bytes,
                experts_bytes: p.experts_bytes,
            },
            device: d.map(|d| {
                let peak = d.stage_record(&d.peak());
                TrainingDeviceRecord {
                    framework: d.framework.to_string(),
                    optimizer: d.optimizer.to_string(),
                    reserved_bytes: peak.reserved_bytes,
                    device_bytes: peak.device_bytes,
                    band_bytes: peak.band_bytes,
                    verdict: peak.verdict,
                    // The buffers alive at the peak moment, inside the allocated peak.
                    buffers_bytes: p.transient_bytes,
                }
            }),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let record = InspectRecord {
            model: self.model_json(),
            vision: self.vision_record(),
            params: self.params_record(),
            flops_per_token: self.flops_record(),
            memory: self.training.as_ref().map(|t| MemoryRecord {
                layout: self.layout,
                training: self.training_record(t),
                inference: self.inference,
            }),
        };
        // Through a JSON value, so the keys print sorted as every tool prints them.
        serde_json::to_value(&record).unwrap_or_default()
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
                "  {:<10}{:>18}{:>18}{:>18}{:>18}{:>18}{:>18}{:>18}  peak moment",
                "stage",
                "weights",
                "gradients",
                "optimizer",
                "activations",
                "transient",
                "buffers",
                "total"
            );
            let mut shown = Vec::new();
            for s in [t.first, t.middle, t.last] {
                if shown.contains(&s.stage) {
                    continue;
                }
                shown.push(s.stage);
                outln!(
                    "  {:<10}{:>18}{:>18}{:>18}{:>18}{:>18}{:>18}{:>18}  {}",
                    s.stage.to_string(),
                    gib(s.weights_bytes),
                    gib(s.gradients_bytes),
                    gib(s.optimizer_bytes),
                    gib(s.activations_bytes),
                    gib(s.transient_bytes),
                    gib(s.framework_buffers_bytes),
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

/// `inspect_config --json`: the model, its vision encoder, parameters, FLOPs per token and
/// memory.
#[derive(serde::Serialize)]
struct InspectRecord<'a> {
    model: serde_json::Value,
    vision: Option<VisionRecord<'a>>,
    params: ParamsRecord,
    flops_per_token: FlopsRecord,
    memory: Option<MemoryRecord>,
}

/// The vision encoder, the image side its FLOPs are counted at, and those FLOPs.
#[derive(serde::Serialize)]
struct VisionRecord<'a> {
    encoder: &'a lmshape::model::vision::VisionEncoder,
    image_side_pixels: u64,
    image_side_assumed: bool,
    forward_flops_per_image: f64,
}

/// Parameters per component (printed at the top level, where scripts have read them, and
/// under `by_component`).
#[derive(serde::Serialize, Clone, Copy)]
struct Components {
    token_embedding: u64,
    position_embedding: u64,
    embedding_norm: u64,
    embedding_projection: u64,
    attention: u64,
    mlp: u64,
    router: u64,
    routed_experts: u64,
    shared_experts: u64,
    layer_norms: u64,
    final_norm: u64,
    output_head: u64,
    vision_encoder: u64,
    multimodal_projector: u64,
}

/// The parameter counts.
#[derive(serde::Serialize)]
struct ParamsRecord {
    total: u64,
    language_model: u64,
    active: u64,
    active_non_embedding_input: u64,
    mtp: u64,
    mtp_included: bool,
    non_embedding: u64,
    embedding: u64,
    per_layer: u64,
    #[serde(flatten)]
    components: Components,
    by_component: Components,
}

/// FLOPs per token under each named convention.
#[derive(serde::Serialize)]
struct FlopsRecord {
    seq_len: u64,
    convention: &'static str,
    forward: f64,
    training: f64,
    forward_active: f64,
    training_active: f64,
    training_causal: f64,
    kaplan_forward: f64,
    kaplan_training: f64,
    palm_model: f64,
    palm_model_non_embedding: f64,
    megatron_full_recompute: f64,
    chinchilla_forward: f64,
    chinchilla_training: f64,
}

/// The layout, training memory and inference memory.
#[derive(serde::Serialize)]
struct MemoryRecord {
    layout: ParallelLayout,
    training: TrainingRecord,
    inference: Option<memory::InferenceMemory>,
}

/// Training memory at the peak (see [`Report::training_record`]).
#[derive(serde::Serialize)]
struct TrainingRecord {
    weights_bytes: u64,
    gradients_bytes: u64,
    optimizer_bytes: u64,
    activations_bytes: u64,
    logits_bytes: u64,
    transient_bytes: u64,
    peak_moment: memory::PeakMoment,
    total_bytes: u64,
    stage: memory::StageKind,
    params_on_rank: u64,
    in_flight_micro_batches: u64,
    stages: StagesRecord,
    by_part: PartsRecord,
    #[serde(flatten)]
    device: Option<TrainingDeviceRecord>,
}

/// The first, a middle and the last stage.
#[derive(serde::Serialize)]
struct StagesRecord {
    first: StageRecord,
    middle: StageRecord,
    last: StageRecord,
}

/// A stage's training memory, with its device figures under the framework when given.
#[derive(serde::Serialize)]
struct StageRecord {
    #[serde(flatten)]
    memory: memory::TrainingMemory,
    #[serde(flatten)]
    device: Option<StageDeviceRecord>,
}

/// The peak's parts.
#[derive(serde::Serialize)]
struct PartsRecord {
    weights_bytes: u64,
    gradients_bytes: u64,
    optimizer_bytes: u64,
    activations_bytes: u64,
    transient_bytes: u64,
    experts_bytes: u64,
}

/// A stage's device figures.
#[derive(serde::Serialize)]
struct StageDeviceRecord {
    allocated_bytes: u64,
    reserved_bytes: u64,
    device_bytes: u64,
    band_bytes: u64,
    #[serde(flatten)]
    verdict: Option<VerdictRecord>,
}

/// The device figures of the most loaded stage under the framework.
#[derive(serde::Serialize)]
struct TrainingDeviceRecord {
    framework: String,
    optimizer: String,
    reserved_bytes: u64,
    device_bytes: u64,
    band_bytes: u64,
    #[serde(flatten)]
    verdict: Option<VerdictRecord>,
    buffers_bytes: u64,
}

/// Against the card given with `--gpu`.
#[derive(serde::Serialize)]
struct VerdictRecord {
    fits: bool,
    verdict: memory::Verdict,
    margin_bytes: i64,
}
