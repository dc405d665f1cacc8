//! One layer's time for one micro-batch: GEMMs, memory-bound kernels and its collectives.

use super::gemms::{GemmRole, LayerVariant, attended_keys, timed, variant_gemms};
use super::{Cluster, LayerTimes, StepOptions};
use crate::error::Result;
use crate::flops::Recompute;
use crate::hardware::GemmTimer;
use crate::hardware::analytical::ATTAINABLE_HBM_FRACTION;
use crate::model::{MlpKind, Transformer};
use crate::parallel::ParallelLayout;

/// One layer of `variant` for one micro-batch on one rank (see the module docs for the dense
/// terms). Beyond them:
///
/// * **Latent attention** (DeepSeek-V2 §2.1; Megatron-Core's `MLASelfAttention`): the
///   down-projections `q_a` (or a full `q`), `kv_a` are replicated over `tp`, the
///   up-projections `q_b`, `kv_b` and the output split by heads; scores at width
///   `qk_nope + qk_rope`, attention×V at `v_head_dim`.
/// * **Sliding windows**: a local layer's scores and attention×V cover `min(w, s)` keys per
///   query (FlashAttention-2's windowed kernel skips the blocks outside the band).
/// * **Mixture of experts** ([`crate::parallel::ExpertBatch`]): the router `[T_r × h]·[h × E]`, the grouped
///   expert GEMMs batched over the local experts, the shared experts as a dense MLP split over
///   `tp`; memory-bound permutation and un-permutation (`T_r·h` read and `T_r·k·h` written, and
///   back), the router's fp32 softmax, the experts' activation; the expert block's
///   tensor-parallel collective over `etp` in place of the MLP's over `tp`; four all-to-alls
///   (dispatch and combine, forward and backward; two more under full recomputation) of
///   `T_r·k·h` elements, of which `(ep − 1)/ep` leave the GPU, optionally overlapped with the
///   shared experts ([`Cluster::overlap_shared_experts`]).
pub(crate) fn variant_times(
    model: &Transformer,
    layout: &ParallelLayout,
    cluster: &Cluster,
    timer: &dyn GemmTimer,
    opts: &StepOptions,
    variant: LayerVariant,
) -> Result<LayerTimes> {
    let (list, experts) = variant_gemms(model, layout, opts, variant)?;
    let (mut fwd, mut bwd, mut core_fwd, mut linear_inputs) = (0.0, 0.0, 0.0, 0.0);
    let mut shared_fwd = 0.0;
    for (gemm, role) in list.as_slice() {
        let f = timed(timer, gemm, &cluster.gpu)?;
        fwd += f;
        bwd += timed(timer, &gemm.data_grad(), &cluster.gpu)?
            + timed(timer, &gemm.weight_grad(), &cluster.gpu)?;
        match role {
            GemmRole::AttentionCore => core_fwd += f,
            GemmRole::Linear | GemmRole::Expert | GemmRole::SharedExpert => {
                linear_inputs += gemm.m as f64 * gemm.k as f64 * gemm.batch as f64;
                if *role == GemmRole::SharedExpert {
                    shared_fwd += f;
                }
            }
            GemmRole::Router => {}
        }
    }
    let t = layout.tp;
    let (s, b) = (layout.local_seq_len(), layout.micro_batch);
    let d = model.hidden_size;
    let heads = model.num_heads / t;
    let ctx = attended_keys(model, layout, opts, variant);
    let tokens = s as f64 * b as f64;
    let e = opts.dtype.bytes() as f64;
    let act_inputs = if model.arch.mlp == MlpKind::Gated {
        2.0
    } else {
        1.0
    };
    let (mlp_act_bytes, moe_bytes, a2a_elements, ff_tp) = match (model.moe, experts) {
        (Some(moe), Some(x)) => {
            let fs = (moe.shared_ffn_size / t) as f64;
            let held = x.local_experts as f64 * x.tokens_per_expert as f64;
            let routed = x.routed_tokens as f64;
            let (h, k) = (d as f64, moe.top_k as f64);
            let act = (act_inputs + 1.0) * e * (held * x.width as f64 + tokens * fs);
            let permute = 2.0 * e * (routed * h + held * h);
            let router = 2.0 * 4.0 * routed * moe.num_experts as f64;
            (act, permute + router, routed * k * h, layout.expert_tp())
        }
        _ => {
            let f = (model.ffn_size / t) as f64;
            ((act_inputs + 1.0) * e * tokens * f, 0.0, 0.0, t)
        }
    };
    // Memory-bound bytes of the forward pass.
    let tf = t as f64;
    let (sf, bf, h) = (s as f64, b as f64, d as f64);
    let sbh = if layout.sequence_parallel {
        sf * bf * h / tf
    } else {
        sf * bf * h
    };
    let norms = model.arch.block.norms_per_layer() as f64;
    let mask = if opts.dropout() { 1.0 } else { 0.0 };
    let scores = heads as f64 * sf * ctx as f64 * bf;
    let softmax = if opts.flash_attention() {
        0.0
    } else {
        2.0 * e * scores
            + if opts.dropout() {
                (2.0 * e + 1.0) * scores
            } else {
                0.0
            }
    };
    let dense_bytes =
        norms * 2.0 * e * sbh + 2.0 * (3.0 * e + mask) * sbh + mlp_act_bytes + moe_bytes;
    // FP8: each linear GEMM's input is cast (read 16 bits, write 8 bits and its scale; current
    // scaling reads it once more for its amax). The
    // backward casts the output gradients and transposes the inputs for the weight gradients:
    // twice as many bytes again (an assumption; Transformer Engine fuses some casts into norms
    // and activations).
    let precision = opts.memory.gemm_precision;
    let cast = precision.cast_bytes();
    let cast_fwd = if cast > 0.0 {
        (e + cast + precision.scale_pass_bytes(e)) * linear_inputs
    } else {
        0.0
    };
    let bw = cluster.gpu.memory_bytes_per_s * ATTAINABLE_HBM_FRACTION;
    let mem_fwd = (dense_bytes + softmax + cast_fwd) / bw;
    let mem_core = softmax / bw;
    let (re_gemm, re_mem, full) = match layout.recompute {
        Recompute::None => (0.0, 0.0, false),
        Recompute::Selective => (core_fwd, mem_core, false),
        Recompute::Full => (fwd, mem_fwd, true),
    };
    let passes = if full { 3.0 } else { 2.0 };
    let ar = |ranks: u64| cluster.ring_seconds(2.0, sf * bf * h * e, ranks, 1);
    let a2a = if a2a_elements > 0.0 {
        // Dispatch and combine, per pass. With the overlap they run beside the shared experts'
        // GEMMs of the same pass (backward: twice the forward's work) and only the excess
        // shows (Megatron-Core `--moe-shared-expert-overlap`).
        let per_pass = 2.0 * all_to_all_seconds(cluster, layout, a2a_elements * e);
        let shared = if cluster.overlap_shared_experts {
            shared_fwd
        } else {
            0.0
        };
        (passes - 1.0) * (per_pass - shared).max(0.0) + (per_pass - 2.0 * shared).max(0.0)
    } else {
        0.0
    };
    let cp_comm = context_parallel_seconds(model, layout, cluster, opts, core_fwd, passes)?;
    Ok(LayerTimes {
        gemm: fwd + bwd + re_gemm,
        memory: 3.0 * mem_fwd + re_mem,
        tp_comm: passes * (ar(t) + ar(ff_tp)),
        all_to_all: a2a,
        cp_comm,
    })
}

