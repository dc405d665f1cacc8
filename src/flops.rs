//! FLOPs per token under explicit, named conventions.
//!
//! A multiply-add counts as 2 FLOPs everywhere. Results multiplied by tokens are `f64`.
//!
//! | convention | function | source |
//! |---|---|---|
//! | Kaplan forward `2N + 2·L·n_ctx·d_attn`, training 3× | [`kaplan_forward_flops_per_token`] | Kaplan et al. 2020, Table 1 and §2.1 |
//! | PaLM model FLOPs `6N + 12·L·H·Q·T` | [`palm_flops_per_token`] | Chowdhery et al. 2022, Appendix B |
//! | Megatron-LM per step `96·B·s·L·h²·(1 + s/6h + V/16Lh)` | [`megatron_step_flops`] | Narayanan et al. 2021, eq. 3 |
//! | every matmul (+ softmax, embeddings), backward 2× | [`matmul_flops_per_token`], [`chinchilla_flops_per_token`] | Hoffmann et al. 2022, Appendix F |

use crate::error::{Result, positive};
use crate::model::Transformer;
pub use crate::parallel::Recompute;
pub use crate::params::ParamBasis;
use serde::{Deserialize, Serialize};

/// Switches of the per-matmul count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlopsConvention {
    /// Tokens per sequence (context `T`).
    pub seq_len: u64,
    /// Count only the causal half of `QKᵀ` and attention×`V` (and of the softmax).
    pub causal: bool,
    /// Recomputation counted as extra forward work.
    pub recompute: Recompute,
    /// Count the output logits matmul `2·e·V`.
    pub include_logits: bool,
    /// Count the input embedding as a one-hot matmul `2·V·e` (Chinchilla app. F does).
    pub include_embedding: bool,
    /// Count the softmax as `3·H·T` per token (Chinchilla app. F does).
    pub include_softmax: bool,
}

impl FlopsConvention {
    /// Hoffmann et al. 2022 Appendix F: embeddings, every matmul, softmax and logits; full (not
    /// causal) attention; no recomputation.
    pub fn chinchilla(seq_len: u64) -> FlopsConvention {
        FlopsConvention {
            seq_len,
            causal: false,
            recompute: Recompute::None,
            include_logits: true,
            include_embedding: true,
            include_softmax: true,
        }
    }

    /// Narayanan et al. 2021 §5.1 (the derivation of eq. 3): the matmuls of the layers and the
    /// logits; no embedding, no softmax; full attention.
    pub fn megatron(seq_len: u64, recompute: Recompute) -> FlopsConvention {
        FlopsConvention {
            seq_len,
            causal: false,
            recompute,
            include_logits: true,
            include_embedding: false,
            include_softmax: false,
        }
    }
}

/// FLOPs for one token, split by pass.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct TokenFlops {
    /// Forward pass.
    pub forward_flops: f64,
    /// Backward pass (2× forward: one matmul for the data gradient, one for the weight
    /// gradient; Kaplan et al. 2020 §2.1, Hoffmann et al. 2022 app. F).
    pub backward_flops: f64,
    /// Extra forward work done by recomputation.
    pub recompute_flops: f64,
}

impl TokenFlops {
    /// Model FLOPs: forward + backward (what MFU counts; Chowdhery et al. 2022 app. B).
    pub fn model_flops(&self) -> f64 {
        self.forward_flops + self.backward_flops
    }

    /// Hardware FLOPs: forward + backward + recomputation.
    pub fn training_flops(&self) -> f64 {
        self.forward_flops + self.backward_flops + self.recompute_flops
    }
}

