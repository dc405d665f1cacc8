//! Command-line pieces shared by the examples: value parsers that name the rule a value breaks,
//! and the flags several examples take, each defined once.

use clap::builder::{PossibleValue, TypedValueParser};
use clap::{Args, ValueEnum};
use lmshape::hardware::{AnalyticalTimer, CachedTimer, GemmTimer, GpuSpec};
use lmshape::step::Cluster;
use lmshape::system::{SystemProfile, SystemTimer};
use std::sync::Arc;

/// A whole number, written plainly or in scientific notation (`350e9`, `1.8e19`).
pub fn count(s: &str) -> Result<u64, String> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    match s.parse::<f64>() {
        // u64::MAX is 1.8446744e19; f64 can hold every whole number up to 2^64.
        Ok(f)
            if f.is_finite()
                && f >= 0.0
                && f.fract() == 0.0
                && f < 18_446_744_073_709_551_616.0 =>
        {
            Ok(f as u64)
        }
        Ok(f) if f.is_finite() && f.fract() != 0.0 => Err(format!(
            "expected a whole number, got {s} (it has a fraction)"
        )),
        Ok(_) => Err(format!(
            "expected a whole number from 0 to 18446744073709551615, got {s}"
        )),
        Err(_) => Err(format!(
            "expected a whole number such as 2048 or 350e9, got {s:?}"
        )),
    }
}

/// A whole number above zero.
pub fn positive_count(s: &str) -> Result<u64, String> {
    match count(s)? {
        0 => Err("must be at least 1, got 0".into()),
        n => Ok(n),
    }
}

/// A finite number above zero.
pub fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        Ok(x) => Err(format!("must be a finite number above 0, got {x}")),
        Err(_) => Err(format!("expected a number, got {s:?}")),
    }
}

/// A finite number at or above zero.
pub fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        Ok(x) => Err(format!("must be a finite number of at least 0, got {x}")),
        Err(_) => Err(format!("expected a number, got {s:?}")),
    }
}

/// A fraction in `[0, 1)`.
pub fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..1.0).contains(&x) => Ok(x),
        Ok(x) => Err(format!("must be at least 0 and below 1, got {x}")),
        Err(_) => Err(format!("expected a number, got {s:?}")),
    }
}

/// A fraction in `(0, 1]`.
pub fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x <= 1.0 => Ok(x),
        Ok(x) => Err(format!("must be above 0 and at most 1, got {x}")),
        Err(_) => Err(format!("expected a number, got {s:?}")),
    }
}

/// The edit distance between two names (Levenshtein 1966), for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The known name closest to `name`: one of the same model first (`h100-80gb` → `h100-sxm`),
/// else the nearest by edit distance.
pub fn nearest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    let family = lower.split(['-', '_']).next().unwrap_or("");
    known
        .iter()
        .copied()
        .filter(|k| !family.is_empty() && k.split('-').next() == Some(family))
        .min_by_key(|k| distance(&lower, k))
        .or_else(|| {
            known
                .iter()
                .copied()
                .min_by_key(|k| distance(&lower, k))
                .filter(|k| distance(&lower, k) <= 3)
        })
}

/// A GPU preset by name; an unknown name lists the presets and suggests the nearest.
#[derive(Clone)]
pub struct GpuParser;

impl TypedValueParser for GpuParser {
    type Value = GpuSpec;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<GpuSpec, clap::Error> {
        let name = value.to_string_lossy();
        GpuSpec::by_name(&name).map_err(|_| {
            let names: Vec<String> = GpuSpec::presets().into_iter().map(|g| g.name).collect();
            let known: Vec<&str> = names.iter().map(String::as_str).collect();
            let hint = nearest(&name, &known)
                .map(|n| format!("; did you mean {n}?"))
                .unwrap_or_default();
            let flag = arg.map_or("--gpu".to_string(), |a| a.to_string());
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!(
                    "unknown gpu {name:?} for {flag}{hint} (known: {})\n",
                    known.join(", ")
                ),
            )
            .with_cmd(cmd)
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            GpuSpec::presets()
                .into_iter()
                .map(|g| PossibleValue::new(g.name)),
        ))
    }
}