/// Exposed context-parallel communication of one layer for one micro-batch (`passes` = 2
/// forward-equivalents, 3 with full recomputation). The group's ranks are `tp` apart, on
/// NVLink when the group fits a node ([`Cluster::ranks_per_node`]).
///
/// * **Ring** ([`crate::parallel::CpComm::P2p`]; Liu et al. 2023): `cp − 1` sends of the
///   rank's key/value chunk (`s/cp · b` tokens of `2·kv·hd/tp`, or with latent attention the
///   up-projected `H/tp·(d_qk + d_v)`) per forward, hidden behind the attention of the chunk in
///   hand; the backward moves keys, values and their gradients, twice the bytes behind twice
///   the work. Only what exceeds the attention core is exposed.
/// * **All-to-all** ([`crate::parallel::CpComm::A2a`]; Jacobs et al. 2023 §3): q, k, v in and
///   the output back, `(cp − 1)/cp` of `s/cp · b · (2q + 2k)` elements, per forward and twice
///   per backward, not hidden.
pub(crate) fn context_parallel_seconds(
    model: &Transformer,
    layout: &ParallelLayout,
    cluster: &Cluster,
    opts: &StepOptions,
    core_fwd: f64,
    passes: f64,
) -> Result<f64> {
    let cp = layout.cp;
    if cp <= 1 {
        return Ok(0.0);
    }
    let t = layout.tp;
    let e = opts.dtype.bytes() as f64;
    let tokens = (layout.local_seq_len() * layout.micro_batch) as f64;
    let heads = (model.num_heads / t) as f64;
    let (q_width, kv_width) = match &model.attention {
        crate::model::Attention::Standard => {
            let kv = crate::parallel::kv_heads_per_rank(model.num_kv_heads, t)? as f64;
            let hd = model.head_dim as f64;
            (heads * hd, 2.0 * kv * hd)
        }
        crate::model::Attention::MultiLatent(mla) => (
            heads * (mla.qk_nope_head_dim + mla.qk_rope_head_dim) as f64,
            heads * (mla.qk_nope_head_dim + mla.qk_rope_head_dim + mla.v_head_dim) as f64,
        ),
    };
    let link = cluster.link_bytes_per_s(cluster.ranks_per_node(cp, t) == cp);
    let lat = cluster.collective_latency_seconds;
    let c = cp as f64;
    Ok(match layout.cp_comm {
        crate::parallel::CpComm::P2p => {
            let fwd = (c - 1.0) * (tokens * kv_width * e / link + lat);
            // Forward passes hide behind the forward core, the backward behind twice it.
            (passes - 1.0) * (fwd - core_fwd).max(0.0) + 2.0 * (fwd - core_fwd).max(0.0)
        }
        crate::parallel::CpComm::A2a => {
            let fwd = (c - 1.0) / c * tokens * (2.0 * q_width + kv_width) * e / link + 4.0 * lat;
            (passes - 1.0) * fwd + 2.0 * fwd
        }
    })
}

/// Seconds of one all-to-all in which each GPU of the expert-parallel group sends `bytes` split
/// evenly over the `ep` ranks (its own share stays). The group's ranks are `etp` apart
/// (Megatron-Core orders expert tensor parallelism innermost), so `min(ep, node/etp)` of them
/// share a node (an NVLink domain): the shares to those move over NVLink, the rest over the
/// node's network, both at the collective efficiency, whichever takes longer.
pub(crate) fn all_to_all_seconds(cluster: &Cluster, layout: &ParallelLayout, bytes: f64) -> f64 {
    let ep = layout.ep;
    if ep <= 1 {
        return 0.0;
    }
    let in_node = cluster.ranks_per_node(ep, layout.expert_tp());
    let share = bytes / ep as f64;
    let nvlink = share * (in_node - 1) as f64 / cluster.link_bytes_per_s(true);
    let network = share * (ep - in_node) as f64 / cluster.link_bytes_per_s(false);
    nvlink.max(network) + cluster.collective_latency_seconds
}
