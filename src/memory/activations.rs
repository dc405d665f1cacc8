//! Activations one layer stores for one micro-batch (Korthikanti et al. 2022, generalised).

use super::{AttentionKernel, Framework, GemmPrecision, MemoryOptions};
use crate::error::{Result, add, mul};
use crate::flops::Recompute;
use crate::model::{BlockKind, MlpKind, Transformer};
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
/// output) or `6sbf` (gated: gate, up and their product); attention core `5asb·s` (`2asb·s`
/// without dropout; none with FlashAttention, which keeps `4asb` of fp32 statistics). With FP8
/// GEMMs ([`GemmPrecision`]) the inputs of the linear layers — the QKV and MLP inputs, the
/// attention-output input and the MLP-output input — are kept as the GEMMs read them, one byte
/// per value (plus MXFP8's scale per 32), as Transformer Engine saves its cast inputs for the
/// weight gradients.
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

impl ActivationParts {
    pub(crate) fn new(
        model: &Transformer,
        layout: &ParallelLayout,
        opts: &MemoryOptions,
        kind: LayerKind,
    ) -> Result<Self> {
        const A: &str = "activation bytes";
        // Checked product of u64 factors in u128.
        let prod = |xs: &[u64]| -> Result<u128> {
            xs.iter()
                .try_fold(1u128, |acc, &x| mul(acc, u128::from(x), A))
        };
        let t = layout.tp;
        // Context parallelism keeps `s/cp` tokens per rank; the attention core of those
        // queries spans the whole sequence's keys.
        let (s, b, h) = (
            layout.local_seq_len(),
            layout.micro_batch,
            model.hidden_size,
        );
        let keys = layout.seq_len;
        let q = prod(&[model.num_heads / t, model.head_dim])?;
        let k = prod(&[kv_heads_per_rank(model.num_kv_heads, t)?, model.head_dim])?;
        // The dense MLP, or a mixture-of-experts layer's shared experts (split over tp like
        // the dense MLP); its routed experts are counted below.
        let f = match (kind, &model.moe) {
            (LayerKind::Moe, Some(moe)) => moe.shared_ffn_size,
            _ => model.ffn_size,
        } / t;
        let e = opts.precision.activation_bytes;
        // Bytes are counted in 32nds, so MXFP8's scale (one byte per 32 values) is exact. The
        // inputs of the linear layers are kept for their weight gradients in the precision the
        // GEMMs read them: FP8 (Transformer Engine saves the cast input) or 16 bits.
        let e32 = mul(32, e, A)?;
        let lin32 = match opts.gemm_precision {
            GemmPrecision::Bf16 => e32,
            GemmPrecision::Fp8 | GemmPrecision::Fp8Delayed => 32,
            GemmPrecision::Mxfp8 => 33,
        };
        // Replicated over tp (split over tp with sequence parallelism): norm inputs (16 bits),
        // the QKV and MLP inputs (linear inputs), masks.
        let norms = model.arch.block.norms_per_layer();
        let shared_input = matches!(model.arch.block, BlockKind::Parallel { shared_norm: true });
        let inputs = if shared_input { 1 } else { 2 };
        let masks = if opts.dropout { 2 } else { 0 };
        let per_token32 = add(
            add(mul(e32, norms, A)?, mul(lin32, inputs, A)?, A)?,
            mul(32, masks, A)?,
            A,
        )?;
        let mut replicated = prod(&[s, b, h, per_token32])?;
        // Split over tp: Q (q wide) and K, V (k wide) in 16 bits; the attention-output input
        // (q wide, a linear input); the MLP's activations, of which the last (the MLP-output
        // input) is a linear input.
        let mlp = match model.arch.mlp {
            MlpKind::Standard => 2,
            MlpKind::Gated => 3,
        };
        let wide16 = add(add(q, mul(k, 2, A)?, A)?, prod(&[mlp - 1, f])?, A)?;
        let wide_lin = add(q, u128::from(f), A)?;
        let width32 = add(
            mul(wide16, u128::from(e32), A)?,
            mul(wide_lin, u128::from(lin32), A)?,
            A,
        )?;
        let mut split = mul(prod(&[s, b])?, width32, A)?;
        // The MLP's intermediate gradients while its backward runs: of the activation's
        // output and of the first linear layer's output(s) — `2f` standard, `3f` gated.
        let mut mlp_grads = prod(&[e, s, b, mlp, f])?;
        let mut a2a = 0u128;
        if let (LayerKind::Moe, Some(moe)) = (kind, &model.moe) {
            // Routed experts on this rank (Megatron-Core's all-to-all dispatcher,
            // [`crate::parallel::ExpertBatch`]), per routed token: the permuted input (a linear
            // input), the expert intermediates (`2` or `3` of width `f_e/etp`, as the dense
            // MLP, the last a linear input) and what the combine's backward needs to weight
            // the expert outputs. Megatron-Core applies each token's routing weight inside a
            // gated expert's activation (`weighted_bias_swiglu_impl`,
            // `megatron/core/transformer/moe/experts.py`) and keeps that fp32 weight; the
            // others weight the outputs in the combine and keep the 16-bit expert output
            // (DeepSpeed-MoE's combine einsum). The router adds its fp32 probabilities
            // `4·T_r·E` and the top-k weights and indices `12·T_r·k`.
            let tokens = mul(s, b, A)?;
            let x = crate::parallel::expert_batch(moe, layout, opts.routing, tokens)?;
            let held = prod(&[x.local_experts, x.tokens_per_expert])?;
            let weighted_in_activation =
                opts.framework == Framework::MegatronCore && model.arch.mlp == MlpKind::Gated;
            let (output16, weight32) = if weighted_in_activation {
                (0, 32 * 4)
            } else {
                (u128::from(h), 0)
            };
            let held16 = add(output16, prod(&[mlp - 1, x.width])?, A)?;
            let held_lin = add(u128::from(h), u128::from(x.width), A)?;
            let per_held32 = add(
                add(
                    mul(held16, u128::from(e32), A)?,
                    mul(held_lin, u128::from(lin32), A)?,
                    A,
                )?,
                weight32,
                A,
            )?;
            let experts = mul(held, per_held32, A)?;
            let router = prod(&[
                32,
                x.routed_tokens,
                add(mul(4, moe.num_experts, A)?, mul(12, moe.top_k, A)?, A)?,
            ])?;
            split = add(split, add(experts, router, A)?, A)?;
            mlp_grads = add(mlp_grads, mul(held, prod(&[e, mlp, x.width])?, A)?, A)?;
            // The dispatch's send and receive buffers, `T_r·k·h` each, while the layer runs.
            a2a = prod(&[2, e, x.routed_tokens, moe.top_k, h])?;
        }
        let replicated_bytes = replicated.div_ceil(32);
        let split = split.div_ceil(32);
        replicated = replicated_bytes;
        let heads = model.num_heads / t;
        let core = match opts.attention {
            AttentionKernel::Standard => {
                let per = if opts.dropout { 2 * e + 1 } else { e };
                prod(&[per, heads, s, keys, b])?
            }
            AttentionKernel::Flash => prod(&[4, heads, s, b])?,
        };
        // The attention's gradients while its backward runs: FlashAttention-2's dq, dk, dv in
        // 16 bits plus its fp32 dq accumulator (Dao 2023, `flash_attn` backward); standard
        // attention's gradients of the probabilities and of the scores, `2·e·a·s·s_k·b`.
        let attention_grads = match opts.attention {
            AttentionKernel::Standard => prod(&[2, e, heads, s, keys, b])?,
            AttentionKernel::Flash => mul(
                prod(&[s, b])?,
                add(
                    mul(add(q, mul(2, k, A)?, A)?, u128::from(e), A)?,
                    mul(4, q, A)?,
                    A,
                )?,
                A,
            )?,
        };
        let mut checkpoint = prod(&[e, s, b, h])?;
        // The gradient flowing into the layer and the one flowing out, `e·sbh` each.
        let mut boundary = prod(&[2, e, s, b, h])?;
        // With sequence parallelism the linear layers' inputs are stored sharded and
        // all-gathered again for the weight gradients (Korthikanti et al. 2022 §4.2.2): one
        // full `e·sbh` input at a time.
        let mut regathered = 0;
        if layout.sequence_parallel {
            replicated /= t as u128;
            checkpoint /= t as u128;
            boundary /= t as u128;
            if t > 1 {
                regathered = prod(&[e, s, b, h])?;
            }
        }
        // Context parallelism's exchange buffers while the attention's backward runs: ring
        // attention double-buffers the key/value chunk and the chunk's key/value gradients
        // (Transformer Engine's `AttnFuncWithCPAndKVP2P`), `8·e·s·b·k` for the local `s`;
        // all-to-all sends and receives q, k and v, `2·e·s·b·(q + 2k)`.
        let cp_buffers = if layout.cp > 1 {
            match layout.cp_comm {
                crate::parallel::CpComm::P2p => mul(prod(&[8, e, s, b])?, k, A)?,
                crate::parallel::CpComm::A2a => {
                    mul(prod(&[2, e, s, b])?, add(q, mul(2, k, A)?, A)?, A)?
                }
            }
        } else {
            0
        };
        let backward = add(
            add(boundary, regathered, A)?,
            add(mlp_grads.max(add(attention_grads, cp_buffers, A)?), a2a, A)?,
            A,
        )?;
        use crate::error::to_u64;
        Ok(ActivationParts {
            replicated: to_u64(replicated, A)?,
            split: to_u64(split, A)?,
            core: to_u64(core, A)?,
            checkpoint: to_u64(checkpoint, A)?,
            backward: to_u64(backward, A)?,
        })
    }
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