/// The clusters the examples know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClusterKind {
    /// The GPU's vendor reference node (DGX: 8 GPUs, its datasheet network), Selene-class
    /// software.
    #[value(alias = "dgx")]
    Selene,
    /// Jean Zay's A100 partition as BigScience used it (4 × 100 Gb/s Omni-Path per node).
    #[value(alias = "jean_zay")]
    JeanZay,
}

/// The family flags of a shape search (plan, enumerate_shapes); defaults: BLOOM's.
#[derive(Debug, Clone, Args)]
pub struct FamilyArgs {
    /// Architecture family (bloom, gpt2, llama, ...).
    #[arg(long, value_name = "NAME", default_value = "bloom")]
    pub arch: String,
    /// Vocabulary before padding.
    #[arg(long, value_name = "V", default_value_t = 250880, value_parser = positive_count)]
    pub vocab: u64,
    /// Sequence length.
    #[arg(long, value_name = "S", default_value_t = 2048, value_parser = positive_count)]
    pub seq_len: u64,
}

impl FamilyArgs {
    /// The architecture `--arch` names.
    pub fn architecture(&self) -> lmshape::Result<lmshape::model::Architecture> {
        lmshape::model::Architecture::by_name(&self.arch)
    }
}

/// The cluster flags (plan, throughput, inspect_config, enumerate_shapes with `--sort speed`).
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// GPU model [default: a100-80gb, or the --system's GPU]. A GPU with a measured profile
    /// (a100-80gb, h100-sxm, h200, b200, gb200, b300, gb300) is timed by its DGX or NVL72
    /// profile unless --system says otherwise; the others by the analytical model.
    #[arg(long, value_name = "NAME", value_parser = GpuParser)]
    pub gpu: Option<GpuSpec>,
    /// Measured machine profile: a shipped name (dgx-a100, dgx-h100, dgx-h200, dgx-b200,
    /// gb200-nvl72, dgx-b300, gb300-nvl72, simumax-b200, jean-zay), `analytical` for the
    /// analytical model, or the path of a profile JSON (such as the calibrate example writes)
    /// [default: the GPU's DGX profile].
    #[arg(long, value_name = "NAME|PATH")]
    pub system: Option<String>,
    /// Cluster: the GPU's reference node, or BigScience's Jean Zay (with an A100: the
    /// jean-zay profile).
    #[arg(long, value_enum, default_value_t = ClusterKind::Selene)]
    pub cluster: ClusterKind,
    /// GPUs per node (default: the cluster's).
    #[arg(long, value_name = "N", value_parser = positive_count)]
    pub gpus_per_node: Option<u64>,
    /// Network per node in Gb/s (default: the cluster's).
    #[arg(long, value_name = "GBPS", value_parser = positive)]
    pub inter_node_gbps: Option<f64>,
    /// Multiplier on compute throughput for the software stack, above 0 and at most 1
    /// (default: 1.0, as fast as the measured kernels or the analytical model say).
    #[arg(long, value_name = "F", value_parser = share)]
    pub software_efficiency: Option<f64>,
    /// With the analytical model (--system analytical, or a GPU without a profile): use the
    /// software efficiency fitted to the framework's measured runs (megatron-core: 0.69 on
    /// GB200; megatron-deepspeed: 0.739 on A100).
    #[arg(long, conflicts_with = "software_efficiency")]
    pub calibrated_speed: bool,
    /// Overlap the data-parallel gradient reduction with the last backward pass.
    #[arg(long)]
    pub overlap_grad_reduce: bool,
    /// Overlap the distributed optimizer's weight all-gather with the next forward pass.
    #[arg(long)]
    pub overlap_param_gather: bool,
    /// Overlap the mixture-of-experts all-to-all with the shared experts' GEMMs.
    #[arg(long)]
    pub shared_expert_overlap: bool,
}

/// A machine the flags describe: the cluster, its GEMM timer, and what it rests on.
pub struct Machine {
    /// The cluster (with its measured profile, if any).
    pub cluster: Cluster,
    /// The GEMM timer: the profile's measured kernels, or the analytical model.
    pub timer: Box<dyn GemmTimer>,
}

impl Machine {
    /// The profile's name, or `analytical`.
    pub fn system_name(&self) -> String {
        self.cluster
            .system
            .as_ref()
            .map_or_else(|| "analytical".into(), |p| p.name.clone())
    }

