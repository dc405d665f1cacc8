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
//! * OPT-350m's bias-free `project_in` / `project_out`: `2 · e · d`;
//! * q/k norms (`modeling_qwen3.py`, `modeling_gemma3.py`: one norm of `hd` each for q and k;
//!   `modeling_olmo2.py`: one over `H·hd`, one over `KV·hd`); gpt-oss attention sinks (`H`);
//!   Gemma 2/3's four norms per layer;
//! * multi-head latent attention (`modeling_deepseek.py`): see [`crate::model::LatentAttention`];
//! * mixture-of-experts layers (`modeling_mixtral.py`, `modeling_qwen2_moe.py`,
//!   `modeling_qwen3_moe.py`, `modeling_deepseek.py`, `modeling_gpt_oss.py`,
//!   `modeling_olmoe.py`, `modeling_dbrx.py`): see [`crate::model::Moe`].
//!
//! **Active parameters per token** of a mixture-of-experts model: everything except the
//! `E − k` routed experts a token does not use in each mixture-of-experts layer. Vendors differ
//! on the input embedding (a table lookup, not a matmul): Mistral (Mixtral 12.9B), Qwen and
//! DeepSeek count it; OpenAI's gpt-oss model card (5.1B active for gpt-oss-120b) does not.
//! Both are given: [`ParamCounts::active_params`] and
//! [`ParamCounts::active_non_embedding_input_params`].
//!
//! Kaplan et al. 2020 §2.1 define the non-embedding count `N` by leaving out token and position
//! embeddings; an untied output head is an embedding matrix too (the Pythia model card's
//! "non-embedding params" leave out both `embed_in` and `embed_out`), so it is left out as well.

use crate::error::{Error, Result};
use crate::model::{Attention, MlpKind, PositionKind, QkNorm, Transformer};
use serde::{Deserialize, Serialize};

/// Which parameter count stands for `N` in a `c·N` approximation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamBasis {
    /// Kaplan's non-embedding `N` (leaves out the logits matmul).
    NonEmbedding,
    /// Every parameter (as in nanoGPT-style MFU estimates that include the tied head).
    Total,
}

/// Key/value heads held by one of `tp` tensor-parallel ranks: `kv / tp` when they split, one
/// (replicated) when there are fewer kv heads than ranks (Megatron-LM `num_query_groups`;
/// the rule itself is [`crate::parallel::check_tensor_split`]).
///
/// ```
/// use lmshape::parallel::kv_heads_per_rank;
/// assert_eq!(kv_heads_per_rank(8, 4)?, 2);
/// assert_eq!(kv_heads_per_rank(2, 8)?, 1);
/// assert!(kv_heads_per_rank(8, 0).is_err());
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// [`Error::ZeroSize`] for `tp = 0`.
pub fn kv_heads_per_rank(num_kv_heads: u64, tp: u64) -> Result<u64> {
    crate::error::positive(tp, "tp")?;
    Ok(if num_kv_heads >= tp {
        num_kv_heads / tp
    } else {
        1
    })
}

/// Which feed-forward block a layer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    /// The dense MLP of width `ffn_size`.
    Dense,
    /// The mixture-of-experts block ([`crate::model::Moe`]).
    Moe,
}

