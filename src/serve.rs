//! Serving a trained model on a measured machine: prefill and decode composed from the system
//! profile's kernel tables, the concurrency the KV cache holds, tokens per second per user and
//! per GPU, and dollars per million tokens.
//!
//! The model of a replica (`tp × attention_dp` GPUs per stage, `pp` stages):
//!
//! * **Memory**: each GPU keeps its weights (16-bit embeddings, the linear layers in the
//!   deployment's precision) and pages of KV cache (`kv_block_tokens` tokens each, exact per
//!   architecture: [`crate::memory::kv_cache_bytes`]) in what is left of
//!   `memory_utilization` of the card after the weights, one prefill chunk's activations and
//!   the runtime's reserve.
//! * **Prefill**: each layer's forward GEMMs at `m` = the chunk's tokens
//!   ([`crate::step::layer_gemms`]), attention from the profile's measured prefill tables,
//!   two tensor-parallel all-reduces per layer and, with experts, a dispatch and a combine
//!   all-to-all, all at their measured size-dependent costs.
//! * **Decode**: one step per output token for the batch: the same GEMMs at `m` = sequences
//!   per attention rank (the measured latencies at small `m` carry the weight streaming), for
//!   a mixture of experts only the experts the step touches (each streamed once), decode
//!   attention from the measured decode tables at the average KV length over the output, and
//!   latency-bound collectives.
//! * **Batching**: continuous by default — each decode step also prefills, on average, the
//!   `isl / osl` prompt tokens per sequence that keep the batch full; static batches prefill
//!   the whole batch first.
//!
//! Every speed carries a band ([`serving_band`]): wide, as no measured serving run is in the
//! repository to narrow it.

use crate::error::{Error, Result};
use crate::hardware::{Dtype, Gemm, GpuSpec};
use crate::memory::{InferenceQuery, MemoryOptions};
use crate::model::Transformer;
use crate::parallel::ParallelLayout;
use crate::step::{GemmRole, StepOptions};
use crate::system::{CollectiveOp, SystemProfile};
use serde::{Deserialize, Serialize};

/// Weight precision of the linear layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightPrecision {
    /// bf16.
    #[default]
    Bf16,
    /// FP8 with one scale per tensor.
    Fp8,
    /// FP8 with 128-element block scales (DeepSeek-V3's recipe).
    Fp8Block,
    /// NVFP4: 4-bit E2M1 values with an FP8 (E4M3) scale per 16 and an fp32 scale per
    /// tensor (NVIDIA, "Introducing NVFP4", 2025), Blackwell and later.
    Nvfp4,
    /// MXFP4: 4-bit E2M1 values with an E8M0 scale per 32 (OCP Microscaling Formats v1.0;
    /// gpt-oss's released weights), Blackwell and later.
    Mxfp4,
}

crate::error::named!(WeightPrecision, "weight precision", [
    Bf16 => "bf16",
    Fp8 => "fp8",
    Fp8Block => "fp8-block",
    Nvfp4 => "nvfp4",
    Mxfp4 => "mxfp4",
]);

impl WeightPrecision {
    /// Whole bytes per weight value on its own (FP4 packs two values per byte: see
    /// [`WeightPrecision::bits_per_weight`] for what a weight costs).
    pub fn bytes(self) -> u64 {
        self.dtype().bytes()
    }

    /// Bits a weight costs in memory with its share of the block scales: 16 (bf16), 8 (fp8; one
    /// fp32 scale per tensor), 8 + 32/128² (fp8-block), 4 + 8/16 (nvfp4), 4 + 8/32 (mxfp4).
    ///
    /// ```
    /// use lmshape::serve::WeightPrecision;
    /// assert_eq!(WeightPrecision::Nvfp4.bits_per_weight(), 4.5);
    /// assert_eq!(WeightPrecision::Mxfp4.bits_per_weight(), 4.25);
    /// ```
    pub fn bits_per_weight(self) -> f64 {
        let value = self.dtype().bits() as f64;
        value
            + match self {
                WeightPrecision::Bf16 | WeightPrecision::Fp8 => 0.0,
                WeightPrecision::Fp8Block => 32.0 / (128.0 * 128.0),
                WeightPrecision::Nvfp4 => 8.0 / 16.0,
                WeightPrecision::Mxfp4 => 8.0 / 32.0,
            }
    }

