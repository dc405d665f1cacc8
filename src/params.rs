//! Exact parameter counts, per component.
//!
//! Counts follow the modules of the Hugging Face `transformers` implementations of each family
//! (`modeling_gpt2.py`, `modeling_gpt_neox.py`, `modeling_bloom.py`, `modeling_opt.py`,
//! `modeling_llama.py`, `modeling_qwen2.py`, `modeling_gemma.py`, `modeling_falcon.py`):
//!
//! * token embedding `V · e` (`e = embed_proj_dim` or `d`); learned positions
//!   `(P + offset) · d`; untied head `V · e`;
//! * attention: q `d · (H·hd)`, k and v `d · (KV·hd)` each, out `(H·hd) · d`, plus biases
//!   `H·hd + 2·KV·hd` (q/k/v) and `d` (out) where the family has them;
//! * MLP: `2 · d · f` (standard) or `3 · d · f` (gated), biases `f + d` (standard) or
//!   `2f + d` (gated);
//! * norms: LayerNorm `2d`, RMSNorm `d`, one or two per layer, an optional final norm and
//!   BLOOM's embedding norm;
//! * OPT-350m's bias-free `project_in` / `project_out`: `2 · e · d`.
//!
//! Kaplan et al. 2020 §2.1 define the non-embedding count `N` by leaving out token and position
//! embeddings; an untied output head is an embedding matrix too (the Pythia model card's
//! "non-embedding params" leave out both `embed_in` and `embed_out`), so it is left out as well.

use crate::error::{Error, Result};
use crate::model::{MlpKind, PositionKind, Transformer};
use serde::{Deserialize, Serialize};

/// Parameters of one transformer layer, by tensor group, as needed to shard it over tensor
/// parallelism (Megatron-LM: column-parallel q/k/v and MLP-in split weights and biases;
/// row-parallel out/MLP-out split weights but keep their bias whole; norms are replicated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LayerParams {
    /// q, k, v weight matrices.
    pub qkv_weight_params: u64,
    /// q, k, v biases.
    pub qkv_bias_params: u64,
    /// Attention output weight.
    pub attn_out_weight_params: u64,
    /// Attention output bias.
    pub attn_out_bias_params: u64,
    /// MLP input weights (up, plus gate when gated).
    pub mlp_in_weight_params: u64,
    /// MLP input biases.
    pub mlp_in_bias_params: u64,
    /// MLP output (down) weight.
    pub mlp_out_weight_params: u64,
    /// MLP output bias.
    pub mlp_out_bias_params: u64,
    /// The layer's norms.
    pub norm_params: u64,
}

impl LayerParams {
    /// Attention parameters of the layer.
    pub fn attention_params(&self) -> u64 {
        self.qkv_weight_params
            + self.qkv_bias_params
            + self.attn_out_weight_params
            + self.attn_out_bias_params
    }

    /// MLP parameters of the layer.
    pub fn mlp_params(&self) -> u64 {
        self.mlp_in_weight_params
            + self.mlp_in_bias_params
            + self.mlp_out_weight_params
            + self.mlp_out_bias_params
    }

    /// All parameters of the layer.
    pub fn total_params(&self) -> u64 {
        self.attention_params() + self.mlp_params() + self.norm_params
    }
}

/// A model's parameters by component. Every field is an exact count.
///
/// Identity: `total = token_embedding + position_embedding + embedding_norm +
/// embedding_projection + attention + mlp + layer_norm + final_norm + output_head`, and
/// `total = embedding + non_embedding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ParamCounts {
    /// Token embedding `V · e`.
    pub token_embedding_params: u64,
    /// Learned position table (0 for rotary, ALiBi, none).
    pub position_embedding_params: u64,
    /// BLOOM's norm after the embedding.
    pub embedding_norm_params: u64,
    /// OPT-350m's `project_in` + `project_out`.
    pub embedding_projection_params: u64,
    /// Attention over all layers.
    pub attention_params: u64,
    /// MLP over all layers.
    pub mlp_params: u64,
    /// Norms inside the layers.
    pub layer_norm_params: u64,
    /// Final norm.
    pub final_norm_params: u64,
    /// Untied output head (0 when tied).
    pub output_head_params: u64,
    /// One layer's parameters.
    pub layer: LayerParams,
    /// Everything.
    pub total_params: u64,
    /// Token + position embeddings + untied head.
    pub embedding_params: u64,
    /// Kaplan's `N`: `total − embedding`.
    pub non_embedding_params: u64,
}