/// Parameters of one transformer layer, by tensor group, as needed to shard it over tensor
/// parallelism (Megatron-LM: column-parallel q/k/v and MLP-in split weights and biases;
/// row-parallel out/MLP-out split weights but keep their bias whole; norms are replicated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LayerParams {
    /// q, k, v weight matrices (with latent attention: `q_a`, `q_b` or `q`, `kv_a`, `kv_b`).
    pub qkv_weight_params: u64,
    /// q, k, v biases.
    pub qkv_bias_params: u64,
    /// Attention output weight.
    pub attn_out_weight_params: u64,
    /// Attention output bias.
    pub attn_out_bias_params: u64,
    /// Inside attention: q/k norms, latent-attention norms, attention sinks.
    #[serde(default)]
    pub attn_extra_params: u64,
    /// Dense MLP input weights (up, plus gate when gated).
    pub mlp_in_weight_params: u64,
    /// Dense MLP input biases.
    pub mlp_in_bias_params: u64,
    /// Dense MLP output (down) weight.
    pub mlp_out_weight_params: u64,
    /// Dense MLP output bias.
    pub mlp_out_bias_params: u64,
    /// Router (gate) of a mixture-of-experts layer, with its bias and correction bias.
    #[serde(default)]
    pub router_params: u64,
    /// All routed experts of a mixture-of-experts layer.
    #[serde(default)]
    pub routed_expert_params: u64,
    /// Shared experts (and their gate) of a mixture-of-experts layer.
    #[serde(default)]
    pub shared_expert_params: u64,
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
            + self.attn_extra_params
    }

    /// Dense MLP parameters of the layer.
    pub fn mlp_params(&self) -> u64 {
        self.mlp_in_weight_params
            + self.mlp_in_bias_params
            + self.mlp_out_weight_params
            + self.mlp_out_bias_params
    }

    /// Mixture-of-experts parameters of the layer (router, routed and shared experts).
    pub fn moe_params(&self) -> u64 {
        self.router_params + self.routed_expert_params + self.shared_expert_params
    }

    /// All parameters of the layer.
    pub fn total_params(&self) -> u64 {
        self.attention_params() + self.mlp_params() + self.moe_params() + self.norm_params
    }
}

/// A model's parameters by component. Every field is an exact count.
///
/// Identity: `total = token_embedding + position_embedding + embedding_norm +
/// embedding_projection + attention + mlp + router + routed_experts + shared_experts +
/// layer_norm + final_norm + output_head`, and `total = embedding + non_embedding`.
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
    /// Attention over all layers (with q/k norms, latent norms and sinks).
    pub attention_params: u64,
    /// Dense MLPs over all layers.
    pub mlp_params: u64,
    /// Routers of the mixture-of-experts layers.
    #[serde(default)]
    pub router_params: u64,
    /// Routed experts of the mixture-of-experts layers.
    #[serde(default)]
    pub routed_expert_params: u64,
    /// Shared experts of the mixture-of-experts layers.
    #[serde(default)]
    pub shared_expert_params: u64,
    /// Norms inside the layers.
    pub layer_norm_params: u64,
    /// Final norm.
    pub final_norm_params: u64,
    /// Untied output head (0 when tied).
    pub output_head_params: u64,
    /// One layer's parameters (the first layer's kind).
    pub layer: LayerParams,
    /// Everything.
    pub total_params: u64,
    /// Token + position embeddings + untied head.
    pub embedding_params: u64,
    /// Kaplan's `N`: `total − embedding`.
    pub non_embedding_params: u64,
    /// Parameters one token uses, the input embedding included (equal to `total` for a dense
    /// model).
    #[serde(default)]
    pub active_params: u64,
    /// Active parameters without the input embedding table.
    #[serde(default)]
    pub active_non_embedding_input_params: u64,
    /// Multi-token-prediction modules shipped with the weights, not in `total` (each: its own
    /// layer, `2d×d` projection, three norms, and the embedding and head copies the checkpoint
    /// stores; DeepSeek-AI 2024, DeepSeek-V3 §2.2).
    #[serde(default)]
    pub mtp_params: u64,
}

/// One layer's parameters (see the module docs for the formulas), of the first layer's kind.
/// Overflow of any part, or of their sum, is an error.
///
/// # Errors
/// A model that breaks one of its rules ([`crate::Transformer::validate`]) or counts that overflow `u64`.
pub fn layer_params(m: &Transformer) -> Result<LayerParams> {
    layer_params_on_rank(m, 1)
}

/// The kind of layer `i` (from 0).
pub fn layer_kind(m: &Transformer, i: u64) -> LayerKind {
    match &m.moe {
        Some(moe) if moe.is_moe_layer(i) => LayerKind::Moe,
        _ => LayerKind::Dense,
    }
}

/// One layer's parameters (of the first layer's kind) held by one of `tp` tensor-parallel
/// ranks; see [`layer_kind_params_on_rank`].
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
///
/// # Errors
/// `tp = 0`, or a model that breaks one of its rules ([`crate::Transformer::validate`]) or counts that overflow `u64`.
pub fn layer_params_on_rank(m: &Transformer, tp: u64) -> Result<LayerParams> {
    layer_kind_params_on_rank(m, tp, layer_kind(m, 0))
}