    /// Bytes of `params` weights with their scales ([`WeightPrecision::bits_per_weight`]),
    /// rounded up.
    ///
    /// # Errors
    /// Bytes that do not fit `u64`.
    pub fn weights_bytes(self, params: u64) -> Result<u64> {
        crate::error::to_u64(
            (params as f64 * self.bits_per_weight() / 8.0).ceil(),
            "weight bytes",
        )
    }

    /// The Tensor Core type the linear layers' GEMMs run in.
    pub fn dtype(self) -> Dtype {
        match self {
            WeightPrecision::Bf16 => Dtype::Bf16,
            WeightPrecision::Fp8 | WeightPrecision::Fp8Block => Dtype::Fp8,
            WeightPrecision::Nvfp4 | WeightPrecision::Mxfp4 => Dtype::Fp4,
        }
    }

    /// A linear layer's GEMM in this precision: per-tensor FP8, or block-scaled FP8 and FP4
    /// (both FP4 formats time as the measured NVFP4 kernels, activations cast to FP4 as
    /// TensorRT-LLM's NVFP4 GEMM does; an assumption for MXFP4).
    fn gemm(self, g: Gemm) -> Gemm {
        Gemm {
            dtype: self.dtype(),
            block_scaled: !matches!(self, WeightPrecision::Bf16 | WeightPrecision::Fp8),
            ..g
        }
    }
}

/// KV cache element type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KvCacheDtype {
    /// bf16.
    #[default]
    Bf16,
    /// FP8.
    Fp8,
}

crate::error::named!(KvCacheDtype, "kv cache dtype", [
    Bf16 => "bf16",
    Fp8 => "fp8",
]);

impl KvCacheDtype {
    /// Bytes per cached element.
    pub fn bytes(self) -> u64 {
        match self {
            KvCacheDtype::Bf16 => 2,
            KvCacheDtype::Fp8 => 1,
        }
    }
}

/// How one replica is laid out and what it stores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Attention tensor parallelism.
    pub tp: u64,
    /// Pipeline stages.
    pub pp: u64,
    /// Expert parallelism (dividing `tp · attention_dp`; the experts' own tensor parallelism is
    /// the rest).
    pub ep: u64,
    /// Attention data parallelism: copies of the attention per stage, each with its own
    /// sequences, beside expert parallelism.
    pub attention_dp: u64,
    /// Linear-layer weights.
    pub weights: WeightPrecision,
    /// KV cache.
    pub kv_cache: KvCacheDtype,
    /// Tokens per KV page.
    pub kv_block_tokens: u64,
    /// Share of the card the engine may use (vLLM's `gpu_memory_utilization`, default 0.9).
    pub memory_utilization: f64,
}

impl Default for Deployment {
    /// One GPU, bf16 weights and cache, pages of 16 tokens (vLLM's default block size), 90% of
    /// the card.
    fn default() -> Deployment {
        Deployment {
            tp: 1,
            pp: 1,
            ep: 1,
            attention_dp: 1,
            weights: WeightPrecision::Bf16,
            kv_cache: KvCacheDtype::Bf16,
            kv_block_tokens: 16,
            memory_utilization: 0.9,
        }
    }
}

impl Deployment {
    /// GPUs of one replica.
    ///
    /// # Errors
    /// A product that overflows.
    pub fn gpus(&self) -> Result<u64> {
        crate::error::mul(
            crate::error::mul(self.tp, self.pp, "replica GPUs")?,
            self.attention_dp,
            "replica GPUs",
        )
    }

    /// The training-style layout of one attention rank's share: `tokens` in flight as one
    /// micro-batch of `seq` tokens per sequence.
    fn layout(&self, model: &Transformer, batch: u64, seq: u64) -> Result<ParallelLayout> {
        let group = crate::error::mul(self.tp, self.attention_dp, "tp × attention_dp")?;
        let (ep, etp) = if model.moe.is_some() {
            crate::error::divisible(
                "expert parallelism must divide tp × attention_dp",
                "tp × attention_dp",
                group,
                "ep",
                self.ep,
            )?;
            (self.ep, group / self.ep)
        } else {
            (1, self.tp)
        };
        let l = ParallelLayout {
            tp: self.tp,
            pp: 1,
            dp: self.attention_dp,
            ep,
            etp: Some(etp),
            micro_batch: batch,
            global_batch: crate::error::mul(batch, self.attention_dp, "batch")?,
            seq_len: seq,
            ..ParallelLayout::default()
        };
        l.validate(model)?;
        Ok(l)
    }
}

