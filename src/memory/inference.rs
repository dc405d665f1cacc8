//! Inference memory: weights and the KV cache (grouped-query, latent attention, sliding
//! windows), and the largest batch or context that fits.

use super::{MemoryOptions, training_memory};
use crate::error::{Error, Result, add, mul};
use crate::model::Transformer;
use crate::parallel::{ParallelLayout, kv_heads_per_rank};
use serde::{Deserialize, Serialize};

/// Inference memory of one GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InferenceMemory {
    /// Weights on the GPU.
    pub weights_bytes: u64,
    /// KV cache.
    pub kv_cache_bytes: u64,
    /// Weights + KV cache.
    pub total_bytes: u64,
}

/// What an inference-memory question is about: `batch` sequences of `context` tokens, bytes
/// per weight and per cached key/value element, on `tp × pp` GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InferenceQuery {
    /// Sequences served at once.
    pub batch: u64,
    /// Tokens per sequence (prompt and generated).
    pub context: u64,
    /// Bytes per weight (bf16: 2).
    pub weight_bytes: u64,
    /// Bytes per cached key or value element (bf16: 2, fp8: 1).
    pub kv_bytes: u64,
    /// Tensor-parallel degree.
    pub tp: u64,
    /// Pipeline-parallel degree (each stage holds its layers' weights and cache).
    pub pp: u64,
}

impl Default for InferenceQuery {
    /// One sequence of 2048 tokens, bf16 weights and cache, one GPU.
    fn default() -> InferenceQuery {
        InferenceQuery {
            batch: 1,
            context: 2048,
            weight_bytes: 2,
            kv_bytes: 2,
            tp: 1,
            pp: 1,
        }
    }
}

/// KV cache bytes of layers `range` on one of `tp` GPUs: per token and layer, keys and
/// values `2 · kv_heads_per_rank · head_dim` values (grouped-query aware, Ainslie et al. 2023
/// §2), or, with latent attention, the compressed latent and the shared rope key
/// `kv_lora_rank + qk_rope_head_dim` (DeepSeek-V2 §2.1.2; replicated over `tp`, as the
/// down-projection is); sliding-window layers keep at most `window` tokens.
pub(crate) fn kv_bytes_of_layers(
    model: &Transformer,
    range: std::ops::Range<u64>,
    q: &InferenceQuery,
) -> Result<u64> {
    const W: &str = "kv cache bytes";
    let per_token_layer = match &model.attention {
        crate::model::Attention::Standard => mul(
            2,
            mul(
                kv_heads_per_rank(model.num_kv_heads, q.tp)?,
                model.head_dim,
                W,
            )?,
            W,
        )?,
        crate::model::Attention::MultiLatent(mla) => {
            crate::error::positive(q.tp, "tp")?;
            add(mla.kv_lora_rank, mla.qk_rope_head_dim, W)?
        }
    };
    let layers = range.end.saturating_sub(range.start);
    let (local, window) = match &model.local_attention {
        Some(w) => (
            w.local_layer_count(range.end) - w.local_layer_count(range.start),
            w.window,
        ),
        None => (0, q.context),
    };
    let token_layers = add(
        mul(layers - local, q.context, W)?,
        mul(local, q.context.min(window), W)?,
        W,
    )?;
    mul(
        mul(mul(per_token_layer, token_layers, W)?, q.kv_bytes, W)?,
        q.batch,
        W,
    )
}

/// KV cache bytes on one GPU of the most loaded pipeline stage (every layer when `pp = 1`).
/// Per token and layer: keys and values, `2 · kv_heads_per_rank · head_dim` values
/// (grouped-query aware, Ainslie et al. 2023 §2), or, with latent attention, the compressed
/// latent and the shared rope key, `kv_lora_rank + qk_rope_head_dim` values (DeepSeek-V2
/// §2.1.2; replicated over `tp`, as the down-projection is); sliding-window layers keep at
/// most `window` tokens.
///
/// ```
/// use lmshape::{memory::{self, InferenceQuery}, model::hf::from_hf_config_str};
/// // Llama-2-70B (8 kv heads of 128, 80 layers): 2·80·8·128·2 bytes = 320 KiB per token in bf16.
/// let m = from_hf_config_str(r#"{"model_type":"llama","hidden_size":8192,"intermediate_size":28672,
///   "num_attention_heads":64,"num_hidden_layers":80,"num_key_value_heads":8,"vocab_size":32000}"#)?;
/// let one_token = InferenceQuery { context: 1, ..InferenceQuery::default() };
/// assert_eq!(memory::kv_cache_bytes(&m, &one_token)?, 327_680);
/// // Over 4 pipeline stages each GPU caches 20 layers.
/// assert_eq!(memory::kv_cache_bytes(&m, &InferenceQuery { pp: 4, ..one_token })?, 327_680 / 4);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// A zero batch or context, a context beyond a learned position table, an invalid serving layout, or bytes that overflow `u64`.
pub fn kv_cache_bytes(model: &Transformer, q: &InferenceQuery) -> Result<u64> {
    Ok(inference_memory(model, q)?.kv_cache_bytes)
}