/// One layer of `kind` held by one of `tp` tensor-parallel ranks (Megatron-LM, Shoeybi et al.
/// 2019 §3): column-parallel q/k/v and MLP-input weights and biases split, row-parallel output
/// and MLP-output weights split with their biases kept whole, norms replicated; key/value heads
/// per rank by [`kv_heads_per_rank`] (fewer kv heads than ranks are
/// replicated, one per rank). Latent attention keeps its down-projections (`q_a`, `kv_a`) and
/// their norms whole and splits the per-head up-projections and the output. Experts are split
/// like the dense MLP (expert tensor parallelism equal to `tp`, no expert parallelism); the
/// router is replicated. `tp = 1` is the whole layer. The layout rules
/// ([`crate::parallel::check_tensor_split`]) are not checked here: a count that does not
/// divide is floored.
///
/// # Errors
/// `tp = 0`, or a model that breaks one of its rules ([`crate::Transformer::validate`]) or counts that overflow `u64`.
pub fn layer_kind_params_on_rank(m: &Transformer, tp: u64, kind: LayerKind) -> Result<LayerParams> {
    let kv_heads = kv_heads_per_rank(m.num_kv_heads, tp)?;
    layer_params_checked(m, tp, kv_heads, kind).ok_or(Error::Overflow {
        what: "layer parameters",
    })
}

/// Parameters of layers `range` on one rank of a layout with `tp` tensor-parallel ranks and
/// experts over `ep × etp` ranks (Megatron-Core's expert parallelism and expert tensor
/// parallelism): `(everything but the routed experts, the routed experts)`. The routed experts
/// are sharded over the expert-data-parallel group, the rest over data parallelism, so a memory
/// estimate keeps them apart.
///
/// ```
/// use lmshape::{model::hf::from_hf_config_str, params};
/// let m = from_hf_config_str(r#"{"model_type":"mixtral"}"#)?; // 8 experts
/// let (_, one) = params::layers_params_on_rank_by_part(&m, 1, 1, 1, 0..32)?;
/// let (_, eight) = params::layers_params_on_rank_by_part(&m, 1, 8, 1, 0..32)?;
/// assert_eq!(eight * 8, one);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// A zero degree, or a model that breaks one of its rules ([`crate::Transformer::validate`]) or counts that overflow `u64`.
pub fn layers_params_on_rank_by_part(
    m: &Transformer,
    tp: u64,
    ep: u64,
    etp: u64,
    range: std::ops::Range<u64>,
) -> Result<(u64, u64)> {
    const W: &str = "stage parameters";
    crate::error::positive(ep, "ep")?;
    crate::error::positive(etp, "etp")?;
    let kv = kv_heads_per_rank(m.num_kv_heads, tp)?;
    let n = range.end.saturating_sub(range.start);
    let moe_layers = m.moe.map_or(0, |moe| moe.moe_layers_in(range));
    let dense = layer_kind_params_on_rank(m, tp, LayerKind::Dense)?.total_params();
    let mut rest = crate::error::mul(dense, n - moe_layers, W)?;
    let mut experts = 0;
    if moe_layers > 0 {
        let l = layer_params_sharded(m, tp, kv, LayerKind::Moe, ep, etp)
            .ok_or(Error::Overflow { what: W })?;
        let others = l.total_params() - l.routed_expert_params;
        rest = crate::error::add(rest, crate::error::mul(others, moe_layers, W)?, W)?;
        experts = crate::error::mul(l.routed_expert_params, moe_layers, W)?;
    }
    Ok((rest, experts))
}