/// Batching policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Batching {
    /// Continuous batching in steady state: each decode step also prefills the prompt tokens
    /// that keep the batch full.
    #[default]
    Continuous,
    /// Static batches: the whole batch prefilled, then decoded to the end.
    Static,
}

/// What is asked of the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Workload {
    /// Input (prompt) tokens per request.
    pub isl: u64,
    /// Output tokens per request.
    pub osl: u64,
    /// Sequences in flight per replica; `None` for the most the KV cache holds.
    pub concurrency: Option<u64>,
    /// Prompt tokens per prefill chunk (vLLM's `max_num_batched_tokens`, 8192 here).
    pub prefill_chunk_tokens: u64,
    /// Batching policy.
    pub batching: Batching,
}

impl Default for Workload {
    /// 1024 prompt tokens, 1024 output tokens, as many sequences as fit, chunks of 8192,
    /// continuous batching.
    fn default() -> Workload {
        Workload {
            isl: 1024,
            osl: 1024,
            concurrency: None,
            prefill_chunk_tokens: 8192,
            batching: Batching::Continuous,
        }
    }
}

impl Workload {
    /// Prompt, output and chunk sizes positive.
    ///
    /// # Errors
    /// [`Error::ZeroSize`] naming the size.
    pub fn validate(&self) -> Result<()> {
        crate::error::positive(self.isl, "isl")?;
        crate::error::positive(self.osl, "osl")?;
        crate::error::positive(self.prefill_chunk_tokens, "prefill_chunk_tokens")?;
        Ok(())
    }
}

/// What a replica does with a workload.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ServeReport {
    /// Sequences in flight per replica.
    pub concurrency: u64,
    /// The most sequences the KV cache holds per replica.
    pub max_concurrency: u64,
    /// GPUs per replica.
    pub gpus: u64,
    /// Weights per GPU (most loaded stage).
    pub weights_bytes_per_gpu: u64,
    /// KV cache room per GPU.
    pub kv_cache_bytes_per_gpu: u64,
    /// Time to first token: the request's prefill and the decode steps its chunks ride on
    /// (continuous batching: one per prefill chunk, as a chunked-prefill scheduler such as
    /// vLLM's mixes each chunk into a decode step; static batching: the whole batch's prefill
    /// and one step). Time waiting for a free slot is not counted.
    pub ttft_seconds: f64,
    /// Time per output token of the decode step alone.
    pub tpot_seconds: f64,
    /// Time between a user's output tokens with the prefills continuous batching mixes in.
    pub inter_token_seconds: f64,
    /// Prefill seconds per prompt token of the replica.
    pub prefill_seconds_per_token: f64,
    /// Output tokens per second a user sees.
    pub output_tokens_per_second_per_user: f64,
    /// Output tokens per second of the replica.
    pub output_tokens_per_second_per_replica: f64,
    /// Output tokens per second per GPU.
    pub output_tokens_per_second_per_gpu: f64,
    /// Share of the replica's time spent on prefill.
    pub prefill_share: f64,
    /// The band of every time ([`serving_band`]): measured times are expected between
    /// `time_band.0` and `time_band.1` times the prediction; speeds between the prediction over
    /// `time_band.1` and over `time_band.0`.
    pub time_band: (f64, f64),
}

/// One serving estimate as the tools print it: the deployment's parallel degrees, the report,
/// each speed figure with the ends of its band (`_low`, `_high`: times scale by
/// [`ServeReport::time_band`], rates by its inverse), and at a GPU-hour price the cost per
/// million tokens with its band.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ServeRecord {
    /// Attention tensor parallelism.
    pub tp: u64,
    /// Pipeline stages.
    pub pp: u64,
    /// Expert parallelism.
    pub ep: u64,
    /// Attention data parallelism.
    pub attention_dp: u64,
    /// The estimate.
    #[serde(flatten)]
    pub report: ServeReport,
    /// Time to first token at the fast end of the band.
    pub ttft_seconds_low: f64,
    /// Time to first token at the slow end of the band.
    pub ttft_seconds_high: f64,
    /// Time per output token at the fast end of the band.
    pub tpot_seconds_low: f64,
    /// Time per output token at the slow end of the band.
    pub tpot_seconds_high: f64,
    /// Output tokens per second per user at the slow end of the band.
    pub output_tokens_per_second_per_user_low: f64,
    /// Output tokens per second per user at the fast end of the band.
    pub output_tokens_per_second_per_user_high: f64,
    /// Output tokens per second per GPU at the slow end of the band.
    pub output_tokens_per_second_per_gpu_low: f64,
    /// Output tokens per second per GPU at the fast end of the band.
    pub output_tokens_per_second_per_gpu_high: f64,
    /// Dollars per million output tokens (with a GPU-hour price).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_million_output_tokens: Option<f64>,
    /// The same at the fast end of the band.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_million_output_tokens_low: Option<f64>,
    /// The same at the slow end of the band.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_million_output_tokens_high: Option<f64>,
    /// Dollars per million input tokens (with a GPU-hour price).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_million_input_tokens: Option<f64>,
}

