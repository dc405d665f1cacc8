//! Activations one layer stores for one micro-batch (Korthikanti et al. 2022, generalised).

use super::{AttentionKernel, Framework, GemmPrecision, MemoryOptions};
use crate::error::{Result, add};
use crate::flops::Recompute;
use crate::model::{Attention, BlockKind, MlpKind, Transformer};
use crate::numeric::{Checked, c};
use crate::parallel::{ParallelLayout, kv_heads_per_rank};
use crate::params::LayerKind;

/// Bytes of activations one layer stores for one micro-batch under `recompute`, before any
/// working set (see the module docs). With Korthikanti et al.'s assumptions (multi-head
/// attention with `a·hd = h`, `f = 4h`, standard MLP, dropout, sequential block) this is exactly
/// their Table 2.
///
/// Generalised terms (bytes, `s` tokens, `b` sequences, `t = tp`, `q = a·hd`, `k = kv·hd`):
/// replicated without sequence parallelism — norm inputs `2sbh` each, QKV input `2sbh`, MLP
/// input `2sbh` (shared with the QKV input in a parallel block with one norm), dropout masks
/// `sbh` after attention and MLP; split over `t` — Q `2sbq`, K and V `2sbk` each,
/// attention-output input `2sbq`, MLP activations `4sbf` (standard: activation input and
/// output) or `6sbf` (gated: gate, up and their product); under multi-head latent attention V
/// and the attention-output input are `v_head_dim` wide per head, and each compressed latent
/// (query and key/value, `r_q + r_kv` wide, not split over `t`) is kept as its norm's input
/// and as its up-projection's input, `4sb(r_q + r_kv)`; attention core `5asb·s` (`2asb·s`
/// without dropout; none with FlashAttention, which keeps `4asb` of fp32 statistics). With FP8
/// GEMMs ([`GemmPrecision`]) the inputs of the linear layers — the QKV and MLP inputs, the
/// attention-output input and the MLP-output input — are kept as the GEMMs read them, one byte
/// per value (plus MXFP8's scale per 32), as Transformer Engine saves its cast inputs for the
/// weight gradients.
///
/// # Errors
/// A layout that breaks a rule for the model ([`crate::ParallelLayout::validate`]), or bytes that overflow `u64`.
pub fn layer_activation_bytes(
    model: &Transformer,
    layout: &ParallelLayout,
    opts: &MemoryOptions,
    recompute: Recompute,
) -> Result<u64> {
    const W: &str = "layer activation bytes";
    layout.validate(model)?;
    let of = |kind| -> Result<u64> {
        let parts = ActivationParts::new(model, layout, opts, kind)?;
        let stored = add(parts.replicated, parts.split, W)?;
        Ok(match recompute {
            Recompute::None => add(stored, parts.core, W)?,
            Recompute::Selective => stored,
            Recompute::Full => parts.checkpoint,
        })
    };
    let moe_layers = model
        .moe
        .map_or(0, |m| m.moe_layers_in(0..model.num_layers));
    let dense = if moe_layers < model.num_layers {
        of(LayerKind::Dense)?
    } else {
        0
    };
    let moe = if moe_layers > 0 {
        of(LayerKind::Moe)?
    } else {
        0
    };
    Ok(dense.max(moe))
}

/// One layer's stored activations for one micro-batch, by part (already divided by `tp`
/// where the layout divides them).
pub(crate) struct ActivationParts {
    pub(crate) replicated: u64,
    pub(crate) split: u64,
    pub(crate) core: u64,
    pub(crate) checkpoint: u64,
    /// The working set of the layer's backward pass, alive only while it runs (see
    /// [`ActivationParts::new`]).
    pub(crate) backward: u64,
}

/// The sizes one layer's activations are made of, on one rank (see the module docs): tokens
/// `s` (local under context parallelism) and `b`, the keys `s_k` each query attends, widths
/// split over `t = tp` (`q`, `k`, `v`, the attention output `o`, the MLP's `f`), the
/// latent-attention ranks (`latent`, not split), bytes per 16-bit element `e`, and bytes of a
/// linear layer's saved input in 32nds (`lin32`: FP8 keeps the cast input, one byte per value
/// plus MXFP8's scale per 32).
struct LayerDims {
    t: u64,
    s: u64,
    b: u64,
    h: u64,
    keys: u64,
    heads: u64,
    q: u64,
    k: u64,
    v: u64,
    o: u64,
    latent: u64,
    f: u64,
    e: u64,
    e32: u64,
    lin32: u64,
    /// MLP activations kept: 2 standard (input and output of the activation), 3 gated.
    mlp: u64,
}