/// The largest weight tensor of a layer on one rank: the largest of its linear weight matrices
/// ([`linear_weight_shapes_on_rank`], Megatron's fused layout) over the dense layer and, for
/// a mixture-of-experts model, its expert layer — in practice the fused query-key-value
/// projection (`ParallelAttention.query_key_value`), the MLP's input projection with gate and
/// up fused when gated (`ParallelMLP.dense_h_to_4h`, Megatron-Core `linear_fc1`), or a routed
/// expert's input projection split over `etp`.
///
/// ```
/// use lmshape::params::largest_layer_tensor_on_rank;
/// use lmshape::presets;
/// // BLOOM-176B at tp 4: dense_h_to_4h, 4·14336 × 14336 / 4.
/// let m = presets::by_name("bloom-176b").unwrap();
/// assert_eq!(largest_layer_tensor_on_rank(&m, 4, 1).unwrap(), 14336 * 14336);
/// ```
///
/// # Errors
/// `tp` or `etp` of 0, or counts that overflow `u64`.
pub fn largest_layer_tensor_on_rank(m: &Transformer, tp: u64, etp: u64) -> Result<u64> {
    let mut largest = 0;
    for kind in [LayerKind::Dense, LayerKind::Moe] {
        if kind == LayerKind::Moe && m.moe.is_none() {
            continue;
        }
        for &(rows, cols) in linear_weight_shapes_on_rank(m, tp, etp, kind)?.as_slice() {
            largest = largest.max(crate::error::mul(rows, cols, "largest layer tensor")?);
        }
    }
    Ok(largest)
}

/// The weight matrices of one layer's linear modules on one rank, each `(rows, cols)` =
/// `(outputs, inputs)` as Megatron-Core lays them out with Transformer Engine
/// (`megatron/core/models/gpt/gpt_layer_specs.py`): the fused query-key-value projection
/// `(q + 2k) × d` and the output projection `d × q`; under latent attention the
/// down-projections `r_q × d` and `(r_kv + r) × d` (whole on every rank), the up-projections
/// `H(n + r) × r_q` (or one `H(n + r) × d` without a query rank) and `H(n + v) × r_kv`, and the
/// output `d × H·v`; the MLP's fused input `g·f × d` (`g` = 2 gated) and output `d × f`; in a
/// mixture-of-experts layer, instead of the MLP, one routed expert's pair (each expert is its
/// own tensor of that shape, split over `etp`) and the shared experts' pair (split over `tp`).
/// The router is not a linear module of the library's kind and is left out. Widths per rank
/// as [`layer_kind_params_on_rank`]: biases, norms and the router are the only parameters of
/// the layer not in these matrices.
///
/// ```
/// use lmshape::params::linear_weight_shapes_on_rank;
/// use lmshape::{presets, params::LayerKind};
/// // GPT-3 175B at tp 8: 3·12288/8 × 12288, 12288 × 12288/8, 4·12288/8 × 12288, 12288 × 4·12288/8.
/// let m = presets::by_name("gpt3-175b")?;
/// let shapes = linear_weight_shapes_on_rank(&m, 8, 8, LayerKind::Dense)?;
/// assert_eq!(shapes.as_slice(), &[(4608, 12288), (12288, 1536), (6144, 12288), (12288, 6144)]);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// `tp` or `etp` of 0, or sizes that overflow `u64`.
pub fn linear_weight_shapes_on_rank(
    m: &Transformer,
    tp: u64,
    etp: u64,
    kind: LayerKind,
) -> Result<LinearShapes> {
    crate::error::positive(tp, "tp")?;
    crate::error::positive(etp, "etp")?;
    const W: &str = "linear weight shapes";
    let mul = |a: u64, b: u64| crate::error::mul(a, b, W);
    let d = m.hidden_size;
    let heads = m.num_heads / tp;
    let mut out = LinearShapes::default();
    match &m.attention {
        Attention::Standard => {
            let q = mul(heads, m.head_dim)?;
            let k = mul(kv_heads_per_rank(m.num_kv_heads, tp)?, m.head_dim)?;
            out.push((crate::error::add(q, mul(2, k)?, W)?, d));
            out.attention_inputs = out.len;
            out.push((d, q));
        }
        Attention::MultiLatent(mla) => {
            let qk = crate::error::add(mla.qk_nope_head_dim, mla.qk_rope_head_dim, W)?;
            match mla.q_lora_rank {
                Some(r) => {
                    out.push((r, d));
                    out.push((mul(heads, qk)?, r));
                }
                None => out.push((mul(heads, qk)?, d)),
            }
            let kv_down = crate::error::add(mla.kv_lora_rank, mla.qk_rope_head_dim, W)?;
            out.push((kv_down, d));
            let kv_up = crate::error::add(mla.qk_nope_head_dim, mla.v_head_dim, W)?;
            out.push((mul(heads, kv_up)?, mla.kv_lora_rank));
            out.attention_inputs = out.len;
            out.push((d, mul(heads, mla.v_head_dim)?));
        }
    }
    let gated = match m.arch.mlp {
        MlpKind::Standard => 1,
        MlpKind::Gated => 2,
    };
    let mut mlp = |f: u64| -> Result<()> {
        out.push((mul(gated, f)?, d));
        out.push((d, f));
        Ok(())
    };
    let shared = match (kind, &m.moe) {
        (LayerKind::Moe, Some(moe)) => {
            mlp(moe.expert_ffn_size / etp)?;
            moe.shared_ffn_size / tp
        }
        _ => {
            mlp(m.ffn_size / tp)?;
            0
        }
    };
    out.shared = out.len;
    if shared > 0 {
        out.push((mul(gated, shared)?, d));
        out.push((d, shared));
    }
    Ok(out)
}