impl ServeReport {
    /// The record of this estimate for deployment `d`, with costs at `gpu_hour_cost` dollars
    /// per GPU-hour when given.
    ///
    /// ```
    /// use lmshape::serve::{self, Deployment, Workload};
    /// use lmshape::system::SystemProfile;
    /// let m = lmshape::presets::by_name("gpt3-xl")?;
    /// let p = SystemProfile::by_name("dgx-h100")?;
    /// let d = Deployment::default();
    /// let r = serve::serve(&m, &p, &d, &Workload::default())?.record(&d, Some(2.0));
    /// assert!(r.tpot_seconds_low <= r.report.tpot_seconds && r.report.tpot_seconds <= r.tpot_seconds_high);
    /// assert!(r.cost_per_million_output_tokens.is_some());
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    pub fn record(&self, d: &Deployment, gpu_hour_cost: Option<f64>) -> ServeRecord {
        let (lo, hi) = self.time_band;
        let costs = gpu_hour_cost.map(|c| self.cost_per_million(c));
        ServeRecord {
            tp: d.tp,
            pp: d.pp,
            ep: d.ep,
            attention_dp: d.attention_dp,
            report: *self,
            ttft_seconds_low: self.ttft_seconds * lo,
            ttft_seconds_high: self.ttft_seconds * hi,
            tpot_seconds_low: self.tpot_seconds * lo,
            tpot_seconds_high: self.tpot_seconds * hi,
            output_tokens_per_second_per_user_low: self.output_tokens_per_second_per_user / hi,
            output_tokens_per_second_per_user_high: self.output_tokens_per_second_per_user / lo,
            output_tokens_per_second_per_gpu_low: self.output_tokens_per_second_per_gpu / hi,
            output_tokens_per_second_per_gpu_high: self.output_tokens_per_second_per_gpu / lo,
            cost_per_million_output_tokens: costs.map(|(out, _)| out),
            cost_per_million_output_tokens_low: costs.map(|(out, _)| out * lo),
            cost_per_million_output_tokens_high: costs.map(|(out, _)| out * hi),
            cost_per_million_input_tokens: costs.map(|(_, input)| input),
        }
    }

    /// Dollars per million output tokens and per million input tokens at `gpu_hour_cost`
    /// dollars per GPU-hour: the replica's time split between decode (output) and prefill
    /// (input) by the share each takes.
    pub fn cost_per_million(&self, gpu_hour_cost: f64) -> (f64, f64) {
        let per_second = gpu_hour_cost * self.gpus as f64 / 3600.0;
        let out_rate = self.output_tokens_per_second_per_replica;
        let in_rate = out_rate * self.prefill_tokens_per_output();
        let out = per_second * (1.0 - self.prefill_share) / out_rate * 1e6;
        let input = if in_rate > 0.0 {
            per_second * self.prefill_share / in_rate * 1e6
        } else {
            0.0
        };
        (out, input)
    }

    fn prefill_tokens_per_output(&self) -> f64 {
        if self.tpot_seconds <= 0.0 {
            return 0.0;
        }
        // prefill time per output token = inter_token − tpot (continuous batching).
        let per_step = (self.inter_token_seconds - self.tpot_seconds).max(0.0);
        if self.prefill_seconds_per_token > 0.0 {
            per_step / self.prefill_seconds_per_token / self.concurrency as f64
        } else {
            0.0
        }
    }
}

const W: &str = "serving";

