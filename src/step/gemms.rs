//! The GEMMs of a layer on one rank, and how one GEMM is timed and checked.

use super::StepOptions;
use crate::error::{Error, Result};
use crate::hardware::{Dtype, Gemm, GemmTimer, GpuSpec};
use crate::model::Transformer;
use crate::parallel::ParallelLayout;
use crate::params::LayerKind;
use serde::{Deserialize, Serialize};

/// One GEMM's seconds from the timer, checked: finite, positive, and no faster than the GPU's
/// dense peak for the GEMM's dtype (a table measured on a faster GPU, or a broken timer, would
/// otherwise give utilisations above 100%).
pub(crate) fn timed(timer: &dyn GemmTimer, g: &Gemm, gpu: &GpuSpec) -> Result<f64> {
    let s = timer.gemm_seconds(g)?;
    let shape = || {
        format!(
            "the {} GEMM m={} n={} k={} batch={}",
            g.dtype, g.m, g.n, g.k, g.batch
        )
    };
    if !(s.is_finite() && s > 0.0) {
        return Err(Error::Gpu(format!(
            "timer returned {} seconds for {}",
            crate::error::readable(s),
            shape()
        )));
    }
    let peak = gpu.peak_flops_per_s(g.dtype)?;
    if g.flops() / s > peak * (1.0 + 1e-9) {
        return Err(Error::Inconsistent {
            rule: "a GEMM cannot run faster than the GPU's dense peak",
            detail: format!(
                "{} times {} at {:.0} TFLOP/s, above {}'s {} peak of {:.0}; are its timings for another GPU?",
                timer.describe(),
                shape(),
                g.flops() / s / 1e12,
                gpu.name,
                g.dtype,
                peak / 1e12
            ),
        });
    }
    Ok(s)
}

/// What differs between the layers of one model for timing: the feed-forward block (dense or
/// mixture of experts) and the attention span (global or sliding window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LayerVariant {
    pub(crate) moe: bool,
    pub(crate) local: bool,
}

impl LayerVariant {
    pub(crate) fn of(model: &Transformer, i: u64) -> LayerVariant {
        LayerVariant {
            moe: model.moe.is_some_and(|m| m.is_moe_layer(i)),
            local: model.local_attention.is_some_and(|w| w.is_local_layer(i)),
        }
    }

    pub(crate) fn index(self) -> usize {
        usize::from(self.moe) * 2 + usize::from(self.local)
    }
}

/// What a GEMM of a layer computes, for how it is timed and cast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GemmRole {
    /// A linear layer of attention or a dense MLP (in FP8 when the GEMMs run in FP8).
    Linear,
    /// The attention core: scores or attention×V (16 bits; rerun by selective recomputation).
    AttentionCore,
    /// The mixture-of-experts router (16 bits).
    Router,
    /// Routed experts, batched over the rank's local experts (grouped GEMM).
    Expert,
    /// Shared experts (a dense MLP every token uses).
    SharedExpert,
}

/// The forward GEMMs of one layer for one micro-batch on one rank, in order (at most twelve:
/// latent attention's five projections and two core GEMMs, a router, two expert and two
/// shared-expert GEMMs). Fixed-size, so timing a layer allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerGemms {
    items: [(Gemm, GemmRole); 12],
    len: usize,
}

impl LayerGemms {
    pub(crate) fn new() -> LayerGemms {
        LayerGemms {
            items: [(Gemm::bf16(1, 1, 1), GemmRole::Linear); 12],
            len: 0,
        }
    }

    pub(crate) fn push(&mut self, gemm: Gemm, role: GemmRole) -> Result<()> {
        gemm.validate()?;
        let slot = self.items.get_mut(self.len).ok_or(Error::Overflow {
            what: "GEMMs of a layer",
        })?;
        *slot = (gemm, role);
        self.len += 1;
        Ok(())
    }

    /// The GEMMs with their roles, in forward order.
    pub fn as_slice(&self) -> &[(Gemm, GemmRole)] {
        &self.items[..self.len]
    }
}

/// Keys each query's attention GEMMs cover: the sequence, or the window of a sliding-window
/// layer; with FlashAttention the causal mask's skipped blocks leave half the sequence
/// (FlashAttention-2, Dao 2023 §3.1: blocks above the diagonal are not computed), and
/// `w − w²/(2s)` of a window `w < s` (the band's average,
/// [`crate::flops::causal_attended_keys`]). Standard attention computes every score
/// and masks them.
pub(crate) fn attended_keys(
    model: &Transformer,
    layout: &ParallelLayout,
    opts: &StepOptions,
    variant: LayerVariant,
) -> u64 {
    let s = layout.seq_len;
    let window = match model.local_attention {
        Some(w) if variant.local => w.window.min(s),
        _ => s,
    };
    if !opts.flash_attention() {
        return window;
    }
    (crate::flops::causal_attended_keys(window as f64, s as f64).ceil() as u64).max(1)
}

/// The forward GEMMs of layer `layer` (from 0) of `model` under `layout`, for one micro-batch
/// on one rank (see the module docs and [`GemmRole`]).
///
/// ```
/// use lmshape::step::{self, GemmRole, StepOptions};
/// use lmshape::{presets, ParallelLayout};
/// let m = presets::by_name("bloom-176b")?;
/// let layout = ParallelLayout::builder().tp(4).micro_batch(2).global_batch(2).build()?;
/// let g = step::layer_gemms(&m, &layout, &StepOptions::default(), 0)?;
/// let (qkv, _) = g.as_slice()[0];
/// assert_eq!((qkv.m, qkv.n, qkv.k), (4096, 3 * 14336 / 4, 14336));
/// let (scores, role) = g.as_slice()[1];
/// assert_eq!((scores.batch, scores.k, role), (2 * 112 / 4, 128, GemmRole::AttentionCore));
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// A layout that breaks a rule for the model ([`crate::ParallelLayout::validate`]), or shapes that overflow `u64`.
pub fn layer_gemms(
    model: &Transformer,
    layout: &ParallelLayout,
    opts: &StepOptions,
    layer: u64,
) -> Result<LayerGemms> {
    model.validate()?;
    layout.validate(model)?;
    Ok(variant_gemms(model, layout, opts, LayerVariant::of(model, layer))?.0)
}