/// Weights plus the KV cache on the most loaded GPU: each of `pp` stages holds its layers'
/// weights (per-rank counts as in training, [`training_memory`]'s `params_on_rank`) and their
/// cache, split by `tp`.
///
/// # Errors
/// As [`kv_cache_bytes`].
pub fn inference_memory(model: &Transformer, q: &InferenceQuery) -> Result<InferenceMemory> {
    const W: &str = "inference memory";
    crate::error::positive(q.batch, "batch")?;
    crate::error::positive(q.context, "context")?;
    model.check_context(q.context, "context")?;
    // Serving splits the layers over the stages as evenly as they go (vLLM's
    // `get_pp_indices`), so any layer count is accepted.
    // Only the weights per rank are read from this layout; one token per sequence keeps it
    // within any position table.
    let layout = ParallelLayout {
        tp: q.tp,
        pp: q.pp,
        global_batch: q.pp,
        seq_len: 1,
        balanced_pipeline: true,
        ..ParallelLayout::default()
    };
    let stages = layout.stage_layers(model)?;
    let report = training_memory(model, &layout, &MemoryOptions::default())?;
    let per_stage = [
        (report.first.params_on_rank, stages.range(0, q.pp)),
        (
            report.middle.params_on_rank,
            stages.range(1.min(q.pp - 1), q.pp),
        ),
        (report.last.params_on_rank, stages.range(q.pp - 1, q.pp)),
    ];
    let mut best: Option<InferenceMemory> = None;
    for (params, range) in per_stage {
        let weights_bytes = mul(params, q.weight_bytes, W)?;
        let kv_cache_bytes = kv_bytes_of_layers(model, range, q)?;
        let total_bytes = add(weights_bytes, kv_cache_bytes, W)?;
        if best.is_none_or(|b| total_bytes > b.total_bytes) {
            best = Some(InferenceMemory {
                weights_bytes,
                kv_cache_bytes,
                total_bytes,
            });
        }
    }
    best.ok_or(Error::ZeroSize { field: "pp" })
}

/// The largest batch of `q.context`-token sequences whose weights and KV cache fit in
/// `memory_bytes` on every GPU (0 when even the weights do not fit); `q.batch` is ignored.
///
/// # Errors
/// As [`inference_memory`].
pub fn max_inference_batch(
    model: &Transformer,
    q: &InferenceQuery,
    memory_bytes: u64,
) -> Result<u64> {
    largest_fitting(
        |b| inference_memory(model, &InferenceQuery { batch: b, ..*q }),
        memory_bytes,
    )
}

/// The longest context for `q.batch` sequences that fits in `memory_bytes` on every GPU (0 when
/// even the weights do not fit); `q.context` is ignored.
///
/// # Errors
/// As [`inference_memory`].
pub fn max_inference_context(
    model: &Transformer,
    q: &InferenceQuery,
    memory_bytes: u64,
) -> Result<u64> {
    largest_fitting(
        |c| inference_memory(model, &InferenceQuery { context: c, ..*q }),
        memory_bytes,
    )
}

/// The largest `x ≥ 1` whose memory fits (0 if `x = 1` does not): memory is weights plus a
/// cache linear in `x` on each stage, so the bound is found by doubling then bisection.
pub(crate) fn largest_fitting(
    at: impl Fn(u64) -> Result<InferenceMemory>,
    memory_bytes: u64,
) -> Result<u64> {
    let fits = |x: u64| -> Result<bool> {
        match at(x) {
            Ok(m) => Ok(m.total_bytes <= memory_bytes),
            Err(Error::Overflow { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    };
    if !fits(1)? {
        return Ok(0);
    }
    let (mut lo, mut hi) = (1u64, 2u64);
    while fits(hi)? {
        lo = hi;
        match hi.checked_mul(2) {
            Some(h) => hi = h,
            None => return Ok(lo),
        }
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}