/// The weight shapes [`linear_weight_shapes_on_rank`] finds: at most nine (latent attention's
/// five, a routed and a shared expert's two each), in a fixed array so that the estimate's and
/// the timer's hot paths allocate nothing; in the layer's order, the attention's input
/// projections, its output projection, the MLP (or one routed expert) and the shared experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinearShapes {
    shapes: [(u64, u64); 9],
    len: usize,
    /// Where the attention's output projection sits.
    attention_inputs: usize,
    /// Where the shared experts' pair begins (`len` without one).
    shared: usize,
}

impl LinearShapes {
    fn push(&mut self, shape: (u64, u64)) {
        if let Some(slot) = self.shapes.get_mut(self.len) {
            *slot = shape;
            self.len += 1;
        }
    }

    /// The shapes, `(rows, cols)`, in the layer's order.
    pub fn as_slice(&self) -> &[(u64, u64)] {
        self.shapes.get(..self.len).unwrap_or(&[])
    }

    /// The attention's input projections (one fused query-key-value projection, or latent
    /// attention's down- and up-projections).
    pub fn attention_inputs(&self) -> &[(u64, u64)] {
        self.shapes.get(..self.attention_inputs).unwrap_or(&[])
    }

    /// The attention's output projection.
    pub fn attention_output(&self) -> (u64, u64) {
        self.shapes
            .get(self.attention_inputs)
            .copied()
            .unwrap_or_default()
    }

    /// The dense MLP's input and output, or one routed expert's.
    pub fn mlp(&self) -> &[(u64, u64)] {
        self.shapes
            .get(self.attention_inputs + 1..self.shared)
            .unwrap_or(&[])
    }

    /// The shared experts' input and output (none outside a mixture-of-experts layer with
    /// shared experts).
    pub fn shared_experts(&self) -> &[(u64, u64)] {
        self.shapes.get(self.shared..self.len).unwrap_or(&[])
    }
}

/// The weights of an MLP of width `f` in the model's form: `(in weights, in biases, out weight,
/// out bias)`, biases only when `biases`.
fn mlp_tensors(m: &Transformer, f: u64, biases: bool) -> Option<(u64, u64, u64, u64)> {
    let d = m.hidden_size;
    let in_mats = match m.arch.mlp {
        MlpKind::Standard => 1,
        MlpKind::Gated => 2,
    };
    Some((
        d.checked_mul(f)?.checked_mul(in_mats)?,
        if biases { f.checked_mul(in_mats)? } else { 0 },
        f.checked_mul(d)?,
        if biases { d } else { 0 },
    ))
}

/// [`layer_kind_params_on_rank`] in `Option` arithmetic (cheap on the enumeration hot path).
fn layer_params_checked(
    m: &Transformer,
    tp: u64,
    kv_heads: u64,
    kind: LayerKind,
) -> Option<LayerParams> {
    layer_params_sharded(m, tp, kv_heads, kind, 1, tp)
}