/// Weights on the most loaded GPU: every stage's share on one rank, the input embedding in 16
/// bits, the rest in the deployment's precision.
fn weights_bytes(model: &Transformer, d: &Deployment) -> Result<u64> {
    let layout = ParallelLayout {
        pp: d.pp,
        balanced_pipeline: true,
        global_batch: crate::error::mul(d.pp.max(1), d.attention_dp, W)?,
        seq_len: 1,
        ..d.layout(model, 1, 1)?
    };
    let report = crate::memory::training_memory(model, &layout, &MemoryOptions::default())?;
    let vocab = layout.padded_vocab(model)?;
    let embedding = crate::params::input_end_params(model, vocab, d.tp)?.total_params();
    let mut most = 0;
    for (stage, first) in [
        (&report.first, true),
        (&report.middle, false),
        (&report.last, false),
    ] {
        let rest = stage.params_on_rank - if first { embedding } else { 0 };
        let bytes = crate::error::add(
            d.weights.weights_bytes(rest)?,
            if first {
                WeightPrecision::Bf16.weights_bytes(embedding)?
            } else {
                0
            },
            W,
        )?;
        most = most.max(bytes);
    }
    Ok(most)
}

/// Runtime reserve per GPU: 1.5 GiB for the CUDA context, workspaces and communicator
/// buffers (an assumption, as for training, [`crate::memory::FrameworkProfile::of`]).
const RUNTIME_BYTES: u64 = 3 << 29;

/// The memory and concurrency a replica has.
struct Capacity {
    weights: u64,
    kv_room: u64,
    kv_per_sequence: u64,
    max_concurrency: u64,
}

fn capacity(model: &Transformer, gpu: &GpuSpec, d: &Deployment, w: &Workload) -> Result<Capacity> {
    crate::error::in_range_f64(
        d.memory_utilization,
        0.05,
        1.0,
        "memory_utilization",
        "in [0.05, 1]",
    )?;
    crate::error::positive(d.kv_block_tokens, "kv_block_tokens")?;
    crate::error::positive(d.pp, "pp")?;
    crate::error::positive(d.attention_dp, "attention_dp")?;
    let weights = weights_bytes(model, d)?;
    let context = crate::error::add(w.isl, w.osl, "context")?;
    let pages = context.div_ceil(d.kv_block_tokens);
    let paged = crate::error::mul(pages, d.kv_block_tokens, "paged context")?;
    let kv_per_sequence = crate::memory::kv_cache_bytes(
        model,
        &InferenceQuery {
            batch: 1,
            context: paged.min(model.max_positions).max(context),
            weight_bytes: d.weights.bytes(),
            kv_bytes: d.kv_cache.bytes(),
            tp: d.tp,
            pp: d.pp,
        },
    )?;
    // One prefill chunk's activations: the residual stream, the attention's q/k/v and output
    // and the MLP's intermediates of one layer, 16 bits each.
    let chunk = w.prefill_chunk_tokens as f64;
    let per_token = (4 * model.hidden_size + 3 * model.ffn_size / d.tp.max(1)) as f64 * 2.0;
    let activations = (chunk * per_token) as u64;
    let budget = (gpu.memory_bytes as f64 * d.memory_utilization) as u64;
    let kv_room = budget
        .saturating_sub(weights)
        .saturating_sub(activations)
        .saturating_sub(RUNTIME_BYTES);
    let per_rank = kv_room / kv_per_sequence.max(1);
    Ok(Capacity {
        weights,
        kv_room,
        kv_per_sequence,
        max_concurrency: crate::error::mul(per_rank, d.attention_dp, "concurrency")?,
    })
}

/// Seconds of one forward pass of `batch` sequences of `queries` new tokens each on one
/// attention rank of the most loaded stage, each query attending over `attended` keys
/// (prefill) or reading `kv_len` cached tokens (decode, `queries = 1`).
struct Pass {
    batch: u64,
    queries: u64,
    kv_len: u64,
    decode: bool,
}

/// The machine, model and deployment every timing of a replica reads.
struct Replica<'a> {
    model: &'a Transformer,
    p: &'a SystemProfile,
    gpu: &'a GpuSpec,
    d: &'a Deployment,
}