/// One layer's parameters (see the module docs for the formulas). Overflow of any part, or of
/// their sum, is an error.
pub fn layer_params(m: &Transformer) -> Result<LayerParams> {
    layer_params_on_rank(m, 1)
}

/// One layer's parameters held by one of `tp` tensor-parallel ranks (Megatron-LM,
/// Shoeybi et al. 2019 §3): column-parallel q/k/v and MLP-input weights and biases split,
/// row-parallel output and MLP-output weights split with their biases kept whole, norms
/// replicated; key/value heads per rank by [`crate::parallel::kv_heads_per_rank`] (fewer kv
/// heads than ranks are replicated, one per rank). `tp = 1` is the whole layer. The layout
/// rules ([`crate::parallel::check_tensor_split`]) are not checked here: a count that does
/// not divide is floored.
///
/// ```
/// use lmshape::{params, presets};
/// let m = presets::by_name("gpt3-175b")?;
/// let whole = params::layer_params(&m)?.total_params();
/// let rank = params::layer_params_on_rank(&m, 8)?.total_params();
/// // Weights and column biases split by 8; the two row-parallel biases and two norms do not.
/// let kept = 12288 * 2 + 2 * 2 * 12288;
/// assert_eq!(rank, (whole - kept) / 8 + kept);
/// # Ok::<(), lmshape::Error>(())
/// ```
pub fn layer_params_on_rank(m: &Transformer, tp: u64) -> Result<LayerParams> {
    let kv_heads = crate::parallel::kv_heads_per_rank(m.num_kv_heads, tp)?;
    layer_params_checked(m, tp, kv_heads).ok_or(Error::Overflow {
        what: "layer parameters",
    })
}

/// [`layer_params_on_rank`] in `Option` arithmetic (cheap on the enumeration hot path).
fn layer_params_checked(m: &Transformer, tp: u64, kv_heads: u64) -> Option<LayerParams> {
    let d = m.hidden_size;
    let q = (m.num_heads / tp).checked_mul(m.head_dim)?;
    let kv = kv_heads.checked_mul(m.head_dim)?;
    let f = m.ffn_size / tp;
    let qkv_out = q.checked_add(kv.checked_mul(2)?)?;
    let b = m.arch.biases;
    let in_mats = match m.arch.mlp {
        MlpKind::Standard => 1,
        MlpKind::Gated => 2,
    };
    let norm = m.arch.norm.checked_params(d)?;
    let layer = LayerParams {
        qkv_weight_params: d.checked_mul(qkv_out)?,
        qkv_bias_params: if b.qkv { qkv_out } else { 0 },
        attn_out_weight_params: q.checked_mul(d)?,
        attn_out_bias_params: if b.attn_out { d } else { 0 },
        mlp_in_weight_params: d.checked_mul(f)?.checked_mul(in_mats)?,
        mlp_in_bias_params: if b.mlp { f.checked_mul(in_mats)? } else { 0 },
        mlp_out_weight_params: f.checked_mul(d)?,
        mlp_out_bias_params: if b.mlp { d } else { 0 },
        norm_params: norm.checked_mul(m.arch.block.norms_per_layer())?,
    };
    // The whole layer fits in u64, so every partial sum of the methods above does too.
    [
        layer.qkv_weight_params,
        layer.qkv_bias_params,
        layer.attn_out_weight_params,
        layer.attn_out_bias_params,
        layer.mlp_in_weight_params,
        layer.mlp_in_bias_params,
        layer.mlp_out_weight_params,
        layer.mlp_out_bias_params,
        layer.norm_params,
    ]
    .iter()
    .try_fold(0u64, |acc, &x| acc.checked_add(x))?;
    Some(layer)
}

