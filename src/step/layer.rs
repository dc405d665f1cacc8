//! One layer's time for one micro-batch: GEMMs, memory-bound kernels and its collectives.

use super::gemms::{GemmRole, LayerVariant, attended_keys, timed, variant_gemms};
use super::{Cluster, LayerTimes, StepOptions};
use crate::error::Result;
use crate::flops::Recompute;
use crate::hardware::GemmTimer;
use crate::hardware::analytical::ATTAINABLE_HBM_FRACTION;
use crate::model::{MlpKind, Transformer};
use crate::parallel::ParallelLayout;
use crate::system::CollectiveOp;

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
    let g = gemm_times(
        model,
        layout,
        cluster,
        timer,
        opts,
        variant,
        list.as_slice(),
    )?;
    let m = memory_bound(
        model,
        layout,
        opts,
        variant,
        experts.as_ref(),
        g.linear_inputs,
    );
    let mem = |bytes: f64, kernels: f64| match &cluster.system {
        Some(p) => p.memory_seconds(&cluster.gpu, bytes, kernels),
        None => bytes / (cluster.gpu.memory_bytes_per_s * ATTAINABLE_HBM_FRACTION),
    };
    let (mem_fwd, mem_core) = (
        mem(m.fwd_bytes, m.fwd_kernels),
        mem(m.core_bytes, m.core_kernels),
    );
    let (re_gemm, re_mem, full) = match layout.recompute {
        Recompute::None => (0.0, 0.0, false),
        Recompute::Selective => (g.core_fwd, mem_core, false),
        Recompute::Full => (g.fwd, mem_fwd, true),
    };
    let passes = if full { 3.0 } else { 2.0 };
    let tp_comm = passes
        * (tensor_parallel_seconds(model, layout, cluster, opts, layout.tp)
            + tensor_parallel_seconds(model, layout, cluster, opts, m.ff_tp))
        + sequence_parallel_regather_seconds(model, layout, cluster, opts, m.ff_tp);
    let all_to_all = expert_all_to_all_seconds(cluster, layout, opts, &m, &g, passes);
    let cp_comm = context_parallel_seconds(model, layout, cluster, opts, g.core_fwd, passes)?;
    Ok(LayerTimes {
        gemm: g.fwd + g.bwd + re_gemm,
        memory: 3.0 * mem_fwd + re_mem,
        tp_comm,
        all_to_all,
        cp_comm,
    })
}

/// A layer's GEMM seconds for one micro-batch: forward and backward (data- and weight-gradient
/// GEMMs), the attention core's forward (rerun by selective recomputation), the elements
/// read by its linear GEMMs (cast under FP8) and the shared experts' forward (the window the
/// all-to-all may hide in).
struct GemmTimes {
    fwd: f64,
    bwd: f64,
    core_fwd: f64,
    linear_inputs: f64,
    shared_fwd: f64,
}

/// The layer's GEMMs timed one by one; with a measured profile the attention core comes from
/// its attention kernels ([`crate::system::SystemProfile::attention_seconds`]) instead of the
/// two core GEMMs.
fn gemm_times(
    model: &Transformer,
    layout: &ParallelLayout,
    cluster: &Cluster,
    timer: &dyn GemmTimer,
    opts: &StepOptions,
    variant: LayerVariant,
    list: &[(crate::hardware::Gemm, GemmRole)],
) -> Result<GemmTimes> {
    let mut t = GemmTimes {
        fwd: 0.0,
        bwd: 0.0,
        core_fwd: 0.0,
        linear_inputs: 0.0,
        shared_fwd: 0.0,
    };
    // The measured kernels are FlashAttention's; standard attention keeps its two GEMMs.
    let measured_core = cluster.system.is_some() && opts.flash_attention();
    let mut core_shape = None;
    for (gemm, role) in list {
        if *role == GemmRole::AttentionCore && measured_core {
            core_shape.get_or_insert(*gemm);
            continue;
        }
        let f = timed(timer, gemm, &cluster.gpu)?;
        t.fwd += f;
        t.bwd += timed(timer, &gemm.data_grad(), &cluster.gpu)?
            + timed(timer, &gemm.weight_grad(), &cluster.gpu)?;
        match role {
            GemmRole::AttentionCore => t.core_fwd += f,
            GemmRole::Linear | GemmRole::Expert | GemmRole::SharedExpert => {
                t.linear_inputs += gemm.m as f64 * gemm.k as f64 * gemm.batch as f64;
                if *role == GemmRole::SharedExpert {
                    t.shared_fwd += f;
                }
            }
            GemmRole::Router => {}
        }
    }
    if let (Some(p), Some(scores)) = (&cluster.system, core_shape) {
        // The scores GEMM is `[queries × keys] = [queries × d_qk]·[d_qk × keys]`, batched over
        // micro-batch × heads; attention×V gives `d_v`.
        let (d_qk, d_v) = model.head_widths();
        let heads = scores.batch / layout.micro_batch.max(1);
        let kv = match &model.attention {
            crate::model::Attention::Standard => {
                crate::parallel::kv_heads_per_rank(model.num_kv_heads, layout.tp)?
            }
            crate::model::Attention::MultiLatent(_) => heads,
        };
        let attended = attended_keys(model, layout, opts, variant) as f64;
        let (f, b) = p.attention_seconds(
            &cluster.gpu,
            layout.micro_batch,
            scores.m,
            attended,
            heads,
            kv.min(heads).max(1),
            d_qk,
            d_v,
        )?;
        t.fwd += f;
        t.bwd += b;
        t.core_fwd += f;
    }
    Ok(t)
}