impl LayerDims {
    fn of(
        model: &Transformer,
        layout: &ParallelLayout,
        opts: &MemoryOptions,
        kind: LayerKind,
    ) -> Result<LayerDims> {
        let t = layout.tp;
        let hd = model.head_dim;
        let heads = model.num_heads / t;
        let e = opts.precision.activation_bytes;
        let k = (c(kv_heads_per_rank(model.num_kv_heads, t)?) * hd).get(A)?;
        // Latent attention's values and output are `v_head_dim` wide per head, and its
        // compressed query and key/value latents are kept twice each ([`ActivationParts::new`]).
        let (v, o, latent) = match &model.attention {
            Attention::Standard => (k, (c(heads) * hd).get(A)?, 0),
            Attention::MultiLatent(mla) => {
                let v = (c(heads) * model.head_widths().1).get(A)?;
                let latent = (c(mla.q_lora_rank.unwrap_or(0)) + mla.kv_lora_rank).get(A)?;
                (v, v, latent)
            }
        };
        Ok(LayerDims {
            t,
            s: layout.local_seq_len(),
            b: layout.micro_batch,
            h: model.hidden_size,
            keys: layout.seq_len,
            heads,
            q: (c(heads) * hd).get(A)?,
            k,
            v,
            o,
            latent,
            // The dense MLP, or a mixture-of-experts layer's shared experts (split over tp
            // like the dense MLP); its routed experts are counted apart.
            f: match (kind, &model.moe) {
                (LayerKind::Moe, Some(moe)) => moe.shared_ffn_size,
                _ => model.ffn_size,
            } / t,
            e,
            e32: (c(32) * e).get(A)?,
            lin32: match opts.gemm_precision {
                GemmPrecision::Bf16 => (c(32) * e).get(A)?,
                GemmPrecision::Fp8 | GemmPrecision::Fp8Delayed => 32,
                GemmPrecision::Mxfp8 => 33,
            },
            mlp: match model.arch.mlp {
                MlpKind::Standard => 2,
                MlpKind::Gated => 3,
            },
        })
    }

    /// Tokens `s·b`.
    fn tokens(&self) -> Checked {
        c(self.s) * self.b
    }
}

/// What the activation estimate names in its overflow errors.
const A: &str = "activation bytes";

/// Routed experts' share of a layer's activations on one rank.
struct ExpertActivations {
    /// Stored, in 32nds of a byte.
    stored32: Checked,
    /// Intermediate gradients while their backward runs.
    grads: Checked,
    /// The dispatch's send and receive buffers.
    all_to_all: Checked,
}