    /// The profile's provenance as JSON (`null` for the analytical model).
    pub fn system_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.system_name(),
            "provenance": self.cluster.system.as_ref().map(|p| &p.provenance),
            "band_basis": self.band_basis(),
        })
    }

    /// What the speed band rests on, in words.
    pub fn band_basis(&self) -> String {
        match &self.cluster.system {
            Some(p) => p.band_basis(),
            None => format!(
                "unvalidated: the analytical model of {} (no measured profile of this GPU), so a wide default band",
                self.cluster.gpu.name
            ),
        }
    }
}

/// A profile named or at a path.
fn load_system(name: &str) -> Arc<SystemProfile> {
    if std::path::Path::new(name).is_file() {
        let text = super::read_input(name);
        return Arc::new(super::or_die(SystemProfile::from_json(&text)));
    }
    super::or_die(SystemProfile::shared(name))
}

impl ClusterArgs {
    /// The machine the flags describe, with `framework`'s fitted speed under
    /// `--calibrated-speed`. Exits with a message on contradictory flags.
    pub fn machine(&self, framework: lmshape::memory::Framework) -> Machine {
        let system = match (self.system.as_deref(), self.cluster, &self.gpu) {
            (Some("analytical"), _, _) => None,
            (Some(name), _, _) => Some(load_system(name)),
            (None, ClusterKind::JeanZay, gpu)
                if gpu.as_ref().is_none_or(|g| g.name == "a100-80gb") =>
            {
                Some(load_system("jean-zay"))
            }
            (None, ClusterKind::JeanZay, _) => None,
            (None, ClusterKind::Selene, gpu) => {
                let name = gpu.as_ref().map_or("a100-80gb", |g| g.name.as_str());
                lmshape::system::default_system_for_gpu(name).map(load_system)
            }
        };
        let mut cluster = match (&system, &self.gpu) {
            (Some(p), Some(g)) if g.name != p.gpu => super::die(&format!(
                "--gpu {} contradicts --system {}, a machine of {}",
                g.name, p.name, p.gpu
            )),
            (Some(p), _) => super::or_die(Cluster::from_system(p.clone())),
            (None, gpu) => {
                let gpu = gpu.clone().unwrap_or_else(GpuSpec::a100_80gb);
                match self.cluster {
                    ClusterKind::Selene => Cluster::reference_node(gpu),
                    ClusterKind::JeanZay => Cluster::jean_zay_with(gpu),
                }
            }
        };
        if self.calibrated_speed {
            if cluster.system.is_some() {
                super::die(
                    "--calibrated-speed applies the analytical model's fitted factor; with a measured profile, fit one to your runs with the calibrate example (or pass --system analytical)",
                );
            }
            cluster.software_efficiency =
                lmshape::step::SpeedProfile::of(framework).software_efficiency;
        }
        if let Some(n) = self.gpus_per_node {
            cluster.gpus_per_node = n;
        }
        if let Some(g) = self.inter_node_gbps {
            cluster.inter_node_bytes_per_s = g * 1e9 / 8.0;
            if let Some(p) = &mut cluster.system {
                Arc::make_mut(p).network.nic_bytes_per_s = g * 1e9 / 8.0;
            }
        }
        if let Some(f) = self.software_efficiency {
            cluster.software_efficiency = f;
        }
        cluster.overlap_dp_comm |= self.overlap_grad_reduce;
        cluster.overlap_param_gather |= self.overlap_param_gather;
        cluster.overlap_shared_experts |= self.shared_expert_overlap;
        let timer: Box<dyn GemmTimer> = match &cluster.system {
            Some(p) => Box::new(CachedTimer::new(super::or_die(SystemTimer::new(p.clone())))),
            None => Box::new(AnalyticalTimer::new(cluster.gpu.clone())),
        };
        Machine { cluster, timer }
    }
}

/// Activation recomputation, as the flags spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecomputeArg {
    /// Keep every activation.
    None,
    /// Recompute the attention core (Korthikanti et al. 2022).
    Selective,
    /// Recompute each layer from its input.
    Full,
    /// The least recomputation whose device figure fits the card.
    Auto,
}