/// [`layer_params_checked`] with the routed experts spread over `ep` expert-parallel ranks
/// (each holding `E/ep` experts) and each expert split over `etp` expert-tensor-parallel ranks.
fn layer_params_sharded(
    m: &Transformer,
    tp: u64,
    kv_heads: u64,
    kind: LayerKind,
    ep: u64,
    etp: u64,
) -> Option<LayerParams> {
    let heads = m.num_heads / tp;
    let mut layer = LayerParams::default();
    attention_params(m, heads, kv_heads, &mut layer)?;
    layer.attn_out_bias_params = if m.arch.biases.attn_out {
        m.hidden_size
    } else {
        0
    };
    if m.arch.attention_sinks {
        layer.attn_extra_params = layer.attn_extra_params.checked_add(heads)?;
    }
    match (kind, &m.moe) {
        (LayerKind::Moe, Some(moe)) => moe_params(m, moe, tp, ep, etp, &mut layer)?,
        _ => {
            let (wi, bi, wo, bo) = mlp_tensors(m, m.ffn_size / tp, m.arch.biases.mlp)?;
            layer.mlp_in_weight_params = wi;
            layer.mlp_in_bias_params = bi;
            layer.mlp_out_weight_params = wo;
            layer.mlp_out_bias_params = bo;
        }
    }
    layer.norm_params = m
        .arch
        .norm
        .checked_params(m.hidden_size)?
        .checked_mul(m.arch.block.norms_per_layer())?;
    // The whole layer fits in u64, so every partial sum of the methods above does too.
    [
        layer.qkv_weight_params,
        layer.qkv_bias_params,
        layer.attn_out_weight_params,
        layer.attn_out_bias_params,
        layer.attn_extra_params,
        layer.mlp_in_weight_params,
        layer.mlp_in_bias_params,
        layer.mlp_out_weight_params,
        layer.mlp_out_bias_params,
        layer.router_params,
        layer.routed_expert_params,
        layer.shared_expert_params,
        layer.norm_params,
    ]
    .iter()
    .try_fold(0u64, |acc, &x| acc.checked_add(x))?;
    Some(layer)
}

/// The attention's projections and norms on a rank holding `heads` query heads and
/// `kv_heads` key/value heads, into `layer`: multi-head/grouped-query attention with its QK
/// norms, or DeepSeek's multi-head latent attention (low-rank query and key/value
/// projections, their norms).
fn attention_params(
    m: &Transformer,
    heads: u64,
    kv_heads: u64,
    layer: &mut LayerParams,
) -> Option<()> {
    let d = m.hidden_size;
    let norm = |x: u64| m.arch.norm.checked_params(x);
    match &m.attention {
        Attention::Standard => {
            let q = heads.checked_mul(m.head_dim)?;
            let kv = kv_heads.checked_mul(m.head_dim)?;
            let qkv_out = q.checked_add(kv.checked_mul(2)?)?;
            layer.qkv_weight_params = d.checked_mul(qkv_out)?;
            layer.qkv_bias_params = if m.arch.biases.qkv { qkv_out } else { 0 };
            layer.attn_out_weight_params = q.checked_mul(d)?;
            layer.attn_extra_params = match m.arch.qk_norm {
                QkNorm::None => 0,
                QkNorm::PerHead => norm(m.head_dim)?.checked_mul(2)?,
                QkNorm::Full => norm(q)?.checked_add(norm(kv)?)?,
            };
        }
        Attention::MultiLatent(mla) => {
            let qk_head = mla.qk_nope_head_dim.checked_add(mla.qk_rope_head_dim)?;
            let q_up = heads.checked_mul(qk_head)?;
            let q = match mla.q_lora_rank {
                Some(r) => d.checked_mul(r)?.checked_add(r.checked_mul(q_up)?)?,
                None => d.checked_mul(q_up)?,
            };
            let kv_down = d.checked_mul(mla.kv_lora_rank.checked_add(mla.qk_rope_head_dim)?)?;
            let kv_up = mla.kv_lora_rank.checked_mul(
                heads.checked_mul(mla.qk_nope_head_dim.checked_add(mla.v_head_dim)?)?,
            )?;
            layer.qkv_weight_params = q.checked_add(kv_down)?.checked_add(kv_up)?;
            layer.attn_out_weight_params = heads.checked_mul(mla.v_head_dim)?.checked_mul(d)?;
            layer.attn_extra_params =
                norm(mla.kv_lora_rank)?.checked_add(mla.q_lora_rank.map_or(Some(0), norm)?)?;
        }
    }
    Some(())
}