/// The GEMMs of a layer of `variant` and, for a mixture-of-experts layer, its expert batch.
pub(crate) fn variant_gemms(
    model: &Transformer,
    layout: &ParallelLayout,
    opts: &StepOptions,
    variant: LayerVariant,
) -> Result<(LayerGemms, Option<crate::parallel::ExpertBatch>)> {
    let t = layout.tp;
    crate::error::positive(t, "tp")?;
    let local = layout.local_seq_len();
    let tokens = crate::error::mul(local, layout.micro_batch, "tokens per micro-batch")?;
    let heads = model.num_heads / t;
    // Context parallelism: ring attention computes the rank's `s/cp` queries against every
    // key; all-to-all attention the whole sequence's queries for `1/cp` of the heads.
    let (queries, core_heads) = match layout.cp_comm {
        crate::parallel::CpComm::A2a if layout.cp > 1 => (layout.seq_len, heads / layout.cp),
        _ => (local, heads),
    };
    let shapes = Shapes {
        tokens,
        linear: opts.gemm_dtype(),
        block_scaled: opts.memory.gemm_precision == crate::hardware::GemmPrecision::Mxfp8,
    };
    let ctx = attended_keys(model, layout, opts, variant);
    let kind = if variant.moe && model.moe.is_some() {
        LayerKind::Moe
    } else {
        LayerKind::Dense
    };
    let weights = crate::params::linear_weight_shapes_on_rank(model, t, layout.expert_tp(), kind)?;
    let mut list = LayerGemms::new();
    for &(n, k) in weights.attention_inputs() {
        list.push(shapes.linear(n, k), GemmRole::Linear)?;
    }
    // Attention's score and value GEMMs stay in 16 bits (Transformer Engine casts only the
    // linear layers).
    let (qk_dim, v_dim) = model.head_widths();
    let attn_batch = mul(layout.micro_batch, core_heads)?;
    let core = |m, n, k| shapes.gemm(m, n, k, attn_batch, opts.dtype);
    list.push(core(queries, ctx, qk_dim), GemmRole::AttentionCore)?;
    list.push(core(queries, v_dim, ctx), GemmRole::AttentionCore)?;
    let (n, k) = weights.attention_output();
    list.push(shapes.linear(n, k), GemmRole::Linear)?;
    let experts = mlp_gemms(model, layout, opts, kind, &weights, &shapes, &mut list)?;
    Ok((list, experts))
}

/// What a layer's GEMM shapes name in their overflow errors.
const W: &str = "a layer's GEMM shapes";

fn mul(a: u64, b: u64) -> Result<u64> {
    crate::error::mul(a, b, W)
}

/// The GEMMs of one layer's micro-batch: `tokens` rows, the linear layers' type, and whether
/// FP8 GEMMs are block-scaled (MXFP8).
struct Shapes {
    tokens: u64,
    linear: Dtype,
    block_scaled: bool,
}

impl Shapes {
    /// A forward GEMM of `batch` products of `m×k` by `k×n` in `dtype`.
    fn gemm(&self, m: u64, n: u64, k: u64, batch: u64, dtype: Dtype) -> Gemm {
        Gemm {
            m,
            n,
            k,
            batch,
            dtype,
            pass: crate::hardware::GemmPass::Forward,
            block_scaled: self.block_scaled && dtype == Dtype::Fp8,
        }
    }

    /// A linear layer from `k` to `n` features over every token of the micro-batch.
    fn linear(&self, n: u64, k: u64) -> Gemm {
        self.gemm(self.tokens, n, k, 1, self.linear)
    }
}

/// The feed-forward's GEMMs pushed onto `list`, from the layer's weight shapes `weights`
/// ([`crate::params::linear_weight_shapes_on_rank`]): the dense MLP, or a mixture-of-experts
/// layer's router, routed experts (grouped, at the expert batch it returns) and shared experts.
fn mlp_gemms(
    model: &Transformer,
    layout: &ParallelLayout,
    opts: &StepOptions,
    kind: LayerKind,
    weights: &crate::params::LinearShapes,
    shapes: &Shapes,
    list: &mut LayerGemms,
) -> Result<Option<crate::parallel::ExpertBatch>> {
    match (kind, model.moe) {
        (LayerKind::Moe, Some(moe)) => {
            let x =
                crate::parallel::expert_batch(&moe, layout, opts.memory.routing, shapes.tokens)?;
            let router = shapes.gemm(
                x.routed_tokens,
                moe.num_experts,
                model.hidden_size,
                1,
                opts.dtype,
            );
            list.push(router, GemmRole::Router)?;
            let (batch, te) = (x.local_experts, x.tokens_per_expert);
            for &(n, k) in weights.mlp() {
                list.push(
                    shapes.gemm(te, n, k, batch, shapes.linear),
                    GemmRole::Expert,
                )?;
            }
            for &(n, k) in weights.shared_experts() {
                list.push(shapes.linear(n, k), GemmRole::SharedExpert)?;
            }
            Ok(Some(x))
        }
        _ => {
            for &(n, k) in weights.mlp() {
                list.push(shapes.linear(n, k), GemmRole::Linear)?;
            }
            Ok(None)
        }
    }
}