impl From<RecomputeArg> for lmshape::Recompute {
    /// `auto` starts from none; the caller picks with `memory::least_recompute`.
    fn from(r: RecomputeArg) -> lmshape::Recompute {
        match r {
            RecomputeArg::None | RecomputeArg::Auto => lmshape::Recompute::None,
            RecomputeArg::Selective => lmshape::Recompute::Selective,
            RecomputeArg::Full => lmshape::Recompute::Full,
        }
    }
}

/// A ZeRO stage 0–3.
pub fn zero_stage(s: &str) -> Result<lmshape::ZeroStage, String> {
    lmshape::ZeroStage::from_number(count(s)?).map_err(|e| e.to_string())
}

/// The GEMM precision, as the flags spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// bf16 GEMMs.
    Bf16,
    /// FP8 GEMMs with per-tensor current scaling (Transformer Engine); needs an FP8 GPU.
    Fp8,
    /// FP8 GEMMs with MX block scaling (Blackwell).
    Mxfp8,
    /// FP8 GEMMs with delayed scaling (amax history; no extra pass over each input).
    Fp8Delayed,
}

impl From<PrecisionArg> for lmshape::memory::GemmPrecision {
    fn from(p: PrecisionArg) -> lmshape::memory::GemmPrecision {
        match p {
            PrecisionArg::Bf16 => lmshape::memory::GemmPrecision::Bf16,
            PrecisionArg::Fp8 => lmshape::memory::GemmPrecision::Fp8,
            PrecisionArg::Mxfp8 => lmshape::memory::GemmPrecision::Mxfp8,
            PrecisionArg::Fp8Delayed => lmshape::memory::GemmPrecision::Fp8Delayed,
        }
    }
}

/// The training-setup flags that decide activation memory and the memory-bound kernels.
#[derive(Debug, Clone, Args)]
pub struct SetupArgs {
    /// FlashAttention (no materialised attention scores).
    #[arg(long)]
    pub flash: bool,
    /// Train without dropout (no masks stored).
    #[arg(long)]
    pub no_dropout: bool,
    /// The data loader builds no attention masks (Megatron-LM's flag of the same name; by
    /// default each micro-batch brings its `s × s` causal mask to the GPU for its forward).
    #[arg(long)]
    pub no_create_attention_mask_in_dataloader: bool,
    /// Training framework: megatron-core, megatron-deepspeed, deepspeed or fsdp (its byte
    /// counts, buffers and allocator set the reserved and device figures).
    #[arg(long, value_name = "NAME", default_value = "megatron-core", value_parser = framework)]
    pub framework: lmshape::memory::Framework,
    /// Optimizer: megatron, deepspeed-zero, deepspeed-bf16 (DeepSpeed's BF16_Optimizer, as
    /// BLOOM trained: bf16 at --zero 0) or fsdp2 [default: the framework's usual one].
    #[arg(long, value_name = "NAME", value_parser = optimizer)]
    pub optimizer: Option<lmshape::framework::Optimizer>,
    /// Precision of the linear layers' GEMMs (FP8 adds casts and weight copies).
    #[arg(long, value_enum, default_value_t = PrecisionArg::Bf16)]
    pub precision: PrecisionArg,
    /// Mixture-of-experts capacity factor: each expert padded to F × its balanced share of
    /// tokens [default: dropless, balanced routing].
    #[arg(long, value_name = "F", value_parser = capacity_factor)]
    pub capacity_factor: Option<lmshape::parallel::CapacityFactor>,
}

/// A capacity factor in (0, 64].
pub fn capacity_factor(s: &str) -> Result<lmshape::parallel::CapacityFactor, String> {
    let x: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    lmshape::parallel::CapacityFactor::new(x).map_err(|e| e.to_string())
}