fn layer_seconds(r: &Replica, pass: &Pass, layer: u64) -> Result<f64> {
    let (model, p, gpu, d) = (r.model, r.p, r.gpu, r.d);
    let layout = d.layout(model, pass.batch, pass.queries)?;
    let opts = StepOptions {
        memory: MemoryOptions {
            attention: crate::memory::AttentionKernel::Flash,
            dropout: false,
            ..MemoryOptions::default()
        },
        ..StepOptions::default()
    };
    let gemms = crate::step::layer_gemms(model, &layout, &opts, layer)?;
    let mut seconds = 0.0;
    let tokens = (pass.batch * pass.queries) as f64;
    for &(g, role) in gemms.as_slice() {
        seconds += match role {
            GemmRole::AttentionCore => 0.0,
            GemmRole::Router => p.gemm_seconds(&g, gpu)?,
            GemmRole::Linear | GemmRole::SharedExpert => p.gemm_seconds(&d.weights.gemm(g), gpu)?,
            GemmRole::Expert => expert_seconds(r, g, tokens)?,
        };
    }
    seconds += attention_seconds(r, pass, layer)?;
    // Two all-reduces of the layer's output rows over tensor parallelism.
    let row_bytes = tokens * model.hidden_size as f64 * 2.0;
    if d.tp > 1 {
        seconds +=
            2.0 * p.collective_seconds(CollectiveOp::AllReduce, d.tp, d.tp.min(8), row_bytes);
    }
    if let Some(moe) = model.moe.filter(|m| m.is_moe_layer(layer)) {
        if layout.ep > 1 {
            let routed = row_bytes * moe.top_k as f64;
            seconds += 2.0
                * p.collective_seconds(CollectiveOp::AllToAll, layout.ep, layout.ep.min(8), routed);
        }
    }
    // Memory-bound kernels: two norms, rotary, the activation, residual adds — about eight
    // launches, each reading and writing the rows.
    seconds += p.memory_seconds(gpu, 8.0 * row_bytes, 8.0);
    Ok(seconds)
}

/// Routed experts as one fused kernel (vLLM's `fused_moe`, grouped GEMMs): the slower of the
/// GEMM of all the rank's routed rows at the table's speed, and streaming the weights of the
/// experts the step touches once each at the machine's attainable bandwidth. Under balanced
/// routing `n` assignments over `E` experts touch `E · (1 − (1 − 1/E)^n)` of them.
fn expert_seconds(r: &Replica, g: Gemm, tokens: f64) -> Result<f64> {
    let (model, p, gpu, d) = (r.model, r.p, r.gpu, r.d);
    let Some(moe) = model.moe else {
        return Ok(0.0);
    };
    let local = g.batch.max(1) as f64;
    let experts = moe.num_experts as f64;
    let assignments = tokens * d.attention_dp as f64 * moe.top_k as f64;
    let touched_share = 1.0 - (1.0 - 1.0 / experts).powf(assignments);
    let touched = (local * touched_share).clamp(1.0, local);
    let all_rows = Gemm {
        m: crate::error::mul(g.m, g.batch.max(1), "routed rows")?,
        batch: 1,
        ..g
    };
    let compute = p.gemm_seconds(&d.weights.gemm(all_rows), gpu)?;
    let weight_bytes = (g.n as f64) * (g.k as f64) * d.weights.bits_per_weight() / 8.0;
    let stream = p.memory_seconds(gpu, touched * weight_bytes, 1.0);
    Ok(compute.max(stream))
}