impl ActivationParts {
    pub(crate) fn new(
        model: &Transformer,
        layout: &ParallelLayout,
        opts: &MemoryOptions,
        kind: LayerKind,
    ) -> Result<Self> {
        let d = LayerDims::of(model, layout, opts, kind)?;
        let (s, b, h, e) = (d.s, d.b, d.h, d.e);
        // Replicated over tp (split over tp with sequence parallelism): the norm inputs (16
        // bits), the QKV and MLP inputs (linear inputs; one shared input in a parallel block
        // with one norm), the two dropout masks.
        let shared_input = matches!(model.arch.block, BlockKind::Parallel { shared_norm: true });
        let inputs = if shared_input { 1 } else { 2 };
        let masks = if opts.dropout { 2 } else { 0 };
        let per_token32 =
            c(d.e32) * model.arch.block.norms_per_layer() + c(d.lin32) * inputs + c(32) * masks;
        // Latent attention's compressed query and key/value latents, each the input of its
        // norm (16 bits) and, normalised, of its up-projection (a linear input): the
        // down-projections are not split over tp (DeepSeek-V2 §2.1.2, eqs. 9 and 12;
        // Megatron-Core `MLASelfAttention`, whose up-projections fuse the latent norms).
        let latent32 = c(d.latent) * (c(d.e32) + d.lin32);
        let mut replicated = (d.tokens() * (c(h) * per_token32 + latent32)).div_ceil(32);
        // Split over tp: Q (q wide), K (k wide) and V (v wide) in 16 bits, the MLP's
        // activations but the last in 16 bits; the attention-output input (o wide) and the
        // MLP-output input (f wide) as linear inputs.
        let wide16 = c(d.q) + d.k + d.v + c(d.mlp - 1) * d.f;
        let wide_lin = c(d.o) + d.f;
        let mut split32 = d.tokens() * (wide16 * d.e32 + wide_lin * d.lin32);
        // The MLP's intermediate gradients while its backward runs: of the activation's output
        // and of the first linear layer's output(s), `2f` standard, `3f` gated.
        let mut mlp_grads = d.tokens() * e * d.mlp * d.f;
        let mut a2a = Checked::ZERO;
        if let (LayerKind::Moe, Some(moe)) = (kind, &model.moe) {
            let x = routed_expert_activations(model, moe, layout, opts, &d)?;
            split32 = split32 + x.stored32;
            mlp_grads = mlp_grads + x.grads;
            a2a = x.all_to_all;
        }
        let split = split32.div_ceil(32);
        let core = match opts.attention {
            AttentionKernel::Standard => {
                let per = if opts.dropout { 2 * e + 1 } else { e };
                c(per) * d.heads * s * d.keys * b
            }
            AttentionKernel::Flash => c(4) * d.heads * s * b,
        };
        let mut checkpoint = c(e) * s * b * h;
        // The gradient flowing into the layer and the one flowing out, `e·sbh` each.
        let mut boundary = c(2) * e * s * b * h;
        // With sequence parallelism the linear layers' inputs are stored sharded and
        // all-gathered again for the weight gradients (Korthikanti et al. 2022 §4.2.2): one
        // full `e·sbh` input at a time.
        let mut regathered = Checked::ZERO;
        if layout.sequence_parallel {
            replicated = replicated / d.t;
            checkpoint = checkpoint / d.t;
            boundary = boundary / d.t;
            if d.t > 1 {
                regathered = c(e) * s * b * h;
            }
        }
        let attention = attention_backward_bytes(layout, opts, &d);
        let backward = boundary + regathered + mlp_grads.max(attention) + a2a;
        Ok(ActivationParts {
            replicated: replicated.get(A)?,
            split: split.get(A)?,
            core: core.get(A)?,
            checkpoint: checkpoint.get(A)?,
            backward: backward.get(A)?,
        })
    }
}

/// The attention's working set while its backward runs: FlashAttention-2's `dq`, `dk`, `dv` in
/// 16 bits plus its fp32 `dq` accumulator (Dao 2023, `flash_attn` backward), or standard
/// attention's gradients of the probabilities and of the scores, `2·e·a·s·s_k·b`; plus
/// context parallelism's exchange buffers — ring attention double-buffers the key/value chunk
/// and the chunk's key/value gradients (Transformer Engine's `AttnFuncWithCPAndKVP2P`),
/// `4·e·s·b·(k + v)` for the local `s` (`8·e·s·b·k` when values are as wide as keys);
/// all-to-all sends and receives q, k and v, `2·e·s·b·(q + k + v)`.
fn attention_backward_bytes(
    layout: &ParallelLayout,
    opts: &MemoryOptions,
    d: &LayerDims,
) -> Checked {
    let (s, b, e) = (d.s, d.b, d.e);
    let grads = match opts.attention {
        AttentionKernel::Standard => c(2) * e * d.heads * s * d.keys * b,
        AttentionKernel::Flash => d.tokens() * ((c(d.q) + d.k + d.v) * e + c(4) * d.q),
    };
    let cp_buffers = if layout.cp > 1 {
        match layout.cp_comm {
            crate::parallel::CpComm::P2p => c(4) * e * s * b * (c(d.k) + d.v),
            crate::parallel::CpComm::A2a => c(2) * e * s * b * (c(d.q) + d.k + d.v),
        }
    } else {
        Checked::ZERO
    };
    grads + cp_buffers
}