/// The terms the tools print, explained once (shown after `--help`).
pub const GLOSSARY: &str = "Terms:
  tp, pp, dp, cp, ep, etp  tensor, pipeline, data, context, expert and expert-tensor parallel
                           degrees; GPUs = tp x pp x dp x cp; ep x etp must divide tp x dp
  mb, micro-batch          sequences per forward/backward pass on one rank
  embedding slots          BigScience's pipeline split that counts the embedding and the head
                           as one layer each: (layers + 2) divisible by pp
  recompute                activations rebuilt in the backward: none, selective (the attention
                           core, Korthikanti et al. 2022) or full (each layer from its input)
  ZeRO 0-3                 what data parallelism shards: nothing, optimizer states, also
                           gradients, also weights (Rajbhandari et al. 2020)
  eq. 3                    Narayanan et al. 2021's FLOPs per step, 96 B s L h^2 (1 + s/6h +
                           V/16Lh), the count TFLOP/s per GPU is quoted in
  MFU                      model FLOPs (no recomputation) per second over the GPU's peak:
                           'of the bf16 peak' or 'of the precision's peak' says which
  Kaplan N                 parameters without the token and position embeddings (Kaplan et
                           al. 2020's N)
  C/6N                     tokens a budget of C FLOPs trains a model of N parameters on
  loss                     predicted training loss in nats per token under the chosen law
  device/GPU, allocated,   what nvidia-smi shows; torch.cuda.max_memory_allocated; the caching
  reserved                 allocator's pool
  transient, buffers       memory alive only at a stage's peak moment; what the framework keeps
                           for the whole run (Megatron-Core: a 16-bit weight-gradient
                           placeholder per weight shape, the output layer's all-gather buffer)
  band                     the range measured runs fell in around predictions like this one
                           (the profile's held-out error), carried by every speed figure
  ≈                        in plan's table: the prediction cannot tell this shape from the best";

/// A scaling law by name ([`lmshape::scaling::LawChoice`]'s names: kaplan, chinchilla-1,
/// chinchilla-2, chinchilla-3, besiroglu, chinchilla = besiroglu).
pub fn law(s: &str) -> Result<lmshape::scaling::LawChoice, String> {
    s.parse().map_err(|e: lmshape::Error| e.to_string())
}

/// The law file at `path` (as `fit_scaling_law --out` writes it).
fn read_law_file(path: &str) -> lmshape::scaling::LawFile {
    super::or_die(lmshape::scaling::LawFile::from_json(&super::read_input(
        path,
    )))
}

/// The law a `--law-file` holds.
pub fn law_file(path: &str) -> lmshape::scaling::LawChoice {
    lmshape::scaling::LawChoice::Fitted(read_law_file(path).law)
}

/// The bootstrap refits a `--law-file` holds (none when it has none).
pub fn law_file_samples(path: &str) -> Vec<lmshape::scaling::ParametricLaw> {
    read_law_file(path).bootstrap
}

/// An optimizer name.
pub fn optimizer(s: &str) -> Result<lmshape::framework::Optimizer, String> {
    s.parse().map_err(|e: lmshape::Error| e.to_string())
}

/// A framework name.
pub fn framework(s: &str) -> Result<lmshape::memory::Framework, String> {
    s.parse().map_err(|e: lmshape::Error| e.to_string())
}

impl SetupArgs {
    /// The memory options of these flags at ZeRO stage `zero` under the framework's profile
    /// ([`lmshape::memory::FrameworkProfile::memory_options`]: its byte counts).
    pub fn framework_options(&self, zero: lmshape::ZeroStage) -> lmshape::MemoryOptions {
        let profile = lmshape::memory::FrameworkProfile::of(self.framework);
        profile.memory_options(&self.memory_options(lmshape::MemoryOptions::default(), zero))
    }

    /// The memory options these flags choose at ZeRO stage `zero`, with `base` for the rest.
    /// Without `--optimizer`, the optimizer the framework's engine picks for bf16 at that stage
    /// ([`lmshape::framework::Framework::bf16_optimizer`]) — the same default in every tool.
    pub fn memory_options(
        &self,
        base: lmshape::MemoryOptions,
        zero: lmshape::ZeroStage,
    ) -> lmshape::MemoryOptions {
        lmshape::MemoryOptions {
            attention: if self.flash {
                lmshape::memory::AttentionKernel::Flash
            } else {
                lmshape::memory::AttentionKernel::Standard
            },
            dropout: !self.no_dropout,
            attention_mask_in_dataloader: !self.no_create_attention_mask_in_dataloader,
            gemm_precision: self.precision.into(),
            optimizer: Some(
                self.optimizer
                    .or(base.optimizer)
                    .unwrap_or(self.framework.bf16_optimizer(zero)),
            ),
            routing: self
                .capacity_factor
                .map_or(lmshape::parallel::Routing::Dropless, |factor| {
                    lmshape::parallel::Routing::Capacity { factor }
                }),
            ..base
        }
    }
}

/// How shapes are built beside width and depth (enumerate_shapes, plan): grouped-query
/// attention and the FFN width.
#[derive(Debug, Clone, Args)]
pub struct ShapeRuleArgs {
    /// Grouped-query attention with this many query heads per kv head (Llama 3 70B: 8).
    #[arg(long, value_name = "G", conflicts_with = "kv_heads", value_parser = positive_count)]
    pub kv_group: Option<u64>,
    /// A fixed number of kv heads per shape (1: multi-query; Llama 3: 8); `--gqa-groups` is
    /// the same count under Megatron's name (its query groups).
    #[arg(long, visible_alias = "gqa-groups", value_name = "K", value_parser = positive_count)]
    pub kv_heads: Option<u64>,
    /// FFN width: 4d, llama (8/3·d rounded up to 256), a multiple such as 3.5d (Llama 3,
    /// rounded up to 256) or a fixed width [default: 4d, llama for gated MLPs].
    #[arg(long, value_name = "RULE", value_parser = ffn_rule)]
    pub ffn: Option<lmshape::search::FfnRule>,
}

impl ShapeRuleArgs {
    /// The key/value-head rule the flags give (multi-head attention without them).
    pub fn kv_rule(&self) -> lmshape::search::KvHeads {
        use lmshape::search::KvHeads;
        match (self.kv_group, self.kv_heads) {
            (Some(g), _) => KvHeads::GroupSize(g),
            (None, Some(k)) => KvHeads::Fixed(k),
            (None, None) => KvHeads::MultiHead,
        }
    }
}

/// FFN width rule: `4d`, `llama`, a multiple `Xd` (to hundredths, rounded up to 256) or a
/// fixed width.
pub fn ffn_rule(s: &str) -> Result<lmshape::search::FfnRule, String> {
    use lmshape::search::FfnRule;
    match s {
        "4d" => Ok(FfnRule::FOUR_D),
        "llama" => Ok(FfnRule::LLAMA),
        x if x.ends_with('d') => {
            let r: f64 = x[..x.len() - 1].parse().map_err(|_| {
                format!("expected 4d, llama, a multiple like 3.5d or a width, got {x:?}")
            })?;
            if !(r.is_finite() && r > 0.0 && r <= 64.0) {
                return Err(format!("an FFN multiple in (0, 64], got {x:?}"));
            }
            Ok(FfnRule::Ratio {
                num: (r * 100.0).round() as u64,
                den: 100,
                multiple: 256,
            })
        }
        n => count(n)
            .map(FfnRule::Fixed)
            .map_err(|_| format!("expected 4d, llama, a multiple like 3.5d or a width, got {n:?}")),
    }
}

/// The flags that say how one training step runs: sequence, layout, machine and setup
/// (throughput, and each run of the calibrate example).
#[derive(Debug, Clone, Args)]
pub struct StepArgs {
    /// Tokens per sequence.
    #[arg(long, value_name = "S", default_value_t = 2048, value_parser = positive_count)]
    pub seq_len: u64,
    #[command(flatten)]
    pub layout: LayoutArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub setup: SetupArgs,
}

/// The layout flags (inspect_config, throughput). Defaults are one GPU; an example may set its
/// own with [`parse_with_defaults`].
#[derive(Debug, Clone, Args)]
pub struct LayoutArgs {
    /// Tensor-parallel degree.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive_count)]
    pub tp: u64,
    /// Pipeline-parallel degree.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive_count)]
    pub pp: u64,
    /// Data-parallel degree.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive_count)]
    pub dp: u64,
    /// Sequences per micro-batch.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive_count)]
    pub micro_batch: u64,
    /// Sequences per step [default: micro-batch × dp × pp].
    #[arg(long, value_name = "N", value_parser = positive_count)]
    pub global_batch: Option<u64>,
    /// Activation recomputation.
    #[arg(long, value_enum, default_value_t = RecomputeArg::None)]
    pub recompute: RecomputeArg,
    /// ZeRO stage over data parallelism (0–3).
    #[arg(long, value_name = "STAGE", default_value = "0", value_parser = zero_stage)]
    pub zero: lmshape::ZeroStage,
    /// Sequence parallelism over the tensor-parallel group.
    #[arg(long)]
    pub sequence_parallel: bool,
    /// Count the embedding and the head as pipeline slots, as BigScience did for BLOOM.
    #[arg(long)]
    pub embedding_slots: bool,
    /// Balance layers that do not split evenly over the pipeline (⌊L/pp⌋ or ⌈L/pp⌉ per stage;
    /// on by default with --embedding-slots, as DeepSpeed does).
    #[arg(long)]
    pub balanced_pipeline: bool,
    /// Layers of the first pipeline stage (Megatron-Core's uneven first stage).
    #[arg(long, value_name = "N", value_parser = positive_count)]
    pub first_stage_layers: Option<u64>,
    /// Layers of the last pipeline stage (Megatron-Core's uneven last stage).
    #[arg(long, value_name = "N", value_parser = positive_count)]
    pub last_stage_layers: Option<u64>,
    /// Expert-parallel degree (routed experts spread over this many ranks of tp × dp).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive_count)]
    pub ep: u64,
    /// Expert-tensor-parallel degree [default: --tp].
    #[arg(long, value_name = "N", value_parser = positive_count)]
    pub etp: Option<u64>,
    /// Virtual stages per pipeline rank (interleaved 1F1B when above 1; needs pp ≥ 2).
    #[arg(long, value_name = "V", default_value_t = 1, value_parser = positive_count)]
    pub virtual_stages: u64,
    /// Context-parallel degree (each sequence split over this many ranks).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive_count)]
    pub cp: u64,
    /// How context-parallel ranks exchange keys and values: p2p (ring attention) or a2a.
    #[arg(long, value_enum, default_value_t = CpCommArg::P2p)]
    pub cp_comm: CpCommArg,
}

/// Context-parallel communication, as the flags spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CpCommArg {
    /// Ring attention: key/value chunks passed around, overlapped with attention.
    P2p,
    /// All-to-all between sequence chunks and head groups (Ulysses).
    A2a,
}

impl LayoutArgs {
    /// The layout for sequences of `seq_len` tokens.
    pub fn layout(&self, seq_len: u64) -> lmshape::ParallelLayout {
        let builder = lmshape::ParallelLayout::builder()
            .tp(self.tp)
            .pp(self.pp)
            .dp(self.dp)
            .sequence_parallel(self.sequence_parallel)
            .zero(self.zero)
            .micro_batch(self.micro_batch)
            .global_batch(self.global_batch.unwrap_or_else(|| {
                self.micro_batch
                    .saturating_mul(self.dp)
                    .saturating_mul(self.pp)
            }))
            .seq_len(seq_len)
            .recompute(self.recompute.into())
            .schedule(match self.virtual_stages {
                1 => lmshape::Schedule::OneFOneB,
                v => lmshape::Schedule::Interleaved { virtual_stages: v },
            })
            .embedding_pipeline_slots(self.embedding_slots)
            // DeepSpeed balances the slots when they do not split evenly.
            .balanced_pipeline(self.balanced_pipeline || self.embedding_slots)
            .first_stage_layers(self.first_stage_layers)
            .last_stage_layers(self.last_stage_layers)
            .cp(self.cp)
            .cp_comm(match self.cp_comm {
                CpCommArg::P2p => lmshape::parallel::CpComm::P2p,
                CpCommArg::A2a => lmshape::parallel::CpComm::A2a,
            })
            .ep(self.ep)
            .etp(self.etp);
        super::or_die(builder.build())
    }
}

/// Parse the command line of `T` with some flags' defaults replaced (each `(flag id, value)`;
/// the help shows the replaced defaults).
pub fn parse_with_defaults<T: clap::Parser>(defaults: &[(&'static str, &'static str)]) -> T {
    let mut cmd = T::command();
    for &(id, value) in defaults {
        cmd = cmd.mut_arg(id, |a| a.default_value(value));
    }
    let matches = cmd.get_matches_from(super::args());
    T::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// End with a usage error of `T`'s command (status 2), as clap reports its own.
pub fn usage_error<T: clap::CommandFactory>(msg: String) -> ! {
    T::command()
        .error(clap::error::ErrorKind::ArgumentConflict, msg)
        .exit()
}