/// The parameters outside the transformer layers, split by the end of the model that holds
/// them: the input end (first pipeline stage) and the output end (last stage).
///
/// Input end: the token embedding `V · e` (vocab-parallel: `V/tp` rows per rank), a learned
/// position table `(P + offset) · d` (replicated over `tp`, as Megatron-LM's `Embedding`
/// keeps it), BLOOM's embedding norm, OPT-350m's `project_in` `e · d`. Output end: the final
/// norm, OPT-350m's `project_out` `d · e`, and the output head `V · e / tp` when it is a
/// separate tensor (untied, or a tied head's copy on a last stage that does not hold the
/// embedding, as Megatron-LM keeps one when `pp > 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EndParams {
    /// Token embedding rows held (all of them for the whole model, `V/tp` on a rank).
    pub token_embedding_params: u64,
    /// Learned position table.
    pub position_embedding_params: u64,
    /// Norm after the embedding.
    pub embedding_norm_params: u64,
    /// `project_in` (input end) or `project_out` (output end).
    pub projection_params: u64,
    /// Final norm.
    pub final_norm_params: u64,
    /// Separate output head.
    pub output_head_params: u64,
}

impl EndParams {
    /// Everything held.
    pub fn total_params(&self) -> u64 {
        self.token_embedding_params
            + self.position_embedding_params
            + self.embedding_norm_params
            + self.projection_params
            + self.final_norm_params
            + self.output_head_params
    }
}

/// The input end's parameters on one of `tp` ranks with `vocab_rows` embedding rows (the
/// model's vocabulary, or Megatron-LM's padded one); see [`EndParams`].
pub fn input_end_params(m: &Transformer, vocab_rows: u64, tp: u64) -> Result<EndParams> {
    crate::error::positive(tp, "tp")?;
    input_end_checked(m, vocab_rows, tp).ok_or(Error::Overflow {
        what: "embedding parameters",
    })
}

/// The output end's parameters on one of `tp` ranks; `separate_head` says whether the head is
/// its own tensor there (see [`EndParams`]).
pub fn output_end_params(
    m: &Transformer,
    vocab_rows: u64,
    tp: u64,
    separate_head: bool,
) -> Result<EndParams> {
    crate::error::positive(tp, "tp")?;
    output_end_checked(m, vocab_rows, tp, separate_head).ok_or(Error::Overflow {
        what: "output head parameters",
    })
}

fn projection(m: &Transformer) -> Option<u64> {
    match m.arch.embed_proj_dim {
        Some(p) if p != m.hidden_size => p.checked_mul(m.hidden_size),
        _ => Some(0),
    }
}

fn input_end_checked(m: &Transformer, vocab_rows: u64, tp: u64) -> Option<EndParams> {
    let e = m.embed_dim();
    let end = EndParams {
        token_embedding_params: vocab_rows.checked_mul(e)? / tp,
        position_embedding_params: match m.arch.position {
            PositionKind::Learned { offset } => m
                .max_positions
                .checked_add(offset)?
                .checked_mul(m.hidden_size)?,
            _ => 0,
        },
        embedding_norm_params: if m.arch.embedding_norm {
            m.arch.norm.checked_params(e)?
        } else {
            0
        },
        projection_params: projection(m)?,
        final_norm_params: 0,
        output_head_params: 0,
    };
    checked_total(&end).map(|_| end)
}