/// A mixture-of-experts layer's router, routed experts (`E/ep` of them, each split over
/// `etp`) and shared experts (split over `tp`), into `layer`.
fn moe_params(
    m: &Transformer,
    moe: &crate::model::Moe,
    tp: u64,
    ep: u64,
    etp: u64,
    layer: &mut LayerParams,
) -> Option<()> {
    let (d, e) = (m.hidden_size, moe.num_experts);
    let router_bias = if moe.router_bias { e } else { 0 };
    let correction = if moe.score_correction_bias { e } else { 0 };
    layer.router_params = d
        .checked_mul(e)?
        .checked_add(router_bias)?
        .checked_add(correction)?;
    let (wi, bi, wo, bo) = mlp_tensors(m, moe.expert_ffn_size / etp.max(1), moe.expert_biases)?;
    layer.routed_expert_params =
        (e / ep.max(1)).checked_mul(wi.checked_add(bi)?.checked_add(wo)?.checked_add(bo)?)?;
    if moe.shared_ffn_size > 0 {
        let (wi, bi, wo, bo) = mlp_tensors(m, moe.shared_ffn_size / tp, false)?;
        let gate = if moe.shared_expert_gate { d } else { 0 };
        layer.shared_expert_params = wi
            .checked_add(bi)?
            .checked_add(wo)?
            .checked_add(bo)?
            .checked_add(gate)?;
    }
    Some(())
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
///
/// # Errors
/// `tp = 0`, or counts that overflow `u64`.
pub fn input_end_params(m: &Transformer, vocab_rows: u64, tp: u64) -> Result<EndParams> {
    crate::error::positive(tp, "tp")?;
    input_end_checked(m, vocab_rows, tp).ok_or(Error::Overflow {
        what: "embedding parameters",
    })
}

/// The output end's parameters on one of `tp` ranks; `separate_head` says whether the head is
/// its own tensor there (see [`EndParams`]).
///
/// # Errors
/// `tp = 0`, or counts that overflow `u64`.
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
///
/// # Errors
/// A model that breaks one of its rules ([`crate::Transformer::validate`]) or counts that overflow `u64`.
pub fn param_counts(m: &Transformer) -> Result<ParamCounts> {
    m.check_rules()?;
    param_counts_checked(m).ok_or(Error::Overflow {
        what: "parameter count",
    })
}

fn param_counts_checked(m: &Transformer) -> Option<ParamCounts> {
    let dense = layer_params_checked(m, 1, m.num_kv_heads, LayerKind::Dense)?;
    let (moe_layers, moe) = match &m.moe {
        Some(spec) => (
            spec.moe_layers_in(0..m.num_layers),
            layer_params_checked(m, 1, m.num_kv_heads, LayerKind::Moe)?,
        ),
        None => (0, LayerParams::default()),
    };
    let dense_layers = m.num_layers - moe_layers;
    let input = input_end_checked(m, m.vocab_size, 1)?;
    let output = output_end_checked(m, m.vocab_size, 1, !m.arch.tied_embeddings)?;
    let both = |f: fn(&LayerParams) -> u64| -> Option<u64> {
        f(&dense)
            .checked_mul(dense_layers)?
            .checked_add(f(&moe).checked_mul(moe_layers)?)
    };
    let attention_params = both(LayerParams::attention_params)?;
    let mlp_params = both(LayerParams::mlp_params)?;
    let router_params = both(|l| l.router_params)?;
    let routed_expert_params = both(|l| l.routed_expert_params)?;
    let shared_expert_params = both(|l| l.shared_expert_params)?;
    let layer_norm_params = both(|l| l.norm_params)?;
    let embedding_projection_params = input
        .projection_params
        .checked_add(output.projection_params)?;
    // The total and Kaplan's N come from one place, [`sizes`]; the components above add up to
    // it (the identity tested in `tests/model_properties.rs`).
    let Sizes {
        total_params,
        non_embedding_params,
    } = sizes_checked(m)?;
    let embedding_params = total_params - non_embedding_params;
    // Routed experts a token does not use: (E − k)/E of them in every mixture-of-experts layer
    // (each expert has the same size, so the unused part is exact).
    let unused = match &m.moe {
        Some(spec) => routed_expert_params / spec.num_experts * (spec.num_experts - spec.top_k),
        None => 0,
    };
    let active_params = total_params - unused;
    let mtp_params = match m.mtp_layers {
        0 => 0,
        n => {
            let d = m.hidden_size;
            let layer = if m.moe.is_some() { &moe } else { &dense };
            let per = layer
                .total_params()
                .checked_add(d.checked_mul(d)?.checked_mul(2)?)?
                .checked_add(m.arch.norm.checked_params(d)?.checked_mul(3)?)?
                .checked_add(m.vocab_size.checked_mul(m.embed_dim())?.checked_mul(2)?)?;
            per.checked_mul(n)?
        }
    };
    Some(ParamCounts {
        token_embedding_params: input.token_embedding_params,
        position_embedding_params: input.position_embedding_params,
        embedding_norm_params: input.embedding_norm_params,
        embedding_projection_params,
        attention_params,
        mlp_params,
        router_params,
        routed_expert_params,
        shared_expert_params,
        layer_norm_params,
        final_norm_params: output.final_norm_params,
        output_head_params: output.output_head_params,
        layer: if layer_kind(m, 0) == LayerKind::Moe {
            moe
        } else {
            dense
        },
        total_params,
        embedding_params,
        non_embedding_params,
        active_params,
        active_non_embedding_input_params: active_params - input.token_embedding_params,
        mtp_params,
    })
}

impl Transformer {
    /// Exact parameter counts; see [`param_counts`].
    ///
    /// # Errors
    /// A model that breaks one of its rules ([`crate::Transformer::validate`]) or counts that overflow `u64`.
    pub fn param_counts(&self) -> Result<ParamCounts> {
        param_counts(self)
    }

    /// Total parameters; see [`param_counts`].
    ///
    /// # Errors
    /// A model that breaks one of its rules ([`crate::Transformer::validate`]) or counts that overflow `u64`.
    pub fn total_params(&self) -> Result<u64> {
        Ok(sizes(self)?.total_params)
    }
}

/// A model's total and non-embedding parameter counts, without the per-component breakdown
/// (the search's hot path); equal to [`param_counts`]'s, from the same per-layer and end terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Every parameter.
    pub total_params: u64,
    /// Kaplan's `N`.
    pub non_embedding_params: u64,
}