/// Routed experts on this rank (Megatron-Core's all-to-all dispatcher,
/// [`crate::parallel::ExpertBatch`]), per routed token held: the permuted input (a linear
/// input), the expert intermediates (`2` or `3` of width `f_e/etp`, as the dense MLP, the
/// last a linear input) and what the combine's backward needs to weight the expert outputs.
/// Megatron-Core applies each token's routing weight inside a gated expert's activation
/// (`weighted_bias_swiglu_impl`, `megatron/core/transformer/moe/experts.py`) and keeps that
/// fp32 weight; the others weight the outputs in the combine and keep the 16-bit expert output
/// (DeepSpeed-MoE's combine einsum). The router adds its fp32 probabilities `4·T_r·E` and the
/// top-k weights and indices `12·T_r·k`; the dispatch keeps send and receive buffers of
/// `T_r·k·h` each while the layer runs.
fn routed_expert_activations(
    model: &Transformer,
    moe: &crate::model::Moe,
    layout: &ParallelLayout,
    opts: &MemoryOptions,
    d: &LayerDims,
) -> Result<ExpertActivations> {
    let x = crate::parallel::expert_batch(moe, layout, opts.routing, d.tokens().get(A)?)?;
    let held = c(x.local_experts) * x.tokens_per_expert;
    let weighted_in_activation =
        opts.framework == Framework::MegatronCore && model.arch.mlp == MlpKind::Gated;
    let (output16, weight32) = if weighted_in_activation {
        (0, 32 * 4)
    } else {
        (d.h, 0)
    };
    let held16 = c(output16) + c(d.mlp - 1) * x.width;
    let held_lin = c(d.h) + x.width;
    let per_held32 = held16 * d.e32 + held_lin * d.lin32 + weight32;
    let router32 = c(32) * x.routed_tokens * (c(4) * moe.num_experts + c(12) * moe.top_k);
    Ok(ExpertActivations {
        stored32: held * per_held32 + router32,
        grads: held * d.e * d.mlp * x.width,
        all_to_all: c(2) * d.e * x.routed_tokens * moe.top_k * d.h,
    })
}

/// Korthikanti et al. 2022 Table 2, literally, in bytes per layer (for `a` heads, `t = tp`,
/// `s`, `b`, `h`), for tests and comparison: `sequence_parallel` and `recompute` select the row.
///
/// ```
/// use lmshape::{memory, Recompute};
/// // s = 2048, b = 1, h = 12288, a = 96, t = 8: TP + SP + selective = 34·sbh/t.
/// let x = memory::korthikanti_table2_bytes(2048, 1, 12288, 96, 8, true, Recompute::Selective)?;
/// assert_eq!(x, 34.0 * 2048.0 * 12288.0 / 8.0);
/// assert!(memory::korthikanti_table2_bytes(2048, 1, 0, 96, 8, false, Recompute::None).is_err());
/// # Ok::<(), lmshape::Error>(())
/// ```
///
/// # Errors
/// [`crate::Error::ZeroSize`] for a zero size.
pub fn korthikanti_table2_bytes(
    s: u64,
    b: u64,
    h: u64,
    a: u64,
    t: u64,
    sequence_parallel: bool,
    recompute: Recompute,
) -> Result<f64> {
    for (v, field) in [(s, "s"), (b, "b"), (h, "h"), (a, "a"), (t, "t")] {
        crate::error::positive(v, field)?;
    }
    let (s, b, h, a, t) = (s as f64, b as f64, h as f64, a as f64, t as f64);
    let sbh = s * b * h;
    Ok(match (recompute, sequence_parallel) {
        (Recompute::Full, false) => 2.0 * sbh,
        (Recompute::Full, true) => 2.0 * sbh / t,
        (Recompute::None, false) => sbh * (10.0 + 24.0 / t + 5.0 * a * s / (h * t)),
        (Recompute::None, true) => sbh / t * (34.0 + 5.0 * a * s / h),
        (Recompute::Selective, false) => sbh * (10.0 + 24.0 / t),
        (Recompute::Selective, true) => 34.0 * sbh / t,
    })
}