fn output_end_checked(
    m: &Transformer,
    vocab_rows: u64,
    tp: u64,
    separate_head: bool,
) -> Option<EndParams> {
    let end = EndParams {
        projection_params: projection(m)?,
        final_norm_params: if m.arch.final_norm {
            m.arch.norm.checked_params(m.hidden_size)?
        } else {
            0
        },
        output_head_params: if separate_head {
            vocab_rows.checked_mul(m.embed_dim())? / tp
        } else {
            0
        },
        ..EndParams::default()
    };
    checked_total(&end).map(|_| end)
}

fn checked_total(e: &EndParams) -> Option<u64> {
    [
        e.token_embedding_params,
        e.position_embedding_params,
        e.embedding_norm_params,
        e.projection_params,
        e.final_norm_params,
        e.output_head_params,
    ]
    .iter()
    .try_fold(0u64, |acc, &x| acc.checked_add(x))
}

/// Exact parameter counts of a model (checked arithmetic: overflow is an error).
///
/// ```
/// use lmshape::{presets, Transformer};
/// let c = presets::by_name("gpt3-175b")?.param_counts()?;
/// assert_eq!(c.total_params, c.embedding_params + c.non_embedding_params);
/// assert!((c.total_params as f64 / 175e9 - 1.0).abs() < 0.01);
/// # Ok::<(), lmshape::Error>(())
/// ```
pub fn param_counts(m: &Transformer) -> Result<ParamCounts> {
    param_counts_checked(m).ok_or(Error::Overflow {
        what: "parameter count",
    })
}

fn param_counts_checked(m: &Transformer) -> Option<ParamCounts> {
    let layer = layer_params_checked(m, 1, m.num_kv_heads)?;
    let input = input_end_checked(m, m.vocab_size, 1)?;
    let output = output_end_checked(m, m.vocab_size, 1, !m.arch.tied_embeddings)?;
    let layers = m.num_layers;
    let attention_params = layer.attention_params().checked_mul(layers)?;
    let mlp_params = layer.mlp_params().checked_mul(layers)?;
    let layer_norm_params = layer.norm_params.checked_mul(layers)?;
    let embedding_projection_params = input
        .projection_params
        .checked_add(output.projection_params)?;
    let total_params = [
        checked_total(&input)?,
        checked_total(&output)?,
        attention_params,
        mlp_params,
        layer_norm_params,
    ]
    .iter()
    .try_fold(0u64, |acc, &x| acc.checked_add(x))?;
    let embedding_params =
        input.token_embedding_params + input.position_embedding_params + output.output_head_params;
    Some(ParamCounts {
        token_embedding_params: input.token_embedding_params,
        position_embedding_params: input.position_embedding_params,
        embedding_norm_params: input.embedding_norm_params,
        embedding_projection_params,
        attention_params,
        mlp_params,
        layer_norm_params,
        final_norm_params: output.final_norm_params,
        output_head_params: output.output_head_params,
        layer,
        total_params,
        embedding_params,
        non_embedding_params: total_params - embedding_params,
    })
}

impl Transformer {
    /// Exact parameter counts; see [`param_counts`].
    pub fn param_counts(&self) -> Result<ParamCounts> {
        param_counts(self)
    }

    /// Total parameters; see [`param_counts`].
    pub fn total_params(&self) -> Result<u64> {
        Ok(param_counts(self)?.total_params)
    }
}

/// Kaplan et al. 2020 §2.1 approximation `N ≈ 12 · L · d²` (non-embedding, `d_attn = d`,
/// `d_ff = 4d`), as an `f64`.
///
/// ```
/// // GPT-3 175B: 12 · 96 · 12288² ≈ 1.74e11.
/// let n = lmshape::params::kaplan_approx_params(96, 12288);
/// assert!((n / 1.74e11 - 1.0).abs() < 0.01);
/// ```
pub fn kaplan_approx_params(num_layers: u64, hidden_size: u64) -> f64 {
    12.0 * num_layers as f64 * (hidden_size as f64).powi(2)
}