/// [`Sizes`] of a model (overflow is an error).
///
/// ```
/// let m = lmshape::presets::by_name("bloom-176b")?;
/// let s = lmshape::params::sizes(&m)?;
/// assert_eq!(s.total_params, m.param_counts()?.total_params);
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// A model that breaks one of its rules ([`crate::Transformer::validate`]) or counts that overflow `u64`.
pub fn sizes(m: &Transformer) -> Result<Sizes> {
    m.check_rules()?;
    sizes_checked(m).ok_or(Error::Overflow {
        what: "parameter count",
    })
}

/// [`sizes`] without the model's rules, for the search's bracketing, whose models may group
/// kv heads unevenly (`None` on overflow; nothing divides by a model size).
pub(crate) fn sizes_checked(m: &Transformer) -> Option<Sizes> {
    let dense = layer_params_checked(m, 1, m.num_kv_heads, LayerKind::Dense)?.total_params();
    let layers = match &m.moe {
        None => dense.checked_mul(m.num_layers)?,
        Some(spec) => {
            let moe_layers = spec.moe_layers_in(0..m.num_layers);
            let moe = layer_params_checked(m, 1, m.num_kv_heads, LayerKind::Moe)?.total_params();
            dense
                .checked_mul(m.num_layers - moe_layers)?
                .checked_add(moe.checked_mul(moe_layers)?)?
        }
    };
    let input = input_end_checked(m, m.vocab_size, 1)?;
    let output = output_end_checked(m, m.vocab_size, 1, !m.arch.tied_embeddings)?;
    let total_params = layers
        .checked_add(checked_total(&input)?)?
        .checked_add(checked_total(&output)?)?;
    let embedding =
        input.token_embedding_params + input.position_embedding_params + output.output_head_params;
    Some(Sizes {
        total_params,
        non_embedding_params: total_params - embedding,
    })
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
    kaplan_approx_params_f64(num_layers as f64, hidden_size as f64)
}

/// [`kaplan_approx_params`] at real-valued depth and width (for solving it, as Levine's depth
/// does).
pub fn kaplan_approx_params_f64(num_layers: f64, hidden_size: f64) -> f64 {
    12.0 * num_layers * hidden_size.powi(2)
}