/// Kaplan et al. 2020 Table 1: `C_forward ≈ 2N + 2·n_layer·n_ctx·d_attn` per token, `N`
/// non-embedding. With `causal`, the context term is halved.
///
/// ```
/// use lmshape::{flops, presets};
/// let m = presets::by_name("gpt3-175b")?;
/// let n = m.param_counts()?.non_embedding_params as f64;
/// let f = flops::kaplan_forward_flops_per_token(&m, 2048, false)?;
/// assert_eq!(f, 2.0 * n + 2.0 * 96.0 * 2048.0 * 12288.0);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// A zero context, or a model that breaks one of its rules ([`crate::Transformer::validate`]) or counts that overflow `u64`.
pub fn kaplan_forward_flops_per_token(m: &Transformer, n_ctx: u64, causal: bool) -> Result<f64> {
    positive(n_ctx, "n_ctx")?;
    let n = active_non_embedding_params(&m.param_counts()?) as f64;
    let half = if causal { 0.5 } else { 1.0 };
    Ok(2.0 * n + half * 2.0 * m.num_layers as f64 * n_ctx as f64 * m.attn_dim() as f64)
}

/// Kaplan's non-embedding `N` of the parameters a token uses (equal to `N` for a dense model;
/// for a mixture of experts the routed experts a token skips are left out, as Clark et al.
/// 2022 and Krajewski et al. 2024 count the "active" size).
pub fn active_non_embedding_params(c: &crate::params::ParamCounts) -> u64 {
    c.non_embedding_params - (c.total_params - c.active_params)
}

/// Kaplan et al. 2020 §2.1: training ≈ 3 × forward (backward is twice the forward).
///
/// # Errors
/// As [`kaplan_forward_flops_per_token`].
pub fn kaplan_training_flops_per_token(m: &Transformer, n_ctx: u64, causal: bool) -> Result<f64> {
    Ok(3.0 * kaplan_forward_flops_per_token(m, n_ctx, causal)?)
}

/// Chowdhery et al. 2022 (PaLM) Appendix B: model FLOPs per token `6N + 12·L·H·Q·T`, with `H`
/// heads of size `Q` and context `T`; with `causal` the attention term is halved (PaLM counts
/// it whole). Used for MFU. For a mixture of experts `N` is the active count (the `6·N_active`
/// rule of thumb); sliding windows are not applied (the published convention has none).
///
/// ```
/// use lmshape::{flops::{self, ParamBasis}, presets};
/// let m = presets::by_name("gpt3-175b")?;
/// let f = flops::palm_flops_per_token(&m, 2048, ParamBasis::Total, false)?;
/// let n = m.total_params()? as f64;
/// assert_eq!(f, 6.0 * n + 12.0 * 96.0 * 96.0 * 128.0 * 2048.0);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// A zero context, or a model that breaks one of its rules ([`crate::Transformer::validate`]) or counts that overflow `u64`.
pub fn palm_flops_per_token(
    m: &Transformer,
    seq_len: u64,
    basis: ParamBasis,
    causal: bool,
) -> Result<f64> {
    positive(seq_len, "seq_len")?;
    let c = m.param_counts()?;
    let n = match basis {
        ParamBasis::NonEmbedding => active_non_embedding_params(&c),
        ParamBasis::Total => c.active_params,
    } as f64;
    let half = if causal { 0.5 } else { 1.0 };
    Ok(6.0 * n
        + half
            * 12.0
            * m.num_layers as f64
            * m.num_heads as f64
            * m.head_dim as f64
            * seq_len as f64)
}

/// Narayanan et al. 2021 eq. 3: FLOPs of one training step of `batch` sequences of `seq_len`
/// tokens with full recomputation, `96·B·s·l·h²·(1 + s/(6h) + V/(16·l·h))`. Without
/// recomputation the same derivation gives `72·B·s·l·h²·(1 + s/(6h) + V/(12·l·h))`. With
/// selective recomputation (Korthikanti et al. 2022 §4) the attention core's forward
/// (`4·B·s²·h` per layer) is added to the latter. It assumes `ffn = 4h`, `H·hd = h`, full
/// attention and counts only `h`, `l`, `V` of the model: this is the accounting behind the
/// TFLOPs that Megatron-LM and BigScience report.
///
/// ```
/// use lmshape::{flops, presets, Recompute};
/// let m = presets::by_name("gpt3-175b")?;
/// let f = flops::megatron_step_flops(&m, 1536, 2048, Recompute::Full)?;
/// let (b, s, l, h, v) = (1536.0, 2048.0, 96.0, 12288.0, 50257.0);
/// assert_eq!(f, 96.0 * b * s * l * h * h * (1.0 + s / (6.0 * h) + v / (16.0 * l * h)));
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// A zero size among the inputs.
pub fn megatron_step_flops(
    m: &Transformer,
    batch: u64,
    seq_len: u64,
    recompute: Recompute,
) -> Result<f64> {
    positive(batch, "batch")?;
    positive(seq_len, "seq_len")?;
    let (b, s, l, h, v) = (
        batch as f64,
        seq_len as f64,
        m.num_layers as f64,
        m.hidden_size as f64,
        m.vocab_size as f64,
    );
    Ok(match recompute {
        Recompute::Full => 96.0 * b * s * l * h * h * (1.0 + s / (6.0 * h) + v / (16.0 * l * h)),
        Recompute::None => 72.0 * b * s * l * h * h * (1.0 + s / (6.0 * h) + v / (12.0 * l * h)),
        Recompute::Selective => {
            72.0 * b * s * l * h * h * (1.0 + s / (6.0 * h) + v / (12.0 * l * h))
                + 4.0 * b * s * s * h * l
        }
    })
}