/// The attention core of one layer: prefill from the measured prefill tables; decode as the
/// cache read at the measured decode-table bandwidth efficiency.
fn attention_seconds(r: &Replica, pass: &Pass, layer: u64) -> Result<f64> {
    let (model, p, gpu, d) = (r.model, r.p, r.gpu, r.d);
    let heads = model.num_heads.div_ceil(d.tp);
    let kv_heads = crate::params::kv_heads_per_rank(model.num_kv_heads, d.tp)?;
    let (d_qk, d_v) = model.head_widths();
    let window = model
        .local_attention
        .filter(|w| w.is_local_layer(layer))
        .map(|w| w.window);
    if !pass.decode {
        let keys = window.map_or(pass.queries, |w| w.min(pass.queries));
        let attended = crate::flops::causal_attended_keys(keys as f64, pass.queries as f64);
        let (f, _) = p.attention_seconds(
            gpu,
            pass.batch,
            pass.queries,
            attended.max(1.0),
            heads,
            kv_heads,
            d_qk,
            d_v,
        )?;
        return Ok(f);
    }
    let kv_len = window.map_or(pass.kv_len, |w| w.min(pass.kv_len)).max(1);
    let one_token = crate::memory::kv_cache_bytes(
        model,
        &InferenceQuery {
            batch: 1,
            context: 1,
            weight_bytes: 2,
            kv_bytes: 2,
            tp: d.tp,
            pp: 1,
        },
    )? as f64
        / model.num_layers as f64;
    let elements = one_token / 2.0;
    let seconds_at = |len: u64| {
        let bytes = elements * d.kv_cache.bytes() as f64 * len as f64 * pass.batch as f64;
        // The measured efficiency at this many sequences × heads, never above the streaming
        // efficiency the table reaches at its most (small caches read at more than the HBM's
        // bandwidth come from L2; across a decode step's layers the cache is read once).
        let efficiency = match &p.decode_attention {
            Some(grid) => {
                let dtype = d.kv_cache.to_string();
                let most = grid.batch_kv_heads.last().copied().unwrap_or(1);
                grid.efficiency_at(&dtype, d_qk, len, pass.batch * kv_heads)
                    .min(grid.efficiency_at(&dtype, d_qk, len, most))
            }
            None => p.memory.bandwidth_fraction,
        };
        bytes / (gpu.memory_bytes_per_s * efficiency.clamp(1e-6, 1.0))
    };
    // A longer cache never reads faster: the time at `kv_len`, and at no less than at each
    // shorter measured length (the tables' neighbouring points can invert by noise).
    let shorter = p
        .decode_attention
        .iter()
        .flat_map(|g| g.kv_lens.iter().copied())
        .filter(|&len| len < kv_len);
    let seconds = shorter.map(seconds_at).fold(seconds_at(kv_len), f64::max);
    Ok(seconds * p.multipliers.attention)
}

/// Seconds of one pass through the most loaded stage (layers in its range) plus, on the last
/// stage, the head over the sequences' last tokens.
fn stage_seconds(r: &Replica, pass: &Pass) -> Result<f64> {
    let (model, p, gpu, d) = (r.model, r.p, r.gpu, r.d);
    let per_stage = model.num_layers.div_ceil(d.pp);
    // Time each distinct layer kind once (dense/expert × global/local), then count.
    let mut seconds = 0.0;
    let mut cache: [Option<f64>; 4] = [None; 4];
    for layer in 0..per_stage.min(model.num_layers) {
        let moe = model.moe.is_some_and(|m| m.is_moe_layer(layer));
        let local = model
            .local_attention
            .is_some_and(|w| w.is_local_layer(layer));
        let slot = usize::from(moe) * 2 + usize::from(local);
        let t = match cache[slot] {
            Some(t) => t,
            None => {
                let t = layer_seconds(r, pass, layer)?;
                cache[slot] = Some(t);
                t
            }
        };
        seconds += t;
    }
    let vocab = d.layout(model, 1, 1)?.padded_vocab(model)?;
    let head = Gemm::bf16(pass.batch, vocab / d.tp, model.hidden_size);
    seconds += p.gemm_seconds(&head, gpu)?;
    Ok(seconds + p.host_overhead_seconds)
}

/// The sequences in flight: the workload's, or the most the cache holds; refused when the
/// cache cannot hold them or holds none.
fn concurrency_of(cap: &Capacity, gpu: &GpuSpec, workload: &Workload) -> Result<u64> {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    if cap.max_concurrency == 0 {
        return Err(Error::Inconsistent {
            rule: "a replica holds the weights and at least one sequence's KV cache",
            detail: format!(
                "weights {:.1} GiB per GPU leave {:.2} GiB for a cache of {:.2} GiB per sequence on a {:.0} GiB card",
                gib(cap.weights),
                gib(cap.kv_room),
                gib(cap.kv_per_sequence),
                gib(gpu.memory_bytes)
            ),
        });
    }
    let concurrency = workload.concurrency.unwrap_or(cap.max_concurrency);
    crate::error::positive(concurrency, "concurrency")?;
    if concurrency > cap.max_concurrency {
        return Err(Error::Inconsistent {
            rule: "the KV cache holds every sequence in flight",
            detail: format!(
                "concurrency {concurrency} > {} sequences of {} tokens",
                cap.max_concurrency,
                workload.isl.saturating_add(workload.osl)
            ),
        });
    }
    Ok(concurrency)
}

/// The band of a serving time: no measured serving run is in the repository, so the wide
/// unvalidated band ([`crate::system::UNVALIDATED_RATIOS`]), widened further where the
/// profile's training validation is wider still.
pub fn serving_band(profile: &SystemProfile) -> (f64, f64) {
    let (lo, hi) = profile.band(1.0);
    let (a, b) = crate::system::UNVALIDATED_RATIOS;
    (lo.min(1.0 / b), hi.max(1.0 / a))
}