/// A layer's memory-bound work for one micro-batch's forward (the backward moves twice it):
/// bytes and kernels of the whole layer and of the attention core alone, the elements of the
/// all-to-all, and the tensor-parallel degree of the feed-forward block's collective.
struct MemoryBoundWork {
    fwd_bytes: f64,
    fwd_kernels: f64,
    core_bytes: f64,
    core_kernels: f64,
    a2a_elements: f64,
    ff_tp: u64,
}

/// See the module docs of [`crate::step`]: norms, bias–dropout–residual, the activation,
/// the fused softmax (without FlashAttention), the routed experts' permutations and router
/// softmax, and FP8's casts. Kernels counted for a profile's per-kernel latency: the norms, two
/// residual adds, the activation, rotary embeddings where used, the softmax and its dropout
/// without FlashAttention, four routing kernels per expert layer (router softmax and top-k,
/// permute, un-permute) and one cast per linear input under FP8.
fn memory_bound(
    model: &Transformer,
    layout: &ParallelLayout,
    opts: &StepOptions,
    variant: LayerVariant,
    experts: Option<&crate::parallel::ExpertBatch>,
    linear_inputs: f64,
) -> MemoryBoundWork {
    let t = layout.tp;
    let (s, b) = (layout.local_seq_len(), layout.micro_batch);
    let d = model.hidden_size;
    let heads = model.num_heads / t;
    let ctx = attended_keys(model, layout, opts, variant);
    let tokens = s as f64 * b as f64;
    let e = opts.dtype.bytes() as f64;
    let ff = feed_forward_bytes(model, layout, experts, tokens, e);
    let (sf, bf, h) = (s as f64, b as f64, d as f64);
    let sbh = if layout.sequence_parallel {
        sf * bf * h / t as f64
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
        norms * 2.0 * e * sbh + 2.0 * (3.0 * e + mask) * sbh + ff.activation + ff.routing;
    // FP8: each linear GEMM's input is cast (read 16 bits, write 8 bits and its scale; current
    // scaling reads it once more for its amax). The backward casts the output gradients and
    // transposes the inputs for the weight gradients: twice as many bytes again (an
    // assumption; Transformer Engine fuses some casts into norms and activations).
    let precision = opts.memory.gemm_precision;
    let cast = precision.cast_bytes();
    let cast_fwd = if cast > 0.0 {
        (e + cast + precision.scale_pass_bytes(e)) * linear_inputs
    } else {
        0.0
    };
    let core_kernels = if opts.flash_attention() {
        0.0
    } else if opts.dropout() {
        2.0
    } else {
        1.0
    };
    let casts = if cast > 0.0 { 4.0 } else { 0.0 };
    MemoryBoundWork {
        fwd_bytes: dense_bytes + softmax + cast_fwd,
        fwd_kernels: norms + 2.0 + 1.0 + rotary_kernels(model) + core_kernels + ff.kernels + casts,
        core_bytes: softmax,
        core_kernels,
        a2a_elements: ff.a2a_elements,
        ff_tp: ff.tp,
    }
}

/// One kernel for the rotary embeddings where the model uses them.
fn rotary_kernels(model: &Transformer) -> f64 {
    f64::from(u8::from(matches!(
        model.arch.position,
        crate::model::PositionKind::Rotary
    )))
}

/// The feed-forward block's memory-bound forward work: its activation's bytes, the routed
/// experts' permutations and router softmax, the all-to-all's elements, the routing kernels
/// and the tensor-parallel degree of its collective.
struct FeedForwardWork {
    activation: f64,
    routing: f64,
    a2a_elements: f64,
    kernels: f64,
    tp: u64,
}

/// [`FeedForwardWork`] of a dense MLP, or of a mixture-of-experts layer at its expert batch
/// `experts`, over `tokens` tokens of `e` bytes per element.
fn feed_forward_bytes(
    model: &Transformer,
    layout: &ParallelLayout,
    experts: Option<&crate::parallel::ExpertBatch>,
    tokens: f64,
    e: f64,
) -> FeedForwardWork {
    let t = layout.tp;
    let act_inputs = if model.arch.mlp == MlpKind::Gated {
        2.0
    } else {
        1.0
    };
    match (model.moe, experts) {
        (Some(moe), Some(x)) => {
            let fs = (moe.shared_ffn_size / t) as f64;
            let held = x.local_experts as f64 * x.tokens_per_expert as f64;
            let routed = x.routed_tokens as f64;
            let (h, k) = (model.hidden_size as f64, moe.top_k as f64);
            let permute = 2.0 * e * (routed * h + held * h);
            let router = 2.0 * 4.0 * routed * moe.num_experts as f64;
            FeedForwardWork {
                activation: (act_inputs + 1.0) * e * (held * x.width as f64 + tokens * fs),
                routing: permute + router,
                a2a_elements: routed * k * h,
                kernels: 4.0,
                tp: layout.expert_tp(),
            }
        }
        _ => FeedForwardWork {
            activation: (act_inputs + 1.0) * e * tokens * (model.ffn_size / t) as f64,
            routing: 0.0,
            a2a_elements: 0.0,
            kernels: 0.0,
            tp: t,
        },
    }
}

/// A tensor-parallel group's collectives of one layer for one micro-batch and one forward
/// pass over `ranks` adjacent GPUs: an all-reduce of the `sbh` activation (Megatron-LM's `g`
/// operator), or with sequence parallelism a reduce-scatter and an all-gather of it
/// (Korthikanti et al. 2022 §4.2.2).
fn tensor_parallel_seconds(
    model: &Transformer,
    layout: &ParallelLayout,
    cluster: &Cluster,
    opts: &StepOptions,
    ranks: u64,
) -> f64 {
    let bytes = layout.local_seq_len() as f64
        * layout.micro_batch as f64
        * model.hidden_size as f64
        * opts.dtype.bytes() as f64;
    if layout.sequence_parallel && cluster.system.is_some() {
        cluster.collective_seconds(CollectiveOp::ReduceScatter, bytes, ranks, 1)
            + cluster.collective_seconds(CollectiveOp::AllGather, bytes, ranks, 1)
    } else {
        cluster.collective_seconds(CollectiveOp::AllReduce, bytes, ranks, 1)
    }
}

/// With sequence parallelism and a measured profile, the backward all-gathers the sharded
/// inputs of the column-parallel linears (QKV and the MLP's input) again for their weight
/// gradients (Korthikanti et al. 2022 §4.2.2; the memory estimate counts the re-gathered
/// input): one more all-gather of `sbh` each.
fn sequence_parallel_regather_seconds(
    model: &Transformer,
    layout: &ParallelLayout,
    cluster: &Cluster,
    opts: &StepOptions,
    ff_tp: u64,
) -> f64 {
    if !layout.sequence_parallel || cluster.system.is_none() {
        return 0.0;
    }
    let bytes = layout.local_seq_len() as f64
        * layout.micro_batch as f64
        * model.hidden_size as f64
        * opts.dtype.bytes() as f64;
    cluster.collective_seconds(CollectiveOp::AllGather, bytes, layout.tp, 1)
        + cluster.collective_seconds(CollectiveOp::AllGather, bytes, ff_tp, 1)
}

/// The expert block's all-to-alls: dispatch and combine per pass, each GPU sending `T_r·k·h`
/// elements over the expert-parallel group (ranks `etp` apart). With the overlap they run
/// beside the shared experts' GEMMs of the same pass (backward: twice the forward's work) and
/// only the excess shows (Megatron-Core `--moe-shared-expert-overlap`).
fn expert_all_to_all_seconds(
    cluster: &Cluster,
    layout: &ParallelLayout,
    opts: &StepOptions,
    m: &MemoryBoundWork,
    g: &GemmTimes,
    passes: f64,
) -> f64 {
    if m.a2a_elements <= 0.0 {
        return 0.0;
    }
    let bytes = m.a2a_elements * opts.dtype.bytes() as f64;
    let one =
        cluster.collective_seconds(CollectiveOp::AllToAll, bytes, layout.ep, layout.expert_tp());
    let per_pass = 2.0 * one;
    let shared = if cluster.overlap_shared_experts {
        g.shared_fwd
    } else {
        0.0
    };
    (passes - 1.0) * (per_pass - shared).max(0.0) + (per_pass - 2.0 * shared).max(0.0)
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
        crate::model::Attention::MultiLatent(_) => {
            let (qk, v) = model.head_widths();
            (heads * qk as f64, heads * (qk + v) as f64)
        }
    };
    let c = cp as f64;
    if cluster.system.is_some() {
        let fwd = match layout.cp_comm {
            crate::parallel::CpComm::P2p => {
                (c - 1.0)
                    * cluster.collective_seconds(
                        CollectiveOp::SendRecv,
                        tokens * kv_width * e,
                        cp,
                        t,
                    )
            }
            crate::parallel::CpComm::A2a => cluster.collective_seconds(
                CollectiveOp::AllToAll,
                tokens * (2.0 * q_width + kv_width) * e,
                cp,
                t,
            ),
        };
        return Ok(match layout.cp_comm {
            crate::parallel::CpComm::P2p => {
                (passes - 1.0) * (fwd - core_fwd).max(0.0) + 2.0 * (fwd - core_fwd).max(0.0)
            }
            crate::parallel::CpComm::A2a => (passes - 1.0) * fwd + 2.0 * fwd,
        });
    }
    let link = cluster.link_bytes_per_s(cluster.ranks_per_node(cp, t) == cp);
    let lat = cluster.collective_latency_seconds;
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