/// Every matmul of the model, per token, under `conv` — the Chinchilla Appendix F count,
/// generalised to grouped-query attention (k, v projections of width `KV·hd`), gated MLPs
/// (three matrices), `head_dim ≠ d/H`, OPT-350m's projections, latent attention, mixtures of
/// experts and sliding windows. Every linear costs `2 ×` its weights per token, so the
/// projections are `2 ×` the layer's projection weights ([`crate::params::LayerParams`]: q/k/v
/// `2·d·(H·hd + 2·KV·hd)`, output `2·H·hd·d`, MLP `2·d·f·(2 or 3)`; latent attention's four
/// projections and output); a mixture-of-experts layer runs its router `2·d·E`, `k` of its `E`
/// experts and its shared experts. The attention core per layer and token is scores
/// `2·T'·H·d_qk`, attention×V `2·T'·H·d_v` and (optionally) softmax `3·H·T'`, with `T'` the
/// context a token attends to: `T` for global layers, `min(T, w)` for sliding-window layers;
/// with `causal` the average over positions, `T/2` or `w − w²/(2T)` when `w < T`. Logits
/// `2·e·V`; one-hot embedding `2·V·e`. Norms, biases, activations and residual adds are left
/// out, as in Appendix F. Backward = 2 × forward of everything counted; recomputation adds the
/// layers' forward (full) or the attention core's (selective), never the logits (Narayanan et
/// al. 2021 eq. 3 counts the logits 3 times even with recomputation).
///
/// ```
/// use lmshape::{flops::{self, FlopsConvention}, presets, Recompute};
/// // With Megatron's assumptions the count equals Narayanan et al. eq. 3 per token.
/// let m = presets::by_name("bloom-176b")?;
/// let per_token = flops::matmul_flops_per_token(&m, &FlopsConvention::megatron(2048, Recompute::Full))?;
/// let eq3 = flops::megatron_step_flops(&m, 1, 2048, Recompute::Full)? / 2048.0;
/// assert!((per_token.training_flops() / eq3 - 1.0).abs() < 1e-12);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// A zero sequence length, or a model that breaks one of its rules ([`crate::Transformer::validate`]) or counts that overflow `u64`.
pub fn matmul_flops_per_token(m: &Transformer, conv: &FlopsConvention) -> Result<TokenFlops> {
    positive(conv.seq_len, "seq_len")?;
    let d = m.hidden_size as f64;
    let v = m.vocab_size as f64;
    let e = m.embed_dim() as f64;
    let cores = attention_core_flops(m, conv);
    let projections = projection_flops(m)?;
    let layers = projections + cores;
    let proj = if m.embed_dim() != m.hidden_size {
        2.0 * 2.0 * e * d
    } else {
        0.0
    };
    let logits = if conv.include_logits {
        2.0 * e * v
    } else {
        0.0
    };
    let embed = if conv.include_embedding {
        2.0 * v * e
    } else {
        0.0
    };
    let forward = embed + proj + layers + logits;
    let recompute = match conv.recompute {
        Recompute::None => 0.0,
        Recompute::Selective => cores,
        Recompute::Full => layers,
    };
    Ok(TokenFlops {
        forward_flops: forward,
        backward_flops: 2.0 * forward,
        recompute_flops: recompute,
    })
}