/// What the serving band rests on, in words.
pub const SERVING_BAND_BASIS: &str = "unvalidated for serving: no measured serving runs in the repository, so the wide default band (time x0.5 to x2.0); the kernels are the profile's measured tables";

/// Serve `model` on the machine of `profile` with `deployment` under `workload`.
///
/// ```
/// use lmshape::serve::{self, Deployment, Workload};
/// use lmshape::system::SystemProfile;
/// let m = lmshape::model::hf::from_hf_config_str(&std::fs::read_to_string(
///     concat!(env!("CARGO_MANIFEST_DIR"), "/examples/configs/llama-2-7b.json"))?)?;
/// let p = SystemProfile::by_name("dgx-h100")?;
/// let r = serve::serve(&m, &p, &Deployment::default(), &Workload { concurrency: Some(16), ..Workload::default() })?;
/// assert!(r.output_tokens_per_second_per_user > 10.0 && r.ttft_seconds < 1.0);
/// assert!(r.max_concurrency >= 16);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// A deployment that does not split the model, a concurrency of zero or above what the KV
/// cache holds, weights that do not fit, a precision the machine has no kernels for, or
/// sizes that overflow.
pub fn serve(
    model: &Transformer,
    profile: &SystemProfile,
    deployment: &Deployment,
    workload: &Workload,
) -> Result<ServeReport> {
    let gpu = profile.gpu_spec()?;
    workload.validate()?;
    let cap = capacity(model, &gpu, deployment, workload)?;
    let concurrency = concurrency_of(&cap, &gpu, workload)?;
    let d = deployment;
    let per_rank = concurrency.div_ceil(d.attention_dp);
    // Decode: pipeline stages take one micro-batch each, so a token passes every stage.
    let micro = per_rank.div_ceil(d.pp).max(1);
    let kv_len = workload.isl.saturating_add(workload.osl / 2);
    let replica = Replica {
        model,
        p: profile,
        gpu: &gpu,
        d,
    };
    let pass = |batch: u64, queries: u64, kv_len: u64, decode: bool| {
        let p = Pass {
            batch,
            queries,
            kv_len,
            decode,
        };
        stage_seconds(&replica, &p)
    };
    let tpot = pass(micro, 1, kv_len, true)? * d.pp as f64;
    // Prefill of one chunk on one attention rank, per prompt token.
    let chunk = workload.prefill_chunk_tokens.min(workload.isl).max(1);
    let chunk_seconds = pass(1, chunk, chunk, false)?;
    let per_prompt_token = chunk_seconds * d.pp as f64 / chunk as f64;
    let prefill_request = per_prompt_token * workload.isl as f64;
    let (inter_token, ttft, replica_rate, prefill_share) = match workload.batching {
        Batching::Continuous => {
            // Each step prefills isl/osl prompt tokens per sequence of the rank.
            let prefill_per_step = per_prompt_token * per_rank as f64 * workload.isl as f64
                / workload.osl as f64
                / d.pp as f64;
            let step = tpot + prefill_per_step;
            let chunks = workload.isl.div_ceil(chunk) as f64;
            (
                step,
                prefill_request + chunks * tpot,
                concurrency as f64 / step,
                prefill_per_step / step,
            )
        }
        Batching::Static => {
            let prefill_all = per_prompt_token * (per_rank * workload.isl) as f64;
            let total = prefill_all + tpot * workload.osl as f64;
            (
                tpot,
                prefill_all + tpot,
                concurrency as f64 * workload.osl as f64 / total,
                prefill_all / total,
            )
        }
    };
    let gpus = d.gpus()?;
    Ok(ServeReport {
        concurrency,
        max_concurrency: cap.max_concurrency,
        gpus,
        weights_bytes_per_gpu: cap.weights,
        kv_cache_bytes_per_gpu: cap.kv_room,
        ttft_seconds: ttft,
        tpot_seconds: tpot,
        inter_token_seconds: inter_token,
        prefill_seconds_per_token: per_prompt_token,
        output_tokens_per_second_per_user: 1.0 / inter_token,
        output_tokens_per_second_per_replica: replica_rate,
        output_tokens_per_second_per_gpu: replica_rate / gpus as f64,
        prefill_share,
        time_band: serving_band(profile),
    })
}