/// The attention core's FLOPs per token over every layer (see [`matmul_flops_per_token`]):
/// scores and values `2·ctx·a·(d_qk + d_v)`, the softmax's `3·a·ctx` when counted, at the
/// context a global or a local (sliding-window) layer attends.
fn attention_core_flops(m: &Transformer, conv: &FlopsConvention) -> f64 {
    let t = conv.seq_len as f64;
    let heads = m.num_heads as f64;
    let (qk_dim, v_dim) = m.head_widths();
    let (qk_dim, v_dim) = (qk_dim as f64, v_dim as f64);
    // Context attended per token: global and local layers.
    let attended = |window: f64| -> f64 {
        if conv.causal {
            causal_attended_keys(window, t)
        } else {
            window.min(t)
        }
    };
    let core_at = |ctx: f64| {
        2.0 * ctx * heads * (qk_dim + v_dim)
            + if conv.include_softmax {
                3.0 * heads * ctx
            } else {
                0.0
            }
    };
    let local_layers = m
        .local_attention
        .map_or(0, |w| w.local_layer_count(m.num_layers)) as f64;
    let window = m.local_attention.map_or(t, |w| w.window as f64);
    (m.num_layers as f64 - local_layers) * core_at(attended(t))
        + local_layers * core_at(attended(window))
}

/// Keys a query attends on average under a causal mask, over a sequence of `seq` tokens with a
/// window of `window` keys (`window ≥ seq`: global attention): `w − w²/(2T)` for
/// `w = min(window, T)`, `T/2` for global attention — the mean over positions `p < T` of
/// `min(p, w)` in the continuum (an identity: `(w²/2 + (T − w)·w)/T`); FlashAttention-2 skips
/// the masked blocks likewise (Dao 2023 §3.1).
///
/// ```
/// use lmshape::flops::causal_attended_keys;
/// assert_eq!(causal_attended_keys(4096.0, 2048.0), 1024.0);
/// assert_eq!(causal_attended_keys(512.0, 2048.0), 512.0 - 512.0 * 512.0 / 4096.0);
/// ```
pub fn causal_attended_keys(window: f64, seq: f64) -> f64 {
    let w = window.min(seq);
    if w >= seq {
        0.5 * seq
    } else {
        w - w * w / (2.0 * seq)
    }
}

/// The linear layers' FLOPs per token over every layer (see [`matmul_flops_per_token`]):
/// `2 ×` the weights of every projection and MLP a token passes through, the routed experts'
/// at the active fraction `k/E`, and the router's `2·d·E`.
fn projection_flops(m: &Transformer) -> Result<f64> {
    use crate::params::{LayerKind, layer_kind_params_on_rank};
    let linear = |p: &crate::params::LayerParams, active_fraction: f64| -> f64 {
        2.0 * (p.qkv_weight_params + p.attn_out_weight_params) as f64
            + 2.0 * (p.mlp_in_weight_params + p.mlp_out_weight_params) as f64
            + 2.0 * p.routed_expert_params as f64 * active_fraction
            + 2.0 * p.shared_expert_params as f64
    };
    let dense = layer_kind_params_on_rank(m, 1, LayerKind::Dense)?;
    let (moe_layers, moe_part) = match &m.moe {
        Some(spec) => {
            let p = layer_kind_params_on_rank(m, 1, LayerKind::Moe)?;
            let frac = spec.top_k as f64 / spec.num_experts as f64;
            let router = 2.0 * m.hidden_size as f64 * spec.num_experts as f64;
            (
                spec.moe_layers_in(0..m.num_layers) as f64,
                linear(&p, frac) + router,
            )
        }
        None => (0.0, 0.0),
    };
    Ok((m.num_layers as f64 - moe_layers) * linear(&dense, 1.0) + moe_layers * moe_part)
}

/// Hoffmann et al. 2022 Appendix F per token at context `seq_len`: see
/// [`FlopsConvention::chinchilla`].
///
/// # Errors
/// As [`matmul_flops_per_token`].
pub fn chinchilla_flops_per_token(m: &Transformer, seq_len: u64) -> Result<TokenFlops> {
    matmul_flops_per_token(m, &FlopsConvention::chinchilla(seq_len))
}

/// The headline figures of a model at one context length.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FlopsSummary {
    /// Context length used.
    pub seq_len: u64,
    /// Kaplan forward per token.
    pub kaplan_forward: f64,
    /// Kaplan training (3× forward) per token.
    pub kaplan_training: f64,
    /// PaLM model FLOPs per token (total-parameter basis, full attention).
    pub palm_model: f64,
    /// Megatron eq. 3 per token, full recomputation.
    pub megatron_full_recompute: f64,
    /// Chinchilla Appendix F per token (forward + backward).
    pub chinchilla: TokenFlops,
}

/// Compute every convention at once.
///
/// ```
/// let m = lmshape::presets::by_name("gpt3-xl")?;
/// let s = lmshape::flops::summary(&m, 2048)?;
/// assert!(s.chinchilla.training_flops() > s.kaplan_training * 0.9);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// As [`matmul_flops_per_token`].
pub fn summary(m: &Transformer, seq_len: u64) -> Result<FlopsSummary> {
    let kaplan_forward = kaplan_forward_flops_per_token(m, seq_len, false)?;
    Ok(FlopsSummary {
        seq_len,
        kaplan_forward,
        kaplan_training: 3.0 * kaplan_forward,
        palm_model: palm_flops_per_token(m, seq_len, ParamBasis::Total, false)?,
        megatron_full_recompute: megatron_step_flops(m, 1, seq_len, Recompute::Full)?
            / seq_len as f64,
        chinchilla: chinchilla_flops_per_token(m, seq_len)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets;

    /// Narayanan et al. 2021 §5.1: per layer forward `24Bsh² + 4Bs²h`; logits `2BshV`;
    /// training 3× (4× for the layers with recompute). Checked term by term for a GPT shape.
    #[test]
    fn megatron_identity_without_recompute() {
        let m = presets::by_name("gpt3-2.7b").unwrap();
        let (s, h, l, v) = (2048.0, 2560.0, 32.0, 50257.0);
        let want = 3.0 * (l * (24.0 * h * h + 4.0 * s * h) + 2.0 * h * v);
        let got = matmul_flops_per_token(&m, &FlopsConvention::megatron(2048, Recompute::None))
            .unwrap()
            .training_flops();
        assert!((got / want - 1.0).abs() < 1e-12);
        let eq = megatron_step_flops(&m, 1, 2048, Recompute::None).unwrap() / s;
        assert!((eq / want - 1.0).abs() < 1e-12);
    }

    #[test]
    fn selective_adds_attention_core_forward() {
        let m = presets::by_name("gpt3-2.7b").unwrap();
        let a = megatron_step_flops(&m, 1, 2048, Recompute::None).unwrap();
        let b = megatron_step_flops(&m, 1, 2048, Recompute::Selective).unwrap();
        assert!((b - a - 4.0 * 2048.0 * 2048.0 * 2560.0 * 32.0).abs() < 1.0);
        let c = matmul_flops_per_token(&m, &FlopsConvention::megatron(2048, Recompute::Selective))
            .unwrap();
        assert!((c.training_flops() * 2048.0 / b - 1.0).abs() < 1e-12);
    }

    #[test]
    fn causal_halves_attention_only() {
        let m = presets::by_name("gpt3-xl").unwrap();
        let full = kaplan_forward_flops_per_token(&m, 2048, false).unwrap();
        let causal = kaplan_forward_flops_per_token(&m, 2048, true).unwrap();
        assert_eq!(full - causal, 24.0 * 2048.0 * 3072.0); // L · n_ctx · d_attn
    }

    #[test]
    fn zero_context_is_an_error() {
        let m = presets::by_name("gpt3-xl").unwrap();
        assert!(kaplan_forward_flops_per_token(&m, 0, false).is_err());
    }
}
